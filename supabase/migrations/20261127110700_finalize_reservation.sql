-- finalize_reservation: a succeeded payment becomes exactly one reservation, in one transaction.
-- Payment row, then intent row, then calendar nights in date order: every path locks in that order.

create function reserve.new_confirmation_code() returns text
language sql
volatile
set search_path = ''
as $$
  -- 32 letters and digits without 0, O, 1 and I, which guests misread; 256 % 32 = 0 keeps it uniform
  select 'RES-' || to_char(now() at time zone 'UTC', 'YYYY') || '-'
         || string_agg(substr('ABCDEFGHJKLMNPQRSTUVWXYZ23456789', get_byte(b, i) % 32 + 1, 1), '' order by i)
  from (select extensions.gen_random_bytes(6) as b) r, generate_series(0, 5) i
$$;
comment on function reserve.new_confirmation_code() is 'A random RES-YYYY-XXXXXX code (about 10^9 per year).';
revoke all on function reserve.new_confirmation_code() from public;

-- A reservation row is born paid for, whoever inserts it (finalize, or the runbook's manual INSERT
-- when finalize is broken): its intent becomes converted and its payment's receipt is posted.
create function reserve.settle_reservation_intent() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  p reserve.payments;
  set_aside bigint;
begin
  update reserve.booking_intents
  set status = 'converted', converted_at = now()
  where id = new.booking_intent_id and status <> 'converted';
  select * into p from reserve.payments where id = new.payment_id;
  if not found or p.succeeded_at is null then
    return null;
  end if;
  if not exists (select 1 from reserve.ledger_transactions t where t.idempotency_key = 'receipt:' || p.id) then
    perform reserve.post_payment_receipt(p.id, true, new.id);
  elsif p.refund_reason is not null then
    -- an operator sold the stay to a payment finalize had refused (the runbook's manual INSERT): what
    -- was set aside for the guest becomes the host's share and our commission after all
    set_aside := reserve.payment_ledger_balance(p.id, array['refunds_payable']);
    if set_aside > 0 then
      perform reserve.post_ledger_transaction('payment',
        format('Payment %s sold after all (reservation %s): refund of %s withdrawn', p.id, new.confirmation_code, p.refund_reason),
        jsonb_build_array(reserve.ledger_leg('refunds_payable', 'debit', set_aside, 'refund', p.currency))
          || reserve.earned_legs(set_aside, p.currency),
        'sold:' || p.id || ':' || new.id, p.id, new.id, new.city_code);
    end if;
    update reserve.payments
    set refund_reason = null,
        metadata = metadata || jsonb_build_object('refund_withdrawn', p.refund_reason, 'refund_withdrawn_for', new.id)
    where id = p.id;
  end if;
  return null;
end
$$;
comment on function reserve.settle_reservation_intent() is
  'AFTER INSERT trigger on reservations: converts the booking intent and posts the payment''s receipt '
  '(host share and commission); a payment refused before (refund_reason) is reclassified as sold.';
revoke all on function reserve.settle_reservation_intent() from public;

-- The landed fill trigger takes "the first succeeded payment"; a duplicate charge must never be the
-- one a manual reservation claims, and an unflagged payment is preferred over a refused one.
create or replace function reserve.fill_reservation_from_intent() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  bi reserve.booking_intents;
begin
  select * into bi from reserve.booking_intents where id = new.booking_intent_id;
  if not found then
    return new;  -- the foreign key names the problem
  end if;
  new.unit_id := coalesce(new.unit_id, bi.unit_id);
  new.check_in := coalesce(new.check_in, bi.check_in);
  new.check_out := coalesce(new.check_out, bi.check_out);
  new.guests := coalesce(new.guests, bi.guests);
  new.total_amount := coalesce(new.total_amount, bi.amount);
  if new.payment_id is null then
    select p.id into new.payment_id
    from reserve.payments p
    where p.booking_intent_id = bi.id and p.status = 'succeeded' and p.duplicate_of is null
    order by p.refund_reason is not null, p.succeeded_at, p.id
    limit 1;
  end if;
  return new;
end
$$;

create trigger _310_settle_intent after insert on reserve.reservations
  for each row execute function reserve.settle_reservation_intent();

create function reserve.finalize_reservation(p_payment_id uuid, p_webhook_id uuid default null)
returns table (success boolean, reservation_id uuid, confirmation_code text, error_message text,
               outcome text, payment_id uuid, booking_intent_id uuid)
language plpgsql
security definer
set search_path = ''
as $$
declare
  p reserve.payments;
  bi reserve.booking_intents;
  r reserve.reservations;
  nights_locked integer;
  free_nights integer;
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
    select count(*) into free_nights
    from reserve.availability_calendar c
    where c.unit_id = bi.unit_id and c.date >= bi.check_in and c.date < bi.check_out
      and (exists (select 1 from reserve.booking_locks l
                   where l.booking_intent_id = bi.id and l.lock_date = c.date and l.status = 'held')
           or (not c.is_blocked and c.bookings_count + c.temp_holds < c.allotment));
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

  -- lapsed nights that are free again are held anew; inserting the reservation converts the holds
  -- into bookings, the intent into converted and posts the receipt (settle_reservation_intent)
  perform reserve.acquire_booking_lock(bi.id, now() + interval '5 minutes');

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


  success := true; reservation_id := r.id; confirmation_code := r.confirmation_code; outcome := 'created';
  return next;
end
$$;
comment on function reserve.finalize_reservation(uuid, uuid) is
  'Turns a succeeded payment into its reservation (host_commit_pending, paid, RES-YYYY-XXXXXX), converts '
  'the holds into bookings and posts the ledger, in one transaction. Idempotent per payment. outcome: '
  'created, already_finalized, or (success false, payment flagged for refund) duplicate_charge, '
  'nights_unavailable, intent_cancelled, amount_mismatch. RC201 unknown payment, RC205 not succeeded.';
revoke all on function reserve.finalize_reservation(uuid, uuid) from public;
grant execute on function reserve.finalize_reservation(uuid, uuid) to service_role;
