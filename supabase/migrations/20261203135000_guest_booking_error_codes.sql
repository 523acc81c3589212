-- The error a guest's read of one booking raises: someone else's booking and an unknown id are the same
-- answer, so a booking's id tells nobody whether it exists.

insert into reserve.error_codes (sqlstate, name, http_status, description) values
  ('RC120', 'booking_not_found', 404, 'No booking with this id was made by this client (unknown, or another client''s).');
