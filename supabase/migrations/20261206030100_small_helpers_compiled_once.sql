-- is_live_reservation and receivable_account as PL/pgSQL, like the finalize path's other helpers
-- (20261204060000): a SQL-language function that pins search_path is never inlined, and its body is
-- parsed and planned again by each expression that calls it, at least once a transaction, and by every
-- call of a row trigger. pg_stat_statements with track_planning: each body planned once per finalize
-- (count_booked_nights' call and post_payment_receipt's), 36 us of planning a finalize together. A
-- PL/pgSQL body is compiled once a session. Same answers.

create or replace function reserve.is_live_reservation(p_status text)
returns boolean
language plpgsql
immutable
set search_path = ''
as $$
begin
  return p_status in ('host_commit_pending', 'confirmed', 'checked_in');
end
$$;

create or replace function reserve.receivable_account(p_provider text)
returns text
language plpgsql
immutable
set search_path = ''
as $$
begin
  return 'receivable_' || p_provider;
end
$$;
