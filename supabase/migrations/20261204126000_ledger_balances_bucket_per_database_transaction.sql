-- Kept balances: a database transaction adds all its postings to one bucket row per account, chosen by
-- its own transaction id, not by each ledger transaction's. A success that books the provider's fee and
-- then the receipt writes two ledger transactions, both on receivable_stripe; with a bucket per ledger
-- transaction one database transaction could hold bucket 3 (its fee) and want bucket 5 (its receipt)
-- while another held 5 and wanted 3, and PostgreSQL broke the cycle by failing one (40P01): about one
-- poll in thirty at 16 at once (bench:webhooks' poller). With one bucket per database transaction, two
-- that meet on a bucket meet on its first row in account order and the second waits for the first.
-- Concurrent transactions still spread over the buckets (hash of their ids), and the balances are the
-- same sums: which bucket holds a share of an account's total was never read.

CREATE OR REPLACE FUNCTION reserve.write_ledger_entries(p_transaction reserve.ledger_transactions, p_entries jsonb, p_default_type text, p_default_description text DEFAULT NULL::text)
 RETURNS integer
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  host uuid;
  n integer;
begin
  if jsonb_path_exists(p_entries, '$[*] ? (@.account == "host_payable")') then
    host := reserve.ledger_transaction_host(p_transaction.payment_id, p_transaction.reservation_id);
  end if;
  perform set_config('reserve.ledger_writer', 'on', true);
  with legs as (
    insert into reserve.ledger_entries (transaction_id, entry_type, account, direction, amount, currency, description, city_code)
    select p_transaction.id, e.entry_type, e.account, e.direction, e.amount, e.currency,
           coalesce(e.description, p_default_description), p_transaction.city_code
    from reserve.parse_ledger_entries(p_entries, p_default_type) e
    returning account, currency, direction, amount
  ), balances as (
    insert into reserve.ledger_account_balances as b (account, currency, bucket, debits, credits, entries)
    select l.account, l.currency, ((hashtext(pg_catalog.pg_current_xact_id()::text) & 2147483647) % a.balance_buckets)::smallint,
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
  select (select count(*) from legs) + 0 * (select count(*) from balances) + 0 * (select count(*) from host_days) into n;
  perform set_config('reserve.ledger_writer', '', true);
  return n;
end
$function$
;

comment on function reserve.write_ledger_entries(p_transaction reserve.ledger_transactions, p_entries jsonb, p_default_type text, p_default_description text) is 'Writes a transaction''s legs (validated by parse_ledger_entries) and, in the same statement, the balances they move: ledger_account_balances (one bucket per database transaction, whatever it posts) and ledger_host_days (host_payable of the transaction''s host). The only writer of entries; callers check balance and idempotency first. Internal.';
