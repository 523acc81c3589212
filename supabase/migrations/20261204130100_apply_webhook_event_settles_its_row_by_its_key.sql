-- apply_webhook_event settles the row it read by that row's whole key (id, received_at): processed_webhooks
-- is partitioned by month of received_at, and by id alone the update looked for the row in every
-- partition; with received_at it goes to the one that holds it. Same row (ids are unique uuids), same
-- change.

CREATE OR REPLACE FUNCTION reserve.apply_webhook_event(p_webhook_id uuid, p_source text DEFAULT 'webhook'::text)
 RETURNS reserve.webhook_result
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  w reserve.processed_webhooks;
  p reserve.payments;
  u reserve.provider_update;
  a reserve.payment_status_change;
  why text;
  state text;
  msg text;
  res reserve.webhook_result;
begin
  select * into w from reserve.processed_webhooks x where x.id = p_webhook_id;
  if w.apply_args is null then
    raise exception using errcode = 'RC210',
      message = format('%s event %s (webhook %s) has nothing to apply: %s', w.provider, w.event_id, w.id,
                       coalesce(w.error_message, 'no status was recorded'));
  end if;
  u := reserve.webhook_update_of(w.apply_args);
  select * into p from reserve.payments x where x.id = (w.apply_args ->> 'payment_id')::uuid;

  if p.gateway_payment_id is null and u.gateway_payment_id is not null then
    -- the webhook overtook the checkout's own record of the provider's id: only our payment at our price
    why := reserve.provider_payment_mismatch(p, u);
    if why is not null then
      perform reserve.record_money_discrepancy(p, 'attach_mismatch', p_source, u, why, p.amount, p.currency,
                                               u.amount, u.currency, w.id);
      state := 'dead';
      msg := format('refused: %s; never attached (a money discrepancy is open)', why);
      a.outcome := 'refused';
    end if;
  end if;

  if state is null then
    begin
      if p.gateway_payment_id is null and u.gateway_payment_id is not null then
        perform reserve.attach_provider_payment(p, u, p_source, w.id);
      end if;
      a := reserve.apply_payment_status(p.id, u, w.id, 'ignore', p_source);
      if a.outcome = 'refused' then
        state := 'dead';
        msg := format('refused: %s (a money discrepancy is open)', a.finalize_error);
      else
        state := 'completed';
        msg := case when a.outcome in ('stale', 'ignored')
                    then format('%s: payment %s is %s, event says %s', a.outcome, p.id, a.status, u.status) end;
      end if;
    exception when others then
      get stacked diagnostics msg = message_text, state = returned_sqlstate;
      msg := format('%s: %s', state, msg);
      -- what the provider said can never be applied (RC001: e.g. a success that does not say what
      -- arrived): retrying changes nothing, so it is dead at once (an alert); anything else is retried
      state := case when state = 'RC001' or w.attempts >= reserve.setting_int('max_webhook_attempts') then 'dead' else 'failed' end;
      a := null;
    end;
  end if;

  update reserve.processed_webhooks x
  set status = state, error_message = msg, processed_at = now(),
      next_retry_at = case when state = 'failed' then reserve.webhook_retry_at(w.attempts) end
  where x.id = w.id and x.received_at = w.received_at
  returning * into w;

  res := row(w.id, w.provider, w.event_id, w.status, false, w.attempts, w.payment_id, coalesce(a.outcome, 'failed'),
             coalesce(a.status, (select x.status from reserve.payments x where x.id = p.id)), a.reservation_id,
             a.confirmation_code, a.finalize_outcome, w.error_message)::reserve.webhook_result;
  return res;
end
$function$
;

