-- A leg's keys were read by name and the rest ignored: an `acount` beside `account` was approved, a
-- misspelt `curency` silently became BRL. A leg with a key it does not have is now refused (RC001),
-- naming the entry and the key.

create or replace function reserve.parse_ledger_entries(p_entries jsonb, p_default_type text)
 RETURNS TABLE(account text, direction text, amount bigint, entry_type text, currency text, description text)
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  e jsonb;
  i integer := 0;
  unknown text;
begin
  if p_entries is null or jsonb_typeof(p_entries) <> 'array' or jsonb_array_length(p_entries) < 1 then
    raise exception using errcode = 'RC001', message = 'entries must be a non-empty JSON array';
  end if;
  for e in select value from jsonb_array_elements(p_entries) loop
    i := i + 1;
    if jsonb_typeof(e) <> 'object' or jsonb_typeof(e -> 'amount') is distinct from 'number'
       or (e ->> 'amount')::numeric <> trunc((e ->> 'amount')::numeric) or (e ->> 'amount')::numeric <= 0
       or (e ->> 'amount')::numeric > 9007199254740991 then
      raise exception using errcode = 'RC001',
        message = format('entry %s: amount must be a positive whole number of centavos, got %s', i, coalesce(e ->> 'amount', 'null'));
    end if;
    select string_agg(k, ', ' order by k) into unknown
    from jsonb_object_keys(e) k
    where k <> all (array['account', 'direction', 'amount', 'entry_type', 'currency', 'description']);
    if unknown is not null then
      raise exception using errcode = 'RC001',
        message = format('entry %s: unknown key %s (a leg has account, direction, amount, and optionally entry_type, currency, description)', i, unknown);
    end if;
    if (e ->> 'direction') is null or (e ->> 'direction') not in ('debit', 'credit') then
      raise exception using errcode = 'RC001',
        message = format('entry %s: direction must be debit or credit, got %s', i, coalesce(e ->> 'direction', 'null'));
    end if;
    if not exists (select 1 from reserve.ledger_accounts a where a.code = e ->> 'account') then
      raise exception using errcode = 'RC404',
        message = format('entry %s: ledger account %s does not exist', i, coalesce(e ->> 'account', 'null'));
    end if;
    account := e ->> 'account';
    direction := e ->> 'direction';
    amount := (e ->> 'amount')::bigint;
    entry_type := coalesce(e ->> 'entry_type', p_default_type);
    currency := coalesce(e ->> 'currency', 'BRL');
    if entry_type not in ('guest_payment', 'host_share', 'commission', 'provider_fee', 'refund',
                          'chargeback', 'payout', 'reversal', 'correction') then
      raise exception using errcode = 'RC001', message = format('entry %s: entry_type %s is unknown', i, entry_type);
    end if;
    if currency !~ '^[A-Z]{3}$' then
      raise exception using errcode = 'RC001', message = format('entry %s: currency %s is not an ISO code like BRL', i, currency);
    end if;
    description := e ->> 'description';
    return next;
  end loop;
end
$function$
;

comment on function reserve.parse_ledger_entries(jsonb, text) is 'Validates ledger legs given as JSON (RC001: a bad amount, direction, entry_type or currency, or a key a leg does not have; RC404: an unknown account) and returns them as rows.';
