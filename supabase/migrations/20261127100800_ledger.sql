-- Double-entry ledger: a chart of accounts, transactions (headers) and their entries (legs).
-- Amounts are centavos. Balance checks and the posting function come with the booking core.

create table reserve.ledger_accounts (
  code           text primary key check (code ~ '^[a-z][a-z0-9_]*$'),
  name           text not null,
  kind           text not null check (kind in ('asset', 'liability', 'revenue', 'expense', 'equity')),
  normal_balance text not null check (normal_balance in ('debit', 'credit')),
  description    text,
  created_at     timestamptz not null default now()
);
comment on table reserve.ledger_accounts is 'Chart of accounts of the marketplace ledger.';

insert into reserve.ledger_accounts (code, name, kind, normal_balance, description) values
  ('receivable_stripe', 'Guest payments receivable at Stripe', 'asset', 'debit',
   'Captured at Stripe, not yet paid out to us.'),
  ('receivable_mercadopago', 'Guest payments receivable at MercadoPago', 'asset', 'debit',
   'PIX received at MercadoPago, not yet withdrawn.'),
  ('receivable_openpix', 'Guest payments receivable at OpenPIX', 'asset', 'debit',
   'PIX received at OpenPIX, not yet withdrawn.'),
  ('host_payable', 'Owed to hosts', 'liability', 'credit',
   'The host''s share of paid stays, until paid out.'),
  ('commission_revenue', 'Platform commission', 'revenue', 'credit',
   'Our commission on each paid stay.'),
  ('provider_fees', 'Payment provider fees', 'expense', 'debit',
   'Fees charged by Stripe, MercadoPago and OpenPIX.'),
  ('refunds_payable', 'Refunds owed to guests', 'liability', 'credit',
   'Refunds decided but not yet settled by the provider.'),
  ('corrections', 'Ledger corrections', 'equity', 'credit',
   'Counterpart of approved manual corrections (4-eyes).');

create table reserve.ledger_transactions (
  id              uuid primary key default gen_random_uuid(),
  kind            text not null check (kind in (
                    'payment', 'duplicate_charge', 'refund', 'reversal', 'correction', 'payout', 'chargeback')),
  description     text not null check (length(btrim(description)) > 0),
  payment_id      uuid references reserve.payments (id),
  reservation_id  uuid references reserve.reservations (id),
  city_code       text references reserve.cities (code),
  -- a reversal names the transaction it undoes, and nothing is undone twice
  reverses        uuid unique references reserve.ledger_transactions (id),
  idempotency_key text unique check (length(idempotency_key) between 1 and 255),
  created_by      text not null default current_user,
  posted_at       timestamptz not null default now(),
  constraint ledger_transactions_reverses_check check (reverses is distinct from id)
);
comment on table reserve.ledger_transactions is
  'A ledger transaction: one business event (a payment, a refund, a correction) whose entries balance.';
create index ledger_transactions_payment_idx on reserve.ledger_transactions (payment_id);
create index ledger_transactions_reservation_idx on reserve.ledger_transactions (reservation_id);
create index ledger_transactions_posted_idx on reserve.ledger_transactions (posted_at);

create table reserve.ledger_entries (
  id             uuid primary key default gen_random_uuid(),
  transaction_id uuid not null references reserve.ledger_transactions (id),
  entry_type     text not null check (entry_type in (
                   'guest_payment', 'host_share', 'commission', 'provider_fee', 'refund',
                   'chargeback', 'payout', 'reversal', 'correction')),
  account        text not null references reserve.ledger_accounts (code),
  direction      text not null check (direction in ('debit', 'credit')),
  amount         bigint not null check (amount > 0),
  currency       text not null default 'BRL' check (currency ~ '^[A-Z]{3}$'),
  description    text,
  city_code      text references reserve.cities (code),
  created_at     timestamptz not null default now()
);
comment on table reserve.ledger_entries is
  'The legs of ledger transactions: account, direction (debit or credit) and a positive amount in '
  'centavos. In every transaction debits equal credits.';
create index ledger_entries_transaction_idx on reserve.ledger_entries (transaction_id);
create index ledger_entries_created_idx on reserve.ledger_entries (created_at);
create index ledger_entries_account_idx on reserve.ledger_entries (account, created_at);

create trigger _900_audit after insert or update or delete on reserve.ledger_transactions
  for each row execute function reserve.audit_row_change();
create trigger _900_audit after insert or update or delete on reserve.ledger_entries
  for each row execute function reserve.audit_row_change();

alter table reserve.ledger_accounts enable row level security;
alter table reserve.ledger_transactions enable row level security;
alter table reserve.ledger_entries enable row level security;
revoke all on reserve.ledger_accounts, reserve.ledger_transactions, reserve.ledger_entries
  from public, anon, authenticated;
grant select on reserve.ledger_accounts, reserve.ledger_transactions, reserve.ledger_entries to service_role;
