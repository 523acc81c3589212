-- Errors the checkout adds: the runbook's rate_limit and amount_too_small / amount_too_large are ours to
-- raise before a provider ever sees the request.

insert into reserve.error_codes (sqlstate, name, http_status, description) values
  ('RC109', 'rate_limited', 429, 'Too many checkouts for this client or payment attempts for this intent; retry after the hint''s seconds.'),
  ('RC110', 'amount_too_small', 400, 'The stay costs less than the smallest charge we accept (setting min_payment_amount).'),
  ('RC111', 'amount_too_large', 400, 'The stay costs more than the largest charge we accept (setting max_payment_amount).');
