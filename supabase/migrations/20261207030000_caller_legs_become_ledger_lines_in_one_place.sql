-- A caller's JSON legs become reserve.ledger_line rows in one place, ledger_lines: assert_balanced,
-- post_ledger_transaction and write_ledger_entries each wrote the same conversion of
-- parse_ledger_entries' rows. Same checks (parse_ledger_entries'), same rows, same order.

create function reserve.ledger_lines(p_entries jsonb, p_default_type text)
returns reserve.ledger_line[]
language sql
stable
security definer
set search_path = ''
as $$
  select array(select row(e.account, e.direction, e.amount, e.entry_type, e.currency, e.description)::reserve.ledger_line
               from reserve.parse_ledger_entries(p_entries, p_default_type) e)
$$;
comment on function reserve.ledger_lines(jsonb, text) is 'A caller''s ledger legs as JSON (checked by parse_ledger_entries, RC001 naming the leg) as reserve.ledger_line rows, in their order. Internal.';
revoke all on function reserve.ledger_lines(jsonb, text) from public, anon, authenticated;

CREATE OR REPLACE FUNCTION reserve.assert_balanced(p_entries jsonb, p_what text)
 RETURNS void
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
begin
  perform reserve.assert_lines_balanced(
    reserve.ledger_lines(p_entries, 'correction'),
    p_what);
end
$function$
;

CREATE OR REPLACE FUNCTION reserve.post_ledger_transaction(p_kind text, p_description text, p_entries jsonb, p_idempotency_key text DEFAULT NULL::text, p_payment_id uuid DEFAULT NULL::uuid, p_reservation_id uuid DEFAULT NULL::uuid, p_city_code text DEFAULT NULL::text, p_reverses uuid DEFAULT NULL::uuid)
 RETURNS reserve.ledger_transactions
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  default_type text;
begin
  if p_kind is null or p_kind not in ('payment', 'duplicate_charge', 'refund', 'reversal', 'correction', 'payout', 'chargeback',
                                      'provider_fee', 'provider_payout') then
    raise exception using errcode = 'RC001', message = format('ledger transaction kind %s is unknown', coalesce(p_kind, 'null'));
  end if;
  if p_kind = 'correction' and coalesce(current_setting('reserve.ledger_correction', true), '') <> 'approved' then
    raise exception using errcode = 'RC407',
      message = 'corrections are posted only by approve_ledger_correction (4-eyes)';
  end if;
  if coalesce(length(btrim(p_description)), 0) = 0 then
    raise exception using errcode = 'RC001', message = 'a ledger transaction needs a description';
  end if;
  if jsonb_typeof(p_entries) = 'array' and jsonb_array_length(p_entries) < 2 then
    raise exception using errcode = 'RC001', message = 'a ledger transaction needs at least two entries';
  end if;
  default_type := case p_kind when 'payment' then 'guest_payment' when 'duplicate_charge' then 'guest_payment'
                              when 'chargeback' then 'chargeback' when 'provider_fee' then 'provider_fee'
                              when 'provider_payout' then 'payout' else p_kind end;
  return reserve.post_ledger_lines(
    p_kind, p_description, p_entries,
    reserve.ledger_lines(p_entries, default_type),
    p_idempotency_key, p_payment_id, p_reservation_id, p_city_code, p_reverses);
end
$function$
;

CREATE OR REPLACE FUNCTION reserve.write_ledger_entries(p_transaction reserve.ledger_transactions, p_entries jsonb, p_default_type text, p_default_description text DEFAULT NULL::text)
 RETURNS integer
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
begin
  return reserve.write_ledger_lines(
    p_transaction,
    reserve.ledger_lines(p_entries, p_default_type),
    p_default_description);
end
$function$
;
