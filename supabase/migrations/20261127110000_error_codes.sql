-- Our own SQLSTATEs, in one place. Class RC (implementation-defined: PostgreSQL's classes start with
-- 0-4, A-H, P, X and F) so callers branch on the code, never on the message; the edge functions
-- map http_status. Messages name the ids involved.

create table reserve.error_codes (
  sqlstate    text primary key check (sqlstate ~ '^RC[0-9]{3}$'),
  name        text not null unique check (name ~ '^[a-z][a-z0-9_]*$'),
  http_status integer not null check (http_status between 400 and 599),
  description text not null
);
comment on table reserve.error_codes is
  'Every SQLSTATE our functions raise (class RC), with a stable name and the HTTP status an edge '
  'function answers with. Tests check that every code raised in a migration is listed here.';

insert into reserve.error_codes (sqlstate, name, http_status, description) values
  ('RC001', 'invalid_argument', 400, 'A required argument is missing or malformed.'),
  ('RC101', 'unit_not_found', 404, 'No such unit.'),
  ('RC102', 'unit_inactive', 409, 'The unit or its property is not on sale.'),
  ('RC103', 'invalid_dates', 400, 'Check-in is in the past (in the city''s time zone) or check-out is not after check-in.'),
  ('RC104', 'invalid_stay_length', 400, 'The number of nights is outside the unit''s min_nights..max_nights.'),
  ('RC105', 'too_many_guests', 400, 'More guests than the unit''s max_occupancy.'),
  ('RC106', 'unavailable', 409, 'A night is sold out, blocked or not on the calendar.'),
  ('RC107', 'intent_not_found', 404, 'No such booking intent.'),
  ('RC108', 'intent_not_pending', 409, 'The booking intent is converted, expired or cancelled.'),
  ('RC201', 'payment_not_found', 404, 'No such payment.'),
  ('RC202', 'illegal_transition', 409, 'The payment cannot move from its status to the one asked for.'),
  ('RC203', 'amount_mismatch', 409, 'The amount differs from the booking intent''s.'),
  ('RC204', 'payment_in_flight', 409, 'The intent already has a pending or processing payment.'),
  ('RC205', 'payment_not_succeeded', 409, 'Only a succeeded payment can be finalized.'),
  ('RC206', 'invalid_provider', 400, 'The provider cannot take this method (card is Stripe only).'),
  ('RC301', 'reservation_not_found', 404, 'No such reservation.'),
  ('RC302', 'illegal_reservation_transition', 409, 'The reservation cannot move from its status to the one asked for.'),
  ('RC303', 'too_early', 409, 'The stay has not started yet (check-in before the check-in date).'),
  ('RC401', 'ledger_unbalanced', 422, 'A ledger transaction''s debits differ from its credits.'),
  ('RC402', 'ledger_append_only', 409, 'Ledger rows are never updated or deleted; post a correction instead.'),
  ('RC403', 'ledger_direct_write', 403, 'Ledger rows are written only by post_ledger_transaction and approved corrections.'),
  ('RC404', 'unknown_account', 400, 'No such ledger account.'),
  ('RC405', 'idempotency_conflict', 409, 'The idempotency key was already used with different arguments.'),
  ('RC406', 'correction_not_found', 404, 'No such ledger correction or ledger transaction.'),
  ('RC407', 'four_eyes_violation', 403, 'A correction must be approved by someone other than its proposer, both named.'),
  ('RC408', 'correction_not_pending', 409, 'The correction was already approved or rejected.');

alter table reserve.error_codes enable row level security;
revoke all on reserve.error_codes from public, anon, authenticated;
grant select on reserve.error_codes to service_role;
