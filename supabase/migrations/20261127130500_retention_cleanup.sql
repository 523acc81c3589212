-- run_retention_cleanup(): moves or deletes what retention_policies say is due, in bounded batches of
-- batch_size rows. Each batch locks only the old rows it takes (SKIP LOCKED, never a table lock), so
-- writers of new rows are never stalled. A call does at most p_max_batches per table, so one call is a
-- bounded transaction; retention_cleanup_job() repeats calls with a commit between them until nothing
-- is due (what the schedule runs).

insert into reserve.retention_policies (table_name, retention_days, retention_type, date_column, description) values
  ('job_heartbeats', 30, 'delete', 'finished_at', 'Scheduled job runs: a month of heartbeats.'),
  ('rate_limit_counters', 2, 'delete', 'window_start', 'Checkout rate-limit windows: worthless once the hour is over.');

create function reserve.run_retention_cleanup(p_max_batches integer default 200)
returns table (table_name text, retention_type text, cutoff timestamptz, rows_moved bigint, batches integer,
               duration_ms integer, more_due boolean)
language plpgsql
security definer
set search_path = ''
as $$
declare
  rp reserve.retention_policies;
  started timestamptz;
  job_started timestamptz := clock_timestamp();
  n bigint;
  total bigint;
  done integer;
  summary jsonb := '{}'::jsonb;
begin
  if p_max_batches is null or p_max_batches < 1 then
    raise exception using errcode = 'RC001', message = 'p_max_batches must be at least 1';
  end if;
  perform set_config('reserve.reason', 'run_retention_cleanup', true);
  for rp in select * from reserve.retention_policies x where x.is_enabled order by x.table_name loop
    started := clock_timestamp();
    cutoff := now() - make_interval(days => rp.retention_days);
    total := 0;
    done := 0;
    loop
      exit when done >= p_max_batches;
      if rp.retention_type = 'archive' and rp.table_name = 'audit_logs' then
        with batch as (
          select a.id from reserve.audit_logs a where a.occurred_at < cutoff
          order by a.occurred_at limit rp.batch_size for update skip locked
        ), moved as (
          delete from reserve.audit_logs a using batch where a.id = batch.id returning a.*
        )
        insert into reserve.audit_logs_archive (id, occurred_at, actor, action, table_name, row_id, old_values,
                                                new_values, reason, xact_id)
        select m.id, m.occurred_at, m.actor, m.action, m.table_name, m.row_id, m.old_values, m.new_values, m.reason, m.xact_id
        from moved m
        on conflict (id) do nothing;
        get diagnostics n = row_count;
      elsif rp.retention_type = 'delete' then
        -- a night still held is live state, whatever its date
        execute format(
          'delete from reserve.%1$I t where t.ctid = any (array(select x.ctid from reserve.%1$I x where x.%2$I < $1 %3$s
                                                              limit $2 for update skip locked))',
          rp.table_name, rp.date_column,
          case when rp.table_name = 'booking_locks' then 'and x.status <> ''held''' else '' end)
        using cutoff, rp.batch_size;
        get diagnostics n = row_count;
      else
        raise exception using errcode = 'RC001',
          message = format('retention policy %s: only audit_logs can be archived (to audit_logs_archive)', rp.table_name);
      end if;
      total := total + n;
      done := done + 1;
      exit when n < rp.batch_size;
    end loop;
    update reserve.retention_policies x set last_run_at = now(), last_run_rows = total where x.table_name = rp.table_name;
    table_name := rp.table_name;
    retention_type := rp.retention_type;
    rows_moved := total;
    batches := done;
    duration_ms := (extract(epoch from clock_timestamp() - started) * 1000)::integer;
    more_due := done >= p_max_batches and n = rp.batch_size;
    summary := summary || jsonb_build_object(rp.table_name, total);
    return next;
  end loop;
  perform reserve.record_job_heartbeat('run_retention_cleanup', job_started, true, summary);
end
$$;
comment on function reserve.run_retention_cleanup(integer) is
  'Archives (audit_logs -> audit_logs_archive) or deletes rows past each enabled retention policy, '
  'batch_size rows per batch and at most p_max_batches batches per table, locking only the rows it '
  'takes (SKIP LOCKED). One row per table: cutoff, rows moved, batches, time, and more_due when the '
  'batch cap stopped it. Leaves a run_retention_cleanup heartbeat.';
revoke all on function reserve.run_retention_cleanup(integer) from public;
grant execute on function reserve.run_retention_cleanup(integer) to service_role;

-- Invoker rights and no SET clause: a procedure with either cannot commit between its calls.
create procedure reserve.retention_cleanup_job(p_max_calls integer default 1000)
language plpgsql
as $$
declare
  more boolean := true;
  calls integer := 0;
begin
  while more and calls < p_max_calls loop
    select coalesce(bool_or(r.more_due), false) into more from reserve.run_retention_cleanup(20) r;
    calls := calls + 1;
    commit;
  end loop;
end
$$;
comment on procedure reserve.retention_cleanup_job(integer) is
  'CALL it (the daily schedule does): run_retention_cleanup in calls of 20 batches per table, '
  'committed one by one, until nothing is due. A backlog of millions never becomes one long transaction.';
revoke all on procedure reserve.retention_cleanup_job(integer) from public;

do $$
begin
  if to_regnamespace('cron') is not null then
    perform cron.schedule('reserve_retention_cleanup', '30 3 * * *', 'call reserve.retention_cleanup_job()');
  else
    raise notice 'pg_cron missing: run_retention_cleanup is not scheduled in the database';
  end if;
end
$$;
