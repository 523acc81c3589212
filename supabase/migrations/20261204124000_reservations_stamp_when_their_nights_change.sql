-- reservations.nights_changed_at: when the nights a stay takes last changed (created, moved, resized, made
-- live or given up). The checks compare the nights of each stay written since their watermark, and a
-- write that changes nothing they count (a check-in, a confirmation, a note) made them compare its nights
-- all the same: on the year dataset a day's 2,210 check-ins land in one minute and are 94% of the nights
-- the checks compare for six minutes after. The stamp is kept by a trigger of its own, so a stay moved
-- with the counting trigger off is still stamped (as updated_at is); it cannot be set back by hand.
--
-- Existing rows take -infinity without a rewrite: their nights changed before the checks' watermark,
-- whose audit saw them, except those written since it, stamped here with their updated_at.

alter table reserve.reservations add column nights_changed_at timestamp with time zone not null default '-infinity';
alter table reserve.reservations alter column nights_changed_at set default now();
comment on column reserve.reservations.nights_changed_at is
  'When the nights this stay takes last changed: inserted, unit or dates changed, made live or cancelled (trigger _110_stamp_nights_changed); -infinity for stays last changed before the column existed and already verified. The checks compare the nights of stays stamped since their watermark.';

update reserve.reservations r set nights_changed_at = r.updated_at
where r.updated_at >= (select a.verified_through from reserve.last_integrity_audit() a);

create index reservations_nights_changed_at_idx on reserve.reservations (nights_changed_at);

CREATE FUNCTION reserve.stamp_nights_changed()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO ''
AS $function$
begin
  new.nights_changed_at := now();
  return new;
end
$function$;
comment on function reserve.stamp_nights_changed() is 'BEFORE UPDATE trigger of reservations: stamps nights_changed_at when the nights the stay takes change (or someone sets the stamp by hand).';
revoke all on function reserve.stamp_nights_changed() from public;

create trigger _110_stamp_nights_changed
before update of status, unit_id, check_in, check_out, nights_changed_at on reserve.reservations
for each row
when (old.unit_id is distinct from new.unit_id
      or old.check_in is distinct from new.check_in
      or old.check_out is distinct from new.check_out
      or (old.status in ('host_commit_pending', 'confirmed', 'checked_in'))
         is distinct from (new.status in ('host_commit_pending', 'confirmed', 'checked_in'))
      or old.nights_changed_at is distinct from new.nights_changed_at)
execute function reserve.stamp_nights_changed();

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
    where r.nights_changed_at >= p_since and r.check_out > current_date
    union all
    select r.unit_id, r.check_out - 1 from reserve.reservations r
    where r.nights_changed_at >= p_since and r.check_out > current_date
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

comment on function reserve.units_with_night_drift_since(timestamp with time zone) is 'Units with a night from today on written since p_since (its calendar row, a stay whose nights changed, a lock on it) whose nights, from the first to the last written, have counters that differ from the live reservations and held locks covering them.';
