-- The books in the health checks and alerts (money_health_checks, which system_health_check and so
-- check_all_alerts include), and their schedules:
--   * ledger_balance_drift (P1): kept balances differ from the entries since the checkpoint, or the last
--     daily full check (ledger_balance_full_check, 04:10 UTC) found accounts or hosts drifting;
--   * reconciliation_unrepaired (P2): a reconciliation found a difference no repair fixed;
--   * reconciliation_stale (P3): a provider with payments over a day old has no reconciliation finished
--     within reconciliation_stale_hours, or a run stopped beating for an hour.
-- The reconcile function is called every 15 minutes on Supabase (yesterday's window, each provider,
-- resumed from its cursor until done; then the call finds it done and lists nothing); `npm start`'s
-- scheduler does the same locally.

create or replace function reserve.money_health_checks()
returns table (check_name text, status text, observed_value numeric, threshold text, details text)
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  n numeric;
  m numeric;
  full_ok boolean;
  full_summary jsonb;
  stale text;
begin
  select count(*) into n from reserve.money_discrepancies d where d.resolved_at is null;
  return query select 'money_discrepancies'::text, case when n > 0 then 'CRITICAL' else 'OK' end, n, '0 open'::text,
    case when n > 0 then 'open_money_discrepancies lists where the provider''s money differs from ours'
         else 'the providers'' money agrees with ours' end;

  select count(*) into n from reserve.ledger_balance_drift();
  select h.ok, h.summary into full_ok, full_summary from reserve.job_heartbeats h
  where h.job = 'ledger_balance_full_check' order by h.finished_at desc limit 1;
  return query select 'ledger_balance_drift'::text,
    case when n > 0 or full_ok = false then 'CRITICAL' else 'OK' end, n, '0 accounts whose kept balance differs from their entries'::text,
    case when n > 0 then format('ledger_balance_drift() returns %s accounts', n)
         when full_ok = false then format('the last ledger_balance_full_check found %s accounts and %s hosts drifting',
                                          full_summary ->> 'accounts_drifting', full_summary ->> 'hosts_drifting')
         else 'the kept balances equal the entries' end;

  select count(*), count(distinct i.provider) into n, m from reserve.reconciliation_items i
  where i.repaired_at is null and i.resolved_at is null;
  return query select 'reconciliation_unrepaired'::text, case when n > 0 then 'CRITICAL' else 'OK' end, n, '0 open items'::text,
    case when n > 0 then format('open_reconciliation_items lists %s differences with %s providers that no repair fixed', n, m)
         else 'every difference reconciliation found was repaired or closed' end;

  select string_agg(x.why, '; ' order by x.why) into stale from (
    select format('%s: no reconciliation finished since %s', pr.provider,
                  coalesce((select max(r.finished_at)::text from reserve.reconciliation_runs r where r.provider = pr.provider and r.status = 'done'), 'ever')) as why
    -- a provider with a success in the week before yesterday: the first one found by the partial
    -- index on succeeded_at is enough (every evaluation runs this)
    from (values ('stripe'), ('mercadopago'), ('openpix')) pr(provider)
    where exists (select 1 from reserve.payments p
                  where p.provider = pr.provider and p.status = 'succeeded'
                    and p.succeeded_at < now() - interval '1 day' and p.succeeded_at > now() - interval '8 days')
      and not exists (select 1 from reserve.reconciliation_runs r where r.provider = pr.provider and r.status = 'done'
                        and r.finished_at > now() - make_interval(hours => reserve.setting_int('reconciliation_stale_hours')))
    union all
    select format('%s run %s has not beaten since %s', r.provider, r.id, r.heartbeat_at)
    from reserve.reconciliation_runs r where r.status = 'running' and r.heartbeat_at < now() - interval '1 hour') x;
  return query select 'reconciliation_stale'::text, case when stale is not null then 'WARNING' else 'OK' end,
    null::numeric, format('a finished reconciliation per provider within %s hours', reserve.setting_int('reconciliation_stale_hours')),
    coalesce(stale, 'every provider with payments was reconciled recently');
end
$$;
comment on function reserve.money_health_checks() is
  'The health checks of the providers'' money and the books (rows as system_health_check''s, which includes them): '
  'money_discrepancies is CRITICAL while any is open; ledger_balance_drift CRITICAL while a kept balance differs from '
  'the entries (since the checkpoint, or in the last full check); reconciliation_unrepaired CRITICAL while an item is '
  'open; reconciliation_stale WARNING when a provider with payments was not reconciled within reconciliation_stale_hours '
  'or a run stopped beating.';

insert into reserve.alert_rules (alert_name, check_name, fire_on, severity, for_duration, runbook_section, summary) values
  ('ledger_balance_drift', 'ledger_balance_drift', 'CRITICAL', 'P1', interval '0', 'P1: LEDGER IMBALANCE DETECTED',
   'A ledger account''s kept balance differs from its entries'),
  ('reconciliation_unrepaired', 'reconciliation_unrepaired', 'CRITICAL', 'P2', interval '0', 'P2: RECONCILIATION DIFFERENCES',
   'Reconciliation found differences with a provider that no repair fixed'),
  ('reconciliation_stale', 'reconciliation_stale', 'WARNING', 'P3', interval '0', 'P2: RECONCILIATION DIFFERENCES',
   'A provider has not been reconciled for over a day');

do $$
begin
  if to_regnamespace('cron') is not null then
    perform cron.schedule('reserve_ledger_balance_full_check', '10 4 * * *', 'call reserve.ledger_balance_full_check()');
  else
    raise notice 'pg_cron missing: ledger_balance_full_check is not scheduled in the database';
  end if;
  if to_regnamespace('cron') is not null and to_regnamespace('net') is not null and to_regnamespace('vault') is not null then
    perform reserve.schedule_edge_function('reserve_reconcile', '*/15 * * * *', 'reconcile');
  else
    raise notice 'pg_cron, pg_net or vault missing: reconcile is not scheduled in the database';
  end if;
end
$$;
