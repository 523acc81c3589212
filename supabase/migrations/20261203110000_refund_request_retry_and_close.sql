-- An operator's two ways out of a refund request the queue cannot finish (the refunds_stuck alert):
-- retry_refund_request queues a failed refund again, close_refund_request ends one that will not go
-- through the queue (made by other means, or not owed). Both need a named operator and a reason, like
-- the recovery functions, and are idempotent.
--
-- A retry is a new request with a key of its own (refund:<new id>), not the failed one sent again: a
-- provider answers a reused idempotency key with the first result (Stripe keeps it 24 hours, refusal
-- included), and forgets it after, so the old key could neither retry nor guard a retry.

insert into reserve.error_codes (sqlstate, name, http_status, description) values
  ('RC211', 'refund_request_not_found', 404, 'No such refund request.'),
  ('RC212', 'illegal_refund_transition', 409, 'The refund request cannot be retried or closed from its status (only a failed one is retried; a confirmed or sending one is not closed).');

alter table reserve.refund_requests
  add column closed_at timestamptz,
  add column closed_by text,
  add column close_reason text,
  -- the failed request a retry replaces (set null when retention deletes the older one first)
  add column retry_of uuid references reserve.refund_requests (id) on delete set null;
alter table reserve.refund_requests drop constraint refund_requests_status_check;
alter table reserve.refund_requests add constraint refund_requests_status_check
  check (status in ('requested', 'sending', 'sent', 'confirmed', 'failed', 'closed'));
alter table reserve.refund_requests add constraint refund_requests_closed_check
  check ((status = 'closed') = (closed_at is not null and closed_by is not null and close_reason is not null));
create unique index refund_requests_retry_of_key on reserve.refund_requests (retry_of) where retry_of is not null;
comment on table reserve.refund_requests is
  'Refunds owed to guests, sent to the provider by poll_payment_status with idempotency key '
  'refund:<id>: requested -> sending -> sent -> confirmed (the provider''s refund reached '
  'payments.refunded_amount), or failed with the provider''s error; an operator retries a failed one '
  '(retry_refund_request: a new request, retry_of the old) or closes one (close_refund_request).';
comment on column reserve.refund_requests.retry_of is 'The failed request this one retries (retry_refund_request).';

create function reserve.lock_refund_request(p_refund_request_id uuid) returns reserve.refund_requests
language plpgsql
security definer
set search_path = ''
as $$
declare
  rr reserve.refund_requests;
  payment uuid;
begin
  select x.payment_id into payment from reserve.refund_requests x where x.id = p_refund_request_id;
  if not found then
    raise exception using errcode = 'RC211', message = format('refund request %s not found', p_refund_request_id);
  end if;
  -- the payment first, as request_refund and the confirmation take them
  perform reserve.lock_payment(payment);
  select * into rr from reserve.refund_requests x where x.id = p_refund_request_id for update;
  return rr;
end
$$;
comment on function reserve.lock_refund_request(uuid) is
  'Locks a refund request after its payment (the order request_refund and the confirmation use); RC211 if there is none.';
revoke all on function reserve.lock_refund_request(uuid) from public;

create function reserve.retry_refund_request(p_refund_request_id uuid, p_reason text)
returns reserve.refund_requests
language plpgsql
security definer
set search_path = ''
as $$
declare
  who text := reserve.require_operator('retry_refund_request', p_reason);
  old reserve.refund_requests := reserve.lock_refund_request(p_refund_request_id);
  rr reserve.refund_requests;
begin
  -- retried already: the same new request
  select * into rr from reserve.refund_requests x where x.retry_of = old.id;
  if found then
    return rr;
  end if;
  if old.status <> 'failed' then
    raise exception using errcode = 'RC212',
      message = format('refund request %s is %s: only a failed request is retried', old.id, old.status);
  end if;
  update reserve.refund_requests x
  set status = 'closed', closed_at = now(), closed_by = who, close_reason = 'retried: ' || p_reason
  where x.id = old.id;
  -- request_refund checks the payment still holds the money (RC208 when it has been refunded since)
  rr := reserve.request_refund(old.payment_id, old.amount, old.reason, 'retry:' || old.id, p_reason);
  update reserve.refund_requests x set retry_of = old.id where x.id = rr.id returning * into rr;
  return rr;
end
$$;
comment on function reserve.retry_refund_request(uuid, text) is
  'Queues a failed refund request again as a new request (retry_of the old one, which is closed), sent by '
  'the poller with its own idempotency key. Idempotent: a second call returns the same new request. RC212 '
  'for a request that is not failed, RC208 when the payment no longer holds the amount, RC501 without '
  'operator and reason.';
revoke all on function reserve.retry_refund_request(uuid, text) from public;
grant execute on function reserve.retry_refund_request(uuid, text) to service_role;

create function reserve.close_refund_request(p_refund_request_id uuid, p_reason text)
returns reserve.refund_requests
language plpgsql
security definer
set search_path = ''
as $$
declare
  who text := reserve.require_operator('close_refund_request', p_reason);
  rr reserve.refund_requests := reserve.lock_refund_request(p_refund_request_id);
begin
  if rr.status = 'closed' then
    return rr;
  end if;
  -- confirmed is done; sending is in a poller's hands right now (its lease is 2 minutes)
  if rr.status not in ('requested', 'failed', 'sent') then
    raise exception using errcode = 'RC212',
      message = format('refund request %s is %s: only a requested, failed or sent request is closed', rr.id, rr.status);
  end if;
  update reserve.refund_requests x
  set status = 'closed', closed_at = now(), closed_by = who, close_reason = p_reason
  where x.id = rr.id
  returning * into rr;
  return rr;
end
$$;
comment on function reserve.close_refund_request(uuid, text) is
  'Ends a refund request the queue will not finish: requested (not to be sent), failed, or sent but never '
  'confirmed. Nothing is sent for it any more and it leaves the refunds_stuck alert; the ledger is not '
  'touched (a refund made at the provider by other means is recorded with recover_payment, which posts it). '
  'Idempotent; RC212 for a confirmed or sending request, RC501 without operator and reason.';
revoke all on function reserve.close_refund_request(uuid, text) from public;
grant execute on function reserve.close_refund_request(uuid, text) to service_role;

-- the runbook's steps for a stuck refund have a section of their own (the double charge section only
-- queues one)
update reserve.alert_rules set runbook_section = 'P2: REFUND STUCK' where alert_name = 'refunds_stuck';
