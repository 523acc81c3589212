-- apply_event_update reads the payment's status for its answer only when the apply gave none (it was
-- undone or refused). As a subquery inside the answer's row, every call was planned anew: the custom
-- plan folds the subquery away when the status is known, so it always looked cheaper than the cached
-- generic one (pg_stat_statements with track_planning: 300 plans in 300 finalizes, 31 us each). Same
-- answers.

create or replace function reserve.apply_event_update(p_webhook_id uuid, p_attempts integer, p_payment_id uuid, p_update reserve.provider_update, p_source text)
returns reserve.webhook_result
language plpgsql
security definer
set search_path = ''
as $$
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
      state := case when state = 'RC001' or p_attempts >= reserve.setting_int('max_webhook_attempts') then 'dead' else 'failed' end;
      a := null;
    end;
  end if;

  if a.status is null then
    select x.status into a.status from reserve.payments x where x.id = p.id;
  end if;
  return row(p_webhook_id, null, null, state, false, p_attempts, p.id, coalesce(a.outcome, 'failed'), a.status,
             a.reservation_id, a.confirmation_code, a.finalize_outcome, msg)::reserve.webhook_result;
end
$$;
