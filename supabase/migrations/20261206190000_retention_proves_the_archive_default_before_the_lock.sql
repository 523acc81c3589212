-- A month's move no longer scans anything while it holds audit_logs' ACCESS EXCLUSIVE lock. Attaching
-- the month to audit_logs_archive scanned the archive's default partition (every row archived one by one,
-- and the whole archive the partitioning conversion found) to prove none was of that month: with 2M rows
-- there, bench:retention's writer waited 132-148 ms at every month. The default is now proved before the
-- lock, by a CHECK that excludes the month (its rows of the month moved aside first, into a temporary
-- table, and into the month after it is detached), so ATTACH finds the bounds implied and reads no row.
-- And the job runs its counts on one core: count(*) of a month went parallel beside the writers.

CREATE OR REPLACE FUNCTION reserve.run_retention_cleanup(p_max_batches integer DEFAULT 200, p_max_partitions integer DEFAULT NULL::integer)
 RETURNS TABLE(table_name text, retention_type text, cutoff timestamp with time zone, rows_moved bigint, batches integer, duration_ms integer, more_due boolean)
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  rp reserve.retention_policies;
  started timestamptz;
  job_started timestamptz := clock_timestamp();
  n bigint;
  total bigint;
  done integer;
  summary jsonb := '{}'::jsonb;
  cols text;
  archive_cols text;
  part record;
  rel text;
  rels text[];
  moves text[] := '{}';
  move_table text[] := '{}';
  move_kind text[] := '{}';
  move_lo timestamptz[] := '{}';
  move_hi timestamptz[] := '{}';
  moved_parts integer := 0;
  k integer;
  lock_wait text;
  stale record;
  outside text;
  back_rows boolean;
  add_cols text;
  partitions_left boolean;
begin
  if p_max_batches is null or p_max_batches < 1 then
    raise exception using errcode = 'RC001', message = 'p_max_batches must be at least 1';
  end if;
  if p_max_partitions < 1 then
    raise exception using errcode = 'RC001', message = 'p_max_partitions must be at least 1 (null: every month due)';
  end if;
  perform set_config('reserve.reason', 'run_retention_cleanup', true);
  -- background work on one core: a month's count(*) went parallel, took both cores, and a writer's
  -- audit insert beside it waited 4 to 10 ms for CPU
  perform set_config('max_parallel_workers_per_gather', '0', true);
  lock_wait := current_setting('lock_timeout');
  begin
    -- attaching a new month locks the default partition: a reader holding it leaves that to the next run
    perform set_config('lock_timeout', '500ms', true);
    perform reserve.create_audit_log_partitions(null, 3);
    perform set_config('lock_timeout', lock_wait, true);
  exception when lock_not_available then
    raise notice 'run_retention_cleanup: audit_logs partitions ahead not created (lock wait over 500 ms); the next run creates them';
  end;
  begin
    perform set_config('lock_timeout', '500ms', true);
    perform reserve.create_processed_webhook_partitions(null, 3);
    perform set_config('lock_timeout', lock_wait, true);
  exception when lock_not_available then
    raise notice 'run_retention_cleanup: processed_webhooks partitions ahead not created (lock wait over 500 ms); the next run creates them';
  end;
  select string_agg(quote_ident(a.attname), ', ' order by a.attnum) into cols
  from pg_catalog.pg_attribute a
  where a.attrelid = 'reserve.audit_logs'::regclass and a.attnum > 0 and not a.attisdropped
    and exists (select 1 from pg_catalog.pg_attribute b
                where b.attrelid = 'reserve.audit_logs_archive'::regclass and b.attname = a.attname and not b.attisdropped);

  select string_agg(quote_ident(b.attname), ', ' order by b.attnum) into archive_cols
  from pg_catalog.pg_attribute b
  where b.attrelid = 'reserve.audit_logs_archive'::regclass and b.attnum > 0 and not b.attisdropped;

  for rp in select * from reserve.retention_policies x where x.is_enabled order by x.table_name loop
    started := clock_timestamp();
    cutoff := now() - make_interval(days => rp.retention_days);
    total := 0;
    done := 0;
    n := 0;
    partitions_left := false;
    if rp.retention_type = 'archive' and rp.table_name <> 'audit_logs' then
      raise exception using errcode = 'RC001',
        message = format('retention policy %s: only audit_logs can be archived (to audit_logs_archive)', rp.table_name);
    end if;
    if exists (select 1 from pg_catalog.pg_partitioned_table pt where pt.partrelid = to_regclass('reserve.' || rp.table_name)) then
      -- whole partitions past the cutoff: moved after every policy has run
      rels := '{}';
      for part in
        select c.relname,
               (regexp_match(pg_catalog.pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\)'))[1]::timestamptz as lower_bound,
               (regexp_match(pg_catalog.pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz as upper_bound
        from pg_catalog.pg_inherits i join pg_catalog.pg_class c on c.oid = i.inhrelid
        where i.inhparent = ('reserve.' || rp.table_name)::regclass
        order by 3 nulls last
      loop
        if part.upper_bound is not null and part.upper_bound <= cutoff and cardinality(moves) >= p_max_partitions then
          -- past the cap: proved and counted by the call that moves it
          partitions_left := true;
        elsif part.upper_bound is not null and part.upper_bound <= cutoff then
          if rp.retention_type = 'archive' then
            -- proved now, while no writer waits on it, so attaching it to the archive later scans nothing.
            -- It locks only this old month; a reader holding it past 500 ms leaves the month for the next run
            begin
              perform set_config('lock_timeout', '500ms', true);
              if not exists (select 1 from pg_catalog.pg_constraint k where k.conrelid = ('reserve.' || part.relname)::regclass
                               and k.conname = part.relname || '_month') then
                execute format('alter table reserve.%I add constraint %I check (%I >= %L and %I < %L)', part.relname,
                               part.relname || '_month', rp.date_column, part.lower_bound, rp.date_column, part.upper_bound);
              end if;
              perform set_config('lock_timeout', lock_wait, true);
            exception when lock_not_available then
              raise notice 'run_retention_cleanup: % is in use (lock wait over 500 ms); the next run moves it', part.relname;
              partitions_left := true;
              continue;
            end;
          end if;
          execute format('select count(*) from reserve.%I', part.relname) into n;
          total := total + n;
          moves := moves || part.relname::text;
          move_table := move_table || rp.table_name;
          move_kind := move_kind || rp.retention_type;
          move_lo := move_lo || part.lower_bound;
          move_hi := move_hi || part.upper_bound;
        elsif part.upper_bound is null and part.lower_bound is null then
          -- the default partition: rows outside every month, moved in batches
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
             insert into reserve.audit_logs_archive (%3$s) select %3$s from moved on conflict do nothing',
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
    more_due := (done >= p_max_batches and n = rp.batch_size) or partitions_left;
    summary := summary || jsonb_build_object(rp.table_name, total);
    return next;
  end loop;

  -- last: the whole months, each a moment's ACCESS EXCLUSIVE lock on its table held until this commits
  if cardinality(moves) = 0 then
    summary := summary || jsonb_build_object('partitions_moved', 0);
  else
    perform set_config('lock_timeout', '500ms', true);
    begin
      for k in 1 .. cardinality(moves) loop
        rel := moves[k];
        if move_kind[k] = 'archive'
           and to_regclass('reserve.audit_logs_archive_p' || to_char(move_lo[k], 'YYYYMM')) is null and not exists (
             -- every column of the month is one of the archive's, with its type
             select 1 from pg_catalog.pg_attribute a
             where a.attrelid = ('reserve.' || rel)::regclass and a.attnum > 0 and not a.attisdropped
               and not exists (select 1 from pg_catalog.pg_attribute b
                               where b.attrelid = 'reserve.audit_logs_archive'::regclass and b.attname = a.attname
                                 and b.atttypid = a.atttypid and not b.attisdropped)) then
          -- Attaching a month to the archive scans its default partition for rows of that month unless a
          -- CHECK of the default rules them out, and it would scan under audit_logs' lock (2M rows archived
          -- one by one: each month's move kept audit_logs' writers waiting 140 ms). So before audit_logs is
          -- locked: the default's rows of this month (archived one by one before the month was a partition)
          -- wait in a temporary table, and a CHECK excludes the month from the default. That scan locks only
          -- the archive's default partition (its readers wait, not audit_logs' writers); the CHECK of a
          -- month already attached is implied by the partition bounds and is dropped here.
          for stale in
            select x.conname from pg_catalog.pg_constraint x
            where x.conrelid = 'reserve.audit_logs_archive_default'::regclass and x.contype = 'c'
              and x.conname like 'audit\_logs\_archive\_default\_not\_p%'
              and to_regclass('reserve.audit_logs_archive_p' || right(x.conname, 6)) is not null
          loop
            execute format('alter table reserve.audit_logs_archive_default drop constraint %I', stale.conname);
          end loop;
          back_rows := exists (select 1 from reserve.audit_logs_archive_default d
                               where d.occurred_at >= move_lo[k] and d.occurred_at < move_hi[k]);
          if back_rows then
            -- not "if not exists": a table of that name the caller made (with its own triggers) is refused
            create temporary table retention_month_back (like reserve.audit_logs_archive) on commit drop;
            execute format('with back as (delete from reserve.audit_logs_archive_default d where d.occurred_at >= %L and d.occurred_at < %L returning d.*)
                            insert into pg_temp.retention_month_back (%s) select %s from back', move_lo[k], move_hi[k], archive_cols, archive_cols);
          end if;
          outside := 'audit_logs_archive_default_not_p' || to_char(move_lo[k], 'YYYYMM');
          if not exists (select 1 from pg_catalog.pg_constraint x
                         where x.conrelid = 'reserve.audit_logs_archive_default'::regclass and x.conname = outside) then
            execute format('alter table reserve.audit_logs_archive_default add constraint %I check (occurred_at < %L or occurred_at >= %L)',
                           outside, move_lo[k], move_hi[k]);
          end if;
          -- named and described as the archive's month now: that locks only the month, which this
          -- transaction holds since its CHECK
          execute format('alter table reserve.%I rename to %I', rel, 'audit_logs_archive_p' || to_char(move_lo[k], 'YYYYMM'));
          rel := 'audit_logs_archive_p' || to_char(move_lo[k], 'YYYYMM');
          execute format('comment on table reserve.%I is %L', rel,
                         format('audit_logs_archive rows of %s (a partition: read reserve.audit_logs_archive).', to_char(move_lo[k], 'YYYY-MM')));
          -- the archive's own columns (archived_at): a default that is not volatile is kept in the catalog, no rewrite
          select string_agg(format('add column %I %s %s %s', b.attname, pg_catalog.format_type(b.atttypid, b.atttypmod),
                                   coalesce('default ' || pg_catalog.pg_get_expr(d.adbin, d.adrelid), ''),
                                   case when b.attnotnull then 'not null' else '' end), ', ' order by b.attnum)
          into add_cols
          from pg_catalog.pg_attribute b
          left join pg_catalog.pg_attrdef d on d.adrelid = b.attrelid and d.adnum = b.attnum
          where b.attrelid = 'reserve.audit_logs_archive'::regclass and b.attnum > 0 and not b.attisdropped
            and not exists (select 1 from pg_catalog.pg_attribute a where a.attrelid = ('reserve.' || rel)::regclass
                              and a.attname = b.attname and not a.attisdropped);
          -- from here until the commit, audit_logs' writers wait: catalog changes only
          execute format('alter table reserve.%I detach partition reserve.%I', move_table[k], rel);
          if add_cols is not null then
            execute format('alter table reserve.%I %s', rel, add_cols);
          end if;
          if back_rows then
            execute format('insert into reserve.%I (%s) select %s from pg_temp.retention_month_back', rel, archive_cols, archive_cols);
            drop table pg_temp.retention_month_back;
          end if;
          execute format('alter table reserve.audit_logs_archive attach partition reserve.%I for values from (%L) to (%L)',
                         rel, move_lo[k], move_hi[k]);
        elsif move_kind[k] = 'archive' then
          execute format('insert into reserve.audit_logs_archive (%1$s) select %1$s from reserve.%2$I on conflict do nothing', cols, rel);
          execute format('drop table reserve.%I', rel);
        else
          execute format('drop table reserve.%I', rel);
        end if;
        moved_parts := moved_parts + 1;
      end loop;
    exception when lock_not_available then
      -- all of it left whole for the next run (the rows were neither moved nor lost)
      raise notice 'run_retention_cleanup: partitions % not moved (lock wait over 500 ms); the next run moves them', moves;
      moved_parts := 0;
    end;
    perform set_config('lock_timeout', lock_wait, true);
    summary := summary || jsonb_build_object('partitions_moved', moved_parts);
  end if;
  perform reserve.record_job_heartbeat('run_retention_cleanup', job_started, true, summary);
end
$function$;

comment on function reserve.run_retention_cleanup(p_max_batches integer, p_max_partitions integer) is
  'Archives (audit_logs -> audit_logs_archive) or deletes rows past each enabled retention policy. A partitioned table (audit_logs and processed_webhooks, by month) hands over each month wholly past the cutoff whole (detached and attached to audit_logs_archive, or dropped for a delete policy; last in the transaction, with a 500 ms lock_timeout; the month the cutoff falls in waits until it is wholly past), at most p_max_partitions months per call across those tables (null: all). Everything a month''s move must prove (its bounds, and that the archive''s default partition holds none of its rows: a CHECK audit_logs_archive_default_not_pYYYYMM, dropped by the next move) is proved before audit_logs is locked, so the lock covers catalog changes only. Its default partition and every other table go batch_size rows per batch, at most p_max_batches batches per table, locking only the rows taken (SKIP LOCKED). Keeps the partitions of audit_logs and processed_webhooks three months ahead. One row per table: cutoff, rows moved, batches, time, and more_due when the batch cap or the month cap left rows due. Leaves a run_retention_cleanup heartbeat. Runs its queries without parallel workers.';
