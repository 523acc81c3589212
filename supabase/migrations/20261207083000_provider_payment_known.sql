-- An unsigned MercadoPago IPN proves nothing until the payment it names is read from MercadoPago with our
-- access token: anyone could make us spend the account's rate limit (and fail real PIX checkouts) by
-- posting ids. The edge asks first whether the id is one of ours, with one indexed read.
create function reserve.provider_payment_known(p_provider text, p_gateway_payment_id text) returns boolean
  language sql stable security definer set search_path = '' as $$
  select exists (select 1 from reserve.payments p where p.provider = p_provider and p.gateway_payment_id = p_gateway_payment_id)
$$;

comment on function reserve.provider_payment_known(p_provider text, p_gateway_payment_id text) is 'Whether the provider''s payment id is one of our payments (the edge asks before it reads an unsigned notification''s payment from the provider).';

revoke all on function reserve.provider_payment_known(text, text) from public, anon, authenticated;
grant execute on function reserve.provider_payment_known(text, text) to service_role;
