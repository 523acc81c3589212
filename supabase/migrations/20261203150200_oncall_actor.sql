-- Who does an on-call action (acknowledge, update, resolve, silence, review items): an identity that is
-- proven, never typed. Two ways prove it:
-- - a personal login role (session_user is not one of the shared roles): the login was the proof;
-- - a shared connection (postgres, service_role: what the edge functions use) passing p_operator, the
--   subject of an operator token the calling function verified. Only service_role may call the on-call
--   functions, and the shared connection's credentials never leave the server.
-- A reason is always required; both land in audit_logs with every row the action changes.

create function reserve.oncall_actor(p_action text, p_operator text, p_reason text) returns text
language plpgsql
security definer
set search_path = ''
as $$
declare
  shared constant text[] := array['postgres', 'supabase_admin', 'service_role', 'authenticator', 'authenticated',
                                  'anon', 'supabase_auth_admin', 'supabase_storage_admin', 'dashboard_user'];
  operator text := nullif(btrim(p_operator), '');
  who text;
begin
  if coalesce(length(btrim(p_reason)), 0) = 0 then
    raise exception using errcode = 'RC604', message = format('%s needs a reason', p_action);
  end if;
  if session_user <> all (shared) then
    if operator is not null and operator <> session_user then
      raise exception using errcode = 'RC604',
        message = format('%s: signed in as %s, cannot act as %s', p_action, session_user, operator);
    end if;
    who := session_user;
  elsif operator is null then
    raise exception using errcode = 'RC604',
      message = format('%s needs a proven operator: sign in with your own role, or call through the ops console with an operator token', p_action);
  else
    who := operator;
  end if;
  if length(who) > 200 then
    raise exception using errcode = 'RC604', message = format('%s: operator names are at most 200 characters', p_action);
  end if;
  perform set_config('reserve.actor', who, true);
  perform set_config('reserve.reason', format('%s by %s: %s', p_action, who, p_reason), true);
  return who;
end
$$;
comment on function reserve.oncall_actor(text, text, text) is
  'The proven operator of an on-call action: session_user when it is a personal login role, else '
  'p_operator (the subject of an operator token verified by the calling edge function). RC604 without '
  'a proven identity or a reason. Sets reserve.actor and reserve.reason for the audit trail.';
revoke all on function reserve.oncall_actor(text, text, text) from public;
