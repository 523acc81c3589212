-- The audit trail as one row per business transaction. Before, every changed row was an audit row of
-- its own: a finalize wrote seven (payment, reservation, intent, ledger transaction and entries), 18% of
-- its instructions and 41-46% of its WAL, and audit_logs grew to half the database. Now a transaction
-- writes one audit_logs row: who (actor), why (reason), when, and in `changes` the set of rows it changed,
-- each {op, table, row_id, old, new} (old of an UPDATE holds only the columns that changed: the rest is
-- in new; actor and reason appear in a change only when they differ from the row's). The ledger is no
-- longer copied into it: ledger_transactions and ledger_entries are append-only and carry their own who
-- (created_by) and why (description).
--
-- How one row per transaction is kept without rewriting it on every change: the row trigger appends the
-- change to a transaction-local buffer (the setting reserve.audit_changes; a rolled-back subtransaction
-- rolls its part back with it) and, on the transaction's first change, inserts the row with changes '[]';
-- a deferred constraint trigger on that row writes the buffer into it once, at commit (a HOT update: no
-- index changes). Until then, reserve.audit_trail reads this transaction's own changes from the buffer.
--
-- reserve.audit_trail is the row-level reading (one row per changed row, the columns audit_logs had:
-- actor, action, table_name, row_id, old_values with the whole row before, new_values, reason, xact_id),
-- over both the per-transaction rows and rows written before this migration; the runbook's "who did it"
-- queries read it.

alter table reserve.audit_logs add column changes jsonb;
comment on column reserve.audit_logs.changes is
  'The rows this transaction changed, in order: [{op, table, row_id, old, new}] (old of an UPDATE: the changed '
  'columns only; actor and reason when they differ from the row''s). Null on rows written one per change '
  'before the trail kept one row per transaction; action, table_name and row_id name the first change.';
comment on table reserve.audit_logs is
  'Append-only trail: one row per business transaction that changed payments, reservations, booking intents, '
  'availability, refunds, discrepancies or settings (who, why, when, and in changes every row changed with '
  'its before and after). Read it row by row through reserve.audit_trail. Older rows move to '
  'audit_logs_archive under retention_policies.';
alter table reserve.audit_logs_archive add column changes jsonb;

-- the archive keeps what a row says, changes included
CREATE OR REPLACE FUNCTION reserve.run_retention_cleanup(p_max_batches integer DEFAULT 200)
 RETURNS TABLE(table_name text, retention_type text, cutoff timestamp with time zone, rows_moved bigint, batches integer, duration_ms integer, more_due boolean)
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path = ''
AS $$
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
                                                new_values, reason, xact_id, changes)
        select m.id, m.occurred_at, m.actor, m.action, m.table_name, m.row_id, m.old_values, m.new_values, m.reason, m.xact_id,
               m.changes
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
$$
;

-- the ledger is its own append-only record of who and why
drop trigger _900_audit on reserve.ledger_entries;
drop trigger _900_audit on reserve.ledger_transactions;

create or replace function reserve.audit_row_change() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
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
begin
  select string_agg(keyed ->> c, ':' order by ord) into key
  from unnest(key_cols) with ordinality as k(c, ord);
  if tg_op = 'UPDATE' then
    select coalesce(jsonb_object_agg(o.key, o.value), '{}'::jsonb) into before_row
    from jsonb_each(before_row) o where after_row -> o.key is distinct from o.value;
  end if;
  change := jsonb_build_object('op', tg_op, 'table', tg_table_name, 'row_id', key, 'old', before_row, 'new', after_row);

  -- the head names this transaction's audit row (one from another transaction, or forged, is not ours)
  if head is not null and ((head ->> 'xact')::bigint is distinct from xact
                           or not exists (select 1 from reserve.audit_logs a
                                          where a.id = (head ->> 'id')::bigint and a.xact_id = xact)) then
    head := null;
  end if;
  if head is not null and (head ->> 'n')::integer >= chunk then
    -- a full chunk is written now, and the next change starts the transaction's next row
    update reserve.audit_logs a set changes = ('[' || current_setting('reserve.audit_changes', true) || ']')::jsonb
    where a.id = (head ->> 'id')::bigint;
    head := null;
  end if;
  if head is null then
    insert into reserve.audit_logs (actor, action, table_name, row_id, reason, changes)
    values (who, tg_op, tg_table_name, key, why, '[]'::jsonb)
    returning id into audit_id;
    perform set_config('reserve.audit_head', jsonb_build_object('id', audit_id, 'xact', xact, 'n', 1,
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
    update reserve.audit_logs a set changes = a.changes || jsonb_build_array(change) where a.id = (head ->> 'id')::bigint;
  else
    -- appended as text: the buffer is parsed once, when it is written
    perform set_config('reserve.audit_changes', current_setting('reserve.audit_changes', true) || ',' || change::text, true);
    perform set_config('reserve.audit_head', jsonb_set(head, '{n}', to_jsonb((head ->> 'n')::integer + 1))::text, true);
  end if;
  return null;
end
$$;
comment on function reserve.audit_row_change() is
  'AFTER ROW trigger: adds the change ({op, table, row_id, old, new}) to this transaction''s one audit_logs row '
  '(inserted on its first change, written at commit by flush_audit_changes; a bulk change of more than 100 rows '
  'is written 100 changes to a row); arguments name the key columns.';
revoke all on function reserve.audit_row_change() from public;

create function reserve.flush_audit_changes() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  head jsonb := nullif(current_setting('reserve.audit_head', true), '')::jsonb;
begin
  if head is null or (head ->> 'id')::bigint <> new.id or head ? 'flushed' then
    return null;  -- a row inserted by hand, a full chunk written already, or a row written already
  end if;
  update reserve.audit_logs a set changes = ('[' || current_setting('reserve.audit_changes', true) || ']')::jsonb
  where a.id = new.id;
  perform set_config('reserve.audit_head', (head || '{"flushed": true}'::jsonb)::text, true);
  perform set_config('reserve.audit_changes', '', true);
  return null;
end
$$;
comment on function reserve.flush_audit_changes() is
  'Deferred constraint trigger on audit_logs: at commit, writes the transaction''s buffered changes into its audit row, once.';
revoke all on function reserve.flush_audit_changes() from public;

-- only the row the audit trigger inserts (changes '[]') queues an event: bulk loads and hand-written rows do not
create constraint trigger _900_flush_changes after insert on reserve.audit_logs
deferrable initially deferred
for each row when (new.changes = '[]'::jsonb)
execute function reserve.flush_audit_changes();

create view reserve.audit_trail with (security_invoker = true) as
select a.id as audit_id, a.xact_id, a.occurred_at, coalesce(c.change ->> 'actor', a.actor) as actor,
       c.change ->> 'op' as action, c.change ->> 'table' as table_name, c.change ->> 'row_id' as row_id,
       case c.change ->> 'op' when 'UPDATE' then (c.change -> 'new') || (c.change -> 'old')
                              when 'DELETE' then c.change -> 'old' end as old_values,
       c.change -> 'new' as new_values,
       coalesce(c.change ->> 'reason', a.reason) as reason,
       c.n::integer as change_no
from reserve.audit_logs a
cross join lateral jsonb_array_elements(
  case when a.changes = '[]'::jsonb and a.xact_id = pg_current_xact_id_if_assigned()::text::bigint
            and a.id::text = nullif(current_setting('reserve.audit_head', true), '')::jsonb ->> 'id'
       -- this transaction's own row before commit: its changes are still in the buffer
       then coalesce(('[' || nullif(current_setting('reserve.audit_changes', true), '') || ']')::jsonb, '[]'::jsonb)
       else a.changes end) with ordinality as c(change, n)
where a.changes is not null
union all
select a.id, a.xact_id, a.occurred_at, a.actor, a.action, a.table_name, a.row_id, a.old_values, a.new_values,
       a.reason, 1
from reserve.audit_logs a
where a.changes is null;
comment on view reserve.audit_trail is
  'The audit trail row by row: one row per changed row (audit_id and change_no say which transaction and in '
  'which order), with actor, action (INSERT, UPDATE, DELETE), table_name, row_id, old_values (the whole row '
  'before), new_values, reason and xact_id. Who changed this payment: where table_name = ''payments'' and row_id = ''<id>''.';
revoke all on reserve.audit_trail from public, anon, authenticated;
grant select on reserve.audit_trail to service_role;
