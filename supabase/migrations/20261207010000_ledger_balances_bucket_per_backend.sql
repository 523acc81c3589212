-- Kept balances: a posting adds to the bucket row of the backend (the server process of its connection)
-- that writes it, not to one chosen by a hash of its transaction id. Eight transactions at once hashed
-- onto eight buckets almost always share one (all distinct 0.24% of the time: 8!/8^8), and the second
-- waited on the first's row until its commit and WAL flush: finalizes from 8 connections (pgbench, 5 s,
-- log_lock_waits at 2 ms) waited 285 times, every one on ledger_account_balances; with this, none on it.
-- A backend serves one transaction at a time, so connections whose process ids differ modulo
-- balance_buckets never wait on each other's balance rows, and a transaction still keeps to one bucket
-- per account (its postings cannot hold two buckets crosswise, the deadlock one bucket per transaction
-- removed). The balances are the same sums; which bucket holds a share of an account was never read.

CREATE OR REPLACE FUNCTION reserve.write_ledger_lines(p_transaction reserve.ledger_transactions, p_lines reserve.ledger_line[], p_default_description text DEFAULT NULL::text)
 RETURNS integer
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  line reserve.ledger_line;
  host uuid;
  n integer;
begin
  foreach line in array p_lines loop
    if line.account = 'host_payable' then
      host := reserve.ledger_transaction_host(p_transaction.payment_id, p_transaction.reservation_id);
      exit;
    end if;
  end loop;
  perform set_config('reserve.ledger_writer', 'on', true);
  with legs as (
    insert into reserve.ledger_entries (transaction_id, entry_type, account, direction, amount, currency, description, city_code)
    select p_transaction.id, e.entry_type, e.account, e.direction, e.amount, e.currency,
           coalesce(e.description, p_default_description), p_transaction.city_code
    from unnest(p_lines) e
    returning account, currency, direction, amount
  ), balances as (
    insert into reserve.ledger_account_balances as b (account, currency, bucket, debits, credits, entries)
    select l.account, l.currency, (pg_catalog.pg_backend_pid() % a.balance_buckets)::smallint,
           coalesce(sum(l.amount) filter (where l.direction = 'debit'), 0),
           coalesce(sum(l.amount) filter (where l.direction = 'credit'), 0), count(*)
    from legs l join reserve.ledger_accounts a on a.code = l.account
    group by l.account, l.currency, a.balance_buckets
    -- a fixed lock order, so two postings never wait on each other's rows crosswise
    order by l.account, l.currency
    on conflict (account, currency, bucket) do update
      set debits = b.debits + excluded.debits, credits = b.credits + excluded.credits,
          entries = b.entries + excluded.entries, updated_at = now()
    returning 1
  ), host_days as (
    insert into reserve.ledger_host_days as d (host_id, currency, day, debits, credits, entries)
    select host, l.currency, (now() at time zone 'UTC')::date,
           coalesce(sum(l.amount) filter (where l.direction = 'debit'), 0),
           coalesce(sum(l.amount) filter (where l.direction = 'credit'), 0), count(*)
    from legs l
    where host is not null and l.account = 'host_payable'
    group by l.currency
    order by l.currency
    on conflict (host_id, currency, day) do update
      set debits = d.debits + excluded.debits, credits = d.credits + excluded.credits, entries = d.entries + excluded.entries
    returning 1
  )
  select count(*) into n from legs;
  perform set_config('reserve.ledger_writer', '', true);
  return n;
end
$function$
;

comment on function reserve.write_ledger_lines(p_transaction reserve.ledger_transactions, p_lines reserve.ledger_line[], p_default_description text) is 'Writes a transaction''s legs and, in the same statement, the balances they move: ledger_account_balances (the bucket of the backend writing it, whatever it posts) and ledger_host_days (host_payable of the transaction''s host). The only writer of entries; callers check balance and idempotency first. Internal.';
comment on column reserve.ledger_accounts.balance_buckets is 'How many rows of ledger_account_balances hold this account''s balance (per currency): concurrent postings land on different rows (the process id of the backend writing them), so a busy platform account has no hot row.';
