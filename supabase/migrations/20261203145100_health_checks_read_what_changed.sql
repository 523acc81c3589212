-- The health checks cost what changed, not what exists. Each evaluation used to rescan history: every
-- unit's calendar from today on against its reservations and holds (twice: overbooking and counter
-- drift), and a week of ledger legs. Now they read the last run_integrity_audit()'s findings, re-checked
-- against the rows as they are, and the rows written since the audit began (verified_through):
--   * ledger: the transactions the audit found unbalanced, and every transaction given a leg since,
--     summed whole. The window is all of time (the audit sums every transaction), so an old imbalance
--     stays a P1 until it is corrected.
--   * availability: the units the audit found drifting, and every unit whose reservations, locks or
--     calendar nights were written since, recounted. overbooking_check and availability_counter_drift
--     read the same units, so the runbook's queries answer as fast as the alert.
-- Before the first audit everything is scanned (the checks are then as slow as before, and as right).
-- A write that bypassed the triggers and back-dated its row, or an UPDATE under
-- session_replication_role = replica (which leaves updated_at as it was), is found by the next audit:
-- integrity_audit goes WARNING (the P2 integrity_audit_stale) when the audit has not run for 3 hours.
-- audit_log_size sums every partition of audit_logs (monthly partitions follow), and its alert's
-- summary no longer names a size: the threshold column says the setting's value in MB.

create function reserve.units_with_counter_drift(p_units uuid[])
returns table (unit_id uuid)
language sql
stable
set search_path = ''
as $$
  -- the same comparison as units_with_counter_drift(), unit by unit through the indexes: sums of the
  -- nights from today on (count, day, day squared) of the counters against those of the rows
  select u.id
  from (select distinct x as id from unnest(p_units) x where x is not null) u
  cross join lateral (
    select coalesce(sum(c.bookings_count), 0) as b0, coalesce(sum(c.bookings_count * (c.date - current_date)), 0) as b1,
           coalesce(sum(c.bookings_count * (c.date - current_date) * (c.date - current_date)), 0) as b2,
           coalesce(sum(c.temp_holds), 0) as h0, coalesce(sum(c.temp_holds * (c.date - current_date)), 0) as h1,
           coalesce(sum(c.temp_holds * (c.date - current_date) * (c.date - current_date)), 0) as h2
    from reserve.availability_calendar c where c.unit_id = u.id and c.date >= current_date
  ) c
  cross join lateral (
    select coalesce(sum(s.b - s.a), 0) as b0,
           coalesce(sum((s.b * (s.b - 1) - s.a * (s.a - 1)) / 2), 0) as b1,
           coalesce(sum(((s.b - 1) * s.b * (2 * s.b - 1) - (s.a - 1) * s.a * (2 * s.a - 1)) / 6), 0) as b2
    from (select (greatest(r.check_in, current_date) - current_date)::bigint as a, (r.check_out - current_date)::bigint as b
          from reserve.reservations r
          where r.unit_id = u.id and r.stay && daterange(current_date, null)
            and r.status in ('host_commit_pending', 'confirmed', 'checked_in')) s
  ) s
  cross join lateral (
    select count(*) as h0, coalesce(sum(l.lock_date - current_date), 0) as h1,
           coalesce(sum((l.lock_date - current_date) * (l.lock_date - current_date)), 0) as h2
    from reserve.booking_locks l where l.unit_id = u.id and l.status = 'held' and l.lock_date >= current_date
  ) h
  where (c.b0, c.b1, c.b2) <> (s.b0, s.b1, s.b2) or (c.h0, c.h1, c.h2) <> (h.h0, h.h1, h.h2)
$$;
comment on function reserve.units_with_counter_drift(uuid[]) is
  'Of the given units, those whose calendar counters from today on do not add up to their live reservations and held locks.';
revoke all on function reserve.units_with_counter_drift(uuid[]) from public;
grant execute on function reserve.units_with_counter_drift(uuid[]) to service_role;

create function reserve.units_written_since(p_since timestamptz)
returns table (unit_id uuid)
language sql
stable
set search_path = ''
as $$
  select r.unit_id from reserve.reservations r where r.updated_at >= p_since
  union select l.unit_id from reserve.booking_locks l where l.created_at >= p_since
  union select l.unit_id from reserve.booking_locks l where l.released_at >= p_since
  union select c.unit_id from reserve.availability_calendar c where c.updated_at >= p_since
$$;
comment on function reserve.units_written_since(timestamptz) is
  'Units with a reservation, lock or calendar night written since p_since (through the normal paths: '
  'created_at, updated_at and released_at are set by defaults and triggers).';
revoke all on function reserve.units_written_since(timestamptz) from public;
grant execute on function reserve.units_written_since(timestamptz) to service_role;

create function reserve.drifting_units()
returns table (unit_id uuid)
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  a reserve.integrity_audits := reserve.last_integrity_audit();
begin
  if a.id is null then
    return query select d.unit_id from reserve.units_with_counter_drift() d;
  else
    return query select d.unit_id from reserve.units_with_counter_drift(array(
      select unnest(a.drifted_units) union select w.unit_id from reserve.units_written_since(a.verified_through) w)) d;
  end if;
end
$$;
comment on function reserve.drifting_units() is
  'Units whose counters from today on do not add up to their rows: of those the last integrity audit '
  'found and those written since it began (every unit, before the first audit).';
revoke all on function reserve.drifting_units() from public;
grant execute on function reserve.drifting_units() to service_role;

create function reserve.known_ledger_imbalances()
returns table (transaction_id uuid, kind text, posted_at timestamptz, currency text, debits bigint, credits bigint,
               imbalance bigint, entry_count bigint, last_entry_at timestamptz)
language plpgsql
stable
security definer
set search_path = ''
as $$
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
    select t.id, t.kind, t.posted_at, w.currency, w.debits, w.credits, w.debits - w.credits, w.n, w.last_at
    from candidates c
    cross join lateral (
      select e.currency,
             coalesce(sum(e.amount) filter (where e.direction = 'debit'), 0)::bigint as debits,
             coalesce(sum(e.amount) filter (where e.direction = 'credit'), 0)::bigint as credits,
             count(*) as n, max(e.created_at) as last_at
      from reserve.ledger_entries e where e.transaction_id = c.id group by 1
    ) w
    join reserve.ledger_transactions t on t.id = c.id
    where w.debits <> w.credits
    order by 3, 1;
  end if;
end
$$;
comment on function reserve.known_ledger_imbalances() is
  'Ledger transactions of all time whose debits differ from credits, as known now: those the last '
  'integrity audit found, and those given a leg since it began, summed whole (everything, before the '
  'first audit). Columns as find_ledger_imbalances(), plus the time of the last leg.';
revoke all on function reserve.known_ledger_imbalances() from public;
grant execute on function reserve.known_ledger_imbalances() to service_role;

create or replace view reserve.availability_counter_drift with (security_invoker = true) as
with suspect as materialized (
  select array_agg(d.unit_id) as units from reserve.drifting_units() d
), actual as materialized (
  select n.unit_id, n.date, n.live_reservations, n.held_locks
  from suspect, lateral reserve.nights_in_use_from_today(suspect.units) n
)
select c.unit_id, c.date, c.bookings_count, coalesce(a.live_reservations, 0) as actual_bookings,
       c.temp_holds, coalesce(a.held_locks, 0) as actual_holds
from suspect
join reserve.availability_calendar c on c.unit_id = any (suspect.units)
left join actual a on a.unit_id = c.unit_id and a.date = c.date
where c.date >= current_date
  and (c.bookings_count <> coalesce(a.live_reservations, 0) or c.temp_holds <> coalesce(a.held_locks, 0));
comment on view reserve.availability_counter_drift is
  'Calendar nights from today on whose bookings_count or temp_holds differ from live reservations and '
  'held locks, of the units drifting_units() names (the last integrity audit''s and those written since).';

create or replace view reserve.overbooking_check with (security_invoker = true) as
with suspect as materialized (
  select array_agg(d.unit_id) as units from reserve.drifting_units() d
), actual as materialized (
  select n.unit_id, n.date, n.live_reservations, n.held_locks
  from suspect, lateral reserve.nights_in_use_from_today(suspect.units) n
)
select c.unit_id, u.name as unit_name, u.property_id, p.city_code, c.date, c.allotment, c.bookings_count, c.temp_holds,
       a.live_reservations, a.held_locks,
       greatest(c.bookings_count + c.temp_holds, a.live_reservations + a.held_locks) - c.allotment as oversold_by
from actual a
join reserve.availability_calendar c on c.unit_id = a.unit_id and c.date = a.date
join reserve.unit_map u on u.id = c.unit_id
join reserve.properties_map p on p.id = u.property_id
where c.allotment < a.live_reservations + a.held_locks or c.allotment < c.bookings_count + c.temp_holds
union all
select c.unit_id, u.name, u.property_id, p.city_code, c.date, c.allotment, c.bookings_count, c.temp_holds,
       c.bookings_count, c.temp_holds, c.bookings_count + c.temp_holds - c.allotment
from reserve.availability_calendar c
join reserve.unit_map u on u.id = c.unit_id
join reserve.properties_map p on p.id = u.property_id
where not exists (select 1 from pg_catalog.pg_constraint k
                  where k.conname = 'availability_calendar_capacity_check'
                    and k.conrelid = 'reserve.availability_calendar'::regclass and k.convalidated)
  and c.date >= current_date and c.allotment < c.bookings_count + c.temp_holds
  and not exists (select 1 from actual a where a.unit_id = c.unit_id and a.date = c.date)
order by 1, 5;
comment on view reserve.overbooking_check is
  'Nights from today on sold or held beyond their allotment (runbook P1 Overbooking), counted from the '
  'live reservations and held locks of every unit whose counters disagree with its rows (a bypassed '
  'guard always leaves that) among those drifting_units() names, and from the counters if the capacity '
  'check was dropped. Empty unless a guard was bypassed.';

create or replace function reserve.system_health_check()
returns table (check_name text, status text, observed_value numeric, threshold text, details text)
language plpgsql
security definer
set search_path = ''
as $$
declare
  n numeric;
  m numeric;
  decided numeric;
  t text;
  last_at timestamptz;
  since timestamptz;
begin
  -- money: trg_ledger_balance refuses an unbalanced commit, so what is looked for is a bypass, of any
  -- age: what the last integrity audit found and every transaction given a leg since, summed whole
  select count(*) into n from reserve.known_ledger_imbalances();
  return query select 'ledger_balance', case when n > 0 then 'CRITICAL' else 'OK' end, n,
    '0 imbalanced transactions (the last integrity audit and every leg since)',
    case when n > 0 then 'known_ledger_imbalances() returns rows' else 'every transaction balances' end;

  select tg.tgenabled::text into t from pg_catalog.pg_trigger tg
  where tg.tgname = 'trg_ledger_balance' and tg.tgrelid = 'reserve.ledger_entries'::regclass;
  return query select 'ledger_trigger_enabled',
    case when t in ('O', 'A') then 'OK' else 'CRITICAL' end, null::numeric, 'tgenabled O or A',
    case when t is null then 'trg_ledger_balance is missing'
         when t in ('O', 'A') then format('trg_ledger_balance tgenabled = %s', t)
         else format('trg_ledger_balance tgenabled = %s: unbalanced transactions can commit', t) end;

  -- availability
  select count(*) into n from reserve.overbooking_check;
  return query select 'overbooking', case when n > 0 then 'CRITICAL' else 'OK' end, n, '0 oversold nights',
    case when n > 0 then 'reserve.overbooking_check returns rows' else 'no night sold past its allotment' end;

  select count(*) into n from reserve.availability_counter_drift;
  return query select 'availability_counter_drift', case when n > 0 then 'WARNING' else 'OK' end, n, '0 nights',
    case when n > 0 then 'counters differ from reservations and holds: rebuild_unit_availability' else 'counters match' end;

  -- payments
  select count(*) into n from reserve.stuck_payments;
  return query select 'stuck_payments', case when n >= 10 then 'CRITICAL' when n > 0 then 'WARNING' else 'OK' end, n,
    '0 (CRITICAL at 10)', 'pending or processing past stuck_minutes_card / stuck_minutes_pix';

  select count(*) into n from reserve.payments p
  where p.status = 'pending' and p.method = 'pix' and p.created_at < now() - interval '30 minutes';
  return query select 'pix_pending_over_30m', case when n > 0 then 'WARNING' else 'OK' end, n, '0 PIX pending > 30 min',
    'PIX charges still pending past their 30-minute hold (paid but not confirmed, or not yet expired)';

  select count(*) filter (where p.status = 'succeeded' or p.succeeded_at is not null),
         count(*) filter (where p.status = 'failed')
    into n, m
  from reserve.payments p
  where p.created_at > now() - interval '1 hour' and p.status not in ('pending', 'processing');
  decided := n + m;
  return query select 'payment_success_rate_1h',
    case when decided < 10 then 'OK' when n / decided < 0.5 then 'CRITICAL' when n / decided < 0.8 then 'WARNING' else 'OK' end,
    case when decided > 0 then round(100 * n / decided, 2) end, '>= 80% (of at least 10 decided attempts)',
    format('%s succeeded, %s failed in the last hour', n, m);

  select count(*) into n from reserve.payments p where p.duplicate_of is not null and p.status = 'succeeded';
  return query select 'double_charges', case when n > 0 then 'WARNING' else 'OK' end, n, '0 unrefunded',
    'second charges of a paid intent still holding the money: refund_duplicate_charge';

  select count(*) into n from reserve.payments p
  where p.status = 'succeeded' and p.succeeded_at between now() - interval '7 days' and now() - interval '5 minutes'
    and p.duplicate_of is null and p.refund_reason is null
    and not exists (select 1 from reserve.reservations r where r.booking_intent_id = p.booking_intent_id);
  return query select 'paid_without_reservation', case when n > 0 then 'CRITICAL' else 'OK' end, n, '0 (7 days)',
    'succeeded payments with no reservation and no refund flag: finalize_reservation';

  -- webhooks
  select count(*) filter (where w.status = 'failed' and w.received_at > now() - interval '1 hour'),
         count(*) filter (where w.status = 'dead')
    into n, m
  from reserve.processed_webhooks w where w.status in ('failed', 'dead');
  return query select 'webhooks_failed_1h', case when n >= 10 then 'CRITICAL' when n > 0 then 'WARNING' else 'OK' end, n,
    '0 (CRITICAL at 10)', 'failed deliveries in the last hour (retried with backoff): webhook_failure_analysis';
  return query select 'webhooks_dead', case when m > 0 then 'WARNING' else 'OK' end, m, '0',
    'events given up after max_webhook_attempts, or a second provider payment: replay_webhook';

  select w.processed_at into last_at from reserve.processed_webhooks w
  where w.status = 'completed' and w.received_at > now() - interval '1 day'
  order by w.received_at desc limit 1;
  select count(*) into n from reserve.stuck_payments;
  select count(*) into m from reserve.payments p where p.created_at > now() - interval '1 hour';
  return query select 'webhook_delivery',
    case when n > 0 and (last_at is null or last_at < now() - interval '1 hour') then 'CRITICAL'
         when m >= 5 and not exists (select 1 from reserve.processed_webhooks w where w.received_at > now() - interval '30 minutes')
           then 'WARNING'
         else 'OK' end,
    round(extract(epoch from now() - last_at) / 60), 'a completed webhook within the hour while payments are stuck',
    format('last completed webhook %s; %s stuck payments; %s payments in the last hour',
           coalesce(to_char(last_at, 'YYYY-MM-DD HH24:MI:SS TZ'), 'none in a day'), n, m);

  select count(*) into n from reserve.processed_webhooks w
  where w.status = 'ignored' and w.received_at > now() - interval '1 hour';
  return query select 'webhooks_ignored_1h', case when n > 1000 then 'WARNING' else 'OK' end, n, '<= 1000 per hour',
    'events we record but do not act on: subscribe the endpoints to fewer types';

  -- refunds we owe: refused by the provider, or not confirmed hours after being asked for (a sent refund
  -- is looked up at the provider within minutes, so hours mean the provider has not done it). A closed
  -- request is one an operator ended: retried as a new request, or dealt with otherwise
  select count(*) into n from reserve.refund_requests rr
  where rr.status = 'failed'
     or (rr.status not in ('confirmed', 'closed')
         and rr.created_at < now() - make_interval(hours => reserve.setting_int('refund_stuck_hours')));
  return query select 'refunds_stuck', case when n > 0 then 'WARNING' else 'OK' end, n,
    format('0 (unconfirmed after %s h, setting refund_stuck_hours)', reserve.setting_int('refund_stuck_hours')),
    'refund requests failed at the provider or unconfirmed hours after being asked for: look_up_refund, '
    'retry_refund_request or close_refund_request';

  -- jobs
  select j.finished_at into last_at from reserve.job_last_runs j where j.job = 'poll_payment_status';
  return query select 'poller_heartbeat',
    case when last_at is null then
           case when exists (select 1 from reserve.payment_polls pp where pp.next_poll_at < now() - interval '15 minutes')
                then 'WARNING' else 'OK' end
         when last_at < now() - interval '60 minutes' then 'CRITICAL'
         when last_at < now() - interval '15 minutes' then 'WARNING' else 'OK' end,
    round(extract(epoch from now() - last_at) / 60), '< 15 min since the last poll_payment_status run',
    coalesce('last run ' || to_char(last_at, 'YYYY-MM-DD HH24:MI:SS TZ'), 'never ran');

  -- A job that never ran is late once it has been installed as long as a run may be old (36 h: daily,
  -- plus slack), or at once when there are audit rows that old (a database restored or loaded with
  -- history). Until then it is not yet due, and says so; the clock starts when retention was installed.
  select j.finished_at into last_at from reserve.job_last_runs j where j.job = 'run_retention_cleanup';
  select min(rp.created_at) into since from reserve.retention_policies rp where rp.is_enabled;
  return query select 'retention_last_run',
    case when since is null then 'OK'
         when last_at is null then
           case when since < now() - interval '36 hours'
                  or exists (select 1 from reserve.audit_logs a where a.occurred_at < now() - interval '36 hours')
                then 'WARNING' else 'OK' end
         when last_at < now() - interval '36 hours' then 'WARNING' else 'OK' end,
    round(extract(epoch from now() - coalesce(last_at, since)) / 3600, 1),
    '< 36 h since the last run_retention_cleanup (or since retention was installed, before its first run)',
    case when since is null then 'no retention policy is enabled'
         when last_at is not null then 'last run ' || to_char(last_at, 'YYYY-MM-DD HH24:MI:SS TZ')
         else format('never ran; retention installed %s (%s h ago): the daily run is due within 36 h of that',
                     to_char(since, 'YYYY-MM-DD HH24:MI:SS TZ'), round(extract(epoch from now() - since) / 3600, 1)) end;

  -- the full audit: the ledger and availability checks above read its findings and what was written
  -- since it began, so a write that bypassed the triggers is found only when it runs (hourly)
  select j.finished_at into last_at from reserve.job_last_runs j where j.job = 'run_integrity_audit';
  return query select 'integrity_audit',
    case when last_at is not null and last_at < now() - interval '3 hours' then 'WARNING' else 'OK' end,
    round(extract(epoch from now() - last_at) / 3600, 1), '< 3 h since the last run_integrity_audit (hourly)',
    case when last_at is null then 'never ran: the ledger and availability checks scan everything until it does'
         else 'last run ' || to_char(last_at, 'YYYY-MM-DD HH24:MI:SS TZ')
              || case when last_at < now() - interval '3 hours'
                      then ': writes that bypassed the triggers since then are not found' else '' end end;

  -- the database
  select count(*) into n from pg_catalog.pg_stat_activity a where a.state = 'active';
  return query select 'active_connections', case when n > 80 then 'CRITICAL' when n > 60 then 'WARNING' else 'OK' end, n,
    '<= 80 active', 'connections running a statement now (the runbook: over 80, the pool is exhausted)';

  select count(*) into n from pg_catalog.pg_stat_activity a
  where a.state = 'active' and a.backend_type = 'client backend' and a.pid <> pg_catalog.pg_backend_pid()
    and a.query_start < now() - interval '5 minutes';
  return query select 'long_running_queries', case when n > 0 then 'WARNING' else 'OK' end, n, '0 active > 5 min',
    'statements running over 5 minutes: pg_stat_activity';

  -- observed in MB, the unit of the threshold (the setting); compared in bytes. audit_logs is partitioned
  -- by month: its size is that of every partition (a partitioned table itself holds no rows)
  select coalesce(sum(pg_catalog.pg_total_relation_size(pt.relid)), pg_catalog.pg_total_relation_size('reserve.audit_logs')) into n
  from pg_catalog.pg_partition_tree('reserve.audit_logs') pt;
  m := reserve.setting_int('audit_log_max_mb');
  return query select 'audit_log_size', case when n > m * 1024 * 1024 then 'WARNING' else 'OK' end, round(n / (1024 * 1024), 1),
    format('<= %s MB (setting audit_log_max_mb)', m),
    pg_catalog.pg_size_pretty(n::bigint) || ' in all partitions (retention drops whole months past it; rows it moves from a month still open leave their space until that month is dropped)';

  -- the provider's money and ours disagree: a success for another amount, a refund beyond what arrived
  return query select * from reserve.money_health_checks();
end
$$;
comment on function reserve.system_health_check() is
  'One row per check (ledger balance of all time: the last integrity audit''s findings and every leg '
  'since, trg_ledger_balance enabled, overbooking and counter drift of the units the audit found or that '
  'were written since, stuck payments, PIX pending > 30 min, success rate < 80% in the last hour, double '
  'charges, paid without reservation, failed / dead / silent / noisy webhooks, stuck refunds '
  '(refund_stuck_hours), poller heartbeat, retention last run, integrity audit last run, active '
  'connections, long-running queries, audit log size in MB over all its partitions, then '
  'money_health_checks(): money discrepancies): status OK | WARNING | CRITICAL, the observed value (in '
  'the threshold''s unit), the threshold and details.';

create or replace view reserve.ops_dashboard_summary with (security_invoker = true) as
with hour as (
  select count(*) as payments_1h,
         count(*) filter (where p.status = 'succeeded') as succeeded_1h,
         count(*) filter (where p.status = 'failed') as failed_1h
  from reserve.payments p where p.created_at > now() - interval '1 hour'
), ledger as materialized (
  select count(*) as imbalances, count(*) filter (where k.last_entry_at >= current_date - 7) as imbalances_7d
  from reserve.known_ledger_imbalances() k
)
select now() as as_of, payments_1h, succeeded_1h, failed_1h,
  round(100.0 * succeeded_1h / nullif(succeeded_1h + failed_1h, 0), 2) as success_rate_1h,
  (select count(*) from reserve.payments p where p.status in ('pending', 'processing')) as in_flight,
  (select count(*) from reserve.stuck_payments) as stuck_payments,
  (select count(*) from reserve.payments p
   where p.status = 'pending' and p.method = 'pix' and p.created_at < now() - interval '30 minutes') as pix_pending_over_30m,
  (select count(*) from reserve.payments p where p.duplicate_of is not null and p.status = 'succeeded') as unrefunded_duplicate_charges,
  (select coalesce(sum(p.amount), 0) from reserve.payments p
   where p.status = 'succeeded' and p.succeeded_at > now() - interval '24 hours') as paid_amount_24h,
  (select count(*) from reserve.reservations r where r.created_at > now() - interval '24 hours') as reservations_24h,
  (select count(*) from reserve.booking_locks l where l.status = 'held') as held_nights,
  (select count(*) from reserve.overbooking_check) as overbooked_nights,
  (select ledger.imbalances_7d from ledger) as ledger_imbalances_7d,
  (select sum(ws.failed_1h) from reserve.webhook_status ws) as webhooks_failed_1h,
  (select sum(ws.dead) from reserve.webhook_status ws) as webhooks_dead,
  (select j.age from reserve.job_last_runs j where j.job = 'poll_payment_status') as poller_last_run_age,
  (select ledger.imbalances from ledger) as ledger_imbalances,
  (select j.age from reserve.job_last_runs j where j.job = 'run_integrity_audit') as integrity_audit_age
from hour;
comment on view reserve.ops_dashboard_summary is
  'One row: payments and success rate in the last hour, in flight, stuck, PIX pending over 30 minutes, '
  'unrefunded double charges, money in over 24 hours, reservations, held nights, overbooked nights, '
  'ledger imbalances (known_ledger_imbalances(), as the ledger_balance health check: ledger_imbalances '
  'of all time, ledger_imbalances_7d those with a leg in the last 7 days), failed and dead webhooks, the '
  'poller''s last run and how old the last integrity audit is.';

insert into reserve.alert_rules (alert_name, check_name, fire_on, severity, for_duration, runbook_section, summary) values
  ('integrity_audit_stale', 'integrity_audit', 'WARNING', 'P2', '0', 'P2: INTEGRITY AUDIT STALE',
   'run_integrity_audit has not run for 3 hours: writes that bypassed the triggers are not being found');
update reserve.alert_rules set summary = 'audit_logs (all its partitions) is over its size limit (setting audit_log_max_mb)'
where alert_name = 'audit_log_size';
