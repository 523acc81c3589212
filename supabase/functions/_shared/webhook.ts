// Every webhook function, whatever the provider: read the raw body, let the provider's module verify and
// parse it (PaymentProvider.parseWebhook), answer a redelivery of an event already handled from its key
// (reserve.handled_webhook_event), ask the provider when the event carries no status (lookUp), and record
// it with one database call (reserve.process_webhook_event), whose outcome becomes the answer the
// provider acts on. A bad signature writes nothing (400). A verified event is always recorded:
// sanitized, its id bounded, and dead (an alert, answered 200 so the provider stops) when what it says
// cannot be applied; a payment the provider does not know (404 at the lookup) is not ours: ignored, 200.
import { db, type Sql } from "./db.ts";
import { databaseUnavailableResponse } from "./db_response.ts";
import { errorJson, json, methodNotAllowed, readBodyText } from "./http.ts";
import { sha256Hex } from "./crypto.ts";
import { hasUnsafeChars, safeText, sanitizeJson, textOf } from "./sanitize.ts";
import { storableTime } from "./times.ts";
import { UUID_TEXT } from "./uuid_text.ts";
import {
  ProviderError, UnusableAnswer, type LookupKey, type PaymentProvider, type ProviderRefund, type ProviderUpdate,
  type VerifiedEvent,
} from "./providers/types.ts";

export const MAX_WEBHOOK_BODY = 512 * 1024;
/** Seconds a provider is asked to wait before redelivering an event that came ahead of its payment's success. */
const EARLY_EVENT_RETRY_AFTER_S = 60;

const STATUSES = new Set(["pending", "processing", "succeeded", "failed", "cancelled", "expired", "refunded", "partially_refunded", "disputed"]);
const MONEY_FIELDS = ["amount", "amountReceived", "refundedAmount", "disputeAmount", "feeAmount"] as const;

/** Why an update cannot be stored as reserve.provider_update, or undefined when it can. */
export function unusableUpdate(u: ProviderUpdate): string | undefined {
  if (!STATUSES.has(u.status)) return `status ${safeText(textOf(u.status), 60)} is not a payment status`;
  if (typeof u.gatewayPaymentId !== "string" || u.gatewayPaymentId.length < 1 || u.gatewayPaymentId.length > 255) {
    return "the provider's payment id is not 1..255 characters";
  }
  // an id is matched, not shown: escaped it would name another payment, so one PostgreSQL cannot store is unusable
  if (hasUnsafeChars(u.gatewayPaymentId)) return `the provider's payment id ${safeText(u.gatewayPaymentId, 80)} has control characters or lone surrogates`;
  for (const f of MONEY_FIELDS) {
    const v = u[f];
    if (v !== undefined && !(typeof v === "number" && Number.isSafeInteger(v) && v >= 0)) return `${f} ${textOf(v).slice(0, 40)} is not a whole number of minor units`;
  }
  if (u.currency !== undefined && !/^[A-Z]{3}$/.test(u.currency)) return `currency ${safeText(textOf(u.currency), 20)} is not an ISO 4217 code`;
  if (u.paymentId !== undefined && !UUID_TEXT.test(u.paymentId)) return "the payment reference is not a uuid";
  if (u.endToEndId !== undefined && (typeof u.endToEndId !== "string" || u.endToEndId.length < 1 || u.endToEndId.length > 64)) {
    return "the endToEndId is not 1..64 characters";
  }
  if (u.endToEndId !== undefined && hasUnsafeChars(u.endToEndId)) return `the endToEndId ${safeText(u.endToEndId, 80)} has control characters or lone surrogates`;
  if (u.disputeId !== undefined && (typeof u.disputeId !== "string" || u.disputeId.length < 1 || u.disputeId.length > 255 || hasUnsafeChars(u.disputeId))) {
    return `the dispute id ${safeText(textOf(u.disputeId), 80)} is not 1..255 characters without control characters`;
  }
  if (u.eventAt !== undefined && !storableTime(u.eventAt)) return "the event time is not a time between the years 1 and 9999";
  return undefined;
}

const refundJson = (r: ProviderRefund) => ({
  refund_id: safeText(r.refundId, 255), status: r.status, amount: r.amount, currency: r.currency,
  end_to_end_id: r.endToEndId,
});

/** The update as reserve.as_provider_update takes it (snake_case keys, texts bounded and escaped). */
export function updateJson(u: ProviderUpdate): Record<string, unknown> {
  return {
    status: u.status,
    gateway_payment_id: u.gatewayPaymentId,
    payment_reference: u.paymentId,
    end_to_end_id: u.endToEndId,
    amount: u.amount,
    currency: u.currency,
    amount_received: u.amountReceived,
    refunded_amount: u.refundedAmount,
    dispute_amount: u.disputeAmount,
    dispute_id: u.disputeId,
    fee_amount: u.feeAmount,
    refunds: u.refunds?.slice(0, 100).map(refundJson),
    event_at: storableTime(u.eventAt)?.toISOString(),
    gateway_status: u.gatewayStatus === undefined ? undefined : safeText(textOf(u.gatewayStatus), 255),
    error_code: u.errorCode === undefined ? undefined : safeText(textOf(u.errorCode), 255),
    error_message: u.errorMessage === undefined ? undefined : safeText(textOf(u.errorMessage), 2000),
    provider_object: u.object === undefined || u.object === null ? undefined : sanitizeJson(u.object),
  };
}

export function refundJsonOf(r: ProviderRefund): Record<string, unknown> {
  return { ...refundJson(r), provider_object: r.object === undefined ? undefined : sanitizeJson(r.object) };
}

/** Drops undefined (JSON.stringify would anyway) so the SQL side sees absent keys, not nulls it must check. */
const compact = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));

export interface Processed {
  webhook_id: string;
  provider: string;
  event_id: string;
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

export interface EventToRecord extends VerifiedEvent {
  provider: string;
  processingError?: string;
}

/** The event id as it is sent: an id too long to send whole goes as its hash (the database bounds the rest). */
function sentEventId(id: unknown): string {
  const rawId = textOf(id);
  return rawId.length > 1024 ? `sha256:${sha256Hex(rawId)}` : safeText(rawId, 1024);
}

/**
 * The stored answer when this event was already completed or ignored (a redelivery), else undefined: one
 * small read by its key (reserve.handled_webhook_event), before the event is built, sent or looked up.
 */
export async function handledEvent(e: Pick<EventToRecord, "provider" | "eventId">, sql: Sql = db()): Promise<Processed | undefined> {
  const [row] = await sql<Processed[]>`select * from reserve.handled_webhook_event(${e.provider}, ${sentEventId(e.eventId)})`;
  return row;
}

/**
 * Whether a provider payment id is ours; with the database away, yes (the provider is asked, as before:
 * a payment is never missed for want of a read).
 */
async function knownPayment(provider: string, gatewayPaymentId: string, sql: Sql = db()): Promise<boolean> {
  try {
    const [row] = await sql<{ known: boolean }[]>`select reserve.provider_payment_known(${provider}, ${gatewayPaymentId}) as known`;
    return row?.known !== false;
  } catch {
    return true;
  }
}

/** One round trip: record the event and apply it (reserve.process_webhook_event). */
export async function recordEvent(e: EventToRecord, sql: Sql = db()): Promise<Processed> {
  let update = e.update ?? null;
  let poison = e.poison;
  if (update && !poison) {
    poison = unusableUpdate(update);
    if (poison) update = null;
  }
  const event = compact({
    provider: e.provider,
    event_id: sentEventId(e.eventId),
    event_type: safeText(textOf(e.eventType), 1024),
    event_at: storableTime(e.eventAt)?.toISOString(),
    payload: e.payload === undefined ? undefined : sanitizeJson(e.payload),
    lookup: e.lookup ? sanitizeJson(e.lookup) : undefined,
    processing_error: e.processingError === undefined ? undefined : safeText(e.processingError, 2000),
    poison: poison === undefined ? undefined : safeText(poison, 2000),
    note: e.note === undefined ? undefined : safeText(e.note, 2000),
  });
  // a payload that is not an object is kept inside one (processed_webhooks.payload is an object)
  if (event.payload !== undefined && (typeof event.payload !== "object" || event.payload === null || Array.isArray(event.payload))) {
    event.payload = { payload: event.payload };
  }
  const u = update ? compact(updateJson(update)) : null;
  const [row] = await sql<Processed[]>`
    select * from reserve.process_webhook_event(reserve.as_webhook_event(${sql.json(event as never)}),
                                                reserve.as_provider_update(${u ? sql.json(u as never) : null}))`;
  return row;
}

/**
 * What the provider says about an event that carries no status. Undefined fields: `update` null with a
 * note (the provider does not know it: not ours) or a processingError (it did not answer: retried).
 */
export async function lookUpEvent(provider: PaymentProvider, key: LookupKey, sql: Sql = db()):
  Promise<{ update: ProviderUpdate | null; note?: string; processingError?: string; poison?: string }> {
  let k = key;
  if (!k.gatewayPaymentId && Array.isArray(k.endToEndIds) && k.endToEndIds.length) {
    // a PIX endToEndId we stored (of the money received, or of a refund we sent) names our payment
    const ids = k.endToEndIds.filter((x): x is string => typeof x === "string").slice(0, 10);
    const [found] = await sql<{ gateway_payment_id: string | null }[]>`
      select gateway_payment_id from reserve.payment_by_end_to_end_id(${provider.name}, ${ids}::text[])`;
    if (!found?.gateway_payment_id) return { update: null, note: `no ${provider.name} payment of ours has endToEndId ${ids.join(" or ")}` };
    k = { ...k, gatewayPaymentId: found.gateway_payment_id };
  }
  try {
    return { update: await provider.lookUp(k) };
  } catch (err) {
    if (err instanceof UnusableAnswer) return { update: null, poison: err.message };
    if (!(err instanceof ProviderError)) {
      // an answer our module could not read (a shape it did not expect): the event is recorded failed and
      // asked about again with backoff, never a 500 that records nothing
      return { update: null, processingError: `could not read ${provider.name}'s answer about ${safeText(textOf(k.gatewayPaymentId ?? "the event"), 80)}: ${safeText(textOf((err as Error)?.message ?? err), 300)}` };
    }
    if (err.kind === "not_found") {
      return { update: null, note: `not ours: ${provider.name} does not know ${safeText(textOf(k.gatewayPaymentId ?? "it"), 80)} (${err.message})` };
    }
    return { update: null, processingError: `could not ask ${provider.name} about ${safeText(textOf(k.gatewayPaymentId ?? "the event"), 80)}: ${err.message}` };
  }
}

function answer(fn: string, e: EventToRecord, row: Processed): Response {
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
  if (row.webhook_status === "failed" && row.outcome === "ignored") {
    // a refund or dispute ahead of its payment's success (the provider's events race): nothing is wrong
    // with it, it waits, kept and retried by us; a 503 asks the provider to redeliver it later, not a 500
    console.error(`${fn}: ${e.provider} event ${row.event_id} (webhook ${row.webhook_id}) waits: ${row.error_message}`);
    return json({ ...summary, error: "waiting_for_payment", message: "the event came before its payment's success; it is kept and applied once that arrives" },
                503, { "retry-after": String(EARLY_EVENT_RETRY_AFTER_S) });
  }
  if (row.webhook_status === "failed") {
    // the provider redelivers on a 5xx, and a failed event is processed again when it does
    console.error(`${fn}: Processing failed for ${e.provider} event ${row.event_id} (webhook ${row.webhook_id}): ${row.error_message}`);
    return json({ ...summary, error: "processing_failed", message: "the event failed and will be processed again on redelivery" }, 500);
  }
  if (row.webhook_status === "dead") {
    // recorded and dead-lettered (an alert): a redelivery cannot change it, so the provider may stop
    console.error(`${fn}: Dead-lettered ${e.provider} event ${row.event_id} (webhook ${row.webhook_id}): ${row.error_message}`);
  }
  return json(summary, 200);
}

/** The whole of a webhook function for one provider. */
export async function handleWebhook(fn: string, provider: PaymentProvider, req: Request, url = new URL(req.url)): Promise<Response> {
  if (req.method !== "POST") return methodNotAllowed(["POST"]);
  if (!(await provider.webhookConfigured())) {
    console.error(`${fn}: Webhook secret not configured (${provider.name})`);
    return errorJson(500, "not_configured", "Webhook secret not configured");
  }
  const body = await readBodyText(req, MAX_WEBHOOK_BODY);
  if (body instanceof Response) return body;
  const parsed = await provider.parseWebhook(req, url, body, (id) => knownPayment(provider.name, id));
  if (parsed.kind === "refused") {
    if (parsed.signature) console.warn(`${fn}: Invalid signature (${provider.name})`);
    const res = errorJson(parsed.status, parsed.error, parsed.message);
    if (parsed.status === 503) res.headers.set("retry-after", "30");
    return res;
  }
  if (parsed.kind === "answered") return json(parsed.body, parsed.status);

  const e: EventToRecord = { ...parsed.event, provider: provider.name };
  let row: Processed;
  try {
    const handled = await handledEvent(e);
    if (handled) return answer(fn, e, handled);
    if (!e.update && e.lookup && !e.poison) Object.assign(e, await lookUpEvent(provider, e.lookup));
    row = await recordEvent(e);
  } catch (err) {
    // 5xx either way, so the provider redelivers: 503 when the database is away, 500 when it refused
    const unavailable = databaseUnavailableResponse(err, `${fn}: ${provider.name} event ${safeText(textOf(e.eventId), 120)}`);
    if (unavailable) return unavailable;
    const code = (err as { code?: string })?.code ?? "unknown";
    console.error(`${fn}: Processing failed for ${provider.name} event ${safeText(textOf(e.eventId), 120)}: database error ${code}`);
    return errorJson(500, "processing_failed", "the event could not be recorded; it will be retried");
  }
  return answer(fn, e, row);
}
