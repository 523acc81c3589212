-- An on-call action (acknowledge, update, resolve, action items, silences) took its operator's name from
-- p_operator on a shared login (postgres, service_role): the SQL editor's login, where anyone with its
-- password typed any name, and the name went to incidents, silences and audit_logs as if proven.
-- oncall_actor now proves the operator as ledger corrections do (correction_actor): on the ops console's
-- own login (reserve_ops_console) the verified token's subject (reserve.operator_subject) with its name
-- (p_operator); on a personal login role in reserve_operator the role; RC604 on any other login, p_operator
-- or not. The on-call functions record the proven name (nothing compares on-call actors, so no subject
-- column: corrections keep theirs for 4-eyes).

create or replace function reserve.oncall_actor(p_action text, p_operator text, p_reason text) returns text
language plpgsql
security definer
set search_path = ''
as $$
begin
  return (reserve.correction_actor(p_action, p_operator, p_reason)).name;
end
$$;
comment on function reserve.oncall_actor(text, text, text) is 'The proven operator''s name of an on-call action, proven as for a ledger correction (correction_actor): on the ops console''s login (reserve_ops_console) p_operator with the verified token''s subject in reserve.operator_subject; on a personal login role in reserve_operator the role; RC604 for any other login (postgres, service_role), p_operator or not, or without a reason. Sets reserve.actor and reserve.reason for the audit trail.';

comment on function reserve.correction_actor(text, text, text) is 'The proven person of a ledger correction decision or of an on-call action (oncall_actor): on the ops console''s login (reserve_ops_console) the verified token''s subject (reserve.operator_subject) and name (p_operator); on a personal login role in reserve_operator the role itself (auth:<id> when operator_logins maps it, else role:<name>); RC604 for any other login (postgres, service_role) or without a reason. Sets reserve.actor and reserve.reason for the audit trail.';
