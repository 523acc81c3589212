-- Every notification goes through this outbox: written in the transaction that decided it (an alert
-- transition, an incident's clock), delivered by the notify edge function, retried with exponential
-- backoff and jitter (honouring 429 Retry-After) until the receiver takes it. Nothing is lost while a
-- receiver is down; an idempotency key per transition and channel means an evaluation run twice never
-- sends twice; rows of one (channel, dedup_key) go out in order, so a resolve never overtakes its trigger.

create table reserve.notification_outbox (
  id              bigint generated always as identity primary key,
  idempotency_key text not null unique check (length(idempotency_key) between 1 and 300),
  channel         text not null check (channel in ('pagerduty', 'slack', 'digest')),
  -- pagerduty: trigger | acknowledge | resolve; slack and digest: post
  event_action    text not null check (event_action in ('trigger', 'acknowledge', 'resolve', 'post')),
  kind            text not null check (kind in ('alert', 'escalation', 'reminder', 'incident')),
  -- PagerDuty's dedup_key; also the ordering key of a channel
  dedup_key       text not null check (length(dedup_key) between 1 and 255),
  severity        text not null check (severity in ('P1', 'P2', 'P3', 'P4')),
  alert_name      text,
  alert_event_id  bigint,
  incident_id     uuid,
  payload         jsonb not null check (jsonb_typeof(payload) = 'object'),
  -- held back by a silence (sent if the silence ends while the alert still fires)
  silenced_by     uuid references reserve.alert_silences (id) on delete set null,
  -- never to be sent: a held-back trigger whose alert resolved before the silence ended
  cancelled_at    timestamptz,
  created_at      timestamptz not null default now(),
  -- when it was first due (a digest row: the next digest hour); the undeliverable alert counts from here
  due_at          timestamptz not null default now(),
  next_attempt_at timestamptz not null default now(),
  claimed_until   timestamptz,
  attempts        integer not null default 0 check (attempts >= 0),
  last_status     integer,
  last_error      text,
  delivered_at    timestamptz,
  constraint notification_outbox_channel_action_check check (
    (channel = 'pagerduty') = (event_action in ('trigger', 'acknowledge', 'resolve')))
);
comment on table reserve.notification_outbox is
  'Notifications to send (PagerDuty events, Slack posts, digest lines): attempts, next_attempt_at with '
  'backoff, last_status/last_error, delivered_at. Claimed by claim_notifications, settled by '
  'record_notification_result. Undelivered rows older than notification_undeliverable_minutes fire '
  'notifications_undeliverable.';
create index notification_outbox_due_idx on reserve.notification_outbox (next_attempt_at)
  where delivered_at is null and silenced_by is null and cancelled_at is null;
create index notification_outbox_key_idx on reserve.notification_outbox (channel, dedup_key, id)
  where delivered_at is null and cancelled_at is null;
create index notification_outbox_alert_event_idx on reserve.notification_outbox (alert_event_id) where alert_event_id is not null;
alter table reserve.notification_outbox enable row level security;
revoke all on reserve.notification_outbox from public, anon, authenticated;
grant select on reserve.notification_outbox to service_role;

insert into reserve.retention_policies (table_name, retention_days, retention_type, date_column, description) values
  ('notification_outbox', 90, 'delete', 'delivered_at', 'Delivered notifications: three months of what reached whom (undelivered rows are never deleted).');

create type reserve.notification_request as (
  idempotency_key text,
  channel         text,
  event_action    text,
  kind            text,
  dedup_key       text,
  severity        text,
  alert_name      text,
  alert_event_id  bigint,
  incident_id     uuid,
  payload         jsonb,
  silenced_by     uuid
);
comment on type reserve.notification_request is 'One notification for enqueue_notification.';

-- The next digest hour after p_at.
create function reserve.next_digest_at(p_at timestamptz default now()) returns timestamptz
language sql
stable
security definer
set search_path = ''
as $$
  select case when t > p_at then t else t + interval '1 day' end
  from (select (date_trunc('day', p_at at time zone 'UTC')
                + make_interval(hours => reserve.setting_int('alert_digest_hour_utc'))) at time zone 'UTC' as t) x
$$;
revoke all on function reserve.next_digest_at(timestamptz) from public;

-- Internal: one row, once per idempotency key (a second call with the key returns the first row).
create function reserve.enqueue_notification(p reserve.notification_request)
returns reserve.notification_outbox
language plpgsql
security definer
set search_path = ''
as $$
declare
  due timestamptz := case when p.channel = 'digest' then reserve.next_digest_at() else now() end;
  n reserve.notification_outbox;
begin
  insert into reserve.notification_outbox as o (idempotency_key, channel, event_action, kind, dedup_key, severity,
      alert_name, alert_event_id, incident_id, payload, silenced_by, due_at, next_attempt_at)
  values (p.idempotency_key, p.channel, case when p.channel = 'pagerduty' then p.event_action else 'post' end,
          p.kind, p.dedup_key, p.severity, p.alert_name, p.alert_event_id, p.incident_id, p.payload, p.silenced_by, due, due)
  on conflict (idempotency_key) do nothing
  returning * into n;
  if n.id is null then
    select * into n from reserve.notification_outbox o where o.idempotency_key = p.idempotency_key;
  end if;
  return n;
end
$$;
revoke all on function reserve.enqueue_notification(reserve.notification_request) from public;

-- Internal: the request once per channel of the severity's route; the key gets ':<channel>'.
create function reserve.enqueue_routed(p reserve.notification_request, p_channels text[] default null)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  c text;
  n integer := 0;
  one reserve.notification_request;
begin
  for c in select r.channel from reserve.alert_routes r
           where r.severity = p.severity and (p_channels is null or r.channel = any (p_channels))
           order by r.channel
  loop
    one := p;
    one.idempotency_key := p.idempotency_key || ':' || c;
    one.channel := c;
    perform reserve.enqueue_notification(one);
    n := n + 1;
  end loop;
  return n;
end
$$;
revoke all on function reserve.enqueue_routed(reserve.notification_request, text[]) from public;

create function reserve.claim_notifications(p_limit integer default 50, p_lease_seconds integer default 60)
returns setof reserve.notification_outbox
language plpgsql
security definer
set search_path = ''
as $$
begin
  if p_limit is null or p_limit < 1 or p_limit > 1000 or p_lease_seconds is null or p_lease_seconds < 1 or p_lease_seconds > 3600 then
    raise exception using errcode = 'RC001', message = 'p_limit is 1..1000 and p_lease_seconds 1..3600';
  end if;
  return query
  with due as (
    select o.id from reserve.notification_outbox o
    where o.delivered_at is null and o.silenced_by is null and o.cancelled_at is null
      and o.next_attempt_at <= now() and (o.claimed_until is null or o.claimed_until < now())
      -- in order per channel and dedup_key: an earlier one still to send goes first (the digest's lines
      -- go out together, in one message)
      and (o.channel = 'digest' or not exists (select 1 from reserve.notification_outbox e
                      where e.channel = o.channel and e.dedup_key = o.dedup_key and e.id < o.id
                        and e.delivered_at is null and e.cancelled_at is null))
    order by o.id
    limit p_limit
    for update skip locked
  )
  update reserve.notification_outbox o
     set claimed_until = now() + make_interval(secs => p_lease_seconds), attempts = o.attempts + 1
    from due where o.id = due.id
  returning o.*;
end
$$;
comment on function reserve.claim_notifications(integer, integer) is
  'Claims up to p_limit due notifications for p_lease_seconds (FOR UPDATE SKIP LOCKED: deliverers run '
  'side by side), oldest first and in order per channel and dedup_key; counts the attempt.';
revoke all on function reserve.claim_notifications(integer, integer) from public;
grant execute on function reserve.claim_notifications(integer, integer) to service_role;

create function reserve.record_notification_result(
  p_id bigint, p_delivered boolean, p_status integer default null, p_error text default null,
  p_retry_after_seconds integer default null)
returns reserve.notification_outbox
language plpgsql
security definer
set search_path = ''
as $$
declare
  backoff jsonb := (select s.value from reserve.settings s where s.key = 'notification_backoff_seconds');
  n reserve.notification_outbox;
  delay numeric;
begin
  if p_id is null or p_delivered is null then
    raise exception using errcode = 'RC001', message = 'p_id and p_delivered are required';
  end if;
  select * into n from reserve.notification_outbox o where o.id = p_id for update;
  -- a late second answer for a delivered row changes nothing
  if n.delivered_at is not null then
    return n;
  end if;
  if n.id is null or n.claimed_until is null then
    raise exception using errcode = 'RC605', message = format('notification %s not found or not claimed', p_id);
  end if;
  if p_delivered then
    update reserve.notification_outbox o
       set delivered_at = now(), claimed_until = null, last_status = p_status, last_error = null
     where o.id = p_id returning * into n;
  else
    -- base * 2^(attempts-1), capped, with full jitter in its upper half; a receiver's Retry-After is a floor
    delay := least((backoff ->> 'max')::numeric, (backoff ->> 'base')::numeric * power(2, greatest(n.attempts - 1, 0)))
             * (0.5 + random() / 2);
    delay := greatest(delay, coalesce(p_retry_after_seconds, 0));
    update reserve.notification_outbox o
       set claimed_until = null, last_status = p_status, last_error = left(coalesce(p_error, 'failed'), 1000),
           next_attempt_at = now() + make_interval(secs => delay)
     where o.id = p_id returning * into n;
  end if;
  return n;
end
$$;
comment on function reserve.record_notification_result(bigint, boolean, integer, text, integer) is
  'Settles a claimed notification: delivered, or failed with the receiver''s status and error, due again '
  'after exponential backoff with jitter (setting notification_backoff_seconds) or the Retry-After it '
  'asked for, whichever is later. Idempotent once delivered; RC605 unknown or unclaimed.';
revoke all on function reserve.record_notification_result(bigint, boolean, integer, text, integer) from public;
grant execute on function reserve.record_notification_result(bigint, boolean, integer, text, integer) to service_role;
