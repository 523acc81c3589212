-- run_retention_cleanup read the archive default's bound (its before_pYYYYMM CHECKs) from the catalog
-- twice, before the batches and again before the months' proofs, and built the drop of it twice. Runs
-- are one at a time and only the run itself drops the bound meanwhile, so it is read once, at the start,
-- and the run keeps the bound and its drop in step when it drops it. Same behaviour.

CREATE OR REPLACE FUNCTION reserve.run_retention_cleanup(p_max_batches integer DEFAULT 200, p_max_partitions integer DEFAULT NULL::integer)
 RETURNS TABLE(table_name text, retention_type text, cutoff timestamp with time zone, rows_moved bigint, batches integer, duration_ms integer, more_due boolean)
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
 SET max_parallel_workers_per_gather TO '0'
 SET "DateStyle" TO 'ISO, MDY'
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
  move_whole boolean[] := '{}';
  move_name text[] := '{}';
  move_cols text[] := '{}';
  outside text := '';
  set_aside boolean := false;
  add_cols text;
  partitions_left boolean;
  move_rows bigint[] := '{}';
  res_table text[] := '{}';
  res_type text[] := '{}';
  res_cutoff timestamptz[] := '{}';
  res_rows bigint[] := '{}';
  res_batches integer[] := '{}';
  res_ms integer[] := '{}';
  res_more boolean[] := '{}';
  i integer;
  bound_names text[];
  bound timestamptz;
  new_bound timestamptz;
  new_bound_name text;
  due_above boolean;
  row_above boolean;
  drops text;
  copy_to_default boolean := false;
  need_proof boolean[] := '{}';
begin
  if p_max_batches is null or p_max_batches < 1 then
    raise exception using errcode = 'RC001', message = 'p_max_batches must be at least 1';
  end if;
  if p_max_partitions < 1 then
    raise exception using errcode = 'RC001', message = 'p_max_partitions must be at least 1 (null: every month due)';
  end if;
  -- one run at a time: two would prove, add and drop the same CHECKs of the archive's default crosswise
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('reserve.run_retention_cleanup'));
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

  -- The archive's default partition may carry a CHECK bounding it below a month (made by an earlier
  -- move; one, unless made by hand): a month at or above the bound is ruled out without a scan, and no
  -- row at or above it may be archived into the default. Read once: only this run changes it meanwhile
  -- (one run at a time), and it keeps these in step when it drops it.
  select array_agg(x.conname order by x.conname),
         min((regexp_match(pg_catalog.pg_get_constraintdef(x.oid), '''([^'']+)'''))[1]::timestamptz)
  into bound_names, bound
  from pg_catalog.pg_constraint x
  where x.conrelid = 'reserve.audit_logs_archive_default'::regclass and x.contype = 'c'
    and x.conname like 'audit\_logs\_archive\_default\_before\_p%';
  drops := coalesce((select string_agg(format(', drop constraint %I', b), '') from unnest(bound_names) b), '');

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
          move_rows := move_rows || n;
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

    if rp.retention_type = 'archive' and cardinality(rels) > 0 then
      -- a row the batches archive at or above the archive default's bound, in a month the archive has no
      -- partition for, would land in the default and break its CHECK: the bound is dropped first (no
      -- scan), and a later month's move sets it again
      if bound is not null then
        due_above := false;
        foreach rel in array rels loop
          execute format('select exists (select 1 from reserve.%I x where x.occurred_at >= $1 and x.occurred_at < $2)', rel)
          into row_above using bound, cutoff;
          due_above := due_above or row_above;
        end loop;
        if due_above then
          begin
            perform set_config('lock_timeout', '500ms', true);
            execute 'alter table reserve.audit_logs_archive_default ' || substr(drops, 3);
            perform set_config('lock_timeout', lock_wait, true);
            bound := null;
            drops := '';
          exception when lock_not_available or deadlock_detected then
            -- the rows below the bound are archived now (the batches skip those above it), the rest next run
            raise notice 'run_retention_cleanup: audit_logs_archive_default is in use (lock wait over 500 ms); rows at or after its bound are archived by the next run';
            partitions_left := true;
          end;
        end if;
      end if;
    end if;

    foreach rel in array rels loop
      loop
        exit when done >= p_max_batches;
        if rp.retention_type = 'archive' then
          execute format(
            'with moved as (
               delete from reserve.%1$I t where t.ctid = any (array(select x.ctid from reserve.%1$I x where x.%2$I < $1
                                                                   and ($3::timestamptz is null or x.occurred_at < $3)
                                                                   order by x.%2$I limit $2 for update skip locked))
               returning t.*)
             insert into reserve.audit_logs_archive (%3$s) select %3$s from moved on conflict do nothing',
            rel, rp.date_column, cols)
          using cutoff, rp.batch_size, bound;
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
    -- answered after the months' moves, which may yet be left for the next run
    res_table := res_table || rp.table_name;
    res_type := res_type || rp.retention_type;
    res_cutoff := res_cutoff || cutoff;
    res_rows := res_rows || total;
    res_batches := res_batches || done;
    res_ms := res_ms || (extract(epoch from clock_timestamp() - started) * 1000)::integer;
    res_more := res_more || ((done >= p_max_batches and n = rp.batch_size) or partitions_left);
  end loop;

  -- last: the whole months, each a moment's ACCESS EXCLUSIVE lock on its table held until this commits
  if cardinality(moves) = 0 then
    summary := summary || jsonb_build_object('partitions_moved', 0);
  else
    perform set_config('lock_timeout', '500ms', true);
    begin
      -- First, for every month, with no table of a policy locked yet: all that the moves must prove.
      -- Attaching a month to the archive scans the archive's default partition for rows of that month
      -- unless a CHECK of the default rules them out; done by ATTACH it would read that partition under
      -- audit_logs' lock (2M rows archived one by one: every month's move kept audit_logs' writers waiting
      -- 140 ms). So the default's rows of these months (archived one by one before the month was a
      -- partition) wait in a temporary table, and one ALTER TABLE adds a CHECK per month excluding it (one
      -- scan, locking only the default partition: its readers wait, not audit_logs' writers). A CHECK of a
      -- month already attached is implied by its partition bounds and is dropped here.
      for k in 1 .. cardinality(moves) loop
        -- named for the month of its name (the bounds' month in the caller's time zone can be another)
        move_name := move_name || ('audit_logs_archive_p' || case when moves[k] ~ '^audit_logs_p[0-9]{6}$' then right(moves[k], 6)
                                                                  else to_char(move_lo[k], 'YYYYMM') end);
        move_whole := move_whole || (move_kind[k] = 'archive'
          and to_regclass('reserve.' || move_name[k]) is null and not exists (
            -- every column of the month is one of the archive's, with its type
            select 1 from pg_catalog.pg_attribute a
            where a.attrelid = ('reserve.' || moves[k])::regclass and a.attnum > 0 and not a.attisdropped
              and not exists (select 1 from pg_catalog.pg_attribute b
                              where b.attrelid = 'reserve.audit_logs_archive'::regclass and b.attname = a.attname
                                and b.atttypid = a.atttypid and not b.attisdropped)));
        if not move_whole[k] and move_kind[k] = 'archive' and to_regclass('reserve.' || move_name[k]) is null then
          -- copied row by row into a month the archive has no partition for: into the default, so no bound
          -- above its month stays, and none is set in this call
          copy_to_default := true;
          if bound is not null and move_hi[k] > bound then
            outside := outside || drops;
            drops := '';
            bound := null;
          end if;
        end if;
      end loop;
      new_bound := null;
      for k in 1 .. cardinality(moves) loop
        need_proof := need_proof || (move_whole[k] and (bound is null or move_lo[k] < bound));
        if move_whole[k] then
          if exists (select 1 from reserve.audit_logs_archive_default d where d.occurred_at >= move_lo[k] and d.occurred_at < move_hi[k]) then
            if not set_aside then
              -- not "if not exists": a table of that name the caller made (with its own triggers) is refused
              create temporary table retention_month_back (like reserve.audit_logs_archive, retention_move integer) on commit drop;
              set_aside := true;
            end if;
            execute format('with back as (delete from reserve.audit_logs_archive_default d where d.occurred_at >= %L and d.occurred_at < %L returning d.*)
                            insert into pg_temp.retention_month_back (%s, retention_move) select %s, %s from back',
                           move_lo[k], move_hi[k], archive_cols, archive_cols, k);
          end if;
          if need_proof[k] and (new_bound is null or move_lo[k] < new_bound) then
            new_bound := move_lo[k];
            new_bound_name := 'audit_logs_archive_default_before_p' || right(move_name[k], 6);
          end if;
        end if;
      end loop;
      if new_bound is not null and not copy_to_default
         and not exists (select 1 from reserve.audit_logs_archive_default d where d.occurred_at >= new_bound) then
        -- nothing of the default at or above the lowest month to prove (its rows of these months are set
        -- aside): one CHECK bounds it below that month, one scan now and none for the months after it. Rows
        -- at or above it go to their months' partitions (the batches drop the bound before one would not)
        outside := outside || drops;
        outside := outside || format(', add constraint %I check (occurred_at < %L)', new_bound_name, new_bound);
      else
        for k in 1 .. cardinality(moves) loop
          if need_proof[k] and not exists (
              select 1 from pg_catalog.pg_constraint x where x.conrelid = 'reserve.audit_logs_archive_default'::regclass
                and x.conname = 'audit_logs_archive_default_not_p' || right(move_name[k], 6)) then
            outside := outside || format(', add constraint %I check (occurred_at < %L or occurred_at >= %L)',
                                         'audit_logs_archive_default_not_p' || right(move_name[k], 6), move_lo[k], move_hi[k]);
          end if;
        end loop;
      end if;
      if true = any (move_whole) then
        for stale in
          select x.conname from pg_catalog.pg_constraint x
          where x.conrelid = 'reserve.audit_logs_archive_default'::regclass and x.contype = 'c'
            and x.conname like 'audit\_logs\_archive\_default\_not\_p%'
            and to_regclass('reserve.audit_logs_archive_p' || right(x.conname, 6)) is not null
        loop
          outside := format(', drop constraint %I', stale.conname) || outside;
        end loop;
      end if;
      if outside <> '' then
        execute 'alter table reserve.audit_logs_archive_default ' || substr(outside, 3);
      end if;
      for k in 1 .. cardinality(moves) loop
        add_cols := null;
        if move_whole[k] then
          -- named and described as the archive's month already: that locks only the month
          execute format('alter table reserve.%I rename to %I', moves[k], move_name[k]);
          execute format('comment on table reserve.%I is %L', move_name[k],
                         format('audit_logs_archive rows of %s (a partition: read reserve.audit_logs_archive).',
                                left(right(move_name[k], 6), 4) || '-' || right(move_name[k], 2)));
          -- the archive's own columns (archived_at): a default that is not volatile is kept in the catalog, no rewrite
          select string_agg(format('add column %I %s %s %s', b.attname, pg_catalog.format_type(b.atttypid, b.atttypmod),
                                   coalesce('default ' || pg_catalog.pg_get_expr(d.adbin, d.adrelid), ''),
                                   case when b.attnotnull then 'not null' else '' end), ', ' order by b.attnum)
          into add_cols
          from pg_catalog.pg_attribute b
          left join pg_catalog.pg_attrdef d on d.adrelid = b.attrelid and d.adnum = b.attnum
          where b.attrelid = 'reserve.audit_logs_archive'::regclass and b.attnum > 0 and not b.attisdropped
            and not exists (select 1 from pg_catalog.pg_attribute a where a.attrelid = ('reserve.' || move_name[k])::regclass
                              and a.attname = b.attname and not a.attisdropped);
        end if;
        move_cols := move_cols || add_cols;
      end loop;

      -- Then the moves: from the first DETACH or DROP until the commit, that table's writers wait, for
      -- catalog changes only
      for k in 1 .. cardinality(moves) loop
        if move_whole[k] then
          rel := move_name[k];
          execute format('alter table reserve.%I detach partition reserve.%I', move_table[k], rel);
          if move_cols[k] is not null then
            execute format('alter table reserve.%I %s', rel, move_cols[k]);
          end if;
          if set_aside then
            execute format('insert into reserve.%I (%s) select %s from pg_temp.retention_month_back where retention_move = %s',
                           rel, archive_cols, archive_cols, k);
          end if;
          execute format('alter table reserve.audit_logs_archive attach partition reserve.%I for values from (%L) to (%L)',
                         rel, move_lo[k], move_hi[k]);
        elsif move_kind[k] = 'archive' then
          execute format('insert into reserve.audit_logs_archive (%1$s) select %1$s from reserve.%2$I on conflict do nothing', cols, moves[k]);
          execute format('drop table reserve.%I', moves[k]);
        else
          execute format('drop table reserve.%I', moves[k]);
        end if;
        moved_parts := moved_parts + 1;
      end loop;
      if set_aside then
        drop table pg_temp.retention_month_back;
      end if;
    exception when lock_not_available or deadlock_detected then
      -- all of it left whole for the next run (the rows were neither moved nor lost); a deadlock is a
      -- reader of the archive's default partition and audit_logs both, waiting on this run
      raise notice 'run_retention_cleanup: partitions % not moved (lock wait over 500 ms); the next run moves them', moves;
      moved_parts := 0;
      -- their rows were counted as moved: they are not, and they are still due
      for k in 1 .. cardinality(moves) loop
        i := array_position(res_table, move_table[k]);
        res_rows[i] := res_rows[i] - move_rows[k];
        res_more[i] := true;
      end loop;
    end;
    perform set_config('lock_timeout', lock_wait, true);
    summary := summary || jsonb_build_object('partitions_moved', moved_parts);
  end if;
  for i in 1 .. coalesce(cardinality(res_table), 0) loop
    update reserve.retention_policies x set last_run_at = now(), last_run_rows = res_rows[i] where x.table_name = res_table[i];
    summary := summary || jsonb_build_object(res_table[i], res_rows[i]);
    table_name := res_table[i];
    retention_type := res_type[i];
    cutoff := res_cutoff[i];
    rows_moved := res_rows[i];
    batches := res_batches[i];
    duration_ms := res_ms[i];
    more_due := res_more[i];
    return next;
  end loop;
  perform reserve.record_job_heartbeat('run_retention_cleanup', job_started, true, summary);
end
$function$;
