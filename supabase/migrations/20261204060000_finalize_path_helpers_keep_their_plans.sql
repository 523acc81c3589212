-- The finalize path's small helpers keep their plans, and finalize_reservation retries a confirmation
-- code clash without a subtransaction. On PostgreSQL 17 a LANGUAGE sql function that carries SET
-- search_path is never inlined and is parsed and planned again on every call: ledger_transaction_host
-- (two joins) cost 0.42 ms of a 4.2 ms finalize; as PL/pgSQL its statements are prepared once per
-- session. current_actor (four calls a finalize), new_confirmation_code, bounded_webhook_key and
-- ledger_leg go the same way. The
-- confirmation-code retry was an EXCEPTION block, a subtransaction (and a subtransaction id) around every
-- reservation insert; ON CONFLICT on that one key retries the same clash and lets every other unique key
-- raise as before.

CREATE OR REPLACE FUNCTION reserve.ledger_transaction_host(p_payment_id uuid, p_reservation_id uuid)
 RETURNS uuid
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  host uuid;
begin
  if p_reservation_id is not null then
    select pm.host_id into host from reserve.reservations r join reserve.properties_map pm on pm.id = r.property_id
    where r.id = p_reservation_id;
    if host is not null then
      return host;
    end if;
  end if;
  select pm.host_id into host from reserve.payments p
    join reserve.booking_intents bi on bi.id = p.booking_intent_id
    join reserve.properties_map pm on pm.id = bi.property_id
  where p.id = p_payment_id;
  return host;
end
$function$;

CREATE OR REPLACE FUNCTION reserve.current_actor()
 RETURNS text
 LANGUAGE plpgsql
 STABLE
 SET search_path TO ''
AS $function$
begin
  return coalesce(
    nullif(current_setting('reserve.actor', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub',
    -- not current_user: inside the SECURITY DEFINER audit trigger that is the owner, not who acted
    nullif(current_setting('role'), 'none'),
    session_user::text);
end
$function$;

CREATE OR REPLACE FUNCTION reserve.new_confirmation_code()
 RETURNS text
 LANGUAGE plpgsql
 SET search_path TO ''
AS $function$
declare
  b bytea := extensions.gen_random_bytes(6);
  code text := '';
begin
  -- 32 letters and digits without 0, O, 1 and I, which guests misread; 256 % 32 = 0 keeps it uniform
  for i in 0..5 loop
    code := code || substr('ABCDEFGHJKLMNPQRSTUVWXYZ23456789', get_byte(b, i) % 32 + 1, 1);
  end loop;
  return 'RES-' || to_char(now() at time zone 'UTC', 'YYYY') || '-' || code;
end
$function$;

CREATE OR REPLACE FUNCTION reserve.bounded_webhook_key(p_key text, p_max integer DEFAULT 255)
 RETURNS text
 LANGUAGE plpgsql
 IMMUTABLE
 SET search_path TO ''
AS $function$
begin
  return case when length(p_key) <= p_max then p_key
              else left(p_key, p_max - 72) || '~sha256:' || encode(sha256(convert_to(p_key, 'UTF8')), 'hex') end;
end
$function$;

CREATE OR REPLACE FUNCTION reserve.ledger_leg(p_account text, p_direction text, p_amount bigint, p_entry_type text, p_currency text)
 RETURNS jsonb
 LANGUAGE plpgsql
 IMMUTABLE
 SET search_path TO ''
AS $function$
begin
  return jsonb_build_object('account', p_account, 'direction', p_direction, 'amount', p_amount,
                            'entry_type', p_entry_type, 'currency', p_currency);
end
$function$;

CREATE OR REPLACE FUNCTION reserve.finalize_reservation(p_payment_id uuid, p_webhook_id uuid DEFAULT NULL::uuid)
 RETURNS TABLE(success boolean, reservation_id uuid, confirmation_code text, error_message text, outcome text, payment_id uuid, booking_intent_id uuid)
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  p reserve.payments;
  bi reserve.booking_intents;
  r reserve.reservations;
  nights_locked integer;
  free_nights integer;
  held_nights integer := 0;
  moved integer;
  refuse text;
  why text;
begin
  if p_payment_id is null then
    raise exception using errcode = 'RC001', message = 'p_payment_id is required';
  end if;
  p := reserve.lock_payment(p_payment_id);
  payment_id := p.id;
  booking_intent_id := p.booking_intent_id;

  -- already finalized by this payment: the same answer every time
  select * into r from reserve.reservations x where x.payment_id = p.id
  order by reserve.is_live_reservation(x.status) desc, x.created_at desc limit 1;
  if found then
    success := reserve.is_live_reservation(r.status) or r.status = 'checked_out';
    reservation_id := r.id; confirmation_code := r.confirmation_code;
    outcome := case when success then 'already_finalized' else 'reservation_' || r.status end;
    if not success then
      error_message := format('payment %s already made reservation %s, which is now %s', p.id, r.confirmation_code, r.status);
    end if;
    return next;
    return;
  end if;
  if p.status <> 'succeeded' then
    raise exception using errcode = 'RC205',
      message = format('payment %s is %s, not succeeded; only a succeeded payment is finalized', p.id, p.status),
      hint = 'if the provider says it was paid, record that first: select * from reserve.apply_payment_status(id, ''succeeded'')';
  end if;
  if p.refund_reason is not null then
    -- refused before: say so again
    select * into r from reserve.reservations x
    where x.booking_intent_id = p.booking_intent_id and reserve.is_live_reservation(x.status);
    success := false; reservation_id := r.id; confirmation_code := r.confirmation_code; outcome := p.refund_reason;
    error_message := format('payment %s was not turned into a reservation (%s) and is flagged for refund', p.id, p.refund_reason);
    return next;
    return;
  end if;

  if coalesce(current_setting('reserve.reason', true), '') = '' then
    perform set_config('reserve.reason',
      format('finalize_reservation payment %s%s', p.id, coalesce(' webhook ' || p_webhook_id, '')), true);
  end if;

  bi := reserve.lock_booking_intent(p.booking_intent_id);

  select * into r from reserve.reservations x
  where x.booking_intent_id = bi.id and x.status <> 'cancelled';
  if found then
    -- the intent was already paid by another payment: record the duplicate, never a second stay
    update reserve.payments x set duplicate_of = r.payment_id, refund_reason = 'duplicate_charge'
    where x.id = p.id and r.payment_id is distinct from p.id;
    perform reserve.post_payment_receipt(p.id, false);
    success := false; reservation_id := r.id; confirmation_code := r.confirmation_code; outcome := 'duplicate_charge';
    error_message := format('payment %s is a duplicate charge: booking intent %s is already paid by payment %s (reservation %s); flagged for refund',
                            p.id, bi.id, r.payment_id, r.confirmation_code);
    return next;
    return;
  end if;

  if bi.status = 'cancelled' then
    refuse := 'intent_cancelled';
    why := format('booking intent %s was cancelled before payment %s succeeded', bi.id, p.id);
  elsif bi.status = 'converted' then
    refuse := 'intent_cancelled';
    why := format('booking intent %s was already used by a reservation that has since been cancelled', bi.id);
  elsif p.amount <> bi.amount or p.currency <> bi.currency then
    refuse := 'amount_mismatch';
    why := format('payment %s is %s %s but booking intent %s costs %s %s', p.id, p.amount, p.currency, bi.id, bi.amount, bi.currency);
  else
    perform 1 from reserve.availability_calendar c
    where c.unit_id = bi.unit_id and c.date >= bi.check_in and c.date < bi.check_out
    order by c.date for no key update;
    get diagnostics nights_locked = row_count;
    -- a night is still ours if we hold it, or free again if the hold lapsed and nobody took it
    select count(*) filter (where h.held or (not c.is_blocked and c.bookings_count + c.temp_holds < c.allotment)),
           count(*) filter (where h.held)
      into free_nights, held_nights
    from reserve.availability_calendar c
    cross join lateral (select exists (select 1 from reserve.booking_locks l
                                       where l.booking_intent_id = bi.id and l.lock_date = c.date and l.status = 'held') as held) h
    where c.unit_id = bi.unit_id and c.date >= bi.check_in and c.date < bi.check_out;
    if nights_locked <> bi.nights or free_nights <> bi.nights then
      refuse := 'nights_unavailable';
      select string_agg(c.date::text, ', ' order by c.date) into why
      from reserve.availability_calendar c
      where c.unit_id = bi.unit_id and c.date >= bi.check_in and c.date < bi.check_out
        and not exists (select 1 from reserve.booking_locks l
                        where l.booking_intent_id = bi.id and l.lock_date = c.date and l.status = 'held')
        and (c.is_blocked or c.bookings_count + c.temp_holds >= c.allotment);
      why := format('the hold of booking intent %s lapsed and unit %s was sold or blocked meanwhile (%s)',
                    bi.id, bi.unit_id, coalesce(why, 'nights missing from the calendar'));
    end if;
  end if;

  if refuse is not null then
    update reserve.payments x set refund_reason = refuse where x.id = p.id;
    perform reserve.post_payment_receipt(p.id, false);
    if refuse = 'nights_unavailable' then
      -- the stay cannot happen: give back the nights it still held and close the checkout
      update reserve.booking_locks l set status = 'released', released_at = now()
      where l.booking_intent_id = bi.id and l.status = 'held';
      if bi.status = 'pending' then
        update reserve.booking_intents x set status = 'expired' where x.id = bi.id;
      end if;
    end if;
    success := false; outcome := refuse;
    error_message := format('payment %s flagged for refund: %s', p.id, why);
    return next;
    return;
  end if;

  if held_nights = bi.nights then
    -- the usual case, every night still held: this function turns the holds into bookings itself, in
    -- two set-based statements, and the counting triggers of booking_locks and reservations stand
    -- aside for this intent only (reserve.counted_by names it; cleared below). The calendar rows are
    -- locked above, so what is counted here is what the triggers would have counted.
    perform set_config('reserve.counted_by', bi.id::text, true);
    update reserve.booking_locks l set status = 'converted'
    where l.booking_intent_id = bi.id and l.status = 'held'
      and l.unit_id = bi.unit_id and l.lock_date >= bi.check_in and l.lock_date < bi.check_out;
    get diagnostics moved = row_count;
    update reserve.availability_calendar c
    set temp_holds = c.temp_holds - 1, bookings_count = c.bookings_count + 1
    where c.unit_id = bi.unit_id and c.date >= bi.check_in and c.date < bi.check_out;
    if moved <> bi.nights or not found then
      raise exception using errcode = 'RC106',
        message = format('booking intent %s held %s of its %s nights of unit %s when finalized', bi.id, moved, bi.nights, bi.unit_id);
    end if;
  else
    -- lapsed nights that are free again are held anew; inserting the reservation converts the holds
    -- into bookings (count_booked_nights)
    perform reserve.acquire_booking_lock(bi.id, now() + interval '5 minutes');
  end if;
  -- inserting the reservation turns the intent into converted and posts the receipt (settle_reservation_intent)

  -- a clash of the random code is retried without a subtransaction; any other unique key still raises
  loop
    insert into reserve.reservations (booking_intent_id, payment_id, confirmation_code, unit_id, check_in, check_out,
                                      guests, total_amount, currency, status, payment_status, metadata)
    values (bi.id, p.id, reserve.new_confirmation_code(), bi.unit_id, bi.check_in, bi.check_out,
            bi.guests, bi.amount, bi.currency, 'host_commit_pending', 'paid',
            jsonb_strip_nulls(jsonb_build_object('finalized_by_webhook', p_webhook_id,
                                                 'guest_name', bi.guest_name, 'guest_email', bi.guest_email)))
    on conflict on constraint reservations_confirmation_code_key do nothing
    returning * into r;
    exit when found;
  end loop;


  perform set_config('reserve.counted_by', '', true);
  success := true; reservation_id := r.id; confirmation_code := r.confirmation_code; outcome := 'created';
  return next;
end
$function$;
