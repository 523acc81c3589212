-- handled_webhook_event reads the event's key first, and its row only when the key is there: a new
-- event (every first delivery, asked twice: by the edge and by process_webhook_event) opens no partition
-- of processed_webhooks. The one read that joined both opened an index scan on every month's partition
-- for each call, and locked every month's table with it: with the 11 partitions a year keeps, 12 tables
-- and 10 indexes a call from the cached plan (60 indexes from each of the first five, planned), for an
-- event we had never seen; each month kept added to every webhook's cost.
--
-- The row is read by a generic plan: its received_at comes from the key, so the executor keeps the one
-- partition it names (PostgreSQL 17 still locks each month's table). Left to choose, PL/pgSQL planned
-- that read anew for each call, since its generic plan is costed over every partition: that is what
-- made the two-read form of this function slower than the join it replaced. On one connection with 11
-- webhook partitions, per call: a new event 33-48 -> 15 us, a completed one 40-58 -> 27 us. Same answers.

create or replace function reserve.handled_webhook_event(p_provider text, p_event_id text)
returns setof reserve.webhook_result
language plpgsql
stable
security definer
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
  k reserve.processed_webhook_keys;
  w record;
begin
  if p_provider is null or coalesce(p_event_id, '') = '' then
    return;
  end if;
  if length(p_event_id) > 255 then
    p_event_id := reserve.bounded_webhook_key(p_event_id);
  end if;
  select * into k from reserve.processed_webhook_keys x where x.provider = p_provider and x.event_id = p_event_id;
  if not found then
    return;
  end if;
  select x.status, x.attempts, x.payment_id, x.error_message,
         (select p.status from reserve.payments p where p.id = x.payment_id) as payment_status
  into w
  from reserve.processed_webhooks x
  where x.id = k.webhook_id and x.received_at = k.received_at;
  if not found then
    -- the key outlives its row: a very late redelivery of an event long since handled
    return next row(k.webhook_id, k.provider, k.event_id, 'completed', true, 1, null, 'duplicate', null, null, null, null,
                    'the record of this event is past retention')::reserve.webhook_result;
  elsif w.status in ('completed', 'ignored') then
    return next row(k.webhook_id, k.provider, k.event_id, w.status, true, w.attempts, w.payment_id, 'duplicate',
                    w.payment_status, null, null, null, w.error_message)::reserve.webhook_result;
  end if;
end
$$;
