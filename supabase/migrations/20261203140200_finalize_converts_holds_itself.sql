-- Finalize turns the holds into bookings itself. Before, inserting the reservation converted the intent's
-- holds through the counting triggers: one booking_locks UPDATE whose row trigger moved temp_holds on
-- each night, then a second UPDATE of the same calendar rows for bookings_count, after
-- acquire_booking_lock had locked the intent and the nights a second time and rewritten every hold's
-- expires_at. When every night is still held (the usual case) finalize_reservation now converts the
-- holds and moves both counters in two set-based statements and skips acquire_booking_lock; a lapsed
-- hold takes the old way. The triggers stand aside only for the intent finalize names in the
-- transaction-local setting reserve.counted_by, and only for the changes finalize makes (the
-- reservation's INSERT, the holds' UPDATE); finalize clears it before it returns. Manual SQL (the
-- runbook's INSERT of a reservation, an UPDATE of a hold) goes through the triggers as before.

CREATE OR REPLACE FUNCTION reserve.finalize_reservation(p_payment_id uuid, p_webhook_id uuid DEFAULT NULL::uuid)
 RETURNS TABLE(success boolean, reservation_id uuid, confirmation_code text, error_message text, outcome text, payment_id uuid, booking_intent_id uuid)
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path = ''
AS $$
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

  loop
    begin
      insert into reserve.reservations (booking_intent_id, payment_id, confirmation_code, unit_id, check_in, check_out,
                                        guests, total_amount, currency, status, payment_status, metadata)
      values (bi.id, p.id, reserve.new_confirmation_code(), bi.unit_id, bi.check_in, bi.check_out,
              bi.guests, bi.amount, bi.currency, 'host_commit_pending', 'paid',
              jsonb_strip_nulls(jsonb_build_object('finalized_by_webhook', p_webhook_id,
                                                   'guest_name', bi.guest_name, 'guest_email', bi.guest_email)))
      returning * into r;
      exit;
    exception when unique_violation then
      get stacked diagnostics why = constraint_name;
      if why <> 'reservations_confirmation_code_key' then
        raise;
      end if;
    end;
  end loop;


  perform set_config('reserve.counted_by', '', true);
  success := true; reservation_id := r.id; confirmation_code := r.confirmation_code; outcome := 'created';
  return next;
end
$$
;

CREATE OR REPLACE FUNCTION reserve.count_booked_nights()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path = ''
AS $$
declare
  was_live boolean := tg_op <> 'INSERT' and reserve.is_live_reservation(old.status);
  is_live boolean := tg_op <> 'DELETE' and reserve.is_live_reservation(new.status);
  n integer;
begin
  if tg_op = 'INSERT' and new.booking_intent_id::text = current_setting('reserve.counted_by', true) then
    return null;  -- finalize_reservation has converted this intent's holds and counted its nights
  end if;
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
$$
;

CREATE OR REPLACE FUNCTION reserve.count_held_night()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path = ''
AS $$
declare
  was_held boolean := tg_op <> 'INSERT' and old.status = 'held';
  is_held boolean := tg_op <> 'DELETE' and new.status = 'held';
begin
  if tg_op = 'UPDATE' and new.booking_intent_id::text = current_setting('reserve.counted_by', true) then
    return null;  -- finalize_reservation moves this intent's counters itself
  end if;
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
$$
;

-- counters moved by finalize are not an audited change of the calendar, as they were not when the
-- counting triggers moved them (pg_trigger_depth() > 0); the reservation and the intent are audited
drop trigger _900_audit_update on reserve.availability_calendar;
create trigger _900_audit_update after update on reserve.availability_calendar
  for each row when ((pg_trigger_depth() = 0 and coalesce(current_setting('reserve.counted_by', true), '') = '')
                     or old.allotment is distinct from new.allotment or old.is_blocked is distinct from new.is_blocked
                     or old.price is distinct from new.price)
  execute function reserve.audit_row_change('unit_id', 'date');
