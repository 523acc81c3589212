-- One person may decide a correction through two doors: a personal login role (SQL editor, psql) and an
-- operator token (the ops console). Mapping the role to the person's auth user makes both the same proven
-- subject, so proposing as a role and approving with one's own token is the same person (RC407).

create table reserve.operator_logins (
  role_name text primary key check (length(role_name) between 1 and 63),
  auth_user_id text not null check (length(btrim(auth_user_id)) between 1 and 200),
  created_at timestamptz not null default now()
);
alter table reserve.operator_logins enable row level security;
comment on table reserve.operator_logins is 'Personal login roles (members of reserve_operator) and the auth user (token sub) of the same person: insert (role_name, auth_user_id) when you create the role. A mapped role acts as subject auth:<auth_user_id>, an unmapped one as role:<role_name>.';
revoke all on table reserve.operator_logins from public, anon, authenticated;
grant select on table reserve.operator_logins to service_role;

create trigger _900_audit after insert or update or delete on reserve.operator_logins
  for each row execute function reserve.audit_row_change('role_name');
