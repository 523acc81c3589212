-- What GET /functions/v1/metrics exposes to Prometheus, as one read: each health check's value and level,
-- alert states, payments by status and provider (last 24 hours, and in flight now), webhooks by status and
-- their lag, job heartbeats (poller, alert evaluation, retention), the notification outbox's depth and
-- age, open incidents. The function renders the text format; names and help live here, in one place.

create function reserve.prometheus_samples()
returns table (metric text, kind text, help text, labels jsonb, value double precision)
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  return query
  with h as materialized (select * from reserve.system_health_check())
  select 'reserve_health_check_value', 'gauge', 'Observed value of each system_health_check() row (NaN when the check has no number).',
         jsonb_build_object('check', h.check_name), coalesce(h.observed_value::double precision, 'NaN'::double precision)
  from h
  union all
  select 'reserve_health_check_status', 'gauge', 'Level of each health check: 0 OK, 1 WARNING, 2 CRITICAL.',
         jsonb_build_object('check', h.check_name, 'status', h.status),
         case h.status when 'OK' then 0 when 'WARNING' then 1 else 2 end::double precision
  from h;

  return query
  select 'reserve_alert_state', 'gauge', 'Alert state as of the last evaluation: 1 for the state the alert is in, 0 for the others.',
         jsonb_build_object('alert', r.alert_name, 'severity', r.severity, 'state', st.s),
         (coalesce(a.state, 'resolved') = st.s)::integer::double precision
  from reserve.alert_rules r
  cross join (values ('pending'), ('firing'), ('resolved')) st(s)
  left join reserve.alert_states a on a.alert_name = r.alert_name
  where r.is_enabled
  union all
  select 'reserve_alert_last_evaluated_timestamp_seconds', 'gauge', 'When the alerts were last evaluated (Unix time).',
         '{}'::jsonb, coalesce(extract(epoch from max(a.last_evaluated)), 0)::double precision
  from reserve.alert_states a;

  return query
  select 'reserve_payments_24h', 'gauge', 'Payments created in the last 24 hours, by provider and status.',
         jsonb_build_object('provider', p.provider, 'status', p.status), count(*)::double precision
  from reserve.payments p where p.created_at > now() - interval '24 hours'
  group by p.provider, p.status
  union all
  select 'reserve_payments_in_flight', 'gauge', 'Payments pending or processing now, by provider and status.',
         jsonb_build_object('provider', p.provider, 'status', p.status), count(*)::double precision
  from reserve.payments p where p.status in ('pending', 'processing')
  group by p.provider, p.status
  union all
  select 'reserve_payments_in_flight_oldest_age_seconds', 'gauge', 'Age of the oldest payment pending or processing, by provider.',
         jsonb_build_object('provider', p.provider), extract(epoch from now() - min(p.status_changed_at))::double precision
  from reserve.payments p where p.status in ('pending', 'processing')
  group by p.provider;

  return query
  select 'reserve_webhooks_1h', 'gauge', 'Webhook events received in the last hour, by provider and status.',
         jsonb_build_object('provider', w.provider, 'status', w.status), count(*)::double precision
  from reserve.processed_webhooks w where w.received_at > now() - interval '1 hour'
  group by w.provider, w.status
  union all
  select 'reserve_webhook_failures', 'gauge', 'Webhook events failed (to be retried) or dead (given up) now, by provider.',
         jsonb_build_object('provider', w.provider, 'status', w.status), count(*)::double precision
  from reserve.processed_webhooks w where w.status in ('failed', 'dead')
  group by w.provider, w.status
  union all
  select 'reserve_webhook_lag_seconds', 'gauge', 'Webhook lag in the last hour: from the provider''s event to its processing, by provider (max and average).',
         jsonb_build_object('provider', w.provider, 'stat', s.stat),
         case s.stat when 'max' then max(extract(epoch from w.processed_at - coalesce(w.event_created_at, w.received_at)))
                     else avg(extract(epoch from w.processed_at - coalesce(w.event_created_at, w.received_at))) end::double precision
  from reserve.processed_webhooks w cross join (values ('max'), ('avg')) s(stat)
  where w.received_at > now() - interval '1 hour' and w.processed_at is not null
  group by w.provider, s.stat
  union all
  select 'reserve_webhook_last_completed_timestamp_seconds', 'gauge', 'When a webhook event of each provider last completed (Unix time).',
         jsonb_build_object('provider', w.provider), extract(epoch from max(w.processed_at))::double precision
  from reserve.processed_webhooks w where w.status = 'completed' and w.received_at > now() - interval '7 days'
  group by w.provider;

  return query
  select 'reserve_job_last_run_timestamp_seconds', 'gauge', 'When each scheduled job last finished (Unix time): the poller, the alert evaluation.',
         jsonb_build_object('job', j.job), extract(epoch from j.finished_at)::double precision
  from (select distinct on (h.job) h.job, h.finished_at, h.ok from reserve.job_heartbeats h
        where h.job in ('poll_payment_status', 'evaluate_alerts') order by h.job, h.finished_at desc) j
  union all
  select 'reserve_job_last_run_ok', 'gauge', 'Whether each scheduled job''s last run succeeded (1) or not (0).',
         jsonb_build_object('job', j.job), j.ok::integer::double precision
  from (select distinct on (h.job) h.job, h.finished_at, h.ok from reserve.job_heartbeats h
        where h.job in ('poll_payment_status', 'evaluate_alerts') order by h.job, h.finished_at desc) j
  union all
  select 'reserve_job_last_run_timestamp_seconds', 'gauge', 'When each scheduled job last finished (Unix time): the poller, the alert evaluation.',
         jsonb_build_object('job', 'retention_cleanup'), extract(epoch from max(rp.last_run_at))::double precision
  from reserve.retention_policies rp having max(rp.last_run_at) is not null;

  return query
  select 'reserve_notification_outbox_depth', 'gauge', 'Notifications not delivered yet, by channel (held back by a silence or not).',
         jsonb_build_object('channel', c.channel, 'silenced', (c.silenced)::text),
         count(o.id)::double precision
  from (select ch, sl from unnest(array['pagerduty', 'slack', 'digest']) ch cross join unnest(array[false, true]) sl) c(channel, silenced)
  left join reserve.notification_outbox o on o.channel = c.channel and (o.silenced_by is not null) = c.silenced
       and o.delivered_at is null and o.cancelled_at is null
  group by c.channel, c.silenced
  union all
  select 'reserve_notification_outbox_oldest_age_seconds', 'gauge', 'Seconds the oldest due, undelivered notification has waited (0 when none).',
         '{}'::jsonb, coalesce(extract(epoch from now() - min(o.due_at)), 0)::double precision
  from reserve.notification_outbox o
  where o.delivered_at is null and o.silenced_by is null and o.cancelled_at is null and o.due_at <= now()
  union all
  select 'reserve_notification_outbox_failing', 'gauge', 'Undelivered notifications that failed at least once, by channel.',
         jsonb_build_object('channel', o.channel), count(*)::double precision
  from reserve.notification_outbox o
  where o.delivered_at is null and o.cancelled_at is null and o.attempts > 0
  group by o.channel;

  return query
  select 'reserve_incidents_open', 'gauge', 'Incidents not closed, by severity and status.',
         jsonb_build_object('severity', i.severity, 'status', i.status), count(*)::double precision
  from reserve.incidents i where i.status <> 'closed'
  group by i.severity, i.status;
end
$$;
comment on function reserve.prometheus_samples() is
  'Every sample GET /functions/v1/metrics exposes: metric name (reserve_*), type, help, labels, value. Only reads.';
revoke all on function reserve.prometheus_samples() from public;
grant execute on function reserve.prometheus_samples() to service_role;
