-- Every webhook delivery we accepted, one row per provider event: the dedupe key and the inbox.

create table reserve.processed_webhooks (
  id                 uuid primary key default gen_random_uuid(),
  provider           text not null check (provider in ('stripe', 'mercadopago', 'openpix')),
  event_id           text not null check (length(event_id) between 1 and 255),
  event_type         text not null check (length(event_type) between 1 and 255),
  status             text not null default 'processing'
                     check (status in ('processing', 'completed', 'failed', 'ignored', 'dead')),
  attempts           integer not null default 1 check (attempts >= 1),
  payment_id         uuid references reserve.payments (id),
  gateway_payment_id text,
  -- the provider's own time for the event (Stripe's created, ...), which orders late deliveries
  event_created_at   timestamptz,
  payload            jsonb,
  error_message      text,
  received_at        timestamptz not null default now(),
  -- the latest delivery or retry; received_at is the first
  last_attempt_at    timestamptz not null default now(),
  processed_at       timestamptz,
  unique (provider, event_id)
);
comment on table reserve.processed_webhooks is
  'One row per provider event (provider, event_id): processing, then completed, failed (with '
  'error_message), ignored (a type we do not act on) or dead (gave up). payload is the raw event as evidence.';
create index processed_webhooks_received_idx on reserve.processed_webhooks (received_at);
create index processed_webhooks_status_idx on reserve.processed_webhooks (status, received_at)
  where status in ('processing', 'failed', 'dead');
create index processed_webhooks_payment_idx on reserve.processed_webhooks (payment_id);

alter table reserve.processed_webhooks enable row level security;
revoke all on reserve.processed_webhooks from public, anon, authenticated;
grant select on reserve.processed_webhooks to service_role;
