-- add_incident_action_item proved its operator with the item's text as the reason, so audit_logs.reason
-- read "add_incident_action_item by bob: Alert on ALTER TABLE" and the reason the console's form asks for
-- (why this item, from which review) was dropped. It now takes that reason (p_reason, required like every
-- other on-call action's note: RC604 without), and the item's text stays the item. A new argument changes
-- the signature, so the function is dropped and created, with its comment and grants restated.

drop function reserve.add_incident_action_item(text, text, text, date, text);

create function reserve.add_incident_action_item(p_incident text, p_action text, p_owner text, p_due_date date,
                                                 p_reason text, p_operator text default null)
returns reserve.incident_action_items
language plpgsql
security definer
set search_path = ''
as $$
declare
  who text := reserve.oncall_actor('add_incident_action_item', p_operator, p_reason);
  i reserve.incidents := reserve.lock_incident(p_incident);
  a reserve.incident_action_items;
begin
  if coalesce(length(btrim(p_action)), 0) = 0 or coalesce(length(btrim(p_owner)), 0) = 0 or p_due_date is null then
    raise exception using errcode = 'RC001',
      message = format('an action item of %s needs an action, an owner and a due date', i.reference);
  end if;
  insert into reserve.incident_action_items (incident_id, action, owner, due_date, created_by)
  values (i.id, btrim(p_action), btrim(p_owner), p_due_date, who) returning * into a;
  insert into reserve.incident_events (incident_id, kind, actor, note)
  values (i.id, 'action_item', who, format('%s (owner %s, due %s)', a.action, a.owner, a.due_date));
  return a;
end
$$;
comment on function reserve.add_incident_action_item(text, text, text, date, text, text) is
  'Adds an action item to the incident''s review as the proven operator (oncall_actor): the action, its owner and '
  'due date (RC001 without), and why (p_reason, the audit trail''s reason; RC604 without).';
revoke all on function reserve.add_incident_action_item(text, text, text, date, text, text) from public, anon, authenticated;
grant execute on function reserve.add_incident_action_item(text, text, text, date, text, text)
  to service_role, reserve_ops_console, reserve_operator;
