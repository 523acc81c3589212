-- The on-call actions are proven only on the ops console's login or a personal role (oncall_actor): the
-- console now calls them on reserve_ops_console, and an operator in psql may silence an alert or keep an
-- incident's action items as they acknowledge and resolve (before, only service_role could, naming anyone).

grant execute on function reserve.acknowledge_incident(text, text, text), reserve.post_incident_update(text, text, text),
  reserve.resolve_incident(text, text, text), reserve.add_incident_action_item(text, text, text, date, text),
  reserve.set_action_item_status(uuid, text, text), reserve.create_alert_silence(reserve.alert_silence_request, text),
  reserve.end_alert_silence(uuid, text, text)
  to reserve_ops_console;
grant execute on function reserve.add_incident_action_item(text, text, text, date, text), reserve.set_action_item_status(uuid, text, text),
  reserve.create_alert_silence(reserve.alert_silence_request, text), reserve.end_alert_silence(uuid, text, text)
  to reserve_operator;

comment on role reserve_ops_console is 'The ops edge function''s login for what needs a proven operator (on-call actions, 4-eyes ledger corrections): it passes the subject of the operator token it verified. Nobody else signs in as it.';
