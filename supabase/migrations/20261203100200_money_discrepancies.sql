-- Where the provider's money and ours disagree, one row each: a success for another amount or currency
-- than we asked for, a provider payment that names ours but not our price, a refund or dispute larger
-- than the money received. Each row is a P1 alert (money_mismatch) until an operator resolves it; the
-- path that found it (webhook, poll, replay, recovery, checkout, refund lookup) never applied it.

insert into reserve.error_codes (sqlstate, name, http_status, description) values
  ('RC213', 'money_discrepancy_not_found', 404, 'No such money_discrepancies row.');

create table reserve.money_discrepancies (
  id                 uuid primary key default gen_random_uuid(),
  payment_id         uuid not null references reserve.payments (id),
  provider           text not null,
  gateway_payment_id text,
  kind               text not null check (kind in ('amount_mismatch', 'attach_mismatch', 'refund_exceeds_received',
                                                   'dispute_exceeds_received', 'currency_mismatch')),
  source             text not null check (source in ('webhook', 'poll', 'replay', 'recovery', 'checkout', 'refund_lookup', 'api')),
  expected_amount    bigint,
  expected_currency  text,
  provider_amount    bigint,
  provider_currency  text,
  -- the event goes with the inbox's retention; what it said stays here
  webhook_id         uuid references reserve.processed_webhooks (id) on delete set null,
  details            text not null,
  provider_object    jsonb,
  -- the same disagreement reported again (a redelivery, the next poll) is the same row
  fingerprint        text not null unique,
  detected_at        timestamptz not null default now(),
  resolved_at        timestamptz,
  resolved_by        text,
  resolution         text,
  constraint money_discrepancies_resolved_check check ((resolved_at is null) = (resolved_by is null))
);
comment on table reserve.money_discrepancies is
  'Each disagreement between the provider''s money and ours (kind amount_mismatch: a success for another '
  'amount or currency, booked as owed back and refunded; attach_mismatch: a provider payment naming ours '
  'for another amount, currency or reference, never attached; refund_exceeds_received, '
  'dispute_exceeds_received, currency_mismatch: refused, never booked). Open rows fire the P1 '
  'money_mismatch alert; resolve_money_discrepancy closes one.';
create index money_discrepancies_open_idx on reserve.money_discrepancies (detected_at) where resolved_at is null;
create index money_discrepancies_payment_idx on reserve.money_discrepancies (payment_id);
create index money_discrepancies_webhook_idx on reserve.money_discrepancies (webhook_id) where webhook_id is not null;
create trigger _900_audit after insert or update or delete on reserve.money_discrepancies
  for each row execute function reserve.audit_row_change();
alter table reserve.money_discrepancies enable row level security;
revoke all on reserve.money_discrepancies from public, anon, authenticated;
grant select on reserve.money_discrepancies to service_role;

create function reserve.record_money_discrepancy(
  p_payment reserve.payments, p_kind text, p_source text, p_update reserve.provider_update, p_details text,
  p_expected_amount bigint, p_expected_currency text, p_provider_amount bigint, p_provider_currency text,
  p_webhook_id uuid default null)
returns reserve.money_discrepancies
language plpgsql
security definer
set search_path = ''
as $$
declare
  d reserve.money_discrepancies;
  fp text := md5(jsonb_build_array(p_payment.id, p_kind, coalesce(p_update.gateway_payment_id, p_payment.gateway_payment_id),
                                   p_provider_amount, p_provider_currency, p_update.status, p_update.refunded_amount,
                                   p_update.dispute_amount)::text);
begin
  insert into reserve.money_discrepancies (payment_id, provider, gateway_payment_id, kind, source, expected_amount,
                                           expected_currency, provider_amount, provider_currency, webhook_id, details,
                                           provider_object, fingerprint)
  values (p_payment.id, p_payment.provider, coalesce(p_update.gateway_payment_id, p_payment.gateway_payment_id), p_kind,
          p_source, p_expected_amount, p_expected_currency, p_provider_amount, p_provider_currency, p_webhook_id,
          p_details, p_update.provider_object, fp)
  on conflict (fingerprint) do nothing
  returning * into d;
  if d.id is null then
    select * into d from reserve.money_discrepancies x where x.fingerprint = fp;
  end if;
  return d;
end
$$;
comment on function reserve.record_money_discrepancy(reserve.payments, text, text, reserve.provider_update, text, bigint, text, bigint, text, uuid) is
  'Records (once per distinct disagreement) where the provider''s money differs from ours. Internal.';
revoke all on function reserve.record_money_discrepancy(reserve.payments, text, text, reserve.provider_update, text, bigint, text, bigint, text, uuid) from public;

create function reserve.resolve_money_discrepancy(p_discrepancy_id uuid, p_reason text)
returns reserve.money_discrepancies
language plpgsql
security definer
set search_path = ''
as $$
declare
  who text := reserve.require_operator('resolve_money_discrepancy', p_reason);
  d reserve.money_discrepancies;
begin
  select * into d from reserve.money_discrepancies x where x.id = p_discrepancy_id for update;
  if not found then
    raise exception using errcode = 'RC213', message = format('money discrepancy %s not found', p_discrepancy_id);
  end if;
  if d.resolved_at is null then
    update reserve.money_discrepancies x set resolved_at = now(), resolved_by = who, resolution = p_reason
    where x.id = d.id
    returning * into d;
  end if;
  return d;
end
$$;
comment on function reserve.resolve_money_discrepancy(uuid, text) is
  'Closes a money discrepancy an operator has dealt with (the refund confirmed, the provider''s support '
  'answered), with who and why; it leaves the money_mismatch alert. Idempotent; RC213 unknown id, RC501 '
  'without operator and reason.';
revoke all on function reserve.resolve_money_discrepancy(uuid, text) from public;
grant execute on function reserve.resolve_money_discrepancy(uuid, text) to service_role;

create view reserve.open_money_discrepancies with (security_invoker = true) as
select d.id as discrepancy_id, d.kind, d.source, d.payment_id, d.provider, d.gateway_payment_id,
       d.expected_amount, d.expected_currency, d.provider_amount, d.provider_currency, d.details, d.detected_at,
       p.status as payment_status, p.refund_reason, p.received_amount, p.received_currency, p.refunded_amount,
       (select rr.status from reserve.refund_requests rr where rr.payment_id = d.payment_id
        order by rr.created_at desc limit 1) as refund_status,
       d.webhook_id, now() - d.detected_at as age
from reserve.money_discrepancies d
join reserve.payments p on p.id = d.payment_id
where d.resolved_at is null
order by d.detected_at;
comment on view reserve.open_money_discrepancies is
  'Money discrepancies not yet resolved, oldest first, with the payment''s state and its latest refund '
  'request: the P1 money_mismatch runbook starts here.';
revoke all on reserve.open_money_discrepancies from public, anon, authenticated;
grant select on reserve.open_money_discrepancies to service_role;
