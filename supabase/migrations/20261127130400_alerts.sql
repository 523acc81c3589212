-- check_all_alerts(): the runbook's alerts, evaluated from system_health_check() with state kept between
-- calls in the manner of Prometheus alerting rules: a condition that holds is pending until it has held
-- for the rule's `for` duration, then firing; when it stops holding the alert is resolved. Overbooking
-- and ledger imbalance fire at once; one slow webhook does not page.

create table reserve.alert_rules (
  alert_name      text primary key check (alert_name ~ '^[a-z][a-z0-9_]*$'),
  check_name      text not null,
  -- WARNING: the check at WARNING or CRITICAL holds the condition; CRITICAL: only at CRITICAL
  fire_on         text not null default 'WARNING' check (fire_on in ('WARNING', 'CRITICAL')),
  severity        text not null check (severity in ('P1', 'P2', 'P3', 'P4')),
  for_duration    interval not null default interval '0' check (for_duration >= interval '0'),
  runbook_section text not null,
  summary         text not null,
  is_enabled      boolean not null default true
);
comment on table reserve.alert_rules is
  'The alerts check_all_alerts evaluates: which system_health_check row and level holds the condition, '
  'the runbook''s severity (P1 15 min .. P4 24 h), how long it must hold before firing, and the runbook '
  'section to open.';

insert into reserve.alert_rules (alert_name, check_name, fire_on, severity, for_duration, runbook_section, summary) values
  ('ledger_imbalance', 'ledger_balance', 'WARNING', 'P1', '0', 'P1: LEDGER IMBALANCE DETECTED',
   'A ledger transaction does not balance'),
  ('ledger_trigger_disabled', 'ledger_trigger_enabled', 'WARNING', 'P1', '0', 'P1: LEDGER IMBALANCE DETECTED',
   'trg_ledger_balance is disabled: unbalanced transactions can commit'),
  ('overbooking', 'overbooking', 'WARNING', 'P1', '0', 'P1: OVERBOOKING DETECTED',
   'A night is sold past its allotment'),
  ('paid_without_reservation', 'paid_without_reservation', 'WARNING', 'P1', '0', 'P1: PAYMENT SUCCEEDED BUT NO RESERVATION',
   'A guest paid and has no reservation'),
  ('webhook_down', 'webhook_delivery', 'CRITICAL', 'P1', '5 minutes', 'P1: WEBHOOK DOWN (Stripe/PIX)',
   'Payments are stuck and no webhook has completed for an hour'),
  ('availability_counter_drift', 'availability_counter_drift', 'WARNING', 'P2', '0', 'P1: OVERBOOKING DETECTED',
   'Availability counters differ from reservations and holds (Step 4: rebuild)'),
  ('stuck_payments', 'stuck_payments', 'WARNING', 'P2', '0', 'P2: PAYMENT STUCK IN PROCESSING',
   'Payments pending or processing past their limit'),
  ('pix_pending_over_30m', 'pix_pending_over_30m', 'WARNING', 'P2', '10 minutes', 'P2: PIX PAID BUT NOT CONFIRMED',
   'PIX payments pending for more than 30 minutes'),
  ('double_charge', 'double_charges', 'WARNING', 'P2', '0', 'P2: DOUBLE CHARGE',
   'A guest was charged twice and the second charge is not refunded'),
  ('payment_failure_rate', 'payment_success_rate_1h', 'WARNING', 'P2', '10 minutes', 'P2: HIGH RATE OF FAILED PAYMENTS',
   'Payment success rate under 80% in the last hour'),
  ('webhook_failures', 'webhooks_failed_1h', 'WARNING', 'P2', '10 minutes', 'P1: WEBHOOK DOWN (Stripe/PIX)',
   'Webhook deliveries are failing'),
  ('webhooks_dead', 'webhooks_dead', 'WARNING', 'P2', '0', 'P1: WEBHOOK DOWN (Stripe/PIX)',
   'Webhook events were given up on (Recovery: process missed webhooks)'),
  ('refunds_stuck', 'refunds_stuck', 'WARNING', 'P2', '0', 'P2: DOUBLE CHARGE',
   'A refund we owe was refused by the provider or is unconfirmed after 2 days'),
  ('poller_stale', 'poller_heartbeat', 'WARNING', 'P2', '0', 'P2: PIX PAID BUT NOT CONFIRMED',
   'poll_payment_status has not run for 15 minutes'),
  ('connections_high', 'active_connections', 'CRITICAL', 'P2', '5 minutes', 'P1: WEBHOOK DOWN (Stripe/PIX)',
   'Over 80 active connections: the pool is exhausted (Scenario B)'),
  ('long_running_queries', 'long_running_queries', 'WARNING', 'P3', '5 minutes', 'P3: SLOW QUERY PERFORMANCE',
   'Statements running over 5 minutes'),
  ('audit_log_size', 'audit_log_size', 'WARNING', 'P3', '0', 'P3: AUDIT LOG GROWTH',
   'audit_logs is over its size limit (setting audit_log_max_mb, 5 GB)'),
  ('retention_stale', 'retention_last_run', 'WARNING', 'P3', '0', 'P3: AUDIT LOG GROWTH',
   'run_retention_cleanup has not run for 36 hours'),
  ('webhook_noise', 'webhooks_ignored_1h', 'WARNING', 'P4', '1 hour', 'SEVERITY LEVELS',
   'Over 1000 ignored webhook events an hour (log noise)');

create trigger _900_audit after insert or update or delete on reserve.alert_rules
  for each row execute function reserve.audit_row_change('alert_name');
alter table reserve.alert_rules enable row level security;
revoke all on reserve.alert_rules from public, anon, authenticated;
grant select on reserve.alert_rules to service_role;

create table reserve.alert_states (
  alert_name     text primary key references reserve.alert_rules (alert_name) on delete cascade,
  state          text not null check (state in ('pending', 'firing', 'resolved')),
  -- when the current (or last) episode's condition started to hold
  active_since   timestamptz,
  fired_at       timestamptz,
  resolved_at    timestamptz,
  last_evaluated timestamptz not null,
  observed_value numeric,
  threshold      text,
  details        text
);
comment on table reserve.alert_states is
  'The state of each alert between check_all_alerts calls: pending since active_since, firing since '
  'fired_at, or resolved at resolved_at.';
alter table reserve.alert_states enable row level security;
revoke all on reserve.alert_states from public, anon, authenticated;
grant select on reserve.alert_states to service_role;

create table reserve.alert_events (
  id             bigint generated always as identity primary key,
  alert_name     text not null references reserve.alert_rules (alert_name) on delete cascade,
  state          text not null check (state in ('pending', 'firing', 'resolved')),
  at             timestamptz not null default now(),
  observed_value numeric,
  details        text
);
comment on table reserve.alert_events is 'Every alert state change, for the incident timeline.';
create index alert_events_at_idx on reserve.alert_events (at);
alter table reserve.alert_events enable row level security;
revoke all on reserve.alert_events from public, anon, authenticated;
grant select on reserve.alert_events to service_role;

insert into reserve.retention_policies (table_name, retention_days, retention_type, date_column, description) values
  ('alert_events', 365, 'delete', 'at', 'Alert history: a year of incident timelines.');

create function reserve.check_all_alerts()
returns table (alert_name text, severity text, state text, observed_value numeric, threshold text,
               first_seen timestamptz, last_evaluated timestamptz, fingerprint text, summary text,
               runbook_section text, fired_at timestamptz, resolved_at timestamptz, details text)
language plpgsql
security definer
set search_path = ''
as $$
declare
  r record;
  s reserve.alert_states;
  holds boolean;
  next_state text;
begin
  -- one evaluation at a time, so two callers never both move an alert (or both page)
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('reserve.check_all_alerts'));

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
$$;
comment on function reserve.check_all_alerts() is
  'Evaluates every enabled alert rule against system_health_check() and returns one row per alert: '
  'severity (P1..P4), state pending | firing | resolved (kept in alert_states between calls; pending '
  'until the condition has held for the rule''s for_duration), observed value and threshold, first_seen '
  '(start of the episode), a stable fingerprint, a summary and the runbook section to open. State '
  'changes are kept in alert_events.';
revoke all on function reserve.check_all_alerts() from public;
grant execute on function reserve.check_all_alerts() to service_role;
