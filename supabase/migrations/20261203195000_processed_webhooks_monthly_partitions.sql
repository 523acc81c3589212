-- processed_webhooks becomes partitioned by month of received_at, so retention drops whole months
-- instead of deleting deliveries in batches. A partitioned table's unique keys must contain the
-- partition key, and (provider, event_id) is what makes a redelivery a duplicate whatever month it
-- arrives in: that uniqueness moves to a narrow key table, processed_webhook_keys (provider, event_id)
-- -> webhook_id, received_at, which is not partitioned. A trigger on processed_webhooks writes the key
-- of every row inserted (manual SQL too) and refuses a second row for one event (23505, as the unique
-- key did); process_webhook_event writes the key first and the row with the key's id after it.
--
-- Keys are kept 212 days (retention policy processed_webhook_keys): longer than any delivery row lives
-- (180 days, and a month is dropped only once wholly past them: at most 211 days), so a key always
-- outlives its row, and far longer than any provider redelivers (Stripe retries for 3 days and resends
-- by hand for 30; MercadoPago and OpenPIX retry for days). A key whose row is gone answers a very late
-- redelivery as a duplicate.
--
-- The conversion copies every row with its id under an ACCESS EXCLUSIVE lock (webhooks wait
-- meanwhile) and counts both sides; the views reading the table and the functions returning its row
-- type are dropped and created again from their definitions.

create table reserve.processed_webhook_keys (
  provider text not null,
  event_id text not null,
  webhook_id uuid not null default gen_random_uuid(),
  received_at timestamptz not null default now(),
  constraint processed_webhook_keys_pkey primary key (provider, event_id),
  constraint processed_webhook_keys_webhook_id_key unique (webhook_id)
);
create index processed_webhook_keys_received_idx on reserve.processed_webhook_keys (received_at);
alter table reserve.processed_webhook_keys enable row level security;
revoke all on reserve.processed_webhook_keys from public;
do $$ begin
  if exists (select 1 from pg_catalog.pg_roles where rolname = 'anon') then
    revoke all on reserve.processed_webhook_keys from anon, authenticated;
  end if;
  if exists (select 1 from pg_catalog.pg_roles where rolname = 'service_role') then
    grant select on reserve.processed_webhook_keys to service_role;
  end if;
end $$;
comment on table reserve.processed_webhook_keys is 'The dedupe key of every provider event received (provider, event_id), with the id and received_at of its processed_webhooks row (which is partitioned by month, so cannot hold this unique key itself). Written by the trigger on processed_webhooks; kept longer than the rows (retention policy), so a key outlives its row.';
comment on column reserve.processed_webhook_keys.received_at is 'received_at of the processed_webhooks row: names its month partition, so the row is read from one partition.';

create function reserve.processed_webhook_partition_name(p_month date)
returns text
language sql
immutable
set search_path = ''
as $$
  select 'processed_webhooks_p' || to_char(p_month, 'YYYYMM')
$$;
comment on function reserve.processed_webhook_partition_name(date) is 'The name of the processed_webhooks partition of the month p_month is in.';
revoke all on function reserve.processed_webhook_partition_name(date) from public;

create function reserve.create_processed_webhook_partitions(p_from date default null, p_months_ahead integer default 3)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  m date;
  last_month date;
  part text;
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
    part := reserve.processed_webhook_partition_name(m);
    if to_regclass('reserve.' || part) is null then
      -- made on its own, given the month's rows from the default partition, then attached (SHARE UPDATE
      -- EXCLUSIVE on the parent: webhooks go on)
      execute format('create table reserve.%I (like reserve.processed_webhooks including defaults including constraints)', part);
      execute format('alter table reserve.%I add constraint %I check (received_at >= %L and received_at < %L)',
                     part, part || '_month', m, (m + interval '1 month')::date);
      if to_regclass('reserve.processed_webhooks_default') is not null then
        execute format('with moved as (delete from reserve.processed_webhooks_default d where d.received_at >= %L and d.received_at < %L returning d.*)
                        insert into reserve.%I select * from moved', m, (m + interval '1 month')::date, part);
      end if;
      execute format('alter table reserve.processed_webhooks attach partition reserve.%I for values from (%L) to (%L)',
                     part, m, (m + interval '1 month')::date);
      execute format('alter table reserve.%I drop constraint %I', part, part || '_month');
      execute format('alter table reserve.%I enable row level security', part);
      execute format('revoke all on reserve.%I from public', part);
      if exists (select 1 from pg_catalog.pg_roles where rolname = 'anon') then
        execute format('revoke all on reserve.%I from anon, authenticated', part);
      end if;
      if exists (select 1 from pg_catalog.pg_roles where rolname = 'service_role') then
        execute format('grant select on reserve.%I to service_role', part);
      end if;
      execute format('comment on table reserve.%I is %L', part,
                     format('processed_webhooks rows of %s (a partition: read and write reserve.processed_webhooks).', to_char(m, 'YYYY-MM')));
      created := created + 1;
    end if;
    m := (m + interval '1 month')::date;
  end loop;
  return created;
end
$$;
comment on function reserve.create_processed_webhook_partitions(date, integer) is
  'Creates the monthly partitions of processed_webhooks missing from the month of p_from (default: this '
  'month) to p_months_ahead months ahead, each given its rows from the default partition. Returns how '
  'many it created. The retention job calls it.';
revoke all on function reserve.create_processed_webhook_partitions(date, integer) from public;
do $$ begin
  if exists (select 1 from pg_catalog.pg_roles where rolname = 'service_role') then
    grant execute on function reserve.create_processed_webhook_partitions(date, integer) to service_role;
  end if;
end $$;

create function reserve.processed_webhook_key_guard()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into reserve.processed_webhook_keys (provider, event_id, webhook_id, received_at)
  values (new.provider, new.event_id, new.id, new.received_at)
  on conflict (provider, event_id) do nothing;
  if not found and not exists (select 1 from reserve.processed_webhook_keys k
                               where k.provider = new.provider and k.event_id = new.event_id
                                 and k.webhook_id = new.id and k.received_at = new.received_at) then
    raise exception using errcode = '23505', constraint = 'processed_webhook_keys_pkey',
      message = format('%s event %s is already recorded (processed_webhook_keys): webhook %s is not a second row for it',
                       new.provider, new.event_id, new.id);
  end if;
  return new;
end
$$;
comment on function reserve.processed_webhook_key_guard() is 'Before a processed_webhooks row is inserted: writes its (provider, event_id) key, or finds the key already written for this very row (process_webhook_event writes it first); any other row for a recorded event is refused with 23505, the unique key the partitioned table cannot hold.';
revoke all on function reserve.processed_webhook_key_guard() from public;

create function pg_temp.partition_processed_webhooks()
returns void
language plpgsql
as $$
declare
  r record;
  g record;
  n_old bigint;
  n_new bigint;
  n_keys bigint;
  first_month date;
begin
  lock table reserve.processed_webhooks in access exclusive mode;
  if exists (select 1 from pg_catalog.pg_partitioned_table where partrelid = 'reserve.processed_webhooks'::regclass) then
    return;
  end if;

  -- the views reading the table, and the functions taking or returning its row type: created again after
  -- (views reading those views too, e.g. ops_dashboard_summary over webhook_status: depth orders them)
  create temporary table pw_views on commit drop as
  with recursive dependents(oid, depth) as (
    select v.oid, 1
    from pg_catalog.pg_depend d
    join pg_catalog.pg_rewrite w on w.oid = d.objid and d.classid = 'pg_catalog.pg_rewrite'::regclass
    join pg_catalog.pg_class v on v.oid = w.ev_class
    where d.refobjid = 'reserve.processed_webhooks'::regclass and v.oid <> 'reserve.processed_webhooks'::regclass
    union all
    select v.oid, dep.depth + 1
    from dependents dep
    join pg_catalog.pg_depend d on d.refobjid = dep.oid
    join pg_catalog.pg_rewrite w on w.oid = d.objid and d.classid = 'pg_catalog.pg_rewrite'::regclass
    join pg_catalog.pg_class v on v.oid = w.ev_class
    where v.oid <> dep.oid
  )
  select v.oid, v.relname, max(dep.depth) as depth, pg_catalog.pg_get_viewdef(v.oid) as def, v.reloptions,
         pg_catalog.obj_description(v.oid, 'pg_class') as note, v.relacl
  from dependents dep join pg_catalog.pg_class v on v.oid = dep.oid
  group by v.oid, v.relname, v.reloptions, v.relacl;
  create temporary table pw_functions on commit drop as
  select distinct p.oid, p.oid::regprocedure::text as signature, pg_catalog.pg_get_functiondef(p.oid) as def,
         pg_catalog.obj_description(p.oid, 'pg_proc') as note, p.proacl
  from pg_catalog.pg_depend d join pg_catalog.pg_proc p on p.oid = d.objid and d.classid = 'pg_catalog.pg_proc'::regclass
  where d.refobjid = (select c.reltype from pg_catalog.pg_class c where c.oid = 'reserve.processed_webhooks'::regclass);
  for r in select * from pw_views order by depth desc loop
    execute format('drop view reserve.%I', r.relname);
  end loop;
  for r in select * from pw_functions loop
    execute format('drop function %s', r.signature);
  end loop;
  alter table reserve.money_discrepancies drop constraint money_discrepancies_webhook_id_fkey;

  alter table reserve.processed_webhooks rename to processed_webhooks_unpartitioned;
  for r in select i.relname from pg_catalog.pg_index x join pg_catalog.pg_class i on i.oid = x.indexrelid
           where x.indrelid = 'reserve.processed_webhooks_unpartitioned'::regclass loop
    execute format('alter index reserve.%I rename to %I', r.relname, left(r.relname, 49) || '_unpartitioned');
  end loop;

  create table reserve.processed_webhooks (like reserve.processed_webhooks_unpartitioned
    including defaults including constraints including comments including storage including compression)
    partition by range (received_at);
  create table reserve.processed_webhooks_default partition of reserve.processed_webhooks default;

  select min(received_at)::date, count(*) into first_month, n_old from reserve.processed_webhooks_unpartitioned;
  perform reserve.create_processed_webhook_partitions(first_month, 3);

  insert into reserve.processed_webhook_keys (provider, event_id, webhook_id, received_at)
  select provider, event_id, id, received_at from reserve.processed_webhooks_unpartitioned;
  get diagnostics n_keys = row_count;
  insert into reserve.processed_webhooks select * from reserve.processed_webhooks_unpartitioned;
  get diagnostics n_new = row_count;
  if n_new <> n_old or n_keys <> n_old then
    raise exception 'processed_webhooks partitioning copied % rows and % keys of % rows', n_new, n_keys, n_old;
  end if;

  -- keys and indexes once the rows are in (each partition's built at once)
  alter table reserve.processed_webhooks add constraint processed_webhooks_pkey primary key (id, received_at);
  create index processed_webhooks_payment_idx on reserve.processed_webhooks (payment_id);
  create index processed_webhooks_received_idx on reserve.processed_webhooks (received_at);
  create index processed_webhooks_retry_idx on reserve.processed_webhooks (next_retry_at) where status = 'failed';
  create index processed_webhooks_status_idx on reserve.processed_webhooks (status, received_at)
    where status in ('processing', 'failed', 'dead');
  alter table reserve.processed_webhooks add constraint processed_webhooks_payment_id_fkey
    foreign key (payment_id) references reserve.payments (id);
  create trigger processed_webhooks_key_guard before insert on reserve.processed_webhooks
    for each row execute function reserve.processed_webhook_key_guard();

  alter table reserve.processed_webhooks enable row level security;
  alter table reserve.processed_webhooks_default enable row level security;
  select pg_catalog.obj_description(c.oid, 'pg_class') as note, c.relacl, c.relowner into g
  from pg_catalog.pg_class c where c.oid = 'reserve.processed_webhooks_unpartitioned'::regclass;
  execute format('comment on table reserve.processed_webhooks is %L', coalesce(g.note || ' ', '') ||
    'Partitioned by month of received_at (processed_webhooks_pYYYYMM, and processed_webhooks_default for a row outside them); '
    'the (provider, event_id) unique key is held by processed_webhook_keys.');
  comment on table reserve.processed_webhooks_default is 'processed_webhooks rows outside every monthly partition; create_processed_webhook_partitions() moves a month''s rows out when it creates that month.';
  revoke all on reserve.processed_webhooks, reserve.processed_webhooks_default from public;
  if exists (select 1 from pg_catalog.pg_roles where rolname = 'anon') then
    revoke all on reserve.processed_webhooks, reserve.processed_webhooks_default from anon, authenticated;
  end if;
  for r in select a.privilege_type, a.grantee from pg_catalog.aclexplode(g.relacl) a where a.grantee <> g.relowner loop
    execute format('grant %s on reserve.processed_webhooks, reserve.processed_webhooks_default to %s', r.privilege_type,
                   case when r.grantee = 0 then 'public' else quote_ident(r.grantee::regrole::text) end);
  end loop;

  drop table reserve.processed_webhooks_unpartitioned;
  alter table reserve.money_discrepancies add constraint money_discrepancies_webhook_id_fkey
    foreign key (webhook_id) references reserve.processed_webhook_keys (webhook_id) on delete set null;

  for r in select * from pw_functions order by oid loop
    execute r.def;
    if r.note is not null then
      execute format('comment on function %s is %L', r.signature, r.note);
    end if;
    execute format('revoke all on function %s from public', r.signature);
    for g in select a.privilege_type, a.grantee from pg_catalog.aclexplode(r.proacl) a
             where a.grantee <> (select p.proowner from pg_catalog.pg_proc p where p.oid = r.signature::regprocedure) loop
      execute format('grant %s on function %s to %s', g.privilege_type, r.signature,
                     case when g.grantee = 0 then 'public' else quote_ident(g.grantee::regrole::text) end);
    end loop;
  end loop;
  for r in select * from pw_views order by depth, oid loop
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

select pg_temp.partition_processed_webhooks();
drop function pg_temp.partition_processed_webhooks();

-- the keys outlive the rows (see the top of this file)
insert into reserve.retention_policies (table_name, retention_days, retention_type, date_column, batch_size, is_enabled, description)
values ('processed_webhook_keys', 212, 'delete', 'received_at', 5000, true,
        'Webhook dedupe keys: kept past the longest a processed_webhooks row lives (180 days, dropped by whole months), far past any provider redelivery.')
on conflict (table_name) do nothing;
