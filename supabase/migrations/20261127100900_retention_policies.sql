-- How long each growing table keeps its rows, and whether old rows are archived or deleted.

create table reserve.retention_policies (
  table_name     text primary key check (table_name ~ '^[a-z][a-z0-9_]*$'),
  retention_days integer not null check (retention_days > 0),
  retention_type text not null check (retention_type in ('archive', 'delete')),
  date_column    text not null check (date_column ~ '^[a-z][a-z0-9_]*$'),
  batch_size     integer not null default 5000 check (batch_size between 1 and 100000),
  is_enabled     boolean not null default true,
  description    text,
  last_run_at    timestamptz,
  last_run_rows  bigint check (last_run_rows >= 0),
  created_at     timestamptz not null default now(),
  updated_at     timestamptz not null default now()
);
comment on table reserve.retention_policies is
  'Retention per table: rows older than retention_days (by date_column) are archived (audit_logs to '
  'audit_logs_archive) or deleted, batch_size rows at a time.';

insert into reserve.retention_policies (table_name, retention_days, retention_type, date_column, description) values
  ('audit_logs', 365, 'archive', 'occurred_at', 'Audit trail: one year online, then audit_logs_archive.'),
  ('processed_webhooks', 180, 'delete', 'received_at',
   'Webhook inbox: six months of deliveries as evidence for disputes and replays.'),
  ('booking_locks', 90, 'delete', 'lock_date',
   'Night holds, kept until 90 days after the night itself so a past overbooking can still be traced.');

create trigger _100_touch_updated_at before update on reserve.retention_policies
  for each row execute function reserve.touch_updated_at();

alter table reserve.retention_policies enable row level security;
revoke all on reserve.retention_policies from public, anon, authenticated;
grant select on reserve.retention_policies to service_role;
