-- The webhook inbox becomes replayable: what applying an event needs (the provider's status, already
-- reduced by the edge function) is stored with it, so a failed event is retried with backoff, becomes
-- dead after max_webhook_attempts, and an operator can replay one through the same path. Nothing is
-- marked completed unless its effects committed in the same transaction.

alter table reserve.processed_webhooks
  add column apply_args jsonb check (apply_args is null or jsonb_typeof(apply_args) = 'object'),
  add column next_retry_at timestamptz;
comment on column reserve.processed_webhooks.apply_args is
  'What apply_payment_status needs for this event (payment, status, amounts, the provider''s object), '
  'stored on receipt so a retry or replay needs neither the provider nor the edge function. Null when '
  'the event was ignored, or failed before the provider told us the status.';
comment on column reserve.processed_webhooks.next_retry_at is
  'When a failed event is retried next (backoff 1, 2, 4 ... minutes, at most an hour); null otherwise.';
create index processed_webhooks_retry_idx on reserve.processed_webhooks (next_retry_at) where status = 'failed';

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
      next_retry_at = case when state = 'failed'
                           then now() + least(interval '1 hour', interval '1 minute' * power(2, least(w.attempts - 1, 10))::integer) end
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

create or replace function reserve.process_webhook_event(
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
      next_retry_at = case when state = 'failed'
                           then now() + least(interval '1 hour', interval '1 minute' * power(2, least(w.attempts - 1, 10))::integer) end
  where x.id = w.id
  returning * into w;

  return query select w.id, w.status, false, w.attempts, w.payment_id,
                      case when state = 'ignored' then 'ignored' else 'failed' end, p.status,
                      null::uuid, null::text, null::text, w.error_message;
end
$$;

-- Payment first, then the event's row: the order process_webhook_event takes them in (its insert
-- locks the payment's key after the payment itself). With p_skip_locked, either being busy means null.
create function reserve.lock_webhook_for_apply(p_webhook_id uuid, p_skip_locked boolean default false)
returns reserve.processed_webhooks
language plpgsql
security definer
set search_path = ''
as $$
declare
  w reserve.processed_webhooks;
  pid uuid;
begin
  select * into w from reserve.processed_webhooks x where x.id = p_webhook_id;
  if not found then
    raise exception using errcode = 'RC209', message = format('webhook %s not found', p_webhook_id);
  end if;
  pid := (w.apply_args ->> 'payment_id')::uuid;
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
$$;
comment on function reserve.lock_webhook_for_apply(uuid, boolean) is
  'Locks an event''s payment, then the event''s row (the webhook path''s order); null if p_skip_locked and busy.';
revoke all on function reserve.lock_webhook_for_apply(uuid, boolean) from public;

create function reserve.replay_webhook(p_webhook_id uuid)
returns table (webhook_id uuid, webhook_status text, duplicate boolean, attempts integer, payment_id uuid,
               outcome text, payment_status text, reservation_id uuid, confirmation_code text,
               finalize_outcome text, error_message text)
language plpgsql
security definer
set search_path = ''
as $$
declare
  w reserve.processed_webhooks;
begin
  if p_webhook_id is null then
    raise exception using errcode = 'RC001', message = 'p_webhook_id is required';
  end if;
  w := reserve.lock_webhook_for_apply(p_webhook_id);
  -- done is done: replaying a completed or ignored event changes nothing, like a provider's duplicate
  if w.status in ('completed', 'ignored') then
    return query select w.id, w.status, true, w.attempts, w.payment_id, 'duplicate'::text,
                        (select x.status from reserve.payments x where x.id = w.payment_id), null::uuid, null::text,
                        null::text, w.error_message;
    return;
  end if;
  if w.apply_args is null then
    raise exception using errcode = 'RC210',
      message = format('%s event %s (webhook %s) failed before its status was known (%s): redeliver it from %s, or let the poller fetch the payment',
                       w.provider, w.event_id, w.id, coalesce(w.error_message, 'no error recorded'), w.provider);
  end if;
  if coalesce(current_setting('reserve.reason', true), '') = '' then
    perform set_config('reserve.reason', format('replay_webhook %s (%s %s)', w.id, w.provider, w.event_id), true);
  end if;
  update reserve.processed_webhooks x set attempts = x.attempts + 1, last_attempt_at = now(), status = 'processing'
  where x.id = w.id;
  return query select * from reserve.apply_webhook_event(w.id);
end
$$;
comment on function reserve.replay_webhook(uuid) is
  'Re-runs one recorded event (failed, dead or processing) through the same path as its delivery. '
  'A completed or ignored event is answered as a duplicate and changes nothing. RC209 unknown id, '
  'RC210 when the event failed before its status was known (the provider must be asked again).';
revoke all on function reserve.replay_webhook(uuid) from public;
grant execute on function reserve.replay_webhook(uuid) to service_role;

create function reserve.retry_failed_webhooks(p_limit integer default 100)
returns table (webhook_id uuid, provider text, event_id text, webhook_status text, attempts integer, error_message text)
language plpgsql
security definer
set search_path = ''
as $$
declare
  due record;
  r record;
  w reserve.processed_webhooks;
begin
  if p_limit is null or p_limit < 1 or p_limit > 10000 then
    raise exception using errcode = 'RC001', message = 'p_limit between 1 and 10000 is required';
  end if;
  -- oldest due first; an event or payment someone else holds is skipped, never waited for
  for due in
    select x.id from reserve.processed_webhooks x
    where x.status = 'failed' and x.next_retry_at <= now() and x.apply_args is not null
    order by x.next_retry_at
    limit p_limit
  loop
    w := reserve.lock_webhook_for_apply(due.id, true);
    continue when w.id is null or w.status <> 'failed' or w.next_retry_at > now();
    update reserve.processed_webhooks x set attempts = x.attempts + 1, last_attempt_at = now(), status = 'processing'
    where x.id = due.id;
    select * into r from reserve.apply_webhook_event(due.id);
    webhook_id := r.webhook_id;
    webhook_status := r.webhook_status;
    attempts := r.attempts;
    error_message := r.error_message;
    select x.provider, x.event_id into provider, event_id from reserve.processed_webhooks x where x.id = due.id;
    return next;
  end loop;
end
$$;
comment on function reserve.retry_failed_webhooks(integer) is
  'Retries failed events whose next_retry_at has come and that carry their apply_args (SKIP LOCKED, '
  'oldest first): each becomes completed, failed again (later retry) or dead. Run by poll_payment_status.';
revoke all on function reserve.retry_failed_webhooks(integer) from public;
grant execute on function reserve.retry_failed_webhooks(integer) to service_role;

create function reserve.claim_webhooks_to_refetch(p_limit integer default 50)
returns table (webhook_id uuid, provider text, event_id text, event_type text, payload jsonb, attempts integer)
language plpgsql
security definer
set search_path = ''
as $$
begin
  if p_limit is null or p_limit < 1 or p_limit > 1000 then
    raise exception using errcode = 'RC001', message = 'p_limit between 1 and 1000 is required';
  end if;
  -- the next retry is pushed ahead now, so a concurrent poller does not fetch the same event twice
  return query
    with due as (
      select x.id from reserve.processed_webhooks x
      where x.status = 'failed' and x.next_retry_at <= now() and x.apply_args is null
      order by x.next_retry_at
      limit p_limit
      for no key update skip locked
    )
    update reserve.processed_webhooks x
    set next_retry_at = now() + interval '5 minutes'
    from due where x.id = due.id
    returning x.id, x.provider, x.event_id, x.event_type, x.payload, x.attempts;
end
$$;
comment on function reserve.claim_webhooks_to_refetch(integer) is
  'Failed events whose status the provider must be asked for again (e.g. MercadoPago''s lookup failed): '
  'the poller fetches each and records it again with process_webhook_event under the same event id.';
revoke all on function reserve.claim_webhooks_to_refetch(integer) from public;
grant execute on function reserve.claim_webhooks_to_refetch(integer) to service_role;
