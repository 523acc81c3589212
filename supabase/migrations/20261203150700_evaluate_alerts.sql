-- evaluate_alerts(): what runs every minute. check_all_alerts() moves the alerts' state; every transition
-- it made is turned into outbox notifications in the same transaction (a trigger on firing, a resolve on
-- resolved after firing; pending notifies nobody), held back while a silence matches; firing P1/P2 alerts
-- open or join incidents; the incidents' clocks advance; a heartbeat is left. Called by the notify edge
-- function (pg_cron on Supabase, the scheduler of `npm start` locally), which then delivers the outbox.

create type reserve.alert_evaluation as (
  evaluated          integer,
  firing             integer,
  pending            integer,
  triggered          integer,
  resolved           integer,
  notifications      integer,
  silenced           integer,
  released           integer,
  incidents_opened   integer,
  escalated          integer,
  reminded           integer,
  incidents_closed   integer,
  duration_ms        numeric
);
comment on type reserve.alert_evaluation is
  'What one evaluate_alerts() did: alerts evaluated, firing and pending now, transitions to firing and '
  'resolved, notifications enqueued, held back by silences and released from ended silences, incidents '
  'opened, escalated, reminded and closed, and its duration.';

-- Internal: the notification payload of an alert transition.
create function reserve.alert_notification_payload(p_alert_name text, p_event reserve.alert_events, p_incident text)
returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
  select jsonb_build_object(
    'alert_name', r.alert_name, 'severity', r.severity, 'state', p_event.state,
    'summary', r.summary || coalesce(': ' || p_event.details, ''),
    'runbook_section', r.runbook_section, 'check_name', r.check_name,
    'observed_value', p_event.observed_value, 'threshold', s.threshold, 'details', p_event.details,
    'first_seen', s.active_since, 'fired_at', s.fired_at, 'resolved_at', s.resolved_at, 'at', p_event.at,
    'fingerprint', md5('reserve/' || r.alert_name || '/' || r.check_name),
    'incident_reference', p_incident)
  from reserve.alert_rules r
  left join reserve.alert_states s on s.alert_name = r.alert_name
  where r.alert_name = p_alert_name
$$;
revoke all on function reserve.alert_notification_payload(text, reserve.alert_events, text) from public;

create function reserve.evaluate_alerts() returns reserve.alert_evaluation
language plpgsql
security definer
set search_path = ''
as $$
declare
  started timestamptz := clock_timestamp();
  result reserve.alert_evaluation;
  last_event bigint;
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
  -- the same lock check_all_alerts takes: the events after last_event are this evaluation's own
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('reserve.check_all_alerts'));
  select coalesce(max(x.id), 0) into last_event from reserve.alert_events x;

  select count(*), count(*) filter (where a.state = 'firing'), count(*) filter (where a.state = 'pending')
    into result.evaluated, result.firing, result.pending
  from reserve.check_all_alerts() a;
  result.triggered := 0; result.resolved := 0; result.notifications := 0; result.silenced := 0;
  result.released := 0; result.incidents_opened := 0;

  for e in select * from reserve.alert_events x where x.id > last_event and x.state in ('firing', 'resolved') order by x.id loop
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

  -- a silence that ended while its alert still fires: the held-back trigger goes out now
  with released as (
    update reserve.notification_outbox o set silenced_by = null, next_attempt_at = now()
    from reserve.alert_states s
    where o.silenced_by is not null and o.delivered_at is null and o.cancelled_at is null and o.kind = 'alert'
      and s.alert_name = o.alert_name and s.state = 'firing'
      and reserve.alert_silence_for(o.alert_name, o.severity) is null
    returning o.id)
  select count(*) into result.released from released;

  select * into clocks from reserve.advance_incident_clocks();
  result.escalated := clocks.escalated;
  result.reminded := clocks.reminded;
  result.incidents_closed := clocks.closed;
  result.duration_ms := round(extract(epoch from clock_timestamp() - started) * 1000, 1);

  insert into reserve.job_heartbeats (job, started_at, ok, summary)
  values ('evaluate_alerts', started, true, to_jsonb(result));
  return result;
end
$$;
comment on function reserve.evaluate_alerts() is
  'One evaluation: check_all_alerts(), then every transition it made into notification_outbox rows '
  '(routes by severity, silences), incidents opened/joined for firing P1/P2, incident clocks advanced '
  '(escalation, reminders, closing), a job_heartbeats row (job evaluate_alerts). Returns alert_evaluation.';
revoke all on function reserve.evaluate_alerts() from public;
grant execute on function reserve.evaluate_alerts() to service_role;

