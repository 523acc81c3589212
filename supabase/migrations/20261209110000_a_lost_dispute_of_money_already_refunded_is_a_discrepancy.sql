-- A dispute lost on a payment already refunded in full recorded no money discrepancy: the money went
-- out twice (our refund, then the card network's chargeback), but with nothing left to book the payment
-- stayed refunded, the update was `unchanged`, and the excess was recorded only when the payment moved.
-- Now the excess of a lost dispute over what was left to take back is recorded whatever the outcome (but
-- ignored), once (the discrepancy's fingerprint: its webhook twice, out of order, a reconciliation's
-- listing). So is a refund reported after a chargeback whose sum with it exceeds what arrived (the refund
-- made first, its news reaching us last): it was compared with the money received only, and a refund of
-- all of it after a chargeback of all of it was `unchanged`. The ledger still books refunds and
-- chargebacks only up to the money received, as before.
-- The discrepancy's expected_amount is now what was left to take back (the money received less earlier
-- refunds and chargebacks), not the money received: provider_amount (what the dispute took) less it is
-- what went out twice. Restates apply_payment_status whole from 20261208160000.

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
  left_to_take bigint;
  excess_news reserve.provider_update;
  excess_amount bigint;
  f record;
  arrived reserve.provider_update;
  first reserve.payment_status_change;
  charged_back bigint;
  books_chargeback boolean := false;
  flag_only boolean := false;
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
  if u.dispute_id is not null and exists (select 1 from reserve.ledger_transactions t where t.idempotency_key = 'chargeback:' || u.dispute_id) then
    -- a dispute lost and charged back is over: news of it again (its opening event delivered after its
    -- closing one, a listing, a replay) moves nothing, so its chargeback is never booked twice
    r.outcome := 'stale';
    r.status := p.status;
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
  -- what lost disputes took: in our refunded_amount, never in the provider's refunded figure (Stripe's
  -- amount_refunded), which is compared with ours less it. Counted in refunded_amount, so nothing while
  -- that is 0: the success path (a first payment's news) asks no ledger
  charged_back := case when p.refunded_amount > 0 then reserve.payment_charged_back(p.id) else 0 end;

  if target = 'disputed' and u.dispute_id is null and u.dispute_amount is null and charged_back > 0
     and p.status in ('partially_refunded', 'refunded') then
    -- a read of a charge whose dispute was lost and charged back: the provider's flag says disputed for
    -- ever (Stripe's charge.disputed), not that a dispute is open; what it says besides is the charge's
    -- refunds. Back in dispute, the lost dispute's listing would charge it back again. A new dispute
    -- comes with its id (its webhook, the dispute listing)
    if coalesce(u.refunded_amount, 0) > 0 then
      target := 'partially_refunded';
    else
      target := p.status;
      flag_only := true;
    end if;
  end if;

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
    u.refunded_amount := p.refunded_amount - charged_back;
    u.dispute_amount := null;
    -- all of it charged back by earlier disputes: no refund to say, the amount stays
    flag_only := u.refunded_amount = 0;
  end if;

  if refuse_kind is not null then
    null;
  elsif flag_only then
    new_refunded := p.refunded_amount;
  elsif target in ('refunded', 'partially_refunded') and u.dispute_amount is not null then
    -- a lost dispute takes the disputed amount on top of earlier refunds, booked as its chargeback
    books_chargeback := true;
    new_refunded := p.refunded_amount + u.dispute_amount;
    if u.dispute_amount > held then
      refuse_kind := 'dispute_exceeds_received';
      refuse_why := format('%s charges back %s %s of payment %s, which received %s %s',
                           p.provider, u.dispute_amount, held_currency, p.id, held, held_currency);
      refuse_amount := u.dispute_amount;
    else
      if new_refunded > held then
        -- the chargeback and earlier refunds together exceed what arrived: the ledger books up to the
        -- money received, and the rest is an operator's (the provider took more than it gave us). The
        -- discrepancy says what was left to take back beside what the dispute took: the difference is the
        -- money that went out twice
        left_to_take := held - p.refunded_amount;
        excess_amount := u.dispute_amount;
        excess_news := u;
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
    elsif u.refunded_amount + charged_back >= held then
      target := 'refunded';
    end if;
    -- on top of what was charged back; a figure that counted it too is held to what arrived
    new_refunded := greatest(p.refunded_amount, least(held, u.refunded_amount + charged_back));
    if target = 'partially_refunded' and new_refunded >= held and p.status = 'disputed' then
      target := 'disputed';  -- a smaller refund reported after all of it went back: nothing new
    end if;
  elsif target = 'refunded' then
    if u.refunded_amount > held then
      refuse_kind := 'refund_exceeds_received';
    elsif u.refunded_amount > 0 and u.refunded_amount + charged_back < held then
      -- "refunded" by the provider's count, not by ours: only that much went back
      target := 'partially_refunded';
      new_refunded := greatest(p.refunded_amount, u.refunded_amount + charged_back);
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
  if refuse_kind is null and excess_why is null and not books_chargeback and charged_back > 0
     and target in ('refunded', 'partially_refunded') and u.refunded_amount + charged_back > held then
    -- the same money the other way round: a refund made before the dispute, its news reaching us after
    -- the chargeback (Stripe's charge.refunded after charge.dispute.closed, or a read). Refunded up to
    -- what arrived; what the refunds took of what the chargeback had taken already went out twice. Said
    -- as refunded whether a read (disputed, the charge's flag) or the refund's event brought it, so the
    -- two are one discrepancy
    left_to_take := held - charged_back;
    excess_amount := u.refunded_amount;
    excess_news := u;
    excess_news.status := 'refunded';
    excess_why := format('%s reports %s %s refunded of payment %s after %s were charged back; it received %s %s: %s %s went out twice',
                         p.provider, u.refunded_amount, held_currency, p.id, charged_back, held, held_currency,
                         u.refunded_amount - left_to_take, held_currency);
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
    if books_chargeback then
      -- post_payment_refund books the growth as this dispute's chargeback, once per dispute
      perform set_config('reserve.charged_back_dispute', coalesce(u.dispute_id, '-'), true);
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
    perform set_config('reserve.charged_back_dispute', '', true);
    r.outcome := 'applied';
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

  if excess_why is not null and r.outcome <> 'ignored' then
    -- whether or not the payment moved: a dispute lost on a payment refunded in full books nothing (all of
    -- it went back already) and leaves it as it was, yet the money went out twice; so does a refund's news
    -- after a chargeback of all of it. Once per dispute's news
    -- (record_money_discrepancy's fingerprint), whichever path brought it and however often
    perform reserve.record_money_discrepancy(p, 'dispute_exceeds_received', p_source, excess_news, excess_why, left_to_take, held_currency,
                                             excess_amount, held_currency, p_webhook_id);
  end if;

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
$function$
;

comment on function reserve.apply_payment_status(p_payment_id uuid, p_update reserve.provider_update, p_webhook_id uuid, p_on_illegal text, p_source text) is 'The one way a payment changes status (webhooks, poller, recovery, replay, operators), from the provider''s normalized update. A success must carry amount_received and currency: our price confirms the stay (finalized in the same transaction); anything else is booked as received and owed back (refund_reason amount_mismatch, a refund queued, a money discrepancy: P1). Refunds and disputes beyond the money received, or in another currency, are refused (outcome refused, nothing moves, a discrepancy); a lost dispute that with earlier refunds exceeds it is booked up to it, and its excess is a dispute_exceeds_received discrepancy even when nothing moves. Otherwise outcome applied, unchanged, stale (older than the last applied event) or ignored (illegal move with p_on_illegal = ignore; with raise it is RC202). p_source names the path for the records.';
revoke all on function reserve.apply_payment_status(p_payment_id uuid, p_update reserve.provider_update, p_webhook_id uuid, p_on_illegal text, p_source text) from public, anon, authenticated;
grant execute on function reserve.apply_payment_status(p_payment_id uuid, p_update reserve.provider_update, p_webhook_id uuid, p_on_illegal text, p_source text) to service_role;
