-- A reconciliation item stayed open until a person closed it, even when a later run compared the same
-- provider payment with ours and found them agreeing (a false refund_mismatch from a refund confirmed while
-- the page was read, an ours_missing_there whose payment the next listing carried, an object the provider
-- answers readably now): reconciliation_unrepaired fired for differences that were no longer there.
--
-- reconcile_provider_payment now clears, as repaired with a note naming the run, the open items of the
-- payment it compared whose difference that comparison did not find: the kinds it judged (refunds only
-- when it compared them, the amount only when the currency agrees) and did not record. An item whose
-- difference remains is recorded again and stays open, once. And record_reconciliation_item opens again
-- an item cleared or repaired before whose difference is found again (with what is found now), so that a
-- clearing never hides a later difference; one a person closed stays closed as before.
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
  -- the kinds of difference this comparison found, and those it found none of
  recorded reserve.reconciliation_item_kind[] := '{}';
  agreed reserve.reconciliation_item_kind[] := '{ours_missing_there,paid_not_recorded,status_mismatch,unreadable_object}';
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
  if u.currency = p.currency then
    agreed := agreed || 'currency_mismatch'::reserve.reconciliation_item_kind;
  end if;
  if u.amount = p.amount and (u.currency is null or u.currency = p.currency) then
    agreed := agreed || 'amount_mismatch'::reserve.reconciliation_item_kind;
  end if;
  if u.currency is not null and u.currency <> p.currency then
    perform reserve.record_reconciliation_item(p_run, 'currency_mismatch', u.gateway_payment_id, p.id, ours, theirs,
      format('%s payment %s is in %s, payment %s in %s', p_run.provider, u.gateway_payment_id, u.currency, p.id, p.currency));
    recorded := recorded || 'currency_mismatch'::reserve.reconciliation_item_kind;
    items := items + 1;
  elsif u.amount is not null and u.amount <> p.amount then
    perform reserve.record_reconciliation_item(p_run, 'amount_mismatch', u.gateway_payment_id, p.id, ours, theirs,
      format('%s payment %s is for %s %s, payment %s for %s %s', p_run.provider, u.gateway_payment_id, u.amount,
             coalesce(u.currency, p.currency), p.id, p.amount, p.currency));
    recorded := recorded || 'amount_mismatch'::reserve.reconciliation_item_kind;
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
    recorded := recorded || 'paid_not_recorded'::reserve.reconciliation_item_kind;
    items := items + 1;
    repaired := repaired + (i.repaired_at is not null)::int;
    select * into p from reserve.payments where id = p.id;
  elsif paid_here and not paid_there then
    -- we booked money the provider does not say it has: a person looks
    perform reserve.record_reconciliation_item(p_run, 'status_mismatch', u.gateway_payment_id, p.id, ours, theirs,
      format('payment %s is %s here, %s payment %s is %s there', p.id, p.status, p_run.provider, u.gateway_payment_id, u.status));
    recorded := recorded || 'status_mismatch'::reserve.reconciliation_item_kind;
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
    recorded := recorded || 'status_mismatch'::reserve.reconciliation_item_kind;
    items := items + 1;
    repaired := repaired + (i.repaired_at is not null)::int;
    select * into p from reserve.payments where id = p.id;
  end if;

  if paid_there and reserve.provider_says_paid(p.status) then
    -- refunds: more there is news we missed (applied); more here is money we think went back and did not
    if u.dispute_amount is null then
      agreed := agreed || 'refund_mismatch'::reserve.reconciliation_item_kind;
    end if;
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
        recorded := recorded || 'refund_mismatch'::reserve.reconciliation_item_kind;
        items := items + 1;
        repaired := repaired + (i.repaired_at is not null)::int;
        select * into p from reserve.payments where id = p.id;
      else
        if coalesce(u.refunded_amount, 0) < p.refunded_amount - charged_back and u.dispute_amount is null then
          perform reserve.record_reconciliation_item(p_run, 'refund_mismatch', u.gateway_payment_id, p.id, ours, theirs,
            format('we booked %s refunded of payment %s (%s of it charged back), %s shows %s', p.refunded_amount, p.id, charged_back,
                   p_run.provider, coalesce(u.refunded_amount, 0)));
          recorded := recorded || 'refund_mismatch'::reserve.reconciliation_item_kind;
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
        recorded := recorded || 'fee_missing'::reserve.reconciliation_item_kind;
        items := items + 1;
        repaired := repaired + 1;
      end if;
    end if;
  end if;

  -- an item an earlier run left open whose difference this comparison no longer finds is over: cleared
  -- by this run, saying so (a difference found again reopens it, record_reconciliation_item)
  update reserve.reconciliation_items x
  set repaired_at = now(),
      repair_note = format('run %s: %s payment %s and payment %s agree now (%s here, %s there)', p_run.id, p_run.provider,
                           u.gateway_payment_id, p.id, p.status, u.status)
  where x.provider = p_run.provider and x.object_id = u.gateway_payment_id and x.repaired_at is null and x.resolved_at is null
    and x.kind = any(agreed) and not x.kind = any(recorded)
    and (x.kind <> 'unreadable_object' or x.theirs ->> 'kind' = 'payment');
end
$function$
;
comment on function reserve.reconcile_provider_payment(reserve.reconciliation_runs, reserve.provider_update, timestamptz) is 'Compares one provider payment with ours and records the differences (reconciliation_items); repairs paid there / unpaid here, failed there / pending here and refunds we missed through apply_payment_status, and a missing fee through post_provider_fee. An open item of the payment whose difference the comparison no longer finds is cleared (repaired_at, a repair_note naming the run). A payment of ours updated at or after p_read_after (when the provider was read) is not judged. Internal: reconcile_provider_objects calls it.';

CREATE OR REPLACE FUNCTION reserve.record_reconciliation_item(p_run reserve.reconciliation_runs, p_kind reserve.reconciliation_item_kind, p_object_id text, p_payment_id uuid, p_ours jsonb, p_theirs jsonb, p_details text, p_repair_note text DEFAULT NULL::text)
 RETURNS reserve.reconciliation_items
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  i reserve.reconciliation_items;
begin
  insert into reserve.reconciliation_items as x (run_id, last_run_id, provider, kind, object_id, payment_id, ours, theirs,
                                                 details, repaired_at, repair_note)
  values (p_run.id, p_run.id, p_run.provider, p_kind, p_object_id, p_payment_id, p_ours, p_theirs, p_details,
          case when p_repair_note is not null then now() end, p_repair_note)
  on conflict (provider, kind, object_id) do update
    set last_run_id = excluded.last_run_id, last_seen_at = now(), theirs = excluded.theirs,
        payment_id = coalesce(x.payment_id, excluded.payment_id),
        -- a difference found again after a repair (or after a run found it gone) is open again, saying
        -- what it is now; one a person closed stays closed
        ours = case when x.repaired_at is not null and excluded.repaired_at is null and x.resolved_at is null
                    then excluded.ours else x.ours end,
        details = case when x.repaired_at is not null and excluded.repaired_at is null and x.resolved_at is null
                       then excluded.details else x.details end,
        repaired_at = case when excluded.repaired_at is null and x.resolved_at is null then null
                           else coalesce(x.repaired_at, excluded.repaired_at) end,
        repair_note = case when excluded.repaired_at is null and x.resolved_at is null then null
                           else coalesce(x.repair_note, excluded.repair_note) end
  returning * into i;
  return i;
end
$function$
;
comment on function reserve.record_reconciliation_item(reserve.reconciliation_runs, reserve.reconciliation_item_kind, text, uuid, jsonb, jsonb, text, text) is 'Records (or refreshes) one reconciliation item; with a repair note it is repaired. Without one, an item repaired or cleared before is open again (its ours and details as found now); one a person resolved stays resolved. Internal.';

comment on table reserve.reconciliation_items is 'A difference between a provider''s books and ours, found by reconciliation (unique per provider, kind and provider object: a rerun updates last_seen_at). repaired_at when it was repaired through the normal paths, or when a later run found the difference gone (its repair_note names the run); the item stays as evidence, and opens again if the difference is found again. resolved_at when a person closed it (resolve_reconciliation_item): it stays closed.';
