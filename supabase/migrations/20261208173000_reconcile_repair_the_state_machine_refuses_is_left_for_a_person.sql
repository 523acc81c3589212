-- A repair reconcile_provider_payment ran through apply_payment_status that the state machine refused
-- (RC001: a provider listing a paid payment without amount_received or currency) failed the whole page:
-- none of its payments was reconciled, the run kept its cursor, and every resume listed the same page and
-- failed again, so the window was never reconciled. A refused repair now leaves its item unrepaired (saying
-- why, for a person) and the page goes on.
CREATE OR REPLACE FUNCTION reserve.reconcile_provider_payment(p_run reserve.reconciliation_runs, p_update reserve.provider_update, OUT items integer, OUT repaired integer)
 RETURNS record
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  u reserve.provider_update := p_update;
  v reserve.provider_update;
  p reserve.payments;
  theirs jsonb;
  ours jsonb;
  paid_there boolean := reserve.provider_says_paid(u.status);
  paid_here boolean;
  a reserve.payment_status_change;
  why text;
  note text;
  i reserve.reconciliation_items;
  fee_booked boolean;
  charged_back bigint;
begin
  items := 0;
  repaired := 0;
  theirs := jsonb_strip_nulls(jsonb_build_object('status', u.status, 'gateway_status', u.gateway_status, 'amount', u.amount,
    'currency', u.currency, 'amount_received', u.amount_received, 'refunded_amount', u.refunded_amount,
    'dispute_amount', u.dispute_amount, 'fee_amount', u.fee_amount, 'payment_reference', u.payment_reference));
  insert into reserve.reconciliation_run_objects (run_id, object_id) values (p_run.id, u.gateway_payment_id) on conflict do nothing;

  select * into p from reserve.payments x where x.provider = p_run.provider and x.gateway_payment_id = u.gateway_payment_id for update;
  if not found and u.payment_reference is not null then
    select * into p from reserve.payments x where x.id = u.payment_reference and x.provider = p_run.provider for update;
    if found and p.gateway_payment_id is not null and p.gateway_payment_id <> u.gateway_payment_id then
      -- ours is another provider payment: this one is a second charge for it
      if paid_there then
        perform reserve.record_reconciliation_item(p_run, 'duplicate_charge', u.gateway_payment_id, p.id,
          jsonb_build_object('gateway_payment_id', p.gateway_payment_id, 'status', p.status, 'amount', p.amount, 'currency', p.currency),
          theirs, format('%s payment %s is a second paid charge for payment %s, which is %s at %s',
                         p_run.provider, u.gateway_payment_id, p.id, p.gateway_payment_id, p_run.provider));
        items := 1;
      end if;
      return;
    end if;
  end if;

  if p.id is null then
    if paid_there then
      perform reserve.record_reconciliation_item(p_run, 'paid_unknown', u.gateway_payment_id, null, null, theirs,
        format('%s payment %s (%s %s) is paid and names %s: no payment of ours', p_run.provider, u.gateway_payment_id,
               coalesce(u.amount_received, u.amount)::text, coalesce(u.currency, '?'),
               coalesce('payment ' || u.payment_reference::text, 'none of ours')));
      items := 1;
    end if;
    return;
  end if;

  ours := jsonb_strip_nulls(jsonb_build_object('status', p.status, 'gateway_payment_id', p.gateway_payment_id, 'amount', p.amount,
    'currency', p.currency, 'received_amount', p.received_amount, 'received_currency', p.received_currency,
    'refunded_amount', p.refunded_amount, 'fee_amount', p.fee_amount));
  paid_here := reserve.provider_says_paid(p.status) and p.gateway_payment_id is not null;
  -- before any repair, whose update may carry the fee and book it on the way
  fee_booked := exists (select 1 from reserve.ledger_transactions t where t.idempotency_key = 'fee:' || p.id);

  -- what the provider's payment is for
  if u.currency is not null and u.currency <> p.currency then
    perform reserve.record_reconciliation_item(p_run, 'currency_mismatch', u.gateway_payment_id, p.id, ours, theirs,
      format('%s payment %s is in %s, payment %s in %s', p_run.provider, u.gateway_payment_id, u.currency, p.id, p.currency));
    items := items + 1;
  elsif u.amount is not null and u.amount <> p.amount then
    perform reserve.record_reconciliation_item(p_run, 'amount_mismatch', u.gateway_payment_id, p.id, ours, theirs,
      format('%s payment %s is for %s %s, payment %s for %s %s', p_run.provider, u.gateway_payment_id, u.amount,
             coalesce(u.currency, p.currency), p.id, p.amount, p.currency));
    items := items + 1;
  end if;

  if paid_there and not paid_here then
    -- repaired as a poll would: attach the provider payment, then the state machine
    begin
      if p.gateway_payment_id is null then
        why := reserve.attach_provider_payment(p, u, 'poll');
      end if;
      if why is null then
        if u.status <> 'succeeded' then
          -- refunded or disputed since: the money arrived first, then went (back) as the update says
          v := u;
          v.status := 'succeeded';
          v.refunded_amount := null;
          v.dispute_amount := null;
          v.refunds := null;
          perform reserve.apply_payment_status(p.id, v, null, 'ignore', 'poll');
        end if;
        a := reserve.apply_payment_status(p.id, u, null, 'ignore', 'poll');
        if a.outcome = 'applied' then
          note := format('applied %s -> %s%s', a.previous_status, a.status, coalesce(', reservation ' || a.finalize_outcome, ''));
        end if;
      end if;
    exception when sqlstate 'RC001' then
      -- a listing the state machine cannot apply (a success that does not say what arrived): the item is
      -- left for a person, undone whole, and the page goes on
      get stacked diagnostics why = message_text;
      why := 'the provider''s figures cannot be applied: ' || why;
      a := null;
      note := null;
    end;
    i := reserve.record_reconciliation_item(p_run, 'paid_not_recorded', u.gateway_payment_id, p.id, ours, theirs,
      format('%s payment %s is %s there, payment %s is %s here%s', p_run.provider, u.gateway_payment_id, u.status, p.id, p.status,
             coalesce(': ' || why, case when a.outcome is distinct from 'applied' then format(': not applied (%s)', coalesce(a.outcome, 'no outcome')) end, '')),
      note);
    items := items + 1;
    repaired := repaired + (i.repaired_at is not null)::int;
    select * into p from reserve.payments where id = p.id;
  elsif paid_here and not paid_there then
    -- we booked money the provider does not say it has: a person looks
    perform reserve.record_reconciliation_item(p_run, 'status_mismatch', u.gateway_payment_id, p.id, ours, theirs,
      format('payment %s is %s here, %s payment %s is %s there', p.id, p.status, p_run.provider, u.gateway_payment_id, u.status));
    items := items + 1;
  elsif not paid_here and not paid_there and u.status <> p.status and u.status in ('failed', 'cancelled', 'expired')
        and p.status in ('pending', 'processing') then
    -- the provider gave up on it and we are still waiting: the poller's answer, given now
    begin
      a := reserve.apply_payment_status(p.id, u, null, 'ignore', 'poll');
    exception when sqlstate 'RC001' then
      a := null;
    end;
    i := reserve.record_reconciliation_item(p_run, 'status_mismatch', u.gateway_payment_id, p.id, ours, theirs,
      format('%s payment %s is %s there, payment %s was %s here', p_run.provider, u.gateway_payment_id, u.status, p.id, p.status),
      case when a.outcome = 'applied' then format('applied %s -> %s', a.previous_status, a.status) end);
    items := items + 1;
    repaired := repaired + (i.repaired_at is not null)::int;
    select * into p from reserve.payments where id = p.id;
  end if;

  if paid_there and reserve.provider_says_paid(p.status) then
    -- refunds: more there is news we missed (applied); more here is money we think went back and did not
    if coalesce(u.refunded_amount, 0) + coalesce(u.dispute_amount, 0) > 0 or p.refunded_amount > 0 then
      -- our refunded_amount counts the chargebacks of lost disputes, which the provider's refunded
      -- figure does not (Stripe's amount_refunded): ours is compared less what was charged back, both
      -- ways (a refund after a chargeback is news though the provider's figure is below ours)
      charged_back := reserve.payment_charged_back(p.id);
      if coalesce(u.refunded_amount, 0) > p.refunded_amount - charged_back and u.dispute_amount is null then
        begin
          a := reserve.apply_payment_status(p.id, u, null, 'ignore', 'poll');
        exception when sqlstate 'RC001' then
          a := null;
        end;
        i := reserve.record_reconciliation_item(p_run, 'refund_mismatch', u.gateway_payment_id, p.id, ours, theirs,
          format('%s refunded %s of payment %s, we had %s (%s of ours charged back)', p_run.provider, u.refunded_amount, p.id,
                 p.refunded_amount, charged_back),
          case when a.outcome = 'applied' then format('applied refund: %s -> %s', a.previous_status, a.status) end);
        items := items + 1;
        repaired := repaired + (i.repaired_at is not null)::int;
        select * into p from reserve.payments where id = p.id;
      else
        if coalesce(u.refunded_amount, 0) < p.refunded_amount - charged_back and u.dispute_amount is null then
          perform reserve.record_reconciliation_item(p_run, 'refund_mismatch', u.gateway_payment_id, p.id, ours, theirs,
            format('we booked %s refunded of payment %s (%s of it charged back), %s shows %s', p.refunded_amount, p.id, charged_back,
                   p_run.provider, coalesce(u.refunded_amount, 0)));
          items := items + 1;
        end if;
      end if;
    end if;
    -- the provider's fee, booked once from its own figure
    if u.fee_amount > 0 and p.received_amount is not null then
      if not fee_booked then
        perform reserve.post_provider_fee(p.id, u.fee_amount, coalesce(u.currency, p.received_currency));
        i := reserve.record_reconciliation_item(p_run, 'fee_missing', u.gateway_payment_id, p.id, ours, theirs,
          format('%s charged %s %s on payment %s, not booked', p_run.provider, u.fee_amount, coalesce(u.currency, p.received_currency), p.id),
          format('posted fee:%s', p.id));
        items := items + 1;
        repaired := repaired + 1;
      end if;
    end if;
  end if;
end
$function$
;
