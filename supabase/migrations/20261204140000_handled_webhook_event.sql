-- A redelivery of an event already completed or ignored is answered from its key alone: the edge asks
-- this before it builds and sends the whole event, and before it asks the provider about an event
-- that carries no status. Recording one costs the database its JSON checks and conversions (about
-- 0.4 ms of its 0.5 ms for a duplicate) and the edge the sanitizing and the payload on the wire; this is
-- two index reads. A new, failed or dead event gets no row here and goes to process_webhook_event,
-- which makes the same test again under the key's lock, so a race between the two only costs the full
-- path.

create function reserve.handled_webhook_event(p_provider text, p_event_id text)
returns setof reserve.webhook_result
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  k reserve.processed_webhook_keys;
  w reserve.processed_webhooks;
begin
  if p_provider is null or coalesce(p_event_id, '') = '' then
    return;
  end if;
  select * into k from reserve.processed_webhook_keys x
  where x.provider = p_provider and x.event_id = reserve.bounded_webhook_key(p_event_id);
  if not found then
    return;
  end if;
  select * into w from reserve.processed_webhooks x where x.id = k.webhook_id and x.received_at = k.received_at;
  if not found then
    -- the key outlives its row: a very late redelivery of an event long since handled
    return next row(k.webhook_id, k.provider, k.event_id, 'completed', true, 1, null, 'duplicate', null, null, null, null,
                    'the record of this event is past retention')::reserve.webhook_result;
    return;
  end if;
  if w.status in ('completed', 'ignored') then
    return next row(w.id, w.provider, w.event_id, w.status, true, w.attempts, w.payment_id, 'duplicate',
                    (select x.status from reserve.payments x where x.id = w.payment_id), null, null, null,
                    w.error_message)::reserve.webhook_result;
  end if;
end
$$;

comment on function reserve.handled_webhook_event(p_provider text, p_event_id text) is
  'The answer to a redelivery of an event already completed or ignored (duplicate = true, outcome duplicate), from its provider and id (bounded as process_webhook_event bounds them); no row for an event that is new, processing, failed or dead: record it with process_webhook_event.';

revoke all on function reserve.handled_webhook_event(text, text) from public, anon, authenticated;
grant execute on function reserve.handled_webhook_event(text, text) to service_role;
