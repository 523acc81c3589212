-- The audit trigger finds its transaction's audit row in one month. audit_logs is partitioned by month
-- of occurred_at, and the row was looked up and updated by id alone: one index probe in every month kept
-- (eighteen and more on the year dataset) for each change after the first and again at commit. The head
-- now carries the row's occurred_at, so each lookup is pruned to its partition. A table keyed by id alone
-- (every audited table but one) takes its key without a query.

CREATE OR REPLACE FUNCTION reserve.audit_row_change()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  -- a bulk change (a manual UPDATE of a year of nights) is written in rows of this many changes, so the
  -- buffer stays small and the cost linear; a business transaction changes far fewer rows
  chunk constant integer := 100;
  key_cols text[] := case when tg_nargs = 0 then array['id'] else tg_argv end;
  after_row jsonb := case when tg_op = 'DELETE' then null else to_jsonb(new) end;
  before_row jsonb := case when tg_op = 'INSERT' then null else to_jsonb(old) end;
  keyed jsonb := coalesce(after_row, before_row);
  key text;
  change jsonb;
  who text := reserve.current_actor();
  why text := nullif(current_setting('reserve.reason', true), '');
  head jsonb := nullif(current_setting('reserve.audit_head', true), '')::jsonb;
  xact bigint := pg_current_xact_id()::text::bigint;
  audit_id bigint;
  audit_at timestamptz;
begin
  if tg_nargs = 0 then
    key := keyed ->> 'id';
  else
    select string_agg(keyed ->> c, ':' order by ord) into key
    from unnest(key_cols) with ordinality as k(c, ord);
  end if;
  if tg_op = 'UPDATE' then
    select coalesce(jsonb_object_agg(o.key, o.value), '{}'::jsonb) into before_row
    from jsonb_each(before_row) o where after_row -> o.key is distinct from o.value;
  end if;
  change := jsonb_build_object('op', tg_op, 'table', tg_table_name, 'row_id', key, 'old', before_row, 'new', after_row);

  -- the head names this transaction's audit row (one from another transaction, or forged, is not ours)
  if head is not null and ((head ->> 'xact')::bigint is distinct from xact
                           or not exists (select 1 from reserve.audit_logs a
                                          where a.id = (head ->> 'id')::bigint and a.occurred_at = (head ->> 'at')::timestamptz
                                            and a.xact_id = xact)) then
    head := null;
  end if;
  if head is not null and (head ->> 'n')::integer >= chunk then
    -- a full chunk is written now, and the next change starts the transaction's next row
    update reserve.audit_logs a set changes = ('[' || current_setting('reserve.audit_changes', true) || ']')::jsonb
    where a.id = (head ->> 'id')::bigint and a.occurred_at = (head ->> 'at')::timestamptz;
    head := null;
  end if;
  if head is null then
    insert into reserve.audit_logs (actor, action, table_name, row_id, reason, changes)
    values (who, tg_op, tg_table_name, key, why, '[]'::jsonb)
    returning id, occurred_at into audit_id, audit_at;
    perform set_config('reserve.audit_head', jsonb_build_object('id', audit_id, 'at', audit_at, 'xact', xact, 'n', 1,
                                                                'actor', who, 'reason', why)::text, true);
    perform set_config('reserve.audit_changes', change::text, true);
    return null;
  end if;
  if who is distinct from head ->> 'actor' then
    change := change || jsonb_build_object('actor', who);
  end if;
  if why is distinct from head ->> 'reason' then
    change := change || jsonb_build_object('reason', why);
  end if;
  if head ? 'flushed' then
    -- written already (SET CONSTRAINTS ... IMMEDIATE ran the flush): later changes join the row directly
    update reserve.audit_logs a set changes = a.changes || jsonb_build_array(change)
    where a.id = (head ->> 'id')::bigint and a.occurred_at = (head ->> 'at')::timestamptz;
  else
    -- appended as text: the buffer is parsed once, when it is written
    perform set_config('reserve.audit_changes', current_setting('reserve.audit_changes', true) || ',' || change::text, true);
    perform set_config('reserve.audit_head', jsonb_set(head, '{n}', to_jsonb((head ->> 'n')::integer + 1))::text, true);
  end if;
  return null;
end
$function$;

CREATE OR REPLACE FUNCTION reserve.flush_audit_changes()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  head jsonb := nullif(current_setting('reserve.audit_head', true), '')::jsonb;
begin
  if head is null or (head ->> 'id')::bigint <> new.id or head ? 'flushed' then
    return null;  -- a row inserted by hand, a full chunk written already, or a row written already
  end if;
  update reserve.audit_logs a set changes = ('[' || current_setting('reserve.audit_changes', true) || ']')::jsonb
  where a.id = new.id and a.occurred_at = new.occurred_at;
  perform set_config('reserve.audit_head', (head || '{"flushed": true}'::jsonb)::text, true);
  perform set_config('reserve.audit_changes', '', true);
  return null;
end
$function$;
