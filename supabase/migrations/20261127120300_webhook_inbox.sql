-- Webhook deliveries in one round trip: record the event (dedupe on provider + event_id) and apply it
-- through the payment state machine in the same transaction, so an event is marked completed only when
-- its effects committed with it. A failure is kept as status failed with the error (the apply is undone
-- by a subtransaction) and the caller answers 500 so the provider redelivers. What applying an event
-- needs (the provider's status, already reduced by the edge function) is stored with it, so a failed
-- event can be retried or replayed later without the provider (20261127130100).

alter table reserve.processed_webhooks
  add column apply_args jsonb check (apply_args is null or jsonb_typeof(apply_args) = 'object'),
  add column next_retry_at timestamptz;
comment on column reserve.processed_webhooks.apply_args is
  'What apply_payment_status needs for this event (payment, status, amounts, the provider''s object), '
  'stored on receipt so a retry or replay needs neither the provider nor the edge function. Null when '
  'the event was ignored, or failed before the provider told us the status.';
comment on column reserve.processed_webhooks.next_retry_at is
  'When a failed event is retried next (backoff 1, 2, 4 ... minutes, at most an hour); null otherwise.';

insert into reserve.settings (key, value, description) values
  ('max_webhook_attempts', '5', 'Deliveries and retries of one event before it is dead (an alert); a provider''s redelivery still processes a dead event.');

-- 1, 2, 4 ... minutes after the attempt, at most an hour: a provider outage is waited out without
-- hammering, and a bug fixed is picked up within the hour.
create function reserve.webhook_retry_at(p_attempts integer) returns timestamptz
language sql
stable
set search_path = ''
as $$ select now() + least(interval '1 hour', interval '1 minute' * power(2, least(greatest(p_attempts, 1) - 1, 10))::integer) $$;
comment on function reserve.webhook_retry_at(integer) is 'When a webhook event that failed on attempt p_attempts is retried.';
revoke all on function reserve.webhook_retry_at(integer) from public;

-- Applies a recorded event from its apply_args in a subtransaction and settles its row: completed, or
-- failed with the error (retried later) or dead past max_webhook_attempts. The caller holds the row.
create function reserve.apply_webhook_event(p_webhook_id uuid)
returns table (webhook_id uuid, webhook_status text, duplicate boolean, attempts integer, payment_id uuid,
               outcome text, payment_status text, reservation_id uuid, confirmation_code text,
               finalize_outcome text, error_message text)
language plpgsql
security definer
set search_path = ''
as $$
declare
  w reserve.processed_webhooks;
  p reserve.payments;
  args jsonb;
  status_to text;
  refunded_to bigint;
  a_outcome text;
  a_status text;
  a_reservation uuid;
  a_code text;
  a_finalize text;
  state text;
  msg text;
begin
  select * into w from reserve.processed_webhooks x where x.id = p_webhook_id;
  args := w.apply_args;
  if args is null then
    raise exception using errcode = 'RC210',
      message = format('%s event %s (webhook %s) has nothing to apply: %s', w.provider, w.event_id, w.id,
                       coalesce(w.error_message, 'no status was recorded'));
  end if;
  select * into p from reserve.payments x where x.id = (args ->> 'payment_id')::uuid;
  status_to := args ->> 'status';
  refunded_to := (args ->> 'refunded_amount')::bigint;
  -- a lost dispute takes the disputed amount on top of earlier refunds; less than the whole payment is
  -- a partial loss, not a full chargeback
  if status_to = 'refunded' and args ->> 'gateway_status' = 'dispute_lost' and refunded_to is not null then
    refunded_to := least(p.amount, p.refunded_amount + refunded_to);
    status_to := case when refunded_to >= p.amount then 'refunded' else 'partially_refunded' end;
  end if;
  begin
    if p.gateway_payment_id is null and args ->> 'gateway_payment_id' is not null then
      -- the webhook can overtake the checkout's own record of the provider's id
      perform reserve.attach_gateway_payment(p.id, args ->> 'gateway_payment_id');
    end if;
    select x.outcome, x.status, x.reservation_id, x.confirmation_code, x.finalize_outcome
      into a_outcome, a_status, a_reservation, a_code, a_finalize
    from reserve.apply_payment_status(
      p.id, status_to, (args ->> 'event_at')::timestamptz, args ->> 'gateway_status',
      args ->> 'error_code', args ->> 'error_message', refunded_to,
      args -> 'provider_object', w.id, 'ignore') x;
    state := 'completed';
    msg := case when a_outcome in ('stale', 'ignored')
                then format('%s: payment %s is %s, event says %s', a_outcome, p.id, a_status, status_to) end;
  exception when others then
    get stacked diagnostics msg = message_text, state = returned_sqlstate;
    msg := format('%s: %s', state, msg);
    state := case when w.attempts >= reserve.setting_int('max_webhook_attempts') then 'dead' else 'failed' end;
  end;

  update reserve.processed_webhooks x
  set status = state, error_message = msg, processed_at = now(),
      next_retry_at = case when state = 'failed' then reserve.webhook_retry_at(w.attempts) end
  where x.id = w.id
  returning * into w;

  return query select w.id, w.status, false, w.attempts, w.payment_id,
                      coalesce(a_outcome, 'failed'), coalesce(a_status, p.status), a_reservation, a_code,
                      a_finalize, w.error_message;
end
$$;
comment on function reserve.apply_webhook_event(uuid) is
  'Applies a recorded event from its apply_args (apply_payment_status, finalize on success) in a '
  'subtransaction and settles its row: completed, failed (next_retry_at with backoff) or dead after '
  'max_webhook_attempts. RC210 when nothing was recorded to apply. Internal: called with the row held.';
revoke all on function reserve.apply_webhook_event(uuid) from public;

create function reserve.process_webhook_event(
  p_provider           text,
  p_event_id           text,
  p_event_type         text,
  p_event_at           timestamptz default null,
  p_payload            jsonb default null,
  p_payment_id         uuid default null,
  p_gateway_payment_id text default null,
  p_status             text default null,
  p_gateway_status     text default null,
  p_error_code         text default null,
  p_error_message      text default null,
  p_refunded_amount    bigint default null,
  p_provider_object    jsonb default null,
  p_processing_error   text default null)
returns table (webhook_id uuid, webhook_status text, duplicate boolean, attempts integer, payment_id uuid,
               outcome text, payment_status text, reservation_id uuid, confirmation_code text,
               finalize_outcome text, error_message text)
language plpgsql
security definer
set search_path = ''
as $$
declare
  w reserve.processed_webhooks;
  p reserve.payments;
  state text;
  msg text;
begin
  if p_provider is null or p_provider not in ('stripe', 'mercadopago', 'openpix') then
    raise exception using errcode = 'RC206', message = format('unknown webhook provider %s', coalesce(p_provider, 'null'));
  end if;
  if coalesce(p_event_id, '') = '' or coalesce(p_event_type, '') = '' then
    raise exception using errcode = 'RC001', message = format('%s webhook: event id and type are required', p_provider);
  end if;

  -- the payment the event names: our id (metadata, external_reference, correlationID) or the provider's.
  -- It is locked before the event row is written: that row's foreign key takes a KEY SHARE lock on the
  -- payment, and taking the payment's lock after it deadlocked with the checkout's attach and with a
  -- second event. FOR UPDATE where this event may record the provider's id (a key column).
  if p_payment_id is not null then
    select * into p from reserve.payments x where x.id = p_payment_id;
  end if;
  if p.id is null and p_gateway_payment_id is not null then
    select * into p from reserve.payments x where x.provider = p_provider and x.gateway_payment_id = p_gateway_payment_id;
  end if;
  if p.id is not null then
    if p.gateway_payment_id is null and p_gateway_payment_id is not null then
      select * into p from reserve.payments x where x.id = p.id for update;
    else
      select * into p from reserve.payments x where x.id = p.id for no key update;
    end if;
  end if;

  -- concurrent deliveries of one event queue on its row; the first to commit decides, later ones see
  -- completed or ignored and do nothing, and a failed (or dead) one is taken up again
  insert into reserve.processed_webhooks as pw
    (provider, event_id, event_type, payment_id, gateway_payment_id, event_created_at, payload)
  values (p_provider, p_event_id, p_event_type, p.id, coalesce(p_gateway_payment_id, p.gateway_payment_id), p_event_at, p_payload)
  on conflict (provider, event_id) do update
    set attempts = pw.attempts + 1, last_attempt_at = now(), status = 'processing', error_message = null,
        payment_id = coalesce(excluded.payment_id, pw.payment_id), payload = coalesce(excluded.payload, pw.payload)
    where pw.status in ('processing', 'failed', 'dead')
  returning * into w;

  if w.id is null then
    select * into w from reserve.processed_webhooks x where x.provider = p_provider and x.event_id = p_event_id;
    return query select w.id, w.status, true, w.attempts, w.payment_id, 'duplicate'::text,
                        (select x.status from reserve.payments x where x.id = w.payment_id), null::uuid, null::text,
                        null::text, w.error_message;
    return;
  end if;

  if p_processing_error is not null then
    state := case when w.attempts >= reserve.setting_int('max_webhook_attempts') then 'dead' else 'failed' end;
    msg := p_processing_error;
  elsif p_status is null then
    state := 'ignored';
    msg := format('event type %s is not acted on', p_event_type);
  elsif p.id is null then
    -- an event for a payment we never made (another integration on the same account) is not ours to retry
    state := 'ignored';
    msg := format('no %s payment %s%s', p_provider, coalesce(p_gateway_payment_id, '?'),
                  coalesce(' (payment_id ' || p_payment_id || ')', ''));
  elsif p.provider <> p_provider then
    state := 'ignored';
    msg := format('payment %s belongs to %s, not %s', p.id, p.provider, p_provider);
  elsif p.gateway_payment_id is not null and p_gateway_payment_id is not null and p.gateway_payment_id <> p_gateway_payment_id then
    -- a second provider payment carrying our reference is never applied to ours: it may be money we
    -- must find, so it is dead at once (an alert), not ignored and not retried
    state := 'dead';
    msg := format('%s %s names payment %s, which is %s: a second provider payment for one attempt; investigate',
                  p_provider, p_gateway_payment_id, p.id, p.gateway_payment_id);
  else
    update reserve.processed_webhooks x
    set apply_args = jsonb_strip_nulls(jsonb_build_object(
          'payment_id', p.id, 'gateway_payment_id', p_gateway_payment_id, 'status', p_status,
          'event_at', p_event_at, 'gateway_status', p_gateway_status, 'error_code', p_error_code,
          'error_message', p_error_message, 'refunded_amount', p_refunded_amount, 'provider_object', p_provider_object))
    where x.id = w.id;
    return query select * from reserve.apply_webhook_event(w.id);
    return;
  end if;

  update reserve.processed_webhooks x
  set status = state, error_message = msg, processed_at = now(),
      next_retry_at = case when state = 'failed' then reserve.webhook_retry_at(w.attempts) end
  where x.id = w.id
  returning * into w;

  return query select w.id, w.status, false, w.attempts, w.payment_id,
                      case when state = 'ignored' then 'ignored' else 'failed' end, p.status,
                      null::uuid, null::text, null::text, w.error_message;
end
$$;
comment on function reserve.process_webhook_event(text, text, text, timestamptz, jsonb, uuid, text, text, text, text, text, bigint, jsonb, text) is
  'Records a verified provider event in processed_webhooks and applies it (apply_payment_status, '
  'finalize on success) in one transaction. webhook_status: completed, ignored (a type we do not act '
  'on, or not our payment), failed (error_message; answer 500 so the provider redelivers; dead after '
  'max_webhook_attempts, or at once for a second provider payment naming ours). A delivery '
  'of an event already completed or ignored is duplicate = true and changes nothing; a failed one is '
  'processed again. p_status null means the event is recorded as ignored; p_processing_error records '
  'a failure found before the database (e.g. the provider''s API did not answer).';
revoke all on function reserve.process_webhook_event(text, text, text, timestamptz, jsonb, uuid, text, text, text, text, text, bigint, jsonb, text) from public;
grant execute on function reserve.process_webhook_event(text, text, text, timestamptz, jsonb, uuid, text, text, text, text, text, bigint, jsonb, text) to service_role;
