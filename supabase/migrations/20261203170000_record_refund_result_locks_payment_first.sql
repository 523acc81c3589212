-- A refund's provider confirmation (charge.refunded) and the poller's report that it sent the refund
-- could commit side by side, each unable to see the other: the webhook found the request still
-- 'sending', the report found the payment not yet refunded, and the request stayed 'sent' until the
-- lookup minutes later. The report now locks the payment first, like record_refund_lookup.
CREATE OR REPLACE FUNCTION reserve.record_refund_result(p_refund_request_id uuid, p_outcome text, p_refund reserve.provider_refund DEFAULT NULL::reserve.provider_refund, p_error text DEFAULT NULL::text)
 RETURNS reserve.refund_requests
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  rr reserve.refund_requests;
  p reserve.payments;
begin
  if p_refund_request_id is null or p_outcome is null or p_outcome not in ('sent', 'retry', 'failed') then
    raise exception using errcode = 'RC001', message = 'p_refund_request_id and p_outcome sent | retry | failed are required';
  end if;
  if p_outcome = 'sent' and (p_refund.refund_id is null or length(p_refund.refund_id) > 255) then
    raise exception using errcode = 'RC001', message = format('refund request %s: a sent refund needs the provider''s refund id', p_refund_request_id);
  end if;
  -- payment before its refund requests, as the webhook's refund path takes them: a charge.refunded
  -- applied at the same moment then either sees this request sent or is seen by confirm_sent_refunds
  select * into p from reserve.payments x where x.id = (select y.payment_id from reserve.refund_requests y where y.id = p_refund_request_id);
  if p.id is not null then
    p := reserve.lock_payment(p.id);
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
$function$
;
