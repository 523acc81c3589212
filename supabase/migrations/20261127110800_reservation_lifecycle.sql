-- After finalize: the host commits or declines, the guest or ops cancel, the guest checks in and out.
-- Leaving the live statuses gives the nights back through the counting trigger; a cancellation with
-- a refund sets the money aside for the guest in the ledger until the provider confirms the refund.

create function reserve.lock_reservation(p_reservation_id uuid) returns reserve.reservations
language plpgsql
security definer
set search_path = ''
as $$
declare
  r reserve.reservations;
begin
  if p_reservation_id is null then
    raise exception using errcode = 'RC001', message = 'p_reservation_id is required';
  end if;
  select * into r from reserve.reservations where id = p_reservation_id for no key update;
  if not found then
    raise exception using errcode = 'RC301', message = format('reservation %s does not exist', p_reservation_id);
  end if;
  return r;
end
$$;
revoke all on function reserve.lock_reservation(uuid) from public;
comment on function reserve.lock_reservation(uuid) is 'Locks a reservation row; RC301 if there is none.';

create function reserve.lock_payment_of_reservation(p_reservation_id uuid) returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform 1 from reserve.payments p
  where p.id = (select r.payment_id from reserve.reservations r where r.id = p_reservation_id)
  for no key update;
end
$$;
revoke all on function reserve.lock_payment_of_reservation(uuid) from public;
comment on function reserve.lock_payment_of_reservation(uuid) is
  'Locks the payment of a reservation, taken before the reservation itself (the order refunds use).';

create function reserve.illegal_reservation_move(r reserve.reservations, p_to text) returns void
language plpgsql
set search_path = ''
as $$
begin
  raise exception using errcode = 'RC302',
    message = format('reservation %s (%s) is %s and cannot become %s', r.id, r.confirmation_code, r.status, p_to);
end
$$;
revoke all on function reserve.illegal_reservation_move(reserve.reservations, text) from public;
comment on function reserve.illegal_reservation_move(reserve.reservations, text) is 'Raises RC302 naming the reservation.';

create function reserve.host_commit_reservation(p_reservation_id uuid) returns reserve.reservations
language plpgsql
security definer
set search_path = ''
as $$
declare
  r reserve.reservations := reserve.lock_reservation(p_reservation_id);
begin
  if r.status = 'confirmed' then
    return r;
  end if;
  if r.status <> 'host_commit_pending' then
    perform reserve.illegal_reservation_move(r, 'confirmed');
  end if;
  -- the nights were counted when the reservation was created; confirming keeps them, no recount
  update reserve.reservations set status = 'confirmed', confirmed_at = now()
  where id = r.id and status = 'host_commit_pending'
  returning * into r;
  return r;
end
$$;
comment on function reserve.host_commit_reservation(uuid) is
  'The host accepts: host_commit_pending -> confirmed. Idempotent; RC302 from any other status.';
revoke all on function reserve.host_commit_reservation(uuid) from public;
grant execute on function reserve.host_commit_reservation(uuid) to service_role;

create function reserve.cancel_reservation(p_reservation_id uuid, p_reason text, p_refund_amount bigint default null)
returns reserve.reservations
language plpgsql
security definer
set search_path = ''
as $$
declare
  r reserve.reservations;
  p reserve.payments;
  refund bigint;
  refundable bigint;
  legs jsonb;
begin
  if coalesce(length(btrim(p_reason)), 0) = 0 then
    raise exception using errcode = 'RC001', message = format('cancelling reservation %s needs a reason', p_reservation_id);
  end if;
  -- payment before reservation, the order finalize and refunds use
  perform reserve.lock_payment_of_reservation(p_reservation_id);
  r := reserve.lock_reservation(p_reservation_id);
  if r.status = 'cancelled' then
    return r;
  end if;
  if r.status not in ('host_commit_pending', 'confirmed') then
    perform reserve.illegal_reservation_move(r, 'cancelled');
  end if;
  select * into p from reserve.payments where id = r.payment_id;
  -- what the provider already gave back, or what was never the host's and ours (a payment that was
  -- set aside for refund), is not owed a second time: the ledger says what is left to give back
  refundable := greatest(least(reserve.payment_ledger_balance(p.id, array['host_payable', 'commission_revenue']),
                                r.total_amount - coalesce(p.refunded_amount, 0)), 0);
  refund := coalesce(p_refund_amount, refundable);
  if refund < 0 or refund > refundable then
    raise exception using errcode = 'RC001',
      message = format('refund for reservation %s must be 0..%s (total %s, already refunded %s), got %s',
                       r.id, refundable, r.total_amount, coalesce(p.refunded_amount, 0), refund);
  end if;

  if coalesce(current_setting('reserve.reason', true), '') = '' then
    perform set_config('reserve.reason', 'cancel_reservation: ' || p_reason, true);
  end if;

  -- unit, then nights in date order, like every other path
  perform 1 from reserve.availability_calendar
  where unit_id = r.unit_id and date >= r.check_in and date < r.check_out
  order by date for no key update;
  update reserve.reservations
  set status = 'cancelled', cancellation_reason = p_reason, cancelled_at = now(),
      payment_status = case when refund > 0 then 'refund_pending' else payment_status end
  where id = r.id
  returning * into r;
  update reserve.booking_locks set status = 'released', released_at = now()
  where booking_intent_id = r.booking_intent_id and status = 'converted';

  if refund > 0 and p.id is not null then
    update reserve.payments
    set refund_reason = coalesce(refund_reason, case when p_reason like 'host_declined%' then 'host_declined' else 'reservation_cancelled' end),
        metadata = metadata || jsonb_build_object('refund_requested_amount', refund, 'refund_requested_at', now())
    where id = p.id;
    -- the host's share and our commission become the guest's, proportionally
    legs := reserve.earned_refund_legs(p.id, refund, p.currency);
    legs := legs || reserve.ledger_leg('refunds_payable', 'credit', refund, 'refund', p.currency);
    perform reserve.post_ledger_transaction('refund',
      format('Reservation %s cancelled (%s): %s centavos owed back to the guest', r.confirmation_code, p_reason, refund),
      legs, 'cancel:' || r.id, p.id, r.id, r.city_code);
  end if;
  return r;
end
$$;
comment on function reserve.cancel_reservation(uuid, text, bigint) is
  'Cancels a host_commit_pending or confirmed reservation with a reason: frees its nights, flags the '
  'payment for a refund of p_refund_amount (default all not yet refunded, 0 for none) and moves that amount from host '
  'payable and commission to refunds_payable. Idempotent; RC302 once checked in.';
revoke all on function reserve.cancel_reservation(uuid, text, bigint) from public;
grant execute on function reserve.cancel_reservation(uuid, text, bigint) to service_role;

create function reserve.host_decline_reservation(p_reservation_id uuid, p_reason text default null)
returns reserve.reservations
language plpgsql
security definer
set search_path = ''
as $$
declare
  r reserve.reservations;
begin
  perform reserve.lock_payment_of_reservation(p_reservation_id);
  r := reserve.lock_reservation(p_reservation_id);
  if r.status = 'cancelled' then
    return r;
  end if;
  if r.status <> 'host_commit_pending' then
    perform reserve.illegal_reservation_move(r, 'cancelled (declined by host)');
  end if;
  return reserve.cancel_reservation(r.id, 'host_declined' || coalesce(': ' || nullif(btrim(p_reason), ''), ''), null);
end
$$;
comment on function reserve.host_decline_reservation(uuid, text) is
  'The host refuses a host_commit_pending reservation: cancelled with a full refund to the guest.';
revoke all on function reserve.host_decline_reservation(uuid, text) from public;
grant execute on function reserve.host_decline_reservation(uuid, text) to service_role;

create function reserve.check_in_reservation(p_reservation_id uuid) returns reserve.reservations
language plpgsql
security definer
set search_path = ''
as $$
declare
  r reserve.reservations := reserve.lock_reservation(p_reservation_id);
  today date;
begin
  if r.status = 'checked_in' then
    return r;
  end if;
  if r.status <> 'confirmed' then
    perform reserve.illegal_reservation_move(r, 'checked_in');
  end if;
  select (now() at time zone c.timezone)::date into today from reserve.cities c where c.code = r.city_code;
  if today < r.check_in then
    raise exception using errcode = 'RC303',
      message = format('reservation %s starts on %s; today is %s', r.id, r.check_in, today);
  end if;
  update reserve.reservations set status = 'checked_in', checked_in_at = now()
  where id = r.id returning * into r;
  return r;
end
$$;
comment on function reserve.check_in_reservation(uuid) is
  'The guest arrived: confirmed -> checked_in, not before the check-in date (RC303). Idempotent.';
revoke all on function reserve.check_in_reservation(uuid) from public;
grant execute on function reserve.check_in_reservation(uuid) to service_role;

create function reserve.check_out_reservation(p_reservation_id uuid) returns reserve.reservations
language plpgsql
security definer
set search_path = ''
as $$
declare
  r reserve.reservations := reserve.lock_reservation(p_reservation_id);
begin
  if r.status = 'checked_out' then
    return r;
  end if;
  if r.status <> 'checked_in' then
    perform reserve.illegal_reservation_move(r, 'checked_out');
  end if;
  -- leaving early frees the nights that are left, which the counting trigger does for all of them;
  -- nights already past cannot be sold again anyway
  perform 1 from reserve.availability_calendar
  where unit_id = r.unit_id and date >= r.check_in and date < r.check_out
  order by date for no key update;
  update reserve.reservations set status = 'checked_out' where id = r.id returning * into r;
  return r;
end
$$;
comment on function reserve.check_out_reservation(uuid) is 'The guest left: checked_in -> checked_out. Idempotent.';
revoke all on function reserve.check_out_reservation(uuid) from public;
grant execute on function reserve.check_out_reservation(uuid) to service_role;
