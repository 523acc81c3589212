-- audit_logs becomes partitioned by month of occurred_at, so retention moves whole months instead of
-- deleting rows one by one (5M rows: 105 s of batches, and the space back only after VACUUM FULL).
-- A partition per month (audit_logs_pYYYYMM) from the month of the oldest row to three months ahead,
-- kept ahead by create_audit_log_partitions() (the retention job calls it), and a default partition for
-- a row outside them (a back-dated import), from which a month's rows move into its own partition when
-- that month is created. audit_logs_archive is partitioned the same way, with only a default partition
-- to begin with: retention detaches a month from audit_logs and attaches it to the archive (next
-- migration), so archiving a month writes no row.
--
-- The conversion is generic, so it carries whatever each table has when it runs: every column with its
-- default, identity, check constraints and comments (LIKE), every index (a unique one, the primary key
-- included, gains occurred_at: a partitioned table's unique keys contain the partition key), every
-- trigger, row level security, grants, the table's comment, and the views that read it (dropped and
-- created again from their definitions). Rows are copied in one INSERT ... SELECT with their ids, and
-- counted on both sides. It runs once per deploy under an ACCESS EXCLUSIVE lock: seconds on a test
-- database, a few minutes for 5M rows on 2 cores (writers of audit rows wait meanwhile).

create function reserve.audit_log_partition_name(p_month date)
returns text
language sql
immutable
set search_path = ''
as $$
  select 'audit_logs_p' || to_char(p_month, 'YYYYMM')
$$;
comment on function reserve.audit_log_partition_name(date) is 'The name of the audit_logs partition of the month p_month is in.';
revoke all on function reserve.audit_log_partition_name(date) from public;

create function reserve.create_audit_log_partitions(p_from date default null, p_months_ahead integer default 3)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  m date;
  last_month date;
  part text;
  g record;
  created integer := 0;
begin
  if p_months_ahead is null or p_months_ahead < 0 or p_months_ahead > 24 then
    raise exception using errcode = 'RC001', message = 'p_months_ahead must be between 0 and 24';
  end if;
  m := date_trunc('month', coalesce(p_from, current_date))::date;
  last_month := (date_trunc('month', current_date) + make_interval(months => p_months_ahead))::date;
  if m > last_month then
    last_month := m;
  end if;
  while m <= last_month loop
    part := reserve.audit_log_partition_name(m);
    if to_regclass('reserve.' || part) is null then
      -- made as a table of its own, given the month's rows from the default partition if any, then
      -- attached: attaching takes a SHARE UPDATE EXCLUSIVE lock, so writers of audit rows go on
      execute format('create table reserve.%I (like reserve.audit_logs including defaults including constraints)', part);
      execute format('alter table reserve.%I add constraint %I check (occurred_at >= %L and occurred_at < %L)',
                     part, part || '_month', m, (m + interval '1 month')::date);
      if to_regclass('reserve.audit_logs_default') is not null then
        execute format('with moved as (delete from reserve.audit_logs_default d where d.occurred_at >= %L and d.occurred_at < %L returning d.*)
                        insert into reserve.%I select * from moved', m, (m + interval '1 month')::date, part);
      end if;
      execute format('alter table reserve.audit_logs attach partition reserve.%I for values from (%L) to (%L)',
                     part, m, (m + interval '1 month')::date);
      -- the month check proved the bound when attaching; the partition constraint holds it from now on
      execute format('alter table reserve.%I drop constraint %I', part, part || '_month');
      execute format('alter table reserve.%I enable row level security', part);
      execute format('revoke all on reserve.%I from public', part);
      if exists (select 1 from pg_catalog.pg_roles where rolname = 'anon') then
        execute format('revoke all on reserve.%I from anon, authenticated', part);
      end if;
      -- who may read the parent may read the partition (service_role: every table, bypassing RLS)
      for g in select a.privilege_type, a.grantee from pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
               where c.oid = 'reserve.audit_logs'::regclass and a.grantee <> c.relowner loop
        execute format('grant %s on reserve.%I to %s', g.privilege_type, part,
                       case when g.grantee = 0 then 'public' else quote_ident(g.grantee::regrole::text) end);
      end loop;
      execute format('comment on table reserve.%I is %L', part,
                     format('audit_logs rows of %s (a partition: read and write reserve.audit_logs).', to_char(m, 'YYYY-MM')));
      created := created + 1;
    end if;
    m := (m + interval '1 month')::date;
  end loop;
  return created;
end
$$;
comment on function reserve.create_audit_log_partitions(date, integer) is
  'Creates the monthly partitions of audit_logs missing from the month of p_from (default: this month) '
  'to p_months_ahead months ahead, each given its rows from the default partition. Returns how many it '
  'created. The retention job calls it; a load of back-dated history calls it first with p_from.';
revoke all on function reserve.create_audit_log_partitions(date, integer) from public;
grant execute on function reserve.create_audit_log_partitions(date, integer) to service_role;

create function pg_temp.partition_by_month(p_table text, p_monthly boolean)
returns void
language plpgsql
as $$
declare
  tbl constant regclass := ('reserve.' || p_table)::regclass;
  old_name constant text := p_table || '_unpartitioned';
  default_part constant text := p_table || '_default';
  r record;
  g record;
  def text;
  n_old bigint;
  n_new bigint;
  first_month date;
  seq text;
  last_id bigint;
begin
  execute format('lock table reserve.%I in access exclusive mode', p_table);
  if exists (select 1 from pg_catalog.pg_partitioned_table where partrelid = tbl) then
    return;
  end if;
  if exists (select 1 from pg_catalog.pg_policy where polrelid = tbl) then
    raise exception '% has row level security policies: carry them over in this migration', p_table;
  end if;

  -- the views reading audit_logs, to be created again over the partitioned table
  drop table if exists pg_temp.audit_log_views;
  create temporary table audit_log_views on commit drop as
  select distinct v.oid, v.relname, pg_catalog.pg_get_viewdef(v.oid) as def, v.reloptions,
         pg_catalog.obj_description(v.oid, 'pg_class') as note, v.relacl
  from pg_catalog.pg_depend d
  join pg_catalog.pg_rewrite w on w.oid = d.objid and d.classid = 'pg_catalog.pg_rewrite'::regclass
  join pg_catalog.pg_class v on v.oid = w.ev_class
  where d.refobjid = tbl and v.oid <> tbl;
  for r in select * from audit_log_views loop
    execute format('drop view reserve.%I', r.relname);
  end loop;

  -- the old table steps aside with its indexes and sequence, so the new one takes their names
  seq := pg_catalog.pg_get_serial_sequence(format('reserve.%I', p_table), 'id');
  execute format('alter table reserve.%I rename to %I', p_table, old_name);
  for r in select i.relname from pg_catalog.pg_index x join pg_catalog.pg_class i on i.oid = x.indexrelid
           where x.indrelid = ('reserve.' || old_name)::regclass loop
    execute format('alter index reserve.%I rename to %I', r.relname, left(r.relname, 49) || '_unpartitioned');
  end loop;
  if seq is not null then
    execute format('alter sequence %s rename to %I', seq, old_name || '_id_seq');
  end if;

  execute format('create table reserve.%I (like reserve.%I including defaults including constraints including identity
                  including generated including comments including storage including compression) partition by range (occurred_at)',
                 p_table, old_name);
  execute format('create table reserve.%I partition of reserve.%I default', default_part, p_table);

  execute format('select min(occurred_at)::date, count(*) from reserve.%I', old_name) into first_month, n_old;
  if p_monthly then
    perform reserve.create_audit_log_partitions(first_month, 3);
  else
    -- the months the rows already there are in, so that the default partition starts empty (attaching a
    -- month later scans it)
    for r in execute format('select distinct date_trunc(''month'', occurred_at)::date as m from reserve.%I', old_name) loop
      execute format('create table reserve.%I partition of reserve.%I for values from (%L) to (%L)',
                     p_table || '_p' || to_char(r.m, 'YYYYMM'), p_table, r.m, (r.m + interval '1 month')::date);
      execute format('alter table reserve.%I enable row level security', p_table || '_p' || to_char(r.m, 'YYYYMM'));
      execute format('comment on table reserve.%I is %L', p_table || '_p' || to_char(r.m, 'YYYYMM'),
                     format('%s rows of %s (a partition: read reserve.%s).', p_table, to_char(r.m, 'YYYY-MM'), p_table));
    end loop;
  end if;
  execute format('insert into reserve.%I %s select * from reserve.%I', p_table,
                 case when seq is not null then 'overriding system value' else '' end, old_name);
  get diagnostics n_new = row_count;
  if n_new <> n_old then
    raise exception '% partitioning copied % of % rows', p_table, n_new, n_old;
  end if;
  execute format('select max(id) from reserve.%I', old_name) into last_id;
  if seq is not null then
    execute format('select greatest(last_value, %s) from %s', coalesce(last_id, 0), format('reserve.%I', old_name || '_id_seq'))
      into last_id;
  end if;
  if pg_catalog.pg_get_serial_sequence(format('reserve.%I', p_table), 'id') is not null and last_id > 0 then
    perform pg_catalog.setval(pg_catalog.pg_get_serial_sequence(format('reserve.%I', p_table), 'id'), last_id);
  end if;

  -- keys and indexes, built once the rows are in (each partition's at once)
  for r in select c.conname, pg_catalog.pg_get_constraintdef(c.oid) as def, c.contype
           from pg_catalog.pg_constraint c
           where c.conrelid = ('reserve.' || old_name)::regclass and c.contype in ('p', 'u') loop
    def := r.def;
    if def !~ '\moccurred_at\M' then
      def := regexp_replace(def, '\)', ', occurred_at)');
    end if;
    execute format('alter table reserve.%I add constraint %I %s', p_table, regexp_replace(r.conname, '_unpartitioned$', ''), def);
  end loop;
  for r in select i.relname, pg_catalog.pg_get_indexdef(x.indexrelid) as def, x.indisunique
           from pg_catalog.pg_index x join pg_catalog.pg_class i on i.oid = x.indexrelid
           where x.indrelid = ('reserve.' || old_name)::regclass
             and not exists (select 1 from pg_catalog.pg_constraint c where c.conindid = x.indexrelid) loop
    def := replace(r.def, format(' ON reserve.%s ', old_name), format(' ON reserve.%s ', p_table));
    def := replace(def, r.relname, regexp_replace(r.relname, '_unpartitioned$', ''));
    if r.indisunique and def !~ '\moccurred_at\M' then
      raise exception 'unique index % of % lacks occurred_at: a partitioned table cannot hold it', r.relname, p_table;
    end if;
    execute def;
  end loop;

  for r in select t.oid from pg_catalog.pg_trigger t
           where t.tgrelid = ('reserve.' || old_name)::regclass and not t.tgisinternal loop
    execute replace(pg_catalog.pg_get_triggerdef(r.oid), format(' ON reserve.%s ', old_name), format(' ON reserve.%s ', p_table));
  end loop;

  -- what the table itself carried
  select c.relrowsecurity, c.relforcerowsecurity, pg_catalog.obj_description(c.oid, 'pg_class') as note, c.relacl
    into g from pg_catalog.pg_class c where c.oid = ('reserve.' || old_name)::regclass;
  if g.relrowsecurity then
    execute format('alter table reserve.%I enable row level security', p_table);
    execute format('alter table reserve.%I enable row level security', default_part);
  end if;
  if g.relforcerowsecurity then
    execute format('alter table reserve.%I force row level security', p_table);
  end if;
  execute format('comment on table reserve.%I is %L', p_table, coalesce(g.note || ' ', '') || case when p_monthly
    then 'Partitioned by month of occurred_at (one partition a month, named audit_logs_pYYYYMM, and audit_logs_default for a row outside them).'
    else 'Partitioned by month of occurred_at: retention attaches each month of audit_logs it archives as a partition; rows archived one by one are in audit_logs_archive_default.' end);
  execute format('comment on table reserve.%I is %L', default_part, case when p_monthly
    then 'audit_logs rows outside every monthly partition (a back-dated import); create_audit_log_partitions() moves a month''s rows out when it creates that month.'
    else 'audit_logs_archive rows archived one by one (from audit_logs_default), outside every month attached whole.' end);
  execute format('revoke all on reserve.%I, reserve.%I from public', p_table, default_part);
  if exists (select 1 from pg_catalog.pg_roles where rolname = 'anon') then
    execute format('revoke all on reserve.%I, reserve.%I from anon, authenticated', p_table, default_part);
  end if;
  for r in select a.privilege_type, a.grantee from pg_catalog.aclexplode(g.relacl) a
           where a.grantee <> (select c.relowner from pg_catalog.pg_class c where c.oid = ('reserve.' || old_name)::regclass) loop
    execute format('grant %s on reserve.%I to %s', r.privilege_type, p_table,
                   case when r.grantee = 0 then 'public' else quote_ident(r.grantee::regrole::text) end);
  end loop;

  for r in select c.relname from pg_catalog.pg_inherits i join pg_catalog.pg_class c on c.oid = i.inhrelid
           where i.inhparent = format('reserve.%I', p_table)::regclass loop
    for g in select a.privilege_type, a.grantee from pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
             where c.oid = format('reserve.%I', p_table)::regclass and a.grantee <> c.relowner loop
      execute format('grant %s on reserve.%I to %s', g.privilege_type, r.relname,
                     case when g.grantee = 0 then 'public' else quote_ident(g.grantee::regrole::text) end);
    end loop;
  end loop;

  execute format('drop table reserve.%I', old_name);

  for r in select * from audit_log_views order by oid loop
    execute format('create view reserve.%I %s as %s', r.relname,
                   coalesce('with (' || array_to_string(r.reloptions, ', ') || ')', ''), r.def);
    if r.note is not null then
      execute format('comment on view reserve.%I is %L', r.relname, r.note);
    end if;
    execute format('revoke all on reserve.%I from public', r.relname);
    for g in select a.privilege_type, a.grantee from pg_catalog.aclexplode(r.relacl) a
             where a.grantee <> (select c.relowner from pg_catalog.pg_class c where c.oid = ('reserve.' || r.relname)::regclass) loop
      execute format('grant %s on reserve.%I to %s', g.privilege_type, r.relname,
                     case when g.grantee = 0 then 'public' else quote_ident(g.grantee::regrole::text) end);
    end loop;
  end loop;
end
$$;

select pg_temp.partition_by_month('audit_logs', true);
select pg_temp.partition_by_month('audit_logs_archive', false);
drop function pg_temp.partition_by_month(text, boolean);
