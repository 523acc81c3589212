-- A month run_retention_cleanup could not prove because a reader held it past the 500 ms lock wait is
-- still due: more_due now says so. It said false, and "CALL the job until more_due is false" (the
-- runbook's backlog loop, bench:retention) stopped with that month left for the schedule.

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
  extra record;
  lock_wait text;
  partitions_left boolean;
begin
  if p_max_batches is null or p_max_batches < 1 then
    raise exception using errcode = 'RC001', message = 'p_max_batches must be at least 1';
  end if;
  if p_max_partitions < 1 then
    raise exception using errcode = 'RC001', message = 'p_max_partitions must be at least 1 (null: every month due)';
  end if;
  perform set_config('reserve.reason', 'run_retention_cleanup', true);
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
          execute format('alter table reserve.%I detach partition reserve.%I', move_table[k], rel);
          -- the archive's own columns (archived_at): a default that is not volatile is kept in the catalog, no rewrite
          for extra in
            select b.attname, pg_catalog.format_type(b.atttypid, b.atttypmod) as type, b.attnotnull,
                   pg_catalog.pg_get_expr(d.adbin, d.adrelid) as def
            from pg_catalog.pg_attribute b
            left join pg_catalog.pg_attrdef d on d.adrelid = b.attrelid and d.adnum = b.attnum
            where b.attrelid = 'reserve.audit_logs_archive'::regclass and b.attnum > 0 and not b.attisdropped
              and not exists (select 1 from pg_catalog.pg_attribute a where a.attrelid = ('reserve.' || rel)::regclass
                                and a.attname = b.attname and not a.attisdropped)
          loop
            execute format('alter table reserve.%I add column %I %s %s %s', rel, extra.attname, extra.type,
                           coalesce('default ' || extra.def, ''), case when extra.attnotnull then 'not null' else '' end);
          end loop;
          -- rows of this month archived one by one before (from the default partition) join it
          execute format('with back as (delete from reserve.audit_logs_archive_default d where d.occurred_at >= %L and d.occurred_at < %L returning d.*)
                          insert into reserve.%I (%s) select %s from back', move_lo[k], move_hi[k], rel, archive_cols, archive_cols);
          execute format('alter table reserve.audit_logs_archive attach partition reserve.%I for values from (%L) to (%L)',
                         rel, move_lo[k], move_hi[k]);
          execute format('alter table reserve.%I rename to %I', rel, 'audit_logs_archive_p' || to_char(move_lo[k], 'YYYYMM'));
          execute format('comment on table reserve.%I is %L', 'audit_logs_archive_p' || to_char(move_lo[k], 'YYYYMM'),
                         format('audit_logs_archive rows of %s (a partition: read reserve.audit_logs_archive).', to_char(move_lo[k], 'YYYY-MM')));
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
