-- The runbook's first queries on a year of a busy platform (npm run seed:large: 1M payments, 4.9M
-- ledger entries, 3.65M calendar nights; figures from npm run bench:runbook in the issue note):
-- check_all_alerts took 21 s, mostly three full-history scans. What changes:
--   * overbooking_check and availability_counter_drift look at nights from today on (a past night can
--     no longer be sold or repaired; its story is in audit_logs), and count night by night only the units
--     whose per-unit fingerprint of nights in use disagrees with their rows (a bypassed write changes it);
--   * ledger_balance_check computes a day only when it is read, newest first, so LIMIT 5 reads 5 days;
--   * find_ledger_imbalances sums the window's legs once and reads whole transactions only for those
--     out of balance in the window (nearly always none);
--   * indexes for the joins and filters they use.

create index reservations_booking_intent_idx on reserve.reservations (booking_intent_id);
create index reservations_live_check_out_idx on reserve.reservations (check_out)
  where status in ('host_commit_pending', 'confirmed', 'checked_in');
create index availability_calendar_counted_idx on reserve.availability_calendar (date)
  where bookings_count > 0 or temp_holds > 0;
create index payments_failed_at_idx on reserve.payments (failed_at) where status = 'failed';
create index payments_created_at_idx on reserve.payments (created_at);
create index reservations_created_at_idx on reserve.reservations (created_at);

-- Units whose counters disagree with their rows from today on, found from a per-unit fingerprint of the
-- nights in use (how many, the sum of their day numbers, the sum of their squares), computed from each
-- stay's dates without expanding its nights. A bypassed write changes the fingerprint (moving a stay to
-- other nights too, which a plain count would miss), so only these units are counted night by night.
create function reserve.units_with_counter_drift()
returns table (unit_id uuid)
language sql
stable
security invoker
set search_path = ''
as $$
  with counted as (
    select c.unit_id,
           sum(c.bookings_count) as b0, sum(c.bookings_count * (c.date - current_date)) as b1,
           sum(c.bookings_count * (c.date - current_date) * (c.date - current_date)) as b2,
           sum(c.temp_holds) as h0, sum(c.temp_holds * (c.date - current_date)) as h1,
           sum(c.temp_holds * (c.date - current_date) * (c.date - current_date)) as h2
    from reserve.availability_calendar c where c.date >= current_date and (c.bookings_count > 0 or c.temp_holds > 0)
    group by 1
  ), stays as (
    -- nights a .. b-1 (days from today): count b - a, sums of d and d^2 in closed form
    select s.unit_id, sum(s.b - s.a) as b0,
           sum((s.b * (s.b - 1) - s.a * (s.a - 1)) / 2) as b1,
           sum(((s.b - 1) * s.b * (2 * s.b - 1) - (s.a - 1) * s.a * (2 * s.a - 1)) / 6) as b2
    from (select r.unit_id, (greatest(r.check_in, current_date) - current_date)::bigint as a,
                 (r.check_out - current_date)::bigint as b
          from reserve.reservations r
          where r.status in ('host_commit_pending', 'confirmed', 'checked_in') and r.check_out > current_date) s
    group by 1
  ), holds as (
    select l.unit_id, count(*) as h0, sum(l.lock_date - current_date) as h1,
           sum((l.lock_date - current_date) * (l.lock_date - current_date)) as h2
    from reserve.booking_locks l where l.status = 'held' and l.lock_date >= current_date group by 1
  )
  select coalesce(c.unit_id, s.unit_id, h.unit_id)
  from counted c
  full join stays s on s.unit_id = c.unit_id
  full join holds h on h.unit_id = coalesce(c.unit_id, s.unit_id)
  where (coalesce(c.b0, 0), coalesce(c.b1, 0), coalesce(c.b2, 0)) <> (coalesce(s.b0, 0), coalesce(s.b1, 0), coalesce(s.b2, 0))
     or (coalesce(c.h0, 0), coalesce(c.h1, 0), coalesce(c.h2, 0)) <> (coalesce(h.h0, 0), coalesce(h.h1, 0), coalesce(h.h2, 0))
$$;
comment on function reserve.units_with_counter_drift() is
  'Units whose calendar counters from today on do not add up to their live reservations and held locks.';
revoke all on function reserve.units_with_counter_drift() from public;
grant execute on function reserve.units_with_counter_drift() to service_role;

-- live stays and held locks per night from today on, of the given units
create function reserve.nights_in_use_from_today(p_units uuid[])
returns table (unit_id uuid, date date, live_reservations integer, held_locks integer)
language sql
stable
security invoker
set search_path = ''
as $$
  select coalesce(b.unit_id, h.unit_id), coalesce(b.date, h.date), coalesce(b.n, 0)::integer, coalesce(h.n, 0)::integer
  from (
    select r.unit_id, d::date as date, count(*) as n
    from reserve.reservations r
    cross join generate_series(greatest(r.check_in, current_date), r.check_out - 1, interval '1 day') d
    where r.status in ('host_commit_pending', 'confirmed', 'checked_in') and r.check_out > current_date
      and r.unit_id = any (p_units)
    group by 1, 2
  ) b
  full join (
    select l.unit_id, l.lock_date as date, count(*) as n
    from reserve.booking_locks l where l.status = 'held' and l.lock_date >= current_date and l.unit_id = any (p_units)
    group by 1, 2
  ) h on h.unit_id = b.unit_id and h.date = b.date
$$;
comment on function reserve.nights_in_use_from_today(uuid[]) is
  'Per night from today on, of the given units: live reservations and held locks, counted from the rows.';
revoke all on function reserve.nights_in_use_from_today(uuid[]) from public;
grant execute on function reserve.nights_in_use_from_today(uuid[]) to service_role;

create or replace view reserve.overbooking_check with (security_invoker = true) as
with suspect as materialized (select array_agg(d.unit_id) as units from reserve.units_with_counter_drift() d),
actual as materialized (select n.* from suspect, reserve.nights_in_use_from_today(suspect.units) n)
-- by the rows: only a unit whose counters disagree with its rows can hide an overbooking
select c.unit_id, u.name as unit_name, u.property_id, p.city_code, c.date, c.allotment, c.bookings_count, c.temp_holds,
       a.live_reservations, a.held_locks,
       greatest(c.bookings_count + c.temp_holds, a.live_reservations + a.held_locks) - c.allotment as oversold_by
from actual a
join reserve.availability_calendar c on c.unit_id = a.unit_id and c.date = a.date
join reserve.unit_map u on u.id = c.unit_id
join reserve.properties_map p on p.id = u.property_id
where c.allotment < a.live_reservations + a.held_locks or c.allotment < c.bookings_count + c.temp_holds
union all
-- by the counters: possible only if availability_calendar_capacity_check was dropped
select c.unit_id, u.name, u.property_id, p.city_code, c.date, c.allotment, c.bookings_count, c.temp_holds,
       c.bookings_count, c.temp_holds, c.bookings_count + c.temp_holds - c.allotment
from reserve.availability_calendar c
join reserve.unit_map u on u.id = c.unit_id
join reserve.properties_map p on p.id = u.property_id
where not exists (select 1 from pg_catalog.pg_constraint k
                  where k.conname = 'availability_calendar_capacity_check' and k.conrelid = 'reserve.availability_calendar'::regclass
                    and k.convalidated)
  and c.date >= current_date and c.allotment < c.bookings_count + c.temp_holds
  and not exists (select 1 from actual a where a.unit_id = c.unit_id and a.date = c.date)
order by 1, 5;
comment on view reserve.overbooking_check is
  'Nights from today on sold or held beyond their allotment (runbook P1 Overbooking), counted from the '
  'live reservations and held locks of every unit whose counters disagree with its rows (a bypassed '
  'guard always leaves that), and from the counters if the capacity check was dropped. Empty unless a '
  'guard was bypassed.';

create or replace view reserve.availability_counter_drift with (security_invoker = true) as
with suspect as materialized (select array_agg(d.unit_id) as units from reserve.units_with_counter_drift() d),
actual as materialized (select n.* from suspect, reserve.nights_in_use_from_today(suspect.units) n)
select c.unit_id, c.date, c.bookings_count, coalesce(a.live_reservations, 0) as actual_bookings,
       c.temp_holds, coalesce(a.held_locks, 0) as actual_holds
from suspect
join reserve.availability_calendar c on c.unit_id = any (suspect.units)
left join actual a on a.unit_id = c.unit_id and a.date = c.date
where c.date >= current_date
  and (c.bookings_count <> coalesce(a.live_reservations, 0) or c.temp_holds <> coalesce(a.held_locks, 0));
comment on view reserve.availability_counter_drift is
  'Calendar nights from today on whose bookings_count or temp_holds differ from live reservations and held locks.';

create or replace view reserve.ledger_balance_check with (security_invoker = true) as
select d.day, x.currency, x.transactions, x.entries, x.total_debits, x.total_credits, x.difference,
       x.imbalanced_transactions, x.status
from generate_series(
       (select (max(t.posted_at) at time zone 'UTC')::date from reserve.ledger_transactions t),
       (select (min(t.posted_at) at time zone 'UTC')::date from reserve.ledger_transactions t),
       interval '-1 day') as d0(day0)
cross join lateral (select d0.day0::date as day) d
cross join lateral (
  with per_tx as (
    -- each transaction's legs through its index: a join would read every leg of the year for each day
    select t.id, e.currency, e.debits, e.credits, e.entries
    from reserve.ledger_transactions t
    cross join lateral (
      select l.currency,
             coalesce(sum(l.amount) filter (where l.direction = 'debit'), 0) as debits,
             coalesce(sum(l.amount) filter (where l.direction = 'credit'), 0) as credits,
             count(*) as entries
      from reserve.ledger_entries l where l.transaction_id = t.id
      group by l.currency
    ) e
    where t.posted_at >= d.day::timestamp at time zone 'UTC' and t.posted_at < (d.day + 1)::timestamp at time zone 'UTC'
  )
  select per_tx.currency,
         count(*) as transactions,
         sum(per_tx.entries)::bigint as entries,
         sum(per_tx.debits)::bigint as total_debits,
         sum(per_tx.credits)::bigint as total_credits,
         (sum(per_tx.debits) - sum(per_tx.credits))::bigint as difference,
         count(*) filter (where per_tx.debits <> per_tx.credits) as imbalanced_transactions,
         case when count(*) filter (where per_tx.debits <> per_tx.credits) = 0 then 'OK' else 'IMBALANCED' end as status
  from per_tx
  group by per_tx.currency
  order by per_tx.currency
) x;
comment on view reserve.ledger_balance_check is
  'Per posting day (UTC, newest first) and currency: transactions, legs, debits, credits, the difference '
  'and how many transactions do not balance; status OK or IMBALANCED. A day is computed when read, so '
  'LIMIT n reads n days.';

create or replace function reserve.find_ledger_imbalances(p_since date default current_date - 7)
returns table (transaction_id uuid, kind text, posted_at timestamptz, currency text,
               debits bigint, credits bigint, imbalance bigint, entry_count bigint)
language sql
stable
security definer
set search_path = ''
as $$
  with recent as materialized (
    -- the window's legs, summed once per transaction and currency
    select e.transaction_id, e.currency,
           coalesce(sum(e.amount) filter (where e.direction = 'debit'), 0) as debits,
           coalesce(sum(e.amount) filter (where e.direction = 'credit'), 0) as credits
    from reserve.ledger_entries e where e.created_at >= p_since
    group by 1, 2
  ), candidates as (
    -- nearly always empty: a transaction out of balance in the window, or one given a leg in the window
    -- on top of legs written before it; either is summed whole below
    select distinct r.transaction_id from recent r where r.debits <> r.credits
  ), whole as (
    select e.transaction_id, e.currency,
           coalesce(sum(e.amount) filter (where e.direction = 'debit'), 0)::bigint as debits,
           coalesce(sum(e.amount) filter (where e.direction = 'credit'), 0)::bigint as credits,
           count(*) as n
    from reserve.ledger_entries e join candidates c on c.transaction_id = e.transaction_id
    group by 1, 2
  )
  select t.id, t.kind, t.posted_at, w.currency, w.debits, w.credits, w.debits - w.credits, w.n
  from whole w join reserve.ledger_transactions t on t.id = w.transaction_id
  where w.debits <> w.credits
  order by 3, 1
$$;
