-- Errors of on call: incidents, silences and the notification outbox.

insert into reserve.error_codes (sqlstate, name, http_status, description) values
  ('RC601', 'incident_not_found', 404, 'No such incident (by id or INC- reference).'),
  ('RC602', 'illegal_incident_transition', 409, 'The incident cannot do that in its status (acknowledge a closed one, resolve twice, ...).'),
  ('RC603', 'silence_not_found', 404, 'No such alert silence, or it has ended already.'),
  ('RC604', 'operator_not_proven', 403, 'An on-call action needs an identity proven by a personal login role or a verified operator token, and a reason.'),
  ('RC605', 'notification_not_found', 404, 'No such notification_outbox row, or it is not claimed.');
