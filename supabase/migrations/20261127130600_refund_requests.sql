-- Refunds we owe go to the provider through one queue: an operator (or a recovery function) requests
-- one, the poller sends it with an idempotency key of its own, and the provider's confirmation
-- (webhook or poll) raises payments.refunded_amount, which posts the ledger refund and marks the request
-- confirmed. Nobody has to run stripe.refunds.create by hand at 3 a.m.

create table reserve.refund_requests (
  id                 uuid primary key default gen_random_uuid(),
  payment_id         uuid not null references reserve.payments (id),
  amount             bigint not null check (amount > 0),
  reason             text not null check (reason ~ '^[a-z][a-z_]*$'),
  -- what asked for it (duplicate:<payment>, cancel:<reservation>, manual:<uuid>): asking twice is one refund
  request_key        text not null unique check (length(request_key) between 1 and 200),
  requested_by       text not null,
  note               text,
  status             text not null default 'requested'
                     check (status in ('requested', 'sending', 'sent', 'confirmed', 'failed')),
  attempts           integer not null default 0 check (attempts >= 0),
  next_attempt_at    timestamptz not null default now(),
  provider_refund_id text,
  error_message      text,
  created_at         timestamptz not null default now(),
  sent_at            timestamptz,
  confirmed_at       timestamptz,
  updated_at         timestamptz not null default now()
);
comment on table reserve.refund_requests is
  'Refunds owed to guests, sent to the provider by poll_payment_status with idempotency key '
  'refund:<id>: requested -> sending -> sent -> confirmed (the provider''s refund reached '
  'payments.refunded_amount), or failed with the provider''s error.';
create index refund_requests_due_idx on reserve.refund_requests (next_attempt_at) where status in ('requested', 'sending');
create index refund_requests_payment_idx on reserve.refund_requests (payment_id);

create trigger _100_touch_updated_at before update on reserve.refund_requests
  for each row execute function reserve.touch_updated_at();
create trigger _900_audit after insert or update or delete on reserve.refund_requests
  for each row execute function reserve.audit_row_change();
alter table reserve.refund_requests enable row level security;
revoke all on reserve.refund_requests from public, anon, authenticated;
grant select on reserve.refund_requests to service_role;

create function reserve.request_refund(p_payment_id uuid, p_amount bigint, p_reason text, p_request_key text, p_note text default null)
returns reserve.refund_requests
language plpgsql
security definer
set search_path = ''
as $$
declare
  p reserve.payments;
  rr reserve.refund_requests;
  open_amount bigint;
begin
  if p_payment_id is null or p_reason is null or p_request_key is null then
    raise exception using errcode = 'RC001', message = 'p_payment_id, p_reason and p_request_key are required';
  end if;
  p := reserve.lock_payment(p_payment_id);
  select * into rr from reserve.refund_requests x where x.request_key = p_request_key;
  if found then
    return rr;
  end if;
  if p.status not in ('succeeded', 'partially_refunded', 'disputed') then
    raise exception using errcode = 'RC208',
      message = format('payment %s is %s: only money we hold can be refunded', p.id, p.status);
  end if;
  select coalesce(sum(x.amount), 0) into open_amount from reserve.refund_requests x
  where x.payment_id = p.id and x.status in ('requested', 'sending', 'sent');
  if p_amount is null or p_amount <= 0 or p_amount > p.amount - p.refunded_amount - open_amount then
    raise exception using errcode = 'RC208',
      message = format('payment %s: a refund of %s exceeds what is left (%s paid, %s refunded, %s requested)',
                       p.id, coalesce(p_amount::text, 'null'), p.amount, p.refunded_amount, open_amount);
  end if;
  insert into reserve.refund_requests (payment_id, amount, reason, request_key, requested_by, note)
  values (p.id, p_amount, p_reason, p_request_key, reserve.current_actor(), p_note)
  returning * into rr;
  return rr;
end
$$;
comment on function reserve.request_refund(uuid, bigint, text, text, text) is
  'Queues a refund to the provider (sent by poll_payment_status). Idempotent by p_request_key; RC208 '
  'when the payment holds no money or the amount exceeds what is left after refunds and open requests.';
revoke all on function reserve.request_refund(uuid, bigint, text, text, text) from public;

create function reserve.claim_refund_requests(p_limit integer default 20, p_lease interval default interval '2 minutes')
returns table (refund_request_id uuid, payment_id uuid, provider text, method text, gateway_payment_id text,
               amount bigint, currency text, reason text, idempotency_key text, attempts integer)
language plpgsql
security definer
set search_path = ''
as $$
begin
  if p_limit is null or p_limit < 1 or p_limit > 1000 or p_lease is null or p_lease <= interval '0' then
    raise exception using errcode = 'RC001', message = 'p_limit between 1 and 1000 and a positive p_lease are required';
  end if;
  return query
    with due as (
      select x.id from reserve.refund_requests x
      where x.status in ('requested', 'sending') and x.next_attempt_at <= now()
      order by x.next_attempt_at
      limit p_limit
      for update skip locked
    ), claimed as (
      update reserve.refund_requests x
      set status = 'sending', attempts = x.attempts + 1, next_attempt_at = now() + p_lease
      from due where x.id = due.id
      returning x.*
    )
    select c.id, c.payment_id, p.provider, p.method, p.gateway_payment_id, c.amount, p.currency, c.reason,
           'refund:' || c.id, c.attempts
    from claimed c join reserve.payments p on p.id = c.payment_id;
end
$$;
comment on function reserve.claim_refund_requests(integer, interval) is
  'Refund requests due to be sent (SKIP LOCKED, leased): the poller sends each with its idempotency key '
  'and reports with record_refund_result.';
revoke all on function reserve.claim_refund_requests(integer, interval) from public;
grant execute on function reserve.claim_refund_requests(integer, interval) to service_role;

create function reserve.record_refund_result(p_refund_request_id uuid, p_outcome text, p_provider_refund_id text default null,
                                             p_error text default null)
returns reserve.refund_requests
language plpgsql
security definer
set search_path = ''
as $$
declare
  rr reserve.refund_requests;
begin
  if p_refund_request_id is null or p_outcome is null or p_outcome not in ('sent', 'retry', 'failed') then
    raise exception using errcode = 'RC001', message = 'p_refund_request_id and p_outcome sent | retry | failed are required';
  end if;
  select * into rr from reserve.refund_requests x where x.id = p_refund_request_id for update;
  if not found then
    raise exception using errcode = 'RC001', message = format('refund request %s not found', p_refund_request_id);
  end if;
  -- a confirmation that overtook our own record of sending wins; the provider's refund id is kept
  if rr.status = 'confirmed' and p_outcome = 'sent' then
    update reserve.refund_requests x
    set provider_refund_id = coalesce(x.provider_refund_id, p_provider_refund_id),
        sent_at = coalesce(x.sent_at, case when p_outcome = 'sent' then now() end)
    where x.id = rr.id
    returning * into rr;
    return rr;
  end if;
  -- only the poller holding the claim reports: a late report from one whose lease ran out (someone
  -- else claimed and sent it since) must not undo what happened after
  if rr.status <> 'sending' then
    return rr;
  end if;
  update reserve.refund_requests x
  set status = case when p_outcome = 'sent' then 'sent'
                    -- a refund the provider never took after 10 tries is an operator's (an alert)
                    when p_outcome = 'retry' and x.attempts < 10 then 'requested'
                    else 'failed' end,
      provider_refund_id = coalesce(p_provider_refund_id, x.provider_refund_id),
      error_message = p_error,
      sent_at = case when p_outcome = 'sent' then coalesce(x.sent_at, now()) else x.sent_at end,
      next_attempt_at = case when p_outcome = 'retry'
                             then now() + least(interval '1 hour', interval '1 minute' * power(2, least(x.attempts, 10))::integer)
                             else x.next_attempt_at end
  where x.id = rr.id
  returning * into rr;
  if rr.status = 'sent' then
    -- the provider's confirmation may have come before this report
    perform reserve.confirm_sent_refunds(rr.payment_id);
    select * into rr from reserve.refund_requests x where x.id = rr.id;
  end if;
  return rr;
end
$$;
comment on function reserve.record_refund_result(uuid, text, text, text) is
  'The poller''s report on sending a refund it claimed: sent (with the provider''s refund id), retry (the '
  'provider did not answer; backoff, failed after 10 attempts) or failed (refused: an operator must '
  'look). A report on a request no longer being sent changes nothing.';
revoke all on function reserve.record_refund_result(uuid, text, text, text) from public;
grant execute on function reserve.record_refund_result(uuid, text, text, text) to service_role;

create function reserve.confirm_sent_refunds(p_payment_id uuid) returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  covered bigint := 0;
  refunded bigint;
  rr record;
begin
  select p.refunded_amount into refunded from reserve.payments p where p.id = p_payment_id;
  -- only requests the provider took (sent) can be what it reports; one still to send is never confirmed
  for rr in select x.id, x.amount from reserve.refund_requests x
            where x.payment_id = p_payment_id and x.status in ('sent', 'confirmed') order by x.created_at loop
    covered := covered + rr.amount;
    exit when covered > refunded;
    update reserve.refund_requests x set status = 'confirmed', confirmed_at = coalesce(x.confirmed_at, now())
    where x.id = rr.id and x.status = 'sent';
  end loop;
end
$$;
comment on function reserve.confirm_sent_refunds(uuid) is
  'Confirms, oldest first, the sent refund requests of a payment that its refunded_amount covers.';
revoke all on function reserve.confirm_sent_refunds(uuid) from public;

create function reserve.confirm_refund_requests() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform reserve.confirm_sent_refunds(new.id);
  return null;
end
$$;
comment on function reserve.confirm_refund_requests() is
  'AFTER UPDATE trigger on payments: when refunded_amount grows, the sent refund requests it covers are confirmed.';
revoke all on function reserve.confirm_refund_requests() from public;

create trigger _410_confirm_refund_requests after update of refunded_amount on reserve.payments
  for each row when (new.refunded_amount > old.refunded_amount) execute function reserve.confirm_refund_requests();

insert into reserve.retention_policies (table_name, retention_days, retention_type, date_column, description) values
  ('refund_requests', 730, 'delete', 'created_at', 'Refund requests: two years, beyond any dispute window.');
