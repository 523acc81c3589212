-- An event that would attach to our payment a provider id another payment of ours already holds failed
-- with RC405 and was retried to max_webhook_attempts (the provider's retries and retry_failed_webhooks'),
-- though no retry can change whose id it is: it is dead at once, as RC001 is.
CREATE OR REPLACE FUNCTION reserve.apply_event_update(p_webhook_id uuid, p_attempts integer, p_payment_id uuid, p_update reserve.provider_update, p_source text)
 RETURNS reserve.webhook_result
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  p reserve.payments;
  u reserve.provider_update := p_update;
  a reserve.payment_status_change;
  why text;
  state text;
  msg text;
begin
  select * into p from reserve.payments x where x.id = p_payment_id;

  if p.gateway_payment_id is null and u.gateway_payment_id is not null then
    -- the webhook overtook the checkout's own record of the provider's id: only our payment at our price
    why := reserve.provider_payment_mismatch(p, u);
    if why is not null then
      perform reserve.record_money_discrepancy(p, 'attach_mismatch', p_source, u, why, p.amount, p.currency,
                                               u.amount, u.currency, p_webhook_id);
      state := 'dead';
      msg := format('refused: %s; never attached (a money discrepancy is open)', why);
      a.outcome := 'refused';
    end if;
  end if;

  if state is null then
    begin
      if p.gateway_payment_id is null and u.gateway_payment_id is not null then
        perform reserve.attach_provider_payment(p, u, p_source, p_webhook_id);
      end if;
      a := reserve.apply_payment_status(p.id, u, p_webhook_id, 'ignore', p_source);
      if a.outcome = 'refused' then
        state := 'dead';
        msg := format('refused: %s (a money discrepancy is open)', a.finalize_error);
      elsif a.outcome = 'ignored' and u.status in ('refunded', 'partially_refunded', 'disputed')
            and a.status in ('pending', 'processing', 'failed', 'cancelled', 'expired') then
        -- money going back, or disputed, before the news that it arrived (the provider's events race, or
        -- overtake our poll): completed it would be lost for good, so it waits for the success, retried,
        -- and is dead (an alert) if the success never comes
        state := case when p_attempts >= reserve.setting_int('max_webhook_attempts') then 'dead' else 'failed' end;
        msg := format('payment %s is %s here: the %s waits until its success is recorded', p.id, a.status, u.status);
      else
        state := 'completed';
        msg := case when a.outcome in ('stale', 'ignored')
                    then format('%s: payment %s is %s, event says %s', a.outcome, p.id, a.status, u.status) end;
      end if;
    exception when others then
      get stacked diagnostics msg = message_text, state = returned_sqlstate;
      msg := format('%s: %s', state, msg);
      -- what the provider said can never be applied (RC001: e.g. a success that does not say what
      -- arrived; RC405: a provider id another payment of ours holds): retrying changes nothing, so it is
      -- dead at once (an alert); anything else is retried
      state := case when state in ('RC001', 'RC405') or p_attempts >= reserve.setting_int('max_webhook_attempts') then 'dead' else 'failed' end;
      a := null;
    end;
  end if;

  if a.status is null then
    select x.status into a.status from reserve.payments x where x.id = p.id;
  end if;
  return row(p_webhook_id, null, null, state, false, p_attempts, p.id, coalesce(a.outcome, 'failed'), a.status,
             a.reservation_id, a.confirmation_code, a.finalize_outcome, msg)::reserve.webhook_result;
end
$function$;
