-- The ops console's own database login. The functions connect as postgres (SUPABASE_DB_URL), the login
-- the SQL editor shares, so the database could not tell an operator token the ops function verified from
-- a name typed in the editor: p_operator was taken from either. The console's 4-eyes calls now come on
-- this login (RESERVE_OPS_DB_URL, a password only the function's secrets hold), and only a session of it
-- may name the operator it proves (correction_actor).
-- Deploy: alter role reserve_ops_console login password '<secret>'; then set RESERVE_OPS_DB_URL (DEPLOYMENT.md).

do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'reserve_ops_console') then
    create role reserve_ops_console nologin noinherit;
  end if;
end
$$;
comment on role reserve_ops_console is 'The ops edge function''s login for what needs a proven operator (4-eyes ledger corrections): it passes the subject of the operator token it verified. Nobody else signs in as it.';
grant usage on schema reserve to reserve_ops_console;
