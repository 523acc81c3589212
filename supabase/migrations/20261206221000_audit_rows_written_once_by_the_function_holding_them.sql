-- A business transaction's audit row was inserted empty at its first change and rewritten at commit by
-- a deferred trigger with the changes buffered meanwhile: two row versions of a partitioned table, an
-- UPDATE planned over its months, the row's existence checked at every later change, and a trigger
-- queued for the commit. A function that makes a transaction's changes can now hold its audit
-- (reserve.audit_held names the transaction): the row triggers buffer the changes without a row, and
-- the function writes the row once, whole, when its changes are done (write_held_audit). A webhook's
-- apply holds it. Manual SQL is audited as before; a change after the hold joins the written row.

create function reserve.write_held_audit()
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  head jsonb := nullif(current_setting('reserve.audit_head', true), '')::jsonb;
  audit_id bigint;
  audit_at timestamptz;
begin
  if head is null or not head ? 'held'
     or (head ->> 'xact')::bigint is distinct from pg_current_xact_id_if_assigned()::text::bigint then
    return;  -- nothing held in this transaction
  end if;
  insert into reserve.audit_logs (actor, action, table_name, row_id, reason, changes)
  values (head ->> 'actor', head ->> 'action', head ->> 'table', head ->> 'row_id', head ->> 'reason',
          ('[' || current_setting('reserve.audit_changes', true) || ']')::jsonb)
  returning id, occurred_at into audit_id, audit_at;
  -- written: a later change of this transaction joins this row (audit_row_change's flushed branch)
  perform set_config('reserve.audit_head', jsonb_build_object('id', audit_id, 'at', audit_at, 'xact', head -> 'xact', 'n', 1,
                                                              'actor', head -> 'actor', 'reason', head -> 'reason',
                                                              'flushed', true)::text, true);
  perform set_config('reserve.audit_changes', '', true);
end
$$;
comment on function reserve.write_held_audit() is
  'Writes the audit row of the changes held since the transaction''s function set reserve.audit_held (audit_row_change buffers them without a row), in one INSERT; nothing when nothing is held. Internal.';

create or replace function reserve.audit_row_change()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  -- a bulk change (a manual UPDATE of a year of nights) is written in rows of this many changes, so the
  -- buffer stays small and the cost linear; a business transaction changes far fewer rows
  chunk constant integer := 100;
  key_cols text[] := case when tg_nargs = 0 then array['id'] else tg_argv end;
  after_row jsonb := case when tg_op = 'DELETE' then null else to_jsonb(new) end;
  before_row jsonb := case when tg_op = 'INSERT' then null else to_jsonb(old) end;
  keyed jsonb := coalesce(after_row, before_row);
  key text;
  change jsonb;
  who text := reserve.current_actor();
  why text := nullif(current_setting('reserve.reason', true), '');
  head jsonb := nullif(current_setting('reserve.audit_head', true), '')::jsonb;
  xact bigint := pg_current_xact_id()::text::bigint;
  audit_id bigint;
  audit_at timestamptz;
  held boolean := coalesce(current_setting('reserve.audit_held', true), '') = xact::text;
begin
  if tg_nargs = 0 then
    key := keyed ->> 'id';
  else
    select string_agg(keyed ->> c, ':' order by ord) into key
    from unnest(key_cols) with ordinality as k(c, ord);
  end if;
  if tg_op = 'UPDATE' then
    select coalesce(jsonb_object_agg(o.key, o.value), '{}'::jsonb) into before_row
    from jsonb_each(before_row) o where after_row -> o.key is distinct from o.value;
  end if;
  change := jsonb_build_object('op', tg_op, 'table', tg_table_name, 'row_id', key, 'old', before_row, 'new', after_row);

  -- the head names this transaction's audit row (one from another transaction, or forged, is not ours)
  if head is not null and (head ->> 'xact')::bigint is distinct from xact then
    head := null;
  elsif head ? 'held' then
    -- a held chunk that is full, or still held when the hold has ended, is written now: its row is
    -- complete, and the change starts the transaction's next row
    if not held or (head ->> 'n')::integer >= chunk then
      perform reserve.write_held_audit();
      head := null;
    end if;
  elsif head is not null and not exists (select 1 from reserve.audit_logs a
                                         where a.id = (head ->> 'id')::bigint and a.occurred_at = (head ->> 'at')::timestamptz
                                           and a.xact_id = xact) then
    head := null;
  end if;
  if head is not null and (head ->> 'n')::integer >= chunk then
    -- a full chunk is written now, and the next change starts the transaction's next row
    update reserve.audit_logs a set changes = ('[' || current_setting('reserve.audit_changes', true) || ']')::jsonb
    where a.id = (head ->> 'id')::bigint and a.occurred_at = (head ->> 'at')::timestamptz;
    head := null;
  end if;
  if head is null and held then
    -- held by the function doing the work: no row yet, it writes the whole row once (write_held_audit)
    perform set_config('reserve.audit_head', jsonb_build_object('xact', xact, 'n', 1, 'held', true, 'actor', who, 'reason', why,
                                                                'action', tg_op, 'table', tg_table_name, 'row_id', key)::text, true);
    perform set_config('reserve.audit_changes', change::text, true);
    return null;
  end if;
  if head is null then
    insert into reserve.audit_logs (actor, action, table_name, row_id, reason, changes)
    values (who, tg_op, tg_table_name, key, why, '[]'::jsonb)
    returning id, occurred_at into audit_id, audit_at;
    perform set_config('reserve.audit_head', jsonb_build_object('id', audit_id, 'at', audit_at, 'xact', xact, 'n', 1,
                                                                'actor', who, 'reason', why)::text, true);
    perform set_config('reserve.audit_changes', change::text, true);
    return null;
  end if;
  if who is distinct from head ->> 'actor' then
    change := change || jsonb_build_object('actor', who);
  end if;
  if why is distinct from head ->> 'reason' then
    change := change || jsonb_build_object('reason', why);
  end if;
  if head ? 'flushed' then
    -- written already (SET CONSTRAINTS ... IMMEDIATE ran the flush): later changes join the row directly
    update reserve.audit_logs a set changes = a.changes || jsonb_build_array(change)
    where a.id = (head ->> 'id')::bigint and a.occurred_at = (head ->> 'at')::timestamptz;
  else
    -- appended as text: the buffer is parsed once, when it is written
    perform set_config('reserve.audit_changes', current_setting('reserve.audit_changes', true) || ',' || change::text, true);
    perform set_config('reserve.audit_head', jsonb_set(head, '{n}', to_jsonb((head ->> 'n')::integer + 1))::text, true);
  end if;
  return null;
end
$$;

comment on function reserve.audit_row_change() is 'AFTER ROW trigger: adds the change ({op, table, row_id, old, new}) to this transaction''s one audit_logs row (inserted on its first change, written at commit by flush_audit_changes; a bulk change of more than 100 rows is written 100 changes to a row); or, while a function holds the audit (reserve.audit_held is this transaction), buffers it for write_held_audit. Arguments name the key columns.';

create or replace function reserve.process_webhook_event(p_event reserve.webhook_event, p_update reserve.provider_update default null)
returns reserve.webhook_result
language plpgsql
security definer
set search_path = ''
as $$
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
$$;
revoke all on function reserve.write_held_audit() from public, anon, authenticated;
