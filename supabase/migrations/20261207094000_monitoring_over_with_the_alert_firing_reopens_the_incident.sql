-- An incident resolved while its alert still fired went into monitoring, and when monitoring ended with
-- the alert still firing it stayed in monitoring for good, silently: no reminder, no close, no word. It is
-- now reopened (a 'reopened' event, open or acknowledged as before, a Slack post, reminders again), as when
-- the alert fires again during monitoring. resolve_incident is not refused while the alert fires: a fix is
-- recorded as it is deployed, before the next evaluation can see the alert resolve, and monitoring is
-- where it is seen to hold. An alert pending at the end of monitoring is waited for: it fires (and
-- reopens) or resolves (and closes).
CREATE OR REPLACE FUNCTION reserve.advance_incident_clocks(OUT escalated integer, OUT reminded integer, OUT closed integer)
 RETURNS record
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  i reserve.incidents;
  every interval := make_interval(mins => reserve.setting_int('incident_update_minutes'));
  alert_state text;
  reopened reserve.incident_events;
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
    alert_state := (select s.state from reserve.alert_states s where s.alert_name = i.alert_name);
    if coalesce(alert_state, 'resolved') = 'resolved' then
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
    elsif alert_state = 'firing' then
      -- monitoring over and the alert never stopped firing: the fix did not hold, the incident is worked
      -- again (its alert's page was never resolved); the reminder clock starts over from now
      update reserve.incidents x set status = case when x.acknowledged_at is null then 'open' else 'acknowledged' end,
             monitoring_until = null, reminded_at = now()
       where x.id = i.id returning * into i;
      insert into reserve.incident_events (incident_id, kind, actor, note)
      values (i.id, 'reopened', 'system', format('monitoring over with %s still firing: the fix did not hold', i.alert_name))
      returning * into reopened;
      perform reserve.enqueue_incident_notification(i, 'incident', format('reopened-%s', reopened.id),
        format('%s reopened: monitoring ended with %s still firing, the fix did not hold; post an update', i.reference, i.alert_name));
    end if;
  end loop;
end
$function$
;

comment on function reserve.advance_incident_clocks() is 'Advances the incident clocks: escalates an open incident past its ack_due_at (PagerDuty and Slack), reminds P1/P2 incidents without an update for incident_update_minutes (Slack), and when monitoring ends closes the incident if its alert is resolved or reopens it if the alert still fires. Called by evaluate_alerts.';
