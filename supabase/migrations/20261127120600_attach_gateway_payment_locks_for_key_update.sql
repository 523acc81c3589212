-- attach_gateway_payment writes gateway_payment_id, a key column (unique with provider), so its row
-- lock is FOR UPDATE. Taking FOR NO KEY UPDATE first and upgrading deadlocked with a webhook that held
-- a KEY SHARE lock on the payment (its processed_webhooks row) and waited for the payment. The webhook
-- path now locks the payment before recording itself, and this takes the strong lock at once. An
-- attempt that is no longer in flight keeps its id but is not handed out again (the caller checks).

create or replace function reserve.attach_gateway_payment(
  p_payment_id         uuid,
  p_gateway_payment_id text,
  p_gateway_status     text default null,
  p_provider_payload   jsonb default null,
  p_expires_at         timestamptz default null)
returns reserve.payments
language plpgsql
security definer
set search_path = ''
as $$
declare
  p reserve.payments;
begin
  if p_payment_id is null or coalesce(p_gateway_payment_id, '') = '' then
    raise exception using errcode = 'RC001', message = 'p_payment_id and p_gateway_payment_id are required';
  end if;
  select * into p from reserve.payments where id = p_payment_id for update;
  if not found then
    raise exception using errcode = 'RC201', message = format('payment %s does not exist', p_payment_id);
  end if;
  if p.gateway_payment_id is not null and p.gateway_payment_id <> p_gateway_payment_id then
    raise exception using errcode = 'RC405',
      message = format('payment %s is already %s at %s, not %s', p.id, p.gateway_payment_id, p.provider, p_gateway_payment_id);
  end if;
  perform reserve.assert_gateway_id_free(p.provider, p_gateway_payment_id, p.id);
  update reserve.payments
  set gateway_payment_id = p_gateway_payment_id,
      gateway_status = coalesce(p_gateway_status, gateway_status),
      provider_payload = coalesce(p_provider_payload, provider_payload),
      expires_at = coalesce(p_expires_at, expires_at)
  where id = p.id
  returning * into p;
  return p;
end
$$;
