-- Balances kept as entries are posted, so that an account's balance and a host's statement never need
-- the whole ledger summed (pgledger keeps a balance on the account row; here the busy platform accounts
-- are split into buckets so concurrent postings do not queue on one hot row).
--   * ledger_account_balances: per account, currency and bucket (hash of the transaction id mod the
--     account's balance_buckets), debits and credits so far. An account's balance is its few buckets.
--   * ledger_host_days: per host, currency and UTC day, what moved on host_payable for that host's stays
--     (a host is the host_id of the property of the transaction's reservation or payment). A statement
--     for a period reads the host's days: the opening balance is the days before, never the entries.
-- Both are written in one place, reserve.write_ledger_entries, which every posting path calls (the
-- posting function and approved corrections); rows are locked in (account, currency, bucket) order.
-- ledger_balance_drift compares them with the entries: since a checkpoint (cheap, every health check)
-- or in full (the daily ledger_balance_full_check job, which also moves the checkpoint on).

alter table reserve.ledger_accounts
  add column balance_buckets smallint not null default 1 check (balance_buckets between 1 and 64);
comment on column reserve.ledger_accounts.balance_buckets is
  'How many rows of ledger_account_balances hold this account''s balance (per currency): concurrent postings '
  'land on different rows (hash of the transaction id), so a busy platform account has no hot row.';
-- every account of the chart is the platform's own and busy: receipts, fees and payouts all touch them
update reserve.ledger_accounts set balance_buckets = 8;

create table reserve.ledger_account_balances (
  account    text not null references reserve.ledger_accounts (code),
  currency   text not null check (currency ~ '^[A-Z]{3}$'),
  bucket     smallint not null check (bucket >= 0),
  debits     bigint not null default 0 check (debits >= 0),
  credits    bigint not null default 0 check (credits >= 0),
  entries    bigint not null default 0 check (entries >= 0),
  updated_at timestamptz not null default now(),
  primary key (account, currency, bucket)
);
alter table reserve.ledger_account_balances enable row level security;
revoke all on reserve.ledger_account_balances from public, anon, authenticated;
grant select on reserve.ledger_account_balances to service_role;
comment on table reserve.ledger_account_balances is
  'Debits and credits posted to each ledger account so far, per currency, split into balance_buckets rows. '
  'Written only by write_ledger_entries in the posting transaction; ledger_balance_drift checks it against the entries.';

create table reserve.ledger_host_days (
  host_id  uuid not null,
  currency text not null check (currency ~ '^[A-Z]{3}$'),
  day      date not null,
  debits   bigint not null default 0 check (debits >= 0),
  credits  bigint not null default 0 check (credits >= 0),
  entries  bigint not null default 0 check (entries >= 0),
  primary key (host_id, currency, day)
);
alter table reserve.ledger_host_days enable row level security;
revoke all on reserve.ledger_host_days from public, anon, authenticated;
grant select on reserve.ledger_host_days to service_role;
comment on table reserve.ledger_host_days is
  'Per host, currency and UTC posting day: debits (refunds, payouts) and credits (host shares) on host_payable '
  'for the host''s stays. A host''s balance at a day is the sum of its days up to it (host_statement).';

create table reserve.ledger_balance_checkpoints (
  account   text not null references reserve.ledger_accounts (code),
  currency  text not null check (currency ~ '^[A-Z]{3}$'),
  through   timestamptz not null,
  debits    bigint not null,
  credits   bigint not null,
  entries   bigint not null,
  primary key (account, currency)
);
alter table reserve.ledger_balance_checkpoints enable row level security;
revoke all on reserve.ledger_balance_checkpoints from public, anon, authenticated;
grant select on reserve.ledger_balance_checkpoints to service_role;
comment on table reserve.ledger_balance_checkpoints is
  'Sums of the entries created up to `through`, as the last full check counted them: the incremental check '
  'adds the entries since and compares with ledger_account_balances.';

-- How long a posting transaction may stay open: entries carry their transaction's start time, so one
-- committed later than that would be missed by a checkpoint taken in between.
insert into reserve.settings (key, value, description) values
  ('ledger_checkpoint_lag_minutes', '10',
   'The ledger balance checkpoint counts entries created at least this many minutes before it is taken (a posting transaction open longer would be missed).');

-- The host whose stay a transaction is about: its reservation's property, else its payment's.
create function reserve.ledger_transaction_host(p_payment_id uuid, p_reservation_id uuid)
returns uuid
language sql
stable
security definer
set search_path = ''
as $$
  select coalesce(
    (select pm.host_id from reserve.reservations r join reserve.properties_map pm on pm.id = r.property_id
     where r.id = p_reservation_id),
    (select pm.host_id from reserve.payments p
       join reserve.booking_intents bi on bi.id = p.booking_intent_id
       join reserve.properties_map pm on pm.id = bi.property_id
     where p.id = p_payment_id))
$$;
comment on function reserve.ledger_transaction_host(uuid, uuid) is
  'The host_id of the property of a ledger transaction''s reservation (else of its payment''s booking intent); null when the property has no host.';
revoke all on function reserve.ledger_transaction_host(uuid, uuid) from public;

-- The one place ledger entries are written: the legs, then the balances they move, in one statement.
create function reserve.write_ledger_entries(p_transaction reserve.ledger_transactions, p_entries jsonb,
                                             p_default_type text, p_default_description text default null)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
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
    select l.account, l.currency, ((hashtext(p_transaction.id::text) & 2147483647) % a.balance_buckets)::smallint,
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
$$;
comment on function reserve.write_ledger_entries(reserve.ledger_transactions, jsonb, text, text) is
  'Writes a transaction''s legs (validated by parse_ledger_entries) and, in the same statement, the balances '
  'they move: ledger_account_balances (one bucket per transaction) and ledger_host_days (host_payable of the '
  'transaction''s host). The only writer of entries; callers check balance and idempotency first. Internal.';
revoke all on function reserve.write_ledger_entries(reserve.ledger_transactions, jsonb, text, text) from public;

create or replace function reserve.post_ledger_transaction(
  p_kind            text,
  p_description     text,
  p_entries         jsonb,
  p_idempotency_key text default null,
  p_payment_id      uuid default null,
  p_reservation_id  uuid default null,
  p_city_code       text default null,
  p_reverses        uuid default null)
returns reserve.ledger_transactions
language plpgsql
security definer
set search_path = ''
as $$
declare
  tx reserve.ledger_transactions;
  hash text;
  default_type text;
begin
  if p_kind is null or p_kind not in ('payment', 'duplicate_charge', 'refund', 'reversal', 'correction', 'payout', 'chargeback') then
    raise exception using errcode = 'RC001', message = format('ledger transaction kind %s is unknown', coalesce(p_kind, 'null'));
  end if;
  if p_kind = 'correction' and coalesce(current_setting('reserve.ledger_correction', true), '') <> 'approved' then
    raise exception using errcode = 'RC407',
      message = 'corrections are posted only by approve_ledger_correction (4-eyes)';
  end if;
  if coalesce(length(btrim(p_description)), 0) = 0 then
    raise exception using errcode = 'RC001', message = 'a ledger transaction needs a description';
  end if;
  if jsonb_typeof(p_entries) = 'array' and jsonb_array_length(p_entries) < 2 then
    raise exception using errcode = 'RC001', message = 'a ledger transaction needs at least two entries';
  end if;
  default_type := case p_kind when 'payment' then 'guest_payment' when 'duplicate_charge' then 'guest_payment'
                              when 'chargeback' then 'chargeback' else p_kind end;
  perform reserve.assert_balanced(p_entries, 'ledger transaction ' || coalesce(p_idempotency_key, '(no key)'));

  hash := md5(jsonb_build_array(p_kind, p_description, p_entries, p_payment_id, p_reservation_id, p_city_code, p_reverses)::text);
  perform set_config('reserve.ledger_writer', 'on', true);
  insert into reserve.ledger_transactions (kind, description, payment_id, reservation_id, city_code, reverses,
                                           idempotency_key, request_hash, created_by)
  values (p_kind, p_description, p_payment_id, p_reservation_id, p_city_code, p_reverses,
          p_idempotency_key, hash, reserve.current_actor())
  on conflict (idempotency_key) do nothing
  returning * into tx;

  if tx.id is null then
    perform set_config('reserve.ledger_writer', '', true);
    select * into tx from reserve.ledger_transactions where idempotency_key = p_idempotency_key;
    if tx.request_hash is distinct from hash then
      raise exception using errcode = 'RC405',
        message = format('idempotency key %s was already used for ledger transaction %s with other arguments',
                         p_idempotency_key, tx.id);
    end if;
    return tx;
  end if;

  perform reserve.write_ledger_entries(tx, p_entries, default_type);
  return tx;
end
$$;
comment on function reserve.post_ledger_transaction(text, text, jsonb, text, uuid, uuid, text, uuid) is
  'The only way money enters the ledger: a header and its legs ([{account, direction, amount, entry_type?}] '
  'in centavos), balanced per currency (RC401), idempotent by key (same request returns the same '
  'transaction, a different one raises RC405), its balances kept by write_ledger_entries. Corrections only '
  'through approve_ledger_correction.';

create or replace function reserve.approve_ledger_correction(p_correction_id uuid, p_note text default null)
returns reserve.ledger_corrections
language plpgsql
security definer
set search_path = ''
as $$
declare
  c reserve.ledger_corrections;
  who text := reserve.named_actor();
  tx reserve.ledger_transactions;
  target reserve.ledger_transactions;
begin
  c := reserve.lock_correction(p_correction_id);
  if c.status = 'approved' then
    return c;
  end if;
  if c.status <> 'proposed' then
    raise exception using errcode = 'RC408', message = format('ledger correction %s is already %s', c.id, c.status);
  end if;
  if who = c.proposed_by then
    raise exception using errcode = 'RC407',
      message = format('ledger correction %s was proposed by %s, who cannot approve it too', c.id, who);
  end if;

  if c.target_transaction_id is null then
    perform set_config('reserve.ledger_correction', 'approved', true);
    tx := reserve.post_ledger_transaction('correction', 'Correction: ' || c.reason, c.entries, 'correction:' || c.id);
    perform set_config('reserve.ledger_correction', '', true);
  else
    -- serialise with any other correction of the same transaction, then re-check on current legs
    select * into target from reserve.ledger_transactions where id = c.target_transaction_id for no key update;
    perform reserve.assert_correction_balances(c.entries, c.target_transaction_id);
    perform reserve.write_ledger_entries(target, c.entries, 'correction', 'Correction ' || c.id || ': ' || c.reason);
    tx := target;
  end if;

  update reserve.ledger_corrections
  set status = 'approved', decided_by = who, decided_at = now(), decision_note = p_note, transaction_id = tx.id
  where id = c.id
  returning * into c;
  return c;
end
$$;

-- Balances from the entries themselves: the backfill below, and a dataset loaded around the posting
-- function (npm run seed:large) calls it once at the end.
create function reserve.rebuild_ledger_balances()
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  through timestamptz := now();
begin
  -- no posting in between: the kept balances and the checkpoint are exactly the entries
  lock table reserve.ledger_entries in share mode;
  delete from reserve.ledger_account_balances;
  delete from reserve.ledger_host_days;
  delete from reserve.ledger_balance_checkpoints;
  insert into reserve.ledger_account_balances (account, currency, bucket, debits, credits, entries)
  select e.account, e.currency, ((hashtext(e.transaction_id::text) & 2147483647) % a.balance_buckets)::smallint,
         coalesce(sum(e.amount) filter (where e.direction = 'debit'), 0),
         coalesce(sum(e.amount) filter (where e.direction = 'credit'), 0), count(*)
  from reserve.ledger_entries e join reserve.ledger_accounts a on a.code = e.account
  group by 1, 2, 3;
  insert into reserve.ledger_host_days (host_id, currency, day, debits, credits, entries)
  select pm.host_id, e.currency, (e.created_at at time zone 'UTC')::date,
         coalesce(sum(e.amount) filter (where e.direction = 'debit'), 0),
         coalesce(sum(e.amount) filter (where e.direction = 'credit'), 0), count(*)
  from reserve.ledger_entries e
  join reserve.ledger_transactions t on t.id = e.transaction_id
  left join reserve.reservations r on r.id = t.reservation_id
  left join reserve.payments p on p.id = t.payment_id
  left join reserve.booking_intents bi on bi.id = p.booking_intent_id
  join reserve.properties_map pm on pm.id = coalesce(r.property_id, bi.property_id)
  where e.account = 'host_payable' and pm.host_id is not null
  group by 1, 2, 3;
  insert into reserve.ledger_balance_checkpoints (account, currency, through, debits, credits, entries)
  select account, currency, through, sum(debits), sum(credits), sum(entries)
  from reserve.ledger_account_balances group by account, currency;
end
$$;
comment on function reserve.rebuild_ledger_balances() is
  'Recomputes ledger_account_balances, ledger_host_days and the checkpoints from the entries (holding off '
  'postings meanwhile). For data loaded around the posting function; otherwise never needed.';
revoke all on function reserve.rebuild_ledger_balances() from public;
grant execute on function reserve.rebuild_ledger_balances() to service_role;

select reserve.rebuild_ledger_balances();

-- The balances as operators read them: signed by the account's normal balance.
create view reserve.ledger_balances with (security_invoker = true) as
select b.account, a.kind, b.currency, sum(b.debits)::bigint as debits, sum(b.credits)::bigint as credits,
       (case a.normal_balance when 'debit' then sum(b.debits) - sum(b.credits) else sum(b.credits) - sum(b.debits) end)::bigint as balance,
       sum(b.entries)::bigint as entries, max(b.updated_at) as updated_at
from reserve.ledger_account_balances b
join reserve.ledger_accounts a on a.code = b.account
group by b.account, a.kind, a.normal_balance, b.currency;
comment on view reserve.ledger_balances is
  'Each ledger account''s balance per currency (debits minus credits for debit-normal accounts, credits minus '
  'debits for the others), from the kept balances: a few rows per account, never the entries.';
revoke all on reserve.ledger_balances from public, anon, authenticated;
grant select on reserve.ledger_balances to service_role;

create function reserve.ledger_account_balance(p_account text, p_currency text default 'BRL')
returns bigint
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  normal text;
  bal bigint;
begin
  select a.normal_balance into normal from reserve.ledger_accounts a where a.code = p_account;
  if not found then
    raise exception using errcode = 'RC404', message = format('ledger account %s does not exist', coalesce(p_account, 'null'));
  end if;
  select coalesce(sum(case when normal = 'debit' then b.debits - b.credits else b.credits - b.debits end), 0)
    into bal
  from reserve.ledger_account_balances b where b.account = p_account and b.currency = p_currency;
  return bal;
end
$$;
comment on function reserve.ledger_account_balance(text, text) is
  'An account''s balance in a currency, signed by its normal balance, from its kept balance buckets. RC404 for an unknown account.';
revoke all on function reserve.ledger_account_balance(text, text) from public;
grant execute on function reserve.ledger_account_balance(text, text) to service_role;

-- A host's statement: what the host was owed when the period opened, earned and was paid (or had
-- taken back) in it, and owed at its end, per currency; and the same per day.
create function reserve.host_statement_days(p_host_id uuid, p_from date, p_to date)
returns table (currency text, day date, opening_balance bigint, credits bigint, debits bigint, closing_balance bigint, entries bigint)
language plpgsql
stable
security definer
set search_path = ''
as $$
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
    select d.currency, d.day, d.credits, d.debits, d.entries
    from reserve.ledger_host_days d where d.host_id = p_host_id and d.day between p_from and p_to
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
$$;
comment on function reserve.host_statement_days(uuid, date, date) is
  'A host''s statement day by day (UTC posting days with movement in p_from..p_to): opening balance, credits '
  '(host shares), debits (refunds and payouts taken from host_payable) and closing balance, per currency. '
  'Reads the host''s ledger_host_days only. RC001 for a missing host or an empty period.';
revoke all on function reserve.host_statement_days(uuid, date, date) from public;
grant execute on function reserve.host_statement_days(uuid, date, date) to service_role;

create function reserve.host_statement(p_host_id uuid, p_from date, p_to date)
returns table (currency text, opening_balance bigint, credits bigint, debits bigint, closing_balance bigint,
               entries bigint, days_with_movement bigint)
language plpgsql
stable
security definer
set search_path = ''
as $$
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
         count(*) filter (where d.day >= p_from)
  from reserve.ledger_host_days d
  where d.host_id = p_host_id and d.day <= p_to
  group by d.currency
  order by d.currency;
end
$$;
comment on function reserve.host_statement(uuid, date, date) is
  'A host''s statement for p_from..p_to (UTC posting days), per currency: opening balance owed to the host, '
  'credits (host shares), debits (refunds and payouts), closing balance, entries and days with movement. '
  'Reads the host''s ledger_host_days only, never the ledger. RC001 for a missing host or an empty period.';
revoke all on function reserve.host_statement(uuid, date, date) from public;
grant execute on function reserve.host_statement(uuid, date, date) to service_role;

-- Kept balances against the entries. Incremental: the checkpoint plus the entries created since it
-- (the index on created_at), in the same snapshot as the balances. Full: every entry.
create function reserve.ledger_balance_drift(p_full boolean default false)
returns table (account text, currency text, kept_debits bigint, kept_credits bigint,
               summed_debits bigint, summed_credits bigint, drift bigint)
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  since timestamptz;
begin
  if not p_full then
    select min(c.through) into since from reserve.ledger_balance_checkpoints c;
  end if;
  -- the time as a literal, so that the incremental check reads the entries since it by the created_at
  -- index (a generic plan would scan every entry); no checkpoint yet (or a full check): every entry
  return query execute format($q$
    with kept as (
      select b.account, b.currency, sum(b.debits)::bigint as debits, sum(b.credits)::bigint as credits
      from reserve.ledger_account_balances b group by b.account, b.currency
    ), moved as (
      -- an entry after its account's own checkpoint counts once, on top of that checkpoint
      select e.account, e.currency,
             coalesce(sum(e.amount) filter (where e.direction = 'debit'), 0)::bigint as debits,
             coalesce(sum(e.amount) filter (where e.direction = 'credit'), 0)::bigint as credits
      from reserve.ledger_entries e
      left join reserve.ledger_balance_checkpoints cp on %1$s and cp.account = e.account and cp.currency = e.currency
      where e.created_at > %2$L::timestamptz and (cp.through is null or e.created_at > cp.through)
      group by e.account, e.currency
    ), summed as (
      select coalesce(c.account, m.account) as account, coalesce(c.currency, m.currency) as currency,
             (coalesce(c.debits, 0) + coalesce(m.debits, 0))::bigint as debits,
             (coalesce(c.credits, 0) + coalesce(m.credits, 0))::bigint as credits
      from (select * from reserve.ledger_balance_checkpoints where %1$s) c
      full join moved m on m.account = c.account and m.currency = c.currency
    )
    select coalesce(k.account, s.account), coalesce(k.currency, s.currency),
           coalesce(k.debits, 0), coalesce(k.credits, 0), coalesce(s.debits, 0), coalesce(s.credits, 0),
           ((coalesce(k.debits, 0) - coalesce(k.credits, 0)) - (coalesce(s.debits, 0) - coalesce(s.credits, 0)))::bigint
    from kept k full join summed s on s.account = k.account and s.currency = k.currency
    where (coalesce(k.debits, 0), coalesce(k.credits, 0)) is distinct from (coalesce(s.debits, 0), coalesce(s.credits, 0))
    order by 1, 2$q$, (not p_full)::text, coalesce(since, '-infinity'::timestamptz));
end
$$;
comment on function reserve.ledger_balance_drift(boolean) is
  'Ledger accounts whose kept balance (ledger_account_balances) differs from their entries: by default the '
  'last checkpoint plus the entries created since (cheap); with p_full every entry. Empty when they agree. '
  'drift = kept (debits - credits) minus summed (debits - credits).';
revoke all on function reserve.ledger_balance_drift(boolean) from public;
grant execute on function reserve.ledger_balance_drift(boolean) to service_role;

-- Hosts whose kept days differ from their host_payable entries (the full check only: it joins every
-- host_payable entry to its host).
create function reserve.ledger_host_drift()
returns table (host_id uuid, currency text, kept_balance bigint, summed_balance bigint)
language sql
stable
security definer
set search_path = ''
as $$
  with kept as (
    select d.host_id, d.currency, sum(d.credits - d.debits)::bigint as balance
    from reserve.ledger_host_days d group by d.host_id, d.currency
  ), summed as (
    select pm.host_id, e.currency, sum(case e.direction when 'credit' then e.amount else -e.amount end)::bigint as balance
    from reserve.ledger_entries e
    join reserve.ledger_transactions t on t.id = e.transaction_id
    left join reserve.reservations r on r.id = t.reservation_id
    left join reserve.payments p on p.id = t.payment_id
    left join reserve.booking_intents bi on bi.id = p.booking_intent_id
    join reserve.properties_map pm on pm.id = coalesce(r.property_id, bi.property_id)
    where e.account = 'host_payable' and pm.host_id is not null
    group by pm.host_id, e.currency
  )
  select coalesce(k.host_id, s.host_id), coalesce(k.currency, s.currency), coalesce(k.balance, 0), coalesce(s.balance, 0)
  from kept k full join summed s on s.host_id = k.host_id and s.currency = k.currency
  where coalesce(k.balance, 0) <> coalesce(s.balance, 0)
$$;
comment on function reserve.ledger_host_drift() is
  'Hosts whose kept statement days (ledger_host_days) differ from the sum of their host_payable entries. Empty when they agree.';
revoke all on function reserve.ledger_host_drift() from public;
grant execute on function reserve.ledger_host_drift() to service_role;

-- The daily full check: every entry against the kept balances and host days, its findings in a
-- heartbeat (the health check reads the last one), and the checkpoint moved on to what it counted.
create procedure reserve.ledger_balance_full_check()
language plpgsql
security definer
set search_path = ''
as $$
declare
  started timestamptz := clock_timestamp();
  through timestamptz := now() - make_interval(mins => reserve.setting_int('ledger_checkpoint_lag_minutes'));
  accounts integer;
  hosts integer;
begin
  select count(*) into accounts from reserve.ledger_balance_drift(true);
  select count(*) into hosts from reserve.ledger_host_drift();
  if accounts = 0 then
    insert into reserve.ledger_balance_checkpoints as c (account, currency, through, debits, credits, entries)
    select e.account, e.currency, through,
           coalesce(sum(e.amount) filter (where e.direction = 'debit'), 0),
           coalesce(sum(e.amount) filter (where e.direction = 'credit'), 0), count(*)
    from reserve.ledger_entries e where e.created_at <= through
    group by e.account, e.currency
    on conflict (account, currency) do update
      set through = excluded.through, debits = excluded.debits, credits = excluded.credits, entries = excluded.entries
      where c.through < excluded.through;
  end if;
  perform reserve.record_job_heartbeat('ledger_balance_full_check', started, accounts = 0 and hosts = 0,
    jsonb_build_object('accounts_drifting', accounts, 'hosts_drifting', hosts, 'checkpoint_through', through,
                       'duration_ms', round(extract(epoch from clock_timestamp() - started) * 1000)));
end
$$;
comment on procedure reserve.ledger_balance_full_check() is
  'Daily: compares every ledger entry with the kept balances (ledger_balance_drift(true)) and host days '
  '(ledger_host_drift), records a ledger_balance_full_check heartbeat with what drifts, and when the accounts '
  'agree moves the incremental check''s checkpoint to ledger_checkpoint_lag_minutes ago.';
revoke all on procedure reserve.ledger_balance_full_check() from public;
grant execute on procedure reserve.ledger_balance_full_check() to service_role;
