-- verify_recent_writes() moves the checks' watermark every minute. The checks (system_health_check,
-- check_all_alerts, ops_dashboard_summary, overbooking_check, availability_counter_drift) read the last
-- integrity audit's findings and everything written since its verified_through; with the full audit
-- hourly that is up to an hour and five minutes of writes on every evaluation (on the year dataset the
-- seed's last hour: 12,889 ledger legs, 10,447 nights written, 3,075 stays, about 0.5 s a check).
--
-- Each minute this records what the checks would find now, as findings, with a newer watermark: the
-- ledger transactions whose legs before it do not balance (the previous findings and those the legs
-- between the two watermarks leave off, each summed up to the new one), the units drifting_units() names
-- and the payments paid_without_reservation() names. The checks then read a few minutes of writes
-- (the watermark stays five minutes back, and behind any transaction still open). What only the full
-- scan proves (a back-dated write round the triggers) is still the hourly audit's, which also starts the
-- findings afresh. One rule of findings for both: an audit row is either kind, scope says which.

alter table reserve.integrity_audits add column scope text not null default 'everything'
  constraint integrity_audits_scope_check check (scope in ('everything', 'since_previous'));
comment on column reserve.integrity_audits.scope is
  'everything: run_integrity_audit() scanned every leg and night; since_previous: verify_recent_writes() re-checked the previous row''s findings and checked what was written between its verified_through and this one''s.';
comment on table reserve.integrity_audits is 'One row per run of run_integrity_audit() (hourly, scope everything) or verify_recent_writes() (every minute, scope since_previous): the imbalanced ledger transactions, the units whose counters drift from their rows and the payments paid without a reservation known then, and verified_through, before which every committed row was seen. The health checks read the latest row''s findings, re-checked, and the rows written at or after its verified_through.';

CREATE FUNCTION reserve.verify_recent_writes()
 RETURNS reserve.integrity_audits
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  prev reserve.integrity_audits;
  a reserve.integrity_audits;
  started timestamptz := clock_timestamp();
begin
  -- after or before a full audit, never beside one: each starts from the row the other left
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('reserve.run_integrity_audit'));
  prev := reserve.last_integrity_audit();
  if prev.id is null or prev.ledger_summed_before is null then
    -- nothing to start from, or findings of the older rule (summed whole): the full audit
    return reserve.run_integrity_audit();
  end if;

  select least(now() - interval '5 minutes', min(s.xact_start)) into a.verified_through
  from pg_catalog.pg_stat_activity s
  where s.datname = pg_catalog.current_database() and s.xact_start is not null;
  if a.verified_through < prev.verified_through then
    -- never back (a clock set back, a row written by hand): the previous watermark stands
    perform reserve.record_job_heartbeat('verify_recent_writes', started, true, jsonb_build_object(
      'verified_through', prev.verified_through, 'would_move_back_to', a.verified_through));
    return prev;
  end if;
  a.started_at := started;

  -- legs before the previous watermark balance per transaction unless it is a finding; so do those
  -- before the new one unless the legs between the two leave it off
  with between_marks as (
    select e.transaction_id,
           coalesce(sum(e.amount) filter (where e.direction = 'debit'), 0)
             <> coalesce(sum(e.amount) filter (where e.direction = 'credit'), 0) as off
    from reserve.ledger_entries e
    where e.created_at >= prev.verified_through and e.created_at < a.verified_through
    group by e.transaction_id, e.currency
  ), candidates as (
    select unnest(prev.imbalanced_transactions) as id
    union
    select b.transaction_id from between_marks b where b.off
  )
  select (select count(distinct b.transaction_id) from between_marks b),
         coalesce(array_agg(c.id order by c.id) filter (where exists (
           select 1 from reserve.ledger_entries e
           where e.transaction_id = c.id and e.created_at < a.verified_through
           group by e.currency
           having coalesce(sum(e.amount) filter (where e.direction = 'debit'), 0)
                  <> coalesce(sum(e.amount) filter (where e.direction = 'credit'), 0))), '{}')
    into a.ledger_transactions, a.imbalanced_transactions
  from candidates c;

  -- as the checks see them now (they read prev): its units recounted whole, the nights written since
  select coalesce(array_agg(d.unit_id order by d.unit_id), '{}') into a.drifted_units
  from reserve.drifting_units() d;
  select coalesce(array_agg(u.payment_id order by u.payment_id), '{}') into a.unreserved_payments
  from reserve.paid_without_reservation() u;

  insert into reserve.integrity_audits (scope, started_at, verified_through, ledger_summed_before, finished_at,
                                        ledger_transactions, imbalanced_transactions, drifted_units,
                                        unreserved_payments, duration_ms)
  values ('since_previous', a.started_at, a.verified_through, a.verified_through, clock_timestamp(),
          a.ledger_transactions, a.imbalanced_transactions, a.drifted_units, a.unreserved_payments,
          (extract(epoch from clock_timestamp() - started) * 1000)::integer)
  returning * into a;
  perform reserve.record_job_heartbeat('verify_recent_writes', started, true, jsonb_build_object(
    'ledger_transactions', a.ledger_transactions,
    'imbalanced_transactions', cardinality(a.imbalanced_transactions),
    'drifted_units', cardinality(a.drifted_units),
    'unreserved_payments', cardinality(a.unreserved_payments),
    'verified_through', a.verified_through));
  return a;
end
$function$;

comment on function reserve.verify_recent_writes() is 'Every minute: records as an integrity_audits row (scope since_previous) what the checks find now (the previous findings re-checked, the ledger legs, nights and successes written since the previous verified_through) with a verified_through five minutes back, so the checks read minutes of writes, not the hour since the full audit. The full audit when there is none yet. Leaves a verify_recent_writes heartbeat.';

revoke all on function reserve.verify_recent_writes() from public;
grant execute on function reserve.verify_recent_writes() to service_role;

comment on function reserve.last_integrity_audit() is
  'The latest integrity_audits row, of run_integrity_audit() or verify_recent_writes() (all columns null when neither ran: the checks then scan everything).';

CREATE OR REPLACE FUNCTION reserve.system_health_checks_core()
 RETURNS TABLE(check_name text, status text, observed_value numeric, threshold text, details text)
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  n numeric;
  m numeric;
  decided numeric;
  t text;
  last_at timestamptz;
  since timestamptz;
  watermark timestamptz;
  suspects uuid[];
begin
  -- money: trg_ledger_balance refuses an unbalanced commit, so what is looked for is a bypass, of any
  -- age: what the last integrity audit found and every transaction given a leg since, summed whole
  select count(*) into n from reserve.known_ledger_imbalances();
  return query select 'ledger_balance', case when n > 0 then 'CRITICAL' else 'OK' end, n,
    '0 imbalanced transactions (the last integrity audit and every leg since)',
    case when n > 0 then 'known_ledger_imbalances() returns rows' else 'every transaction balances' end;

  select tg.tgenabled::text into t from pg_catalog.pg_trigger tg
  where tg.tgname = 'trg_ledger_balance' and tg.tgrelid = 'reserve.ledger_entries'::regclass;
  return query select 'ledger_trigger_enabled',
    case when t in ('O', 'A') then 'OK' else 'CRITICAL' end, null::numeric, 'tgenabled O or A',
    case when t is null then 'trg_ledger_balance is missing'
         when t in ('O', 'A') then format('trg_ledger_balance tgenabled = %s', t)
         else format('trg_ledger_balance tgenabled = %s: unbalanced transactions can commit', t) end;

  -- availability: both views recount the nights of the units drifting_units() names, which is most of
  -- a check's cost; it is asked once here, and when it names none both views are empty (overbooking_check
  -- also reads the counters when the capacity check is gone, so then it is read whole)
  suspects := array(select d.unit_id from reserve.drifting_units() d);
  if cardinality(suspects) = 0 and exists (
       select 1 from pg_catalog.pg_constraint k
       where k.conname = 'availability_calendar_capacity_check' and k.conrelid = 'reserve.availability_calendar'::regclass
         and k.convalidated) then
    n := 0;
  else
    select count(*) into n from reserve.overbooking_check;
  end if;
  return query select 'overbooking', case when n > 0 then 'CRITICAL' else 'OK' end, n, '0 oversold nights',
    case when n > 0 then 'reserve.overbooking_check returns rows' else 'no night sold past its allotment' end;

  if cardinality(suspects) = 0 then
    n := 0;
  else
    select count(*) into n from reserve.availability_counter_drift;
  end if;
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

  select count(*) into n from reserve.paid_without_reservation();
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

  -- the full audit: the ledger and availability checks above read its findings and what was written
  -- since it began, so a write that bypassed the triggers is found only when it runs (hourly)
  select j.finished_at into last_at from reserve.job_last_runs j where j.job = 'run_integrity_audit';
  return query select 'integrity_audit',
    case when last_at is not null and last_at < now() - interval '3 hours' then 'WARNING' else 'OK' end,
    round(extract(epoch from now() - last_at) / 3600, 1), '< 3 h since the last run_integrity_audit (hourly)',
    case when last_at is null then 'never ran: the ledger and availability checks scan everything until it does'
         else 'last run ' || to_char(last_at, 'YYYY-MM-DD HH24:MI:SS TZ')
              || case when last_at < now() - interval '3 hours'
                      then ': writes that bypassed the triggers since then are not found' else '' end end;

  -- the watermark the checks read from, moved each minute by verify_recent_writes (and hourly by the full
  -- audit): behind, every check reads more of what was written (slower, never blind)
  select a.verified_through into watermark from reserve.last_integrity_audit() a;
  return query select 'integrity_watermark',
    case when watermark < now() - interval '20 minutes' then 'WARNING' else 'OK' end,
    round(extract(epoch from now() - watermark) / 60), '< 20 min behind now (verify_recent_writes, every minute)',
    case when watermark is null then 'no integrity audit yet: the checks read everything'
         else 'the checks read what was written since ' || to_char(watermark, 'YYYY-MM-DD HH24:MI:SS TZ')
              || case when watermark < now() - interval '20 minutes'
                      then ': verify_recent_writes is not running, or a transaction open since then holds it (pg_stat_activity)'
                      else '' end end;

  -- the database
  select count(*) into n from pg_catalog.pg_stat_activity a where a.state = 'active';
  return query select 'active_connections', case when n > 80 then 'CRITICAL' when n > 60 then 'WARNING' else 'OK' end, n,
    '<= 80 active', 'connections running a statement now (the runbook: over 80, the pool is exhausted)';

  select count(*) into n from pg_catalog.pg_stat_activity a
  where a.state = 'active' and a.backend_type = 'client backend' and a.pid <> pg_catalog.pg_backend_pid()
    and a.query_start < now() - interval '5 minutes';
  return query select 'long_running_queries', case when n > 0 then 'WARNING' else 'OK' end, n, '0 active > 5 min',
    'statements running over 5 minutes: pg_stat_activity';

  -- observed in MB, the unit of the threshold (the setting); compared in bytes. audit_logs is partitioned
  -- by month: its size is that of every partition (a partitioned table itself holds no rows)
  select coalesce(sum(pg_catalog.pg_total_relation_size(pt.relid)), pg_catalog.pg_total_relation_size('reserve.audit_logs')) into n
  from pg_catalog.pg_partition_tree('reserve.audit_logs') pt;
  m := reserve.setting_int('audit_log_max_mb');
  return query select 'audit_log_size', case when n > m * 1024 * 1024 then 'WARNING' else 'OK' end, round(n / (1024 * 1024), 1),
    format('<= %s MB (setting audit_log_max_mb)', m),
    pg_catalog.pg_size_pretty(n::bigint) || ' in all partitions (retention drops whole months past it; rows it moves from a month still open leave their space until that month is dropped)';

  -- the provider's money and ours disagree: a success for another amount, a refund beyond what arrived
  return query select * from reserve.money_health_checks();
end
$function$;

insert into reserve.alert_rules (alert_name, check_name, fire_on, severity, for_duration, runbook_section, summary) values
  ('integrity_watermark_behind', 'integrity_watermark', 'WARNING', 'P3', '0', 'P3: INTEGRITY WATERMARK BEHIND',
   'the checks'' watermark is over 20 minutes old: verify_recent_writes is not running, or a long transaction holds it; every check reads more');

do $$
begin
  if to_regnamespace('cron') is not null then
    perform cron.schedule('reserve_verify_recent_writes', '* * * * *', 'select reserve.verify_recent_writes()');
  else
    raise notice 'pg_cron missing: verify_recent_writes is not scheduled in the database';
  end if;
end
$$;
