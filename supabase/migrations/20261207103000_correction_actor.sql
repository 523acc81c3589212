-- The proven person of a 4-eyes ledger correction decision, as a subject to compare and a name to show.
-- oncall_actor took p_operator from any shared login, so the SQL editor (postgres) could propose as one
-- typed name and approve as another. Here a name is taken only from the ops console's own login
-- (reserve_ops_console), with the subject of the token it verified; a personal login role is itself
-- (or the auth user it maps to in operator_logins); every other login is refused (RC604).

create type reserve.proven_operator as (subject text, name text);
comment on type reserve.proven_operator is 'A proven operator (correction_actor): subject is what 4-eyes compares (auth:<sub>, role:<login role>), name is what is shown and audited.';

create function reserve.normalized_operator_name(p_name text) returns text
language sql
immutable
set search_path = ''
as $$
  select pg_catalog.lower(pg_catalog.regexp_replace(pg_catalog.normalize(p_name, 'NFKC'), '^\s+|\s+$', '', 'g'))
$$;
comment on function reserve.normalized_operator_name(text) is 'An operator name compared as a person: NFKC, trimmed, lower case (Alice@Company and alice@company are one name).';
revoke all on function reserve.normalized_operator_name(text) from public, anon, authenticated;

create function reserve.correction_actor(p_action text, p_operator text, p_reason text) returns reserve.proven_operator
language plpgsql
security definer
set search_path = ''
as $$
declare
  shared constant text[] := array['postgres', 'supabase_admin', 'service_role', 'authenticator', 'authenticated',
                                  'anon', 'supabase_auth_admin', 'supabase_storage_admin', 'dashboard_user'];
  login text := session_user;
  operator text := nullif(pg_catalog.btrim(p_operator), '');
  subject text;
  who text;
  mapped text;
begin
  if coalesce(pg_catalog.length(pg_catalog.btrim(p_reason)), 0) = 0 then
    raise exception using errcode = 'RC604', message = pg_catalog.format('%s needs a reason', p_action);
  end if;
  if login = 'reserve_ops_console' then
    -- the ops function's own login: it verified an operator token and passes its sub and its name
    subject := nullif(pg_catalog.btrim(pg_catalog.current_setting('reserve.operator_subject', true)), '');
    if subject is null or operator is null then
      raise exception using errcode = 'RC604',
        message = pg_catalog.format('%s: the ops console passes the verified token''s subject (reserve.operator_subject) and its name (p_operator)', p_action);
    end if;
    who := operator;
    subject := 'auth:' || subject;
  elsif login = any (shared) or not pg_catalog.pg_has_role(login, 'reserve_operator', 'member') then
    raise exception using errcode = 'RC604',
      message = pg_catalog.format('%s: the login %s proves nobody (a name passed as p_operator is not taken from it): sign in with your personal role in reserve_operator, or use the ops console',
                                  p_action, login);
  else
    if operator is not null and reserve.normalized_operator_name(operator) <> reserve.normalized_operator_name(login) then
      raise exception using errcode = 'RC604',
        message = pg_catalog.format('%s: signed in as %s, cannot act as %s', p_action, login, operator);
    end if;
    who := login;
    select l.auth_user_id into mapped from reserve.operator_logins l where l.role_name = login;
    subject := coalesce('auth:' || mapped, 'role:' || login);
  end if;
  if pg_catalog.length(who) > 200 or pg_catalog.length(subject) > 210 then
    raise exception using errcode = 'RC604', message = pg_catalog.format('%s: operator names are at most 200 characters', p_action);
  end if;
  perform pg_catalog.set_config('reserve.actor', who, true);
  perform pg_catalog.set_config('reserve.reason', pg_catalog.format('%s by %s: %s', p_action, who, p_reason), true);
  return row(subject, who)::reserve.proven_operator;
end
$$;
comment on function reserve.correction_actor(text, text, text) is 'The proven person of a ledger correction decision: on the ops console''s login (reserve_ops_console) the verified token''s subject (reserve.operator_subject) and name (p_operator); on a personal login role in reserve_operator the role itself (auth:<id> when operator_logins maps it, else role:<name>); RC604 for any other login (postgres, service_role) or without a reason. Sets reserve.actor and reserve.reason for the audit trail.';
revoke all on function reserve.correction_actor(text, text, text) from public, anon, authenticated;
