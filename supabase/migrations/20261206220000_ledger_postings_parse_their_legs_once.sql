-- A posting parsed its JSON legs twice (assert_balanced, then write_ledger_entries), each time in a
-- PL/pgSQL loop with a query per leg, and every receipt, whose legs our own functions build, went
-- through that validation of caller input too: 17 statements for a sale's receipt. Legs are parsed once
-- into reserve.ledger_line rows, checked for balance and written from those; a receipt hands its legs
-- over as rows without the JSON validation (the table's CHECKs and foreign keys still hold, and the
-- deferred balance trigger still runs at commit). What is written, and the request hash an idempotent
-- replay is compared by, are unchanged.

create type reserve.ledger_line as (
  account text,
  direction text,
  amount bigint,
  entry_type text,
  currency text,
  description text
);
comment on type reserve.ledger_line is 'One ledger leg as written (centavos, a direction, an entry type, a currency), before it has an id or a transaction.';

-- the legs and, in the same statement, the balances they move
create function reserve.write_ledger_lines(p_transaction reserve.ledger_transactions, p_lines reserve.ledger_line[],
                                           p_default_description text default null)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
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
$$;
comment on function reserve.write_ledger_lines(p_transaction reserve.ledger_transactions, p_lines reserve.ledger_line[], p_default_description text) is
  'Writes a transaction''s legs and, in the same statement, the balances they move: ledger_account_balances (one bucket per database transaction, whatever it posts) and ledger_host_days (host_payable of the transaction''s host). The only writer of entries; callers check balance and idempotency first. Internal.';

create or replace function reserve.write_ledger_entries(p_transaction reserve.ledger_transactions, p_entries jsonb,
                                                        p_default_type text, p_default_description text default null)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
begin
  return reserve.write_ledger_lines(
    p_transaction,
    array(select row(e.account, e.direction, e.amount, e.entry_type, e.currency, e.description)::reserve.ledger_line
          from reserve.parse_ledger_entries(p_entries, p_default_type) e),
    p_default_description);
end
$$;
comment on function reserve.write_ledger_entries(p_transaction reserve.ledger_transactions, p_entries jsonb, p_default_type text, p_default_description text) is
  'Writes a transaction''s legs given as JSON (validated by parse_ledger_entries) through write_ledger_lines. Callers check balance and idempotency first. Internal.';

-- the header, its idempotency and its legs, from legs already parsed (or built by our own functions)
create function reserve.post_ledger_lines(p_kind text, p_description text, p_entries jsonb, p_lines reserve.ledger_line[],
                                          p_idempotency_key text, p_payment_id uuid, p_reservation_id uuid,
                                          p_city_code text, p_reverses uuid)
returns reserve.ledger_transactions
language plpgsql
security definer
set search_path = ''
as $$
declare
  tx reserve.ledger_transactions;
  bad record;
  hash text;
begin
  select l.currency, sum(l.amount) filter (where l.direction = 'debit') as d,
         sum(l.amount) filter (where l.direction = 'credit') as c
    into bad
  from unnest(p_lines) l
  group by l.currency
  having coalesce(sum(l.amount) filter (where l.direction = 'debit'), 0)
      <> coalesce(sum(l.amount) filter (where l.direction = 'credit'), 0)
  limit 1;
  if found then
    raise exception using errcode = 'RC401',
      message = format('ledger transaction %s does not balance in %s: debits %s, credits %s',
                       coalesce(p_idempotency_key, '(no key)'), bad.currency, coalesce(bad.d, 0), coalesce(bad.c, 0));
  end if;

  -- over the legs as the caller gave them: a replay with the same key and other legs is refused
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

  perform reserve.write_ledger_lines(tx, p_lines);
  return tx;
end
$$;
comment on function reserve.post_ledger_lines(p_kind text, p_description text, p_entries jsonb, p_lines reserve.ledger_line[], p_idempotency_key text, p_payment_id uuid, p_reservation_id uuid, p_city_code text, p_reverses uuid) is
  'Posts a ledger transaction from its legs as rows (p_lines) and as the JSON its request hash is taken over (p_entries): RC401 unless balanced per currency, idempotent per key (RC405 for the key with other arguments). For post_ledger_transaction, which validates caller input first, and the receipts our functions build. Internal.';

create or replace function reserve.post_ledger_transaction(p_kind text, p_description text, p_entries jsonb,
                                                           p_idempotency_key text default null, p_payment_id uuid default null,
                                                           p_reservation_id uuid default null, p_city_code text default null,
                                                           p_reverses uuid default null)
returns reserve.ledger_transactions
language plpgsql
security definer
set search_path = ''
as $$
declare
  default_type text;
begin
  if p_kind is null or p_kind not in ('payment', 'duplicate_charge', 'refund', 'reversal', 'correction', 'payout', 'chargeback',
                                      'provider_fee', 'provider_payout') then
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
                              when 'chargeback' then 'chargeback' when 'provider_fee' then 'provider_fee'
                              when 'provider_payout' then 'payout' else p_kind end;
  return reserve.post_ledger_lines(
    p_kind, p_description, p_entries,
    array(select row(e.account, e.direction, e.amount, e.entry_type, e.currency, e.description)::reserve.ledger_line
          from reserve.parse_ledger_entries(p_entries, default_type) e),
    p_idempotency_key, p_payment_id, p_reservation_id, p_city_code, p_reverses);
end
$$;

create or replace function reserve.post_payment_receipt(p_payment_id uuid, p_fulfilled boolean, p_reservation_id uuid default null)
returns reserve.ledger_transactions
language plpgsql
security definer
set search_path = ''
as $$
declare
  p reserve.payments;
  city text;
  received bigint;
  currency text;
  legs jsonb;
begin
  select * into p from reserve.payments where id = p_payment_id;
  select bi.city_code into city from reserve.booking_intents bi where bi.id = p.booking_intent_id;
  received := coalesce(p.received_amount, p.amount);
  currency := coalesce(p.received_currency, p.currency);
  if p_fulfilled and (received, currency) is distinct from (p.amount, p.currency) then
    raise exception using errcode = 'RC203',
      message = format('payment %s received %s %s, not its price %s %s: a stay is never sold for money that did not arrive',
                       p.id, received, currency, p.amount, p.currency);
  end if;
  legs := jsonb_build_array(reserve.ledger_leg(reserve.receivable_account(p.provider), 'debit', received, 'guest_payment', currency))
          || case when p_fulfilled then reserve.earned_legs(p.amount, p.currency)
                  else jsonb_build_array(reserve.ledger_leg('refunds_payable', 'credit', received, 'refund', currency)) end;
  -- legs built here, not given by a caller: handed over as rows, without parse_ledger_entries' checks
  return reserve.post_ledger_lines(
    case when p.duplicate_of is not null then 'duplicate_charge' else 'payment' end,
    format('%s payment %s (%s)', p.provider, p.id,
           case when p_fulfilled then 'stay sold'
                when (received, currency) is distinct from (p.amount, p.currency)
                  then format('%s %s received for a price of %s %s: owed back', received, currency, p.amount, p.currency)
                else coalesce(p.refund_reason, 'to refund') end),
    legs, array(select jsonb_populate_record(null::reserve.ledger_line, e) from jsonb_array_elements(legs) e),
    'receipt:' || p.id, p.id, p_reservation_id, city, null);
end
$$;

revoke all on function reserve.write_ledger_lines(reserve.ledger_transactions, reserve.ledger_line[], text) from public, anon, authenticated;
revoke all on function reserve.post_ledger_lines(text, text, jsonb, reserve.ledger_line[], text, uuid, uuid, text, uuid) from public, anon, authenticated;
