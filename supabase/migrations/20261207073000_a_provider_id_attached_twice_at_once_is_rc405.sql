-- Two payments given the same provider id at the same moment (attach_gateway_payment, create_payment)
-- both passed the check and the second failed on payments_provider_gateway_payment_id_key with a raw
-- 23505. The check now takes a transaction lock on the id first (and is volatile, so its read after the
-- wait sees the first one's row): the second is RC405, naming the payment that has it.
CREATE OR REPLACE FUNCTION reserve.assert_gateway_id_free(p_provider text, p_gateway_payment_id text, p_payment_id uuid)
 RETURNS void
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  other uuid;
begin
  if length(p_gateway_payment_id) = 0 or length(p_gateway_payment_id) > 255 then
    raise exception using errcode = 'RC001', message = 'a gateway payment id is 1..255 characters';
  end if;
  -- two payments attaching one provider id at once: the second waits for the first to commit, then sees
  -- its row (RC405), where the unique key would have refused it with a bare 23505
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('reserve.gateway_payment_id:' || p_provider || ':' || p_gateway_payment_id, 0));
  select id into other from reserve.payments
  where provider = p_provider and gateway_payment_id = p_gateway_payment_id and id is distinct from p_payment_id;
  if found then
    raise exception using errcode = 'RC405',
      message = format('%s payment %s is already recorded as payment %s', p_provider, p_gateway_payment_id, other);
  end if;
end
$function$;
