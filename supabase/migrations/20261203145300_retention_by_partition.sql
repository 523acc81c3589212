-- Retention of a partitioned table (audit_logs, by month) takes whole partitions: a month wholly past
-- the cutoff is copied to the archive in one INSERT ... SELECT (an archive policy) and dropped; only the
-- month the cutoff falls in, and the default partition, are still moved in batches, straight from those
-- partitions. Dropping a partition needs a moment's ACCESS EXCLUSIVE lock on audit_logs, which queues
-- every writer of audit rows behind it, so the drops come last (nothing else runs in the transaction
-- after them) under a lock_timeout of 500 ms: a drop that cannot have the lock at once is left for the
-- next run, its rows already in the archive (the next copy skips them by id).
-- The columns copied to audit_logs_archive are those both tables have, read from the catalog, so a
-- column added to both (as audit_logs.changes) travels without this function being written again.
-- Each run also keeps the monthly partitions three months ahead (create_audit_log_partitions).
-- retention_statistics sums a partitioned table's partitions (rows estimated, size).

create or replace function reserve.run_retention_cleanup(p_max_batches integer default 200)
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
  cols text;
  part record;
  rel text;
  rels text[];
  to_drop text[] := '{}';
  dropped integer := 0;
  lock_wait text;
begin
  if p_max_batches is null or p_max_batches < 1 then
    raise exception using errcode = 'RC001', message = 'p_max_batches must be at least 1';
  end if;
  perform set_config('reserve.reason', 'run_retention_cleanup', true);
  perform reserve.create_audit_log_partitions(null, 3);
  select string_agg(quote_ident(a.attname), ', ' order by a.attnum) into cols
  from pg_catalog.pg_attribute a
  where a.attrelid = 'reserve.audit_logs'::regclass and a.attnum > 0 and not a.attisdropped
    and exists (select 1 from pg_catalog.pg_attribute b
                where b.attrelid = 'reserve.audit_logs_archive'::regclass and b.attname = a.attname and not b.attisdropped);

  for rp in select * from reserve.retention_policies x where x.is_enabled order by x.table_name loop
    started := clock_timestamp();
    cutoff := now() - make_interval(days => rp.retention_days);
    total := 0;
    done := 0;
    n := 0;
    if rp.retention_type = 'archive' and rp.table_name <> 'audit_logs' then
      raise exception using errcode = 'RC001',
        message = format('retention policy %s: only audit_logs can be archived (to audit_logs_archive)', rp.table_name);
    end if;
    if exists (select 1 from pg_catalog.pg_partitioned_table pt where pt.partrelid = to_regclass('reserve.' || rp.table_name)) then
      -- whole partitions past the cutoff: copied (archive) now, dropped after every policy has run
      rels := '{}';
      for part in
        select c.relname,
               (regexp_match(pg_catalog.pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\)'))[1]::timestamptz as lower_bound,
               (regexp_match(pg_catalog.pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz as upper_bound
        from pg_catalog.pg_inherits i join pg_catalog.pg_class c on c.oid = i.inhrelid
        where i.inhparent = ('reserve.' || rp.table_name)::regclass
        order by 3 nulls last
      loop
        if part.upper_bound is not null and part.upper_bound <= cutoff then
          if rp.retention_type = 'archive' then
            execute format('insert into reserve.audit_logs_archive (%1$s) select %1$s from reserve.%2$I on conflict (id) do nothing',
                           cols, part.relname);
            get diagnostics n = row_count;
          else
            execute format('select count(*) from reserve.%I', part.relname) into n;
          end if;
          total := total + n;
          to_drop := to_drop || part.relname::text;
        elsif part.upper_bound is null or part.lower_bound < cutoff then
          -- the default partition, and the month the cutoff falls in
          rels := rels || part.relname::text;
        end if;
      end loop;
    else
      rels := array[rp.table_name];
    end if;

    foreach rel in array rels loop
      loop
        exit when done >= p_max_batches;
        if rp.retention_type = 'archive' then
          execute format(
            'with moved as (
               delete from reserve.%1$I t where t.ctid = any (array(select x.ctid from reserve.%1$I x where x.%2$I < $1
                                                                   order by x.%2$I limit $2 for update skip locked))
               returning t.*)
             insert into reserve.audit_logs_archive (%3$s) select %3$s from moved on conflict (id) do nothing',
            rel, rp.date_column, cols)
          using cutoff, rp.batch_size;
        else
          -- a night still held is live state, whatever its date
          execute format(
            'delete from reserve.%1$I t where t.ctid = any (array(select x.ctid from reserve.%1$I x where x.%2$I < $1 %3$s
                                                                limit $2 for update skip locked))',
            rel, rp.date_column,
            case when rp.table_name = 'booking_locks' then 'and x.status <> ''held''' else '' end)
          using cutoff, rp.batch_size;
        end if;
        get diagnostics n = row_count;
        total := total + n;
        done := done + 1;
        exit when n < rp.batch_size;
      end loop;
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

  -- last: the drops, each a moment's ACCESS EXCLUSIVE lock on the parent held until this commits
  if cardinality(to_drop) > 0 then
    lock_wait := current_setting('lock_timeout');
    perform set_config('lock_timeout', '500ms', true);
    begin
      foreach rel in array to_drop loop
        execute format('drop table reserve.%I', rel);
        dropped := dropped + 1;
      end loop;
    exception when lock_not_available then
      -- left for the next run: its rows are in the archive already, and copying them again skips them
      raise notice 'run_retention_cleanup: partitions % not dropped (lock wait over 500 ms); the next run drops them', to_drop;
      dropped := 0;
    end;
    perform set_config('lock_timeout', lock_wait, true);
    summary := summary || jsonb_build_object('partitions_dropped', dropped);
  end if;
  perform reserve.record_job_heartbeat('run_retention_cleanup', job_started, true, summary);
end
$$;
comment on function reserve.run_retention_cleanup(integer) is
  'Archives (audit_logs -> audit_logs_archive) or deletes rows past each enabled retention policy. A '
  'partitioned table (audit_logs, by month) loses whole partitions past the cutoff (copied to the archive '
  'in one statement, then dropped, last, with a 500 ms lock_timeout); the month the cutoff falls in, the '
  'default partition and every other table go batch_size rows per batch, at most p_max_batches batches '
  'per table, locking only the rows taken (SKIP LOCKED). Keeps audit_logs'' partitions three months '
  'ahead. One row per table: cutoff, rows moved, batches, time, and more_due when the batch cap stopped '
  'it. Leaves a run_retention_cleanup heartbeat.';

create or replace view reserve.retention_statistics with (security_invoker = true) as
select rp.table_name, rp.retention_days, rp.retention_type, rp.is_enabled, rp.batch_size,
       sz.estimated_rows, f.due_rows, f.oldest as oldest_row_at,
       pg_catalog.pg_size_pretty(sz.total_bytes) as total_size, sz.total_bytes,
       case when rp.retention_type = 'archive' then
         (select case when a.reltuples >= 0 then a.reltuples::bigint end from pg_catalog.pg_class a
          where a.oid = to_regclass('reserve.' || rp.table_name || '_archive'))
       end as archived_rows_estimate,
       rp.last_run_at, rp.last_run_rows
from reserve.retention_policies rp
join pg_catalog.pg_class c on c.oid = to_regclass('reserve.' || rp.table_name)
cross join lateral (
  -- a partitioned table holds nothing itself: its partitions' rows and bytes
  select case when bool_and(l.reltuples >= 0) then sum(l.reltuples)::bigint end as estimated_rows,
         sum(pg_catalog.pg_total_relation_size(l.oid))::bigint as total_bytes
  from pg_catalog.pg_class l
  where l.oid = c.oid and c.relkind <> 'p'
     or l.oid in (select pt.relid from pg_catalog.pg_partition_tree(c.oid) pt where pt.isleaf)
) sz
cross join lateral reserve.retention_table_facts(rp.table_name, rp.date_column, now() - make_interval(days => rp.retention_days)) f;
comment on view reserve.retention_statistics is
  'Per retention policy: rows (estimated; a partitioned table''s summed over its partitions), rows past '
  'retention (due_rows), the oldest row, size (all partitions), archived rows, and the last run of run_retention_cleanup.';
