-- Provider fees and payouts in the ledger, so that receivable_<provider> is what the provider still
-- holds for us:
--   * a payment's fee, from the provider's own figure (Stripe's balance transaction fee, MercadoPago's
--     fee_details, OpenPIX's charge fee), is one provider_fee transaction (key fee:<payment id>): debit
--     provider_fees, credit the receivable. It is posted when payments.fee_amount is first known for money
--     that arrived (the poll, a webhook lookup, or reconciliation), and never twice;
--   * a provider payout (reserve.provider_payouts, unique per provider id) moves the receivable to
--     bank_<currency> when the provider says it is paid, and is reversed when a paid payout fails.

insert into reserve.error_codes (sqlstate, name, http_status, description) values
  ('RC801', 'provider_payout_invalid', '400', 'A provider payout without its id, a positive amount, a currency or a known status.'),
  ('RC802', 'reconciliation_run_not_found', '404', 'No such reconciliation run.'),
  ('RC803', 'reconciliation_run_finished', '409', 'The reconciliation run is already done or failed: start another for the window.'),
  ('RC804', 'reconciliation_item_not_found', '404', 'No such reconciliation item.');

alter table reserve.ledger_transactions drop constraint ledger_transactions_kind_check;
alter table reserve.ledger_transactions add constraint ledger_transactions_kind_check
  check (kind in ('payment', 'duplicate_charge', 'refund', 'reversal', 'correction', 'payout', 'chargeback',
                  'provider_fee', 'provider_payout'));

insert into reserve.ledger_accounts (code, name, kind, normal_balance, description, balance_buckets) values
  ('bank_brl', 'Bank account (BRL)', 'asset', 'debit', 'Money the providers paid out to our bank account, in reais.', 8);

-- post_ledger_transaction learns the two kinds; its body is otherwise the one of ledger_account_balances.
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

-- ---------------------------------------------------------------- fees

create function reserve.post_provider_fee(p_payment_id uuid, p_fee bigint, p_currency text default null)
returns reserve.ledger_transactions
language plpgsql
security definer
set search_path = ''
as $$
declare
  p reserve.payments;
  tx reserve.ledger_transactions;
  currency text;
  city text;
begin
  if p_payment_id is null or p_fee is null or p_fee <= 0 then
    raise exception using errcode = 'RC001',
      message = format('payment %s: a provider fee above 0 is required, got %s', coalesce(p_payment_id::text, 'null'), coalesce(p_fee::text, 'null'));
  end if;
  select * into p from reserve.payments where id = p_payment_id;
  if not found then
    raise exception using errcode = 'RC201', message = format('payment %s does not exist', p_payment_id);
  end if;
  if p.received_amount is null and p.succeeded_at is null then
    raise exception using errcode = 'RC205',
      message = format('payment %s: no money arrived (status %s), so no provider fee is owed on it', p.id, p.status);
  end if;
  -- the provider's first figure is the one booked: a second, different one is reconciliation's to report
  select * into tx from reserve.ledger_transactions where idempotency_key = 'fee:' || p.id;
  if found then
    return tx;
  end if;
  currency := coalesce(p_currency, p.received_currency, p.currency);
  select bi.city_code into city from reserve.booking_intents bi where bi.id = p.booking_intent_id;
  return reserve.post_ledger_transaction('provider_fee',
    format('%s fee of payment %s: %s %s', p.provider, p.id, p_fee, currency),
    jsonb_build_array(reserve.ledger_leg('provider_fees', 'debit', p_fee, 'provider_fee', currency),
                      reserve.ledger_leg(reserve.receivable_account(p.provider), 'credit', p_fee, 'provider_fee', currency)),
    'fee:' || p.id, p.id, null, city);
end
$$;
comment on function reserve.post_provider_fee(uuid, bigint, text) is
  'Posts the provider''s fee of a payment whose money arrived (key fee:<payment id>): debit provider_fees, '
  'credit receivable_<provider>, in the currency received unless given. The first figure is booked, a repeat '
  'returns it. RC001 for a fee not above 0, RC201 for no payment, RC205 when no money arrived.';
revoke all on function reserve.post_provider_fee(uuid, bigint, text) from public;
grant execute on function reserve.post_provider_fee(uuid, bigint, text) to service_role;

-- apply_payment_status records the fee the provider's object carries (payments.fee_amount); the fee is
-- booked when it is first known for money that arrived, whichever update brings it.
create function reserve.post_payment_fee() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform reserve.post_provider_fee(new.id, new.fee_amount, new.received_currency);
  return null;
end
$$;
comment on function reserve.post_payment_fee() is
  'AFTER UPDATE trigger on payments: the provider fee (fee_amount) of money that arrived is posted once (post_provider_fee).';
revoke all on function reserve.post_payment_fee() from public;

create trigger _300_post_fee after update of fee_amount, received_amount on reserve.payments
  for each row
  when (new.fee_amount > 0 and new.received_amount is not null
        and (old.fee_amount is distinct from new.fee_amount or old.received_amount is null))
  execute function reserve.post_payment_fee();

-- ---------------------------------------------------------------- payouts

create table reserve.provider_payouts (
  id                 uuid primary key default gen_random_uuid(),
  provider           text not null check (provider in ('stripe', 'mercadopago', 'openpix')),
  provider_payout_id text not null check (length(provider_payout_id) between 1 and 255),
  amount             bigint not null check (amount > 0 and amount <= 9007199254740991),
  currency           text not null check (currency ~ '^[A-Z]{3}$'),
  status             text not null check (status in ('pending', 'in_transit', 'paid', 'failed', 'canceled')),
  provider_created_at timestamptz,
  arrival_at         timestamptz,
  provider_object    jsonb,
  paid_transaction_id uuid references reserve.ledger_transactions (id),
  reversal_transaction_id uuid references reserve.ledger_transactions (id),
  first_seen_at      timestamptz not null default now(),
  updated_at         timestamptz not null default now(),
  unique (provider, provider_payout_id)
);
create index provider_payouts_in_flight_idx on reserve.provider_payouts (provider, currency) where status in ('pending', 'in_transit');
alter table reserve.provider_payouts enable row level security;
revoke all on reserve.provider_payouts from public, anon, authenticated;
grant select on reserve.provider_payouts to service_role;
comment on table reserve.provider_payouts is
  'Payouts the providers made (or are making) from our balance there to our bank: one row per provider payout. '
  'paid posts receivable_<provider> -> bank_<currency> (paid_transaction_id); a paid payout that fails is reversed.';

create type reserve.provider_payout as (
  payout_id   text,
  amount      bigint,
  currency    text,
  status      text,
  created_at  timestamptz,
  arrival_at  timestamptz,
  provider_object jsonb
);
comment on type reserve.provider_payout is
  'What a provider says about one payout: its id, amount (minor units), currency, status (pending | in_transit '
  '| paid | failed | canceled), when it was made and when it arrives, and the provider''s object.';

create function reserve.check_provider_payout(o reserve.provider_payout)
returns reserve.provider_payout
language plpgsql
immutable
set search_path = ''
as $$
begin
  if o is null or coalesce(o.payout_id, '') = '' or length(o.payout_id) > 255 or o.amount is null or o.amount <= 0
     or o.amount > 9007199254740991 or o.currency is null or o.currency !~ '^[A-Z]{3}$'
     or o.status is null or o.status not in ('pending', 'in_transit', 'paid', 'failed', 'canceled') then
    raise exception using errcode = 'RC801',
      message = format('provider payout %s: needs an id, an amount above 0, an ISO currency and a status of pending, in_transit, paid, failed or canceled',
                       coalesce(o.payout_id, '(no id)'));
  end if;
  return o;
end
$$;
comment on function reserve.check_provider_payout(reserve.provider_payout) is
  'The payout unchanged, or RC801 when it lacks an id, an amount above 0, an ISO currency or a known status.';
revoke all on function reserve.check_provider_payout(reserve.provider_payout) from public;

create function reserve.as_provider_payout(p jsonb)
returns reserve.provider_payout
language plpgsql
stable
strict
set search_path = ''
as $$
begin
  perform reserve.json_record_keys_check(p, 'provider payout',
    array['payout_id', 'amount', 'currency', 'status', 'created_at', 'arrival_at', 'provider_object'],
    array['string', 'integer', 'string', 'string', 'timestamptz', 'timestamptz', 'object']);
  return reserve.check_provider_payout(jsonb_populate_record(null::reserve.provider_payout, p));
end
$$;
comment on function reserve.as_provider_payout(jsonb) is
  'A provider_payout from JSON ({"payout_id": "po_...", "amount": 90000, "currency": "BRL", "status": "paid"}); RC001 for an unknown key or type, RC801 for a payout without what it needs.';
revoke all on function reserve.as_provider_payout(jsonb) from public;
grant execute on function reserve.as_provider_payout(jsonb) to service_role;

create function reserve.bank_account(p_currency text) returns text
language plpgsql
security definer
set search_path = ''
as $$
declare
  code text := 'bank_' || lower(p_currency);
begin
  insert into reserve.ledger_accounts (code, name, kind, normal_balance, description, balance_buckets)
  values (code, format('Bank account (%s)', p_currency), 'asset', 'debit',
          format('Money the providers paid out to our bank account, in %s.', p_currency), 8)
  on conflict do nothing;
  return code;
end
$$;
comment on function reserve.bank_account(text) is 'The ledger account of our bank money in a currency (bank_<currency>), made when first needed.';
revoke all on function reserve.bank_account(text) from public;

create function reserve.record_provider_payout(p_provider text, p_payout reserve.provider_payout)
returns reserve.provider_payouts
language plpgsql
security definer
set search_path = ''
as $$
declare
  o reserve.provider_payout;
  x reserve.provider_payouts;
  bank text;
  tx reserve.ledger_transactions;
begin
  if p_provider is null or p_provider not in ('stripe', 'mercadopago', 'openpix') then
    raise exception using errcode = 'RC001', message = format('provider %s is unknown', coalesce(p_provider, 'null'));
  end if;
  o := reserve.check_provider_payout(p_payout);
  insert into reserve.provider_payouts as y (provider, provider_payout_id, amount, currency, status, provider_created_at,
                                             arrival_at, provider_object)
  values (p_provider, o.payout_id, o.amount, o.currency, o.status, o.created_at, o.arrival_at, o.provider_object)
  on conflict (provider, provider_payout_id) do update
    set status = excluded.status, arrival_at = coalesce(excluded.arrival_at, y.arrival_at),
        provider_object = coalesce(excluded.provider_object, y.provider_object), updated_at = now()
    where (y.status, y.arrival_at, y.provider_object) is distinct from
          (excluded.status, coalesce(excluded.arrival_at, y.arrival_at), coalesce(excluded.provider_object, y.provider_object))
  returning * into x;
  -- the row as it is, locked, whether this call changed it or not
  select * into x from reserve.provider_payouts where provider = p_provider and provider_payout_id = o.payout_id for update;
  if (x.amount, x.currency) is distinct from (o.amount, o.currency) then
    raise exception using errcode = 'RC801',
      message = format('%s payout %s was %s %s, now said to be %s %s: a payout''s amount never changes',
                       p_provider, o.payout_id, x.amount, x.currency, o.amount, o.currency);
  end if;
  bank := reserve.bank_account(x.currency);
  if x.status = 'paid' and x.paid_transaction_id is null then
    tx := reserve.post_ledger_transaction('provider_payout',
      format('%s payout %s to the bank: %s %s', p_provider, x.provider_payout_id, x.amount, x.currency),
      jsonb_build_array(reserve.ledger_leg(bank, 'debit', x.amount, 'payout', x.currency),
                        reserve.ledger_leg(reserve.receivable_account(p_provider), 'credit', x.amount, 'payout', x.currency)),
      format('payout:%s:%s', p_provider, x.provider_payout_id));
    update reserve.provider_payouts set paid_transaction_id = tx.id where id = x.id returning * into x;
  elsif x.status in ('failed', 'canceled') and x.paid_transaction_id is not null and x.reversal_transaction_id is null then
    -- a payout can fail after it was reported paid: the money comes back to our balance at the provider
    tx := reserve.post_ledger_transaction('reversal',
      format('%s payout %s %s: %s %s back at the provider', p_provider, x.provider_payout_id, x.status, x.amount, x.currency),
      jsonb_build_array(reserve.ledger_leg(reserve.receivable_account(p_provider), 'debit', x.amount, 'reversal', x.currency),
                        reserve.ledger_leg(bank, 'credit', x.amount, 'reversal', x.currency)),
      format('payout_reversal:%s:%s', p_provider, x.provider_payout_id), null, null, null, x.paid_transaction_id);
    update reserve.provider_payouts set reversal_transaction_id = tx.id where id = x.id returning * into x;
  end if;
  return x;
end
$$;
comment on function reserve.record_provider_payout(text, reserve.provider_payout) is
  'Records what a provider says about a payout (idempotent per provider payout id): paid posts '
  'receivable_<provider> -> bank_<currency> once; failed or canceled after paid posts the reversal once. '
  'RC801 for a payout without id, amount, currency or status, or whose amount changed.';
revoke all on function reserve.record_provider_payout(text, reserve.provider_payout) from public;
grant execute on function reserve.record_provider_payout(text, reserve.provider_payout) to service_role;
