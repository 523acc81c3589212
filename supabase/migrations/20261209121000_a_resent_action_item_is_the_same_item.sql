-- An operator whose answer was lost (the console's connection killed as the item committed, a 503 after
-- a commit, a double submit) sends the same action item again, and add_incident_action_item added it a
-- second time: the review listed the action twice, with two owners to chase. The same action, owner and
-- due date on the same incident is now the same item: it is returned as it is and nothing is written
-- (no second event, no audit row). The incident's row lock (lock_incident) orders two such calls, so the
-- second one sees the first. The whole function is restated (its body from
-- supabase/schema/functions/add_incident_action_item.sql); only the look-up before the insert is new.

create or replace function reserve.add_incident_action_item(p_incident text, p_action text, p_owner text, p_due_date date,
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
  select * into a from reserve.incident_action_items x
   where x.incident_id = i.id and x.action = btrim(p_action) and x.owner = btrim(p_owner) and x.due_date = p_due_date
   order by x.created_at limit 1;
  if a.id is not null then
    return a; -- sent again: the item is there already
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
  'due date (RC001 without), and why (p_reason, the audit trail''s reason; RC604 without). Idempotent: the same '
  'action, owner and due date on the same incident returns the item already there.';
