-- A payout's status could move backwards: paid, then failed (both booked), then a stale paid, then
-- in_transit left the row in transit with its money both paid and reversed, and finish_reconciliation_run
-- counted it as on its way: a payout_mismatch against a right balance. A status now only moves on.
CREATE OR REPLACE FUNCTION reserve.record_provider_payout(p_provider text, p_payout reserve.provider_payout)
 RETURNS reserve.provider_payouts
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  o reserve.provider_payout;
  x reserve.provider_payouts;
  bank text;
  tx reserve.ledger_transactions;
begin
  if p_provider is null or p_provider not in ('stripe', 'mercadopago', 'openpix') then
    raise exception using errcode = 'RC001', message = format('provider %s is unknown', coalesce(p_provider, 'null'));
  end if;
  o := reserve.check_provider_payout(p_payout);
  -- the bucket before any row, so that a wait for it holds none
  if coalesce(pg_catalog.current_setting('reserve.balance_bucket', true), '') = '' then
    perform reserve.claim_balance_bucket();
  end if;
  insert into reserve.provider_payouts as y (provider, provider_payout_id, amount, currency, status, provider_created_at,
                                             arrival_at, provider_object)
  values (p_provider, o.payout_id, o.amount, o.currency, o.status, o.created_at, o.arrival_at, o.provider_object)
  on conflict (provider, provider_payout_id) do update
    set status = excluded.status, arrival_at = coalesce(excluded.arrival_at, y.arrival_at),
        provider_object = coalesce(excluded.provider_object, y.provider_object), updated_at = now()
    where (y.status, y.arrival_at, y.provider_object) is distinct from
          (excluded.status, coalesce(excluded.arrival_at, y.arrival_at), coalesce(excluded.provider_object, y.provider_object))
      -- a payout only moves on (pending, in transit, paid, then failed or canceled): a stale read of an
      -- earlier status, listed late, would count a paid payout as on its way again
      and (case excluded.status when 'pending' then 0 when 'in_transit' then 1 when 'paid' then 2 else 3 end)
          >= (case y.status when 'pending' then 0 when 'in_transit' then 1 when 'paid' then 2 else 3 end)
  returning * into x;
  -- the row as it is, locked, whether this call changed it or not
  select * into x from reserve.provider_payouts where provider = p_provider and provider_payout_id = o.payout_id for update;
  if (x.amount, x.currency) is distinct from (o.amount, o.currency) then
    raise exception using errcode = 'RC801',
      message = format('%s payout %s was %s %s, now said to be %s %s: a payout''s amount never changes',
                       p_provider, o.payout_id, x.amount, x.currency, o.amount, o.currency);
  end if;
  bank := reserve.bank_account(x.currency);
  if x.status = 'paid' and x.paid_transaction_id is null then
    tx := reserve.post_ledger_transaction('provider_payout',
      format('%s payout %s to the bank: %s %s', p_provider, x.provider_payout_id, x.amount, x.currency),
      jsonb_build_array(reserve.ledger_leg(bank, 'debit', x.amount, 'payout', x.currency),
                        reserve.ledger_leg(reserve.receivable_account(p_provider), 'credit', x.amount, 'payout', x.currency)),
      format('payout:%s:%s', p_provider, x.provider_payout_id));
    update reserve.provider_payouts set paid_transaction_id = tx.id where id = x.id returning * into x;
  elsif x.status in ('failed', 'canceled') and x.paid_transaction_id is not null and x.reversal_transaction_id is null then
    -- a payout can fail after it was reported paid: the money comes back to our balance at the provider
    tx := reserve.post_ledger_transaction('reversal',
      format('%s payout %s %s: %s %s back at the provider', p_provider, x.provider_payout_id, x.status, x.amount, x.currency),
      jsonb_build_array(reserve.ledger_leg(reserve.receivable_account(p_provider), 'debit', x.amount, 'reversal', x.currency),
                        reserve.ledger_leg(bank, 'credit', x.amount, 'reversal', x.currency)),
      format('payout_reversal:%s:%s', p_provider, x.provider_payout_id), null, null, null, x.paid_transaction_id);
    update reserve.provider_payouts set reversal_transaction_id = tx.id where id = x.id returning * into x;
  end if;
  return x;
end
$function$;
