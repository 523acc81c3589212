// The database half of every webhook function: one call records and applies a verified event
// (reserve.process_webhook_event), and its outcome becomes the HTTP answer the provider acts on.
import { db } from "./db.ts";
import { databaseUnavailableResponse } from "./db_response.ts";
import { errorJson, json } from "./http.ts";
import type { Provider, ProviderUpdate } from "./providers/types.ts";

export interface WebhookEvent {
  provider: Provider;
  eventId: string;
  eventType: string;
  eventAt?: Date;
  payload: unknown;
  /** null: recorded as ignored (a type we do not act on) */
  update: ProviderUpdate | null;
  /** a failure before the database, e.g. the provider's API did not answer our lookup */
  processingError?: string;
}

export interface Processed {
  webhook_id: string;
  webhook_status: string;
  duplicate: boolean;
  attempts: number;
  payment_id: string | null;
  outcome: string;
  payment_status: string | null;
  reservation_id: string | null;
  confirmation_code: string | null;
  finalize_outcome: string | null;
  error_message: string | null;
}

/** One round trip: record the event and apply it (reserve.process_webhook_event). */
export async function recordEvent(e: WebhookEvent): Promise<Processed> {
  const u = e.update;
  const sql = db();
  const [row] = await sql<Processed[]>`
      select * from reserve.process_webhook_event(
        p_provider => ${e.provider}, p_event_id => ${e.eventId}, p_event_type => ${e.eventType},
        p_event_at => ${(u?.eventAt ?? e.eventAt)?.toISOString() ?? null}, p_payload => ${sql.json(e.payload as never)},
        p_payment_id => ${u?.paymentId ?? null}, p_gateway_payment_id => ${u?.gatewayPaymentId ?? null},
        p_status => ${u?.status ?? null}, p_gateway_status => ${u?.gatewayStatus ?? null},
        p_error_code => ${u?.errorCode ?? null}, p_error_message => ${u?.errorMessage ?? null},
        p_refunded_amount => ${u?.refundedAmount ?? null},
        p_provider_object => ${u ? sql.json(u.object as never) : null},
        p_processing_error => ${e.processingError ?? null})`;
  return row;
}

export async function processEvent(fn: string, e: WebhookEvent): Promise<Response> {
  let row: Processed;
  try {
    row = await recordEvent(e);
  } catch (err) {
    // 5xx either way, so the provider redelivers: 503 when the database is away, 500 when it refused
    const unavailable = databaseUnavailableResponse(err, `${fn}: ${e.provider} event ${e.eventId}`);
    if (unavailable) return unavailable;
    const code = (err as { code?: string })?.code ?? "unknown";
    console.error(`${fn}: Processing failed for ${e.provider} event ${e.eventId}: database error ${code}`);
    return errorJson(500, "processing_failed", "the event could not be recorded; it will be retried");
  }
  const summary = {
    received: true,
    webhook_id: row.webhook_id,
    status: row.webhook_status,
    duplicate: row.duplicate,
    outcome: row.outcome,
    payment_id: row.payment_id,
    payment_status: row.payment_status,
    ...(row.reservation_id && { reservation_id: row.reservation_id, confirmation_code: row.confirmation_code }),
    ...(row.finalize_outcome && { finalize_outcome: row.finalize_outcome }),
  };
  if (row.webhook_status === "failed") {
    // the provider redelivers on a 5xx, and a failed event is processed again when it does
    console.error(`${fn}: Processing failed for ${e.provider} event ${e.eventId} (webhook ${row.webhook_id}): ${row.error_message}`);
    return json({ ...summary, error: "processing_failed", message: "the event failed and will be processed again on redelivery" }, 500);
  }
  return json(summary, 200);
}
