-- The post-incident review of the runbook's template, generated from the data: the timeline from the
-- alert's events, the incident's events and the operator actions recorded in the audit trail; the impact
-- (payments, guests and money involved) computed over the incident's window. Root cause, what went well
-- and wrong, and lessons are left for people; action items come from incident_action_items.

-- What people changed in a window: audit rows whose actor is a person (not one of the shared database
-- roles the functions and jobs run as), one row per transaction, with its reason (or, without one, what
-- it changed). Read through this function so the timeline does not depend on how many audit rows a
-- transaction writes.
create function reserve.operator_actions(p_from timestamptz, p_to timestamptz)
returns table (occurred_at timestamptz, actor text, reason text, tables text[], row_changes bigint)
language sql
stable
security definer
set search_path = ''
as $$
  select min(a.occurred_at), a.actor,
         coalesce(max(a.reason), string_agg(distinct a.action || ' ' || a.table_name, ', ')),
         array_agg(distinct a.table_name order by a.table_name), count(*)
  from reserve.audit_logs a
  where a.occurred_at >= p_from and a.occurred_at <= p_to
    and a.actor <> all (array['postgres', 'supabase_admin', 'service_role', 'authenticator', 'authenticated', 'anon',
                              'supabase_auth_admin', 'supabase_storage_admin', 'dashboard_user', 'system'])
  group by a.xact_id, a.actor
  order by 1
$$;
comment on function reserve.operator_actions(timestamptz, timestamptz) is
  'What people changed between p_from and p_to (audit rows of a named actor, not a shared database role), '
  'one row per transaction: when, who, why (or what), which tables and how many rows.';
revoke all on function reserve.operator_actions(timestamptz, timestamptz) from public;
grant execute on function reserve.operator_actions(timestamptz, timestamptz) to service_role;

-- The incident's impact: payments created in its window that did not succeed on time (failed, still in
-- flight, expired, or confirmed over 15 minutes late), their guests and their money; webhooks that failed.
create function reserve.incident_impact(p_incident_id uuid)
returns table (window_start timestamptz, window_end timestamptz, payments_in_window bigint, payments_affected bigint,
               guests_affected bigint, money_affected jsonb, by_status jsonb, webhooks_failed bigint, refunds_in_window bigint)
language sql
stable
security definer
set search_path = ''
as $$
  with w as (
    select i.detected_at as f, coalesce(i.resolved_at, now()) as t from reserve.incidents i where i.id = p_incident_id
  ), p as (
    select p.*, bi.guest_email, bi.client_id,
           p.status <> 'succeeded' or p.succeeded_at > p.created_at + interval '15 minutes' as affected
    from w join reserve.payments p on p.created_at >= w.f and p.created_at <= w.t
    join reserve.booking_intents bi on bi.id = p.booking_intent_id
  )
  select w.f, w.t,
         (select count(*) from p),
         (select count(*) from p where affected),
         (select count(distinct coalesce(guest_email, client_id, booking_intent_id::text)) from p where affected),
         coalesce((select jsonb_object_agg(currency, total) from (select currency, sum(amount) as total from p where affected group by currency) m), '{}'),
         coalesce((select jsonb_object_agg(status, n) from (select status, count(*) as n from p group by status) s), '{}'),
         (select count(*) from reserve.processed_webhooks pw where pw.received_at >= w.f and pw.received_at <= w.t and pw.status in ('failed', 'dead')),
         (select count(*) from reserve.payments r where r.refunded_at >= w.f and r.refunded_at <= w.t)
  from w
$$;
comment on function reserve.incident_impact(uuid) is
  'Computed impact of an incident over detected_at .. resolved_at (or now): payments created and affected '
  '(not succeeded, or succeeded over 15 minutes late), distinct guests affected, affected money by currency '
  '(minor units), payments by status, failed or dead webhooks, refunds made.';
revoke all on function reserve.incident_impact(uuid) from public;
grant execute on function reserve.incident_impact(uuid) to service_role;

-- The timeline rows of an incident, oldest first.
create function reserve.incident_timeline(p_incident_id uuid)
returns table (at timestamptz, source text, actor text, what text)
language sql
stable
security definer
set search_path = ''
as $$
  with i as (select * from reserve.incidents x where x.id = p_incident_id),
  w as (select i.detected_at - interval '1 minute' as f, coalesce(i.closed_at, now()) as t from i)
  select * from (
    select e.at, 'alert'::text, 'system'::text,
           format('alert %s %s (observed %s): %s', e.alert_name, e.state, coalesce(e.observed_value::text, '-'), coalesce(e.details, ''))
    from i, w, reserve.alert_events e
    where e.alert_name = i.alert_name and e.at >= w.f and e.at <= w.t
    union all
    select ie.at, 'incident', ie.actor, ie.kind || coalesce(': ' || ie.note, '')
    from i join reserve.incident_events ie on ie.incident_id = i.id
    union all
    select oa.occurred_at, 'operator', oa.actor,
           format('%s (%s row changes in %s)', oa.reason, oa.row_changes, array_to_string(oa.tables, ', '))
    from w, reserve.operator_actions(w.f, w.t) oa
    -- the incident functions' own audit rows are in incident_events already
    where not (oa.tables <@ array['incidents', 'incident_action_items', 'alert_silences'])
  ) t(at, source, actor, what)
  order by 1, 2
$$;
comment on function reserve.incident_timeline(uuid) is
  'The incident''s timeline: its alert''s state changes, its own events, and operator actions in its window.';
revoke all on function reserve.incident_timeline(uuid) from public;
grant execute on function reserve.incident_timeline(uuid) to service_role;

create function reserve.incident_review(p_incident text) returns text
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  i reserve.incidents;
  im record;
  t record;
  a record;
  md text;
  ended timestamptz;
  mins integer;
  money text;
begin
  if p_incident ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
    select * into i from reserve.incidents x where x.id = p_incident::uuid;
  else
    select * into i from reserve.incidents x where x.reference = upper(btrim(p_incident));
  end if;
  if i.id is null then
    raise exception using errcode = 'RC601', message = format('incident %s not found', p_incident);
  end if;
  select * into im from reserve.incident_impact(i.id);
  ended := coalesce(i.resolved_at, now());
  mins := floor(extract(epoch from ended - i.detected_at) / 60);
  select coalesce(string_agg(format('%s %s', k, to_char(v::numeric / 100, 'FM999G999G999G990D00')), ', ' order by k), 'none')
    into money from jsonb_each_text(im.money_affected) x(k, v);

  md := format(E'# Post-incident review: %s\n\n', i.reference)
     || format(E'**Incident ID:** %s  \n', i.reference)
     || format(E'**Date:** %s  \n', to_char(i.opened_at at time zone 'UTC', 'YYYY-MM-DD'))
     || format(E'**Severity:** %s  \n', i.severity)
     || format(E'**Duration:** %s:%s%s  \n', lpad((mins / 60)::text, 2, '0'), lpad((mins % 60)::text, 2, '0'),
               case when i.resolved_at is null then ' (not resolved yet)' else '' end)
     || format(E'**Reporter:** automated alert `%s`%s  \n', i.alert_name,
               case when i.acknowledged_by is not null then format(' (acknowledged by %s)', i.acknowledged_by) else '' end)
     || format(E'**Status:** %s%s\n\n', i.status,
               case when i.review_due_at is not null
                    then format('; review due by %s', to_char(i.review_due_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI "UTC"')) else '' end)
     || format(E'**Summary:** %s\n\n', i.title)
     || E'### Timeline\n'
     || format(E'- %s - Issue detected (`%s` started to hold)\n', to_char(i.detected_at at time zone 'UTC', 'HH24:MI'), i.alert_name)
     || format(E'- %s - Incident declared\n', to_char(i.opened_at at time zone 'UTC', 'HH24:MI'))
     || case when i.acknowledged_at is not null then format(E'- %s - Acknowledged by %s (%s min after it opened)\n',
               to_char(i.acknowledged_at at time zone 'UTC', 'HH24:MI'), i.acknowledged_by,
               round(extract(epoch from i.acknowledged_at - i.opened_at) / 60)) else '' end
     || case when i.resolved_at is not null then format(E'- %s - Fix deployed by %s\n',
               to_char(i.resolved_at at time zone 'UTC', 'HH24:MI'), i.resolved_by) else '' end
     || case when i.closed_at is not null then format(E'- %s - Incident resolved (monitoring over)\n',
               to_char(i.closed_at at time zone 'UTC', 'HH24:MI')) else '' end
     || E'\nEverything recorded, oldest first (UTC):\n\n';
  for t in select * from reserve.incident_timeline(i.id) loop
    md := md || format(E'- %s - [%s] %s: %s\n', to_char(t.at at time zone 'UTC', 'HH24:MI:SS'), t.source, t.actor,
                       replace(t.what, E'\n', ' '));
  end loop;
  md := md
     || E'\n### Root Cause\n[Detailed explanation]\n\n'
     || E'### Impact\n'
     || format(E'Computed over %s .. %s UTC.\n\n', to_char(im.window_start at time zone 'UTC', 'YYYY-MM-DD HH24:MI'),
               to_char(im.window_end at time zone 'UTC', 'YYYY-MM-DD HH24:MI'))
     || format(E'- **Customers Affected:** %s guests (%s of the %s payments created in the window did not succeed on time)\n',
               im.guests_affected, im.payments_affected, im.payments_in_window)
     || format(E'- **Financial Impact:** %s in affected payments\n', money)
     || format(E'- **Payments by status:** %s\n', coalesce((select string_agg(format('%s %s', k, v), ', ' order by k)
                                                           from jsonb_each_text(im.by_status) x(k, v)), 'none'))
     || format(E'- **Webhooks failed or dead:** %s; **refunds made:** %s\n', im.webhooks_failed, im.refunds_in_window)
     || E'- **Reputational Impact:** [Low/Medium/High]\n\n'
     || E'### What Went Well\n1. \n2. \n\n'
     || E'### What Went Wrong\n1. \n2. \n\n'
     || E'### Action Items\n| Action | Owner | Due Date | Status |\n|--------|-------|----------|--------|\n';
  for a in select * from reserve.incident_action_items x where x.incident_id = i.id order by x.due_date, x.created_at loop
    md := md || format(E'| %s | %s | %s | %s |\n', replace(a.action, '|', '/'), replace(a.owner, '|', '/'), a.due_date, a.status);
  end loop;
  if not found then
    md := md || E'| | | | |\n';
  end if;
  return md || E'\n### Lessons Learned\n[Free form]\n';
end
$$;
comment on function reserve.incident_review(text) is
  'The runbook''s post-incident review (markdown) of an incident (id or INC- reference): header, the '
  'timeline from alert events, incident events and operator actions, the computed impact, action items '
  'with owner and due date; root cause, what went well/wrong and lessons left for people. RC601 unknown.';
revoke all on function reserve.incident_review(text) from public;
grant execute on function reserve.incident_review(text) to service_role;
