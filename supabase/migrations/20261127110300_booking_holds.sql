-- A guest's checkout: create_booking_intent validates and prices the stay and holds every night
-- (acquire_booking_lock), all or nothing; release_expired_holds gives back what was not paid in time.
-- Calendar rows are locked in date order, so concurrent checkouts queue instead of deadlocking.
-- Row locks everywhere are FOR NO KEY UPDATE: no key column ever changes, and FOR UPDATE would also
-- block the key-share lock that inserting a referencing row takes (a processed_webhooks row naming a
-- payment, a lock naming a night), which deadlocks callers that insert first and then apply.

create function reserve.lock_booking_intent(p_booking_intent_id uuid) returns reserve.booking_intents
language plpgsql
security definer
set search_path = ''
as $$
declare
  bi reserve.booking_intents;
begin
  select * into bi from reserve.booking_intents where id = p_booking_intent_id for no key update;
  if not found then
    raise exception using errcode = 'RC107', message = format('booking intent %s does not exist', p_booking_intent_id);
  end if;
  return bi;
end
$$;
comment on function reserve.lock_booking_intent(uuid) is 'Locks a booking intent row; RC107 if there is none.';
revoke all on function reserve.lock_booking_intent(uuid) from public;

create function reserve.acquire_booking_lock(p_booking_intent_id uuid, p_expires_at timestamptz default null)
returns setof reserve.booking_locks
language plpgsql
security definer
set search_path = ''
as $$
declare
  bi reserve.booking_intents;
  locked integer;
begin
  if p_booking_intent_id is null then
    raise exception using errcode = 'RC001', message = 'p_booking_intent_id is required';
  end if;
  if p_expires_at is not null and (p_expires_at <= now() or p_expires_at > now() + interval '1 day') then
    raise exception using errcode = 'RC001',
      message = format('a hold of booking intent %s must expire within a day from now, not at %s', p_booking_intent_id, p_expires_at);
  end if;
  bi := reserve.lock_booking_intent(p_booking_intent_id);
  if bi.status = 'cancelled' or bi.status = 'converted' then
    raise exception using errcode = 'RC108',
      message = format('booking intent %s is %s; its nights cannot be held', bi.id, bi.status);
  end if;

  -- the fixed order (unit, then date) is what keeps concurrent checkouts from deadlocking
  perform 1 from reserve.availability_calendar
  where unit_id = bi.unit_id and date >= bi.check_in and date < bi.check_out
  order by date
  for no key update;
  get diagnostics locked = row_count;
  if locked <> bi.nights then
    perform reserve.raise_unavailable(bi.unit_id, bi.check_in, bi.check_out);
  end if;

  update reserve.booking_locks
  set expires_at = greatest(expires_at, coalesce(p_expires_at, bi.expires_at))
  where booking_intent_id = bi.id and status = 'held';

  -- each insert raises RC106 through the counting trigger if its night is full or blocked
  insert into reserve.booking_locks (booking_intent_id, unit_id, lock_date, expires_at)
  select bi.id, bi.unit_id, d::date, coalesce(p_expires_at, bi.expires_at)
  from generate_series(bi.check_in, bi.check_out - 1, interval '1 day') d
  where not exists (
    select 1 from reserve.booking_locks l
    where l.booking_intent_id = bi.id and l.lock_date = d::date and l.status in ('held', 'converted'))
  order by d;

  return query
    select * from reserve.booking_locks
    where booking_intent_id = bi.id and status in ('held', 'converted')
    order by lock_date;
end
$$;
comment on function reserve.acquire_booking_lock(uuid, timestamptz) is
  'Holds every night of a booking intent (one booking_locks row per night, temp_holds + 1), all or '
  'nothing: RC106 names the nights that are full, blocked or missing. Idempotent: nights already '
  'held are kept and their expiry extended to p_expires_at (default: the intent''s expires_at).';
revoke all on function reserve.acquire_booking_lock(uuid, timestamptz) from public;
grant execute on function reserve.acquire_booking_lock(uuid, timestamptz) to service_role;

create function reserve.create_booking_intent(
  p_unit_id      uuid,
  p_check_in     date,
  p_check_out    date,
  p_guests       integer,
  p_method       text default 'card',
  p_client_id    text default null,
  p_guest_name   text default null,
  p_guest_email  text default null,
  p_metadata     jsonb default '{}'::jsonb,
  p_hold_minutes integer default null)
returns reserve.booking_intents
language plpgsql
security definer
set search_path = ''
as $$
declare
  u record;
  today date;
  nights integer;
  sellable integer;
  total bigint;
  currencies text[];
  hold integer;
  bi reserve.booking_intents;
begin
  if p_unit_id is null or p_check_in is null or p_check_out is null or p_guests is null then
    raise exception using errcode = 'RC001', message = 'p_unit_id, p_check_in, p_check_out and p_guests are required';
  end if;
  if p_method is null or p_method not in ('card', 'pix') then
    raise exception using errcode = 'RC001', message = format('method %s is not card or pix', coalesce(p_method, 'null'));
  end if;
  if p_guests < 1 then
    raise exception using errcode = 'RC001', message = format('guests must be at least 1, got %s', p_guests);
  end if;
  if p_hold_minutes is not null and p_hold_minutes not between 1 and 1440 then
    raise exception using errcode = 'RC001', message = format('hold minutes must be 1..1440, got %s', p_hold_minutes);
  end if;
  if p_metadata is null or jsonb_typeof(p_metadata) <> 'object' then
    raise exception using errcode = 'RC001', message = 'p_metadata must be a JSON object';
  end if;
  if p_guest_email is not null and p_guest_email !~ '^[^@\s]+@[^@\s]+$' then
    raise exception using errcode = 'RC001', message = format('guest email %s is not an email address', p_guest_email);
  end if;

  select un.id, un.is_active and pr.is_active as on_sale, un.max_occupancy, un.min_nights, un.max_nights,
         un.base_price, un.currency, ci.timezone
    into u
  from reserve.unit_map un
  join reserve.properties_map pr on pr.id = un.property_id
  join reserve.cities ci on ci.code = pr.city_code
  where un.id = p_unit_id;
  if not found then
    raise exception using errcode = 'RC101', message = format('unit %s does not exist', p_unit_id);
  end if;
  if not u.on_sale then
    raise exception using errcode = 'RC102', message = format('unit %s (or its property) is not active', p_unit_id);
  end if;

  -- "in the future" is the city's today: 23:30 in Salvador is already tomorrow in UTC
  today := (now() at time zone u.timezone)::date;
  if p_check_in < today then
    raise exception using errcode = 'RC103',
      message = format('check-in %s is before today (%s in %s) for unit %s', p_check_in, today, u.timezone, p_unit_id);
  end if;
  if p_check_out <= p_check_in then
    raise exception using errcode = 'RC103',
      message = format('check-out %s must be after check-in %s for unit %s', p_check_out, p_check_in, p_unit_id);
  end if;
  nights := p_check_out - p_check_in;
  if nights not between u.min_nights and u.max_nights then
    raise exception using errcode = 'RC104',
      message = format('unit %s takes stays of %s..%s nights, not %s', p_unit_id, u.min_nights, u.max_nights, nights);
  end if;
  if p_guests > u.max_occupancy then
    raise exception using errcode = 'RC105',
      message = format('unit %s sleeps at most %s guests, not %s', p_unit_id, u.max_occupancy, p_guests);
  end if;

  -- priced and pre-checked without locks, so a sold-out stay fails fast; the nights are locked only
  -- in acquire_booking_lock, as late as possible, because on a busy unit every checkout queues on them
  -- until commit (measured: the lock hold time is the hot unit's ceiling)
  select count(*), sum(coalesce(c.price, u.base_price)), array_agg(distinct c.currency)
    into sellable, total, currencies
  from reserve.availability_calendar c
  where c.unit_id = p_unit_id and c.date >= p_check_in and c.date < p_check_out
    and not c.is_blocked and c.bookings_count + c.temp_holds < c.allotment;
  if sellable <> nights then
    perform reserve.raise_unavailable(p_unit_id, p_check_in, p_check_out);
  end if;
  if array_length(currencies, 1) <> 1 or currencies[1] <> u.currency then
    raise exception using errcode = 'RC001',
      message = format('unit %s prices %s..%s in %s, expected only %s', p_unit_id, p_check_in, p_check_out, currencies, u.currency);
  end if;

  hold := coalesce(p_hold_minutes, reserve.setting_int('hold_minutes_' || p_method));
  insert into reserve.booking_intents (unit_id, check_in, check_out, guests, amount, currency, expires_at,
                                       client_id, guest_name, guest_email, metadata)
  values (p_unit_id, p_check_in, p_check_out, p_guests, total, u.currency, now() + make_interval(mins => hold),
          p_client_id, p_guest_name, p_guest_email, p_metadata || jsonb_build_object('method', p_method))
  returning * into bi;

  perform reserve.acquire_booking_lock(bi.id);
  return bi;
end
$$;
comment on function reserve.create_booking_intent(uuid, date, date, integer, text, text, text, text, jsonb, integer) is
  'Starts a checkout: validates the unit, dates (city time zone), stay length and guests, prices the '
  'stay from the calendar (price, else base_price) and holds every night for hold_minutes_card or '
  'hold_minutes_pix (settings) or p_hold_minutes. Errors: RC001, RC101-RC106.';
revoke all on function reserve.create_booking_intent(uuid, date, date, integer, text, text, text, text, jsonb, integer) from public;
grant execute on function reserve.create_booking_intent(uuid, date, date, integer, text, text, text, text, jsonb, integer) to service_role;

create function reserve.release_booking_intent(p_booking_intent_id uuid, p_reason text default 'released')
returns reserve.booking_intents
language plpgsql
security definer
set search_path = ''
as $$
declare
  bi reserve.booking_intents;
  active uuid;
begin
  bi := reserve.lock_booking_intent(p_booking_intent_id);
  if bi.status = 'converted' then
    raise exception using errcode = 'RC108',
      message = format('booking intent %s is converted; cancel its reservation instead', bi.id);
  end if;
  select id into active from reserve.payments
  where booking_intent_id = bi.id and status in ('pending', 'processing');
  if found then
    raise exception using errcode = 'RC204',
      message = format('booking intent %s has payment %s in flight; cancel it first', bi.id, active);
  end if;

  perform 1 from reserve.availability_calendar
  where unit_id = bi.unit_id and date >= bi.check_in and date < bi.check_out
  order by date for no key update;
  update reserve.booking_locks set status = 'released', released_at = now()
  where booking_intent_id = bi.id and status = 'held';

  if bi.status = 'pending' then
    update reserve.booking_intents
    set status = 'cancelled', cancelled_at = now(),
        metadata = metadata || jsonb_build_object('cancel_reason', coalesce(p_reason, 'released'))
    where id = bi.id
    returning * into bi;
  end if;
  return bi;
end
$$;
comment on function reserve.release_booking_intent(uuid, text) is
  'Abandons a checkout: releases its held nights and cancels a pending intent. Idempotent. Refuses '
  'while a payment is pending or processing (RC204) and for converted intents (RC108).';
revoke all on function reserve.release_booking_intent(uuid, text) from public;
grant execute on function reserve.release_booking_intent(uuid, text) to service_role;

create function reserve.release_expired_holds(p_limit integer default 10000)
returns table (released_locks integer, expired_intents integer)
language plpgsql
security definer
set search_path = ''
as $$
begin
  -- nights first, like every other path (checkout, finalize, release): a lapsed hold is expired only
  -- under its calendar night's lock, and nights a checkout or finalize holds right now are skipped
  -- (SKIP LOCKED), so the sweep never waits and never deadlocks
  with due as (
    select distinct unit_id, lock_date from (
      select unit_id, lock_date from reserve.booking_locks
      where status = 'held' and expires_at <= now()
      order by unit_id, lock_date
      limit greatest(p_limit, 1)) d
  ), nights as (
    select c.unit_id, c.date from reserve.availability_calendar c
    where (c.unit_id, c.date) in (select unit_id, lock_date from due)
    order by c.unit_id, c.date
    for no key update skip locked
  )
  update reserve.booking_locks l set status = 'expired', released_at = now()
  from nights n
  where l.unit_id = n.unit_id and l.lock_date = n.date and l.status = 'held' and l.expires_at <= now();
  get diagnostics released_locks = row_count;

  with due as (
    select bi.id from reserve.booking_intents bi
    where bi.status = 'pending' and bi.expires_at <= now()
      and not exists (select 1 from reserve.booking_locks l where l.booking_intent_id = bi.id and l.status = 'held')
    for no key update of bi skip locked)
  update reserve.booking_intents bi set status = 'expired'
  from due where bi.id = due.id;
  get diagnostics expired_intents = row_count;
  return next;
end
$$;
comment on function reserve.release_expired_holds(integer) is
  'Expires held nights past their expires_at (at most p_limit per call) and pending intents left with '
  'no held night. Idempotent and safe to run every minute, concurrently with checkouts.';
revoke all on function reserve.release_expired_holds(integer) from public;
grant execute on function reserve.release_expired_holds(integer) to service_role;

create view reserve.active_booking_locks with (security_invoker = true) as
select l.id,
       l.booking_intent_id,
       l.unit_id,
       bi.property_id,
       bi.city_code,
       l.lock_date,
       l.status,
       l.expires_at,
       l.expires_at <= now() as is_expired,
       greatest(l.expires_at - now(), interval '0') as expires_in,
       bi.status as intent_status,
       l.created_at
from reserve.booking_locks l
join reserve.booking_intents bi on bi.id = l.booking_intent_id
where l.status = 'held';
comment on view reserve.active_booking_locks is
  'Nights held by unpaid checkouts (counted in temp_holds). is_expired rows await release_expired_holds.';
revoke all on reserve.active_booking_locks from public, anon, authenticated;
grant select on reserve.active_booking_locks to service_role;
