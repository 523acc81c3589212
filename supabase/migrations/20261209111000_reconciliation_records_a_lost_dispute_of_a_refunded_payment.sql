-- Reconciliation's dispute listing skipped a lost dispute of a payment refunded in full, as if its
-- refunds were the chargeback: with the dispute's webhooks lost, the money that went out twice (the
-- refund, then the chargeback) was never recorded. Only a payment charged back in full before
-- chargebacks were keyed by dispute (a chargeback transaction under another key) is settled now; a lost
-- dispute of any other payment not yet charged back goes through apply_payment_status, which books what
-- is left and records the excess as a dispute_exceeds_received discrepancy. Restates
-- reconcile_provider_disputes whole from 20261208160000.

CREATE OR REPLACE FUNCTION reserve.reconcile_provider_disputes(p_run_id uuid, p_disputes jsonb)
 RETURNS reserve.reconciliation_runs
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
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
  charged boolean;
  settled_unkeyed boolean;
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
    -- its chargeback, booked once per dispute by whichever path saw it lost (its webhook, this listing)
    charged := exists (select 1 from reserve.ledger_transactions t where t.idempotency_key = 'chargeback:' || d.dispute_id);
    -- a payment charged back in full before chargebacks were keyed by dispute: its lost dispute is booked.
    -- A payment refunded in full by its refunds is not: a lost dispute of it took the money a second time,
    -- which apply_payment_status records as a discrepancy
    settled_unkeyed := p.status = 'refunded' and exists (
      select 1 from reserve.ledger_transactions t
      where t.payment_id = p.id and t.kind = 'chargeback' and t.idempotency_key not like 'chargeback:%');
    -- a dispute closed before we ever saw it open, on a payment whose state already says so, is no news:
    -- won says so of any payment but a disputed one (its dispute webhook came, the closing one did not),
    -- lost of one it was charged back from
    if known.id is null and d.status <> 'open'
       and (p.id is null or case when d.status = 'won' then p.status <> 'disputed' else charged or settled_unkeyed end) and d.fee = 0 then
      continue;
    end if;

    if p.id is not null and reserve.provider_says_paid(p.status) then
      -- our payment's state as the provider's dispute webhook would have left it
      if d.status = 'open' and p.status <> 'disputed' then
        a := reserve.apply_payment_status(p.id, reserve.as_provider_update(jsonb_build_object('status', 'disputed',
               'gateway_payment_id', d.gateway_payment_id, 'dispute_id', d.dispute_id, 'dispute_amount', d.amount, 'currency', d.currency,
               'gateway_status', 'dispute_' || coalesce(d.provider_object ->> 'status', 'open'))), null, 'ignore', 'poll');
      elsif d.status = 'lost' and not charged and not settled_unkeyed
            and (p.status = 'disputed' or known.repaired_at is null) then
        -- charged back whatever our payment's state: partially refunded before the dispute (a read of the
        -- charge left it so), never seen disputed, or refunded in full already (nothing is booked, the
        -- money that went out twice is a discrepancy). One reconciliation saw closed before its chargeback
        -- was keyed by dispute was settled then
        a := reserve.apply_payment_status(p.id, reserve.as_provider_update(jsonb_build_object('status', 'refunded',
               'gateway_payment_id', d.gateway_payment_id, 'dispute_id', d.dispute_id, 'dispute_amount', d.amount, 'currency', d.currency,
               'gateway_status', 'dispute_lost')), null, 'ignore', 'poll');
      elsif d.status = 'won' and p.status = 'disputed' then
        a := reserve.apply_payment_status(p.id, reserve.as_provider_update(jsonb_build_object('status', 'succeeded',
               'gateway_payment_id', d.gateway_payment_id, 'dispute_id', d.dispute_id, 'gateway_status', 'dispute_won')), null, 'ignore', 'poll');
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
$function$
;

comment on function reserve.reconcile_provider_disputes(p_run_id uuid, p_disputes jsonb) is 'The disputes a provider lists ([{dispute_id, gateway_payment_id, amount, currency, status open|won|lost, withheld, fee, due_by, provider_object}]) compared with ours in one transaction: each recorded as a dispute_open item (repaired once won or lost), our payment moved to disputed / back / refunded through apply_payment_status, the dispute fee booked (dispute_fee:<id>) and given back (dispute_fee_refund:<id>) from the provider''s figures. RC001 for a malformed dispute, RC802/RC803 for a run that does not exist or finished.';
revoke all on function reserve.reconcile_provider_disputes(p_run_id uuid, p_disputes jsonb) from public, anon, authenticated;
grant execute on function reserve.reconcile_provider_disputes(p_run_id uuid, p_disputes jsonb) to service_role;
