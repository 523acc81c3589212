-- units_with_night_drift_since compares, for each unit written since p_since, its nights from the first to
-- the last written in one pass, and plans with the value of p_since. Night by night it was three index
-- probes a night (10,447 nights in the year dataset's last hour, 7,298 in its last six minutes: a day's
-- check-ins are written at once), 138 ms as a statement and 260 to 290 ms inside the SQL function, whose
-- plan did not know how recent p_since is. Now the calendar rows, the live stays (one probe a unit) and the
-- held locks of each unit's span are signed and summed per night: 80 ms for those six minutes. A span
-- also holds nights between the written ones; comparing those too finds more, never less.

CREATE OR REPLACE FUNCTION reserve.units_with_night_drift_since(p_since timestamp with time zone)
 RETURNS TABLE(unit_id uuid)
 LANGUAGE plpgsql
 STABLE
 SET search_path TO ''
AS $function$
begin
  return query
  with written as (
    select c.unit_id, c.date from reserve.availability_calendar c
    where c.updated_at >= p_since and c.date >= current_date
    union all
    select r.unit_id, greatest(r.check_in, current_date) from reserve.reservations r
    where r.updated_at >= p_since and r.check_out > current_date
    union all
    select r.unit_id, r.check_out - 1 from reserve.reservations r
    where r.updated_at >= p_since and r.check_out > current_date
    union all
    select l.unit_id, l.lock_date from reserve.booking_locks l
    where l.created_at >= p_since and l.lock_date >= current_date
    union all
    select l.unit_id, l.lock_date from reserve.booking_locks l
    where l.released_at >= p_since and l.lock_date >= current_date
  ), spans as materialized (
    select w.unit_id, min(w.date) as lo, max(w.date) as hi from written w group by w.unit_id
  ), signed as (
    -- a night adds up when its counters minus the stays and holds covering it are zero
    select c.unit_id, c.date, c.bookings_count as booked, c.temp_holds as held
    from spans s join reserve.availability_calendar c on c.unit_id = s.unit_id and c.date between s.lo and s.hi
    union all
    select r.unit_id, d::date, -1, 0
    from spans s
    join reserve.reservations r on r.unit_id = s.unit_id and r.stay && daterange(s.lo, s.hi, '[]')
      and r.status in ('host_commit_pending', 'confirmed', 'checked_in')
    cross join generate_series(greatest(r.check_in, s.lo), least(r.check_out - 1, s.hi), interval '1 day') d
    union all
    select l.unit_id, l.lock_date, 0, -1
    from spans s join reserve.booking_locks l on l.unit_id = s.unit_id and l.lock_date between s.lo and s.hi and l.status = 'held'
  )
  select distinct x.unit_id from signed x group by x.unit_id, x.date having sum(x.booked) <> 0 or sum(x.held) <> 0;
end
$function$;

comment on function reserve.units_with_night_drift_since(timestamp with time zone) is 'Units with a night from today on written since p_since (its calendar row, a reservation covering it or a lock on it) whose nights, from the first to the last written, have counters that differ from the live reservations and held locks covering them.';
