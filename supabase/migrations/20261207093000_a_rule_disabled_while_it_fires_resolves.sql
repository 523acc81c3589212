-- check_all_alerts evaluates only enabled rules, so a rule disabled (alert_rules.is_enabled = false) while
-- pending or firing stayed firing for good: no resolve was sent and its incident never closed. Such an
-- alert now gets a resolved transition (details 'rule disabled'), which evaluate_alerts notifies as any
-- resolve.
CREATE OR REPLACE FUNCTION reserve.check_all_alerts()
 RETURNS TABLE(alert_name text, severity text, state text, observed_value numeric, threshold text, first_seen timestamp with time zone, last_evaluated timestamp with time zone, fingerprint text, summary text, runbook_section text, fired_at timestamp with time zone, resolved_at timestamp with time zone, details text)
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  r record;
  s reserve.alert_states;
  holds boolean;
  next_state text;
begin
  -- one evaluation at a time, so two callers never both move an alert (or both page)
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('reserve.check_all_alerts'));

  -- a rule disabled while pending or firing is evaluated no more: it resolves now, or it would fire for good
  for s in select x.* from reserve.alert_states x
           join reserve.alert_rules ar on ar.alert_name = x.alert_name
           where not ar.is_enabled and x.state in ('pending', 'firing')
           order by x.alert_name for update of x loop
    insert into reserve.alert_events (alert_name, state, observed_value, details)
    values (s.alert_name, 'resolved', s.observed_value, 'rule disabled');
    update reserve.alert_states x set state = 'resolved', resolved_at = now(), last_evaluated = now(), details = 'rule disabled'
     where x.alert_name = s.alert_name;
  end loop;

  for r in
    with health as materialized (select * from reserve.system_health_check())
    select ar.*, h.status as check_status, h.observed_value as value, h.threshold as check_threshold, h.details as check_details
    from reserve.alert_rules ar
    left join health h on h.check_name = ar.check_name
    where ar.is_enabled
    order by ar.severity, ar.alert_name
  loop
    holds := r.check_status = 'CRITICAL' or (r.fire_on = 'WARNING' and r.check_status = 'WARNING');
    select * into s from reserve.alert_states x where x.alert_name = r.alert_name for update;
    if holds then
      if s.state is null or s.state = 'resolved' then
        next_state := case when r.for_duration = interval '0' then 'firing' else 'pending' end;
        s.active_since := now();
        s.fired_at := case when next_state = 'firing' then now() end;
        s.resolved_at := null;
      elsif s.state = 'pending' and now() - s.active_since >= r.for_duration then
        next_state := 'firing';
        s.fired_at := now();
      else
        next_state := s.state;
      end if;
    else
      next_state := 'resolved';
      if s.state in ('pending', 'firing') then
        s.resolved_at := now();
      end if;
    end if;

    if next_state is distinct from s.state and not (s.state is null and next_state = 'resolved') then
      insert into reserve.alert_events (alert_name, state, observed_value, details)
      values (r.alert_name, next_state, r.value, r.check_details);
    end if;
    insert into reserve.alert_states as x (alert_name, state, active_since, fired_at, resolved_at, last_evaluated,
                                           observed_value, threshold, details)
    values (r.alert_name, next_state, s.active_since, s.fired_at, s.resolved_at, now(), r.value, r.check_threshold, r.check_details)
    on conflict on constraint alert_states_pkey do update
      set state = excluded.state, active_since = excluded.active_since, fired_at = excluded.fired_at,
          resolved_at = excluded.resolved_at, last_evaluated = excluded.last_evaluated,
          observed_value = excluded.observed_value, threshold = excluded.threshold, details = excluded.details;

    alert_name := r.alert_name;
    severity := r.severity;
    state := next_state;
    observed_value := r.value;
    threshold := r.check_threshold;
    first_seen := s.active_since;
    last_evaluated := now();
    fingerprint := md5('reserve/' || r.alert_name || '/' || r.check_name);
    summary := r.summary || coalesce(': ' || r.check_details, '');
    runbook_section := r.runbook_section;
    fired_at := s.fired_at;
    resolved_at := s.resolved_at;
    details := coalesce(r.check_details, 'check ' || r.check_name || ' did not run');
    return next;
  end loop;
end
$function$
;

comment on function reserve.check_all_alerts() is 'Evaluates every enabled alert rule against system_health_check() and returns one row per alert: severity (P1..P4), state pending | firing | resolved (kept in alert_states between calls; pending until the condition has held for the rule''s for_duration), observed value and threshold, first_seen (start of the episode), a stable fingerprint, a summary and the runbook section to open. A disabled rule still pending or firing resolves (details rule disabled). State changes are kept in alert_events; evaluate_alerts notifies each once, whoever called this.';
