-- audit_logs.actor came from reserve.actor first, whoever typed it: an operator signed in as their own role
-- in reserve_operator could `set local reserve.actor = 'someone-else'` and replay a webhook, re-finalize a
-- payment or rebuild the ledger's balances in another person's name (the functions the runbook runs as a
-- personal role that prove no operator themselves). On a personal login role the actor is now the login;
-- the ops console's own login keeps the name it set from the token it verified; the shared logins
-- (postgres, service_role: the server and the SQL editor) keep what they set, as they name nobody proven.
-- The shared logins are compared first, so the success path (the edge's shared login) asks no catalog.

create or replace function reserve.current_actor() returns text
language plpgsql
stable
set search_path = ''
as $$
begin
  if session_user::text <> all (array['postgres', 'supabase_admin', 'service_role', 'authenticator', 'authenticated', 'anon',
                                      'supabase_auth_admin', 'supabase_storage_admin', 'dashboard_user', 'reserve_ops_console'])
     and pg_catalog.pg_has_role(session_user, 'reserve_operator', 'member') then
    return session_user::text;
  end if;
  return coalesce(
    nullif(pg_catalog.current_setting('reserve.actor', true), ''),
    nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub',
    -- not current_user: inside the SECURITY DEFINER audit trigger that is the owner, not who acted
    nullif(pg_catalog.current_setting('role'), 'none'),
    session_user::text);
end
$$;

comment on function reserve.current_actor() is 'The actor recorded in audit_logs: on a personal login role in reserve_operator the login itself (a typed reserve.actor names nobody there); else reserve.actor (the ops console''s from its verified token; a shared login''s is what it typed), the JWT sub, the role, the login.';
