-- The webhook inbox on composites: process_webhook_event takes the verified event (reserve.webhook_event)
-- and the provider's normalized update (reserve.provider_update), and it, apply_webhook_event,
-- replay_webhook and retry_failed_webhooks return one result type (reserve.webhook_result). Every
-- verified event is recorded: an over-long id is hashed, an update the database would refuse turns the
-- event dead (poison, an alert) instead of failing the delivery, and an event the provider's lookup says
-- is not ours is ignored. A provider payment overtaking the checkout is attached only when it names our
-- payment and our price (else dead, a money discrepancy); a refusal of the provider's money (refund or
-- dispute beyond what was received) leaves the event dead.

drop function reserve.process_webhook_event(text, text, text, timestamptz, jsonb, uuid, text, text, text, text, text, bigint, jsonb, text);
drop function reserve.replay_webhook(uuid);
drop function reserve.retry_failed_webhooks(integer);
drop function reserve.apply_webhook_event(uuid);
drop function reserve.claim_webhooks_to_refetch(integer);

-- A key that fits processed_webhooks: as it is up to 255 characters, else its SHA-256 (a redelivery
-- hashes to the same key, so it is still deduplicated).
create function reserve.bounded_webhook_key(p_key text, p_max integer default 255) returns text
language sql
immutable
set search_path = ''
as $$
  select case when length(p_key) <= p_max then p_key
              else left(p_key, p_max - 72) || '~sha256:' || encode(sha256(convert_to(p_key, 'UTF8')), 'hex') end
$$;
comment on function reserve.bounded_webhook_key(text, integer) is
  'p_key if it is at most p_max characters, else its first characters and its SHA-256: a stable, bounded key.';
revoke all on function reserve.bounded_webhook_key(text, integer) from public;

-- The provider's update as the event stores it (apply_args), and back. apply_args recorded before the
-- update was a type carried a lost dispute as refunded_amount with gateway_status dispute_lost.
create function reserve.webhook_update_of(p_args jsonb) returns reserve.provider_update
language plpgsql
immutable
set search_path = ''
as $$
declare
  u reserve.provider_update := jsonb_populate_record(null::reserve.provider_update, p_args - 'payment_id');
begin
  if not (p_args ? 'dispute_amount') and p_args ->> 'gateway_status' = 'dispute_lost' and u.refunded_amount is not null then
    u.dispute_amount := u.refunded_amount;
    u.refunded_amount := null;
  end if;
  return u;
end
$$;
comment on function reserve.webhook_update_of(jsonb) is 'The provider_update stored in a processed_webhooks row''s apply_args.';
revoke all on function reserve.webhook_update_of(jsonb) from public;

create function reserve.apply_webhook_event(p_webhook_id uuid, p_source text default 'webhook')
returns reserve.webhook_result
language plpgsql
security definer
set search_path = ''
as $$
declare
  w reserve.processed_webhooks;
  p reserve.payments;
  u reserve.provider_update;
  a reserve.payment_status_change;
  why text;
  state text;
  msg text;
  res reserve.webhook_result;
begin
  select * into w from reserve.processed_webhooks x where x.id = p_webhook_id;
  if w.apply_args is null then
    raise exception using errcode = 'RC210',
      message = format('%s event %s (webhook %s) has nothing to apply: %s', w.provider, w.event_id, w.id,
                       coalesce(w.error_message, 'no status was recorded'));
  end if;
  u := reserve.webhook_update_of(w.apply_args);
  select * into p from reserve.payments x where x.id = (w.apply_args ->> 'payment_id')::uuid;

  if p.gateway_payment_id is null and u.gateway_payment_id is not null then
    -- the webhook overtook the checkout's own record of the provider's id: only our payment at our price
    why := reserve.provider_payment_mismatch(p, u);
    if why is not null then
      perform reserve.record_money_discrepancy(p, 'attach_mismatch', p_source, u, why, p.amount, p.currency,
                                               u.amount, u.currency, w.id);
      state := 'dead';
      msg := format('refused: %s; never attached (a money discrepancy is open)', why);
      a.outcome := 'refused';
    end if;
  end if;

  if state is null then
    begin
      if p.gateway_payment_id is null and u.gateway_payment_id is not null then
        perform reserve.attach_provider_payment(p, u, p_source, w.id);
      end if;
      a := reserve.apply_payment_status(p.id, u, w.id, 'ignore', p_source);
      if a.outcome = 'refused' then
        state := 'dead';
        msg := format('refused: %s (a money discrepancy is open)', a.finalize_error);
      else
        state := 'completed';
        msg := case when a.outcome in ('stale', 'ignored')
                    then format('%s: payment %s is %s, event says %s', a.outcome, p.id, a.status, u.status) end;
      end if;
    exception when others then
      get stacked diagnostics msg = message_text, state = returned_sqlstate;
      msg := format('%s: %s', state, msg);
      -- what the provider said can never be applied (RC001: e.g. a success that does not say what
      -- arrived): retrying changes nothing, so it is dead at once (an alert); anything else is retried
      state := case when state = 'RC001' or w.attempts >= reserve.setting_int('max_webhook_attempts') then 'dead' else 'failed' end;
      a := null;
    end;
  end if;

  update reserve.processed_webhooks x
  set status = state, error_message = msg, processed_at = now(),
      next_retry_at = case when state = 'failed' then reserve.webhook_retry_at(w.attempts) end
  where x.id = w.id
  returning * into w;

  res := row(w.id, w.provider, w.event_id, w.status, false, w.attempts, w.payment_id, coalesce(a.outcome, 'failed'),
             coalesce(a.status, (select x.status from reserve.payments x where x.id = p.id)), a.reservation_id,
             a.confirmation_code, a.finalize_outcome, w.error_message)::reserve.webhook_result;
  return res;
end
$$;
comment on function reserve.apply_webhook_event(uuid, text) is
  'Applies a recorded event from its apply_args (the provider''s update: apply_payment_status, finalize on '
  'success) in a subtransaction and settles its row: completed; dead when the provider''s money is refused '
  '(a provider payment not ours to attach, a refund or dispute beyond what was received); failed (next_retry_at '
  'with backoff) or dead after max_webhook_attempts on an error. RC210 when nothing was recorded to apply. '
  'Internal: called with the row held.';
revoke all on function reserve.apply_webhook_event(uuid, text) from public;

create function reserve.process_webhook_event(p_event reserve.webhook_event, p_update reserve.provider_update default null)
returns reserve.webhook_result
language plpgsql
security definer
set search_path = ''
as $$
declare
  e reserve.webhook_event := p_event;
  u reserve.provider_update;
  w reserve.processed_webhooks;
  p reserve.payments;
  state text;
  msg text;
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

  -- concurrent deliveries of one event queue on its row; the first to commit decides, later ones see
  -- completed or ignored and do nothing, and a failed (or dead) one is taken up again
  insert into reserve.processed_webhooks as pw
    (provider, event_id, event_type, payment_id, gateway_payment_id, event_created_at, payload, lookup)
  values (e.provider, e.event_id, e.event_type, p.id, left(coalesce(u.gateway_payment_id, p.gateway_payment_id), 255),
          coalesce(u.event_at, e.event_at), e.payload, e.lookup)
  on conflict (provider, event_id) do update
    set attempts = pw.attempts + 1, last_attempt_at = now(), status = 'processing', error_message = null,
        payment_id = coalesce(excluded.payment_id, pw.payment_id), payload = coalesce(excluded.payload, pw.payload),
        lookup = coalesce(excluded.lookup, pw.lookup)
    where pw.status in ('processing', 'failed', 'dead')
  returning * into w;

  if w.id is null then
    select * into w from reserve.processed_webhooks x where x.provider = e.provider and x.event_id = e.event_id;
    return row(w.id, w.provider, w.event_id, w.status, true, w.attempts, w.payment_id, 'duplicate',
               (select x.status from reserve.payments x where x.id = w.payment_id), null, null, null,
               w.error_message)::reserve.webhook_result;
  end if;

  if e.poison is not null then
    state := 'dead';
    msg := format('cannot be applied: %s', e.poison);
  elsif e.processing_error is not null then
    state := case when w.attempts >= reserve.setting_int('max_webhook_attempts') then 'dead' else 'failed' end;
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
    update reserve.processed_webhooks x
    set apply_args = jsonb_strip_nulls(to_jsonb(u)) || jsonb_build_object('payment_id', p.id)
    where x.id = w.id;
    return reserve.apply_webhook_event(w.id, 'webhook');
  end if;

  update reserve.processed_webhooks x
  set status = state, error_message = msg, processed_at = now(),
      next_retry_at = case when state = 'failed' then reserve.webhook_retry_at(w.attempts) end
  where x.id = w.id
  returning * into w;

  return row(w.id, w.provider, w.event_id, w.status, false, w.attempts, w.payment_id,
             case when state = 'ignored' then 'ignored' else 'failed' end, p.status, null, null, null,
             w.error_message)::reserve.webhook_result;
end
$$;
comment on function reserve.process_webhook_event(reserve.webhook_event, reserve.provider_update) is
  'Records a verified provider event in processed_webhooks and applies its update (apply_payment_status, '
  'finalize on success) in one transaction. webhook_status: completed, ignored (a type we do not act on, '
  'a note such as "the provider does not know this payment", or not our payment), failed (error_message; '
  'answer 500 so the provider redelivers; dead after max_webhook_attempts) or dead (poison: what it says '
  'cannot be applied; a second provider payment naming ours; the provider''s money refused). A delivery of '
  'an event already completed or ignored is duplicate = true and changes nothing; a failed or dead one is '
  'processed again. An event id over 255 characters is hashed.';
revoke all on function reserve.process_webhook_event(reserve.webhook_event, reserve.provider_update) from public;
grant execute on function reserve.process_webhook_event(reserve.webhook_event, reserve.provider_update) to service_role;

create function reserve.replay_webhook(p_webhook_id uuid)
returns reserve.webhook_result
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
    return row(w.id, w.provider, w.event_id, w.status, true, w.attempts, w.payment_id, 'duplicate',
               (select x.status from reserve.payments x where x.id = w.payment_id), null, null, null,
               w.error_message)::reserve.webhook_result;
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
  return reserve.apply_webhook_event(w.id, 'replay');
end
$$;
comment on function reserve.replay_webhook(uuid) is
  'Re-runs one recorded event (failed, dead or processing) through the same path as its delivery, '
  'comparing the provider''s money with ours again. A completed or ignored event is answered as a '
  'duplicate and changes nothing. RC209 unknown id, RC210 when the event failed before its status was '
  'known (the provider must be asked again).';
revoke all on function reserve.replay_webhook(uuid) from public;
grant execute on function reserve.replay_webhook(uuid) to service_role;

create function reserve.retry_failed_webhooks(p_limit integer default 100)
returns setof reserve.webhook_result
language plpgsql
security definer
set search_path = ''
as $$
declare
  due record;
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
    return next reserve.apply_webhook_event(due.id, 'webhook');
  end loop;
end
$$;
comment on function reserve.retry_failed_webhooks(integer) is
  'Retries failed events whose next_retry_at has come and that carry their apply_args (SKIP LOCKED, '
  'oldest first): each becomes completed, failed again (later retry) or dead. Run by poll_payment_status.';
revoke all on function reserve.retry_failed_webhooks(integer) from public;
grant execute on function reserve.retry_failed_webhooks(integer) to service_role;

create function reserve.claim_webhooks_to_refetch(p_limit integer default 50)
returns table (webhook_id uuid, provider text, event_id text, event_type text, payload jsonb, lookup jsonb, attempts integer)
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
    returning x.id, x.provider, x.event_id, x.event_type, x.payload, x.lookup, x.attempts;
end
$$;
comment on function reserve.claim_webhooks_to_refetch(integer) is
  'Failed events whose status the provider must be asked for again (their lookup failed): the poller asks '
  'the provider''s module with the event''s lookup and records the answer with process_webhook_event under '
  'the same event id.';
revoke all on function reserve.claim_webhooks_to_refetch(integer) from public;
grant execute on function reserve.claim_webhooks_to_refetch(integer) to service_role;

-- The payment a PIX endToEndId names: that of the money received, or of a refund we sent.
create function reserve.payment_by_end_to_end_id(p_provider text, p_end_to_end_ids text[])
returns table (payment_id uuid, gateway_payment_id text, refund_request_id uuid)
language sql
stable
security definer
set search_path = ''
as $$
  (select rr.payment_id, p.gateway_payment_id, rr.id
   from reserve.refund_requests rr join reserve.payments p on p.id = rr.payment_id
   where p.provider = p_provider and rr.provider_refund_e2e = any (p_end_to_end_ids)
   order by rr.created_at desc limit 1)
  union all
  (select p.id, p.gateway_payment_id, null::uuid
   from reserve.payments p
   where p.provider = p_provider and p.pix_end_to_end_id = any (p_end_to_end_ids)
   order by p.created_at desc limit 1)
  limit 1
$$;
comment on function reserve.payment_by_end_to_end_id(text, text[]) is
  'The payment (and refund request) one of the PIX endToEndIds names: a refund we sent, else the money '
  'received. How an OpenPIX refund event, which names nothing else, finds our payment.';
revoke all on function reserve.payment_by_end_to_end_id(text, text[]) from public;
grant execute on function reserve.payment_by_end_to_end_id(text, text[]) to service_role;
