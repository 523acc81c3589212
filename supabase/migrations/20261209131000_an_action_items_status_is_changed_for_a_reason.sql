-- An action item marked done or dropped recorded its new status as the audit's reason, and nothing on
-- the incident's timeline: "dropped" said nothing of why, and the review did not show that an item it
-- had asked for was given up. The operator now gives a reason (RC604 without, as every on-call action),
-- which is the audit's reason, and the change is an `action_item` event of the incident. A new argument,
-- so the function is dropped and created (its grants restated). Setting the status an item already has
-- changes nothing and writes no event, so a resend after a lost answer is one change.

drop function reserve.set_action_item_status(uuid, text, text);

create function reserve.set_action_item_status(p_item_id uuid, p_status text, p_reason text, p_operator text default null)
returns reserve.incident_action_items
language plpgsql
security definer
set search_path = ''
as $$
declare
  who text := reserve.oncall_actor('set_action_item_status', p_operator, p_reason);
  a reserve.incident_action_items;
  was text;
begin
  if p_status is null or p_status not in ('open', 'done', 'dropped') then
    raise exception using errcode = 'RC001', message = 'status is open, done or dropped';
  end if;
  select x.status into was from reserve.incident_action_items x where x.id = p_item_id for update;
  if not found then
    raise exception using errcode = 'RC601', message = format('action item %s not found', p_item_id);
  end if;
  if was = p_status then
    select * into a from reserve.incident_action_items x where x.id = p_item_id;
    return a;
  end if;
  update reserve.incident_action_items x set status = p_status where x.id = p_item_id returning * into a;
  insert into reserve.incident_events (incident_id, kind, actor, note)
  values (a.incident_id, 'action_item', who,
          format('%s: %s -> %s (%s)', a.action, was, p_status, pg_catalog.btrim(p_reason)));
  return a;
end
$$;

comment on function reserve.set_action_item_status(uuid, text, text, text) is 'Marks an action item open, done or dropped, for a reason (RC604 without; the audit''s reason and an action_item event of the incident), by a proven operator. The status it already has changes nothing. RC001 for another status, RC601 for an unknown item.';

revoke all on function reserve.set_action_item_status(uuid, text, text, text) from public, anon, authenticated;
grant execute on function reserve.set_action_item_status(uuid, text, text, text) to service_role, reserve_operator, reserve_ops_console;
