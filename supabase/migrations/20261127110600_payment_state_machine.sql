-- One payment state machine. payment_status_transitions lists every legal move; a trigger enforces
-- it for every writer (webhooks, the poller, the runbook's manual UPDATEs), apply_payment_status is
-- the API that also orders late events, and refunds post their ledger entries whoever records them.

create table reserve.payment_status_transitions (
  from_status text not null,
  to_status   text not null,
  why         text not null,
  primary key (from_status, to_status)
);
comment on table reserve.payment_status_transitions is
  'Legal payment status changes. Money that arrived always wins (a late success beats failed, '
  'cancelled or expired); a success only moves on to refunds and disputes; refunded is final.';

insert into reserve.payment_status_transitions (from_status, to_status, why) values
  ('pending', 'processing', 'the provider started processing'),
  ('pending', 'succeeded', 'paid (PIX jumps straight here)'),
  ('pending', 'failed', 'declined or errored'),
  ('pending', 'cancelled', 'abandoned or cancelled at the provider'),
  ('pending', 'expired', 'a PIX charge passed its expiry unpaid'),
  ('processing', 'succeeded', 'paid'),
  ('processing', 'failed', 'declined after processing'),
  ('processing', 'cancelled', 'cancelled at the provider'),
  ('processing', 'expired', 'a PIX charge passed its expiry unpaid'),
  ('failed', 'succeeded', 'a retry on the same PaymentIntent succeeded: the money arrived'),
  ('cancelled', 'succeeded', 'paid despite the cancel: the money arrived and must be refunded or used'),
  ('expired', 'succeeded', 'PIX paid after its expiry: the money arrived'),
  ('succeeded', 'partially_refunded', 'part of the amount refunded'),
  ('succeeded', 'refunded', 'refunded in full'),
  ('succeeded', 'disputed', 'the guest opened a chargeback'),
  ('partially_refunded', 'refunded', 'the rest refunded'),
  ('partially_refunded', 'disputed', 'the guest opened a chargeback'),
  ('disputed', 'succeeded', 'dispute won'),
  ('disputed', 'partially_refunded', 'dispute won after part of the amount had been refunded'),
  ('disputed', 'refunded', 'dispute lost: the amount was charged back');

alter table reserve.payment_status_transitions enable row level security;
revoke all on reserve.payment_status_transitions from public, anon, authenticated;
grant select on reserve.payment_status_transitions to service_role;

alter table reserve.payments add column refund_reason text
  check (refund_reason is null or refund_reason ~ '^[a-z][a-z_]*$');
comment on column reserve.payments.refund_reason is
  'Why we owe the guest money back: duplicate_charge, nights_unavailable, intent_cancelled, '
  'amount_mismatch, reservation_cancelled, host_declined. How much is still owed is the payment''s '
  'refunds_payable balance in the ledger (a cancellation may refund only part).';
create index payments_refund_due_idx on reserve.payments (created_at) where refund_reason is not null;

create function reserve.check_payment_transition() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.status is distinct from old.status and not exists (
      select 1 from reserve.payment_status_transitions t
      where t.from_status = old.status and t.to_status = new.status) then
    raise exception using
      errcode = 'RC202',
      message = format('payment %s cannot go from %s to %s', old.id, old.status, new.status),
      hint = 'legal moves are listed in reserve.payment_status_transitions';
  end if;
  -- the runbook's manual UPDATEs name only the status; the timestamps follow it
  if new.status = 'succeeded' and new.succeeded_at is null then
    new.succeeded_at := now();
  elsif new.status = 'failed' and new.failed_at is null then
    new.failed_at := now();
  elsif new.status = 'refunded' and new.refunded_amount = 0 then
    new.refunded_amount := new.amount;
  end if;
  if new.refunded_amount > old.refunded_amount and new.refunded_at is null then
    new.refunded_at := now();
  end if;
  return new;
end
$$;
comment on function reserve.check_payment_transition() is
  'BEFORE UPDATE OF status trigger: refuses moves not in payment_status_transitions (RC202) and fills '
  'succeeded_at, failed_at, refunded_amount and refunded_at a manual UPDATE left out.';
revoke all on function reserve.check_payment_transition() from public;

create trigger _105_check_status_transition before update of status on reserve.payments
  for each row execute function reserve.check_payment_transition();

create function reserve.receivable_account(p_provider text) returns text
language sql
immutable
set search_path = ''
as $$ select 'receivable_' || p_provider $$;
revoke all on function reserve.receivable_account(text) from public;
comment on function reserve.receivable_account(text) is 'The ledger account holding what a provider owes us.';

-- One ledger leg as post_ledger_transaction takes it.
create function reserve.ledger_leg(p_account text, p_direction text, p_amount bigint, p_entry_type text, p_currency text)
returns jsonb
language sql
immutable
set search_path = ''
as $$
  select jsonb_build_object('account', p_account, 'direction', p_direction, 'amount', p_amount,
                            'entry_type', p_entry_type, 'currency', p_currency)
$$;
comment on function reserve.ledger_leg(text, text, bigint, text, text) is 'One leg in the JSON shape post_ledger_transaction takes.';
revoke all on function reserve.ledger_leg(text, text, bigint, text, text) from public;

-- A sold stay's money credited to the host's share and our commission (commission_bps).
create function reserve.earned_legs(p_amount bigint, p_currency text) returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  commission bigint := round(p_amount * reserve.setting_int('commission_bps') / 10000.0);
begin
  return jsonb_build_array(reserve.ledger_leg('host_payable', 'credit', p_amount - commission, 'host_share', p_currency))
         || case when commission > 0
                 then jsonb_build_array(reserve.ledger_leg('commission_revenue', 'credit', commission, 'commission', p_currency))
                 else '[]'::jsonb end;
end
$$;
comment on function reserve.earned_legs(bigint, text) is
  'Credit legs splitting a sold stay''s amount into host_payable and commission_revenue at commission_bps.';
revoke all on function reserve.earned_legs(bigint, text) from public;

-- Money received: when the stay is ours to sell, the host's share and our commission; otherwise
-- (duplicate, nights gone, cancelled intent) the whole amount is owed back to the guest.
create function reserve.post_payment_receipt(p_payment_id uuid, p_fulfilled boolean, p_reservation_id uuid default null)
returns reserve.ledger_transactions
language plpgsql
security definer
set search_path = ''
as $$
declare
  p reserve.payments;
  city text;
  legs jsonb;
begin
  select * into p from reserve.payments where id = p_payment_id;
  select bi.city_code into city from reserve.booking_intents bi where bi.id = p.booking_intent_id;
  legs := jsonb_build_array(reserve.ledger_leg(reserve.receivable_account(p.provider), 'debit', p.amount, 'guest_payment', p.currency))
          || case when p_fulfilled then reserve.earned_legs(p.amount, p.currency)
                  else jsonb_build_array(reserve.ledger_leg('refunds_payable', 'credit', p.amount, 'refund', p.currency)) end;
  return reserve.post_ledger_transaction(
    case when p.duplicate_of is not null then 'duplicate_charge' else 'payment' end,
    format('%s payment %s (%s)', p.provider, p.id,
           case when p_fulfilled then 'stay sold' else coalesce(p.refund_reason, 'to refund') end),
    legs, 'receipt:' || p.id, p.id, p_reservation_id, city);
end
$$;
comment on function reserve.post_payment_receipt(uuid, boolean, uuid) is
  'Posts the one receipt transaction of a succeeded payment (key receipt:<payment id>): host share and '
  'commission when fulfilled, else the whole amount to refunds_payable.';
revoke all on function reserve.post_payment_receipt(uuid, boolean, uuid) from public;

-- What one payment has put on some accounts, credits minus debits over all its ledger transactions:
-- how much of it is still the host's, ours, or set aside for the guest.
create function reserve.payment_ledger_balance(p_payment_id uuid, p_accounts text[]) returns bigint
language sql
stable
security definer
set search_path = ''
as $$
  select coalesce(sum(case e.direction when 'credit' then e.amount else -e.amount end), 0)::bigint
  from reserve.ledger_transactions t join reserve.ledger_entries e on e.transaction_id = t.id
  where t.payment_id = p_payment_id and e.account = any (p_accounts)
$$;
comment on function reserve.payment_ledger_balance(uuid, text[]) is
  'Credits minus debits of one payment''s ledger transactions on the given accounts.';
revoke all on function reserve.payment_ledger_balance(uuid, text[]) from public;

-- Money given back out of what a payment earned is taken from the host's share and our commission in
-- proportion to what is left of each for that payment, so successive partial refunds never leave a
-- rounding centavo behind: the last one takes exactly the remainder.
create function reserve.earned_refund_legs(p_payment_id uuid, p_amount bigint, p_currency text)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  host_left bigint;
  commission_left bigint;
  commission_part bigint;
  legs jsonb := '[]'::jsonb;
begin
  host_left := greatest(reserve.payment_ledger_balance(p_payment_id, array['host_payable']), 0);
  commission_left := greatest(reserve.payment_ledger_balance(p_payment_id, array['commission_revenue']), 0);
  commission_part := case when host_left + commission_left = 0 then 0
                          when p_amount >= host_left + commission_left then commission_left
                          else round(p_amount * commission_left / (host_left + commission_left)::numeric) end;
  if p_amount - commission_part > 0 then
    legs := legs || reserve.ledger_leg('host_payable', 'debit', p_amount - commission_part, 'refund', p_currency);
  end if;
  if commission_part > 0 then
    legs := legs || reserve.ledger_leg('commission_revenue', 'debit', commission_part, 'refund', p_currency);
  end if;
  return legs;
end
$$;
comment on function reserve.earned_refund_legs(uuid, bigint, text) is
  'Debit legs taking p_amount back from a payment''s remaining host share and commission, proportionally.';
revoke all on function reserve.earned_refund_legs(uuid, bigint, text) from public;

-- A refund takes first from what we already set aside for the guest (refunds_payable), then from the
-- host's share and our commission.
create function reserve.post_payment_refund() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  delta bigint := new.refunded_amount - old.refunded_amount;
  -- a lost dispute; a refund recorded while a dispute is open is still a refund
  chargeback boolean := old.status = 'disputed' and new.status = 'refunded';
  city text;
  receipt uuid;
  set_aside bigint;
  from_set_aside bigint;
  rest bigint;
  legs jsonb := '[]'::jsonb;
begin
  select bi.city_code into city from reserve.booking_intents bi where bi.id = new.booking_intent_id;
  select id into receipt from reserve.ledger_transactions where idempotency_key = 'receipt:' || new.id;
  if receipt is null then
    -- refunded before it was ever finalized (a manual UPDATE): the money still came in first
    receipt := (reserve.post_payment_receipt(new.id, false)).id;
  end if;

  set_aside := reserve.payment_ledger_balance(new.id, array['refunds_payable']);
  from_set_aside := least(delta, greatest(set_aside, 0));
  rest := delta - from_set_aside;

  if from_set_aside > 0 then
    legs := legs || reserve.ledger_leg('refunds_payable', 'debit', from_set_aside, 'refund', new.currency);
  end if;
  if rest > 0 then
    legs := legs || reserve.earned_refund_legs(new.id, rest, new.currency);
  end if;
  legs := legs || reserve.ledger_leg(reserve.receivable_account(new.provider), 'credit', delta, 'refund', new.currency);

  perform reserve.post_ledger_transaction(
    case when chargeback then 'chargeback' else 'refund' end,
    format('%s of payment %s: %s of %s centavos refunded', case when chargeback then 'Chargeback' else 'Refund' end,
           new.id, new.refunded_amount, new.amount),
    legs, format('refund:%s:%s', new.id, new.refunded_amount), new.id, null, city);

  update reserve.reservations
  set payment_status = case when new.refunded_amount = new.amount then 'refunded' else 'partially_refunded' end
  where payment_id = new.id;
  return null;
end
$$;
comment on function reserve.post_payment_refund() is
  'AFTER UPDATE trigger: each increase of payments.refunded_amount posts one refund (or chargeback) '
  'ledger transaction and updates the reservation''s payment_status.';
revoke all on function reserve.post_payment_refund() from public;

-- no column list: "update of refunded_amount" would miss a manual SET status = 'refunded', whose
-- refunded_amount the BEFORE trigger fills in
create trigger _400_post_refund after update on reserve.payments
  for each row when (new.refunded_amount > old.refunded_amount)
  execute function reserve.post_payment_refund();

create function reserve.assert_gateway_id_free(p_provider text, p_gateway_payment_id text, p_payment_id uuid)
returns void
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  other uuid;
begin
  if length(p_gateway_payment_id) = 0 or length(p_gateway_payment_id) > 255 then
    raise exception using errcode = 'RC001', message = 'a gateway payment id is 1..255 characters';
  end if;
  select id into other from reserve.payments
  where provider = p_provider and gateway_payment_id = p_gateway_payment_id and id is distinct from p_payment_id;
  if found then
    raise exception using errcode = 'RC405',
      message = format('%s payment %s is already recorded as payment %s', p_provider, p_gateway_payment_id, other);
  end if;
end
$$;
comment on function reserve.assert_gateway_id_free(text, text, uuid) is
  'Raises RC001 for an empty or overlong gateway id and RC405 if another payment already has it.';
revoke all on function reserve.assert_gateway_id_free(text, text, uuid) from public;

create function reserve.lock_payment(p_payment_id uuid) returns reserve.payments
language plpgsql
security definer
set search_path = ''
as $$
declare
  p reserve.payments;
begin
  select * into p from reserve.payments where id = p_payment_id for no key update;
  if not found then
    raise exception using errcode = 'RC201', message = format('payment %s does not exist', p_payment_id);
  end if;
  return p;
end
$$;
comment on function reserve.lock_payment(uuid) is 'Locks a payment row; RC201 if there is none.';
revoke all on function reserve.lock_payment(uuid) from public;

create function reserve.create_payment(
  p_booking_intent_id  uuid,
  p_provider           text,
  p_method             text,
  p_amount             bigint,
  p_gateway_payment_id text default null,
  p_expires_at         timestamptz default null,
  p_metadata           jsonb default '{}'::jsonb)
returns reserve.payments
language plpgsql
security definer
set search_path = ''
as $$
declare
  bi reserve.booking_intents;
  active reserve.payments;
  next_attempt integer;
  p reserve.payments;
begin
  if p_booking_intent_id is null or p_provider is null or p_method is null or p_amount is null then
    raise exception using errcode = 'RC001', message = 'p_booking_intent_id, p_provider, p_method and p_amount are required';
  end if;
  if p_provider not in ('stripe', 'mercadopago', 'openpix') or p_method not in ('card', 'pix')
     or (p_method = 'card' and p_provider <> 'stripe') then
    raise exception using errcode = 'RC206',
      message = format('provider %s cannot take method %s (card is Stripe only; PIX is Stripe, MercadoPago or OpenPIX)', p_provider, p_method);
  end if;
  if p_metadata is null or jsonb_typeof(p_metadata) <> 'object' then
    raise exception using errcode = 'RC001', message = 'p_metadata must be a JSON object';
  end if;

  bi := reserve.lock_booking_intent(p_booking_intent_id);
  if bi.status <> 'pending' or bi.expires_at <= now() then
    raise exception using errcode = 'RC108',
      message = format('booking intent %s is %s; start a new checkout', bi.id,
                       case when bi.status = 'pending' then 'past its hold (expired ' || bi.expires_at || ')' else bi.status end);
  end if;
  if p_amount <> bi.amount then
    raise exception using errcode = 'RC203',
      message = format('payment amount %s differs from booking intent %s amount %s', p_amount, bi.id, bi.amount);
  end if;

  select * into active from reserve.payments
  where booking_intent_id = bi.id and status in ('pending', 'processing');
  if found then
    -- a retried checkout gets its own attempt back instead of a second charge
    if active.provider = p_provider and active.method = p_method
       and (p_gateway_payment_id is null or active.gateway_payment_id is null
            or active.gateway_payment_id = p_gateway_payment_id) then
      return active;
    end if;
    raise exception using errcode = 'RC204',
      message = format('booking intent %s already has payment %s (%s, %s) in flight', bi.id, active.id, active.provider, active.status);
  end if;

  if p_gateway_payment_id is not null then
    perform reserve.assert_gateway_id_free(p_provider, p_gateway_payment_id, null);
  end if;
  select coalesce(max(attempt), 0) + 1 into next_attempt from reserve.payments where booking_intent_id = bi.id;
  insert into reserve.payments (booking_intent_id, provider, method, amount, currency, attempt, idempotency_key,
                                gateway_payment_id, expires_at, metadata)
  values (bi.id, p_provider, p_method, p_amount, bi.currency, next_attempt,
          format('intent:%s:attempt:%s', bi.id, next_attempt), p_gateway_payment_id,
          case when p_method = 'pix' then coalesce(p_expires_at, bi.expires_at) else p_expires_at end,
          p_metadata)
  returning * into p;
  return p;
end
$$;
comment on function reserve.create_payment(uuid, text, text, bigint, text, timestamptz, jsonb) is
  'Records a payment attempt for a pending intent: amount must equal the intent''s (RC203); one attempt '
  'in flight per intent (a retry with the same provider and method returns it, else RC204); '
  'idempotency_key intent:<id>:attempt:<n> is what the provider call must carry. PIX expires with the hold.';
revoke all on function reserve.create_payment(uuid, text, text, bigint, text, timestamptz, jsonb) from public;
grant execute on function reserve.create_payment(uuid, text, text, bigint, text, timestamptz, jsonb) to service_role;

create function reserve.attach_gateway_payment(
  p_payment_id         uuid,
  p_gateway_payment_id text,
  p_gateway_status     text default null,
  p_provider_payload   jsonb default null,
  p_expires_at         timestamptz default null)
returns reserve.payments
language plpgsql
security definer
set search_path = ''
as $$
declare
  p reserve.payments;
begin
  if p_payment_id is null or coalesce(p_gateway_payment_id, '') = '' then
    raise exception using errcode = 'RC001', message = 'p_payment_id and p_gateway_payment_id are required';
  end if;
  p := reserve.lock_payment(p_payment_id);
  if p.gateway_payment_id is not null and p.gateway_payment_id <> p_gateway_payment_id then
    raise exception using errcode = 'RC405',
      message = format('payment %s is already %s at %s, not %s', p.id, p.gateway_payment_id, p.provider, p_gateway_payment_id);
  end if;
  perform reserve.assert_gateway_id_free(p.provider, p_gateway_payment_id, p.id);
  update reserve.payments
  set gateway_payment_id = p_gateway_payment_id,
      gateway_status = coalesce(p_gateway_status, gateway_status),
      provider_payload = coalesce(p_provider_payload, provider_payload),
      expires_at = coalesce(p_expires_at, expires_at)
  where id = p.id
  returning * into p;
  return p;
end
$$;
comment on function reserve.attach_gateway_payment(uuid, text, text, jsonb, timestamptz) is
  'Records the provider''s id for a payment once the provider answered; idempotent, RC405 if it had another.';
revoke all on function reserve.attach_gateway_payment(uuid, text, text, jsonb, timestamptz) from public;
grant execute on function reserve.attach_gateway_payment(uuid, text, text, jsonb, timestamptz) to service_role;

create function reserve.apply_payment_status(
  p_payment_id       uuid,
  p_status           text,
  p_event_at         timestamptz default null,
  p_gateway_status   text default null,
  p_error_code       text default null,
  p_error_message    text default null,
  p_refunded_amount  bigint default null,
  p_provider_payload jsonb default null,
  p_webhook_id       uuid default null,
  p_on_illegal       text default 'raise')
returns table (payment_id uuid, previous_status text, status text, outcome text,
               reservation_id uuid, confirmation_code text, finalize_outcome text, finalize_error text)
language plpgsql
security definer
set search_path = ''
as $$
declare
  p reserve.payments;
  new_refunded bigint;
  f record;
begin
  if p_payment_id is null or p_status is null or p_status not in (
      'pending', 'processing', 'succeeded', 'failed', 'cancelled', 'expired', 'refunded', 'partially_refunded', 'disputed') then
    raise exception using errcode = 'RC001',
      message = format('payment %s: status %s is not a payment status', p_payment_id, coalesce(p_status, 'null'));
  end if;
  if p_on_illegal is null or p_on_illegal not in ('raise', 'ignore') then
    raise exception using errcode = 'RC001', message = 'p_on_illegal is raise or ignore';
  end if;
  p := reserve.lock_payment(p_payment_id);
  payment_id := p.id;
  previous_status := p.status;

  if p_status = 'partially_refunded' then
    if p_refunded_amount is null or p_refunded_amount <= 0 or p_refunded_amount >= p.amount then
      raise exception using errcode = 'RC001',
        message = format('payment %s: a partial refund needs 0 < refunded amount < %s, got %s', p.id, p.amount, coalesce(p_refunded_amount::text, 'null'));
    end if;
  end if;
  -- a dispute won gives back the state before it, which keeps what was refunded earlier
  if p_status = 'succeeded' and p.status = 'disputed' and p.refunded_amount > 0 then
    p_status := case when p.refunded_amount >= p.amount then 'refunded' else 'partially_refunded' end;
    p_refunded_amount := p.refunded_amount;
  end if;

  if p_status = 'partially_refunded' then
    new_refunded := greatest(p.refunded_amount, p_refunded_amount);
    if new_refunded >= p.amount and p.status = 'disputed' then
      p_status := 'disputed';  -- a smaller refund reported after all of it went back: nothing new
    end if;
  elsif p_status = 'refunded' then
    new_refunded := p.amount;
  else
    new_refunded := p.refunded_amount;
  end if;

  -- an older event never overwrites what a newer one said, except news of money moving: a PIX paid a
  -- second before the poller expired it is still paid, and a refund that arrives after a later dispute
  -- event still left our account (the status then says what the newer event said, with the amount)
  if p_event_at is not null and p.last_event_at is not null and p_event_at < p.last_event_at
     and p_status in ('refunded', 'partially_refunded') and new_refunded > p.refunded_amount then
    p_status := case when p.status = 'disputed' then 'disputed'
                     when new_refunded = p.amount then 'refunded' else 'partially_refunded' end;
    p_event_at := null;
  end if;
  if p_event_at is not null and p.last_event_at is not null and p_event_at < p.last_event_at
     and not (p_status = 'succeeded' and p.status in ('pending', 'processing', 'failed', 'cancelled', 'expired')) then
    outcome := 'stale';
  elsif p_status = p.status and new_refunded = p.refunded_amount then
    outcome := 'unchanged';
  elsif p_status <> p.status and not exists (
      select 1 from reserve.payment_status_transitions t where t.from_status = p.status and t.to_status = p_status) then
    if p_on_illegal = 'raise' then
      raise exception using errcode = 'RC202',
        message = format('payment %s cannot go from %s to %s', p.id, p.status, p_status);
    end if;
    outcome := 'ignored';
  else
    if coalesce(current_setting('reserve.reason', true), '') = '' then
      perform set_config('reserve.reason',
        format('apply_payment_status %s -> %s%s', p.status, p_status, coalesce(' webhook ' || p_webhook_id, '')), true);
    end if;
    update reserve.payments
    set status = p_status,
        gateway_status = coalesce(p_gateway_status, gateway_status),
        last_event_at = greatest(last_event_at, p_event_at),
        error_code = case when p_status = 'failed' then coalesce(p_error_code, error_code) else error_code end,
        error_message = case when p_status = 'failed' then coalesce(p_error_message, error_message) else error_message end,
        succeeded_at = case when p_status = 'succeeded' then coalesce(p_event_at, now()) else succeeded_at end,
        failed_at = case when p_status = 'failed' then coalesce(p_event_at, now()) else failed_at end,
        refunded_amount = new_refunded,
        refunded_at = case when new_refunded > refunded_amount then coalesce(p_event_at, now()) else refunded_at end,
        provider_payload = coalesce(p_provider_payload, provider_payload)
    where id = p.id
    returning * into p;
    outcome := 'applied';
  end if;
  status := p.status;

  -- a duplicate may carry a newer clock; an ignored or stale event moves nothing, not even the clock
  if outcome = 'unchanged' and (p_gateway_status is not null or p_event_at is not null) then
    update reserve.payments
    set gateway_status = coalesce(p_gateway_status, gateway_status),
        last_event_at = greatest(last_event_at, p_event_at)
    where id = p.id and (last_event_at is distinct from greatest(last_event_at, p_event_at)
                         or gateway_status is distinct from coalesce(p_gateway_status, gateway_status));
  end if;

  -- a success is finalized in the same transaction; repeating it is idempotent and recovers a
  -- payment someone marked succeeded by hand without finalizing
  if p.status = 'succeeded' then
    select * into f from reserve.finalize_reservation(p.id, p_webhook_id);
    reservation_id := f.reservation_id;
    confirmation_code := f.confirmation_code;
    finalize_outcome := f.outcome;
    finalize_error := f.error_message;
  end if;
  return next;
end
$$;
comment on function reserve.apply_payment_status(uuid, text, timestamptz, text, text, text, bigint, jsonb, uuid, text) is
  'The one way a payment changes status (webhooks, poller, operators). Outcome applied, unchanged '
  '(a duplicate), stale (p_event_at older than the last applied event) or ignored (illegal move with '
  'p_on_illegal = ignore; with raise it is RC202). A succeeded payment is finalized in the same transaction.';
revoke all on function reserve.apply_payment_status(uuid, text, timestamptz, text, text, text, bigint, jsonb, uuid, text) from public;
grant execute on function reserve.apply_payment_status(uuid, text, timestamptz, text, text, text, bigint, jsonb, uuid, text) to service_role;
