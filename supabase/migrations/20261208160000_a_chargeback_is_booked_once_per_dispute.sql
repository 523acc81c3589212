-- A lost dispute for less than what was left of a charge left the payment partially_refunded, and Stripe
-- says `disputed` of that charge for ever: the next read of it (the poller confirming a refund) moved
-- the payment back to disputed, and reconciliation's dispute listing, seeing it lost on a disputed
-- payment, charged it back a second time. The opening webhook delivered after the closing one did the
-- same. Its chargeback was booked as a refund besides (only disputed -> refunded was a chargeback), and a
-- lost dispute listed on a payment that was not disputed (refunded in part first, its webhooks lost) was
-- never booked at all.
--
-- Now a chargeback is booked once per dispute: provider updates name the dispute (dispute_id), its
-- chargeback is the ledger transaction 'chargeback:<dispute_id>', and news of a dispute already charged
-- back moves nothing (stale). A read saying disputed with no dispute named, of a payment a dispute was
-- charged back from, is the charge's flag, not a dispute: it says only its refunds. Reconciliation books a
-- lost dispute whatever the payment's state, once. And the provider's refunded figure, which never counts
-- chargebacks, is compared with ours less them (payment_charged_back; one that counted them is held to
-- what arrived): a refund after a chargeback is booked in full and confirms its request, and a
-- chargeback never confirms a refund we sent.
--
-- A partial dispute lost before this migration was booked under 'refund:<payment>:<amount>'. One that
-- reconciliation had already recorded closed is left as it is; one it never saw closed, on a payment not
-- disputed now, would be charged back again by the next run: look for them before deploying.

alter type reserve.provider_update add attribute dispute_id text;
comment on type reserve.provider_update is 'What a provider says about one payment, normalized: status (our payment status), gateway_payment_id (the provider''s id), payment_reference (our payments.id as the provider echoes it: metadata payment_id, external_reference, correlationID), end_to_end_id (the PIX endToEndId), amount and currency (what the provider''s payment is for, minor units), amount_received (the money it says it received), refunded_amount (cumulative, the provider''s refunds: never what disputes took), dispute_amount, dispute_id (the provider''s dispute the news is about: its chargeback is booked once), fee_amount, refunds ([{refund_id, amount, status, end_to_end_id}]), event_at (the provider''s time of the news), gateway_status, error_code, error_message and the provider''s object as evidence. Null means the provider did not say.';

CREATE OR REPLACE FUNCTION reserve.payment_charged_back(p_payment_id uuid)
 RETURNS bigint
 LANGUAGE sql
 STABLE
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
  select coalesce(sum(e.amount), 0)::bigint
  from reserve.payments p
  join reserve.ledger_transactions t on t.payment_id = p.id and t.kind = 'chargeback'
  join reserve.ledger_entries e on e.transaction_id = t.id and e.account = reserve.receivable_account(p.provider) and e.direction = 'credit'
  where p.id = p_payment_id
$function$
;
comment on function reserve.payment_charged_back(p_payment_id uuid) is 'What lost disputes took of a payment (its chargebacks, from the provider''s receivable): counted in payments.refunded_amount, never in a provider''s refunded figure.';
revoke all on function reserve.payment_charged_back(p_payment_id uuid) from public, anon, authenticated;
grant execute on function reserve.payment_charged_back(p_payment_id uuid) to service_role;

CREATE OR REPLACE FUNCTION reserve.as_provider_update(p jsonb)
 RETURNS reserve.provider_update
 LANGUAGE plpgsql
 STABLE STRICT
 SET search_path TO ''
AS $function$
begin
  perform reserve.json_record_keys_check(p, 'provider update',
    array['status', 'gateway_payment_id', 'payment_reference', 'end_to_end_id', 'amount', 'currency', 'amount_received',
          'refunded_amount', 'dispute_amount', 'fee_amount', 'refunds', 'event_at', 'gateway_status', 'error_code',
          'error_message', 'provider_object', 'dispute_id'],
    array['string', 'string', 'uuid', 'string', 'integer', 'string', 'integer', 'integer', 'integer', 'integer',
          'array', 'timestamptz', 'string', 'string', 'string', 'object', 'string']);
  return reserve.check_provider_update(jsonb_populate_record(null::reserve.provider_update, p));
end
$function$
;

CREATE OR REPLACE FUNCTION reserve.check_provider_update(p reserve.provider_update)
 RETURNS reserve.provider_update
 LANGUAGE plpgsql
 IMMUTABLE
 SET search_path TO ''
AS $function$
declare
  bad text;
begin
  if p.status is not null and p.status not in ('pending', 'processing', 'succeeded', 'failed', 'cancelled', 'expired',
                                               'refunded', 'partially_refunded', 'disputed') then
    bad := format('status %s is not a payment status', p.status);
  elsif p.currency is not null and p.currency !~ '^[A-Z]{3}$' then
    bad := format('currency %s is not an ISO 4217 code like BRL', p.currency);
  elsif least(p.amount, p.amount_received, p.refunded_amount, p.dispute_amount, p.fee_amount) < 0
        or greatest(p.amount, p.amount_received, p.refunded_amount, p.dispute_amount, p.fee_amount) > 9007199254740991 then
    bad := 'amounts are whole minor units between 0 and 2^53 - 1';
  elsif length(p.gateway_payment_id) not between 1 and 255 then
    bad := 'gateway_payment_id is 1..255 characters';
  elsif length(p.dispute_id) not between 1 and 255 then
    bad := 'dispute_id is 1..255 characters';
  elsif length(p.end_to_end_id) not between 1 and 64 then
    bad := 'end_to_end_id is 1..64 characters';
  elsif length(p.gateway_status) > 255 or length(p.error_code) > 255 or length(p.error_message) > 2000 then
    bad := 'gateway_status and error_code are at most 255 characters, error_message 2000';
  elsif p.refunds is not null and jsonb_typeof(p.refunds) <> 'array' then
    bad := 'refunds is a JSON array';
  elsif p.provider_object is not null and jsonb_typeof(p.provider_object) not in ('object', 'array') then
    bad := 'provider_object is a JSON object';
  end if;
  if bad is not null then
    raise exception using errcode = 'RC001',
      message = format('provider update%s: %s', coalesce(' for ' || p.gateway_payment_id, ''), bad);
  end if;
  return p;
end
$function$
;

CREATE OR REPLACE FUNCTION reserve.status_update(p_status text, p_gateway_status text DEFAULT NULL::text, p_error_code text DEFAULT NULL::text, p_error_message text DEFAULT NULL::text, p_provider_object jsonb DEFAULT NULL::jsonb)
 RETURNS reserve.provider_update
 LANGUAGE sql
 IMMUTABLE
 SET search_path TO ''
AS $function$
  select reserve.check_provider_update(row(p_status, null, null, null, null, null, null, null, null, null, null, null,
                                           p_gateway_status, p_error_code, p_error_message, p_provider_object, null)::reserve.provider_update)
$function$
;

CREATE OR REPLACE FUNCTION reserve.post_payment_refund()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  delta bigint := new.refunded_amount - old.refunded_amount;
  -- the lost dispute apply_payment_status is booking ('-' when its news named none), whatever status it
  -- leaves: a dispute of part of the charge is a chargeback too. Without one, disputed -> refunded is
  -- still a lost dispute, and a refund recorded while a dispute is open still a refund
  lost_dispute text := nullif(current_setting('reserve.charged_back_dispute', true), '');
  chargeback boolean := lost_dispute is not null or (old.status = 'disputed' and new.status = 'refunded');
  currency text := coalesce(new.received_currency, new.currency);
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
    legs := legs || reserve.ledger_leg('refunds_payable', 'debit', from_set_aside, 'refund', currency);
  end if;
  if rest > 0 then
    legs := legs || reserve.earned_refund_legs(new.id, rest, currency);
  end if;
  legs := legs || reserve.ledger_leg(reserve.receivable_account(new.provider), 'credit', delta, 'refund', currency);

  perform reserve.post_ledger_transaction(
    case when chargeback then 'chargeback' else 'refund' end,
    format('%s of payment %s: %s of %s %s refunded', case when chargeback then 'Chargeback' else 'Refund' end,
           new.id, new.refunded_amount, coalesce(new.received_amount, new.amount), currency),
    -- once per dispute: news of it again (a late event, a listing, a read) finds it booked
    legs, case when lost_dispute is not null and lost_dispute <> '-' then 'chargeback:' || lost_dispute
               else format('refund:%s:%s', new.id, new.refunded_amount) end, new.id, null, city);

  update reserve.reservations
  set payment_status = case when new.refunded_amount = coalesce(new.received_amount, new.amount) then 'refunded' else 'partially_refunded' end
  where payment_id = new.id;
  return null;
end
$function$
;

CREATE OR REPLACE FUNCTION reserve.confirm_sent_refunds(p_payment_id uuid)
 RETURNS void
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  covered bigint := 0;
  refunded bigint;
  rr record;
begin
  -- what went back less what lost disputes took: a chargeback never confirms a refund we sent
  select p.refunded_amount - reserve.payment_charged_back(p.id) into refunded from reserve.payments p where p.id = p_payment_id;
  -- only requests the provider took (sent) can be what it reports; one still to send is never confirmed.
  -- The total is filled with the requests the provider said went back first, then those confirmed
  -- already, then the rest, oldest first; one the provider said failed never counts, and one that does
  -- not fit is passed over (a smaller one after it may be what went back). A request confirmed by
  -- amount alone that a refund known to have gone back needs room for is sent again, so it is looked up.
  for rr in select x.id, x.amount, x.status, x.provider_refund_status as said from reserve.refund_requests x
            where x.payment_id = p_payment_id and x.status in ('sent', 'confirmed')
              and x.provider_refund_status is distinct from 'failed'
            order by x.provider_refund_status = 'succeeded' desc nulls last, x.status = 'confirmed' desc, x.created_at loop
    if covered + rr.amount <= refunded then
      covered := covered + rr.amount;
      if rr.status = 'sent' then
        update reserve.refund_requests x set status = 'confirmed', confirmed_at = coalesce(x.confirmed_at, now())
        where x.id = rr.id;
      end if;
    elsif rr.status = 'confirmed' and rr.said is distinct from 'succeeded' then
      update reserve.refund_requests x set status = 'sent', confirmed_at = null, next_attempt_at = now()
      where x.id = rr.id;
    end if;
  end loop;
end
$function$
;

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
$function$
;

CREATE OR REPLACE FUNCTION reserve.reconcile_provider_payment(p_run reserve.reconciliation_runs, p_update reserve.provider_update, OUT items integer, OUT repaired integer)
 RETURNS record
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  u reserve.provider_update := p_update;
  v reserve.provider_update;
  p reserve.payments;
  theirs jsonb;
  ours jsonb;
  paid_there boolean := reserve.provider_says_paid(u.status);
  paid_here boolean;
  a reserve.payment_status_change;
  why text;
  note text;
  i reserve.reconciliation_items;
  fee_booked boolean;
  charged_back bigint;
begin
  items := 0;
  repaired := 0;
  theirs := jsonb_strip_nulls(jsonb_build_object('status', u.status, 'gateway_status', u.gateway_status, 'amount', u.amount,
    'currency', u.currency, 'amount_received', u.amount_received, 'refunded_amount', u.refunded_amount,
    'dispute_amount', u.dispute_amount, 'fee_amount', u.fee_amount, 'payment_reference', u.payment_reference));
  insert into reserve.reconciliation_run_objects (run_id, object_id) values (p_run.id, u.gateway_payment_id) on conflict do nothing;

  select * into p from reserve.payments x where x.provider = p_run.provider and x.gateway_payment_id = u.gateway_payment_id for update;
  if not found and u.payment_reference is not null then
    select * into p from reserve.payments x where x.id = u.payment_reference and x.provider = p_run.provider for update;
    if found and p.gateway_payment_id is not null and p.gateway_payment_id <> u.gateway_payment_id then
      -- ours is another provider payment: this one is a second charge for it
      if paid_there then
        perform reserve.record_reconciliation_item(p_run, 'duplicate_charge', u.gateway_payment_id, p.id,
          jsonb_build_object('gateway_payment_id', p.gateway_payment_id, 'status', p.status, 'amount', p.amount, 'currency', p.currency),
          theirs, format('%s payment %s is a second paid charge for payment %s, which is %s at %s',
                         p_run.provider, u.gateway_payment_id, p.id, p.gateway_payment_id, p_run.provider));
        items := 1;
      end if;
      return;
    end if;
  end if;

  if p.id is null then
    if paid_there then
      perform reserve.record_reconciliation_item(p_run, 'paid_unknown', u.gateway_payment_id, null, null, theirs,
        format('%s payment %s (%s %s) is paid and names %s: no payment of ours', p_run.provider, u.gateway_payment_id,
               coalesce(u.amount_received, u.amount)::text, coalesce(u.currency, '?'),
               coalesce('payment ' || u.payment_reference::text, 'none of ours')));
      items := 1;
    end if;
    return;
  end if;

  ours := jsonb_strip_nulls(jsonb_build_object('status', p.status, 'gateway_payment_id', p.gateway_payment_id, 'amount', p.amount,
    'currency', p.currency, 'received_amount', p.received_amount, 'received_currency', p.received_currency,
    'refunded_amount', p.refunded_amount, 'fee_amount', p.fee_amount));
  paid_here := reserve.provider_says_paid(p.status) and p.gateway_payment_id is not null;
  -- before any repair, whose update may carry the fee and book it on the way
  fee_booked := exists (select 1 from reserve.ledger_transactions t where t.idempotency_key = 'fee:' || p.id);

  -- what the provider's payment is for
  if u.currency is not null and u.currency <> p.currency then
    perform reserve.record_reconciliation_item(p_run, 'currency_mismatch', u.gateway_payment_id, p.id, ours, theirs,
      format('%s payment %s is in %s, payment %s in %s', p_run.provider, u.gateway_payment_id, u.currency, p.id, p.currency));
    items := items + 1;
  elsif u.amount is not null and u.amount <> p.amount then
    perform reserve.record_reconciliation_item(p_run, 'amount_mismatch', u.gateway_payment_id, p.id, ours, theirs,
      format('%s payment %s is for %s %s, payment %s for %s %s', p_run.provider, u.gateway_payment_id, u.amount,
             coalesce(u.currency, p.currency), p.id, p.amount, p.currency));
    items := items + 1;
  end if;

  if paid_there and not paid_here then
    -- repaired as a poll would: attach the provider payment, then the state machine
    if p.gateway_payment_id is null then
      why := reserve.attach_provider_payment(p, u, 'poll');
    end if;
    if why is null then
      if u.status <> 'succeeded' then
        -- refunded or disputed since: the money arrived first, then went (back) as the update says
        v := u;
        v.status := 'succeeded';
        v.refunded_amount := null;
        v.dispute_amount := null;
        v.refunds := null;
        perform reserve.apply_payment_status(p.id, v, null, 'ignore', 'poll');
      end if;
      a := reserve.apply_payment_status(p.id, u, null, 'ignore', 'poll');
      if a.outcome = 'applied' then
        note := format('applied %s -> %s%s', a.previous_status, a.status, coalesce(', reservation ' || a.finalize_outcome, ''));
      end if;
    end if;
    i := reserve.record_reconciliation_item(p_run, 'paid_not_recorded', u.gateway_payment_id, p.id, ours, theirs,
      format('%s payment %s is %s there, payment %s is %s here%s', p_run.provider, u.gateway_payment_id, u.status, p.id, p.status,
             coalesce(': ' || why, case when a.outcome is distinct from 'applied' then format(': not applied (%s)', coalesce(a.outcome, 'no outcome')) end, '')),
      note);
    items := items + 1;
    repaired := repaired + (i.repaired_at is not null)::int;
    select * into p from reserve.payments where id = p.id;
  elsif paid_here and not paid_there then
    -- we booked money the provider does not say it has: a person looks
    perform reserve.record_reconciliation_item(p_run, 'status_mismatch', u.gateway_payment_id, p.id, ours, theirs,
      format('payment %s is %s here, %s payment %s is %s there', p.id, p.status, p_run.provider, u.gateway_payment_id, u.status));
    items := items + 1;
  elsif not paid_here and not paid_there and u.status <> p.status and u.status in ('failed', 'cancelled', 'expired')
        and p.status in ('pending', 'processing') then
    -- the provider gave up on it and we are still waiting: the poller's answer, given now
    a := reserve.apply_payment_status(p.id, u, null, 'ignore', 'poll');
    i := reserve.record_reconciliation_item(p_run, 'status_mismatch', u.gateway_payment_id, p.id, ours, theirs,
      format('%s payment %s is %s there, payment %s was %s here', p_run.provider, u.gateway_payment_id, u.status, p.id, p.status),
      case when a.outcome = 'applied' then format('applied %s -> %s', a.previous_status, a.status) end);
    items := items + 1;
    repaired := repaired + (i.repaired_at is not null)::int;
    select * into p from reserve.payments where id = p.id;
  end if;

  if paid_there and reserve.provider_says_paid(p.status) then
    -- refunds: more there is news we missed (applied); more here is money we think went back and did not
    if coalesce(u.refunded_amount, 0) + coalesce(u.dispute_amount, 0) > 0 or p.refunded_amount > 0 then
      -- our refunded_amount counts the chargebacks of lost disputes, which the provider's refunded
      -- figure does not (Stripe's amount_refunded): ours is compared less what was charged back, both
      -- ways (a refund after a chargeback is news though the provider's figure is below ours)
      charged_back := reserve.payment_charged_back(p.id);
      if coalesce(u.refunded_amount, 0) > p.refunded_amount - charged_back and u.dispute_amount is null then
        a := reserve.apply_payment_status(p.id, u, null, 'ignore', 'poll');
        i := reserve.record_reconciliation_item(p_run, 'refund_mismatch', u.gateway_payment_id, p.id, ours, theirs,
          format('%s refunded %s of payment %s, we had %s (%s of ours charged back)', p_run.provider, u.refunded_amount, p.id,
                 p.refunded_amount, charged_back),
          case when a.outcome = 'applied' then format('applied refund: %s -> %s', a.previous_status, a.status) end);
        items := items + 1;
        repaired := repaired + (i.repaired_at is not null)::int;
        select * into p from reserve.payments where id = p.id;
      else
        if coalesce(u.refunded_amount, 0) < p.refunded_amount - charged_back and u.dispute_amount is null then
          perform reserve.record_reconciliation_item(p_run, 'refund_mismatch', u.gateway_payment_id, p.id, ours, theirs,
            format('we booked %s refunded of payment %s (%s of it charged back), %s shows %s', p.refunded_amount, p.id, charged_back,
                   p_run.provider, coalesce(u.refunded_amount, 0)));
          items := items + 1;
        end if;
      end if;
    end if;
    -- the provider's fee, booked once from its own figure
    if u.fee_amount > 0 and p.received_amount is not null then
      if not fee_booked then
        perform reserve.post_provider_fee(p.id, u.fee_amount, coalesce(u.currency, p.received_currency));
        i := reserve.record_reconciliation_item(p_run, 'fee_missing', u.gateway_payment_id, p.id, ours, theirs,
          format('%s charged %s %s on payment %s, not booked', p_run.provider, u.fee_amount, coalesce(u.currency, p.received_currency), p.id),
          format('posted fee:%s', p.id));
        items := items + 1;
        repaired := repaired + 1;
      end if;
    end if;
  end if;
end
$function$
;

CREATE OR REPLACE FUNCTION reserve.reconcile_provider_disputes(p_run_id uuid, p_disputes jsonb)
 RETURNS reserve.reconciliation_runs
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  r reserve.reconciliation_runs;
  d record;
  p reserve.payments;
  a reserve.payment_status_change;
  known reserve.reconciliation_items;
  theirs jsonb;
  fee_tx reserve.ledger_transactions;
  booked_fee bigint;
  city text;
  receivable text;
  note text;
  charged boolean;
  n integer := 0;
  found_items integer := 0;
  fixed integer := 0;
begin
  if p_disputes is null or jsonb_typeof(p_disputes) <> 'array' or jsonb_array_length(p_disputes) > 10000 then
    raise exception using errcode = 'RC001', message = 'p_disputes is a JSON array of at most 10000 disputes';
  end if;
  r := reserve.lock_reconciliation_run(p_run_id);
  if coalesce(current_setting('reserve.reason', true), '') = '' then
    perform set_config('reserve.reason', format('reconciliation %s of %s', r.id, r.provider), true);
  end if;
  receivable := reserve.receivable_account(r.provider);
  for d in select * from jsonb_to_recordset(p_disputes) x(dispute_id text, gateway_payment_id text, amount bigint, currency text,
                                                          status text, withheld bigint, fee bigint, due_by timestamptz,
                                                          provider_object jsonb) loop
    if d.dispute_id is null or d.gateway_payment_id is null or d.amount is null or d.amount <= 0 or d.currency !~ '^[A-Z]{3}$'
       or d.status not in ('open', 'won', 'lost') or coalesce(d.withheld, -1) < 0 or coalesce(d.fee, -1) < 0 then
      raise exception using errcode = 'RC001',
        message = format('reconciliation %s: dispute %s needs dispute_id, gateway_payment_id, an amount, a currency, a status (open, won, lost), withheld and fee >= 0',
                         r.id, coalesce(d.dispute_id, '(no id)'));
    end if;
    n := n + 1;
    a := null;
    note := null;
    select * into known from reserve.reconciliation_items i where i.provider = r.provider and i.kind = 'dispute_open' and i.object_id = d.dispute_id;
    select * into p from reserve.payments x where x.provider = r.provider and x.gateway_payment_id = d.gateway_payment_id for update;
    -- its chargeback, booked once per dispute by whichever path saw it lost (its webhook, this listing)
    charged := exists (select 1 from reserve.ledger_transactions t where t.idempotency_key = 'chargeback:' || d.dispute_id);
    -- a dispute closed before we ever saw it open, on a payment whose state already says so, is no news:
    -- won says so of any payment but a disputed one (its dispute webhook came, the closing one did not),
    -- lost of one it was charged back from (or all of it refunded)
    if known.id is null and d.status <> 'open'
       and (p.id is null or case when d.status = 'won' then p.status <> 'disputed' else charged or p.status = 'refunded' end) and d.fee = 0 then
      continue;
    end if;

    if p.id is not null and reserve.provider_says_paid(p.status) then
      -- our payment's state as the provider's dispute webhook would have left it
      if d.status = 'open' and p.status <> 'disputed' then
        a := reserve.apply_payment_status(p.id, reserve.as_provider_update(jsonb_build_object('status', 'disputed',
               'gateway_payment_id', d.gateway_payment_id, 'dispute_id', d.dispute_id, 'dispute_amount', d.amount, 'currency', d.currency,
               'gateway_status', 'dispute_' || coalesce(d.provider_object ->> 'status', 'open'))), null, 'ignore', 'poll');
      elsif d.status = 'lost' and not charged and p.status <> 'refunded'
            and (p.status = 'disputed' or known.repaired_at is null) then
        -- charged back whatever our payment's state: partially refunded before the dispute (a read of the
        -- charge left it so) or never seen disputed. One reconciliation saw closed before its chargeback
        -- was keyed by dispute was settled then
        a := reserve.apply_payment_status(p.id, reserve.as_provider_update(jsonb_build_object('status', 'refunded',
               'gateway_payment_id', d.gateway_payment_id, 'dispute_id', d.dispute_id, 'dispute_amount', d.amount, 'currency', d.currency,
               'gateway_status', 'dispute_lost')), null, 'ignore', 'poll');
      elsif d.status = 'won' and p.status = 'disputed' then
        a := reserve.apply_payment_status(p.id, reserve.as_provider_update(jsonb_build_object('status', 'succeeded',
               'gateway_payment_id', d.gateway_payment_id, 'dispute_id', d.dispute_id, 'gateway_status', 'dispute_won')), null, 'ignore', 'poll');
      end if;
      if a.outcome = 'applied' then
        note := format('applied %s -> %s', a.previous_status, a.status);
      end if;
    end if;

    -- the dispute fee from the provider's own figure, once; given back once when the provider gives it back
    select bi.city_code into city from reserve.booking_intents bi where bi.id = p.booking_intent_id;
    select * into fee_tx from reserve.ledger_transactions t where t.idempotency_key = 'dispute_fee:' || d.dispute_id;
    if fee_tx.id is null and d.fee > 0 then
      perform reserve.post_ledger_transaction('provider_fee', format('%s dispute fee of %s (payment %s): %s %s', r.provider, d.dispute_id,
                                                                     coalesce(p.id::text, d.gateway_payment_id), d.fee, d.currency),
        jsonb_build_array(reserve.ledger_leg('provider_fees', 'debit', d.fee, 'provider_fee', d.currency),
                          reserve.ledger_leg(receivable, 'credit', d.fee, 'provider_fee', d.currency)),
        'dispute_fee:' || d.dispute_id, p.id, null, city);
      note := concat_ws('; ', note, format('posted dispute_fee:%s', d.dispute_id));
    elsif fee_tx.id is not null and d.fee = 0 then
      select * into fee_tx from reserve.ledger_transactions t where t.idempotency_key = 'dispute_fee_refund:' || d.dispute_id;
      if fee_tx.id is null then
        select sum(e.amount) into booked_fee from reserve.ledger_entries e join reserve.ledger_transactions t on t.id = e.transaction_id
        where t.idempotency_key = 'dispute_fee:' || d.dispute_id and e.direction = 'debit';
        perform reserve.post_ledger_transaction('provider_fee', format('%s gave back the dispute fee of %s (payment %s)', r.provider, d.dispute_id,
                                                                       coalesce(p.id::text, d.gateway_payment_id)),
          jsonb_build_array(reserve.ledger_leg(receivable, 'debit', booked_fee, 'provider_fee', d.currency),
                            reserve.ledger_leg('provider_fees', 'credit', booked_fee, 'provider_fee', d.currency)),
          'dispute_fee_refund:' || d.dispute_id, p.id, null, city);
        note := concat_ws('; ', note, format('posted dispute_fee_refund:%s', d.dispute_id));
      end if;
    end if;

    theirs := jsonb_strip_nulls(jsonb_build_object('dispute_id', d.dispute_id, 'gateway_payment_id', d.gateway_payment_id,
      'status', d.status, 'gateway_status', d.provider_object ->> 'status', 'reason', d.provider_object ->> 'reason',
      'amount', d.amount, 'currency', d.currency, 'withheld', d.withheld, 'fee', d.fee, 'due_by', d.due_by));
    known := reserve.record_reconciliation_item(r, 'dispute_open', d.dispute_id, p.id,
      case when p.id is not null then jsonb_build_object('payment_id', p.id, 'status', p.status, 'amount', p.amount, 'currency', p.currency) end,
      theirs,
      case d.status
        when 'open' then format('%s holds %s %s of %s in dispute %s (%s)%s: answer it with evidence', r.provider, d.withheld, d.currency,
                                coalesce('payment ' || p.id::text, d.gateway_payment_id || ', none of ours'), d.dispute_id,
                                coalesce(d.provider_object ->> 'reason', 'no reason given'), coalesce(', due by ' || d.due_by::text, ''))
        else format('dispute %s of %s is %s at %s', d.dispute_id, coalesce('payment ' || p.id::text, d.gateway_payment_id), d.status, r.provider) end,
      -- repaired once it is over: won or lost, the money is where it will stay and our books say so
      case when d.status <> 'open' then concat_ws('; ', 'dispute ' || d.status, note) end);
    found_items := found_items + 1;
    fixed := fixed + (d.status <> 'open' and known.repaired_at is not null)::int;
  end loop;
  update reserve.reconciliation_runs
  set heartbeat_at = now(), items = items + found_items, repaired = repaired + fixed
  where id = r.id
  returning * into r;
  return r;
end
$function$
;

