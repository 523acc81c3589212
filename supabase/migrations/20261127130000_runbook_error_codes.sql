-- Errors of the runbook's recovery functions and the webhook inbox.

insert into reserve.error_codes (sqlstate, name, http_status, description) values
  ('RC207', 'not_a_duplicate', 409, 'The payment is not a duplicate charge (duplicate_of is empty), so it is not refunded as one.'),
  ('RC208', 'refund_not_possible', 409, 'Nothing is left to refund on the payment, or it has not succeeded.'),
  ('RC209', 'webhook_not_found', 404, 'No such processed_webhooks row.'),
  ('RC210', 'webhook_needs_provider', 409, 'The event was recorded without what applying it needs (the provider lookup failed): redeliver it from the provider, or let the poller fetch it.'),
  ('RC304', 'move_not_possible', 409, 'The reservation cannot move to that unit (same unit, stay over, or guests over its occupancy).'),
  ('RC501', 'operator_required', 403, 'A recovery needs a named operator (set reserve.actor, or a JWT with a sub) and a reason.');
