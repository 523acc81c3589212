-- The repairs are proven only on the ops console's login or a personal role (require_operator): the
-- console now runs every action on reserve_ops_console, and an operator runs the runbook's repairs in psql
-- as their own role (before, only service_role could, naming anyone). as_provider_update builds
-- recover_payment's argument in the caller's session (with the checks it calls); replay_webhook and
-- retry_failed_webhooks are the runbook's and the console's replays. The runbook's other steps an operator
-- runs as their role (finalize a paid payment, rebuild the ledger's balances) are granted to them too: they
-- name nobody, and on the role audit_logs.actor is the person, not the shared login.

grant execute on function
  reserve.refund_payment(uuid, bigint, text), reserve.cancel_reservation_with_refund(uuid, text, bigint),
  reserve.refund_duplicate_charge(uuid, text), reserve.recover_payment(uuid, reserve.provider_update, text),
  reserve.mark_payment_failed(uuid, text, text), reserve.move_reservation(uuid, uuid, text),
  reserve.block_unit_dates(uuid, date, date, text), reserve.unblock_unit_dates(uuid, text),
  reserve.close_refund_request(uuid, text), reserve.retry_refund_request(uuid, text), reserve.look_up_refund(uuid, text),
  reserve.resolve_money_discrepancy(uuid, text), reserve.resolve_reconciliation_item(uuid, text),
  reserve.resolve_webhook(uuid, text), reserve.rebuild_unit_availability(uuid, date, text),
  reserve.replay_webhook(uuid), reserve.retry_failed_webhooks(integer),
  reserve.as_provider_update(jsonb), reserve.json_record_keys_check(jsonb, text, text[], text[]),
  reserve.check_provider_update(reserve.provider_update)
  to reserve_ops_console, reserve_operator;
grant execute on function reserve.finalize_reservation(uuid, uuid), reserve.rebuild_ledger_balances() to reserve_operator;

comment on role reserve_ops_console is 'The ops edge function''s login for its actions (on-call actions, runbook repairs, 4-eyes ledger corrections), which need a proven operator: it passes the subject of the operator token it verified and the operator''s name. Nobody else signs in as it.';
