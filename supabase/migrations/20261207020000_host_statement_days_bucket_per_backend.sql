-- A host's statement days are kept in buckets, like the account balances: a receipt adds to the row of
-- its (host, currency, day) in the bucket of the backend writing it. With one row a host a day, every
-- finalize of a host's stays waited on it from its receipt to the commit and WAL flush of the one before:
-- finalizes of one host's units from 8 connections (pgbench, 6 s, log_lock_waits at 2 ms) waited 2,814
-- times on ledger_host_days and ran 227-244 tx/s against 283-286 for a property without a host. The
-- readers sum a day's buckets; a statement's figures are the same sums, and its days with movement are
-- distinct days. Existing rows keep bucket 0; rebuild_ledger_balances writes bucket 0.

alter table reserve.ledger_host_days add column bucket smallint not null default 0 check (bucket >= 0);
alter table reserve.ledger_host_days
  drop constraint ledger_host_days_pkey,
  add constraint ledger_host_days_pkey primary key (host_id, currency, day, bucket);
comment on table reserve.ledger_host_days is 'Per host, currency, UTC posting day and bucket (the backend that wrote the posting, modulo host_payable''s balance_buckets): debits (refunds, payouts) and credits (host shares) on host_payable for the host''s stays. A day is the sum of its buckets; a host''s balance at a day is the sum of its days up to it (host_statement).';

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
    insert into reserve.ledger_host_days as d (host_id, currency, day, bucket, debits, credits, entries)
    select host, l.currency, (now() at time zone 'UTC')::date, (pg_catalog.pg_backend_pid() % a.balance_buckets)::smallint,
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

comment on function reserve.write_ledger_lines(p_transaction reserve.ledger_transactions, p_lines reserve.ledger_line[], p_default_description text) is 'Writes a transaction''s legs and, in the same statement, the balances they move: ledger_account_balances (the bucket of the backend writing it, whatever it posts) and ledger_host_days (host_payable of the transaction''s host, in the same backend''s bucket). The only writer of entries; callers check balance and idempotency first. Internal.';

CREATE OR REPLACE FUNCTION reserve.host_statement(p_host_id uuid, p_from date, p_to date)
 RETURNS TABLE(currency text, opening_balance bigint, credits bigint, debits bigint, closing_balance bigint, entries bigint, days_with_movement bigint)
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO ''
AS $function$
begin
  if p_host_id is null or p_from is null or p_to is null or p_to < p_from then
    raise exception using errcode = 'RC001',
      message = format('host statement: a host and a period from <= to are required (host %s, %s .. %s)',
                       coalesce(p_host_id::text, 'null'), coalesce(p_from::text, 'null'), coalesce(p_to::text, 'null'));
  end if;
  return query
  select d.currency,
         coalesce(sum(d.credits - d.debits) filter (where d.day < p_from), 0)::bigint,
         coalesce(sum(d.credits) filter (where d.day >= p_from), 0)::bigint,
         coalesce(sum(d.debits) filter (where d.day >= p_from), 0)::bigint,
         coalesce(sum(d.credits - d.debits), 0)::bigint,
         coalesce(sum(d.entries) filter (where d.day >= p_from), 0)::bigint,
         count(distinct d.day) filter (where d.day >= p_from)
  from reserve.ledger_host_days d
  where d.host_id = p_host_id and d.day <= p_to
  group by d.currency
  order by d.currency;
end
$function$
;

comment on function reserve.host_statement(p_host_id uuid, p_from date, p_to date) is 'A host''s statement for p_from..p_to (UTC posting days), per currency: opening balance owed to the host, credits (host shares), debits (refunds and payouts), closing balance, entries and days with movement. Reads the host''s ledger_host_days only, never the ledger. RC001 for a missing host or an empty period.';

CREATE OR REPLACE FUNCTION reserve.host_statement_days(p_host_id uuid, p_from date, p_to date)
 RETURNS TABLE(currency text, day date, opening_balance bigint, credits bigint, debits bigint, closing_balance bigint, entries bigint)
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO ''
AS $function$
begin
  if p_host_id is null or p_from is null or p_to is null or p_to < p_from then
    raise exception using errcode = 'RC001',
      message = format('host statement: a host and a period from <= to are required (host %s, %s .. %s)',
                       coalesce(p_host_id::text, 'null'), coalesce(p_from::text, 'null'), coalesce(p_to::text, 'null'));
  end if;
  return query
  with opening as (
    select d.currency, sum(d.credits - d.debits)::bigint as amount
    from reserve.ledger_host_days d where d.host_id = p_host_id and d.day < p_from
    group by d.currency
  ), period as (
    select d.currency, d.day, sum(d.credits)::bigint as credits, sum(d.debits)::bigint as debits, sum(d.entries)::bigint as entries
    from reserve.ledger_host_days d where d.host_id = p_host_id and d.day between p_from and p_to
    group by d.currency, d.day
  )
  select x.currency, x.day,
         (coalesce(o.amount, 0) + coalesce(sum(x.credits - x.debits) over w, 0) - (x.credits - x.debits))::bigint,
         x.credits, x.debits,
         (coalesce(o.amount, 0) + coalesce(sum(x.credits - x.debits) over w, 0))::bigint,
         x.entries
  from period x left join opening o on o.currency = x.currency
  window w as (partition by x.currency order by x.day rows between unbounded preceding and current row)
  order by x.currency, x.day;
end
$function$
;

comment on function reserve.host_statement_days(p_host_id uuid, p_from date, p_to date) is 'A host''s statement day by day (UTC posting days with movement in p_from..p_to): opening balance, credits (host shares), debits (refunds and payouts taken from host_payable) and closing balance, per currency. Reads the host''s ledger_host_days only. RC001 for a missing host or an empty period.';
