-- The logins that prove nobody (Supabase's shared roles: the SQL editor's postgres, the API's
-- service_role, the pooler's authenticator, ...) were listed twice, in correction_actor and in
-- current_actor: a role added to one and not the other would let that login's typed name through the
-- other door. One list now, reserve.shared_logins(); both functions read it (restated whole below, their
-- behaviour unchanged). Immutable with no arguments, so a caller's plan folds it to a constant.

create function reserve.shared_logins()
returns text[]
language sql
immutable
parallel safe
set search_path = ''
as $$
  select array['postgres', 'supabase_admin', 'service_role', 'authenticator', 'authenticated', 'anon',
               'supabase_auth_admin', 'supabase_storage_admin', 'dashboard_user']::text[]
$$;

comment on function reserve.shared_logins() is 'The database logins that prove no person: Supabase''s shared roles (postgres, service_role, authenticator, ...). A typed operator name on one of them is not taken (correction_actor refuses, current_actor records it only as typed).';

revoke all on function reserve.shared_logins() from public, anon, authenticated;

CREATE OR REPLACE FUNCTION reserve.correction_actor(p_action text, p_operator text, p_reason text)
 RETURNS reserve.proven_operator
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
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
  elsif login = any (reserve.shared_logins()) or not pg_catalog.pg_has_role(login, 'reserve_operator', 'member') then
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
$function$
;

CREATE OR REPLACE FUNCTION reserve.current_actor()
 RETURNS text
 LANGUAGE plpgsql
 STABLE
 SET search_path TO ''
AS $function$
begin
  if session_user::text <> all (reserve.shared_logins() || 'reserve_ops_console'::text)
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
$function$
;
