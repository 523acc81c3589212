-- A first delivery applies the update as its row stores it (apply_args, read back by webhook_update_of),
-- as a replay or a retry of that row does, not the in-memory update it was made from: one event, one
-- update, whichever path applies it (webhook_update_of also normalizes a lost dispute's amount).
-- processed_webhooks' comment says a new event's row is written once, with its outcome.

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
    res := reserve.apply_event_update(k.webhook_id, attempts, p.id, reserve.webhook_update_of(args), 'webhook');
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

comment on table reserve.processed_webhooks is 'One row per provider event (provider, event_id): completed, ignored (a type we do not act on), failed (with error_message; retried) or dead (gave up). A new event''s row is written once, with its outcome; processing marks a failed or dead event taken up again while it is applied (or a row an operator inserted by hand). payload is the raw event as evidence. Partitioned by month of received_at (processed_webhooks_pYYYYMM, and processed_webhooks_default for a row outside them); the (provider, event_id) unique key is held by processed_webhook_keys.';
