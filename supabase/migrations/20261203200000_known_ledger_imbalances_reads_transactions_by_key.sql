-- known_ledger_imbalances() (every health check, every minute) reads the transactions of the hour's
-- candidate legs by their key. Joined to ledger_transactions as a whole, the planner hashed all of it (a
-- parallel scan of 1.2M rows, ~500 ms on the year dataset) for a few thousand candidates; a lateral lookup
-- by key is an index read each. Same rows, same order.

CREATE OR REPLACE FUNCTION reserve.known_ledger_imbalances()
 RETURNS TABLE(transaction_id uuid, kind text, posted_at timestamp with time zone, currency text, debits bigint, credits bigint, imbalance bigint, entry_count bigint, last_entry_at timestamp with time zone)
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  a reserve.integrity_audits := reserve.last_integrity_audit();
begin
  if a.id is null then
    -- no audit yet: every transaction ever written, summed once
    return query
    with whole as (
      select e.transaction_id, e.currency,
             coalesce(sum(e.amount) filter (where e.direction = 'debit'), 0)::bigint as debits,
             coalesce(sum(e.amount) filter (where e.direction = 'credit'), 0)::bigint as credits,
             count(*) as n, max(e.created_at) as last_at
      from reserve.ledger_entries e group by 1, 2
    )
    select t.id, t.kind, t.posted_at, w.currency, w.debits, w.credits, w.debits - w.credits, w.n, w.last_at
    from whole w join reserve.ledger_transactions t on t.id = w.transaction_id
    where w.debits <> w.credits
    order by 3, 1;
  else
    return query
    with candidates as (
      select unnest(a.imbalanced_transactions) as id
      union
      select e.transaction_id from reserve.ledger_entries e where e.created_at >= a.verified_through
    )
    select c.id, t.kind, t.posted_at, w.currency, w.debits, w.credits, w.debits - w.credits, w.n, w.last_at
    from candidates c
    cross join lateral (
      select e.currency,
             coalesce(sum(e.amount) filter (where e.direction = 'debit'), 0)::bigint as debits,
             coalesce(sum(e.amount) filter (where e.direction = 'credit'), 0)::bigint as credits,
             count(*) as n, max(e.created_at) as last_at
      from reserve.ledger_entries e where e.transaction_id = c.id group by 1
    ) w
    -- each candidate's transaction through its key: joined to all of ledger_transactions, the planner
    -- read it whole (a million rows) for the hour's few thousand candidates
    join lateral (select x.kind, x.posted_at from reserve.ledger_transactions x where x.id = c.id) t on true
    where w.debits <> w.credits
    order by 3, 1;
  end if;
end
$function$
;
