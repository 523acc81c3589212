-- apply_payment_status takes the provider's normalized update (reserve.provider_update) and compares
-- the provider's money with ours before anything moves:
--   * a success must say what arrived (amount_received, currency). Our price in our currency confirms the
--     stay; anything else is booked as received and owed back (receipt to refunds_payable in the received
--     currency), flagged amount_mismatch, a refund of it queued and a money discrepancy recorded (P1);
--   * a refund, chargeback or dispute beyond the money received, or in another currency, is refused: the
--     payment does not move, the discrepancy is recorded, the outcome says refused;
--   * a provider payment is attached to ours (checkout, a webhook or poll that overtakes it) only when it
--     names our payment and asks our amount in our currency.
-- The positional signatures are dropped; every caller passes the composite.

drop function reserve.apply_payment_status(uuid, text, timestamptz, text, text, text, bigint, jsonb, uuid, text);
drop function reserve.attach_gateway_payment(uuid, text, text, jsonb, timestamptz);

-- Why a provider payment may not be attached to ours (null: it may).
create function reserve.provider_payment_mismatch(p_payment reserve.payments, p_update reserve.provider_update)
returns text
language sql
immutable
set search_path = ''
as $$
  select case
    when p_update.gateway_payment_id is null then 'the update names no provider payment'
    when p_update.payment_reference is distinct from p_payment.id then
      format('%s payment %s names %s as ours, not payment %s', p_payment.provider, p_update.gateway_payment_id,
             coalesce(p_update.payment_reference::text, 'no payment'), p_payment.id)
    when p_update.amount is distinct from p_payment.amount or p_update.currency is distinct from p_payment.currency then
      format('%s payment %s is for %s %s, payment %s is for %s %s', p_payment.provider, p_update.gateway_payment_id,
             coalesce(p_update.amount::text, 'no amount'), coalesce(p_update.currency, 'no currency'),
             p_payment.id, p_payment.amount, p_payment.currency)
  end
$$;
comment on function reserve.provider_payment_mismatch(reserve.payments, reserve.provider_update) is
  'Null when the provider payment of the update names our payment (payment_reference) and asks our amount '
  'in our currency; else why it does not.';
revoke all on function reserve.provider_payment_mismatch(reserve.payments, reserve.provider_update) from public;

-- The caller holds the payment FOR UPDATE (gateway_payment_id is a key column).
create function reserve.attach_provider_payment(p_payment reserve.payments, p_update reserve.provider_update,
                                                p_source text, p_webhook_id uuid default null)
returns text
language plpgsql
security definer
set search_path = ''
as $$
declare
  why text;
begin
  if p_payment.gateway_payment_id is not distinct from p_update.gateway_payment_id then
    return null;
  end if;
  why := reserve.provider_payment_mismatch(p_payment, p_update);
  if why is not null then
    perform reserve.record_money_discrepancy(p_payment, 'attach_mismatch', p_source, p_update, why,
                                             p_payment.amount, p_payment.currency, p_update.amount, p_update.currency, p_webhook_id);
    return why;
  end if;
  perform reserve.assert_gateway_id_free(p_payment.provider, p_update.gateway_payment_id, p_payment.id);
  update reserve.payments x
  set gateway_payment_id = p_update.gateway_payment_id,
      gateway_status = coalesce(p_update.gateway_status, x.gateway_status),
      provider_payload = coalesce(p_update.provider_object, x.provider_payload)
  where x.id = p_payment.id;
  return null;
end
$$;
comment on function reserve.attach_provider_payment(reserve.payments, reserve.provider_update, text, uuid) is
  'Records the provider''s id on a payment that has none, only if the provider payment names it and asks '
  'its amount and currency; otherwise records an attach_mismatch money discrepancy and returns why. '
  'Internal: the caller holds the payment FOR UPDATE.';
revoke all on function reserve.attach_provider_payment(reserve.payments, reserve.provider_update, text, uuid) from public;

create function reserve.attach_gateway_payment(p_payment_id uuid, p_update reserve.provider_update)
returns reserve.payments
language plpgsql
security definer
set search_path = ''
as $$
declare
  u reserve.provider_update;
  p reserve.payments;
  why text;
begin
  if p_payment_id is null or p_update is null or coalesce(p_update.gateway_payment_id, '') = '' then
    raise exception using errcode = 'RC001', message = 'p_payment_id and the update''s gateway_payment_id are required';
  end if;
  u := reserve.check_provider_update(p_update);
  -- gateway_payment_id is a key column: the strong lock at once (a webhook may hold KEY SHARE)
  select * into p from reserve.payments where id = p_payment_id for update;
  if not found then
    raise exception using errcode = 'RC201', message = format('payment %s does not exist', p_payment_id);
  end if;
  if p.gateway_payment_id is not null and p.gateway_payment_id <> u.gateway_payment_id then
    raise exception using errcode = 'RC405',
      message = format('payment %s is already %s at %s, not %s', p.id, p.gateway_payment_id, p.provider, u.gateway_payment_id);
  end if;
  why := reserve.attach_provider_payment(p, u, 'checkout');
  if why is not null then
    -- never handed out to the guest: the attempt ends here and its nights go back
    perform reserve.abort_checkout(p.id, 'provider_mismatch', why);
  end if;
  select * into p from reserve.payments where id = p_payment_id;
  return p;
end
$$;
comment on function reserve.attach_gateway_payment(uuid, reserve.provider_update) is
  'Records the provider payment the checkout created (its id, status and object) when it names our payment '
  'and asks our amount in our currency. Otherwise nothing is attached, a money discrepancy is recorded and '
  'the attempt fails with error_code provider_mismatch (its nights released): the caller must not hand '
  'out its means of payment. Idempotent; RC405 if the payment already has another provider id.';
revoke all on function reserve.attach_gateway_payment(uuid, reserve.provider_update) from public;
grant execute on function reserve.attach_gateway_payment(uuid, reserve.provider_update) to service_role;

create function reserve.apply_payment_status(
  p_payment_id uuid,
  p_update     reserve.provider_update,
  p_webhook_id uuid default null,
  p_on_illegal text default 'raise',
  p_source     text default 'api')
returns reserve.payment_status_change
language plpgsql
security definer
set search_path = ''
as $$
declare
  u reserve.provider_update;
  p reserve.payments;
  r reserve.payment_status_change;
  target text;
  event_at timestamptz;
  new_refunded bigint;
  held bigint;
  held_currency text;
  brings_money boolean := false;
  mismatch text;
  refuse_kind text;
  refuse_why text;
  refuse_amount bigint;
  refuse_currency text;
  excess_why text;
  f record;
begin
  if p_payment_id is null or p_update is null or p_update.status is null then
    raise exception using errcode = 'RC001',
      message = format('payment %s: an update with a payment status is required', coalesce(p_payment_id::text, 'null'));
  end if;
  u := reserve.check_provider_update(p_update);
  if p_on_illegal is null or p_on_illegal not in ('raise', 'ignore') then
    raise exception using errcode = 'RC001', message = 'p_on_illegal is raise or ignore';
  end if;
  if p_source is null or p_source not in ('webhook', 'poll', 'replay', 'recovery', 'checkout', 'refund_lookup', 'api') then
    raise exception using errcode = 'RC001', message = format('p_source %s is not a path that moves payments', coalesce(p_source, 'null'));
  end if;
  p := reserve.lock_payment(p_payment_id);
  r.payment_id := p.id;
  r.previous_status := p.status;
  target := u.status;
  event_at := u.event_at;
  held := coalesce(p.received_amount, p.amount);
  held_currency := coalesce(p.received_currency, p.currency);

  if target = 'succeeded' and p.succeeded_at is null then
    -- the money arrives with this update: the provider's figures say how much, and in what
    if u.amount_received is null or u.currency is null then
      raise exception using errcode = 'RC001',
        message = format('payment %s: a success needs the amount and currency the provider received (amount_received, currency)', p.id);
    end if;
    brings_money := true;
    held := u.amount_received;
    held_currency := u.currency;
    if (u.amount_received, u.currency) is distinct from (p.amount, p.currency) then
      mismatch := format('%s says %s %s arrived for payment %s, whose price is %s %s', p.provider, u.amount_received, u.currency,
                         p.id, p.amount, p.currency);
    end if;
  elsif target in ('partially_refunded', 'refunded', 'disputed') and u.currency is not null and u.currency <> held_currency then
    refuse_kind := 'currency_mismatch';
    refuse_why := format('%s reports a %s of payment %s in %s; the money received was %s %s', p.provider,
                         case when target = 'disputed' then 'dispute' else 'refund' end, p.id, u.currency, held, held_currency);
    refuse_amount := coalesce(u.dispute_amount, u.refunded_amount);
    refuse_currency := u.currency;
  end if;

  -- a dispute won gives back the state before it, which keeps what was refunded earlier
  if refuse_kind is null and target = 'succeeded' and p.status = 'disputed' and p.refunded_amount > 0 then
    target := case when p.refunded_amount >= held then 'refunded' else 'partially_refunded' end;
    u.refunded_amount := p.refunded_amount;
    u.dispute_amount := null;
  end if;

  if refuse_kind is not null then
    null;
  elsif target in ('refunded', 'partially_refunded') and u.dispute_amount is not null then
    -- a lost dispute takes the disputed amount on top of earlier refunds
    new_refunded := p.refunded_amount + u.dispute_amount;
    if u.dispute_amount > held then
      refuse_kind := 'dispute_exceeds_received';
      refuse_why := format('%s charges back %s %s of payment %s, which received %s %s',
                           p.provider, u.dispute_amount, held_currency, p.id, held, held_currency);
      refuse_amount := u.dispute_amount;
    else
      if new_refunded > held then
        -- the chargeback and earlier refunds together exceed what arrived: the ledger books up to the
        -- money received, and the rest is an operator's (the provider took more than it gave us)
        excess_why := format('%s charges back %s %s of payment %s after %s were refunded; it received %s %s: %s %s over what arrived is not booked',
                             p.provider, u.dispute_amount, held_currency, p.id, p.refunded_amount, held, held_currency,
                             new_refunded - held, held_currency);
        new_refunded := held;
      end if;
      target := case when new_refunded = held then 'refunded' else 'partially_refunded' end;
    end if;
  elsif target = 'partially_refunded' then
    if u.refunded_amount is null or u.refunded_amount <= 0 then
      raise exception using errcode = 'RC001',
        message = format('payment %s: a partial refund needs a refunded amount above 0, got %s', p.id, coalesce(u.refunded_amount::text, 'null'));
    end if;
    if u.refunded_amount > held then
      refuse_kind := 'refund_exceeds_received';
    elsif u.refunded_amount = held then
      target := 'refunded';
    end if;
    new_refunded := greatest(p.refunded_amount, u.refunded_amount);
    if target = 'partially_refunded' and new_refunded >= held and p.status = 'disputed' then
      target := 'disputed';  -- a smaller refund reported after all of it went back: nothing new
    end if;
  elsif target = 'refunded' then
    if u.refunded_amount > held then
      refuse_kind := 'refund_exceeds_received';
    elsif u.refunded_amount > 0 and u.refunded_amount < held then
      -- "refunded" by the provider's count, not by ours: only that much went back
      target := 'partially_refunded';
      new_refunded := greatest(p.refunded_amount, u.refunded_amount);
    else
      new_refunded := held;
    end if;
  elsif target = 'disputed' and u.dispute_amount > held then
    refuse_kind := 'dispute_exceeds_received';
    refuse_why := format('%s disputes %s %s of payment %s, which received %s %s', p.provider, u.dispute_amount,
                         held_currency, p.id, held, held_currency);
    refuse_amount := u.dispute_amount;
  else
    new_refunded := p.refunded_amount;
  end if;
  if refuse_kind = 'refund_exceeds_received' then
    refuse_why := format('%s reports %s %s refunded of payment %s, which received %s %s', p.provider, u.refunded_amount,
                         held_currency, p.id, held, held_currency);
    refuse_amount := u.refunded_amount;
  end if;

  if refuse_kind is not null then
    -- never booked beyond the money received: nothing moves, an operator looks
    perform reserve.record_money_discrepancy(p, refuse_kind, p_source, u, refuse_why, held, held_currency,
                                             refuse_amount, coalesce(refuse_currency, u.currency, held_currency), p_webhook_id);
    r.outcome := 'refused';
    r.status := p.status;
    r.finalize_error := refuse_why;
    return r;
  end if;

  -- an older event never overwrites what a newer one said, except news of money moving: a PIX paid a
  -- second before the poller expired it is still paid, and a refund that arrives after a later dispute
  -- event still left our account (the status then says what the newer event said, with the amount)
  if event_at is not null and p.last_event_at is not null and event_at < p.last_event_at
     and target in ('refunded', 'partially_refunded') and new_refunded > p.refunded_amount then
    target := case when p.status = 'disputed' then 'disputed'
                   when new_refunded = held then 'refunded' else 'partially_refunded' end;
    event_at := null;
  end if;
  if event_at is not null and p.last_event_at is not null and event_at < p.last_event_at
     and not (target = 'succeeded' and p.status in ('pending', 'processing', 'failed', 'cancelled', 'expired')) then
    r.outcome := 'stale';
  elsif target = p.status and new_refunded = p.refunded_amount then
    r.outcome := 'unchanged';
  elsif target <> p.status and not exists (
      select 1 from reserve.payment_status_transitions t where t.from_status = p.status and t.to_status = target) then
    if p_on_illegal = 'raise' then
      raise exception using errcode = 'RC202',
        message = format('payment %s cannot go from %s to %s', p.id, p.status, target);
    end if;
    r.outcome := 'ignored';
  else
    if coalesce(current_setting('reserve.reason', true), '') = '' then
      perform set_config('reserve.reason',
        format('apply_payment_status %s -> %s (%s)%s', p.status, target, p_source, coalesce(' webhook ' || p_webhook_id, '')), true);
    end if;
    update reserve.payments
    set status = target,
        gateway_status = coalesce(u.gateway_status, gateway_status),
        last_event_at = greatest(last_event_at, event_at),
        error_code = case when target = 'failed' then coalesce(u.error_code, error_code) else error_code end,
        error_message = case when target = 'failed' then coalesce(u.error_message, error_message) else error_message end,
        succeeded_at = case when target = 'succeeded' then coalesce(event_at, now()) else succeeded_at end,
        failed_at = case when target = 'failed' then coalesce(event_at, now()) else failed_at end,
        received_amount = case when brings_money then u.amount_received else received_amount end,
        received_currency = case when brings_money then u.currency else received_currency end,
        refund_reason = case when brings_money and mismatch is not null then 'amount_mismatch' else refund_reason end,
        fee_amount = coalesce(u.fee_amount, fee_amount),
        pix_end_to_end_id = coalesce(pix_end_to_end_id, u.end_to_end_id),
        refunded_amount = new_refunded,
        refunded_at = case when new_refunded > refunded_amount then coalesce(event_at, now()) else refunded_at end,
        provider_payload = coalesce(u.provider_object, provider_payload)
    where id = p.id
    returning * into p;
    r.outcome := 'applied';
    if excess_why is not null then
      perform reserve.record_money_discrepancy(p, 'dispute_exceeds_received', p_source, u, excess_why, held, held_currency,
                                               u.dispute_amount, held_currency, p_webhook_id);
    end if;
    if brings_money and mismatch is not null then
      -- the money that arrived is not our price: booked as it is, owed back, refunded, and an operator paged
      if u.amount_received > 0 then
        perform reserve.post_payment_receipt(p.id, false);
        perform reserve.request_refund(p.id, u.amount_received, 'amount_mismatch', 'mismatch:' || p.id, mismatch);
      end if;
      perform reserve.record_money_discrepancy(p, 'amount_mismatch', p_source, u, mismatch, p.amount, p.currency,
                                               u.amount_received, u.currency, p_webhook_id);
    end if;
  end if;
  r.status := p.status;

  -- a duplicate may carry a newer clock, the fee or the endToEndId; an ignored or stale event moves nothing
  if r.outcome = 'unchanged' then
    update reserve.payments
    set gateway_status = coalesce(u.gateway_status, gateway_status),
        last_event_at = greatest(last_event_at, event_at),
        fee_amount = coalesce(u.fee_amount, fee_amount),
        pix_end_to_end_id = coalesce(pix_end_to_end_id, u.end_to_end_id)
    where id = p.id and (last_event_at is distinct from greatest(last_event_at, event_at)
                         or gateway_status is distinct from coalesce(u.gateway_status, gateway_status)
                         or fee_amount is distinct from coalesce(u.fee_amount, fee_amount)
                         or pix_end_to_end_id is distinct from coalesce(pix_end_to_end_id, u.end_to_end_id));
  end if;

  -- a success is finalized in the same transaction; repeating it is idempotent and recovers a
  -- payment someone marked succeeded by hand without finalizing
  if p.status = 'succeeded' then
    select * into f from reserve.finalize_reservation(p.id, p_webhook_id);
    r.reservation_id := f.reservation_id;
    r.confirmation_code := f.confirmation_code;
    r.finalize_outcome := f.outcome;
    r.finalize_error := f.error_message;
  end if;
  return r;
end
$$;
comment on function reserve.apply_payment_status(uuid, reserve.provider_update, uuid, text, text) is
  'The one way a payment changes status (webhooks, poller, recovery, replay, operators), from the '
  'provider''s normalized update. A success must carry amount_received and currency: our price confirms '
  'the stay (finalized in the same transaction); anything else is booked as received and owed back '
  '(refund_reason amount_mismatch, a refund queued, a money discrepancy: P1). Refunds and disputes beyond '
  'the money received, or in another currency, are refused (outcome refused, nothing moves, a discrepancy). '
  'Otherwise outcome applied, unchanged, stale (older than the last applied event) or ignored (illegal move '
  'with p_on_illegal = ignore; with raise it is RC202). p_source names the path for the records.';
revoke all on function reserve.apply_payment_status(uuid, reserve.provider_update, uuid, text, text) from public;
grant execute on function reserve.apply_payment_status(uuid, reserve.provider_update, uuid, text, text) to service_role;

create or replace function reserve.abort_checkout(p_payment_id uuid, p_error_code text, p_error_message text)
returns reserve.payments
language plpgsql
security definer
set search_path = ''
as $$
declare
  p reserve.payments;
begin
  if p_payment_id is null or coalesce(p_error_code, '') = '' then
    raise exception using errcode = 'RC001', message = 'p_payment_id and p_error_code are required';
  end if;
  p := reserve.lock_payment(p_payment_id);
  -- only an attempt the provider never took up is given up: once it has the provider's id, the guest
  -- may hold its QR code or client secret, and news from the provider wins over our guess
  if p.status = 'pending' and p.gateway_payment_id is null then
    perform reserve.apply_payment_status(p.id, reserve.status_update('failed', null, p_error_code, left(p_error_message, 2000)),
                                         null, 'raise', 'checkout');
    perform reserve.release_intent_if_idle(p.booking_intent_id, 'provider_error: ' || p_error_code);
  end if;
  select * into p from reserve.payments where id = p.id;
  return p;
end
$$;
