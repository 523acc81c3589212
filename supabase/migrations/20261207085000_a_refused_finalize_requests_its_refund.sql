-- A payment finalize refused (its hold lapsed and the nights were sold, its intent was cancelled, its
-- amount is not the intent's) was flagged and its money booked to refunds_payable, and then waited for an
-- operator to refund it by hand: nothing paged anyone, so the guest's money stayed with us. Finalize now
-- requests the refund of what is left to give back (key unsellable:<payment>), which the poller sends.
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
  sole boolean;
  property uuid;
  city text;
  refuse text;
  why text;
  owed bigint;
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
    -- this intent's holds first, locked: while they are held the nights are the intent's whatever the
    -- calendar says, so the usual case decides without the calendar and takes its nights only once the
    -- reservation is written; a night every checkout of a busy unit wants is then held for the receipt
    -- and the commit, not for the whole finalize. The sweep of lapsed holds skips holds locked here.
    select count(*) into held_nights from (
      select 1 from reserve.booking_locks l
      where l.booking_intent_id = bi.id and l.status = 'held'
        and l.unit_id = bi.unit_id and l.lock_date >= bi.check_in and l.lock_date < bi.check_out
      for no key update) h;
    if held_nights <> bi.nights then
      perform 1 from reserve.availability_calendar c
      where c.unit_id = bi.unit_id and c.date >= bi.check_in and c.date < bi.check_out
      order by c.date for no key update;
      get diagnostics nights_locked = row_count;
      -- a night is still ours if we hold it, or free again if the hold lapsed and nobody took it
      select count(*) filter (where h.held or (not c.is_blocked and c.bookings_count + c.temp_holds < c.allotment)),
             count(*) filter (where h.held), coalesce(max(c.allotment) <= 1, true)
        into free_nights, held_nights, sole
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
  end if;

  if refuse is not null then
    update reserve.payments x set refund_reason = refuse where x.id = p.id;
    perform reserve.post_payment_receipt(p.id, false);
    -- the stay cannot be sold: what the guest paid is owed back, so it is asked for now (it waited for an
    -- operator nobody paged); what an earlier request (an amount mismatch's) already asks is not asked twice
    select coalesce(p.received_amount, p.amount) - p.refunded_amount - coalesce(sum(x.amount), 0) into owed
    from reserve.refund_requests x where x.payment_id = p.id and x.status in ('requested', 'sending', 'sent');
    if owed > 0 then
      perform reserve.request_refund(p.id, owed, refuse, 'unsellable:' || p.id, why);
    end if;
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
    -- the usual case, every night still held and its hold locked above: this function turns the holds
    -- into bookings itself, in two set-based statements, and the counting triggers of booking_locks and
    -- reservations stand aside for this intent only (reserve.counted_by names it; cleared below). The
    -- reservation's fill and settle triggers stand aside too (their WHEN names counted_by): this function
    -- gives the row what they would, converts the intent and posts the receipt below, with the rows it holds.
    select coalesce(max(c.allotment) <= 1, true) into sole
    from reserve.availability_calendar c
    where c.unit_id = bi.unit_id and c.date >= bi.check_in and c.date < bi.check_out;
    if sole then
      -- a unit that sells one stay a night takes its nights before its reservation exists: a move onto
      -- them holds the nights and then checks reservations_no_overlap against ours, which would wait for
      -- this transaction while this one waits for its nights. Its nights are never many stays' to share.
      perform 1 from reserve.availability_calendar c
      where c.unit_id = bi.unit_id and c.date >= bi.check_in and c.date < bi.check_out
      order by c.date for no key update;
    end if;
    perform set_config('reserve.counted_by', bi.id::text, true);
    update reserve.booking_locks l set status = 'converted'
    where l.booking_intent_id = bi.id and l.status = 'held'
      and l.unit_id = bi.unit_id and l.lock_date >= bi.check_in and l.lock_date < bi.check_out;
    get diagnostics moved = row_count;
    if moved <> bi.nights then
      raise exception using errcode = 'RC106',
        message = format('booking intent %s held %s of its %s nights of unit %s when finalized', bi.id, moved, bi.nights, bi.unit_id);
    end if;
    -- what the fill triggers would give the reservation: sole occupancy from its nights' allotment (read
    -- above as fill_sole_occupancy reads it), the unit's property and city now
    select u.property_id, pm.city_code into property, city
    from reserve.unit_map u join reserve.properties_map pm on pm.id = u.property_id
    where u.id = bi.unit_id;
    -- settle's first step, here and not after the insert: the transaction's audit then lists the intent
    -- before the reservation, as it did when _310 (which fires before _900_audit) converted it. Not on
    -- the lapsed path, where acquire_booking_lock refuses an intent already converted.
    update reserve.booking_intents x set status = 'converted', converted_at = now()
    where x.id = bi.id and x.status <> 'converted';
  else
    -- lapsed nights that are free again are held anew; inserting the reservation converts the holds
    -- into bookings (count_booked_nights)
    perform reserve.acquire_booking_lock(bi.id, now() + interval '5 minutes');
  end if;
  -- on the lapsed path the fill triggers fill property, city and sole occupancy over what is passed here,
  -- and inserting the reservation converts the intent and posts the receipt (settle_reservation_intent)

  -- a clash of the random code is retried without a subtransaction; any other unique key still raises
  loop
    insert into reserve.reservations (booking_intent_id, payment_id, confirmation_code, unit_id, check_in, check_out,
                                      guests, total_amount, currency, status, payment_status, sole_occupancy,
                                      property_id, city_code, metadata)
    values (bi.id, p.id, reserve.new_confirmation_code(), bi.unit_id, bi.check_in, bi.check_out,
            bi.guests, bi.amount, bi.currency, 'host_commit_pending', 'paid', sole, property, city,
            jsonb_strip_nulls(jsonb_build_object('finalized_by_webhook', p_webhook_id,
                                                 'guest_name', bi.guest_name, 'guest_email', bi.guest_email)))
    on conflict on constraint reservations_confirmation_code_key do nothing
    returning * into r;
    exit when found;
  end loop;

  -- settle's second step on the usual path, with the payment finalize holds, before the nights: a
  -- transaction's balance rows are its own bucket's (claim_balance_bucket), so no other transaction waits
  -- on them, and the receipt no longer lengthens the time a busy unit's night is held
  if held_nights = bi.nights and p.succeeded_at is not null then
    perform reserve.post_sale_receipt(p, r);
  end if;

  if held_nights = bi.nights then
    -- the holds' counters become bookings, the nights' locks taken (unless sole took them above) last,
    -- just before the audit and the commit, in date order like every path that takes nights (an UPDATE
    -- alone takes them in its plan's order)
    with nights as (
      select n.unit_id, n.date from reserve.availability_calendar n
      where n.unit_id = bi.unit_id and n.date >= bi.check_in and n.date < bi.check_out
      order by n.date for no key update)
    update reserve.availability_calendar c
    set temp_holds = c.temp_holds - 1, bookings_count = c.bookings_count + 1
    from nights
    where c.unit_id = nights.unit_id and c.date = nights.date;
    get diagnostics moved = row_count;
    if moved <> bi.nights then
      raise exception using errcode = 'RC106',
        message = format('booking intent %s: %s of its %s nights of unit %s are in the calendar', bi.id, moved, bi.nights, bi.unit_id);
    end if;
  end if;

  perform set_config('reserve.counted_by', '', true);
  success := true; reservation_id := r.id; confirmation_code := r.confirmation_code; outcome := 'created';
  return next;
end
$function$;
