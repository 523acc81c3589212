-- Audit trail: who changed which money or booking row, from what to what, and when.
-- Tables attach reserve.audit_row_change() in their own migrations.

create table reserve.audit_logs (
  id          bigint generated always as identity primary key,
  occurred_at timestamptz not null default now(),
  actor       text not null check (length(actor) between 1 and 200),
  action      text not null check (action ~ '^[A-Za-z][A-Za-z0-9_.]*$'),
  table_name  text not null check (length(table_name) between 1 and 63),
  row_id      text,
  old_values  jsonb,
  new_values  jsonb,
  reason      text,
  -- groups every row one database transaction wrote, for forensics
  xact_id     bigint not null default (pg_current_xact_id()::text::bigint)
);
comment on table reserve.audit_logs is
  'Append-only trail of changes to payments, reservations, booking intents, availability and the '
  'ledger (written by triggers) and of operator actions. Older rows move to audit_logs_archive '
  'under retention_policies.';
comment on column reserve.audit_logs.actor is
  'Who acted: the reserve.actor setting of the transaction, else the JWT subject, else the database role '
  '(SET ROLE, else the session user).';

create index audit_logs_occurred_at_idx on reserve.audit_logs (occurred_at);
create index audit_logs_row_idx on reserve.audit_logs (table_name, row_id, occurred_at);

create table reserve.audit_logs_archive (
  id          bigint primary key,
  occurred_at timestamptz not null,
  actor       text not null,
  action      text not null,
  table_name  text not null,
  row_id      text,
  old_values  jsonb,
  new_values  jsonb,
  reason      text,
  xact_id     bigint not null,
  archived_at timestamptz not null default now()
);
comment on table reserve.audit_logs_archive is
  'audit_logs rows past their retention period, moved here by the retention job; same columns plus archived_at.';
create index audit_logs_archive_occurred_at_idx on reserve.audit_logs_archive (occurred_at);

alter table reserve.audit_logs enable row level security;
alter table reserve.audit_logs_archive enable row level security;
revoke all on reserve.audit_logs, reserve.audit_logs_archive from public, anon, authenticated;
grant select on reserve.audit_logs, reserve.audit_logs_archive to service_role;

create function reserve.current_actor() returns text
language sql
stable
set search_path = ''
as $$
  select coalesce(
    nullif(current_setting('reserve.actor', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub',
    -- not current_user: inside the SECURITY DEFINER audit trigger that is the owner, not who acted
    nullif(current_setting('role'), 'none'),
    session_user::text)
$$;
comment on function reserve.current_actor() is
  'The actor recorded in audit_logs: set it with set local reserve.actor = ''...'' before acting.';
revoke all on function reserve.current_actor() from public;

-- Trigger arguments name the key columns (default: id); a composite key is joined with ':'.
create function reserve.audit_row_change() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  rec jsonb := case when tg_op = 'DELETE' then to_jsonb(old) else to_jsonb(new) end;
  key_cols text[] := case when tg_nargs = 0 then array['id'] else tg_argv end;
  key text;
begin
  select string_agg(rec ->> c, ':' order by ord) into key
  from unnest(key_cols) with ordinality as k(c, ord);

  insert into reserve.audit_logs (actor, action, table_name, row_id, old_values, new_values, reason)
  values (
    reserve.current_actor(),
    tg_op,
    tg_table_name,
    key,
    case when tg_op in ('UPDATE', 'DELETE') then to_jsonb(old) end,
    case when tg_op in ('INSERT', 'UPDATE') then to_jsonb(new) end,
    nullif(current_setting('reserve.reason', true), ''));
  return null;
end
$$;
comment on function reserve.audit_row_change() is
  'AFTER ROW trigger writing one audit_logs row per change; arguments name the key columns.';
revoke all on function reserve.audit_row_change() from public;
