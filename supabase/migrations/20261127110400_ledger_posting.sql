-- The ledger's rules: post_ledger_transaction is the only write path, entries are append-only, and
-- trg_ledger_balance refuses to commit a transaction whose debits differ from its credits.
-- find_ledger_imbalances and ledger_balance_check catch what slipped past a disabled trigger.

alter table reserve.ledger_transactions add column request_hash text;
comment on column reserve.ledger_transactions.request_hash is
  'md5 of the posting''s arguments: a retry with the same idempotency_key must carry the same request.';

create function reserve.ledger_append_only() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  raise exception using
    errcode = 'RC402',
    message = format('reserve.%s is append-only (%s refused): post a reversing or correcting transaction instead',
                     tg_table_name, tg_op),
    hint = 'see propose_ledger_correction';
end
$$;
comment on function reserve.ledger_append_only() is 'BEFORE UPDATE/DELETE/TRUNCATE trigger: the ledger is append-only.';
revoke all on function reserve.ledger_append_only() from public;

-- Our posting functions set reserve.ledger_writer for the duration of their INSERTs.
create function reserve.ledger_written_by_functions() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if coalesce(current_setting('reserve.ledger_writer', true), '') <> 'on' then
    raise exception using
      errcode = 'RC403',
      message = format('reserve.%s is written only by reserve.post_ledger_transaction and approved corrections', tg_table_name),
      hint = 'a manual correction goes through propose_ledger_correction and approve_ledger_correction (4-eyes)';
  end if;
  return null;
end
$$;
comment on function reserve.ledger_written_by_functions() is
  'BEFORE INSERT statement trigger: refuses ledger rows written outside our posting functions.';
revoke all on function reserve.ledger_written_by_functions() from public;

create trigger _010_append_only before update or delete or truncate on reserve.ledger_entries
  for each statement execute function reserve.ledger_append_only();
create trigger _010_append_only before update or delete or truncate on reserve.ledger_transactions
  for each statement execute function reserve.ledger_append_only();
create trigger _020_written_by_functions before insert on reserve.ledger_entries
  for each statement execute function reserve.ledger_written_by_functions();
create trigger _020_written_by_functions before insert on reserve.ledger_transactions
  for each statement execute function reserve.ledger_written_by_functions();

create function reserve.check_ledger_balance() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  bad record;
begin
  select e.currency,
         sum(e.amount) filter (where e.direction = 'debit') as debits,
         sum(e.amount) filter (where e.direction = 'credit') as credits
    into bad
  from reserve.ledger_entries e
  where e.transaction_id = new.transaction_id
  group by e.currency
  having coalesce(sum(e.amount) filter (where e.direction = 'debit'), 0)
      <> coalesce(sum(e.amount) filter (where e.direction = 'credit'), 0)
  limit 1;
  if found then
    raise exception using
      errcode = 'RC401',
      message = format('ledger transaction %s does not balance in %s: debits %s, credits %s',
                       new.transaction_id, bad.currency, coalesce(bad.debits, 0), coalesce(bad.credits, 0));
  end if;
  return null;
end
$$;
comment on function reserve.check_ledger_balance() is
  'Deferred constraint trigger (trg_ledger_balance): at commit, every transaction touched must balance per currency.';
revoke all on function reserve.check_ledger_balance() from public;

create constraint trigger trg_ledger_balance
  after insert on reserve.ledger_entries
  deferrable initially deferred
  for each row execute function reserve.check_ledger_balance();

-- Entries as JSON: [{"account", "direction", "amount", "entry_type"?, "description"?, "currency"?}].
create function reserve.parse_ledger_entries(p_entries jsonb, p_default_type text)
returns table (account text, direction text, amount bigint, entry_type text, currency text, description text)
language plpgsql
security definer
set search_path = ''
as $$
declare
  e jsonb;
  i integer := 0;
begin
  if p_entries is null or jsonb_typeof(p_entries) <> 'array' or jsonb_array_length(p_entries) < 1 then
    raise exception using errcode = 'RC001', message = 'entries must be a non-empty JSON array';
  end if;
  for e in select value from jsonb_array_elements(p_entries) loop
    i := i + 1;
    if jsonb_typeof(e) <> 'object' or jsonb_typeof(e -> 'amount') is distinct from 'number'
       or (e ->> 'amount')::numeric <> trunc((e ->> 'amount')::numeric) or (e ->> 'amount')::numeric <= 0
       or (e ->> 'amount')::numeric > 9007199254740991 then
      raise exception using errcode = 'RC001',
        message = format('entry %s: amount must be a positive whole number of centavos, got %s', i, coalesce(e ->> 'amount', 'null'));
    end if;
    if (e ->> 'direction') is null or (e ->> 'direction') not in ('debit', 'credit') then
      raise exception using errcode = 'RC001',
        message = format('entry %s: direction must be debit or credit, got %s', i, coalesce(e ->> 'direction', 'null'));
    end if;
    if not exists (select 1 from reserve.ledger_accounts a where a.code = e ->> 'account') then
      raise exception using errcode = 'RC404',
        message = format('entry %s: ledger account %s does not exist', i, coalesce(e ->> 'account', 'null'));
    end if;
    account := e ->> 'account';
    direction := e ->> 'direction';
    amount := (e ->> 'amount')::bigint;
    entry_type := coalesce(e ->> 'entry_type', p_default_type);
    currency := coalesce(e ->> 'currency', 'BRL');
    if entry_type not in ('guest_payment', 'host_share', 'commission', 'provider_fee', 'refund',
                          'chargeback', 'payout', 'reversal', 'correction') then
      raise exception using errcode = 'RC001', message = format('entry %s: entry_type %s is unknown', i, entry_type);
    end if;
    if currency !~ '^[A-Z]{3}$' then
      raise exception using errcode = 'RC001', message = format('entry %s: currency %s is not an ISO code like BRL', i, currency);
    end if;
    description := e ->> 'description';
    return next;
  end loop;
end
$$;
comment on function reserve.parse_ledger_entries(jsonb, text) is
  'Validates ledger legs given as JSON (RC001, RC404) and returns them as rows.';
revoke all on function reserve.parse_ledger_entries(jsonb, text) from public;

create function reserve.assert_balanced(p_entries jsonb, p_what text) returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  bad record;
begin
  select currency, sum(amount) filter (where direction = 'debit') as d, sum(amount) filter (where direction = 'credit') as c
    into bad
  from reserve.parse_ledger_entries(p_entries, 'correction')
  group by currency
  having coalesce(sum(amount) filter (where direction = 'debit'), 0) <> coalesce(sum(amount) filter (where direction = 'credit'), 0)
  limit 1;
  if found then
    raise exception using errcode = 'RC401',
      message = format('%s does not balance in %s: debits %s, credits %s', p_what, bad.currency, coalesce(bad.d, 0), coalesce(bad.c, 0));
  end if;
end
$$;
revoke all on function reserve.assert_balanced(jsonb, text) from public;
comment on function reserve.assert_balanced(jsonb, text) is 'Raises RC401 when JSON ledger legs do not balance per currency.';

create function reserve.post_ledger_transaction(
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

  if not found then
    perform set_config('reserve.ledger_writer', '', true);
    select * into tx from reserve.ledger_transactions where idempotency_key = p_idempotency_key;
    if tx.request_hash is distinct from hash then
      raise exception using errcode = 'RC405',
        message = format('idempotency key %s was already used for ledger transaction %s with other arguments',
                         p_idempotency_key, tx.id);
    end if;
    return tx;
  end if;

  insert into reserve.ledger_entries (transaction_id, entry_type, account, direction, amount, currency, description, city_code)
  select tx.id, e.entry_type, e.account, e.direction, e.amount, e.currency, e.description, p_city_code
  from reserve.parse_ledger_entries(p_entries, default_type) e;
  perform set_config('reserve.ledger_writer', '', true);
  return tx;
end
$$;
comment on function reserve.post_ledger_transaction(text, text, jsonb, text, uuid, uuid, text, uuid) is
  'The only way money enters the ledger: a header and its legs ([{account, direction, amount, entry_type?}] '
  'in centavos), balanced per currency (RC401), idempotent by key (same request returns the same '
  'transaction, a different one raises RC405). Corrections only through approve_ledger_correction.';
revoke all on function reserve.post_ledger_transaction(text, text, jsonb, text, uuid, uuid, text, uuid) from public;

create function reserve.find_ledger_imbalances(p_since date default current_date - 7)
returns table (transaction_id uuid, kind text, posted_at timestamptz, currency text,
               debits bigint, credits bigint, imbalance bigint, entry_count bigint)
language sql
stable
security definer
set search_path = ''
as $$
  with touched as (
    select t.id from reserve.ledger_transactions t where t.posted_at >= p_since
    union
    select e.transaction_id from reserve.ledger_entries e where e.created_at >= p_since
  )
  select t.id, t.kind, t.posted_at, e.currency,
         coalesce(sum(e.amount) filter (where e.direction = 'debit'), 0)::bigint,
         coalesce(sum(e.amount) filter (where e.direction = 'credit'), 0)::bigint,
         (coalesce(sum(e.amount) filter (where e.direction = 'debit'), 0)
          - coalesce(sum(e.amount) filter (where e.direction = 'credit'), 0))::bigint,
         count(*)
  from touched
  join reserve.ledger_transactions t on t.id = touched.id
  join reserve.ledger_entries e on e.transaction_id = t.id
  group by t.id, t.kind, t.posted_at, e.currency
  having coalesce(sum(e.amount) filter (where e.direction = 'debit'), 0)
      <> coalesce(sum(e.amount) filter (where e.direction = 'credit'), 0)
  order by t.posted_at, t.id
$$;
comment on function reserve.find_ledger_imbalances(date) is
  'Ledger transactions posted (or given entries) since p_since whose debits differ from credits: '
  'imbalance = debits - credits. Empty unless trg_ledger_balance was disabled or bypassed.';
revoke all on function reserve.find_ledger_imbalances(date) from public;
grant execute on function reserve.find_ledger_imbalances(date) to service_role;

create view reserve.ledger_balance_check with (security_invoker = true) as
with per_tx as (
  select t.id, (t.posted_at at time zone 'UTC')::date as day, e.currency,
         coalesce(sum(e.amount) filter (where e.direction = 'debit'), 0) as debits,
         coalesce(sum(e.amount) filter (where e.direction = 'credit'), 0) as credits,
         count(*) as entries
  from reserve.ledger_transactions t
  join reserve.ledger_entries e on e.transaction_id = t.id
  group by t.id, t.posted_at, e.currency
)
select day,
       currency,
       count(*) as transactions,
       sum(entries)::bigint as entries,
       sum(debits)::bigint as total_debits,
       sum(credits)::bigint as total_credits,
       (sum(debits) - sum(credits))::bigint as difference,
       count(*) filter (where debits <> credits) as imbalanced_transactions,
       case when count(*) filter (where debits <> credits) = 0 then 'OK' else 'IMBALANCED' end as status
from per_tx
group by day, currency
order by day desc, currency;
comment on view reserve.ledger_balance_check is
  'Per posting day (UTC) and currency: debits, credits and how many transactions do not balance; status OK or IMBALANCED.';
revoke all on reserve.ledger_balance_check from public, anon, authenticated;
grant select on reserve.ledger_balance_check to service_role;
