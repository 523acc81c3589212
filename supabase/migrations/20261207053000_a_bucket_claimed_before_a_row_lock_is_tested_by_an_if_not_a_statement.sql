-- A path that posts claimed its balance bucket before its first row lock with a PERFORM ... WHERE on the
-- setting, a statement each (an executor start-up, counted by pg_stat_statements) even when the bucket was
-- claimed already: a webhook's success ran five of them, 85 -> 90 statements a finalize. An IF on the
-- setting is an expression PL/pgSQL evaluates without the executor; the claim is the same.

CREATE OR REPLACE FUNCTION reserve.lock_webhook_for_apply(p_webhook_id uuid, p_skip_locked boolean DEFAULT false)
 RETURNS reserve.processed_webhooks
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  w reserve.processed_webhooks;
  pid uuid;
begin
  select * into w from reserve.processed_webhooks x where x.id = p_webhook_id;
  if not found then
    raise exception using errcode = 'RC209', message = format('webhook %s not found', p_webhook_id);
  end if;
  pid := (w.apply_args ->> 'payment_id')::uuid;
  -- the bucket before any row, so that a wait for it holds none
  if coalesce(pg_catalog.current_setting('reserve.balance_bucket', true), '') = '' then
    perform reserve.claim_balance_bucket();
  end if;
  if pid is not null then
    if p_skip_locked then
      perform 1 from reserve.payments x where x.id = pid for update skip locked;
      if not found then
        return null;
      end if;
    else
      perform 1 from reserve.payments x where x.id = pid for update;
    end if;
  end if;
  if p_skip_locked then
    select * into w from reserve.processed_webhooks x where x.id = p_webhook_id for no key update skip locked;
    if not found then
      return null;
    end if;
  else
    select * into w from reserve.processed_webhooks x where x.id = p_webhook_id for no key update;
  end if;
  return w;
end
$function$;

CREATE OR REPLACE FUNCTION reserve.lock_payment(p_payment_id uuid)
 RETURNS reserve.payments
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  p reserve.payments;
begin
  -- the bucket before any row, so that a wait for it holds none
  if coalesce(pg_catalog.current_setting('reserve.balance_bucket', true), '') = '' then
    perform reserve.claim_balance_bucket();
  end if;
  select * into p from reserve.payments where id = p_payment_id for no key update;
  if not found then
    raise exception using errcode = 'RC201', message = format('payment %s does not exist', p_payment_id);
  end if;
  return p;
end
$function$;

CREATE OR REPLACE FUNCTION reserve.lock_payment_of_reservation(p_reservation_id uuid)
 RETURNS void
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
begin
  -- the bucket before any row, so that a wait for it holds none
  if coalesce(pg_catalog.current_setting('reserve.balance_bucket', true), '') = '' then
    perform reserve.claim_balance_bucket();
  end if;
  perform 1 from reserve.payments p
  where p.id = (select r.payment_id from reserve.reservations r where r.id = p_reservation_id)
  for no key update;
end
$function$;

CREATE OR REPLACE FUNCTION reserve.lock_reconciliation_run(p_run_id uuid)
 RETURNS reserve.reconciliation_runs
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  r reserve.reconciliation_runs;
begin
  -- the bucket before any row, so that a wait for it holds none
  if coalesce(pg_catalog.current_setting('reserve.balance_bucket', true), '') = '' then
    perform reserve.claim_balance_bucket();
  end if;
  select * into r from reserve.reconciliation_runs where id = p_run_id for update;
  if not found then
    raise exception using errcode = 'RC802', message = format('reconciliation run %s does not exist', coalesce(p_run_id::text, 'null'));
  end if;
  if r.status <> 'running' then
    raise exception using errcode = 'RC803', message = format('reconciliation run %s is already %s', r.id, r.status);
  end if;
  return r;
end
$function$;

CREATE OR REPLACE FUNCTION reserve.lock_correction(p_correction_id uuid)
 RETURNS reserve.ledger_corrections
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  c reserve.ledger_corrections;
begin
  -- the bucket before any row, so that a wait for it holds none
  if coalesce(pg_catalog.current_setting('reserve.balance_bucket', true), '') = '' then
    perform reserve.claim_balance_bucket();
  end if;
  select * into c from reserve.ledger_corrections where id = p_correction_id for no key update;
  if not found then
    raise exception using errcode = 'RC406', message = format('ledger correction %s does not exist', p_correction_id);
  end if;
  return c;
end
$function$;

CREATE OR REPLACE FUNCTION reserve.post_ledger_lines(p_kind text, p_description text, p_entries jsonb, p_lines reserve.ledger_line[], p_idempotency_key text, p_payment_id uuid, p_reservation_id uuid, p_city_code text, p_reverses uuid)
 RETURNS reserve.ledger_transactions
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  tx reserve.ledger_transactions;
  hash text;
begin
  perform reserve.assert_lines_balanced(p_lines, 'ledger transaction ' || coalesce(p_idempotency_key, '(no key)'));

  -- over the legs as the caller gave them: a replay with the same key and other legs is refused
  hash := md5(jsonb_build_array(p_kind, p_description, p_entries, p_payment_id, p_reservation_id, p_city_code, p_reverses)::text);
  -- the bucket before the transaction's row (when no entry point claimed it), so that a wait for it holds none
  if coalesce(pg_catalog.current_setting('reserve.balance_bucket', true), '') = '' then
    perform reserve.claim_balance_bucket();
  end if;
  perform set_config('reserve.ledger_writer', 'on', true);
  insert into reserve.ledger_transactions (kind, description, payment_id, reservation_id, city_code, reverses,
                                           idempotency_key, request_hash, created_by)
  values (p_kind, p_description, p_payment_id, p_reservation_id, p_city_code, p_reverses,
          p_idempotency_key, hash, reserve.current_actor())
  on conflict (idempotency_key) do nothing
  returning * into tx;

  if tx.id is null then
    perform set_config('reserve.ledger_writer', '', true);
    select * into tx from reserve.ledger_transactions where idempotency_key = p_idempotency_key;
    if tx.request_hash is distinct from hash then
      raise exception using errcode = 'RC405',
        message = format('idempotency key %s was already used for ledger transaction %s with other arguments',
                         p_idempotency_key, tx.id);
    end if;
    return tx;
  end if;

  perform reserve.write_ledger_lines(tx, p_lines);
  return tx;
end
$function$;

CREATE OR REPLACE FUNCTION reserve.attach_gateway_payment(p_payment_id uuid, p_update reserve.provider_update)
 RETURNS reserve.payments
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  u reserve.provider_update;
  p reserve.payments;
  why text;
begin
  if p_payment_id is null or p_update is null or coalesce(p_update.gateway_payment_id, '') = '' then
    raise exception using errcode = 'RC001', message = 'p_payment_id and the update''s gateway_payment_id are required';
  end if;
  u := reserve.check_provider_update(p_update);
  -- the bucket before any row, so that a wait for it holds none
  if coalesce(pg_catalog.current_setting('reserve.balance_bucket', true), '') = '' then
    perform reserve.claim_balance_bucket();
  end if;
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
$function$;

CREATE OR REPLACE FUNCTION reserve.recover_payment(p_payment_id uuid, p_update reserve.provider_update, p_reason text)
 RETURNS reserve.payment_status_change
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  who text := reserve.require_operator('recover_payment', p_reason);
  u reserve.provider_update := reserve.check_provider_update(p_update);
  p reserve.payments;
  a reserve.payment_status_change;
  why text;
begin
  if u.status is null then
    raise exception using errcode = 'RC001',
      message = format('recover_payment %s: the update needs the status the provider shows', coalesce(p_payment_id::text, 'null'));
  end if;
  u.gateway_status := coalesce(u.gateway_status, 'manual:' || u.status);
  -- the bucket before any row, so that a wait for it holds none
  if coalesce(pg_catalog.current_setting('reserve.balance_bucket', true), '') = '' then
    perform reserve.claim_balance_bucket();
  end if;
  select * into p from reserve.payments x where x.id = p_payment_id for update;
  if not found then
    raise exception using errcode = 'RC201', message = format('payment %s does not exist', p_payment_id);
  end if;
  if p.gateway_payment_id is null and u.gateway_payment_id is not null then
    why := reserve.attach_provider_payment(p, u, 'recovery');
    if why is not null then
      a.payment_id := p.id;
      a.previous_status := p.status;
      a.status := p.status;
      a.outcome := 'refused';
      a.finalize_error := why;
      return a;
    end if;
  end if;
  -- the same state machine as webhooks and the poller; an illegal move is refused (RC202)
  a := reserve.apply_payment_status(p.id, u, null, 'raise', 'recovery');
  -- a repeat changes nothing, not even the note
  if a.outcome = 'applied' then
    update reserve.payments x
    set metadata = x.metadata || jsonb_build_object('manual_recovery', jsonb_build_object(
          'by', who, 'reason', p_reason, 'provider_status', u.status, 'amount_received', u.amount_received,
          'currency', u.currency, 'at', now()))
    where x.id = a.payment_id;
    if a.status in ('failed', 'cancelled', 'expired') then
      perform reserve.release_intent_if_idle(p.booking_intent_id, 'payment_' || a.status || '_by_operator');
    end if;
  end if;
  return a;
end
$function$;

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
$function$;

CREATE OR REPLACE FUNCTION reserve.record_provider_payout(p_provider text, p_payout reserve.provider_payout)
 RETURNS reserve.provider_payouts
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  o reserve.provider_payout;
  x reserve.provider_payouts;
  bank text;
  tx reserve.ledger_transactions;
begin
  if p_provider is null or p_provider not in ('stripe', 'mercadopago', 'openpix') then
    raise exception using errcode = 'RC001', message = format('provider %s is unknown', coalesce(p_provider, 'null'));
  end if;
  o := reserve.check_provider_payout(p_payout);
  -- the bucket before any row, so that a wait for it holds none
  if coalesce(pg_catalog.current_setting('reserve.balance_bucket', true), '') = '' then
    perform reserve.claim_balance_bucket();
  end if;
  insert into reserve.provider_payouts as y (provider, provider_payout_id, amount, currency, status, provider_created_at,
                                             arrival_at, provider_object)
  values (p_provider, o.payout_id, o.amount, o.currency, o.status, o.created_at, o.arrival_at, o.provider_object)
  on conflict (provider, provider_payout_id) do update
    set status = excluded.status, arrival_at = coalesce(excluded.arrival_at, y.arrival_at),
        provider_object = coalesce(excluded.provider_object, y.provider_object), updated_at = now()
    where (y.status, y.arrival_at, y.provider_object) is distinct from
          (excluded.status, coalesce(excluded.arrival_at, y.arrival_at), coalesce(excluded.provider_object, y.provider_object))
  returning * into x;
  -- the row as it is, locked, whether this call changed it or not
  select * into x from reserve.provider_payouts where provider = p_provider and provider_payout_id = o.payout_id for update;
  if (x.amount, x.currency) is distinct from (o.amount, o.currency) then
    raise exception using errcode = 'RC801',
      message = format('%s payout %s was %s %s, now said to be %s %s: a payout''s amount never changes',
                       p_provider, o.payout_id, x.amount, x.currency, o.amount, o.currency);
  end if;
  bank := reserve.bank_account(x.currency);
  if x.status = 'paid' and x.paid_transaction_id is null then
    tx := reserve.post_ledger_transaction('provider_payout',
      format('%s payout %s to the bank: %s %s', p_provider, x.provider_payout_id, x.amount, x.currency),
      jsonb_build_array(reserve.ledger_leg(bank, 'debit', x.amount, 'payout', x.currency),
                        reserve.ledger_leg(reserve.receivable_account(p_provider), 'credit', x.amount, 'payout', x.currency)),
      format('payout:%s:%s', p_provider, x.provider_payout_id));
    update reserve.provider_payouts set paid_transaction_id = tx.id where id = x.id returning * into x;
  elsif x.status in ('failed', 'canceled') and x.paid_transaction_id is not null and x.reversal_transaction_id is null then
    -- a payout can fail after it was reported paid: the money comes back to our balance at the provider
    tx := reserve.post_ledger_transaction('reversal',
      format('%s payout %s %s: %s %s back at the provider', p_provider, x.provider_payout_id, x.status, x.amount, x.currency),
      jsonb_build_array(reserve.ledger_leg(reserve.receivable_account(p_provider), 'debit', x.amount, 'reversal', x.currency),
                        reserve.ledger_leg(bank, 'credit', x.amount, 'reversal', x.currency)),
      format('payout_reversal:%s:%s', p_provider, x.provider_payout_id), null, null, null, x.paid_transaction_id);
    update reserve.provider_payouts set reversal_transaction_id = tx.id where id = x.id returning * into x;
  end if;
  return x;
end
$function$;

CREATE OR REPLACE FUNCTION reserve.process_webhook_event(p_event reserve.webhook_event, p_update reserve.provider_update DEFAULT NULL::reserve.provider_update)
 RETURNS reserve.webhook_result
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  e reserve.webhook_event := p_event;
  u reserve.provider_update;
  w reserve.processed_webhooks;
  k reserve.processed_webhook_keys;
  p reserve.payments;
  state text;
  msg text;
  args jsonb;
  handled reserve.webhook_result;
  res reserve.webhook_result;
  is_new boolean;
  attempts integer := 1;
begin
  if e is null or e.provider is null or e.provider not in ('stripe', 'mercadopago', 'openpix') then
    raise exception using errcode = 'RC206', message = format('unknown webhook provider %s', coalesce(e.provider, 'null'));
  end if;
  if coalesce(e.event_id, '') = '' or coalesce(e.event_type, '') = '' then
    raise exception using errcode = 'RC001', message = format('%s webhook: event id and type are required', e.provider);
  end if;
  e.event_id := reserve.bounded_webhook_key(e.event_id);
  e.event_type := reserve.bounded_webhook_key(e.event_type);
  if e.payload is not null and jsonb_typeof(e.payload) <> 'object' then
    e.payload := jsonb_build_object('payload', e.payload);
  end if;
  if e.lookup is not null and jsonb_typeof(e.lookup) <> 'object' then
    e.lookup := null;
  end if;

  -- a delivery of an event already completed or ignored: answered from a read, before anything is
  -- locked or written (no transaction id, no WAL, no commit flush), by the read the edge asks first
  for handled in select * from reserve.handled_webhook_event(e.provider, e.event_id) loop
    return handled;
  end loop;
  -- a signed event is recorded even when what it says cannot be applied: then it is dead (an alert)
  begin
    u := reserve.check_provider_update(p_update);
  exception when sqlstate 'RC001' then
    get stacked diagnostics msg = message_text;
    e.poison := coalesce(e.poison, msg);
    u := null;
  end;
  msg := null;

  -- the payment the event names: our id (metadata, external_reference, correlationID), the provider's,
  -- or the PIX endToEndId of its money. It is locked before the event row is written: that row's foreign
  -- key takes a KEY SHARE lock on the payment, and taking the payment's lock after it deadlocked with the
  -- checkout's attach and with a second event. FOR UPDATE where this event may record the provider's id.
  if e.poison is null and u.status is not null then
    if coalesce(pg_catalog.current_setting('reserve.balance_bucket', true), '') = '' then
      perform reserve.claim_balance_bucket();
    end if;
    if u.payment_reference is not null then
      select * into p from reserve.payments x where x.id = u.payment_reference;
    end if;
    if p.id is null and u.gateway_payment_id is not null then
      select * into p from reserve.payments x where x.provider = e.provider and x.gateway_payment_id = u.gateway_payment_id;
    end if;
    if p.id is null and u.end_to_end_id is not null then
      select * into p from reserve.payments x where x.provider = e.provider and x.pix_end_to_end_id = u.end_to_end_id
      order by x.created_at desc limit 1;
    end if;
    if p.id is not null then
      if p.gateway_payment_id is null and u.gateway_payment_id is not null then
        select * into p from reserve.payments x where x.id = p.id for update;
      else
        select * into p from reserve.payments x where x.id = p.id for no key update;
      end if;
    end if;
  end if;

  -- what is applied is decided before the row is written, from what the event says and the payment it
  -- names (the same tests as the branches below, save the attempts count, which only failed events
  -- read): the row is written once with its apply_args, not written and then updated
  if e.poison is null and e.processing_error is null and u.status is not null and p.id is not null
     and p.provider = e.provider
     and not (p.gateway_payment_id is not null and u.gateway_payment_id is not null
              and p.gateway_payment_id <> u.gateway_payment_id) then
    args := jsonb_strip_nulls(to_jsonb(u)) || jsonb_build_object('payment_id', p.id);
  end if;

  -- concurrent deliveries of one event queue on its key: the first to commit decides, later ones see
  -- completed or ignored and do nothing, and a failed (or dead) one is taken up again. A new event's row
  -- is written once, below, with its outcome: the key gives its id, and applying reads no event row.
  insert into reserve.processed_webhook_keys as pk (provider, event_id)
  values (e.provider, e.event_id)
  on conflict (provider, event_id) do nothing
  returning * into k;
  is_new := found;
  if not is_new then
    select * into k from reserve.processed_webhook_keys x where x.provider = e.provider and x.event_id = e.event_id;
    update reserve.processed_webhooks pw
    set attempts = pw.attempts + 1, last_attempt_at = now(), status = 'processing', error_message = null,
        payment_id = coalesce(p.id, pw.payment_id), payload = coalesce(e.payload, pw.payload),
        lookup = coalesce(e.lookup, pw.lookup), apply_args = coalesce(args, pw.apply_args)
    where pw.id = k.webhook_id and pw.received_at = k.received_at and pw.status in ('processing', 'failed', 'dead')
    returning * into w;

    if w.id is null then
      select * into w from reserve.processed_webhooks x where x.id = k.webhook_id and x.received_at = k.received_at;
      if not found then
        return row(k.webhook_id, k.provider, k.event_id, 'completed', true, 1, null, 'duplicate', null, null, null, null,
                   'the record of this event is past retention')::reserve.webhook_result;
      end if;
      return row(w.id, w.provider, w.event_id, w.status, true, w.attempts, w.payment_id, 'duplicate',
                 (select x.status from reserve.payments x where x.id = w.payment_id), null, null, null,
                 w.error_message)::reserve.webhook_result;
    end if;
    attempts := w.attempts;
  end if;

  if e.poison is not null then
    state := 'dead';
    msg := format('cannot be applied: %s', e.poison);
  elsif e.processing_error is not null then
    state := case when attempts >= reserve.setting_int('max_webhook_attempts') then 'dead' else 'failed' end;
    msg := e.processing_error;
  elsif u.status is null then
    state := 'ignored';
    msg := coalesce(e.note, format('event type %s is not acted on', e.event_type));
  elsif p.id is null then
    -- an event for a payment we never made (another integration on the same account) is not ours to retry
    state := 'ignored';
    msg := format('no %s payment %s%s', e.provider, coalesce(u.gateway_payment_id, u.end_to_end_id, '?'),
                  coalesce(' (payment_id ' || u.payment_reference || ')', ''));
  elsif p.provider <> e.provider then
    state := 'ignored';
    msg := format('payment %s belongs to %s, not %s', p.id, p.provider, e.provider);
  elsif p.gateway_payment_id is not null and u.gateway_payment_id is not null and p.gateway_payment_id <> u.gateway_payment_id then
    -- a second provider payment carrying our reference is never applied to ours: it may be money we
    -- must find, so it is dead at once (an alert), not ignored and not retried
    state := 'dead';
    msg := format('%s %s names payment %s, which is %s: a second provider payment for one attempt; investigate',
                  e.provider, u.gateway_payment_id, p.id, p.gateway_payment_id);
  else
    -- what its row stores, as a replay or a retry reads it (webhook_update_of), so every path applies one update
    -- the changes it makes (payment, intent, reservation) are written as one audit row, once, by
    -- write_held_audit, not inserted at the first and rewritten at commit
    perform set_config('reserve.audit_held', pg_current_xact_id()::text, true);
    res := reserve.apply_event_update(k.webhook_id, attempts, p.id, reserve.webhook_update_of(args), 'webhook');
    perform set_config('reserve.audit_held', '', true);
    perform reserve.write_held_audit();
    state := res.webhook_status;
    msg := res.error_message;
  end if;

  if is_new then
    insert into reserve.processed_webhooks as pw
      (id, received_at, provider, event_id, event_type, payment_id, gateway_payment_id, event_created_at, payload, lookup,
       apply_args, status, error_message, processed_at, next_retry_at)
    values (k.webhook_id, k.received_at, e.provider, e.event_id, e.event_type, p.id,
            left(coalesce(u.gateway_payment_id, p.gateway_payment_id), 255), coalesce(u.event_at, e.event_at), e.payload, e.lookup,
            args, state, msg, now(), case when state = 'failed' then reserve.webhook_retry_at(attempts) end)
    returning * into w;
  else
    update reserve.processed_webhooks x
    set status = state, error_message = msg, processed_at = now(),
        next_retry_at = case when state = 'failed' then reserve.webhook_retry_at(w.attempts) end
    where x.id = w.id and x.received_at = w.received_at
    returning * into w;
  end if;

  if res.webhook_id is not null then
    return row(w.id, w.provider, w.event_id, w.status, false, w.attempts, w.payment_id, res.outcome, res.payment_status,
               res.reservation_id, res.confirmation_code, res.finalize_outcome, w.error_message)::reserve.webhook_result;
  end if;
  return row(w.id, w.provider, w.event_id, w.status, false, w.attempts, w.payment_id,
             case when state = 'ignored' then 'ignored' else 'failed' end, p.status, null, null, null,
             w.error_message)::reserve.webhook_result;
end
$function$;
