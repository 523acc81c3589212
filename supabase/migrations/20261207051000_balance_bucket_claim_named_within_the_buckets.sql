-- A transaction's balance bucket is named by the setting reserve.balance_bucket and proven by the
-- advisory lock on that number, and write_ledger_lines wrote the number modulo the account's buckets. A
-- session that set another transaction's bucket plus 64 (any number past the buckets) took a lock nobody
-- held and then wrote that transaction's rows after all; a negative number failed the bucket CHECK and a
-- word failed the cast. A number is now the transaction's claim only when it is one of the buckets and
-- its lock is held; anything else is no claim, and a bucket is claimed.
--
-- claimed_balance_bucket reads the claim, and claim_balance_bucket returns it when there is one, so a
-- path may claim before its first row lock and its postings then find the bucket claimed.

create function reserve.claimed_balance_bucket()
 returns integer
 language plpgsql
 security definer
 set search_path to ''
as $function$
declare
  named text := pg_catalog.current_setting('reserve.balance_bucket', true);
  claimed integer;
begin
  if named is null or named !~ '^[0-9]{1,5}$' then
    return null;
  end if;
  claimed := named::integer;
  -- a number past the fewest buckets of any account would share another claim's rows: no claim, even
  -- when nobody holds its lock
  if claimed >= (select min(a.balance_buckets) from reserve.ledger_accounts a) then
    return null;
  end if;
  -- re-taking a lock this transaction holds is a no-op; one another transaction holds is not ours
  if not pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('reserve.balance_bucket'), claimed) then
    return null;
  end if;
  return claimed;
end
$function$;

comment on function reserve.claimed_balance_bucket() is 'The balance bucket this transaction holds (claim_balance_bucket), or null: reserve.balance_bucket counts only when it names one of the buckets and its advisory lock is this transaction''s. Internal.';

revoke all on function reserve.claimed_balance_bucket() from public, anon, authenticated;

CREATE OR REPLACE FUNCTION reserve.claim_balance_bucket()
 RETURNS integer
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  slots integer;
  own integer := reserve.claimed_balance_bucket();
  candidate integer;
begin
  if own is not null then
    return own;
  end if;
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

comment on function reserve.claim_balance_bucket() is 'The bucket of ledger_account_balances and ledger_host_days this transaction adds to, held by it alone until it ends (a transaction-scoped advisory lock; a rolled-back savepoint gives it back): the one it holds already (claimed_balance_bucket), else the first free from the backend''s own (pid modulo the fewest balance_buckets of any account, so no two open transactions share a row of any account), or, when all are taken, its own once free. Internal: a path claims it before its first row lock, and write_ledger_lines at a transaction''s first posting if none has.';

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
  -- claimed before the transaction's first row lock or at its first posting; a rolled-back savepoint
  -- clears it with its lock
  claimed integer := reserve.claimed_balance_bucket();
begin
  foreach line in array p_lines loop
    if line.account = 'host_payable' then
      host := reserve.ledger_transaction_host(p_transaction.payment_id, p_transaction.reservation_id);
      exit;
    end if;
  end loop;
  if claimed is null then
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
