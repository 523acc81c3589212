-- The check that legs balance per currency was written twice: over JSON legs (assert_balanced, which
-- corrections use) and over parsed rows (post_ledger_lines). It is now one function over rows;
-- assert_balanced parses and calls it. Same RC401 and message.

create function reserve.assert_lines_balanced(p_lines reserve.ledger_line[], p_what text)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  bad record;
begin
  select l.currency, sum(l.amount) filter (where l.direction = 'debit') as d,
         sum(l.amount) filter (where l.direction = 'credit') as c
    into bad
  from unnest(p_lines) l
  group by l.currency
  having coalesce(sum(l.amount) filter (where l.direction = 'debit'), 0)
      <> coalesce(sum(l.amount) filter (where l.direction = 'credit'), 0)
  limit 1;
  if found then
    raise exception using errcode = 'RC401',
      message = format('%s does not balance in %s: debits %s, credits %s', p_what, bad.currency, coalesce(bad.d, 0), coalesce(bad.c, 0));
  end if;
end
$$;
comment on function reserve.assert_lines_balanced(p_lines reserve.ledger_line[], p_what text) is 'Raises RC401 when ledger legs do not balance per currency. Internal.';
revoke all on function reserve.assert_lines_balanced(reserve.ledger_line[], text) from public, anon, authenticated;

create or replace function reserve.assert_balanced(p_entries jsonb, p_what text)
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform reserve.assert_lines_balanced(
    array(select row(e.account, e.direction, e.amount, e.entry_type, e.currency, e.description)::reserve.ledger_line
          from reserve.parse_ledger_entries(p_entries, 'correction') e),
    p_what);
end
$$;

CREATE OR REPLACE FUNCTION reserve.post_ledger_lines(p_kind text, p_description text, p_entries jsonb, p_lines reserve.ledger_line[], p_idempotency_key text, p_payment_id uuid, p_reservation_id uuid, p_city_code text, p_reverses uuid)
 RETURNS reserve.ledger_transactions
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  tx reserve.ledger_transactions;
  hash text;
begin
  perform reserve.assert_lines_balanced(p_lines, 'ledger transaction ' || coalesce(p_idempotency_key, '(no key)'));

  -- over the legs as the caller gave them: a replay with the same key and other legs is refused
  hash := md5(jsonb_build_array(p_kind, p_description, p_entries, p_payment_id, p_reservation_id, p_city_code, p_reverses)::text);
  perform set_config('reserve.ledger_writer', 'on', true);
  insert into reserve.ledger_transactions (kind, description, payment_id, reservation_id, city_code, reverses,
                                           idempotency_key, request_hash, created_by)
  values (p_kind, p_description, p_payment_id, p_reservation_id, p_city_code, p_reverses,
          p_idempotency_key, hash, reserve.current_actor())
  on conflict (idempotency_key) do nothing
  returning * into tx;

  if tx.id is null then
    perform set_config('reserve.ledger_writer', '', true);
    select * into tx from reserve.ledger_transactions where idempotency_key = p_idempotency_key;
    if tx.request_hash is distinct from hash then
      raise exception using errcode = 'RC405',
        message = format('idempotency key %s was already used for ledger transaction %s with other arguments',
                         p_idempotency_key, tx.id);
    end if;
    return tx;
  end if;

  perform reserve.write_ledger_lines(tx, p_lines);
  return tx;
end
$function$
;
