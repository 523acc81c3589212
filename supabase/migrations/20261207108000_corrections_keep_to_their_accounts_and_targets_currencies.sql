-- A correction's legs took any three capital letters as a currency: ZZZ, or USD legs on bank_brl, were
-- approved, and a correction of an existing transaction was not held to that transaction's currency.
-- A stand-alone correction's leg is now in a currency its account holds (or BRL), a correction of a
-- transaction in that transaction's currencies; RC001 otherwise, naming the entry.

create or replace function reserve.assert_correction_balances(p_entries jsonb, p_target uuid)
 RETURNS void
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  bad record;
  leg record;
  held text;
begin
  if p_target is null then
    -- a leg's currency is one its account already holds, or BRL (the ledger's own): never a new code
    select p.n, p.account, p.currency into leg
    from reserve.parse_ledger_entries(p_entries, 'correction') with ordinality p(account, direction, amount, entry_type, currency, description, n)
    where p.currency <> 'BRL'
      and not exists (select 1 from reserve.ledger_account_balances b where b.account = p.account and b.currency = p.currency)
    order by p.n limit 1;
    if found then
      select string_agg(distinct b.currency, ', ' order by b.currency) into held
      from reserve.ledger_account_balances b where b.account = leg.account;
      raise exception using errcode = 'RC001',
        message = format('entry %s: ledger account %s holds no %s (it holds %s)', leg.n, leg.account, leg.currency, coalesce(held, 'BRL only'));
    end if;
    perform reserve.assert_balanced(p_entries, 'correction');
    return;
  end if;
  if not exists (select 1 from reserve.ledger_transactions where id = p_target) then
    raise exception using errcode = 'RC406', message = format('ledger transaction %s does not exist', p_target);
  end if;
  -- a correction of a transaction is in that transaction's currencies
  select p.n, p.currency into leg
  from reserve.parse_ledger_entries(p_entries, 'correction') with ordinality p(account, direction, amount, entry_type, currency, description, n)
  where not exists (select 1 from reserve.ledger_entries e where e.transaction_id = p_target and e.currency = p.currency)
  order by p.n limit 1;
  if found then
    select string_agg(distinct e.currency, ', ' order by e.currency) into held
    from reserve.ledger_entries e where e.transaction_id = p_target;
    raise exception using errcode = 'RC001',
      message = format('entry %s: ledger transaction %s is in %s, not %s', leg.n, p_target, coalesce(held, 'no currency (it has no legs)'), leg.currency);
  end if;
  select currency, sum(d) as d, sum(c) as c into bad from (
    select e.currency, case when e.direction = 'debit' then e.amount else 0 end as d,
           case when e.direction = 'credit' then e.amount else 0 end as c
    from reserve.ledger_entries e where e.transaction_id = p_target
    union all
    select p.currency, case when p.direction = 'debit' then p.amount else 0 end,
           case when p.direction = 'credit' then p.amount else 0 end
    from reserve.parse_ledger_entries(p_entries, 'correction') p) legs
  group by currency having sum(d) <> sum(c) limit 1;
  if found then
    raise exception using errcode = 'RC401',
      message = format('ledger transaction %s with the correction would not balance in %s: debits %s, credits %s',
                       p_target, bad.currency, bad.d, bad.c);
  end if;
end
$function$
;

comment on function reserve.assert_correction_balances(jsonb, uuid) is 'Raises RC401 unless the legs balance alone (no target) or bring the target transaction to balance; RC001 for a leg in a currency its account does not hold (other than BRL) or, with a target, that the target is not in.';
