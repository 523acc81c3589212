-- recount_nights locked the nights and counted them in one statement. When it waited for a night's lock
-- (a release, a cancellation, a checkout in flight), it counted from its statement's snapshot, taken
-- before that transaction committed, and where those counts differed from the calendar it had read (the
-- drift it was run to repair) it wrote them over the committed ones: the other transaction's change was
-- lost and the repair left the night drifting (rebuild_unit_availability, the overbooking runbook's
-- Step 4, is run exactly when counters drift). The locks are now taken in a statement of their own, and
-- the count reads a snapshot taken after them.

CREATE OR REPLACE FUNCTION reserve.recount_nights(p_unit_id uuid, p_from date, p_to date DEFAULT NULL::date)
 RETURNS TABLE(nights_checked integer, nights_changed integer, nights_oversold integer)
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
begin
  -- the nights' locks in a statement of their own: the count below then reads a snapshot taken after
  -- every transaction it waited for had committed. In one statement it counted from the snapshot the
  -- statement began with, before them, and wrote those counts over the ones they had just committed.
  perform 1 from reserve.availability_calendar c
  where c.unit_id = p_unit_id and c.date >= p_from and (p_to is null or c.date < p_to)
  order by c.date
  for no key update;
  with actual as (
    select c.unit_id, c.date, c.allotment,
           (select count(*) from reserve.reservations r
            where r.unit_id = c.unit_id and reserve.is_live_reservation(r.status)
              and r.check_in <= c.date and r.check_out > c.date)::integer as booked,
           (select count(*) from reserve.booking_locks l
            where l.unit_id = c.unit_id and l.lock_date = c.date and l.status = 'held')::integer as held
    from reserve.availability_calendar c
    where c.unit_id = p_unit_id and c.date >= p_from and (p_to is null or c.date < p_to)
  ), fixed as (
    update reserve.availability_calendar c
    -- sold stays first: a hold that lapses must not make an oversold night look free
    set bookings_count = least(a.booked, a.allotment),
        temp_holds = least(a.held, a.allotment - least(a.booked, a.allotment))
    from actual a
    where c.unit_id = a.unit_id and c.date = a.date
      and (c.bookings_count, c.temp_holds) is distinct from
          (least(a.booked, a.allotment), least(a.held, a.allotment - least(a.booked, a.allotment)))
    returning c.date
  )
  select (select count(*) from actual)::integer, (select count(*) from fixed)::integer,
         (select count(*) from actual a where a.booked + a.held > a.allotment)::integer
    into nights_checked, nights_changed, nights_oversold;
  return next;
end
$function$
;

comment on function reserve.recount_nights(p_unit_id uuid, p_from date, p_to date) is 'Recounts bookings_count and temp_holds of a unit''s nights [p_from, p_to) from live reservations and held locks, under the nights'' locks; an oversold night is counted full and reported in nights_oversold.';
