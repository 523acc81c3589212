-- ledger_balance_drift(null) built its dynamic query from a null flag: format wrote nothing for
-- %1$s and the statement was a syntax error (42601). A null p_full is now the default, incremental check.
CREATE OR REPLACE FUNCTION reserve.ledger_balance_drift(p_full boolean DEFAULT false)
 RETURNS TABLE(account text, currency text, kept_debits bigint, kept_credits bigint, summed_debits bigint, summed_credits bigint, drift bigint)
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  since timestamptz;
begin
  -- null (PostgREST's JSON null, a caller's unset flag) is the default, cheap check
  p_full := coalesce(p_full, false);
  if not p_full then
    select min(c.through) into since from reserve.ledger_balance_checkpoints c;
  end if;
  -- the time as a literal, so that the incremental check reads the entries since it by the created_at
  -- index (a generic plan would scan every entry); no checkpoint yet (or a full check): every entry
  return query execute format($q$
    with kept as (
      select b.account, b.currency, sum(b.debits)::bigint as debits, sum(b.credits)::bigint as credits
      from reserve.ledger_account_balances b group by b.account, b.currency
    ), moved as (
      -- an entry after its account's own checkpoint counts once, on top of that checkpoint
      select e.account, e.currency,
             coalesce(sum(e.amount) filter (where e.direction = 'debit'), 0)::bigint as debits,
             coalesce(sum(e.amount) filter (where e.direction = 'credit'), 0)::bigint as credits
      from reserve.ledger_entries e
      left join reserve.ledger_balance_checkpoints cp on %1$s and cp.account = e.account and cp.currency = e.currency
      where e.created_at > %2$L::timestamptz and (cp.through is null or e.created_at > cp.through)
      group by e.account, e.currency
    ), summed as (
      select coalesce(c.account, m.account) as account, coalesce(c.currency, m.currency) as currency,
             (coalesce(c.debits, 0) + coalesce(m.debits, 0))::bigint as debits,
             (coalesce(c.credits, 0) + coalesce(m.credits, 0))::bigint as credits
      from (select * from reserve.ledger_balance_checkpoints where %1$s) c
      full join moved m on m.account = c.account and m.currency = c.currency
    )
    select coalesce(k.account, s.account), coalesce(k.currency, s.currency),
           coalesce(k.debits, 0), coalesce(k.credits, 0), coalesce(s.debits, 0), coalesce(s.credits, 0),
           ((coalesce(k.debits, 0) - coalesce(k.credits, 0)) - (coalesce(s.debits, 0) - coalesce(s.credits, 0)))::bigint
    from kept k full join summed s on s.account = k.account and s.currency = k.currency
    where (coalesce(k.debits, 0), coalesce(k.credits, 0)) is distinct from (coalesce(s.debits, 0), coalesce(s.credits, 0))
    order by 1, 2$q$, (not p_full)::text, coalesce(since, '-infinity'::timestamptz));
end
$function$
;
