-- Kept balances: a transaction claims a bucket for itself (a transaction-scoped advisory lock on the
-- bucket's number) before it adds to any balance row, and adds to that bucket only. Taking the bucket of
-- its backend (pid modulo balance_buckets) let two backends equal modulo the buckets share rows, and two
-- such transactions whose postings came in another order deadlocked: a reconciliation run booked a
-- missing fee (provider_fees, receivable_stripe), a webhook booked a stay (commission_revenue,
-- host_payable, then waited on receivable_stripe), and the run's next receipt wanted commission_revenue
-- (40P01; tests/core/ledger_balance_locks.test.ts replays it). A row lock order holds inside one posting,
-- not across a transaction's postings. Held alone, a bucket's rows are never another transaction's, so no
-- posting waits on a balance row at all.
--
-- Every account gets 64 buckets (the most the column allows): only when 64 posting transactions are open
-- at once does the next wait for a bucket, and that wait, taken while it may hold its payment's or its
-- nights' rows, is the one left that could close a cycle. The claim ranges over the fewest buckets any
-- account has, so an account given fewer makes transactions wait for a bucket rather than share its rows.

update reserve.ledger_accounts set balance_buckets = 64 where balance_buckets < 64;
alter table reserve.ledger_accounts alter column balance_buckets set default 64;

create function reserve.claim_balance_bucket()
 returns integer
 language plpgsql
 security definer
 set search_path to ''
as $function$
declare
  slots integer;
  own integer;
  candidate integer;
begin
  select min(a.balance_buckets) into slots from reserve.ledger_accounts a;
  own := pg_catalog.pg_backend_pid() % slots;
  for i in 0 .. slots - 1 loop
    candidate := (own + i) % slots;
    if pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('reserve.balance_bucket'), candidate) then
      perform pg_catalog.set_config('reserve.balance_bucket', candidate::text, true);
      return candidate;
    end if;
  end loop;
  -- every bucket is another transaction's: wait for its own, holding no balance row yet
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('reserve.balance_bucket'), own);
  perform pg_catalog.set_config('reserve.balance_bucket', own::text, true);
  return own;
end
$function$;

comment on function reserve.claim_balance_bucket() is 'The bucket of ledger_account_balances and ledger_host_days this transaction adds to, held by it alone until it ends (a transaction-scoped advisory lock; a rolled-back savepoint gives it back): the first free from the backend''s own (pid modulo the fewest balance_buckets of any account, so no two open transactions share a row of any account), or, when all are taken, its own once free. Internal: write_ledger_lines claims it at a transaction''s first posting.';

revoke all on function reserve.claim_balance_bucket() from public, anon, authenticated;

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
  -- claimed at the transaction's first posting; a rolled-back savepoint clears it with its lock
  claimed integer := nullif(pg_catalog.current_setting('reserve.balance_bucket', true), '')::integer;
begin
  foreach line in array p_lines loop
    if line.account = 'host_payable' then
      host := reserve.ledger_transaction_host(p_transaction.payment_id, p_transaction.reservation_id);
      exit;
    end if;
  end loop;
  -- the setting names the bucket; the lock proves it is ours (re-taking a lock held is a no-op), so a
  -- value set from outside cannot make a posting write another transaction's rows
  if claimed is null or not pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('reserve.balance_bucket'), claimed) then
    claimed := reserve.claim_balance_bucket();
  end if;
  perform set_config('reserve.ledger_writer', 'on', true);
  with legs as (
    insert into reserve.ledger_entries (transaction_id, entry_type, account, direction, amount, currency, description, city_code)
    select p_transaction.id, e.entry_type, e.account, e.direction, e.amount, e.currency,
           coalesce(e.description, p_default_description), p_transaction.city_code
    from unnest(p_lines) e
    returning account, currency, direction, amount
  ), balances as (
    insert into reserve.ledger_account_balances as b (account, currency, bucket, debits, credits, entries)
    select l.account, l.currency, (claimed % a.balance_buckets)::smallint,
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
    insert into reserve.ledger_host_days as d (host_id, currency, day, bucket, debits, credits, entries)
    select host, l.currency, (now() at time zone 'UTC')::date, (claimed % a.balance_buckets)::smallint,
           coalesce(sum(l.amount) filter (where l.direction = 'debit'), 0),
           coalesce(sum(l.amount) filter (where l.direction = 'credit'), 0), count(*)
    from legs l join reserve.ledger_accounts a on a.code = l.account
    where host is not null and l.account = 'host_payable'
    group by l.currency, a.balance_buckets
    order by l.currency
    on conflict (host_id, currency, day, bucket) do update
      set debits = d.debits + excluded.debits, credits = d.credits + excluded.credits, entries = d.entries + excluded.entries
    returning 1
  )
  select count(*) into n from legs;
  perform set_config('reserve.ledger_writer', '', true);
  return n;
end
$function$
;

comment on function reserve.write_ledger_lines(p_transaction reserve.ledger_transactions, p_lines reserve.ledger_line[], p_default_description text) is 'Writes a transaction''s legs and, in the same statement, the balances they move: ledger_account_balances and ledger_host_days (host_payable of the transaction''s host), both in the bucket the transaction holds alone (claim_balance_bucket). The only writer of entries; callers check balance and idempotency first. Internal.';

comment on column reserve.ledger_accounts.balance_buckets is 'How many rows of ledger_account_balances hold this account''s balance (per currency): each open transaction that posts holds one bucket alone (claim_balance_bucket), so concurrent postings never share a row and a busy platform account has no hot row.';

comment on table reserve.ledger_account_balances is 'Debits and credits posted to each ledger account so far, per currency, split into balance_buckets rows (the bucket a posting transaction holds alone, claim_balance_bucket). Written only by write_ledger_lines in the posting transaction; ledger_balance_drift checks it against the entries.';

comment on table reserve.ledger_host_days is 'Per host, currency, UTC posting day and bucket (the one the posting transaction holds alone, claim_balance_bucket): debits (refunds, payouts) and credits (host shares) on host_payable for the host''s stays. A day is the sum of its buckets; a host''s balance at a day is the sum of its days up to it (host_statement).';
