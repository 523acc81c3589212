-- Reconcile beside refunds being sent opened a payout_mismatch that never closed: Stripe's balance had
-- given the refund back before its confirmation reached our receivable, and no later run closed the item
-- once the two agreed. A difference the refunds on their way explain is no mismatch, and a run that finds
-- the balance agree repairs what earlier runs recorded for that provider and currency.
CREATE OR REPLACE FUNCTION reserve.finish_reconciliation_run(p_run_id uuid, p_balances jsonb DEFAULT NULL::jsonb, p_error text DEFAULT NULL::text, p_provider_calls integer DEFAULT 0)
 RETURNS reserve.reconciliation_runs
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  r reserve.reconciliation_runs := reserve.lock_reconciliation_run(p_run_id);
  p record;
  b record;
  found_items integer := 0;
  receivable bigint;
  in_flight bigint;
  withheld bigint;
  refunding bigint;
  difference bigint;
begin
  if p_error is null then
    for p in
      select x.id, x.gateway_payment_id, x.status, x.amount, x.currency, x.received_amount, x.refunded_amount
      from reserve.payments x
      where x.provider = r.provider and x.created_at >= r.window_from and x.created_at < r.window_to
        and x.gateway_payment_id is not null and reserve.provider_says_paid(x.status)
        and not exists (select 1 from reserve.reconciliation_run_objects o where o.run_id = r.id and o.object_id = x.gateway_payment_id)
    loop
      perform reserve.record_reconciliation_item(r, 'ours_missing_there', p.gateway_payment_id, p.id,
        jsonb_strip_nulls(to_jsonb(p) - 'id'), null,
        format('payment %s is %s here as %s payment %s, which %s did not list for %s .. %s', p.id, p.status, r.provider,
               p.gateway_payment_id, r.provider, r.window_from, r.window_to));
      found_items := found_items + 1;
    end loop;

    if p_balances is not null then
      if jsonb_typeof(p_balances) <> 'array' then
        raise exception using errcode = 'RC001', message = 'p_balances is a JSON array of {currency, amount}';
      end if;
      for b in select x.currency, x.amount from jsonb_to_recordset(p_balances) x(currency text, amount bigint) loop
        receivable := reserve.ledger_account_balance(reserve.receivable_account(r.provider), b.currency);
        -- a payout on its way has left the provider's balance and is not yet ours at the bank
        select coalesce(sum(o.amount), 0) into in_flight from reserve.provider_payouts o
        where o.provider = r.provider and o.currency = b.currency and o.status in ('pending', 'in_transit');
        -- an open dispute's money has left the provider's balance and is not yet gone from our books
        select coalesce(sum((i.theirs ->> 'withheld')::bigint), 0) into withheld from reserve.reconciliation_items i
        where i.provider = r.provider and i.kind = 'dispute_open' and i.theirs ->> 'status' = 'open'
          and i.theirs ->> 'currency' = b.currency;
        -- a refund we sent may have left the provider's balance before its confirmation reaches our books
        select coalesce(sum(q.amount), 0) into refunding from reserve.refund_requests q join reserve.payments x on x.id = q.payment_id
        where x.provider = r.provider and q.currency = b.currency and q.status in ('sending', 'sent');
        difference := receivable - in_flight - withheld - b.amount;
        if difference = 0 or (difference > 0 and difference <= refunding) then
          -- the books agree (or refunds on their way explain it): an earlier run's difference is gone
          update reserve.reconciliation_items i
          set repaired_at = now(), repair_note = format('run %s: the balance agrees (%s %s, %s in refunds on their way)', r.id, b.amount, b.currency, refunding)
          where i.provider = r.provider and i.kind = 'payout_mismatch' and i.theirs ->> 'currency' = b.currency
            and i.repaired_at is null and i.resolved_at is null;
        elsif receivable - in_flight - withheld <> b.amount then
          perform reserve.record_reconciliation_item(r, 'payout_mismatch',
            format('balance:%s:%s', b.currency, to_char(r.window_to at time zone 'UTC', 'YYYY-MM-DD')), null,
            jsonb_build_object('receivable', receivable, 'payouts_in_flight', in_flight, 'disputes_withheld', withheld,
                               'refunds_in_flight', refunding, 'currency', b.currency),
            jsonb_build_object('balance', b.amount, 'currency', b.currency),
            format('%s holds %s %s for us; receivable_%s is %s with %s in payouts on their way and %s held in open disputes (difference %s)',
                   r.provider, b.amount, b.currency, r.provider, receivable, in_flight, withheld, receivable - in_flight - withheld - b.amount));
          found_items := found_items + 1;
        end if;
      end loop;
    end if;
  end if;

  delete from reserve.reconciliation_run_objects where run_id = r.id;
  update reserve.reconciliation_runs x
  set status = case when p_error is null then 'done' else 'failed' end, finished_at = now(), heartbeat_at = now(),
      error_message = left(p_error, 2000), items = x.items + found_items,
      provider_calls = x.provider_calls + greatest(coalesce(p_provider_calls, 0), 0),
      unrepaired = (select count(*) from reserve.reconciliation_items i
                    where i.last_run_id = r.id and i.repaired_at is null and i.resolved_at is null)
  where x.id = r.id
  returning * into r;
  return r;
end
$function$;
