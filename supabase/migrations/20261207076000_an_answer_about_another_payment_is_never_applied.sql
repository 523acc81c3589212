-- The poller's read (record_poll_result), a refund lookup's read of the payment (record_refund_lookup)
-- and reconcile's were applied to our payment whatever payment the provider's answer was about: an answer
-- for another provider id, or naming another of our payments, sold the stay with no money. The webhook
-- path refused it already (a second provider payment naming ours is dead). apply_payment_status, which
-- every path goes through, now refuses it: outcome refused, nothing moves, a money discrepancy (P1).
CREATE OR REPLACE FUNCTION reserve.apply_payment_status(p_payment_id uuid, p_update reserve.provider_update, p_webhook_id uuid DEFAULT NULL::uuid, p_on_illegal text DEFAULT 'raise'::text, p_source text DEFAULT 'api'::text)
 RETURNS reserve.payment_status_change
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
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
  arrived reserve.provider_update;
  first reserve.payment_status_change;
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
  if (p.gateway_payment_id is not null and u.gateway_payment_id is not null and u.gateway_payment_id <> p.gateway_payment_id)
     or (u.payment_reference is not null and u.payment_reference <> p.id) then
    -- an answer about another payment (the provider's read of another id, or naming another of ours) is
    -- never applied to this one: a poll or lookup that sold a stay on it would sell it with no money
    refuse_why := format('%s answered for %s (payment_id %s) about payment %s, which is %s: another payment''s news, not applied',
                         p.provider, coalesce(u.gateway_payment_id, '?'), coalesce(u.payment_reference::text, '?'), p.id,
                         coalesce(p.gateway_payment_id, 'not attached'));
    perform reserve.record_money_discrepancy(p, 'attach_mismatch', p_source, u, refuse_why, p.amount, p.currency,
                                             coalesce(u.amount_received, u.amount), coalesce(u.currency, p.currency), p_webhook_id);
    r.outcome := 'refused';
    r.status := p.status;
    r.finalize_error := refuse_why;
    return r;
  end if;
  if u.status in ('refunded', 'partially_refunded', 'disputed') and u.amount_received is not null and p.succeeded_at is null
     and p.status in ('pending', 'processing', 'failed', 'cancelled', 'expired') then
    -- a read of a payment that was paid and has since been refunded or disputed (a poll that comes late):
    -- the success it says arrived is recorded (and finalized) first, then what followed it; a move from
    -- pending straight to refunded would be ignored, and the money that came and went never booked
    arrived := u;
    arrived.status := 'succeeded';
    arrived.refunded_amount := null;
    arrived.dispute_amount := null;
    arrived.refunds := null;
    first := reserve.apply_payment_status(p.id, arrived, p_webhook_id, p_on_illegal, p_source);
    r.reservation_id := first.reservation_id;
    r.confirmation_code := first.confirmation_code;
    r.finalize_outcome := first.finalize_outcome;
    r.finalize_error := first.finalize_error;
    p := reserve.lock_payment(p_payment_id);
  end if;
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

  if jsonb_typeof(u.refunds) = 'array' then
    -- what the provider's list says of each refund we sent (succeeded or failed; pending is no news):
    -- the requests are confirmed by it (confirm_sent_refunds, when refunded_amount grows below), not by
    -- their order, so the refund that went back is the one confirmed when two are in flight
    update reserve.refund_requests x set provider_refund_status = l.status
    from jsonb_to_recordset(u.refunds) as l(refund_id text, status text)
    where x.payment_id = p.id and x.status = 'sent' and x.provider_refund_id = l.refund_id
      and l.status in ('succeeded', 'failed') and x.provider_refund_status is distinct from l.status;
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
$function$;
