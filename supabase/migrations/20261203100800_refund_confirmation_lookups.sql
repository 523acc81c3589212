-- Refunds always end. A refund the provider took (sent) and whose confirmation never came back (the
-- webhook lost, the poll of a settled payment never made) is looked up at the provider by
-- poll_payment_status with backoff: confirmed when the provider's payment shows the money gone back,
-- failed when the provider says the refund failed. Refunds are bounded by the money received and are
-- in its currency.

create or replace function reserve.request_refund(p_payment_id uuid, p_amount bigint, p_reason text, p_request_key text, p_note text default null)
returns reserve.refund_requests
language plpgsql
security definer
set search_path = ''
as $$
declare
  p reserve.payments;
  rr reserve.refund_requests;
  open_amount bigint;
  held bigint;
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
  held := coalesce(p.received_amount, p.amount);
  select coalesce(sum(x.amount), 0) into open_amount from reserve.refund_requests x
  where x.payment_id = p.id and x.status in ('requested', 'sending', 'sent');
  if p_amount is null or p_amount <= 0 or p_amount > held - p.refunded_amount - open_amount then
    raise exception using errcode = 'RC208',
      message = format('payment %s: a refund of %s exceeds what is left (%s %s received, %s refunded, %s requested)',
                       p.id, coalesce(p_amount::text, 'null'), held, coalesce(p.received_currency, p.currency),
                       p.refunded_amount, open_amount);
  end if;
  insert into reserve.refund_requests (payment_id, amount, currency, reason, request_key, requested_by, note)
  values (p.id, p_amount, coalesce(p.received_currency, p.currency), p_reason, p_request_key, reserve.current_actor(),
          left(p_note, 2000))
  returning * into rr;
  return rr;
end
$$;
comment on function reserve.request_refund(uuid, bigint, text, text, text) is
  'Queues a refund to the provider (sent by poll_payment_status), in the currency of the money received. '
  'Idempotent by p_request_key; RC208 when the payment holds no money or the amount exceeds what is left '
  'of the money received after refunds and open requests.';

create or replace function reserve.claim_refund_requests(p_limit integer default 20, p_lease interval default interval '2 minutes')
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
    select c.id, c.payment_id, p.provider, p.method, p.gateway_payment_id, c.amount, c.currency, c.reason,
           'refund:' || c.id, c.attempts
    from claimed c join reserve.payments p on p.id = c.payment_id;
end
$$;

drop function reserve.record_refund_result(uuid, text, text, text);

create function reserve.record_refund_result(p_refund_request_id uuid, p_outcome text, p_refund reserve.provider_refund default null,
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
  if p_outcome = 'sent' and (p_refund.refund_id is null or length(p_refund.refund_id) > 255) then
    raise exception using errcode = 'RC001', message = format('refund request %s: a sent refund needs the provider''s refund id', p_refund_request_id);
  end if;
  select * into rr from reserve.refund_requests x where x.id = p_refund_request_id for update;
  if not found then
    raise exception using errcode = 'RC001', message = format('refund request %s not found', p_refund_request_id);
  end if;
  -- a confirmation that overtook our own record of sending wins; the provider's refund id is kept
  if rr.status = 'confirmed' and p_outcome = 'sent' then
    update reserve.refund_requests x
    set provider_refund_id = coalesce(x.provider_refund_id, p_refund.refund_id),
        provider_refund_e2e = coalesce(x.provider_refund_e2e, p_refund.end_to_end_id),
        sent_at = coalesce(x.sent_at, now())
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
      provider_refund_id = coalesce(p_refund.refund_id, x.provider_refund_id),
      provider_refund_e2e = coalesce(p_refund.end_to_end_id, x.provider_refund_e2e),
      provider_refund_status = coalesce(p_refund.status, x.provider_refund_status),
      error_message = left(p_error, 2000),
      sent_at = case when p_outcome = 'sent' then coalesce(x.sent_at, now()) else x.sent_at end,
      -- a sent refund is looked up at the provider if its confirmation has not come within minutes
      next_attempt_at = case when p_outcome = 'retry'
                             then now() + least(interval '1 hour', interval '1 minute' * power(2, least(x.attempts, 10))::integer)
                             when p_outcome = 'sent' then now() + interval '2 minutes'
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
comment on function reserve.record_refund_result(uuid, text, reserve.provider_refund, text) is
  'The poller''s report on sending a refund it claimed: sent (with the provider''s refund: its id and, for '
  'PIX, endToEndId; looked up within minutes unless confirmed), retry (the provider did not answer; backoff, '
  'failed after 10 attempts) or failed (refused: an operator must look). A report on a request no longer '
  'being sent changes nothing.';
revoke all on function reserve.record_refund_result(uuid, text, reserve.provider_refund, text) from public;
grant execute on function reserve.record_refund_result(uuid, text, reserve.provider_refund, text) to service_role;

create function reserve.refund_lookup_at(p_lookups integer) returns timestamptz
language sql
stable
set search_path = ''
as $$ select now() + least(interval '1 hour', interval '1 minute' * power(2, least(greatest(p_lookups, 0), 10))::integer) $$;
comment on function reserve.refund_lookup_at(integer) is
  'When a sent refund looked up p_lookups times is looked up next: 1, 2, 4 ... minutes, at most an hour.';
revoke all on function reserve.refund_lookup_at(integer) from public;

create function reserve.claim_refunds_to_confirm(p_limit integer default 20, p_lease interval default interval '2 minutes')
returns table (refund_request_id uuid, payment_id uuid, provider text, gateway_payment_id text, provider_refund_id text,
               amount bigint, currency text, lookups integer)
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
      where x.status = 'sent' and x.next_attempt_at <= now()
      order by x.next_attempt_at
      limit p_limit
      for update skip locked
    ), claimed as (
      update reserve.refund_requests x
      set next_attempt_at = now() + p_lease
      from due where x.id = due.id
      returning x.*
    )
    select c.id, c.payment_id, p.provider, p.gateway_payment_id, c.provider_refund_id, c.amount, c.currency, c.lookups
    from claimed c join reserve.payments p on p.id = c.payment_id;
end
$$;
comment on function reserve.claim_refunds_to_confirm(integer, interval) is
  'Sent refunds whose confirmation is due to be looked up at the provider (SKIP LOCKED, leased): the poller '
  'reads each refund (and, when it succeeded, the payment) and reports with record_refund_lookup.';
revoke all on function reserve.claim_refunds_to_confirm(integer, interval) from public;
grant execute on function reserve.claim_refunds_to_confirm(integer, interval) to service_role;

create function reserve.record_refund_lookup(p_refund_request_id uuid, p_refund reserve.provider_refund default null,
                                             p_update reserve.provider_update default null, p_lookup_error text default null)
returns reserve.refund_requests
language plpgsql
security definer
set search_path = ''
as $$
declare
  rr reserve.refund_requests;
  p reserve.payments;
begin
  if p_refund_request_id is null or (p_lookup_error is null and (p_refund is null or p_refund.status is null)) then
    raise exception using errcode = 'RC001', message = 'p_refund_request_id and the provider''s refund (or the lookup error) are required';
  end if;
  if p_refund.status is not null and p_refund.status not in ('pending', 'succeeded', 'failed') then
    raise exception using errcode = 'RC001', message = format('refund status %s is not pending, succeeded or failed', p_refund.status);
  end if;
  select * into p from reserve.payments x where x.id = (select y.payment_id from reserve.refund_requests y where y.id = p_refund_request_id);
  if p.id is not null then
    p := reserve.lock_payment(p.id);  -- payment before its refund requests, as the refund triggers take them
  end if;
  select * into rr from reserve.refund_requests x where x.id = p_refund_request_id for update;
  if not found then
    raise exception using errcode = 'RC001', message = format('refund request %s not found', p_refund_request_id);
  end if;
  if rr.status <> 'sent' then
    return rr;  -- confirmed by the provider's own news meanwhile, or given up
  end if;
  update reserve.refund_requests x
  set lookups = x.lookups + 1, last_lookup_at = now(),
      provider_refund_status = coalesce(p_refund.status, x.provider_refund_status),
      provider_refund_e2e = coalesce(x.provider_refund_e2e, p_refund.end_to_end_id),
      error_message = left(p_lookup_error, 2000),
      next_attempt_at = reserve.refund_lookup_at(x.lookups)
  where x.id = rr.id
  returning * into rr;
  if p_lookup_error is not null then
    return rr;
  end if;

  if p_refund.status = 'failed' then
    update reserve.refund_requests x
    set status = 'failed',
        error_message = format('%s reports refund %s failed', p.provider, coalesce(rr.provider_refund_id, '?'))
    where x.id = rr.id
    returning * into rr;
  elsif p_refund.status = 'succeeded' then
    if p_refund.currency is not null and p_refund.currency <> rr.currency then
      perform reserve.record_money_discrepancy(p, 'currency_mismatch', 'refund_lookup', p_update,
        format('%s refund %s went back in %s; refund request %s is in %s', p.provider, rr.provider_refund_id,
               p_refund.currency, rr.id, rr.currency),
        rr.amount, rr.currency, p_refund.amount, p_refund.currency);
    end if;
    -- the money went back: the provider's payment says how much in all, which posts the ledger refund and
    -- confirms the requests it covers (confirm_sent_refunds)
    if p_update.status is not null then
      perform reserve.apply_payment_status(p.id, p_update, null, 'ignore', 'refund_lookup');
      select * into rr from reserve.refund_requests x where x.id = rr.id;
    end if;
  end if;
  return rr;
end
$$;
comment on function reserve.record_refund_lookup(uuid, reserve.provider_refund, reserve.provider_update, text) is
  'The poller''s lookup of a sent refund at the provider: succeeded applies the provider''s payment (its '
  'refunded total posts the ledger refund and confirms the request); failed fails the request (the '
  'refunds_stuck alert); pending, or a lookup error, looks again later with backoff. A request no longer '
  'sent is left as it is.';
revoke all on function reserve.record_refund_lookup(uuid, reserve.provider_refund, reserve.provider_update, text) from public;
grant execute on function reserve.record_refund_lookup(uuid, reserve.provider_refund, reserve.provider_update, text) to service_role;

create or replace function reserve.refund_duplicate_charge(p_payment_id uuid, p_reason text default 'duplicate_charge')
returns reserve.refund_requests
language plpgsql
security definer
set search_path = ''
as $$
declare
  who text := reserve.require_operator('refund_duplicate_charge', p_reason);
  p reserve.payments;
  rr reserve.refund_requests;
begin
  p := reserve.lock_payment(p_payment_id);
  select * into rr from reserve.refund_requests x where x.request_key = 'duplicate:' || p.id;
  if found then
    return rr;
  end if;
  if p.duplicate_of is null then
    raise exception using errcode = 'RC207',
      message = format('payment %s is not a duplicate charge (duplicate_of is empty); cancel its reservation to refund it', p.id);
  end if;
  -- finalize already set the whole amount received aside in refunds_payable; the provider's confirmation
  -- posts the refund against it
  return reserve.request_refund(p.id, coalesce(p.received_amount, p.amount) - p.refunded_amount, 'duplicate_charge',
                                'duplicate:' || p.id, p_reason);
end
$$;

create function reserve.look_up_refund(p_refund_request_id uuid, p_reason text)
returns reserve.refund_requests
language plpgsql
security definer
set search_path = ''
as $$
declare
  who text := reserve.require_operator('look_up_refund', p_reason);
  rr reserve.refund_requests;
begin
  select * into rr from reserve.refund_requests x where x.id = p_refund_request_id for update;
  if not found then
    raise exception using errcode = 'RC001', message = format('refund request %s not found', p_refund_request_id);
  end if;
  if rr.status in ('requested', 'sent') then
    update reserve.refund_requests x set next_attempt_at = now() where x.id = rr.id returning * into rr;
  end if;
  return rr;
end
$$;
comment on function reserve.look_up_refund(uuid, text) is
  'A sent refund is looked up at the provider, a requested one sent, at the next poller run instead of '
  'after its backoff. Other requests are left alone. RC501 without operator and reason.';
revoke all on function reserve.look_up_refund(uuid, text) from public;
grant execute on function reserve.look_up_refund(uuid, text) to service_role;
