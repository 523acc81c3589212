-- What a guest may read of their own bookings: one row per booking intent their token's sub (the
-- client_id checkout records) created, in the words a guest understands, with the next step while a
-- payment is pending. The tables stay private (RLS, nothing granted to anon or authenticated); the
-- bookings edge function verifies the token and calls these as service_role with the token's sub.

-- ===== types =====

create type reserve.guest_booking as (
  booking_intent_id      uuid,
  state                  text,
  held_until             timestamptz,
  confirmation_code      text,
  reservation_status     text,
  check_in               date,
  check_out              date,
  nights                 integer,
  guests                 integer,
  unit_id                uuid,
  unit_name              text,
  city_code              text,
  city_name              text,
  amount                 bigint,
  currency               text,
  refunded_amount        bigint,
  refund_pending_amount  bigint,
  payment_id             uuid,
  payment_status         text,
  method                 text,
  provider               text,
  payment_expires_at     timestamptz,
  payment_error_code     text,
  pending_payment_object jsonb,
  created_at             timestamptz,
  updated_at             timestamptz
);
comment on type reserve.guest_booking is
  'A booking as its guest sees it. state: awaiting_payment (the nights held until held_until, the '
  'attempt payment_id waits for the guest to pay), payment_processing (paid or being paid, the '
  'reservation not yet made), payment_failed (the last attempt failed, payment_error_code says why; a '
  'new attempt may be started until held_until), held (nights held, no attempt), expired, cancelled, '
  'confirmed (a live reservation: confirmation_code; reservation_status host_commit_pending or '
  'confirmed), checked_in, checked_out, no_show, refund_pending (money owed back: '
  'refund_pending_amount), refunded (refunded_amount). Amounts in minor units of currency. '
  'pending_payment_object is the provider''s last object of the attempt while it is pending (where its '
  'PIX code is), null otherwise; it never holds a card client secret (never stored).';

create type reserve.guest_booking_cursor as (
  created_at timestamptz,
  id         uuid
);
comment on type reserve.guest_booking_cursor is
  'Where a page of guest_bookings ends: the (created_at, booking_intent_id) of its last row; the next '
  'page holds the bookings strictly older.';

-- ===== functions =====

-- the one place a booking intent becomes a guest_booking: both reads use it, so they never disagree
create or replace function reserve.guest_booking_of(bi reserve.booking_intents)
returns reserve.guest_booking
language sql
stable
set search_path = ''
as $$
  select bi.id,
         case
           when m.owed > 0 and (r.id is null or r.status = 'cancelled') then 'refund_pending'
           when r.status = 'cancelled' then case when m.refunded > 0 then 'refunded' else 'cancelled' end
           when r.status in ('host_commit_pending', 'confirmed') then 'confirmed'
           when r.status is not null then r.status
           when m.refunded > 0 then 'refunded'
           when bi.status = 'cancelled' then 'cancelled'
           when p.status in ('pending', 'processing', 'succeeded') and bi.status = 'pending'
             then case p.status when 'pending' then 'awaiting_payment' else 'payment_processing' end
           when bi.status = 'expired' or bi.expires_at <= pg_catalog.now() then 'expired'
           when p.status is not null then 'payment_failed'
           else 'held'
         end,
         case when bi.status = 'pending' and r.id is null and bi.expires_at > pg_catalog.now() then bi.expires_at end,
         r.confirmation_code, r.status,
         bi.check_in, bi.check_out, bi.nights, bi.guests,
         bi.unit_id, u.name, bi.city_code, c.name,
         bi.amount, bi.currency, m.refunded, m.owed,
         p.id, p.status, p.method, p.provider, p.expires_at,
         case when p.status in ('failed', 'cancelled', 'expired') then p.error_code end,
         case when p.status = 'pending' and bi.status = 'pending' then p.provider_payload end,
         bi.created_at, greatest(bi.updated_at, r.updated_at, p.updated_at)
  from reserve.unit_map u
  join reserve.cities c on c.code = bi.city_code
  -- the live reservation, else the last one cancelled
  left join lateral (
    select x.id, x.status, x.confirmation_code, x.payment_id, x.updated_at
    from reserve.reservations x where x.booking_intent_id = bi.id
    order by (x.status <> 'cancelled') desc, x.created_at desc limit 1
  ) r on true
  -- the payment the reservation was sold with, else the last attempt
  left join lateral (
    select x.id, x.status, x.method, x.provider, x.expires_at, x.error_code, x.provider_payload, x.updated_at
    from reserve.payments x where x.booking_intent_id = bi.id
    order by (x.id = r.payment_id) desc nulls last, x.attempt desc limit 1
  ) p on true
  -- money back over every attempt: refunded by the provider, and still owed (the ledger's refunds_payable)
  cross join lateral (
    select coalesce(sum(x.refunded_amount), 0)::bigint as refunded,
           coalesce(sum(reserve.payment_ledger_balance(x.id, array['refunds_payable'])), 0)::bigint as owed
    from reserve.payments x where x.booking_intent_id = bi.id
  ) m
  where u.id = bi.unit_id
$$;
revoke all on function reserve.guest_booking_of(reserve.booking_intents) from public;
comment on function reserve.guest_booking_of(reserve.booking_intents) is
  'The guest_booking of one booking intent (internal to guest_booking and guest_bookings).';

create or replace function reserve.guest_bookings(
  p_client_id text,
  p_limit     integer default 20,
  p_before    reserve.guest_booking_cursor default null
)
returns setof reserve.guest_booking
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  if p_client_id is null or length(p_client_id) = 0 then
    raise exception using errcode = 'RC001', message = 'guest_bookings needs the client id (the token''s sub)';
  end if;
  if p_limit is null or p_limit < 1 or p_limit > 50 then
    raise exception using errcode = 'RC001',
      message = format('limit must be between 1 and 50, not %s', coalesce(p_limit::text, 'null'));
  end if;
  -- a row with one null field is neither null nor not null
  if not (p_before is null) and (p_before.created_at is null or p_before.id is null) then
    raise exception using errcode = 'RC001', message = 'a cursor names both created_at and id';
  end if;
  return query
    select (reserve.guest_booking_of(bi)).*
    from reserve.booking_intents bi
    where bi.client_id = p_client_id
      and (p_before is null or (bi.created_at, bi.id) < (p_before.created_at, p_before.id))
    order by bi.created_at desc, bi.id desc
    limit p_limit;
end
$$;
revoke all on function reserve.guest_bookings(text, integer, reserve.guest_booking_cursor) from public;
grant execute on function reserve.guest_bookings(text, integer, reserve.guest_booking_cursor) to service_role;
comment on function reserve.guest_bookings(text, integer, reserve.guest_booking_cursor) is
  'The bookings client p_client_id (a token''s sub) made, newest first: at most p_limit (1..50) older than '
  'p_before (keyset on created_at, id). RC001 for a missing client, a limit out of range or half a cursor.';

create or replace function reserve.guest_booking(p_client_id text, p_booking_intent_id uuid)
returns reserve.guest_booking
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  bi reserve.booking_intents;
begin
  if p_client_id is null or length(p_client_id) = 0 then
    raise exception using errcode = 'RC001', message = 'guest_booking needs the client id (the token''s sub)';
  end if;
  select * into bi from reserve.booking_intents x where x.id = p_booking_intent_id and x.client_id = p_client_id;
  if not found then
    -- another client's booking reads as missing: the answer says nothing about whether the id exists
    raise exception using errcode = 'RC120',
      message = format('booking %s not found for this client', p_booking_intent_id);
  end if;
  return reserve.guest_booking_of(bi);
end
$$;
revoke all on function reserve.guest_booking(text, uuid) from public;
grant execute on function reserve.guest_booking(text, uuid) to service_role;
comment on function reserve.guest_booking(text, uuid) is
  'One booking of client p_client_id (a token''s sub) as its guest sees it; RC120 when the id is unknown or '
  'another client''s (the same answer).';
