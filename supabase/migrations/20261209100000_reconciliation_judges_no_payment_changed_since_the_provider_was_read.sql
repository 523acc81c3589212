-- A reconciliation compared a provider's page, read some time before, with our payment as it is when the
-- page reaches the database. A payment of ours that changed in between was judged against what the
-- provider held before that change: a refund the poller confirmed meanwhile read as "we booked 50,000,
-- Stripe shows 0" (refund_mismatch), and finish_reconciliation_run, reading our payments at its end,
-- named a checkout made while the listing went on ours_missing_there. Neither was a difference, and each
-- stayed open for a person.
--
-- reconcile_provider_objects now takes p_read_after: a time of this database before the provider was read
-- (the handler passes the run's heartbeat_at from its last call). A payment updated at or after it is not
-- judged by that page (no item, no repair; it counts as listed), and finish does not call one of ours
-- updated since the run began missing there. Without p_read_after a page is compared as before.
-- reconcile_provider_payment gains the argument too (internal: only reconcile_provider_objects calls it).
drop function reserve.reconcile_provider_objects(uuid, jsonb, jsonb, integer);
drop function reserve.reconcile_provider_payment(reserve.reconciliation_runs, reserve.provider_update);

CREATE OR REPLACE FUNCTION reserve.reconcile_provider_payment(p_run reserve.reconciliation_runs, p_update reserve.provider_update, p_read_after timestamp with time zone, OUT items integer, OUT repaired integer)
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

  if p.id is not null and p.updated_at >= p_read_after then
    -- ours changed after the provider was read: the page says what the provider held before that change
    -- (a refund confirmed meanwhile would read as one it does not show), so it judges nothing of this
    -- payment; a later read of it does
    return;
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
revoke all on function reserve.reconcile_provider_payment(reserve.reconciliation_runs, reserve.provider_update, timestamptz) from public, anon, authenticated;
comment on function reserve.reconcile_provider_payment(reserve.reconciliation_runs, reserve.provider_update, timestamptz) is 'Compares one provider payment with ours and records the differences (reconciliation_items); repairs paid there / unpaid here, failed there / pending here and refunds we missed through apply_payment_status, and a missing fee through post_provider_fee. A payment of ours updated at or after p_read_after (when the provider was read) is not judged. Internal: reconcile_provider_objects calls it.';

CREATE OR REPLACE FUNCTION reserve.reconcile_provider_objects(p_run_id uuid, p_updates jsonb, p_cursor jsonb DEFAULT NULL::jsonb, p_provider_calls integer DEFAULT 0, p_read_after timestamp with time zone DEFAULT NULL::timestamp with time zone)
 RETURNS reserve.reconciliation_runs
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  r reserve.reconciliation_runs;
  e jsonb;
  u reserve.provider_update;
  res record;
  n integer := 0;
  found_items integer := 0;
  fixed integer := 0;
begin
  if p_updates is null or jsonb_typeof(p_updates) <> 'array' or jsonb_array_length(p_updates) > 1000 then
    raise exception using errcode = 'RC001', message = 'p_updates is a JSON array of at most 1000 provider updates';
  end if;
  r := reserve.lock_reconciliation_run(p_run_id);
  if coalesce(current_setting('reserve.reason', true), '') = '' then
    perform set_config('reserve.reason', format('reconciliation %s of %s', r.id, r.provider), true);
  end if;
  for e in select value from jsonb_array_elements(p_updates) loop
    u := reserve.as_provider_update(e);
    if u.gateway_payment_id is null or u.status is null then
      raise exception using errcode = 'RC001',
        message = format('reconciliation %s: every provider update needs gateway_payment_id and status', r.id);
    end if;
    res := reserve.reconcile_provider_payment(r, u, p_read_after);
    n := n + 1;
    found_items := found_items + res.items;
    fixed := fixed + res.repaired;
  end loop;
  update reserve.reconciliation_runs
  set cursor = coalesce(p_cursor, cursor), heartbeat_at = now(), objects = objects + n,
      provider_calls = provider_calls + greatest(coalesce(p_provider_calls, 0), 0),
      items = items + found_items, repaired = repaired + fixed
  where id = r.id
  returning * into r;
  return r;
end
$function$
;
revoke all on function reserve.reconcile_provider_objects(uuid, jsonb, jsonb, integer, timestamptz) from public, anon, authenticated;
grant execute on function reserve.reconcile_provider_objects(uuid, jsonb, jsonb, integer, timestamptz) to service_role;
comment on function reserve.reconcile_provider_objects(uuid, jsonb, jsonb, integer, timestamptz) is 'One page of a provider''s payments (a JSON array of provider updates, as reserve.as_provider_update takes them) compared with ours in one transaction: items recorded, repairs applied, the run''s cursor, counts and heartbeat moved on. p_read_after, a time of this database before the page was read: a payment of ours updated since is not judged by the page (it counts as listed; a later read judges it). RC001 for a malformed page, RC802/RC803 for a run that does not exist or finished.';

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
        -- one of ours changed since the run began may have reached the provider after the listing went past
        -- where it would be (a checkout made meanwhile): not listed proves nothing of it, a later run judges
        and x.updated_at < r.started_at
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
$function$
;
comment on function reserve.finish_reconciliation_run(uuid, jsonb, text, integer) is 'Ends a run: records ours_missing_there for our paid payments created in the window, unchanged since the run began, that the provider did not list, and payout_mismatch when receivable_<provider> minus payouts on their way differs from the balance the provider reports (p_balances [{currency, amount}], null when it reports none). With p_error the run is failed and nothing is concluded. RC802/RC803 for a run that does not exist or finished.';
