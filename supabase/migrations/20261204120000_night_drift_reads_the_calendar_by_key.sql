-- units_with_night_drift_since reads each written night's calendar row by its key. Joined plainly, the
-- planner cannot know how few nights the window holds and merge-joins the whole calendar (3.65M rows on
-- the year dataset: 1.6 s for an hour's nights); one index probe per night takes 200 ms.

CREATE OR REPLACE FUNCTION reserve.units_with_night_drift_since(p_since timestamp with time zone)
 RETURNS TABLE(unit_id uuid)
 LANGUAGE sql
 STABLE
 SET search_path TO ''
AS $function$
  with nights as (
    select c.unit_id, c.date from reserve.availability_calendar c
    where c.updated_at >= p_since and c.date >= current_date
    union
    select r.unit_id, d::date from reserve.reservations r
    cross join generate_series(greatest(r.check_in, current_date), r.check_out - 1, interval '1 day') d
    where r.updated_at >= p_since and r.check_out > current_date
    union
    select l.unit_id, l.lock_date from reserve.booking_locks l
    where l.created_at >= p_since and l.lock_date >= current_date
    union
    select l.unit_id, l.lock_date from reserve.booking_locks l
    where l.released_at >= p_since and l.lock_date >= current_date
  )
  select distinct n.unit_id
  from nights n
  left join lateral (
    select c.bookings_count, c.temp_holds from reserve.availability_calendar c
    where c.unit_id = n.unit_id and c.date = n.date
    limit 1
  ) c on true
  cross join lateral (
    select count(*) as n from reserve.reservations r
    where r.unit_id = n.unit_id and r.stay @> n.date and r.status in ('host_commit_pending', 'confirmed', 'checked_in')
  ) b
  cross join lateral (
    select count(*) as n from reserve.booking_locks l
    where l.unit_id = n.unit_id and l.lock_date = n.date and l.status = 'held'
  ) h
  where coalesce(c.bookings_count, 0) <> b.n or coalesce(c.temp_holds, 0) <> h.n
$function$;
