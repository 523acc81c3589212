-- Reconciliation sees money that moved in its window on payments made before it, and disputes as
-- disputes. Before, only the payments created in the window were listed: a refund made today on last
-- week's payment was never compared, a dispute never recorded, and the money an open dispute holds back
-- showed as a payout_mismatch of the whole balance.
-- - The reconcile function walks the provider's refunds and disputes (PaymentProvider.listMoneyMoves;
--   Stripe: /v1/refunds and /v1/disputes by created) and reads again each payment of ours made before
--   the window that one names: compared like a listed payment (refund_mismatch, repairs as a poll).
-- - reconcile_provider_disputes records each dispute as a dispute_open item (unrepaired while the
--   provider holds the money: someone must answer it by its due date), moves our payment to disputed, or
--   back / to refunded when it is won / lost, as the webhook would have, and books the dispute fee the
--   provider charged (and gave back) from its own balance transactions.
-- - finish_reconciliation_run compares the balance with the receivable less payouts on their way and the
--   money open disputes hold back.

alter type reserve.reconciliation_item_kind add value if not exists 'dispute_open';
comment on type reserve.reconciliation_item_kind is 'paid_unknown: paid at the provider, no payment of ours; paid_not_recorded: paid there, unpaid (or unattached) here; ours_missing_there: our paid payment the provider did not list; amount/currency_mismatch: the provider''s payment is for another amount or currency than ours; status_mismatch: paid here, not there (or failed there, pending here); refund_mismatch: refunded amounts differ; duplicate_charge: a second paid provider payment for one of ours; fee_missing: the provider charged a fee we had not booked; payout_mismatch: the receivable differs from the balance the provider holds for us, payouts on their way and open disputes counted; dispute_open: a cardholder disputes a payment and the provider holds its money back (repaired once the dispute is won or lost).';

create function reserve.reconcile_provider_disputes(p_run_id uuid, p_disputes jsonb) returns reserve.reconciliation_runs
language plpgsql
security definer
set search_path = ''
as $$
declare
  r reserve.reconciliation_runs;
  d record;
  p reserve.payments;
  a reserve.payment_status_change;
  known reserve.reconciliation_items;
  theirs jsonb;
  fee_tx reserve.ledger_transactions;
  booked_fee bigint;
  city text;
  receivable text;
  note text;
  n integer := 0;
  found_items integer := 0;
  fixed integer := 0;
begin
  if p_disputes is null or jsonb_typeof(p_disputes) <> 'array' or jsonb_array_length(p_disputes) > 10000 then
    raise exception using errcode = 'RC001', message = 'p_disputes is a JSON array of at most 10000 disputes';
  end if;
  r := reserve.lock_reconciliation_run(p_run_id);
  if coalesce(current_setting('reserve.reason', true), '') = '' then
    perform set_config('reserve.reason', format('reconciliation %s of %s', r.id, r.provider), true);
  end if;
  receivable := reserve.receivable_account(r.provider);
  for d in select * from jsonb_to_recordset(p_disputes) x(dispute_id text, gateway_payment_id text, amount bigint, currency text,
                                                          status text, withheld bigint, fee bigint, due_by timestamptz,
                                                          provider_object jsonb) loop
    if d.dispute_id is null or d.gateway_payment_id is null or d.amount is null or d.amount <= 0 or d.currency !~ '^[A-Z]{3}$'
       or d.status not in ('open', 'won', 'lost') or coalesce(d.withheld, -1) < 0 or coalesce(d.fee, -1) < 0 then
      raise exception using errcode = 'RC001',
        message = format('reconciliation %s: dispute %s needs dispute_id, gateway_payment_id, an amount, a currency, a status (open, won, lost), withheld and fee >= 0',
                         r.id, coalesce(d.dispute_id, '(no id)'));
    end if;
    n := n + 1;
    a := null;
    note := null;
    select * into known from reserve.reconciliation_items i where i.provider = r.provider and i.kind = 'dispute_open' and i.object_id = d.dispute_id;
    select * into p from reserve.payments x where x.provider = r.provider and x.gateway_payment_id = d.gateway_payment_id for update;
    -- a dispute closed before we ever saw it open, on a payment whose state already says so, is no news
    if known.id is null and d.status <> 'open'
       and (p.id is null or p.status = case when d.status = 'won' then p.status else 'refunded' end) and d.fee = 0 then
      continue;
    end if;

    if p.id is not null and reserve.provider_says_paid(p.status) then
      -- our payment's state as the provider's dispute webhook would have left it
      if d.status = 'open' and p.status <> 'disputed' then
        a := reserve.apply_payment_status(p.id, reserve.as_provider_update(jsonb_build_object('status', 'disputed',
               'gateway_payment_id', d.gateway_payment_id, 'dispute_amount', d.amount, 'currency', d.currency,
               'gateway_status', 'dispute_' || coalesce(d.provider_object ->> 'status', 'open'))), null, 'ignore', 'poll');
      elsif d.status = 'lost' and p.status = 'disputed' then
        a := reserve.apply_payment_status(p.id, reserve.as_provider_update(jsonb_build_object('status', 'refunded',
               'gateway_payment_id', d.gateway_payment_id, 'dispute_amount', d.amount, 'currency', d.currency,
               'gateway_status', 'dispute_lost')), null, 'ignore', 'poll');
      elsif d.status = 'won' and p.status = 'disputed' then
        a := reserve.apply_payment_status(p.id, reserve.as_provider_update(jsonb_build_object('status', 'succeeded',
               'gateway_payment_id', d.gateway_payment_id, 'gateway_status', 'dispute_won')), null, 'ignore', 'poll');
      end if;
      if a.outcome = 'applied' then
        note := format('applied %s -> %s', a.previous_status, a.status);
      end if;
    end if;

    -- the dispute fee from the provider's own figure, once; given back once when the provider gives it back
    select bi.city_code into city from reserve.booking_intents bi where bi.id = p.booking_intent_id;
    select * into fee_tx from reserve.ledger_transactions t where t.idempotency_key = 'dispute_fee:' || d.dispute_id;
    if fee_tx.id is null and d.fee > 0 then
      perform reserve.post_ledger_transaction('provider_fee', format('%s dispute fee of %s (payment %s): %s %s', r.provider, d.dispute_id,
                                                                     coalesce(p.id::text, d.gateway_payment_id), d.fee, d.currency),
        jsonb_build_array(reserve.ledger_leg('provider_fees', 'debit', d.fee, 'provider_fee', d.currency),
                          reserve.ledger_leg(receivable, 'credit', d.fee, 'provider_fee', d.currency)),
        'dispute_fee:' || d.dispute_id, p.id, null, city);
      note := concat_ws('; ', note, format('posted dispute_fee:%s', d.dispute_id));
    elsif fee_tx.id is not null and d.fee = 0 then
      select * into fee_tx from reserve.ledger_transactions t where t.idempotency_key = 'dispute_fee_refund:' || d.dispute_id;
      if fee_tx.id is null then
        select sum(e.amount) into booked_fee from reserve.ledger_entries e join reserve.ledger_transactions t on t.id = e.transaction_id
        where t.idempotency_key = 'dispute_fee:' || d.dispute_id and e.direction = 'debit';
        perform reserve.post_ledger_transaction('provider_fee', format('%s gave back the dispute fee of %s (payment %s)', r.provider, d.dispute_id,
                                                                       coalesce(p.id::text, d.gateway_payment_id)),
          jsonb_build_array(reserve.ledger_leg(receivable, 'debit', booked_fee, 'provider_fee', d.currency),
                            reserve.ledger_leg('provider_fees', 'credit', booked_fee, 'provider_fee', d.currency)),
          'dispute_fee_refund:' || d.dispute_id, p.id, null, city);
        note := concat_ws('; ', note, format('posted dispute_fee_refund:%s', d.dispute_id));
      end if;
    end if;

    theirs := jsonb_strip_nulls(jsonb_build_object('dispute_id', d.dispute_id, 'gateway_payment_id', d.gateway_payment_id,
      'status', d.status, 'gateway_status', d.provider_object ->> 'status', 'reason', d.provider_object ->> 'reason',
      'amount', d.amount, 'currency', d.currency, 'withheld', d.withheld, 'fee', d.fee, 'due_by', d.due_by));
    known := reserve.record_reconciliation_item(r, 'dispute_open', d.dispute_id, p.id,
      case when p.id is not null then jsonb_build_object('payment_id', p.id, 'status', p.status, 'amount', p.amount, 'currency', p.currency) end,
      theirs,
      case d.status
        when 'open' then format('%s holds %s %s of %s in dispute %s (%s)%s: answer it with evidence', r.provider, d.withheld, d.currency,
                                coalesce('payment ' || p.id::text, d.gateway_payment_id || ', none of ours'), d.dispute_id,
                                coalesce(d.provider_object ->> 'reason', 'no reason given'), coalesce(', due by ' || d.due_by::text, ''))
        else format('dispute %s of %s is %s at %s', d.dispute_id, coalesce('payment ' || p.id::text, d.gateway_payment_id), d.status, r.provider) end,
      -- repaired once it is over: won or lost, the money is where it will stay and our books say so
      case when d.status <> 'open' then concat_ws('; ', 'dispute ' || d.status, note) end);
    found_items := found_items + 1;
    fixed := fixed + (d.status <> 'open' and known.repaired_at is not null)::int;
  end loop;
  update reserve.reconciliation_runs
  set heartbeat_at = now(), items = items + found_items, repaired = repaired + fixed
  where id = r.id
  returning * into r;
  return r;
end
$$;
comment on function reserve.reconcile_provider_disputes(uuid, jsonb) is 'The disputes a provider lists ([{dispute_id, gateway_payment_id, amount, currency, status open|won|lost, withheld, fee, due_by, provider_object}]) compared with ours in one transaction: each recorded as a dispute_open item (repaired once won or lost), our payment moved to disputed / back / refunded through apply_payment_status, the dispute fee booked (dispute_fee:<id>) and given back (dispute_fee_refund:<id>) from the provider''s figures. RC001 for a malformed dispute, RC802/RC803 for a run that does not exist or finished.';
revoke all on function reserve.reconcile_provider_disputes(uuid, jsonb) from public;
grant execute on function reserve.reconcile_provider_disputes(uuid, jsonb) to service_role;

create or replace function reserve.finish_reconciliation_run(p_run_id uuid, p_balances jsonb DEFAULT NULL::jsonb, p_error text DEFAULT NULL::text, p_provider_calls integer DEFAULT 0)
 RETURNS reserve.reconciliation_runs
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $$
declare
  r reserve.reconciliation_runs := reserve.lock_reconciliation_run(p_run_id);
  p record;
  b record;
  found_items integer := 0;
  receivable bigint;
  in_flight bigint;
  withheld bigint;
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
        if receivable - in_flight - withheld <> b.amount then
          perform reserve.record_reconciliation_item(r, 'payout_mismatch',
            format('balance:%s:%s', b.currency, to_char(r.window_to at time zone 'UTC', 'YYYY-MM-DD')), null,
            jsonb_build_object('receivable', receivable, 'payouts_in_flight', in_flight, 'disputes_withheld', withheld, 'currency', b.currency),
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
$$
;
