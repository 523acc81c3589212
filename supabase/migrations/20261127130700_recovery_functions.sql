-- A tested, audited, idempotent function for every repair the runbook used to do with hand-written SQL.
-- Each needs a named operator (JWT sub, else `set local reserve.actor = 'you@company'`) and a reason;
-- both land in audit_logs with every row the repair changes. Unsafe cases are refused with our codes.

create function reserve.require_operator(p_action text, p_reason text) returns text
language plpgsql
security definer
set search_path = ''
as $$
declare
  who text := coalesce(nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub',
                       nullif(current_setting('reserve.actor', true), ''));
begin
  if who is null or coalesce(length(btrim(p_reason)), 0) = 0 then
    raise exception using errcode = 'RC501',
      message = format('%s needs a named operator and a reason: set local reserve.actor = ''you@company'' and pass p_reason', p_action);
  end if;
  perform set_config('reserve.actor', who, true);
  perform set_config('reserve.reason', format('%s by %s: %s', p_action, who, p_reason), true);
  return who;
end
$$;
comment on function reserve.require_operator(text, text) is
  'The operator of a recovery (JWT sub, else reserve.actor) with the reason recorded for the audit '
  'trail of this transaction; RC501 without either.';
revoke all on function reserve.require_operator(text, text) from public;

create function reserve.recover_payment(
  p_payment_id      uuid,
  p_provider_status text,
  p_reason          text,
  p_refunded_amount bigint default null,
  p_gateway_status  text default null)
returns table (payment_id uuid, previous_status text, status text, outcome text,
               reservation_id uuid, confirmation_code text, finalize_outcome text, finalize_error text)
language plpgsql
security definer
set search_path = ''
as $$
declare
  who text := reserve.require_operator('recover_payment', p_reason);
  a record;
begin
  perform reserve.lock_payment(p_payment_id);
  -- the same state machine as webhooks and the poller; an illegal move is refused (RC202)
  select * into a from reserve.apply_payment_status(
    p_payment_id, p_provider_status, null, coalesce(p_gateway_status, 'manual:' || p_provider_status), null, null,
    p_refunded_amount, null, null, 'raise');
  -- a repeat changes nothing, not even the note
  if a.outcome = 'applied' then
    update reserve.payments x
    set metadata = x.metadata || jsonb_build_object('manual_recovery', jsonb_build_object(
          'by', who, 'reason', p_reason, 'provider_status', p_provider_status, 'at', now()))
    where x.id = a.payment_id;
    if a.status in ('failed', 'cancelled', 'expired') then
      perform reserve.release_intent_if_idle((select x.booking_intent_id from reserve.payments x where x.id = a.payment_id),
                                             'payment_' || a.status || '_by_operator');
    end if;
  end if;
  payment_id := a.payment_id;
  previous_status := a.previous_status;
  status := a.status;
  outcome := a.outcome;
  reservation_id := a.reservation_id;
  confirmation_code := a.confirmation_code;
  finalize_outcome := a.finalize_outcome;
  finalize_error := a.finalize_error;
  return next;
end
$$;
comment on function reserve.recover_payment(uuid, text, text, bigint, text) is
  'Applies the status the provider''s dashboard shows (succeeded, failed, refunded, ...) to a stuck or '
  'PIX payment through apply_payment_status (a success is finalized: reservation and receipt). '
  'A failure, cancellation or expiry frees the intent''s nights if nothing else is in flight. Replaces '
  'the runbook''s synthetic webhook INSERT + UPDATE + finalize. Idempotent (a repeat writes nothing); '
  'RC202 for an illegal move, RC501 without operator and reason.';
revoke all on function reserve.recover_payment(uuid, text, text, bigint, text) from public;
grant execute on function reserve.recover_payment(uuid, text, text, bigint, text) to service_role;

create function reserve.mark_payment_failed(p_payment_id uuid, p_reason text, p_error_code text default 'manual_recovery')
returns reserve.payments
language plpgsql
security definer
set search_path = ''
as $$
declare
  who text := reserve.require_operator('mark_payment_failed', p_reason);
  p reserve.payments;
begin
  p := reserve.lock_payment(p_payment_id);
  if p.status = 'failed' then
    return p;
  end if;
  if p.status not in ('pending', 'processing') then
    raise exception using errcode = 'RC202',
      message = format('payment %s is %s: only a payment in flight is marked failed (money that arrived is refunded, not failed)', p.id, p.status);
  end if;
  perform reserve.apply_payment_status(p.id, 'failed', null, 'manual:failed', p_error_code, p_reason, null, null, null, 'raise');
  update reserve.payments x
  set metadata = x.metadata || jsonb_build_object('manual_recovery', jsonb_build_object('by', who, 'reason', p_reason, 'at', now()))
  where x.id = p.id;
  perform reserve.release_intent_if_idle(p.booking_intent_id, 'payment_failed_by_operator');
  select * into p from reserve.payments x where x.id = p.id;
  return p;
end
$$;
comment on function reserve.mark_payment_failed(uuid, text, text) is
  'Marks a pending or processing payment failed (the provider says it failed) and releases its nights '
  'if nothing else is in flight. Idempotent; RC202 for a payment that already holds money.';
revoke all on function reserve.mark_payment_failed(uuid, text, text) from public;
grant execute on function reserve.mark_payment_failed(uuid, text, text) to service_role;

create table reserve.ops_blocks (
  id           uuid primary key default gen_random_uuid(),
  unit_id      uuid not null references reserve.unit_map (id),
  -- the nights asked for, and the ones this block closed: unblocking reopens only the latter, and not
  -- one another open block still asks to keep closed
  from_date    date not null,
  to_date      date not null,
  nights       date[] not null,
  reason       text not null,
  blocked_by   text not null,
  blocked_at   timestamptz not null default now(),
  unblocked_by text,
  unblocked_at timestamptz,
  unblock_reason text
);
comment on table reserve.ops_blocks is
  'Nights an operator closed with block_unit_dates (and unblock_unit_dates reopened): which, why, who.';
create trigger _900_audit after insert or update or delete on reserve.ops_blocks
  for each row execute function reserve.audit_row_change();
alter table reserve.ops_blocks enable row level security;
revoke all on reserve.ops_blocks from public, anon, authenticated;
grant select on reserve.ops_blocks to service_role;

create function reserve.block_unit_dates(p_unit_id uuid, p_from date, p_to date, p_reason text)
returns table (block_id uuid, nights_blocked integer, live_reservations integer)
language plpgsql
security definer
set search_path = ''
as $$
declare
  who text := reserve.require_operator('block_unit_dates', p_reason);
  closed date[];
begin
  if p_unit_id is null or p_from is null or p_to is null or p_to <= p_from then
    raise exception using errcode = 'RC103', message = format('unit %s: block from %s to %s is not a range of nights', p_unit_id, p_from, p_to);
  end if;
  if not exists (select 1 from reserve.unit_map u where u.id = p_unit_id) then
    raise exception using errcode = 'RC101', message = format('unit %s not found', p_unit_id);
  end if;
  perform 1 from reserve.availability_calendar c where c.unit_id = p_unit_id and c.date >= p_from and c.date < p_to
  order by c.date for no key update;
  with closing as (
    update reserve.availability_calendar c set is_blocked = true
    where c.unit_id = p_unit_id and c.date >= p_from and c.date < p_to and not c.is_blocked
    returning c.date
  )
  select array_agg(closing.date order by closing.date) into closed from closing;
  nights_blocked := coalesce(cardinality(closed), 0);
  -- asking again for a block already open changes nothing
  select o.id into block_id from reserve.ops_blocks o
  where o.unit_id = p_unit_id and o.from_date = p_from and o.to_date = p_to and o.unblocked_at is null;
  if block_id is null or nights_blocked > 0 then
    insert into reserve.ops_blocks (unit_id, from_date, to_date, nights, reason, blocked_by)
    values (p_unit_id, p_from, p_to, coalesce(closed, '{}'), p_reason, who)
    returning id into block_id;
  end if;
  select count(*) into live_reservations from reserve.reservations r
  where r.unit_id = p_unit_id and reserve.is_live_reservation(r.status) and r.stay && daterange(p_from, p_to, '[)');
  return next;
end
$$;
comment on function reserve.block_unit_dates(uuid, date, date, text) is
  'Stops new bookings of a unit''s nights [p_from, p_to) (the overbooking runbook''s Step 1) and records '
  'the block in ops_blocks (block_id: the range asked for and the nights it closed); existing '
  'reservations stay and are counted in live_reservations. Idempotent.';
revoke all on function reserve.block_unit_dates(uuid, date, date, text) from public;
grant execute on function reserve.block_unit_dates(uuid, date, date, text) to service_role;

create function reserve.unblock_unit_dates(p_block_id uuid, p_reason text)
returns table (block_id uuid, nights_reopened integer)
language plpgsql
security definer
set search_path = ''
as $$
declare
  who text := reserve.require_operator('unblock_unit_dates', p_reason);
  b reserve.ops_blocks;
begin
  select * into b from reserve.ops_blocks x where x.id = p_block_id for update;
  if not found then
    raise exception using errcode = 'RC001', message = format('ops block %s not found', p_block_id);
  end if;
  block_id := b.id;
  nights_reopened := 0;
  if b.unblocked_at is null then
    perform 1 from reserve.availability_calendar c where c.unit_id = b.unit_id and c.date = any (b.nights)
    order by c.date for no key update;
    update reserve.availability_calendar c set is_blocked = false
    where c.unit_id = b.unit_id and c.date = any (b.nights) and c.is_blocked
      and not exists (select 1 from reserve.ops_blocks o
                      where o.id <> b.id and o.unit_id = b.unit_id and o.unblocked_at is null
                        and c.date >= o.from_date and c.date < o.to_date);
    get diagnostics nights_reopened = row_count;
    update reserve.ops_blocks x set unblocked_by = who, unblocked_at = now(), unblock_reason = p_reason where x.id = b.id;
  end if;
  return next;
end
$$;
comment on function reserve.unblock_unit_dates(uuid, text) is
  'Reopens the nights an ops block closed (never one the host closed, nor one another open ops block '
  'still covers). Idempotent.';
revoke all on function reserve.unblock_unit_dates(uuid, text) from public;
grant execute on function reserve.unblock_unit_dates(uuid, text) to service_role;

create function reserve.move_reservation(p_reservation_id uuid, p_new_unit_id uuid, p_reason text)
returns reserve.reservations
language plpgsql
security definer
set search_path = ''
as $$
declare
  who text := reserve.require_operator('move_reservation', p_reason);
  r reserve.reservations;
  u record;
begin
  perform reserve.lock_payment_of_reservation(p_reservation_id);
  r := reserve.lock_reservation(p_reservation_id);
  if r.unit_id = p_new_unit_id and r.metadata ? 'moved_from_unit' then
    return r;  -- already moved there
  end if;
  select um.id, um.property_id, um.max_occupancy, um.is_active, pm.city_code, pm.is_active as property_active
    into u from reserve.unit_map um join reserve.properties_map pm on pm.id = um.property_id where um.id = p_new_unit_id;
  if u.id is null then
    raise exception using errcode = 'RC101', message = format('unit %s not found', p_new_unit_id);
  end if;
  if not (u.is_active and u.property_active) then
    raise exception using errcode = 'RC102', message = format('unit %s is not on sale', p_new_unit_id);
  end if;
  if r.unit_id = p_new_unit_id or not reserve.is_live_reservation(r.status) or r.status = 'checked_in'
     or r.check_out <= current_date or r.guests > u.max_occupancy then
    raise exception using errcode = 'RC304',
      message = format('reservation %s (%s, %s guests, %s to %s, unit %s) cannot move to unit %s (max %s guests)',
                       r.id, r.status, r.guests, r.check_in, r.check_out, r.unit_id, p_new_unit_id, u.max_occupancy);
  end if;
  -- both units' nights, in (unit, date) order: the order every path takes calendar rows in
  perform 1 from reserve.availability_calendar c
  where c.unit_id in (r.unit_id, p_new_unit_id) and c.date >= r.check_in and c.date < r.check_out
  order by c.unit_id, c.date for no key update;
  -- an overbooking is usually counters a bypassed trigger left wrong: count both units from their rows
  -- first, so the trigger's move below starts from the truth (a wrong count would refuse the move, or let
  -- the new unit be oversold)
  perform reserve.recount_nights(r.unit_id, r.check_in, r.check_out);
  perform reserve.recount_nights(p_new_unit_id, r.check_in, r.check_out);
  -- a night closed (by the host or an ops block) or missing from the calendar is not free
  if (select count(*) from reserve.availability_calendar c
      where c.unit_id = p_new_unit_id and c.date >= r.check_in and c.date < r.check_out and not c.is_blocked) <> r.nights then
    perform reserve.raise_unavailable(p_new_unit_id, r.check_in, r.check_out);
  end if;
  -- the counting trigger frees the old nights and takes the new ones, RC106 naming any that are full
  begin
    update reserve.reservations x
    set unit_id = u.id, property_id = u.property_id, city_code = u.city_code,
        metadata = x.metadata || jsonb_build_object('moved_from_unit', r.unit_id, 'moved_by', who, 'moved_at', now(),
                                                    'moved_due_to', p_reason)
    where x.id = r.id
    returning * into r;
  exception when exclusion_violation then
    -- a unit that sells one stay a night refuses the overlap itself (reservations_no_overlap)
    raise exception using errcode = 'RC106',
      message = format('unit %s already has a stay overlapping %s to %s; reservation %s stays on unit %s',
                       p_new_unit_id, r.check_in, r.check_out, r.id, r.unit_id);
  end;
  perform reserve.recount_nights((r.metadata ->> 'moved_from_unit')::uuid, r.check_in, r.check_out);
  return r;
end
$$;
comment on function reserve.move_reservation(uuid, uuid, text) is
  'Moves a live, not yet checked-in reservation to another unit whose nights are free (RC106 names the '
  'full ones) and that takes its guests (RC304); counters follow. The overbooking runbook''s Option A.';
revoke all on function reserve.move_reservation(uuid, uuid, text) from public;
grant execute on function reserve.move_reservation(uuid, uuid, text) to service_role;

create function reserve.cancel_reservation_with_refund(p_reservation_id uuid, p_reason text, p_refund_amount bigint default null)
returns table (reservation_id uuid, status text, refund_request_id uuid, refund_amount bigint, refund_status text)
language plpgsql
security definer
set search_path = ''
as $$
declare
  who text := reserve.require_operator('cancel_reservation_with_refund', p_reason);
  r reserve.reservations;
  p reserve.payments;
  owed bigint;
  rr reserve.refund_requests;
begin
  -- counters a bypassed trigger left wrong would refuse (or mis-free) the cancellation: count first
  select * into r from reserve.reservations x where x.id = p_reservation_id;
  if r.id is not null and reserve.is_live_reservation(r.status) then
    perform reserve.lock_payment_of_reservation(p_reservation_id);
    r := reserve.lock_reservation(p_reservation_id);
    perform reserve.recount_nights(r.unit_id, r.check_in, r.check_out);
  end if;
  r := reserve.cancel_reservation(p_reservation_id, p_reason, p_refund_amount);
  perform reserve.recount_nights(r.unit_id, r.check_in, r.check_out);
  select * into p from reserve.payments x where x.id = r.payment_id;
  -- what cancel set aside for the guest and no request covers yet
  owed := (p.metadata ->> 'refund_requested_amount')::bigint;
  if p.id is not null and owed > 0 then
    select * into rr from reserve.refund_requests x where x.request_key = 'cancel:' || r.id;
    if rr.id is null then
      rr := reserve.request_refund(p.id, least(owed, p.amount - p.refunded_amount), 'reservation_cancelled',
                                   'cancel:' || r.id, p_reason);
    end if;
  end if;
  return query select r.id, r.status, rr.id, rr.amount, rr.status;
end
$$;
comment on function reserve.cancel_reservation_with_refund(uuid, text, bigint) is
  'Cancels a reservation (cancel_reservation: nights freed, the refund set aside in refunds_payable) and '
  'queues the refund to the provider (refund_requests, sent by the poller). Idempotent. The overbooking '
  'runbook''s Option B.';
revoke all on function reserve.cancel_reservation_with_refund(uuid, text, bigint) from public;
grant execute on function reserve.cancel_reservation_with_refund(uuid, text, bigint) to service_role;

create function reserve.refund_duplicate_charge(p_payment_id uuid, p_reason text default 'duplicate_charge')
returns reserve.refund_requests
language plpgsql
security definer
set search_path = ''
as $$
declare
  who text := reserve.require_operator('refund_duplicate_charge', p_reason);
  p reserve.payments;
  rr reserve.refund_requests;
begin
  p := reserve.lock_payment(p_payment_id);
  select * into rr from reserve.refund_requests x where x.request_key = 'duplicate:' || p.id;
  if found then
    return rr;
  end if;
  if p.duplicate_of is null then
    raise exception using errcode = 'RC207',
      message = format('payment %s is not a duplicate charge (duplicate_of is empty); cancel its reservation to refund it', p.id);
  end if;
  -- finalize already set the whole amount aside in refunds_payable; the provider's confirmation posts
  -- the refund against it
  return reserve.request_refund(p.id, p.amount - p.refunded_amount, 'duplicate_charge', 'duplicate:' || p.id, p_reason);
end
$$;
comment on function reserve.refund_duplicate_charge(uuid, text) is
  'Queues the refund of a second charge of a paid intent (duplicate_of set by finalize), whole and once. '
  'The ledger entries follow the provider''s confirmation (refunds_payable -> receivable). RC207 for a '
  'payment that is not a duplicate, RC208 when nothing is left to refund.';
revoke all on function reserve.refund_duplicate_charge(uuid, text) from public;
grant execute on function reserve.refund_duplicate_charge(uuid, text) to service_role;

create function reserve.refund_payment(p_payment_id uuid, p_amount bigint, p_reason text)
returns reserve.refund_requests
language plpgsql
security definer
set search_path = ''
as $$
declare
  who text := reserve.require_operator('refund_payment', p_reason);
begin
  return reserve.request_refund(p_payment_id, p_amount, 'operator_refund', 'manual:' || gen_random_uuid(), p_reason);
end
$$;
comment on function reserve.refund_payment(uuid, bigint, text) is
  'Queues an operator''s refund of part or all of a payment to the provider (a goodwill refund; a '
  'cancellation uses cancel_reservation_with_refund). Not idempotent by design: each call is one refund.';
revoke all on function reserve.refund_payment(uuid, bigint, text) from public;
grant execute on function reserve.refund_payment(uuid, bigint, text) to service_role;

-- Counters recounted from the rows (reservations, held locks) for a unit's nights [p_from, p_to): the
-- repair for counters a bypassed trigger left wrong. They cannot say more than the allotment (the
-- capacity check), so an oversold night is counted full and reported: overbooking_check still shows it
-- until a reservation moves or is cancelled, and a recount afterwards is exact.
create function reserve.recount_nights(p_unit_id uuid, p_from date, p_to date default null)
returns table (nights_checked integer, nights_changed integer, nights_oversold integer)
language plpgsql
security definer
set search_path = ''
as $$
begin
  with nights as (
    select c.unit_id, c.date from reserve.availability_calendar c
    where c.unit_id = p_unit_id and c.date >= p_from and (p_to is null or c.date < p_to)
    order by c.date
    for no key update
  ), actual as (
    select n.unit_id, n.date, c.allotment,
           (select count(*) from reserve.reservations r
            where r.unit_id = n.unit_id and reserve.is_live_reservation(r.status)
              and r.check_in <= n.date and r.check_out > n.date)::integer as booked,
           (select count(*) from reserve.booking_locks l
            where l.unit_id = n.unit_id and l.lock_date = n.date and l.status = 'held')::integer as held
    from nights n join reserve.availability_calendar c on c.unit_id = n.unit_id and c.date = n.date
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
$$;
comment on function reserve.recount_nights(uuid, date, date) is
  'Recounts bookings_count and temp_holds of a unit''s nights [p_from, p_to) from live reservations and '
  'held locks, under the nights'' locks; an oversold night is counted full and reported in nights_oversold.';
revoke all on function reserve.recount_nights(uuid, date, date) from public;

create function reserve.rebuild_unit_availability(p_unit_id uuid, p_from date default current_date, p_reason text default 'rebuild counters')
returns table (nights_checked integer, nights_changed integer, nights_oversold integer)
language plpgsql
security definer
set search_path = ''
as $$
declare
  who text := reserve.require_operator('rebuild_unit_availability', p_reason);
begin
  if not exists (select 1 from reserve.unit_map u where u.id = p_unit_id) then
    raise exception using errcode = 'RC101', message = format('unit %s not found', p_unit_id);
  end if;
  return query select * from reserve.recount_nights(p_unit_id, coalesce(p_from, current_date));
end
$$;
comment on function reserve.rebuild_unit_availability(uuid, date, text) is
  'Recounts a unit''s nights from p_from (the overbooking runbook''s Step 4): bookings_count from live '
  'reservations, temp_holds from held locks. Nights still oversold are counted full and reported in '
  'nights_oversold: move or cancel a stay, then rebuild again. Idempotent; a no-op on exact counters.';
revoke all on function reserve.rebuild_unit_availability(uuid, date, text) from public;
grant execute on function reserve.rebuild_unit_availability(uuid, date, text) to service_role;

create function reserve.resolve_webhook(p_webhook_id uuid, p_reason text)
returns reserve.processed_webhooks
language plpgsql
security definer
set search_path = ''
as $$
declare
  who text := reserve.require_operator('resolve_webhook', p_reason);
  w reserve.processed_webhooks;
begin
  select * into w from reserve.processed_webhooks x where x.id = p_webhook_id for no key update;
  if not found then
    raise exception using errcode = 'RC209', message = format('webhook %s not found', p_webhook_id);
  end if;
  if w.status in ('failed', 'dead') then
    update reserve.processed_webhooks x
    set status = 'ignored', next_retry_at = null, processed_at = now(),
        error_message = format('resolved by %s: %s (was %s: %s)', who, p_reason, w.status, coalesce(w.error_message, ''))
    where x.id = w.id
    returning * into w;
  end if;
  return w;
end
$$;
comment on function reserve.resolve_webhook(uuid, text) is
  'Closes a failed or dead event an operator has dealt with by other means (the payment recovered by '
  'polling or recover_payment, a second provider payment refunded at the provider): it becomes ignored, '
  'with who and why in error_message, and leaves the dead-webhook alert. Idempotent.';
revoke all on function reserve.resolve_webhook(uuid, text) from public;
grant execute on function reserve.resolve_webhook(uuid, text) to service_role;
