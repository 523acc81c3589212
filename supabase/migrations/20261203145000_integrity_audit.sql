-- The periodic full audit of what only a full scan can prove: every ledger transaction ever written
-- balances, and every unit's calendar counters from today on add up to its live reservations and held
-- locks. The health checks (next migration) then read only what changed since the last audit: the
-- audit's findings, re-checked, and the rows written since it began. A write that bypassed the triggers
-- (session_replication_role = replica, a back-dated row) is caught here at the latest; the audit
-- leaves a heartbeat, and its own alert fires when it stops running.
--
-- What the audit may not have seen: rows of transactions still open when it began. Their timestamps
-- (created_at, updated_at: now(), the start of their transaction) are not before the start of the
-- oldest transaction open then, so verified_through is that start (and at least five minutes back, for
-- a session whose start a role without pg_read_all_stats could not see).

create table reserve.integrity_audits (
  id                      bigint generated always as identity primary key,
  started_at              timestamptz not null,
  verified_through        timestamptz not null,
  finished_at             timestamptz not null default now(),
  ledger_transactions     bigint not null check (ledger_transactions >= 0),
  imbalanced_transactions uuid[] not null default '{}',
  drifted_units           uuid[] not null default '{}',
  duration_ms             integer not null check (duration_ms >= 0),
  constraint integrity_audits_window_check check (verified_through <= started_at)
);
comment on table reserve.integrity_audits is
  'One row per run of run_integrity_audit(): what the full scan found (imbalanced ledger transactions of '
  'all time, units whose counters drift from their rows) and verified_through, before which every '
  'committed row was seen by it. The health checks read rows written at or after verified_through, '
  'plus these findings re-checked.';
comment on column reserve.integrity_audits.verified_through is
  'Every row written before this (by its created_at / updated_at) was committed when the audit read the '
  'tables: the start of the oldest transaction open when the audit began, at least five minutes before it.';
create index integrity_audits_finished_idx on reserve.integrity_audits (finished_at desc);
alter table reserve.integrity_audits enable row level security;
revoke all on reserve.integrity_audits from public, anon, authenticated;
grant select on reserve.integrity_audits to service_role;

-- what "changed since" reads: each is the time a row was last written through the normal paths
-- (defaults on insert, touch_updated_at on update, released_at set by every release and expiry)
create index reservations_updated_at_idx on reserve.reservations (updated_at);
create index availability_calendar_updated_at_idx on reserve.availability_calendar (updated_at);
create index booking_locks_created_at_idx on reserve.booking_locks (created_at);
create index booking_locks_released_at_idx on reserve.booking_locks (released_at) where released_at is not null;

create function reserve.run_integrity_audit()
returns reserve.integrity_audits
language plpgsql
security definer
set search_path = ''
as $$
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

  with per_tx as (
    select e.transaction_id,
           coalesce(sum(e.amount) filter (where e.direction = 'debit'), 0)
             <> coalesce(sum(e.amount) filter (where e.direction = 'credit'), 0) as off
    from reserve.ledger_entries e
    group by e.transaction_id, e.currency
  )
  select count(distinct p.transaction_id), coalesce(array_agg(distinct p.transaction_id) filter (where p.off), '{}')
    into a.ledger_transactions, a.imbalanced_transactions
  from per_tx p;

  select coalesce(array_agg(d.unit_id order by d.unit_id), '{}') into a.drifted_units
  from reserve.units_with_counter_drift() d;

  insert into reserve.integrity_audits (started_at, verified_through, ledger_transactions, imbalanced_transactions,
                                        drifted_units, duration_ms)
  values (a.started_at, a.verified_through, a.ledger_transactions, a.imbalanced_transactions, a.drifted_units,
          (extract(epoch from clock_timestamp() - started) * 1000)::integer)
  returning * into a;
  perform reserve.record_job_heartbeat('run_integrity_audit', started, true, jsonb_build_object(
    'ledger_transactions', a.ledger_transactions,
    'imbalanced_transactions', cardinality(a.imbalanced_transactions),
    'drifted_units', cardinality(a.drifted_units),
    'verified_through', a.verified_through));
  return a;
end
$$;
comment on function reserve.run_integrity_audit() is
  'The full audit (scheduled hourly): sums every ledger transaction ever written and recounts every '
  'unit''s counters from today on, records what does not add up in integrity_audits with the time '
  'before which it saw everything, and leaves a run_integrity_audit heartbeat. The health checks read '
  'only its findings and what was written since. Seconds on a year of data.';
revoke all on function reserve.run_integrity_audit() from public;
grant execute on function reserve.run_integrity_audit() to service_role;

create function reserve.last_integrity_audit()
returns reserve.integrity_audits
language sql
stable
security definer
set search_path = ''
as $$
  select a.* from reserve.integrity_audits a order by a.finished_at desc, a.id desc limit 1
$$;
comment on function reserve.last_integrity_audit() is
  'The latest run_integrity_audit() row (all columns null when it never ran: the checks then scan everything).';
revoke all on function reserve.last_integrity_audit() from public;
grant execute on function reserve.last_integrity_audit() to service_role;

do $$
begin
  if to_regnamespace('cron') is not null then
    perform cron.schedule('reserve_integrity_audit', '17 * * * *', 'select reserve.run_integrity_audit()');
  else
    raise notice 'pg_cron missing: run_integrity_audit is not scheduled in the database';
  end if;
end
$$;

insert into reserve.retention_policies (table_name, retention_days, retention_type, date_column, description) values
  ('integrity_audits', 90, 'delete', 'finished_at', 'Full integrity audits: three months of findings.');
