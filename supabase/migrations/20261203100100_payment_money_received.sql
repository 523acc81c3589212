-- The provider's money is the truth about money: a payment keeps what the provider says it received
-- (amount and currency, which may differ from what we asked for), its fee and the PIX endToEndId that
-- identifies it in refund events. Refunds are bounded by the money received, not by our price. A refund
-- request carries its currency (that of the money received) and the state of its confirmation lookups;
-- a webhook event keeps what to ask the provider again when it carried no status.

alter table reserve.payments
  add column received_amount   bigint check (received_amount between 0 and 9007199254740991),
  add column received_currency text check (received_currency ~ '^[A-Z]{3}$'),
  add column fee_amount        bigint check (fee_amount between 0 and 9007199254740991),
  add column pix_end_to_end_id text check (length(pix_end_to_end_id) between 1 and 64),
  add constraint payments_received_check check ((received_amount is null) = (received_currency is null));
comment on column reserve.payments.received_amount is
  'The money the provider says it received for this payment, in received_currency minor units (Stripe '
  'amount_received, MercadoPago transaction_details.total_paid_amount, OpenPIX pix value). Null before '
  'the money arrived, and for payments succeeded before this column existed: then it is amount. When it '
  'differs from amount or currency, the stay is not sold (refund_reason amount_mismatch) and the money '
  'received is owed back.';
comment on column reserve.payments.received_currency is 'The currency of received_amount (ISO 4217, upper case).';
comment on column reserve.payments.fee_amount is
  'The provider''s fee for this payment when it says it (MercadoPago fee_details, OpenPIX charge.fee), minor units.';
comment on column reserve.payments.pix_end_to_end_id is
  'The PIX endToEndId of the money received: what OpenPIX''s refund events name the payment by.';
create index payments_pix_end_to_end_idx on reserve.payments (pix_end_to_end_id) where pix_end_to_end_id is not null;

-- what can be refunded is what was received
alter table reserve.payments
  drop constraint payments_refunded_amount_check,
  drop constraint payments_refunded_in_full_check,
  drop constraint payments_partially_refunded_check,
  add constraint payments_refunded_amount_check check (refunded_amount between 0 and coalesce(received_amount, amount)),
  add constraint payments_refunded_in_full_check check (status <> 'refunded' or refunded_amount = coalesce(received_amount, amount)),
  add constraint payments_partially_refunded_check check (status <> 'partially_refunded' or refunded_amount < coalesce(received_amount, amount));

create or replace function reserve.check_payment_transition() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.status is distinct from old.status and not exists (
      select 1 from reserve.payment_status_transitions t
      where t.from_status = old.status and t.to_status = new.status) then
    raise exception using
      errcode = 'RC202',
      message = format('payment %s cannot go from %s to %s', old.id, old.status, new.status),
      hint = 'legal moves are listed in reserve.payment_status_transitions';
  end if;
  -- the runbook's manual UPDATEs name only the status; the timestamps follow it
  if new.status = 'succeeded' and new.succeeded_at is null then
    new.succeeded_at := now();
  elsif new.status = 'failed' and new.failed_at is null then
    new.failed_at := now();
  elsif new.status = 'refunded' and new.refunded_amount = 0 then
    new.refunded_amount := coalesce(new.received_amount, new.amount);
  end if;
  if new.refunded_amount > old.refunded_amount and new.refunded_at is null then
    new.refunded_at := now();
  end if;
  return new;
end
$$;

alter table reserve.refund_requests
  add column currency              text not null default 'BRL' check (currency ~ '^[A-Z]{3}$'),
  add column provider_refund_e2e   text check (length(provider_refund_e2e) between 1 and 64),
  add column provider_refund_status text check (provider_refund_status in ('pending', 'succeeded', 'failed')),
  add column lookups               integer not null default 0 check (lookups >= 0),
  add column last_lookup_at        timestamptz;
comment on column reserve.refund_requests.currency is
  'The currency of amount: that of the money the payment received (received_currency, else its currency).';
comment on column reserve.refund_requests.provider_refund_e2e is
  'The PIX endToEndId of the money sent back, when the provider says it: what OpenPIX''s refund events name.';
comment on column reserve.refund_requests.lookups is
  'How many times a sent refund was looked up at the provider (poll_payment_status, with backoff) while '
  'no confirmation arrived; last_lookup_at and provider_refund_status say when and what it answered.';
update reserve.refund_requests rr set currency = coalesce(p.received_currency, p.currency)
from reserve.payments p where p.id = rr.payment_id and rr.currency <> coalesce(p.received_currency, p.currency);
create index refund_requests_sent_idx on reserve.refund_requests (next_attempt_at) where status = 'sent';
create index refund_requests_e2e_idx on reserve.refund_requests (provider_refund_e2e) where provider_refund_e2e is not null;

alter table reserve.processed_webhooks
  add column lookup jsonb check (lookup is null or jsonb_typeof(lookup) = 'object');
comment on column reserve.processed_webhooks.lookup is
  'What the provider must be asked (by the provider''s own module) to learn this event''s status, when the '
  'event carries none (a MercadoPago notification, an OpenPIX refund event): kept so the poller can ask '
  'again after a failed lookup.';
-- events already failed on a lookup, recorded before lookup existed: what their payload names
update reserve.processed_webhooks w
set lookup = case w.provider
               when 'mercadopago' then jsonb_build_object('gateway_payment_id', w.payload -> 'data' ->> 'id')
               else jsonb_build_object('gateway_payment_id', coalesce(w.payload -> 'charge' ->> 'correlationID',
                                                                      w.payload -> 'originalTransaction' -> 'charge' ->> 'correlationID',
                                                                      w.payload -> 'originalTransaction' ->> 'correlationID'))
             end
where w.status = 'failed' and w.apply_args is null and w.lookup is null and w.provider in ('mercadopago', 'openpix');

insert into reserve.settings (key, value, description) values
  ('refund_stuck_hours', '3', 'A refund request not confirmed by the provider this many hours after it was asked for is stuck (the refunds_stuck alert).');
