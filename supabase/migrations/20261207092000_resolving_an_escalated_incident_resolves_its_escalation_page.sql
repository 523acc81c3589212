-- Only acknowledge_incident resolved the escalation page (dedup_key reserve/<INC>/escalation): an
-- incident escalated, never acknowledged and then resolved left that page triggered at PagerDuty for good.
-- resolve_incident now queues the same escalation-resolve (its idempotency key keeps it to one); every
-- incident closes through monitoring, which only resolve_incident starts, so closing needs nothing more.
CREATE OR REPLACE FUNCTION reserve.resolve_incident(p_incident text, p_note text, p_operator text DEFAULT NULL::text)
 RETURNS reserve.incidents
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
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
  -- an escalation page that went out is resolved: the incident is handled, acknowledged first or not
  -- (acknowledge_incident queues the same key: once only)
  if i.escalated_at is not null then
    perform reserve.enqueue_incident_notification(i, 'escalation', 'escalation-resolve',
      format('%s resolved by %s', i.reference, who), 'resolve');
  end if;
  perform reserve.enqueue_incident_notification(i, 'incident', 'fix-deployed',
    format('%s fix deployed by %s: %s. Monitoring until %s', i.reference, who, btrim(p_note),
           to_char(i.monitoring_until at time zone 'UTC', 'HH24:MI "UTC"')));
  return i;
end
$function$
;

comment on function reserve.resolve_incident(p_incident text, p_note text, p_operator text) is 'Records the fix (note) as the proven operator and starts monitoring (incident_monitoring_minutes: P1 1 h, P2 4 h), resolving the escalation page if one went out; the incident closes when monitoring ends with its alert quiet. RC602 unless open or acknowledged.';
