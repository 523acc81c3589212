-- The partition makers walked month by month from any p_from: a year-1 (or BC) date created some 24,000
-- partitions in one statement (running for minutes, holding locks on the parent), and infinity failed on a
-- null partition name (22004). p_from is now a day of the ten years before this month to the 24 months after
-- it (as far ahead as p_months_ahead goes), else RC001 naming it; null is still this month.

CREATE OR REPLACE FUNCTION reserve.create_audit_log_partitions(p_from date DEFAULT NULL::date, p_months_ahead integer DEFAULT 3)
 RETURNS integer
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
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
  if p_from is not null and not (p_from between (date_trunc('month', current_date) - interval '120 months')::date
                                         and (date_trunc('month', current_date) + interval '25 months' - interval '1 day')::date) then
    raise exception using errcode = 'RC001',
      message = format('p_from %s must be a day of the 120 months before this month to the 24 months after it', p_from);
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
      -- the month check proved the bound when attaching, and is kept: when retention hands the month to
      -- the archive, it proves the month's bounds there again without a scan
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
$function$
;

CREATE OR REPLACE FUNCTION reserve.create_processed_webhook_partitions(p_from date DEFAULT NULL::date, p_months_ahead integer DEFAULT 3)
 RETURNS integer
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  m date;
  last_month date;
  part text;
  created integer := 0;
begin
  if p_months_ahead is null or p_months_ahead < 0 or p_months_ahead > 24 then
    raise exception using errcode = 'RC001', message = 'p_months_ahead must be between 0 and 24';
  end if;
  if p_from is not null and not (p_from between (date_trunc('month', current_date) - interval '120 months')::date
                                         and (date_trunc('month', current_date) + interval '25 months' - interval '1 day')::date) then
    raise exception using errcode = 'RC001',
      message = format('p_from %s must be a day of the 120 months before this month to the 24 months after it', p_from);
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
$function$
;
