-- The ledger books the money the provider received, in its own amount and currency: a receipt debits
-- the provider's receivable with what arrived, and a refund or chargeback credits it back in that
-- currency. A stay is sold only when what arrived is our price (apply_payment_status refuses the rest,
-- which is then owed back in full), so the host's share and our commission are still our amount.

create or replace function reserve.post_payment_receipt(p_payment_id uuid, p_fulfilled boolean, p_reservation_id uuid default null)
returns reserve.ledger_transactions
language plpgsql
security definer
set search_path = ''
as $$
declare
  p reserve.payments;
  city text;
  received bigint;
  currency text;
  legs jsonb;
begin
  select * into p from reserve.payments where id = p_payment_id;
  select bi.city_code into city from reserve.booking_intents bi where bi.id = p.booking_intent_id;
  received := coalesce(p.received_amount, p.amount);
  currency := coalesce(p.received_currency, p.currency);
  if p_fulfilled and (received, currency) is distinct from (p.amount, p.currency) then
    raise exception using errcode = 'RC203',
      message = format('payment %s received %s %s, not its price %s %s: a stay is never sold for money that did not arrive',
                       p.id, received, currency, p.amount, p.currency);
  end if;
  legs := jsonb_build_array(reserve.ledger_leg(reserve.receivable_account(p.provider), 'debit', received, 'guest_payment', currency))
          || case when p_fulfilled then reserve.earned_legs(p.amount, p.currency)
                  else jsonb_build_array(reserve.ledger_leg('refunds_payable', 'credit', received, 'refund', currency)) end;
  return reserve.post_ledger_transaction(
    case when p.duplicate_of is not null then 'duplicate_charge' else 'payment' end,
    format('%s payment %s (%s)', p.provider, p.id,
           case when p_fulfilled then 'stay sold'
                when (received, currency) is distinct from (p.amount, p.currency)
                  then format('%s %s received for a price of %s %s: owed back', received, currency, p.amount, p.currency)
                else coalesce(p.refund_reason, 'to refund') end),
    legs, 'receipt:' || p.id, p.id, p_reservation_id, city);
end
$$;
comment on function reserve.post_payment_receipt(uuid, boolean, uuid) is
  'Posts the one receipt transaction of a payment whose money arrived (key receipt:<payment id>), in the '
  'amount and currency received: host share and commission when the stay is sold (only for exactly our '
  'price, else RC203), else the whole of it to refunds_payable.';

create or replace function reserve.post_payment_refund() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  delta bigint := new.refunded_amount - old.refunded_amount;
  -- a lost dispute; a refund recorded while a dispute is open is still a refund
  chargeback boolean := old.status = 'disputed' and new.status = 'refunded';
  currency text := coalesce(new.received_currency, new.currency);
  city text;
  receipt uuid;
  set_aside bigint;
  from_set_aside bigint;
  rest bigint;
  legs jsonb := '[]'::jsonb;
begin
  select bi.city_code into city from reserve.booking_intents bi where bi.id = new.booking_intent_id;
  select id into receipt from reserve.ledger_transactions where idempotency_key = 'receipt:' || new.id;
  if receipt is null then
    -- refunded before it was ever finalized (a manual UPDATE): the money still came in first
    receipt := (reserve.post_payment_receipt(new.id, false)).id;
  end if;

  set_aside := reserve.payment_ledger_balance(new.id, array['refunds_payable']);
  from_set_aside := least(delta, greatest(set_aside, 0));
  rest := delta - from_set_aside;

  if from_set_aside > 0 then
    legs := legs || reserve.ledger_leg('refunds_payable', 'debit', from_set_aside, 'refund', currency);
  end if;
  if rest > 0 then
    legs := legs || reserve.earned_refund_legs(new.id, rest, currency);
  end if;
  legs := legs || reserve.ledger_leg(reserve.receivable_account(new.provider), 'credit', delta, 'refund', currency);

  perform reserve.post_ledger_transaction(
    case when chargeback then 'chargeback' else 'refund' end,
    format('%s of payment %s: %s of %s %s refunded', case when chargeback then 'Chargeback' else 'Refund' end,
           new.id, new.refunded_amount, coalesce(new.received_amount, new.amount), currency),
    legs, format('refund:%s:%s', new.id, new.refunded_amount), new.id, null, city);

  update reserve.reservations
  set payment_status = case when new.refunded_amount = coalesce(new.received_amount, new.amount) then 'refunded' else 'partially_refunded' end
  where payment_id = new.id;
  return null;
end
$$;
comment on function reserve.post_payment_refund() is
  'AFTER UPDATE trigger: each increase of payments.refunded_amount posts one refund (or chargeback) '
  'ledger transaction in the currency received and updates the reservation''s payment_status.';
