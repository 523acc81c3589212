-- Before 20261207085000 a payment finalize refused (its nights sold after the hold lapsed, its intent
-- cancelled) was flagged and its money booked to refunds_payable, and then waited for an operator that
-- nothing paged: the guest's money stayed with us. What such a payment still owes back is requested now,
-- under the key finalize uses today (unsellable:<payment>), and the poller sends it. A payment an operator
-- already has in hand is left to them: sold after all (the flag is cleared), or with a refund request that
-- failed or was closed.
do $backfill$
declare
  owed record;
begin
  perform pg_catalog.set_config('reserve.actor', 'migration', true);
  for owed in
    select p.id, p.refund_reason,
           (coalesce(p.received_amount, p.amount) - p.refunded_amount
             - coalesce((select sum(r.amount) from reserve.refund_requests r
                         where r.payment_id = p.id and r.status in ('requested', 'sending', 'sent')), 0))::bigint as amount
    from reserve.payments p
    where p.refund_reason in ('nights_unavailable', 'intent_cancelled') and p.duplicate_of is null
      and p.status in ('succeeded', 'partially_refunded')
      and not exists (select 1 from reserve.refund_requests r
                      where r.payment_id = p.id and (r.request_key = 'unsellable:' || p.id or r.status in ('failed', 'closed')))
      and not exists (select 1 from reserve.reservations r where r.payment_id = p.id and r.status <> 'cancelled')
    order by p.id
  loop
    continue when owed.amount <= 0;
    perform pg_catalog.set_config('reserve.reason',
      pg_catalog.format('refund owed since finalize refused payment %s (%s), requested on deploy', owed.id, owed.refund_reason), true);
    perform reserve.request_refund(owed.id, owed.amount, owed.refund_reason, 'unsellable:' || owed.id,
      pg_catalog.format('finalize refused payment %s (%s) before it requested refunds itself; requested on deploy',
                        owed.id, owed.refund_reason));
  end loop;
end
$backfill$;
