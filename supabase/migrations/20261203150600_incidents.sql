-- Incidents on the runbook's clock. A firing P1/P2 alert opens one (or joins the open one of that
-- alert: evaluate_alerts); people acknowledge it, post updates and resolve it (each with a proven
-- identity: oncall_actor); the clocks run in advance_incident_clocks(), called by every evaluation:
-- - not acknowledged within the severity's response time (incident_response_minutes): escalated, once;
-- - no update for incident_update_minutes (P1/P2): a reminder, again every period without one;
-- - resolved: monitoring for incident_monitoring_minutes, then closed if the alert stayed quiet (an
--   alert firing again reopens it); the post-incident review is due incident_review_hours after the fix.
-- Escalations and reminders are outbox notifications like the alerts'.

create table reserve.incidents (
  id              uuid primary key default gen_random_uuid(),
  -- the runbook's INC-YYYY-MM-DD-NNN (UTC date of opening)
  reference       text not null unique check (reference ~ '^INC-\d{4}-\d{2}-\d{2}-\d{3,}$'),
  alert_name      text not null references reserve.alert_rules (alert_name),
  severity        text not null check (severity in ('P1', 'P2', 'P3', 'P4')),
  title           text not null,
  status          text not null default 'open' check (status in ('open', 'acknowledged', 'monitoring', 'closed')),
  -- when the alert's condition started to hold (the alert's first_seen)
  detected_at     timestamptz not null,
  opened_at       timestamptz not null default now(),
  ack_due_at      timestamptz not null,
  acknowledged_at timestamptz,
  acknowledged_by text,
  escalated_at    timestamptz,
  last_update_at  timestamptz,
  reminded_at     timestamptz,
  resolved_at     timestamptz,
  resolved_by     text,
  monitoring_until timestamptz,
  closed_at       timestamptz,
  review_due_at   timestamptz,
  constraint incidents_ack_check check ((acknowledged_at is null) = (acknowledged_by is null)),
  constraint incidents_monitoring_check check (status <> 'monitoring' or (resolved_at is not null and monitoring_until is not null)),
  constraint incidents_closed_check check ((status = 'closed') = (closed_at is not null))
);
comment on table reserve.incidents is
  'Incidents opened by firing P1/P2 alerts: status open -> acknowledged -> monitoring -> closed, with '
  'the runbook''s clocks (ack_due_at, escalated_at, last_update_at, reminded_at, monitoring_until, '
  'review_due_at). Written only by the incident functions; every change is in incident_events.';
create unique index incidents_one_open_per_alert on reserve.incidents (alert_name) where status <> 'closed';
create index incidents_opened_at_idx on reserve.incidents (opened_at);
create trigger _900_audit after insert or update or delete on reserve.incidents
  for each row execute function reserve.audit_row_change();
alter table reserve.incidents enable row level security;
revoke all on reserve.incidents from public, anon, authenticated;
grant select on reserve.incidents to service_role;

create table reserve.incident_events (
  id             bigint generated always as identity primary key,
  incident_id    uuid not null references reserve.incidents (id) on delete cascade,
  at             timestamptz not null default now(),
  kind           text not null check (kind in ('opened', 'alert_fired', 'alert_resolved', 'acknowledged', 'update',
                                                'escalated', 'reminder', 'fix_deployed', 'reopened', 'closed',
                                                'action_item')),
  -- a proven operator, or 'system' for the clocks and the alerts
  actor          text not null check (length(actor) between 1 and 200),
  note           text,
  alert_event_id bigint references reserve.alert_events (id) on delete set null
);
comment on table reserve.incident_events is
  'The incident''s own timeline: opened, alert fired/resolved, acknowledged, updates, escalated, '
  'reminders, fix deployed (monitoring), reopened, closed, action items; with who and a note.';
create index incident_events_incident_idx on reserve.incident_events (incident_id, at);
alter table reserve.incident_events enable row level security;
revoke all on reserve.incident_events from public, anon, authenticated;
grant select on reserve.incident_events to service_role;

create table reserve.incident_action_items (
  id          uuid primary key default gen_random_uuid(),
  incident_id uuid not null references reserve.incidents (id) on delete cascade,
  action      text not null check (length(btrim(action)) > 0),
  owner       text not null check (length(btrim(owner)) > 0),
  due_date    date not null,
  status      text not null default 'open' check (status in ('open', 'done', 'dropped')),
  created_by  text not null,
  created_at  timestamptz not null default now()
);
comment on table reserve.incident_action_items is
  'The review''s action items: what, who owns it, by when, and whether it is done.';
create index incident_action_items_incident_idx on reserve.incident_action_items (incident_id);
create trigger _900_audit after insert or update or delete on reserve.incident_action_items
  for each row execute function reserve.audit_row_change();
alter table reserve.incident_action_items enable row level security;
revoke all on reserve.incident_action_items from public, anon, authenticated;
grant select on reserve.incident_action_items to service_role;

-- Minutes of a severity from a {"P1": n, ...} setting.
create function reserve.severity_minutes(p_key text, p_severity text) returns integer
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v integer;
begin
  select (s.value ->> p_severity)::integer into v from reserve.settings s where s.key = p_key;
  if v is null then
    raise exception using errcode = 'RC001', message = format('setting %s has no minutes for %s', p_key, p_severity);
  end if;
  return v;
end
$$;
revoke all on function reserve.severity_minutes(text, text) from public;

-- The incident by id or INC- reference, locked.
create function reserve.lock_incident(p_incident text) returns reserve.incidents
language plpgsql
security definer
set search_path = ''
as $$
declare
  i reserve.incidents;
begin
  if p_incident ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
    select * into i from reserve.incidents x where x.id = p_incident::uuid for update;
  else
    select * into i from reserve.incidents x where x.reference = upper(btrim(p_incident)) for update;
  end if;
  if i.id is null then
    raise exception using errcode = 'RC601', message = format('incident %s not found', p_incident);
  end if;
  return i;
end
$$;
revoke all on function reserve.lock_incident(text) from public;

-- Internal: an incident notification, to the severity's route (kind escalation pages; reminders and
-- incident news post to Slack only).
create function reserve.enqueue_incident_notification(i reserve.incidents, p_kind text, p_key text, p_text text,
                                                      p_pagerduty_action text default null)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  req reserve.notification_request;
begin
  req.idempotency_key := format('incident:%s:%s', i.reference, p_key);
  req.kind := p_kind;
  req.event_action := coalesce(p_pagerduty_action, 'trigger');
  req.dedup_key := format('reserve/%s/escalation', i.reference);
  req.severity := i.severity;
  req.alert_name := i.alert_name;
  req.incident_id := i.id;
  req.payload := jsonb_build_object(
    'summary', p_text, 'incident_reference', i.reference, 'incident_id', i.id, 'incident_status', i.status,
    'alert_name', i.alert_name, 'severity', i.severity, 'title', i.title,
    'runbook_section', (select r.runbook_section from reserve.alert_rules r where r.alert_name = i.alert_name),
    'opened_at', i.opened_at, 'ack_due_at', i.ack_due_at, 'acknowledged_by', i.acknowledged_by);
  return reserve.enqueue_routed(req,
    case when p_kind = 'escalation' then array['pagerduty', 'slack'] else array['slack'] end);
end
$$;
revoke all on function reserve.enqueue_incident_notification(reserve.incidents, text, text, text, text) from public;

-- Internal (evaluate_alerts): a firing alert of P1/P2 opens an incident, or joins the open one.
create function reserve.open_or_join_incident(p_alert_name text, p_alert_event_id bigint)
returns reserve.incidents
language plpgsql
security definer
set search_path = ''
as $$
declare
  r reserve.alert_rules;
  st reserve.alert_states;
  i reserve.incidents;
  day text := to_char(now() at time zone 'UTC', 'YYYY-MM-DD');
  n integer;
begin
  select * into r from reserve.alert_rules x where x.alert_name = p_alert_name;
  select * into st from reserve.alert_states x where x.alert_name = p_alert_name;
  select * into i from reserve.incidents x where x.alert_name = p_alert_name and x.status <> 'closed' for update;
  if i.id is not null then
    insert into reserve.incident_events (incident_id, kind, actor, note, alert_event_id)
    values (i.id, 'alert_fired', 'system', format('%s fired again: %s', p_alert_name, st.details), p_alert_event_id);
    if i.status = 'monitoring' then
      update reserve.incidents x set status = case when x.acknowledged_at is null then 'open' else 'acknowledged' end,
             monitoring_until = null
       where x.id = i.id returning * into i;
      insert into reserve.incident_events (incident_id, kind, actor, note, alert_event_id)
      values (i.id, 'reopened', 'system', 'the alert fired during monitoring: the fix did not hold', p_alert_event_id);
    end if;
    return i;
  end if;
  -- one evaluation at a time holds check_all_alerts' lock, so the day's count cannot race
  select count(*) + 1 into n from reserve.incidents x where x.reference like 'INC-' || day || '-%';
  insert into reserve.incidents (reference, alert_name, severity, title, detected_at, ack_due_at)
  values (format('INC-%s-%s', day, lpad(n::text, 3, '0')), r.alert_name, r.severity,
          r.summary, coalesce(st.active_since, now()),
          now() + make_interval(mins => reserve.severity_minutes('incident_response_minutes', r.severity)))
  returning * into i;
  insert into reserve.incident_events (incident_id, kind, actor, note, alert_event_id)
  values (i.id, 'opened', 'system', format('%s fired: %s', p_alert_name, st.details), p_alert_event_id);
  return i;
end
$$;
revoke all on function reserve.open_or_join_incident(text, bigint) from public;

create function reserve.acknowledge_incident(p_incident text, p_note text, p_operator text default null)
returns reserve.incidents
language plpgsql
security definer
set search_path = ''
as $$
declare
  who text := reserve.oncall_actor('acknowledge_incident', p_operator, p_note);
  i reserve.incidents := reserve.lock_incident(p_incident);
begin
  if i.status = 'acknowledged' then
    return i; -- acknowledged already: the first one's name stays
  end if;
  if i.status <> 'open' then
    raise exception using errcode = 'RC602', message = format('incident %s is %s: only an open incident is acknowledged', i.reference, i.status);
  end if;
  update reserve.incidents x set status = 'acknowledged', acknowledged_at = now(), acknowledged_by = who
   where x.id = i.id returning * into i;
  insert into reserve.incident_events (incident_id, kind, actor, note) values (i.id, 'acknowledged', who, btrim(p_note));
  -- an escalation page that went out is resolved: someone has it now
  if i.escalated_at is not null then
    perform reserve.enqueue_incident_notification(i, 'escalation', 'escalation-resolve',
      format('%s acknowledged by %s', i.reference, who), 'resolve');
  end if;
  return i;
end
$$;
comment on function reserve.acknowledge_incident(text, text, text) is
  'Acknowledges an open incident (id or INC- reference) as the proven operator (oncall_actor), with a note. '
  'Idempotent when acknowledged; RC602 once monitoring or closed, RC601 unknown, RC604 unproven.';
revoke all on function reserve.acknowledge_incident(text, text, text) from public;
grant execute on function reserve.acknowledge_incident(text, text, text) to service_role;

create function reserve.post_incident_update(p_incident text, p_note text, p_operator text default null)
returns reserve.incident_events
language plpgsql
security definer
set search_path = ''
as $$
declare
  who text := reserve.oncall_actor('post_incident_update', p_operator, p_note);
  i reserve.incidents := reserve.lock_incident(p_incident);
  e reserve.incident_events;
begin
  if i.status = 'closed' then
    raise exception using errcode = 'RC602', message = format('incident %s is closed', i.reference);
  end if;
  update reserve.incidents x set last_update_at = now() where x.id = i.id returning * into i;
  insert into reserve.incident_events (incident_id, kind, actor, note) values (i.id, 'update', who, btrim(p_note))
  returning * into e;
  perform reserve.enqueue_incident_notification(i, 'incident', format('update-%s', e.id),
    format('%s update by %s: %s', i.reference, who, btrim(p_note)));
  return e;
end
$$;
comment on function reserve.post_incident_update(text, text, text) is
  'Posts a status update (the runbook''s every 30 minutes) as the proven operator; it goes to Slack and '
  'restarts the reminder clock. RC602 closed.';
revoke all on function reserve.post_incident_update(text, text, text) from public;
grant execute on function reserve.post_incident_update(text, text, text) to service_role;

create function reserve.resolve_incident(p_incident text, p_note text, p_operator text default null)
returns reserve.incidents
language plpgsql
security definer
set search_path = ''
as $$
declare
  who text := reserve.oncall_actor('resolve_incident', p_operator, p_note);
  i reserve.incidents := reserve.lock_incident(p_incident);
begin
  if i.status not in ('open', 'acknowledged') then
    raise exception using errcode = 'RC602', message = format('incident %s is %s: resolved already', i.reference, i.status);
  end if;
  update reserve.incidents x
     set status = 'monitoring', resolved_at = now(), resolved_by = who,
         acknowledged_at = coalesce(x.acknowledged_at, now()), acknowledged_by = coalesce(x.acknowledged_by, who),
         monitoring_until = now() + make_interval(mins => reserve.severity_minutes('incident_monitoring_minutes', x.severity)),
         review_due_at = now() + make_interval(hours => reserve.setting_int('incident_review_hours'))
   where x.id = i.id returning * into i;
  insert into reserve.incident_events (incident_id, kind, actor, note) values (i.id, 'fix_deployed', who, btrim(p_note));
  perform reserve.enqueue_incident_notification(i, 'incident', 'fix-deployed',
    format('%s fix deployed by %s: %s. Monitoring until %s', i.reference, who, btrim(p_note),
           to_char(i.monitoring_until at time zone 'UTC', 'HH24:MI "UTC"')));
  return i;
end
$$;
comment on function reserve.resolve_incident(text, text, text) is
  'Records the fix (note) as the proven operator and starts monitoring (incident_monitoring_minutes: P1 1 h, '
  'P2 4 h); the incident closes when monitoring ends with its alert quiet. RC602 unless open or acknowledged.';
revoke all on function reserve.resolve_incident(text, text, text) from public;
grant execute on function reserve.resolve_incident(text, text, text) to service_role;

create function reserve.add_incident_action_item(p_incident text, p_action text, p_owner text, p_due_date date,
                                                 p_operator text default null)
returns reserve.incident_action_items
language plpgsql
security definer
set search_path = ''
as $$
declare
  who text := reserve.oncall_actor('add_incident_action_item', p_operator, p_action);
  i reserve.incidents := reserve.lock_incident(p_incident);
  a reserve.incident_action_items;
begin
  if coalesce(length(btrim(p_owner)), 0) = 0 or p_due_date is null then
    raise exception using errcode = 'RC001', message = format('an action item of %s needs an owner and a due date', i.reference);
  end if;
  insert into reserve.incident_action_items (incident_id, action, owner, due_date, created_by)
  values (i.id, btrim(p_action), btrim(p_owner), p_due_date, who) returning * into a;
  insert into reserve.incident_events (incident_id, kind, actor, note)
  values (i.id, 'action_item', who, format('%s (owner %s, due %s)', a.action, a.owner, a.due_date));
  return a;
end
$$;
comment on function reserve.add_incident_action_item(text, text, text, date, text) is
  'Adds an action item to the incident''s review: the action, its owner and due date (RC001 without).';
revoke all on function reserve.add_incident_action_item(text, text, text, date, text) from public;
grant execute on function reserve.add_incident_action_item(text, text, text, date, text) to service_role;

create function reserve.set_action_item_status(p_item_id uuid, p_status text, p_operator text default null)
returns reserve.incident_action_items
language plpgsql
security definer
set search_path = ''
as $$
declare
  who text := reserve.oncall_actor('set_action_item_status', p_operator, p_status);
  a reserve.incident_action_items;
begin
  if p_status not in ('open', 'done', 'dropped') then
    raise exception using errcode = 'RC001', message = 'status is open, done or dropped';
  end if;
  update reserve.incident_action_items x set status = p_status where x.id = p_item_id returning * into a;
  if a.id is null then
    raise exception using errcode = 'RC601', message = format('action item %s not found', p_item_id);
  end if;
  return a;
end
$$;
comment on function reserve.set_action_item_status(uuid, text, text) is 'Marks an action item open, done or dropped (by a proven operator).';
revoke all on function reserve.set_action_item_status(uuid, text, text) from public;
grant execute on function reserve.set_action_item_status(uuid, text, text) to service_role;

-- Internal (evaluate_alerts): escalations, reminders, the end of monitoring. Returns what it did.
create function reserve.advance_incident_clocks(out escalated integer, out reminded integer, out closed integer)
language plpgsql
security definer
set search_path = ''
as $$
declare
  i reserve.incidents;
  every interval := make_interval(mins => reserve.setting_int('incident_update_minutes'));
  quiet boolean;
begin
  escalated := 0; reminded := 0; closed := 0;
  for i in select * from reserve.incidents x where x.status = 'open' and x.escalated_at is null and x.ack_due_at <= now()
           order by x.opened_at for update loop
    update reserve.incidents x set escalated_at = now() where x.id = i.id returning * into i;
    insert into reserve.incident_events (incident_id, kind, actor, note)
    values (i.id, 'escalated', 'system', format('not acknowledged within %s minutes',
            reserve.severity_minutes('incident_response_minutes', i.severity)));
    perform reserve.enqueue_incident_notification(i, 'escalation', 'escalation',
      format('ESCALATION: %s (%s %s) not acknowledged within %s minutes', i.reference, i.severity, i.title,
             reserve.severity_minutes('incident_response_minutes', i.severity)));
    escalated := escalated + 1;
  end loop;

  for i in select * from reserve.incidents x
           where x.status in ('open', 'acknowledged') and x.severity in ('P1', 'P2')
             and greatest(x.opened_at, x.last_update_at, x.reminded_at) <= now() - every
           order by x.opened_at for update loop
    update reserve.incidents x set reminded_at = now() where x.id = i.id returning * into i;
    insert into reserve.incident_events (incident_id, kind, actor, note)
    values (i.id, 'reminder', 'system', format('no update for %s', every));
    perform reserve.enqueue_incident_notification(i, 'reminder', format('reminder-%s', to_char(now(), 'YYYYMMDDHH24MISS')),
      format('%s: no status update for %s minutes; post one (the runbook asks every %s minutes)', i.reference,
             round(extract(epoch from now() - greatest(i.opened_at, i.last_update_at)) / 60),
             reserve.setting_int('incident_update_minutes')));
    reminded := reminded + 1;
  end loop;

  for i in select * from reserve.incidents x where x.status = 'monitoring' and x.monitoring_until <= now()
           order by x.opened_at for update loop
    select coalesce(s.state, 'resolved') = 'resolved' into quiet from reserve.alert_states s where s.alert_name = i.alert_name;
    if coalesce(quiet, true) then
      update reserve.incidents x set status = 'closed', closed_at = now() where x.id = i.id returning * into i;
      insert into reserve.incident_events (incident_id, kind, actor, note)
      values (i.id, 'closed', 'system', format('monitoring over with %s resolved; review due by %s', i.alert_name,
              to_char(i.review_due_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI "UTC"')));
      perform reserve.enqueue_incident_notification(i, 'incident', 'closed',
        format('%s closed after monitoring; post-incident review due by %s', i.reference,
               to_char(i.review_due_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI "UTC"')));
      closed := closed + 1;
    end if;
  end loop;
end
$$;
revoke all on function reserve.advance_incident_clocks() from public;

create view reserve.incident_clocks with (security_invoker = true) as
select i.id, i.reference, i.alert_name, i.severity, i.title, i.status, i.detected_at, i.opened_at,
       i.opened_at + make_interval(mins => reserve.setting_int('incident_triage_minutes')) as triage_due_at,
       i.ack_due_at, i.acknowledged_at, i.acknowledged_by,
       extract(epoch from coalesce(i.acknowledged_at, now()) - i.opened_at)::integer as seconds_to_acknowledge,
       i.acknowledged_at is null and now() > i.ack_due_at as ack_overdue,
       i.escalated_at,
       greatest(i.opened_at, i.last_update_at) as last_update_at,
       greatest(i.opened_at, i.last_update_at) + make_interval(mins => reserve.setting_int('incident_update_minutes')) as next_update_due_at,
       i.resolved_at, i.resolved_by, i.monitoring_until, i.closed_at, i.review_due_at,
       s.state as alert_state
from reserve.incidents i
left join reserve.alert_states s on s.alert_name = i.alert_name;
comment on view reserve.incident_clocks is
  'Every incident with the runbook''s clocks: triage due, acknowledgement due and overdue, time to '
  'acknowledge, next update due, monitoring end, review due, and the alert''s state now.';
revoke all on reserve.incident_clocks from public, anon, authenticated;
grant select on reserve.incident_clocks to service_role;
