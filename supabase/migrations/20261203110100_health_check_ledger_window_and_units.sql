-- What system_health_check reports, read against the runbook and the dashboard:
--   * ledger_balance looks back as far as ops_dashboard_summary does, both through
--     find_ledger_imbalances() with its default (7 days). The check looked at yesterday and today only,
--     so an imbalance 2 to 7 days old was on the dashboard with no P1, and an unrepaired one resolved
--     its own alert a day after it was written.
--   * retention_last_run is no longer OK for a job that never ran once it is due (36 h after retention
--     was installed, or at once with audit rows that old); before that it says when the run is due.
--   * audit_log_size reports MB, the unit of its threshold (it reported bytes beside "<= 5120 MB").
--   * refunds_stuck leaves out requests an operator closed (close_refund_request, retry_refund_request),
--     and names them as the way out.
-- Everything else is as reserve.money_health_checks' migration left it: refunds_stuck after
-- refund_stuck_hours, and the money checks, which come last.

create or replace function reserve.system_health_check()
returns table (check_name text, status text, observed_value numeric, threshold text, details text)
language plpgsql
security definer
set search_path = ''
as $$
declare
  n numeric;
  m numeric;
  decided numeric;
  t text;
  last_at timestamptz;
  since timestamptz;
begin
  -- money: trg_ledger_balance refuses an unbalanced commit, so what is looked for is a bypass. The
  -- window is find_ledger_imbalances' default (7 days), the one ops_dashboard_summary counts: an
  -- imbalance the dashboard shows is a P1, and it does not resolve by itself a day after it was written
  select count(*) into n from reserve.find_ledger_imbalances();
  return query select 'ledger_balance', case when n > 0 then 'CRITICAL' else 'OK' end, n, '0 imbalanced transactions (7 days)',
    case when n > 0 then 'find_ledger_imbalances() returns rows' else 'every transaction of the last 7 days balances' end;

  select tg.tgenabled::text into t from pg_catalog.pg_trigger tg
  where tg.tgname = 'trg_ledger_balance' and tg.tgrelid = 'reserve.ledger_entries'::regclass;
  return query select 'ledger_trigger_enabled',
    case when t in ('O', 'A') then 'OK' else 'CRITICAL' end, null::numeric, 'tgenabled O or A',
    case when t is null then 'trg_ledger_balance is missing'
         when t in ('O', 'A') then format('trg_ledger_balance tgenabled = %s', t)
         else format('trg_ledger_balance tgenabled = %s: unbalanced transactions can commit', t) end;

  -- availability
  select count(*) into n from reserve.overbooking_check;
  return query select 'overbooking', case when n > 0 then 'CRITICAL' else 'OK' end, n, '0 oversold nights',
    case when n > 0 then 'reserve.overbooking_check returns rows' else 'no night sold past its allotment' end;

  select count(*) into n from reserve.availability_counter_drift;
  return query select 'availability_counter_drift', case when n > 0 then 'WARNING' else 'OK' end, n, '0 nights',
    case when n > 0 then 'counters differ from reservations and holds: rebuild_unit_availability' else 'counters match' end;

  -- payments
  select count(*) into n from reserve.stuck_payments;
  return query select 'stuck_payments', case when n >= 10 then 'CRITICAL' when n > 0 then 'WARNING' else 'OK' end, n,
    '0 (CRITICAL at 10)', 'pending or processing past stuck_minutes_card / stuck_minutes_pix';

  select count(*) into n from reserve.payments p
  where p.status = 'pending' and p.method = 'pix' and p.created_at < now() - interval '30 minutes';
  return query select 'pix_pending_over_30m', case when n > 0 then 'WARNING' else 'OK' end, n, '0 PIX pending > 30 min',
    'PIX charges still pending past their 30-minute hold (paid but not confirmed, or not yet expired)';

  select count(*) filter (where p.status = 'succeeded' or p.succeeded_at is not null),
         count(*) filter (where p.status = 'failed')
    into n, m
  from reserve.payments p
  where p.created_at > now() - interval '1 hour' and p.status not in ('pending', 'processing');
  decided := n + m;
  return query select 'payment_success_rate_1h',
    case when decided < 10 then 'OK' when n / decided < 0.5 then 'CRITICAL' when n / decided < 0.8 then 'WARNING' else 'OK' end,
    case when decided > 0 then round(100 * n / decided, 2) end, '>= 80% (of at least 10 decided attempts)',
    format('%s succeeded, %s failed in the last hour', n, m);

  select count(*) into n from reserve.payments p where p.duplicate_of is not null and p.status = 'succeeded';
  return query select 'double_charges', case when n > 0 then 'WARNING' else 'OK' end, n, '0 unrefunded',
    'second charges of a paid intent still holding the money: refund_duplicate_charge';

  select count(*) into n from reserve.payments p
  where p.status = 'succeeded' and p.succeeded_at between now() - interval '7 days' and now() - interval '5 minutes'
    and p.duplicate_of is null and p.refund_reason is null
    and not exists (select 1 from reserve.reservations r where r.booking_intent_id = p.booking_intent_id);
  return query select 'paid_without_reservation', case when n > 0 then 'CRITICAL' else 'OK' end, n, '0 (7 days)',
    'succeeded payments with no reservation and no refund flag: finalize_reservation';

  -- webhooks
  select count(*) filter (where w.status = 'failed' and w.received_at > now() - interval '1 hour'),
         count(*) filter (where w.status = 'dead')
    into n, m
  from reserve.processed_webhooks w where w.status in ('failed', 'dead');
  return query select 'webhooks_failed_1h', case when n >= 10 then 'CRITICAL' when n > 0 then 'WARNING' else 'OK' end, n,
    '0 (CRITICAL at 10)', 'failed deliveries in the last hour (retried with backoff): webhook_failure_analysis';
  return query select 'webhooks_dead', case when m > 0 then 'WARNING' else 'OK' end, m, '0',
    'events given up after max_webhook_attempts, or a second provider payment: replay_webhook';

  select w.processed_at into last_at from reserve.processed_webhooks w
  where w.status = 'completed' and w.received_at > now() - interval '1 day'
  order by w.received_at desc limit 1;
  select count(*) into n from reserve.stuck_payments;
  select count(*) into m from reserve.payments p where p.created_at > now() - interval '1 hour';
  return query select 'webhook_delivery',
    case when n > 0 and (last_at is null or last_at < now() - interval '1 hour') then 'CRITICAL'
         when m >= 5 and not exists (select 1 from reserve.processed_webhooks w where w.received_at > now() - interval '30 minutes')
           then 'WARNING'
         else 'OK' end,
    round(extract(epoch from now() - last_at) / 60), 'a completed webhook within the hour while payments are stuck',
    format('last completed webhook %s; %s stuck payments; %s payments in the last hour',
           coalesce(to_char(last_at, 'YYYY-MM-DD HH24:MI:SS TZ'), 'none in a day'), n, m);

  select count(*) into n from reserve.processed_webhooks w
  where w.status = 'ignored' and w.received_at > now() - interval '1 hour';
  return query select 'webhooks_ignored_1h', case when n > 1000 then 'WARNING' else 'OK' end, n, '<= 1000 per hour',
    'events we record but do not act on: subscribe the endpoints to fewer types';

  -- refunds we owe: refused by the provider, or not confirmed hours after being asked for (a sent refund
  -- is looked up at the provider within minutes, so hours mean the provider has not done it). A closed
  -- request is one an operator ended: retried as a new request, or dealt with otherwise
  select count(*) into n from reserve.refund_requests rr
  where rr.status = 'failed'
     or (rr.status not in ('confirmed', 'closed')
         and rr.created_at < now() - make_interval(hours => reserve.setting_int('refund_stuck_hours')));
  return query select 'refunds_stuck', case when n > 0 then 'WARNING' else 'OK' end, n,
    format('0 (unconfirmed after %s h, setting refund_stuck_hours)', reserve.setting_int('refund_stuck_hours')),
    'refund requests failed at the provider or unconfirmed hours after being asked for: look_up_refund, '
    'retry_refund_request or close_refund_request';

  -- jobs
  select j.finished_at into last_at from reserve.job_last_runs j where j.job = 'poll_payment_status';
  return query select 'poller_heartbeat',
    case when last_at is null then
           case when exists (select 1 from reserve.payment_polls pp where pp.next_poll_at < now() - interval '15 minutes')
                then 'WARNING' else 'OK' end
         when last_at < now() - interval '60 minutes' then 'CRITICAL'
         when last_at < now() - interval '15 minutes' then 'WARNING' else 'OK' end,
    round(extract(epoch from now() - last_at) / 60), '< 15 min since the last poll_payment_status run',
    coalesce('last run ' || to_char(last_at, 'YYYY-MM-DD HH24:MI:SS TZ'), 'never ran');

  -- A job that never ran is late once it has been installed as long as a run may be old (36 h: daily,
  -- plus slack), or at once when there are audit rows that old (a database restored or loaded with
  -- history). Until then it is not yet due, and says so; the clock starts when retention was installed.
  select j.finished_at into last_at from reserve.job_last_runs j where j.job = 'run_retention_cleanup';
  select min(rp.created_at) into since from reserve.retention_policies rp where rp.is_enabled;
  return query select 'retention_last_run',
    case when since is null then 'OK'
         when last_at is null then
           case when since < now() - interval '36 hours'
                  or exists (select 1 from reserve.audit_logs a where a.occurred_at < now() - interval '36 hours')
                then 'WARNING' else 'OK' end
         when last_at < now() - interval '36 hours' then 'WARNING' else 'OK' end,
    round(extract(epoch from now() - coalesce(last_at, since)) / 3600, 1),
    '< 36 h since the last run_retention_cleanup (or since retention was installed, before its first run)',
    case when since is null then 'no retention policy is enabled'
         when last_at is not null then 'last run ' || to_char(last_at, 'YYYY-MM-DD HH24:MI:SS TZ')
         else format('never ran; retention installed %s (%s h ago): the daily run is due within 36 h of that',
                     to_char(since, 'YYYY-MM-DD HH24:MI:SS TZ'), round(extract(epoch from now() - since) / 3600, 1)) end;

  -- the database
  select count(*) into n from pg_catalog.pg_stat_activity a where a.state = 'active';
  return query select 'active_connections', case when n > 80 then 'CRITICAL' when n > 60 then 'WARNING' else 'OK' end, n,
    '<= 80 active', 'connections running a statement now (the runbook: over 80, the pool is exhausted)';

  select count(*) into n from pg_catalog.pg_stat_activity a
  where a.state = 'active' and a.backend_type = 'client backend' and a.pid <> pg_catalog.pg_backend_pid()
    and a.query_start < now() - interval '5 minutes';
  return query select 'long_running_queries', case when n > 0 then 'WARNING' else 'OK' end, n, '0 active > 5 min',
    'statements running over 5 minutes: pg_stat_activity';

  -- observed in MB, the unit of the threshold (the setting); compared in bytes
  n := pg_catalog.pg_total_relation_size('reserve.audit_logs');
  m := reserve.setting_int('audit_log_max_mb');
  return query select 'audit_log_size', case when n > m * 1024 * 1024 then 'WARNING' else 'OK' end, round(n / (1024 * 1024), 1),
    format('<= %s MB (setting audit_log_max_mb)', m),
    pg_catalog.pg_size_pretty(n::bigint) || ' (space of archived rows returns to the disk only after VACUUM FULL or pg_repack)';

  -- the provider's money and ours disagree: a success for another amount, a refund beyond what arrived
  return query select * from reserve.money_health_checks();
end
$$;
comment on function reserve.system_health_check() is
  'One row per check (ledger balance over find_ledger_imbalances()''s 7 days, trg_ledger_balance enabled, '
  'overbooking, counter drift, stuck payments, PIX pending > 30 min, success rate < 80% in the last hour, '
  'double charges, paid without reservation, failed / dead / silent / noisy webhooks, stuck refunds '
  '(refund_stuck_hours), poller heartbeat, retention last run, active connections, long-running queries, '
  'audit log size in MB, then money_health_checks(): money discrepancies): status OK | WARNING | CRITICAL, '
  'the observed value (in the threshold''s unit), the threshold and details.';

create or replace view reserve.ops_dashboard_summary with (security_invoker = true) as
-- each number its own query, so each reads only its index range (a year of payments is millions of rows)
with hour as (
  select count(*) as payments_1h,
         count(*) filter (where p.status = 'succeeded') as succeeded_1h,
         count(*) filter (where p.status = 'failed') as failed_1h
  from reserve.payments p where p.created_at > now() - interval '1 hour'
)
select now() as as_of,
       hour.payments_1h, hour.succeeded_1h, hour.failed_1h,
       round(100.0 * hour.succeeded_1h / nullif(hour.succeeded_1h + hour.failed_1h, 0), 2) as success_rate_1h,
       (select count(*) from reserve.payments p where p.status in ('pending', 'processing')) as in_flight,
       (select count(*) from reserve.stuck_payments) as stuck_payments,
       (select count(*) from reserve.payments p
        where p.status = 'pending' and p.method = 'pix' and p.created_at < now() - interval '30 minutes') as pix_pending_over_30m,
       (select count(*) from reserve.payments p where p.duplicate_of is not null and p.status = 'succeeded') as unrefunded_duplicate_charges,
       (select coalesce(sum(p.amount), 0) from reserve.payments p
        where p.status = 'succeeded' and p.succeeded_at > now() - interval '24 hours') as paid_amount_24h,
       (select count(*) from reserve.reservations r where r.created_at > now() - interval '24 hours') as reservations_24h,
       (select count(*) from reserve.booking_locks l where l.status = 'held') as held_nights,
       (select count(*) from reserve.overbooking_check) as overbooked_nights,
       (select count(*) from reserve.find_ledger_imbalances()) as ledger_imbalances_7d,
       (select sum(ws.failed_1h) from reserve.webhook_status ws) as webhooks_failed_1h,
       (select sum(ws.dead) from reserve.webhook_status ws) as webhooks_dead,
       (select j.age from reserve.job_last_runs j where j.job = 'poll_payment_status') as poller_last_run_age
from hour;
comment on view reserve.ops_dashboard_summary is
  'One row: payments and success rate in the last hour, in flight, stuck, PIX pending over 30 minutes, '
  'unrefunded double charges, money in over 24 hours, reservations, held nights, overbooked nights, '
  'ledger imbalances (find_ledger_imbalances() with its default window, 7 days, as the ledger_balance '
  'health check), failed and dead webhooks, and the poller''s last run.';

