-- paid_without_reservation is read from what changed. The health check's anti-join over every success of
-- seven days (128k payments on the year dataset, 180 to 750 ms) becomes a function that re-checks what
-- the hourly integrity audit found plus the successes recorded since it began, as the ledger and
-- calendar checks already do; run_integrity_audit records the whole 7-day set in unreserved_payments.

alter table reserve.integrity_audits add column unreserved_payments uuid[] not null default '{}';
comment on column reserve.integrity_audits.unreserved_payments is 'Succeeded payments of the 7 days before the audit with no reservation and no refund flag (paid_without_reservation(true)).';

CREATE FUNCTION reserve.paid_without_reservation(p_whole boolean DEFAULT false)
 RETURNS TABLE(payment_id uuid, booking_intent_id uuid, succeeded_at timestamp with time zone)
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  a reserve.integrity_audits;
begin
  if not p_whole then
    a := reserve.last_integrity_audit();
  end if;
  if a.id is null then
    return query
    select p.id, p.booking_intent_id, p.succeeded_at from reserve.payments p
    where p.status = 'succeeded' and p.succeeded_at between now() - interval '7 days' and now() - interval '5 minutes'
      and p.duplicate_of is null and p.refund_reason is null
      and not exists (select 1 from reserve.reservations r where r.booking_intent_id = p.booking_intent_id)
    order by p.succeeded_at, p.id;
  else
    -- what the last audit found, and every success recorded since it saw everything: a success is
    -- finalized in its own transaction, so one without a stay is written by hand, and by hand it carries
    -- now() (succeeded_at, or apply_payment_status's); a back-dated one, or a stay deleted, waits for the
    -- next audit (hourly), as the ledger's and the calendar's bypasses do
    return query
    select p.id, p.booking_intent_id, p.succeeded_at from reserve.payments p
    where p.id in (select unnest(a.unreserved_payments)
                   union
                   select x.id from reserve.payments x
                   where x.status = 'succeeded' and x.succeeded_at >= a.verified_through)
      and p.status = 'succeeded' and p.succeeded_at between now() - interval '7 days' and now() - interval '5 minutes'
      and p.duplicate_of is null and p.refund_reason is null
      and not exists (select 1 from reserve.reservations r where r.booking_intent_id = p.booking_intent_id)
    order by p.succeeded_at, p.id;
  end if;
end
$function$;

comment on function reserve.paid_without_reservation(boolean) is 'Succeeded payments (5 minutes to 7 days old) with no reservation and no refund flag (runbook P1: PAYMENT SUCCEEDED BUT NO RESERVATION): of those the last integrity audit found and those succeeded since it began (every payment of the 7 days before the first audit, or with p_whole).';

revoke all on function reserve.paid_without_reservation(boolean) from public;
grant execute on function reserve.paid_without_reservation(boolean) to service_role;

CREATE OR REPLACE FUNCTION reserve.run_integrity_audit()
 RETURNS reserve.integrity_audits
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  a reserve.integrity_audits;
  started timestamptz := clock_timestamp();
begin
  -- one audit at a time: a second caller waits and then audits after it
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('reserve.run_integrity_audit'));
  -- first, before any table is read (each later statement reads a newer snapshot): whatever those
  -- statements cannot see belongs to a transaction open now or begun later
  select least(now() - interval '5 minutes', min(s.xact_start)) into a.verified_through
  from pg_catalog.pg_stat_activity s
  where s.datname = pg_catalog.current_database() and s.xact_start is not null;
  a.started_at := started;

  with per_tx as (
    select e.transaction_id,
           coalesce(sum(e.amount) filter (where e.direction = 'debit'), 0)
             <> coalesce(sum(e.amount) filter (where e.direction = 'credit'), 0) as off
    from reserve.ledger_entries e
    group by e.transaction_id, e.currency
  )
  select count(distinct p.transaction_id), coalesce(array_agg(distinct p.transaction_id) filter (where p.off), '{}')
    into a.ledger_transactions, a.imbalanced_transactions
  from per_tx p;

  select coalesce(array_agg(d.unit_id order by d.unit_id), '{}') into a.drifted_units
  from reserve.units_with_counter_drift() d;

  select coalesce(array_agg(u.payment_id order by u.payment_id), '{}') into a.unreserved_payments
  from reserve.paid_without_reservation(true) u;

  insert into reserve.integrity_audits (started_at, verified_through, ledger_transactions, imbalanced_transactions,
                                        drifted_units, unreserved_payments, duration_ms)
  values (a.started_at, a.verified_through, a.ledger_transactions, a.imbalanced_transactions, a.drifted_units,
          a.unreserved_payments, (extract(epoch from clock_timestamp() - started) * 1000)::integer)
  returning * into a;
  perform reserve.record_job_heartbeat('run_integrity_audit', started, true, jsonb_build_object(
    'ledger_transactions', a.ledger_transactions,
    'imbalanced_transactions', cardinality(a.imbalanced_transactions),
    'drifted_units', cardinality(a.drifted_units),
    'unreserved_payments', cardinality(a.unreserved_payments),
    'verified_through', a.verified_through));
  return a;
end
$function$;

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
