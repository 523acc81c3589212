-- What claim_refund_requests (20261207074000) got wrong, found in review: a request whose earlier send
-- timed out (back to requested) or whose poller died (lease run out) may be the very refund that went
-- back, its money inside refunded_amount: it was failed as "not sent" and never confirmed; a second
-- request was failed while the first's money was counted twice (in refunded_amount and in flight); and
-- the blocking payment locks, several in one transaction, could deadlock with reconcile locking payments
-- in another order. A request sent before is now sent again under its key; one never sent waits while
-- another is in flight; both locks skip what another transaction holds.
CREATE OR REPLACE FUNCTION reserve.claim_refund_requests(p_limit integer DEFAULT 20, p_lease interval DEFAULT '00:02:00'::interval)
 RETURNS TABLE(refund_request_id uuid, payment_id uuid, provider text, method text, gateway_payment_id text, amount bigint, currency text, reason text, idempotency_key text, attempts integer)
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  due record;
  p reserve.payments;
  rr reserve.refund_requests;
  held bigint;
  in_flight bigint;
begin
  if p_limit is null or p_limit < 1 or p_limit > 1000 or p_lease is null or p_lease <= interval '0' then
    raise exception using errcode = 'RC001', message = 'p_limit between 1 and 1000 and a positive p_lease are required';
  end if;
  for due in
    select x.id, x.payment_id from reserve.refund_requests x
    where x.status in ('requested', 'sending') and x.next_attempt_at <= now()
    order by x.next_attempt_at
    limit p_limit
  loop
    -- skipped while another transaction holds it (a webhook, reconcile): claimed on a later run, never a
    -- wait that could close a cycle with a transaction locking several payments in another order
    select * into p from reserve.payments y where y.id = due.payment_id for no key update skip locked;
    continue when not found;
    select * into rr from reserve.refund_requests x
    where x.id = due.id and x.status in ('requested', 'sending') and x.next_attempt_at <= now()
    for update skip locked;
    continue when not found;  -- another poller's, or no longer due
    held := coalesce(p.received_amount, p.amount);
    select coalesce(sum(x.amount), 0) into in_flight from reserve.refund_requests x
    where x.payment_id = p.id and x.id <> rr.id and x.status in ('sending', 'sent');
    if rr.amount > held - p.refunded_amount - in_flight and rr.attempts = 0 and in_flight > 0 then
      -- another request is in flight, and its money may be in refunded_amount already (confirmed only once
      -- it is reported sent): asked again once it is settled, not failed on a count that holds it twice
      update reserve.refund_requests x set next_attempt_at = now() + interval '2 minutes' where x.id = rr.id;
      continue;
    end if;
    -- a request sent before (a timeout, a poller that died) may be the refund that went back: it is sent
    -- again under its own idempotency key, which the provider answers with that same refund
    if rr.amount > held - p.refunded_amount - in_flight and rr.attempts = 0 then
      update reserve.refund_requests x
      set status = 'failed',
          error_message = format('not sent: payment %s received %s %s, of which %s went back already (%s) and %s is in flight; %s more would exceed what arrived',
                                 p.id, held, rr.currency, p.refunded_amount, p.status, in_flight, rr.amount)
      where x.id = rr.id;
      continue;
    end if;
    update reserve.refund_requests x
    set status = 'sending', attempts = x.attempts + 1, next_attempt_at = now() + p_lease
    where x.id = rr.id
    returning * into rr;
    refund_request_id := rr.id; payment_id := p.id; provider := p.provider; method := p.method;
    gateway_payment_id := p.gateway_payment_id; amount := rr.amount; currency := rr.currency; reason := rr.reason;
    idempotency_key := 'refund:' || rr.id; attempts := rr.attempts;
    return next;
  end loop;
end
$function$;

comment on function reserve.claim_refund_requests(p_limit integer, p_lease interval) is 'Refund requests due to be sent (oldest due first, leased), each with its payment locked (both SKIP LOCKED: a busy one waits for a later run): the poller sends each with its idempotency key and reports with record_refund_result. A request never sent that is larger than what is left of the money received (after what went back and what other requests have in flight) waits while another request is in flight, and is otherwise failed with the figures (refunds_stuck), for an operator; one sent before is sent again under its key (the provider answers with the same refund).';
