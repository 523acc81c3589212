-- known_ledger_imbalances() sums the legs written since the audit before it sums any transaction whole.
-- It summed whole every transaction given a leg since verified_through: on the year dataset an hour holds
-- 12,889 legs of 4,400 transactions (a day's payouts are written at once), 200 to 250 ms of index probes
-- for each of system_health_check, check_all_alerts and ops_dashboard_summary.
--
-- A transaction is off now only if its legs before the watermark are off or its legs since are. So the
-- audit records the first set exactly (the legs created before verified_through, summed per transaction:
-- ledger_summed_before), and the check sums the window's legs once, grouped, and sums whole only those
-- off in the window and the audit's findings. A transaction whose legs straddle the watermark is a finding
-- while its older legs are off by themselves, and is reported only while it is off whole. An audit row
-- written before this (ledger_summed_before null) found what was off whole when it ran; for it the check
-- keeps summing whole every transaction of the window, as before.

alter table reserve.integrity_audits add column ledger_summed_before timestamp with time zone;
comment on column reserve.integrity_audits.ledger_summed_before is
  'imbalanced_transactions are the transactions whose legs created before this (verified_through) do not balance by themselves; null on audits that summed every leg they saw (before migration 20261204121000).';

CREATE OR REPLACE FUNCTION reserve.run_integrity_audit()
 RETURNS reserve.integrity_audits
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  a reserve.integrity_audits;
  started timestamptz := clock_timestamp();
begin
  -- one audit at a time: a second caller waits and then audits after it
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('reserve.run_integrity_audit'));
  -- first, before any table is read (each later statement reads a newer snapshot): whatever those
  -- statements cannot see belongs to a transaction open now or begun later
  select least(now() - interval '5 minutes', min(s.xact_start)) into a.verified_through
  from pg_catalog.pg_stat_activity s
  where s.datname = pg_catalog.current_database() and s.xact_start is not null;
  a.started_at := started;

  -- the legs before the watermark only: those after it are the checks' window, summed there
  with per_tx as (
    select e.transaction_id,
           coalesce(sum(e.amount) filter (where e.direction = 'debit'), 0)
             <> coalesce(sum(e.amount) filter (where e.direction = 'credit'), 0) as off
    from reserve.ledger_entries e
    where e.created_at < a.verified_through
    group by e.transaction_id, e.currency
  )
  select count(distinct p.transaction_id), coalesce(array_agg(distinct p.transaction_id) filter (where p.off), '{}')
    into a.ledger_transactions, a.imbalanced_transactions
  from per_tx p;

  select coalesce(array_agg(d.unit_id order by d.unit_id), '{}') into a.drifted_units
  from reserve.units_with_counter_drift() d;

  select coalesce(array_agg(u.payment_id order by u.payment_id), '{}') into a.unreserved_payments
  from reserve.paid_without_reservation(true) u;

  insert into reserve.integrity_audits (started_at, verified_through, ledger_summed_before, ledger_transactions,
                                        imbalanced_transactions, drifted_units, unreserved_payments, duration_ms)
  values (a.started_at, a.verified_through, a.verified_through, a.ledger_transactions, a.imbalanced_transactions,
          a.drifted_units, a.unreserved_payments, (extract(epoch from clock_timestamp() - started) * 1000)::integer)
  returning * into a;
  perform reserve.record_job_heartbeat('run_integrity_audit', started, true, jsonb_build_object(
    'ledger_transactions', a.ledger_transactions,
    'imbalanced_transactions', cardinality(a.imbalanced_transactions),
    'drifted_units', cardinality(a.drifted_units),
    'unreserved_payments', cardinality(a.unreserved_payments),
    'verified_through', a.verified_through));
  return a;
end
$function$;

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
      select e.transaction_id from reserve.ledger_entries e
      where e.created_at >= a.verified_through
      group by e.transaction_id, e.currency
      -- an audit that summed whole what it saw leaves no rule about the older legs: every one is summed
      having a.ledger_summed_before is null
          or coalesce(sum(e.amount) filter (where e.direction = 'debit'), 0)
             <> coalesce(sum(e.amount) filter (where e.direction = 'credit'), 0)
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
    -- each candidate's transaction through its key (limit 1 keeps the planner from pulling it up into a
    -- join with all of ledger_transactions, a million rows read in parallel for no candidate: 300 ms)
    join lateral (select x.kind, x.posted_at from reserve.ledger_transactions x where x.id = c.id limit 1) t on true
    where w.debits <> w.credits
    order by 3, 1;
  end if;
end
$function$;

comment on function reserve.known_ledger_imbalances() is 'Ledger transactions of all time whose debits differ from credits, as known now: those the last integrity audit found (their legs before its watermark off) and those whose legs since it are off by themselves, each summed whole (everything, before the first audit). Columns as find_ledger_imbalances(), plus the time of the last leg.';
