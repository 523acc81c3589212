-- enqueue_incident_notification never set silenced_by, so under a silence an incident's escalation still
-- paged PagerDuty and its escalation, reminders and updates still posted to Slack, though a silence holds
-- back every notification of its alerts. They now wait as an alert's do: held back while the silence holds,
-- sent by the evaluation after it ends while the incident is not closed, never sent when the incident
-- closes under it. A resolve of the escalation page is never held back; if the page itself was held back,
-- it is cancelled and its resolve is not sent.
CREATE OR REPLACE FUNCTION reserve.enqueue_incident_notification(i reserve.incidents, p_kind text, p_key text, p_text text, p_pagerduty_action text DEFAULT NULL::text)
 RETURNS integer
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
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
  if req.event_action = 'resolve' then
    -- as an alert's: a page still held back by a silence is never sent, and neither is its resolve; the
    -- resolve of a page that went out is never held back
    update reserve.notification_outbox o set cancelled_at = now()
     where o.incident_id = i.id and o.kind = p_kind and o.silenced_by is not null
       and o.delivered_at is null and o.cancelled_at is null;
    if not exists (select 1 from reserve.notification_outbox o
                   where o.incident_id = i.id and o.kind = p_kind and o.event_action = 'trigger' and o.cancelled_at is null) then
      return 0;
    end if;
  else
    req.silenced_by := reserve.alert_silence_for(i.alert_name, i.severity);
  end if;
  return reserve.enqueue_routed(req,
    case when p_kind = 'escalation' then array['pagerduty', 'slack'] else array['slack'] end);
end
$function$
;

CREATE OR REPLACE FUNCTION reserve.advance_incident_clocks(OUT escalated integer, OUT reminded integer, OUT closed integer)
 RETURNS record
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
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
      -- closed under a silence: what it held back of this incident (its close too) is never sent
      update reserve.notification_outbox o set cancelled_at = now()
       where o.incident_id = i.id and o.kind <> 'alert' and o.silenced_by is not null
         and o.delivered_at is null and o.cancelled_at is null;
      closed := closed + 1;
    end if;
  end loop;
end
$function$
;

CREATE OR REPLACE FUNCTION reserve.evaluate_alerts()
 RETURNS reserve.alert_evaluation
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  started timestamptz := clock_timestamp();
  result reserve.alert_evaluation;
  e reserve.alert_events;
  r reserve.alert_rules;
  inc reserve.incidents;
  trigger_event bigint;
  req reserve.notification_request;
  silence uuid;
  c text;
  clocks record;
  n integer;
begin
  -- the same lock check_all_alerts takes: while it is held no other evaluation writes or notifies events
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('reserve.check_all_alerts'));

  select count(*), count(*) filter (where a.state = 'firing'), count(*) filter (where a.state = 'pending')
    into result.evaluated, result.firing, result.pending
  from reserve.check_all_alerts() a;
  result.triggered := 0; result.resolved := 0; result.notifications := 0; result.silenced := 0;
  result.released := 0; result.incidents_opened := 0;

  -- every transition not notified yet, whoever wrote it: this evaluation's check_all_alerts() or an
  -- operator's earlier call (the runbook's queries evaluate too); each is notified once, then marked
  for e in select * from reserve.alert_events x where x.notified_at is null order by x.id for update loop
    update reserve.alert_events x set notified_at = now() where x.id = e.id;
    continue when e.state not in ('firing', 'resolved');
    select * into r from reserve.alert_rules x where x.alert_name = e.alert_name;
    inc := null;
    if e.state = 'firing' then
      result.triggered := result.triggered + 1;
      if r.severity in ('P1', 'P2') then
        select count(*) into n from reserve.incidents x where x.alert_name = r.alert_name and x.status <> 'closed';
        inc := reserve.open_or_join_incident(r.alert_name, e.id);
        if n = 0 then result.incidents_opened := result.incidents_opened + 1; end if;
      end if;
      silence := reserve.alert_silence_for(r.alert_name, r.severity);
      req := row(format('alert:%s:%s:trigger', r.alert_name, e.id), null, 'trigger', 'alert',
                 'reserve/' || r.alert_name, r.severity, r.alert_name, e.id, inc.id,
                 reserve.alert_notification_payload(r.alert_name, e, inc.reference), silence)::reserve.notification_request;
      n := reserve.enqueue_routed(req);
      if silence is not null then result.silenced := result.silenced + n; else result.notifications := result.notifications + n; end if;
    else
      -- resolved: only an episode that fired was notified (pending never was)
      select max(x.id) into trigger_event from reserve.alert_events x
      where x.alert_name = e.alert_name and x.state = 'firing' and x.id < e.id
        and not exists (select 1 from reserve.alert_events y
                        where y.alert_name = e.alert_name and y.state = 'resolved' and y.id > x.id and y.id < e.id);
      continue when trigger_event is null;
      result.resolved := result.resolved + 1;
      select * into inc from reserve.incidents x where x.alert_name = r.alert_name and x.status <> 'closed';
      if inc.id is not null then
        insert into reserve.incident_events (incident_id, kind, actor, note, alert_event_id)
        values (inc.id, 'alert_resolved', 'system', format('%s resolved: %s', r.alert_name, e.details), e.id);
      end if;
      -- a trigger still held back by a silence is never sent, and neither is its resolve
      update reserve.notification_outbox o set cancelled_at = now()
       where o.alert_event_id = trigger_event and o.kind = 'alert' and o.silenced_by is not null and o.delivered_at is null;
      for c in select distinct o.channel from reserve.notification_outbox o
               where o.alert_event_id = trigger_event and o.kind = 'alert' and o.cancelled_at is null order by 1 loop
        req := row(format('alert:%s:%s:resolve', r.alert_name, e.id), null, 'resolve', 'alert',
                   'reserve/' || r.alert_name, r.severity, r.alert_name, e.id, inc.id,
                   reserve.alert_notification_payload(r.alert_name, e, inc.reference), null)::reserve.notification_request;
        perform reserve.enqueue_routed(req, array[c]);
        result.notifications := result.notifications + 1;
      end loop;
    end if;
  end loop;

  -- a silence that ended while its alert still fires: the held-back trigger goes out now; one that ended
  -- while its incident is not closed: the incident's held-back escalation, reminders and posts go out now
  with released as (
    update reserve.notification_outbox o set silenced_by = null, next_attempt_at = now()
    from reserve.alert_states s
    where o.silenced_by is not null and o.delivered_at is null and o.cancelled_at is null and o.kind = 'alert'
      and s.alert_name = o.alert_name and s.state = 'firing'
      and reserve.alert_silence_for(o.alert_name, o.severity) is null
    returning o.id),
  released_incident as (
    update reserve.notification_outbox o set silenced_by = null, next_attempt_at = now()
    from reserve.incidents i
    where o.silenced_by is not null and o.delivered_at is null and o.cancelled_at is null and o.kind <> 'alert'
      and i.id = o.incident_id and i.status <> 'closed'
      and reserve.alert_silence_for(o.alert_name, o.severity) is null
    returning o.id)
  select (select count(*) from released) + (select count(*) from released_incident) into result.released;

  select * into clocks from reserve.advance_incident_clocks();
  result.escalated := clocks.escalated;
  result.reminded := clocks.reminded;
  result.incidents_closed := clocks.closed;
  result.duration_ms := round(extract(epoch from clock_timestamp() - started) * 1000, 1);

  insert into reserve.job_heartbeats (job, started_at, ok, summary)
  values ('evaluate_alerts', started, true, to_jsonb(result));
  return result;
end
$function$
;

comment on function reserve.create_alert_silence(p_request reserve.alert_silence_request, p_operator text) is 'Holds back notifications of matching alerts and of their incidents (escalation, reminders, updates) until ends_at (at most 30 days), with the proven author (oncall_actor) and the reason. RC001 for a bad matcher or window, RC604 without a proven operator.';
comment on function reserve.end_alert_silence(p_silence_id uuid, p_reason text, p_operator text) is 'Ends a silence now (held-back notifications of alerts still firing, and of incidents not closed, are sent at the next evaluation). RC603 unknown or over.';
