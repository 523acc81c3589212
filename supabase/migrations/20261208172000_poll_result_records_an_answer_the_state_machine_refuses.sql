-- record_poll_result caught an answer check_provider_update refuses, but not one apply_payment_status
-- refuses (RC001: a success without amount_received or currency, a partial refund without its amount):
-- the whole poll failed, nothing was recorded, and the payment came due again as its lease ran out, its
-- provider asked again and again with no backoff and no last_result for an operator. Such an answer is
-- now the poll's error (last_result 'error: the provider''s answer cannot be applied: ...'), with backoff.
CREATE OR REPLACE FUNCTION reserve.record_poll_result(p_payment_id uuid, p_update reserve.provider_update DEFAULT NULL::reserve.provider_update, p_poll_error text DEFAULT NULL::text)
 RETURNS reserve.poll_result
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  u reserve.provider_update;
  p reserve.payments;
  pol reserve.poll_policies;
  a reserve.payment_status_change;
  r reserve.poll_result;
  deadline timestamptz;
  tries integer;
  why text;
begin
  if p_payment_id is null then
    raise exception using errcode = 'RC001', message = 'p_payment_id is required';
  end if;
  -- an answer the database would refuse is this poll's error, not the run's
  begin
    u := reserve.check_provider_update(p_update);
  exception when sqlstate 'RC001' then
    get stacked diagnostics why = message_text;
    p_poll_error := coalesce(p_poll_error, 'the provider''s answer cannot be applied: ' || why);
    u := null;
    why := null;
  end;
  -- the bucket before any row, so that a wait for it holds none
  if coalesce(pg_catalog.current_setting('reserve.balance_bucket', true), '') = '' then
    perform reserve.claim_balance_bucket();
  end if;
  select * into p from reserve.payments x where x.id = p_payment_id;
  if p.id is not null and p.gateway_payment_id is null and u.gateway_payment_id is not null then
    select * into p from reserve.payments x where x.id = p_payment_id for update;  -- a key column may be written
  else
    p := reserve.lock_payment(p_payment_id);
  end if;
  r.payment_id := p.id;
  r.outcome := 'unchanged';
  if p_poll_error is null and u.status is not null then
    begin
      if p.gateway_payment_id is null and u.gateway_payment_id is not null then
        why := reserve.attach_provider_payment(p, u, 'poll');
        if why is not null then
          r.outcome := 'refused';
        end if;
      end if;
      if r.outcome <> 'refused' then
        a := reserve.apply_payment_status(p.id, u, null, 'ignore', 'poll');
        r.outcome := a.outcome;
        r.reservation_id := a.reservation_id;
        r.confirmation_code := a.confirmation_code;
        r.finalize_outcome := a.finalize_outcome;
      end if;
    exception when sqlstate 'RC001' then
      -- an answer the state machine cannot apply (a success that does not say what arrived) is this
      -- poll's error too, undone whole: raised, the poll was never recorded and came due again forever
      get stacked diagnostics why = message_text;
      p_poll_error := 'the provider''s answer cannot be applied: ' || why;
      why := null;
      a := null;
      r.outcome := 'unchanged';
      r.reservation_id := null;
      r.confirmation_code := null;
      r.finalize_outcome := null;
    end;
    p := reserve.lock_payment(p.id);
  end if;

  if p.status = 'pending' and p_poll_error is null and coalesce(u.status, 'pending') = 'pending' then
    select * into pol from reserve.poll_policies x where x.provider = p.provider and x.method = p.method;
    select coalesce(case when p.method = 'pix' then p.expires_at end, bi.expires_at) + pol.expire_grace
      into deadline from reserve.booking_intents bi where bi.id = p.booking_intent_id;
    if p.gateway_payment_id is null and p.created_at < now() - interval '10 minutes' then
      -- the checkout died between recording the attempt and hearing from the provider: the guest never
      -- saw a client secret or a QR code, so nothing can be paid on it
      perform reserve.abort_checkout(p.id, 'checkout_incomplete', 'the provider''s answer was never recorded');
      r.outcome := 'expired';
    elsif deadline <= now() then
      -- this poll was the last check: the provider still says unpaid
      perform reserve.apply_payment_status(p.id, reserve.status_update('expired', u.gateway_status, null, null, u.provider_object),
                                           null, 'ignore', 'poll');
      -- the hold ends now, the intent is not cancelled: a PIX paid late is still honoured if the
      -- nights are free (finalize re-holds them); release_expired_holds frees them in this run
      if not exists (select 1 from reserve.payments x
                     where x.booking_intent_id = p.booking_intent_id and x.status in ('pending', 'processing')) then
        update reserve.booking_intents bi set expires_at = least(bi.expires_at, now())
        where bi.id = p.booking_intent_id and bi.status = 'pending';
        update reserve.booking_locks l set expires_at = least(l.expires_at, now())
        where l.booking_intent_id = p.booking_intent_id and l.status = 'held';
      end if;
      r.outcome := 'expired';
    end if;
    p := reserve.lock_payment(p.id);
  end if;

  r.status := p.status;
  if p.status in ('pending', 'processing') then
    select * into pol from reserve.poll_policies x where x.provider = p.provider and x.method = p.method;
    select pp.attempts into tries from reserve.payment_polls pp where pp.payment_id = p.id;
    update reserve.payment_polls pp
    set next_poll_at = now() + least(pol.max_interval, pol.base_interval * power(2, least(greatest(coalesce(tries, 1) - 1, 0), 20))::integer),
        last_result = left(coalesce('error: ' || p_poll_error, 'refused: ' || why, u.gateway_status, u.status), 1000)
    where pp.payment_id = p.id
    returning pp.next_poll_at into r.next_poll_at;
  end if;
  return r;
end
$function$
;
