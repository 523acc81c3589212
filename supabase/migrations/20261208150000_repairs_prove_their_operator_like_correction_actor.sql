-- The runbook's repairs (refund_payment, cancel_reservation_with_refund, refund_duplicate_charge,
-- recover_payment, mark_payment_failed, move_reservation, block/unblock_unit_dates, the refund queue's
-- look_up/retry/close, resolve_money_discrepancy, resolve_reconciliation_item, resolve_webhook,
-- rebuild_unit_availability) took their operator from require_operator, which believed a typed
-- `set local reserve.actor = 'x'` or a request.jwt.claims sub on the shared postgres / service_role login:
-- anyone holding that login refunded money in anyone's name. require_operator now proves the operator as
-- ledger corrections and on-call actions do (correction_actor): a personal login role in reserve_operator
-- is the role (a reserve.actor naming someone else is refused); the ops console's own login
-- (reserve_ops_console) is the name it set in reserve.actor from the token it verified, with the token's
-- sub in reserve.operator_subject (only the console holds that login); any other login is RC604 and the
-- repair writes nothing. A missing reason stays RC501. No scheduled job or SQL function calls a repair, so
-- there is no system path to keep.
-- named_actor (used by no function since correction_actor) is proven the same way, so that nothing left in
-- the schema takes a typed name.

create or replace function reserve.require_operator(p_action text, p_reason text) returns text
language plpgsql
security definer
set search_path = ''
as $$
begin
  if coalesce(pg_catalog.length(pg_catalog.btrim(p_reason)), 0) = 0 then
    raise exception using errcode = 'RC501',
      message = pg_catalog.format('%s needs a reason (p_reason): what happened, with the incident id', p_action);
  end if;
  -- reserve.actor is a name to prove, not a proof: the console's from its verified token, on a personal
  -- role the role's own (another person's is refused), on a shared login nothing (RC604)
  return (reserve.correction_actor(p_action, nullif(pg_catalog.btrim(pg_catalog.current_setting('reserve.actor', true)), ''),
                                   p_reason)).name;
end
$$;
comment on function reserve.require_operator(text, text) is 'The proven operator of a runbook repair, proven as for a ledger correction (correction_actor): on a personal login role in reserve_operator the role (reserve.actor, if set, must be its own name); on the ops console''s login (reserve_ops_console) the name it set in reserve.actor with the verified token''s subject in reserve.operator_subject; RC604 for any other login (postgres, service_role), whatever reserve.actor or request.jwt.claims say. RC501 without a reason. Sets reserve.actor and reserve.reason for the audit trail.';

create or replace function reserve.named_actor() returns text
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  reason text := pg_catalog.current_setting('reserve.reason', true);
  who text;
begin
  who := (reserve.correction_actor('named_actor', nullif(pg_catalog.btrim(pg_catalog.current_setting('reserve.actor', true)), ''),
                                   'a named person')).name;
  -- correction_actor records its own reason: the caller's stays
  perform pg_catalog.set_config('reserve.reason', coalesce(reason, ''), true);
  return who;
end
$$;
comment on function reserve.named_actor() is 'The proven person acting (correction_actor: a personal login role in reserve_operator, or the ops console''s login with the verified token''s subject and the name in reserve.actor); RC604 on any other login, whatever reserve.actor or request.jwt.claims say. Used by no function today.';
revoke all on function reserve.named_actor() from public, anon, authenticated;

update reserve.error_codes
set description = 'A repair needs a reason (p_reason); who runs it is proven as for RC604.'
where sqlstate = 'RC501';
update reserve.error_codes
set description = 'An on-call action, a runbook repair or a ledger correction decision needs an identity proven by a personal login role in reserve_operator or by the ops console''s own login with a verified operator token (a name typed on a shared login proves nobody), and a reason.'
where sqlstate = 'RC604';

-- the repairs' comments named RC501 for a missing operator: it is RC604 now (require_operator)
comment on function reserve.recover_payment(uuid, reserve.provider_update, text) is 'Applies what the provider''s dashboard shows (reserve.as_provider_update(''{"status": "succeeded", "amount_received": 64000, "currency": "BRL"}'')) to a stuck or PIX payment through apply_payment_status: a success for our price is finalized (reservation and receipt); another amount or currency is booked as owed back and refunded (outcome applied, finalize_outcome amount_mismatch); a refund beyond the money received is refused (outcome refused). A failure, cancellation or expiry frees the intent''s nights if nothing else is in flight. Idempotent (a repeat writes nothing); RC001 for a success without the amount received, RC202 for an illegal move, RC604 without a proven operator (a personal role in reserve_operator, or the ops console''s login), RC501 without a reason.';
comment on function reserve.close_refund_request(uuid, text) is 'Ends a refund request the queue will not finish: requested (not to be sent), failed, or sent but never confirmed. Nothing is sent for it any more and it leaves the refunds_stuck alert; the ledger is not touched (a refund made at the provider by other means is recorded with recover_payment, which posts it). Idempotent; RC212 for a confirmed or sending request, RC604 without a proven operator (a personal role in reserve_operator, or the ops console''s login), RC501 without a reason.';
comment on function reserve.retry_refund_request(uuid, text) is 'Queues a failed refund request again as a new request (retry_of the old one, which is closed), sent by the poller with its own idempotency key. Idempotent: a second call returns the same new request. RC212 for a request that is not failed, RC208 when the payment no longer holds the amount, RC604 without a proven operator (a personal role in reserve_operator, or the ops console''s login), RC501 without a reason.';
comment on function reserve.look_up_refund(uuid, text) is 'A sent refund is looked up at the provider, a requested one sent, at the next poller run instead of after its backoff. Other requests are left alone. RC604 without a proven operator (a personal role in reserve_operator, or the ops console''s login), RC501 without a reason.';
comment on function reserve.resolve_money_discrepancy(uuid, text) is 'Closes a money discrepancy an operator has dealt with (the refund confirmed, the provider''s support answered), with who and why; it leaves the money_mismatch alert. Idempotent; RC213 unknown id, RC604 without a proven operator (a personal role in reserve_operator, or the ops console''s login), RC501 without a reason.';
comment on function reserve.resolve_reconciliation_item(uuid, text) is 'A proven operator closes a reconciliation item with what was done (a refund at the provider, a recovery). Idempotent; RC604 without a proven operator (a personal role in reserve_operator, or the ops console''s login), RC501 without a reason, RC804 for no such item.';
