-- evaluate_alerts notified only the alert_events written after the max(id) it read at its start, but
-- check_all_alerts() writes the transitions: an operator running the runbook's Step 1 query (or any other
-- caller) moved an alert to firing or resolved, and the next evaluation found no new event, so nobody was
-- paged and no incident opened. Each event now carries notified_at; evaluate_alerts notifies every event
-- not notified yet, under check_all_alerts' lock, and marks it: each transition is notified exactly once,
-- whoever evaluated it. Events already written are taken as notified (their evaluations are over).
alter table reserve.alert_events add column notified_at timestamp with time zone;
update reserve.alert_events set notified_at = at;
create index alert_events_not_notified_idx on reserve.alert_events (id) where notified_at is null;
comment on column reserve.alert_events.notified_at is 'When evaluate_alerts turned this transition into notifications (null: not yet; pending transitions notify nobody and are only marked).';

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
$function$
;

comment on function reserve.evaluate_alerts() is 'One evaluation: check_all_alerts(), then every alert_events transition not notified yet (its own, or one an earlier check_all_alerts() call wrote) into notification_outbox rows (routes by severity, silences) and marked notified_at, incidents opened/joined for firing P1/P2, incident clocks advanced (escalation, reminders, closing), a job_heartbeats row (job evaluate_alerts). Returns alert_evaluation.';
