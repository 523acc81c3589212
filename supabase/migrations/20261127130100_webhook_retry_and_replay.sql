-- The webhook inbox, replayable: a failed event (it carries its apply_args) is retried with backoff by
-- the poller and is dead after max_webhook_attempts; one whose provider lookup failed is looked up again;
-- an operator can replay one through the same path (apply_webhook_event). Nothing is marked completed
-- unless its effects committed in the same transaction.

create index processed_webhooks_retry_idx on reserve.processed_webhooks (next_retry_at) where status = 'failed';

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
