-- No overbooking: the calendar counters are moved by triggers on booking_locks (temp_holds) and
-- reservations (bookings_count), so every writer keeps them exact, the runbook's manual SQL included.
-- A conditional UPDATE refuses the night that is full (SQLSTATE RC106), a CHECK is the last word, and
-- an exclusion constraint keeps live reservations of a one-per-night unit from overlapping.

-- Live reservations occupy their nights; the runbook's Step 4 counts the same three statuses.
create function reserve.is_live_reservation(p_status text) returns boolean
language sql
immutable
set search_path = ''
as $$ select p_status in ('host_commit_pending', 'confirmed', 'checked_in') $$;
comment on function reserve.is_live_reservation(text) is
  'True for reservation statuses that occupy their nights: host_commit_pending, confirmed, checked_in.';
revoke all on function reserve.is_live_reservation(text) from public;

alter table reserve.availability_calendar
  add constraint availability_calendar_capacity_check check (bookings_count + temp_holds <= allotment);

create function reserve.derive_is_available() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.is_available := not new.is_blocked and new.bookings_count + new.temp_holds < new.allotment;
  return new;
end
$$;
comment on function reserve.derive_is_available() is
  'BEFORE trigger: is_available is a cache of "not blocked and below allotment", never set by hand.';
revoke all on function reserve.derive_is_available() from public;

create trigger _110_derive_is_available before insert or update on reserve.availability_calendar
  for each row execute function reserve.derive_is_available();

update reserve.availability_calendar
set is_available = not is_blocked and bookings_count + temp_holds < allotment
where is_available is distinct from (not is_blocked and bookings_count + temp_holds < allotment);

-- Counter moves are derived from booking_locks and reservations, which are audited themselves;
-- auditing them again per night would double the cost of every booking. Direct edits stay audited.
drop trigger _900_audit on reserve.availability_calendar;
create trigger _900_audit after insert or delete on reserve.availability_calendar
  for each row execute function reserve.audit_row_change('unit_id', 'date');
create trigger _900_audit_update after update on reserve.availability_calendar
  for each row when (pg_trigger_depth() = 0
    or old.allotment is distinct from new.allotment
    or old.is_blocked is distinct from new.is_blocked
    or old.price is distinct from new.price)
  execute function reserve.audit_row_change('unit_id', 'date');

create function reserve.raise_unavailable(p_unit_id uuid, p_from date, p_to date) returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  bad text;
begin
  select string_agg(format('%s (%s)', d::date,
           case when c.unit_id is null then 'not on the calendar'
                when c.is_blocked then 'blocked'
                else format('%s of %s sold or held', c.bookings_count + c.temp_holds, c.allotment) end),
         ', ' order by d)
    into bad
  from generate_series(p_from, p_to - 1, interval '1 day') d
  left join reserve.availability_calendar c on c.unit_id = p_unit_id and c.date = d::date
  where c.unit_id is null or c.is_blocked or c.bookings_count + c.temp_holds >= c.allotment;
  raise exception using
    errcode = 'RC106',
    message = format('unit %s is not available for %s..%s: %s', p_unit_id, p_from, p_to, coalesce(bad, 'sold meanwhile')),
    hint = 'pick other dates or another unit';
end
$$;
comment on function reserve.raise_unavailable(uuid, date, date) is
  'Raises RC106 naming the unit and each night of [p_from, p_to) that is missing, blocked or full.';
revoke all on function reserve.raise_unavailable(uuid, date, date) from public;

-- temp_holds counts booking_locks in status held (expired or not, until released_expired_holds runs).
create function reserve.count_held_night() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  was_held boolean := tg_op <> 'INSERT' and old.status = 'held';
  is_held boolean := tg_op <> 'DELETE' and new.status = 'held';
begin
  if was_held and is_held and old.unit_id = new.unit_id and old.lock_date = new.lock_date then
    return null;
  end if;
  if was_held then
    update reserve.availability_calendar
    set temp_holds = temp_holds - 1
    where unit_id = old.unit_id and date = old.lock_date;
  end if;
  if is_held then
    update reserve.availability_calendar
    set temp_holds = temp_holds + 1
    where unit_id = new.unit_id and date = new.lock_date
      and not is_blocked and bookings_count + temp_holds < allotment;
    if not found then
      perform reserve.raise_unavailable(new.unit_id, new.lock_date, new.lock_date + 1);
    end if;
  end if;
  return null;
end
$$;
comment on function reserve.count_held_night() is
  'AFTER trigger on booking_locks: moves availability_calendar.temp_holds; a new hold on a full or blocked night raises RC106.';
revoke all on function reserve.count_held_night() from public;

create trigger _300_count_held_night
  after insert or delete or update of status, unit_id, lock_date on reserve.booking_locks
  for each row execute function reserve.count_held_night();

-- bookings_count counts live reservations per night. A paid stay whose hold the host blocked later
-- is still honoured (only capacity is checked here); new holds refuse blocked nights.
create function reserve.count_booked_nights() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  was_live boolean := tg_op <> 'INSERT' and reserve.is_live_reservation(old.status);
  is_live boolean := tg_op <> 'DELETE' and reserve.is_live_reservation(new.status);
  n integer;
begin
  if was_live and is_live and old.unit_id = new.unit_id
     and old.check_in = new.check_in and old.check_out = new.check_out then
    return null;
  end if;
  if was_live then
    update reserve.availability_calendar
    set bookings_count = bookings_count - 1
    where unit_id = old.unit_id and date >= old.check_in and date < old.check_out;
  end if;
  if is_live and tg_op = 'INSERT' then
    -- a new reservation takes over its intent's holds on these nights (whoever inserts it: finalize
    -- or the runbook's manual INSERT), so they stop counting as temp_holds before they count as bookings
    update reserve.booking_locks
    set status = 'converted'
    where booking_intent_id = new.booking_intent_id and status = 'held'
      and unit_id = new.unit_id and lock_date >= new.check_in and lock_date < new.check_out;
  end if;
  if is_live then
    update reserve.availability_calendar
    set bookings_count = bookings_count + 1
    where unit_id = new.unit_id and date >= new.check_in and date < new.check_out
      and bookings_count + temp_holds < allotment;
    get diagnostics n = row_count;
    if n <> new.check_out - new.check_in then
      perform reserve.raise_unavailable(new.unit_id, new.check_in, new.check_out);
    end if;
  end if;
  return null;
end
$$;
comment on function reserve.count_booked_nights() is
  'AFTER trigger on reservations: moves availability_calendar.bookings_count for live reservations '
  '(a new one first converts its intent''s holds); a night that is full or missing raises RC106.';
revoke all on function reserve.count_booked_nights() from public;

create trigger _300_count_booked_nights
  after insert or delete or update of status, unit_id, check_in, check_out on reserve.reservations
  for each row execute function reserve.count_booked_nights();

-- The exclusion constraint's predicate may only read the row, so the row carries whether its unit
-- sells one stay per night over those dates (allotment 1, a whole flat) or several (hotel rooms).
alter table reserve.reservations add column sole_occupancy boolean not null default true;
comment on column reserve.reservations.sole_occupancy is
  'True when the unit sells at most one stay per night over these dates (allotment <= 1); such '
  'live reservations may not overlap (constraint reservations_no_overlap).';

create function reserve.fill_sole_occupancy() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  select coalesce(max(c.allotment) <= 1, true) into new.sole_occupancy
  from reserve.availability_calendar c
  where c.unit_id = new.unit_id and c.date >= new.check_in and c.date < new.check_out;
  return new;
end
$$;
comment on function reserve.fill_sole_occupancy() is
  'BEFORE trigger on reservations: sets sole_occupancy from the calendar allotment of the stay''s nights.';
revoke all on function reserve.fill_sole_occupancy() from public;

create trigger _160_fill_sole_occupancy before insert or update of unit_id, check_in, check_out on reserve.reservations
  for each row execute function reserve.fill_sole_occupancy();

alter table reserve.reservations add constraint reservations_no_overlap
  exclude using gist (unit_id with =, stay with &&)
  where (sole_occupancy and status in ('host_commit_pending', 'confirmed', 'checked_in'));

-- Oversold by the counters (only if the CHECK was dropped) or by the facts: live reservations and
-- held locks counted afresh, which is how an overbooking written with the triggers bypassed
-- (session_replication_role = replica, a disabled trigger) shows up.
create view reserve.overbooking_check with (security_invoker = true) as
with actual as (
  select unit_id, date, sum(booked)::integer as live_reservations, sum(held)::integer as held_locks
  from (
    select r.unit_id, d::date as date, 1 as booked, 0 as held
    from reserve.reservations r
    cross join generate_series(r.check_in, r.check_out - 1, interval '1 day') d
    where r.status in ('host_commit_pending', 'confirmed', 'checked_in')
    union all
    select l.unit_id, l.lock_date, 0, 1 from reserve.booking_locks l where l.status = 'held'
  ) nights
  group by unit_id, date
)
select c.unit_id,
       u.name as unit_name,
       u.property_id,
       p.city_code,
       c.date,
       c.allotment,
       c.bookings_count,
       c.temp_holds,
       coalesce(a.live_reservations, 0) as live_reservations,
       coalesce(a.held_locks, 0) as held_locks,
       greatest(c.bookings_count + c.temp_holds,
                coalesce(a.live_reservations, 0) + coalesce(a.held_locks, 0)) - c.allotment as oversold_by
from reserve.availability_calendar c
join reserve.unit_map u on u.id = c.unit_id
join reserve.properties_map p on p.id = u.property_id
left join actual a on a.unit_id = c.unit_id and a.date = c.date
where c.allotment < c.bookings_count + c.temp_holds
   or c.allotment < coalesce(a.live_reservations, 0) + coalesce(a.held_locks, 0);
comment on view reserve.overbooking_check is
  'Nights sold or held beyond their allotment (runbook P1 Overbooking), by the counters or by the live '
  'reservations and held locks themselves. Empty unless a guard was bypassed.';

-- The counters against their sources: any row here means a trigger was bypassed (disabled, or
-- session_replication_role = replica) and the runbook's Step 4 rebuild is due.
create view reserve.availability_counter_drift with (security_invoker = true) as
with held as (
  select unit_id, lock_date as date, count(*)::integer as n
  from reserve.booking_locks where status = 'held' group by 1, 2
), booked as (
  select r.unit_id, d::date as date, count(*)::integer as n
  from reserve.reservations r
  cross join generate_series(r.check_in, r.check_out - 1, interval '1 day') d
  where reserve.is_live_reservation(r.status)
  group by 1, 2
)
select c.unit_id, c.date,
       c.bookings_count, coalesce(b.n, 0) as actual_bookings,
       c.temp_holds, coalesce(h.n, 0) as actual_holds
from reserve.availability_calendar c
left join held h on h.unit_id = c.unit_id and h.date = c.date
left join booked b on b.unit_id = c.unit_id and b.date = c.date
where c.bookings_count <> coalesce(b.n, 0) or c.temp_holds <> coalesce(h.n, 0);
comment on view reserve.availability_counter_drift is
  'Calendar nights whose bookings_count or temp_holds differ from live reservations and held locks.';

revoke all on reserve.overbooking_check, reserve.availability_counter_drift from public, anon, authenticated;
grant select on reserve.overbooking_check, reserve.availability_counter_drift to service_role;
