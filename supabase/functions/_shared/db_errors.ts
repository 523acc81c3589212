// Our SQLSTATEs (class RC) as the edge functions see them. The database lists the same codes in
// reserve.error_codes; tests/core/error_codes.test.ts keeps the two identical.

export interface DbErrorCode {
  name: string;
  http: number;
}

export const DB_ERRORS: Readonly<Record<string, DbErrorCode>> = {
  RC001: { name: "invalid_argument", http: 400 },
  RC101: { name: "unit_not_found", http: 404 },
  RC102: { name: "unit_inactive", http: 409 },
  RC103: { name: "invalid_dates", http: 400 },
  RC104: { name: "invalid_stay_length", http: 400 },
  RC105: { name: "too_many_guests", http: 400 },
  RC106: { name: "unavailable", http: 409 },
  RC107: { name: "intent_not_found", http: 404 },
  RC108: { name: "intent_not_pending", http: 409 },
  RC109: { name: "rate_limited", http: 429 },
  RC110: { name: "amount_too_small", http: 400 },
  RC111: { name: "amount_too_large", http: 400 },
  RC112: { name: "too_many_holds", http: 429 },
  RC120: { name: "booking_not_found", http: 404 },
  RC201: { name: "payment_not_found", http: 404 },
  RC202: { name: "illegal_transition", http: 409 },
  RC203: { name: "amount_mismatch", http: 409 },
  RC204: { name: "payment_in_flight", http: 409 },
  RC205: { name: "payment_not_succeeded", http: 409 },
  RC206: { name: "invalid_provider", http: 400 },
  RC207: { name: "not_a_duplicate", http: 409 },
  RC208: { name: "refund_not_possible", http: 409 },
  RC209: { name: "webhook_not_found", http: 404 },
  RC210: { name: "webhook_needs_provider", http: 409 },
  RC211: { name: "refund_request_not_found", http: 404 },
  RC212: { name: "illegal_refund_transition", http: 409 },
  RC213: { name: "money_discrepancy_not_found", http: 404 },
  RC301: { name: "reservation_not_found", http: 404 },
  RC302: { name: "illegal_reservation_transition", http: 409 },
  RC303: { name: "too_early", http: 409 },
  RC304: { name: "move_not_possible", http: 409 },
  RC401: { name: "ledger_unbalanced", http: 422 },
  RC402: { name: "ledger_append_only", http: 409 },
  RC403: { name: "ledger_direct_write", http: 403 },
  RC404: { name: "unknown_account", http: 400 },
  RC405: { name: "idempotency_conflict", http: 409 },
  RC406: { name: "correction_not_found", http: 404 },
  RC407: { name: "four_eyes_violation", http: 403 },
  RC408: { name: "correction_not_pending", http: 409 },
  RC501: { name: "operator_required", http: 403 },
  RC601: { name: "incident_not_found", http: 404 },
  RC602: { name: "illegal_incident_transition", http: 409 },
  RC603: { name: "silence_not_found", http: 404 },
  RC604: { name: "operator_not_proven", http: 403 },
  RC605: { name: "notification_not_found", http: 404 },
  RC801: { name: "provider_payout_invalid", http: 400 },
  RC802: { name: "reconciliation_run_not_found", http: 404 },
  RC803: { name: "reconciliation_run_finished", http: 409 },
  RC804: { name: "reconciliation_item_not_found", http: 404 },
};

/** The error name and HTTP status for a database error's SQLSTATE, or undefined if it is not one of ours. */
export function domainError(sqlstate: string | undefined): DbErrorCode | undefined {
  return sqlstate === undefined ? undefined : DB_ERRORS[sqlstate];
}
