-- Payment attempts at Stripe (card, PIX), MercadoPago and OpenPIX (PIX).

create table reserve.payments (
  id                 uuid primary key default gen_random_uuid(),
  booking_intent_id  uuid not null references reserve.booking_intents (id),
  provider           text not null check (provider in ('stripe', 'mercadopago', 'openpix')),
  method             text not null check (method in ('card', 'pix')),
  status             text not null default 'pending' check (status in (
                       'pending', 'processing', 'succeeded', 'failed', 'cancelled', 'expired',
                       'refunded', 'partially_refunded', 'disputed')),
  amount             bigint not null check (amount > 0),
  currency           text not null default 'BRL' check (currency ~ '^[A-Z]{3}$'),
  attempt            integer not null default 1 check (attempt >= 1),
  idempotency_key    text not null unique check (length(idempotency_key) between 1 and 255),
  gateway_payment_id text check (length(gateway_payment_id) > 0),
  gateway_status     text,
  -- when status last changed: what "stuck for an hour" is measured from (updated_at moves on any write)
  status_changed_at  timestamptz not null default now(),
  error_code         text,
  error_message      text,
  expires_at         timestamptz,
  succeeded_at       timestamptz,
  failed_at          timestamptz,
  refunded_amount    bigint not null default 0,
  refunded_at        timestamptz,
  -- a second successful charge for an intent that was already paid points at the first
  duplicate_of       uuid references reserve.payments (id),
  -- provider's time of the last event applied, so older events never overwrite newer state
  last_event_at      timestamptz,
  provider_payload   jsonb,
  metadata           jsonb not null default '{}'::jsonb check (jsonb_typeof(metadata) = 'object'),
  created_at         timestamptz not null default now(),
  updated_at         timestamptz not null default now(),
  unique (booking_intent_id, attempt),
  unique (provider, gateway_payment_id),
  -- lets a reservation prove its payment paid for its own intent
  unique (id, booking_intent_id),
  constraint payments_method_provider_check check (method = 'pix' or provider = 'stripe'),
  constraint payments_pix_expiry_check check (method <> 'pix' or expires_at is not null),
  constraint payments_refunded_amount_check check (refunded_amount between 0 and amount),
  constraint payments_refund_status_check
    check (refunded_amount = 0 or status in ('refunded', 'partially_refunded', 'disputed')),
  constraint payments_succeeded_at_check check (status <> 'succeeded' or succeeded_at is not null),
  constraint payments_refunded_check
    check (status not in ('refunded', 'partially_refunded') or (refunded_at is not null and refunded_amount > 0)),
  constraint payments_refunded_in_full_check check (status <> 'refunded' or refunded_amount = amount),
  constraint payments_partially_refunded_check check (status <> 'partially_refunded' or refunded_amount < amount),
  constraint payments_duplicate_of_check check (duplicate_of is distinct from id)
);
comment on table reserve.payments is
  'One row per payment attempt of a booking intent: provider (stripe, mercadopago, openpix), method '
  '(card, pix), amount in centavos, the provider''s id and status, errors, and refunds.';
comment on column reserve.payments.amount is 'Amount charged in centavos.';
comment on column reserve.payments.provider_payload is 'Last raw object received from the provider (evidence).';

-- at most one attempt in flight per intent: a second would be a double charge waiting to happen
create unique index payments_one_active_per_intent on reserve.payments (booking_intent_id)
  where status in ('pending', 'processing');
create index payments_status_created_idx on reserve.payments (status, created_at);
create index payments_in_flight_idx on reserve.payments (status_changed_at) where status in ('pending', 'processing');
create index payments_succeeded_at_idx on reserve.payments (succeeded_at) where status = 'succeeded';
create index payments_duplicate_of_idx on reserve.payments (duplicate_of) where duplicate_of is not null;

create function reserve.touch_status_changed_at() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.status is distinct from old.status then
    new.status_changed_at := now();
  end if;
  return new;
end
$$;
comment on function reserve.touch_status_changed_at() is
  'BEFORE UPDATE trigger: stamps status_changed_at when status changes, whoever changes it.';
revoke all on function reserve.touch_status_changed_at() from public;

create trigger _100_touch_updated_at before update on reserve.payments
  for each row execute function reserve.touch_updated_at();
create trigger _110_touch_status_changed_at before update of status on reserve.payments
  for each row execute function reserve.touch_status_changed_at();
create trigger _900_audit after insert or update or delete on reserve.payments
  for each row execute function reserve.audit_row_change();

alter table reserve.payments enable row level security;
revoke all on reserve.payments from public, anon, authenticated;
grant select on reserve.payments to service_role;
