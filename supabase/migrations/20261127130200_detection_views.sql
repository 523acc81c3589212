-- The views the runbook queries first: what is stuck, how webhooks are doing, why payments fail, what
-- retention has left to do, and one row of the numbers an on-call person wants first.

create view reserve.stuck_payments with (security_invoker = true) as
select p.id as payment_id, p.booking_intent_id, p.provider, p.method, p.status, p.amount, p.currency,
       p.gateway_payment_id, p.gateway_status, p.created_at, p.status_changed_at,
       now() - p.status_changed_at as age,
       (extract(epoch from now() - p.status_changed_at) / 60)::integer as age_minutes,
       t.minutes as threshold_minutes,
       pp.last_polled_at, pp.attempts as poll_attempts, pp.last_result as last_poll_result, pp.next_poll_at
from reserve.payments p
join (select case s.key when 'stuck_minutes_card' then 'card' else 'pix' end as method,
             (s.value #>> '{}')::integer as minutes
      from reserve.settings s where s.key in ('stuck_minutes_card', 'stuck_minutes_pix')) t on t.method = p.method
left join reserve.payment_polls pp on pp.payment_id = p.id
where p.status in ('pending', 'processing')
  and p.status_changed_at < now() - make_interval(mins => t.minutes);
comment on view reserve.stuck_payments is
  'Payments pending or processing longer than their method''s limit (settings stuck_minutes_card 60, '
  'stuck_minutes_pix 45), with age, provider and what the poller last heard. Empty when all is well.';

create view reserve.webhook_status with (security_invoker = true) as
select pr.provider,
       count(w.id) filter (where w.received_at > now() - interval '1 hour') as received_1h,
       count(w.id) filter (where w.received_at > now() - interval '1 hour' and w.status = 'completed') as completed_1h,
       count(w.id) filter (where w.received_at > now() - interval '1 hour' and w.status = 'ignored') as ignored_1h,
       count(w.id) filter (where w.received_at > now() - interval '1 hour' and w.status = 'failed') as failed_1h,
       count(w.id) filter (where w.status = 'failed') as failed_awaiting_retry,
       count(w.id) filter (where w.status = 'dead') as dead,
       count(w.id) filter (where w.status = 'processing' and w.last_attempt_at < now() - interval '5 minutes') as stalled_processing,
       max(w.received_at) as last_received_at,
       max(w.processed_at) filter (where w.status = 'completed') as last_completed_at,
       round(100.0 * count(w.id) filter (where w.received_at > now() - interval '1 hour' and w.status in ('failed', 'dead'))
             / nullif(count(w.id) filter (where w.received_at > now() - interval '1 hour'), 0), 2) as failure_rate_1h
from (values ('stripe'), ('mercadopago'), ('openpix')) pr (provider)
left join reserve.processed_webhooks w
  on w.provider = pr.provider
 and (w.received_at > now() - interval '1 hour' or w.status in ('failed', 'dead', 'processing'))
group by pr.provider;
comment on view reserve.webhook_status is
  'Per provider: deliveries in the last hour by outcome, failed events awaiting retry, dead ones, '
  'stalled ones, and when the last delivery came and the last one completed.';

create view reserve.webhook_failure_analysis with (security_invoker = true) as
select w.provider, w.event_type, w.status,
       -- ids and numbers vary per event; what is left groups one cause
       regexp_replace(coalesce(w.error_message, '(no message)'),
                      '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\m[A-Za-z]*_[A-Za-z0-9]{8,}\M|[0-9]+', '#', 'g')
         as error_class,
       count(*) as count,
       min(w.received_at) as first_seen,
       max(w.last_attempt_at) as last_seen,
       sum(w.attempts) as attempts,
       (array_agg(w.error_message order by w.last_attempt_at desc))[1] as sample_error,
       (array_agg(w.id order by w.last_attempt_at desc))[1] as sample_webhook_id,
       count(*) filter (where w.apply_args is not null) as replayable
from reserve.processed_webhooks w
where w.status in ('failed', 'dead')
group by 1, 2, 3, 4;
comment on view reserve.webhook_failure_analysis is
  'Failed and dead webhook events grouped by provider, type, status and cause (the error with ids and '
  'numbers masked): count, first and last seen, a sample error and event, and how many can be replayed '
  '(replay_webhook).';

create view reserve.failed_payments_analysis with (security_invoker = true) as
select coalesce(p.error_code, 'unknown') as error_code,
       count(*) as count,
       round(100.0 * count(*) / sum(count(*)) over (), 2) as share,
       max(p.failed_at) as last_seen,
       array_agg(distinct p.provider order by p.provider) as providers,
       array_agg(distinct p.method order by p.method) as methods,
       (array_agg(p.error_message order by p.failed_at desc) filter (where p.error_message is not null))[1] as sample_message
from reserve.payments p
where p.status = 'failed' and p.failed_at > now() - interval '24 hours'
group by 1;
comment on view reserve.failed_payments_analysis is
  'Payments failed in the last 24 hours by error code: count, share of the failures (percent), last '
  'seen, providers and methods, and the latest message.';

create function reserve.retention_table_facts(p_table text, p_date_column text, p_cutoff timestamptz)
returns table (due_rows bigint, oldest timestamptz)
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
  -- names come from retention_policies, whose checks allow only lower-case identifiers; quoted anyway.
  -- Two subqueries, so each reads only its end of the date column's index instead of the table.
  return query execute format('select (select count(*) from reserve.%1$I where %2$I < $1), (select min(%2$I)::timestamptz from reserve.%1$I)',
                              p_table, p_date_column) using p_cutoff;
end
$$;
comment on function reserve.retention_table_facts(text, text, timestamptz) is
  'Rows of a reserve table older than the cutoff by its date column, and its oldest row (retention_statistics).';
revoke all on function reserve.retention_table_facts(text, text, timestamptz) from public;
grant execute on function reserve.retention_table_facts(text, text, timestamptz) to service_role;

create view reserve.retention_statistics with (security_invoker = true) as
select rp.table_name, rp.retention_days, rp.retention_type, rp.is_enabled, rp.batch_size,
       case when c.reltuples >= 0 then c.reltuples::bigint end as estimated_rows,
       f.due_rows,
       f.oldest as oldest_row_at,
       pg_size_pretty(pg_total_relation_size(c.oid)) as total_size,
       pg_total_relation_size(c.oid) as total_bytes,
       case when rp.retention_type = 'archive'
            then (select case when a.reltuples >= 0 then a.reltuples::bigint end from pg_class a where a.oid = to_regclass('reserve.' || rp.table_name || '_archive')) end
         as archived_rows_estimate,
       rp.last_run_at, rp.last_run_rows
from reserve.retention_policies rp
join pg_class c on c.oid = to_regclass('reserve.' || rp.table_name)
cross join lateral reserve.retention_table_facts(rp.table_name, rp.date_column,
                                                 now() - make_interval(days => rp.retention_days)) f;
comment on view reserve.retention_statistics is
  'Per retention policy: rows (estimated), rows past retention (due_rows), the oldest row, size, '
  'archived rows, and the last run of run_retention_cleanup.';

create view reserve.ops_dashboard_summary with (security_invoker = true) as
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
       (select count(*) from reserve.find_ledger_imbalances(current_date - 7)) as ledger_imbalances_7d,
       (select sum(ws.failed_1h) from reserve.webhook_status ws) as webhooks_failed_1h,
       (select sum(ws.dead) from reserve.webhook_status ws) as webhooks_dead,
       (select j.age from reserve.job_last_runs j where j.job = 'poll_payment_status') as poller_last_run_age
from hour;
comment on view reserve.ops_dashboard_summary is
  'One row: payments and success rate in the last hour, in flight, stuck, PIX pending over 30 minutes, '
  'unrefunded double charges, money in over 24 hours, reservations, held nights, overbooked nights, '
  'ledger imbalances (7 days), failed and dead webhooks, and the poller''s last run.';

revoke all on reserve.stuck_payments, reserve.webhook_status, reserve.webhook_failure_analysis,
  reserve.failed_payments_analysis, reserve.retention_statistics, reserve.ops_dashboard_summary
  from public, anon, authenticated;
grant select on reserve.stuck_payments, reserve.webhook_status, reserve.webhook_failure_analysis,
  reserve.failed_payments_analysis, reserve.retention_statistics, reserve.ops_dashboard_summary to service_role;
