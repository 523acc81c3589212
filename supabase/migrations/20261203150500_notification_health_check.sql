-- The outbox watches itself: system_health_check() gains notification_outbox (minutes the oldest
-- undelivered notification has waited since it was due), and the alert notifications_undeliverable (P2)
-- fires past notification_undeliverable_minutes. Its own notification goes out on whichever channel still
-- works (Slack when PagerDuty is down, and the other way round).
--
-- The checks so far stay one function (renamed system_health_checks_core); system_health_check() is the
-- core's rows followed by oncall_health_checks()'s, so a later change to either keeps the other.

create function reserve.oncall_health_checks()
returns table (check_name text, status text, observed_value numeric, threshold text, details text)
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  limit_min integer := reserve.setting_int('notification_undeliverable_minutes');
  oldest timestamptz;
  waiting bigint;
  failing bigint;
begin
  select min(o.due_at), count(*), count(*) filter (where o.attempts > 0)
    into oldest, waiting, failing
  from reserve.notification_outbox o
  where o.delivered_at is null and o.silenced_by is null and o.cancelled_at is null and o.due_at <= now();
  check_name := 'notification_outbox';
  observed_value := round(coalesce(extract(epoch from now() - oldest) / 60, 0), 1);
  status := case when observed_value > limit_min then 'WARNING' else 'OK' end;
  threshold := format('oldest undelivered <= %s min', limit_min);
  details := case when waiting = 0 then 'every due notification was delivered'
                  else format('%s undelivered (%s failed at least once), the oldest due %s min ago', waiting, failing, observed_value) end;
  return next;
end
$$;
comment on function reserve.oncall_health_checks() is
  'On-call checks for system_health_check(): notification_outbox, minutes the oldest due undelivered notification has waited.';
revoke all on function reserve.oncall_health_checks() from public;
grant execute on function reserve.oncall_health_checks() to service_role;

alter function reserve.system_health_check() rename to system_health_checks_core;
comment on function reserve.system_health_checks_core() is
  'The payment, booking, ledger and job checks of system_health_check() (which adds oncall_health_checks()).';

create function reserve.system_health_check()
returns table (check_name text, status text, observed_value numeric, threshold text, details text)
language plpgsql
security definer
set search_path = ''
as $$
begin
  return query select * from reserve.system_health_checks_core();
  return query select * from reserve.oncall_health_checks();
end
$$;
comment on function reserve.system_health_check() is
  'Every health check, one row each: system_health_checks_core() (ledger, bookings, payments, webhooks, '
  'jobs, database, money) then oncall_health_checks() (notification outbox). status OK | WARNING | '
  'CRITICAL, observed value, threshold and details. Only reads.';
revoke all on function reserve.system_health_check() from public;
grant execute on function reserve.system_health_check() to service_role;

insert into reserve.alert_rules (alert_name, check_name, fire_on, severity, for_duration, runbook_section, summary) values
  ('notifications_undeliverable', 'notification_outbox', 'WARNING', 'P2', '0', 'P2: ALERTS NOT DELIVERED',
   'Alert notifications could not be delivered (PagerDuty or Slack refusing or away)');
