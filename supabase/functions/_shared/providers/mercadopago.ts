// MercadoPago (PIX): payment creation and lookup, refunds, and its two kinds of notification, all reduced
// to the normalized ProviderUpdate / ProviderRefund. Plain fetch: the official SDK's base URL cannot be
// pointed at the sandbox, and it makes a fresh idempotency key per call unless given one.
// Money: transaction_amount (decimal reais) and currency_id, transaction_details.total_paid_amount (what
// arrived), transaction_amount_refunded, fee_details (the fee the collector pays).
//
// Notifications carry no status, so the payment is always fetched from MercadoPago with our token:
//   * webhooks (x-signature: HMAC-SHA256 of `id:<data.id>;request-id:<x-request-id>;ts:<ts>;`) are
//     verified, and ts must be within SIGNATURE_WINDOW_MS of now. The sources disagree on its unit:
//     MercadoPago's documented example delivery carries a 13-digit ts (ts=1742505638683, milliseconds)
//     and sdk-python's docstring says ts=<ms>, while the SDKs compare it as seconds since their 2026 fix
//     (sdk-python #142, sdk-java #393, sdk-php #647: "ts header value compared in seconds against a
//     millisecond clock"). Both units are accepted: 13 digits and up is milliseconds.
//   * IPN (`?topic=payment&id=...`, unsigned by design) is never trusted: the payment it names is fetched;
//     one MercadoPago does not know is answered 200 and nothing is written. Our payments opt out of IPN
//     with source_news=webhooks in their notification_url; an IPN that still comes is handled that way.
import { hmacSha256Hex, sha256Hex, timingSafeEqual } from "../crypto.ts";
import { textOf } from "../sanitize.ts";
import type { MercadoPagoSettings } from "../provider_config.ts";
import {
  answeredRefund, asUuid, fromDecimal, presentStrings, ProviderError, providerJson, readEach, timeOf, upperCurrency, UnusableAnswer, type KnownPayment, type ListCursor, type ListWindow,
  type MoneyMoves, type PaymentPage, type PaymentProvider, type PaymentStatus, type ProviderRefund, type ProviderUpdate, type UnreadableObject,
  type WebhookParse,
} from "./types.ts";

type Obj = Record<string, any>;

export interface MercadoPagoConfig {
  accessToken: string;
  apiBase?: string;
  timeoutMs?: number;
}

export interface MercadoPagoPayment {
  id: number;
  status: string;
  status_detail?: string;
  transaction_amount: number;
  transaction_amount_refunded?: number;
  currency_id?: string;
  date_created?: string;
  date_last_updated?: string;
  date_of_expiration?: string | null;
  external_reference?: string | null;
  transaction_details?: { total_paid_amount?: number; net_received_amount?: number } | null;
  fee_details?: { type?: string; amount?: number; fee_payer?: string }[] | null;
  refunds?: { id?: number | string; amount?: number; status?: string }[] | null;
  point_of_interaction?: { type?: string; transaction_data?: { qr_code?: string; qr_code_base64?: string; ticket_url?: string; e2e_id?: string | null } };
}

/** How far a notification's signed ts may be from now. */
export const SIGNATURE_WINDOW_MS = 5 * 60_000;

/** MercadoPago's ids are numbers; anything else in a path is refused before it reaches the API. */
export const MERCADOPAGO_ID = /^[0-9A-Za-z_-]{1,64}$/;

const base = (cfg: MercadoPagoConfig) => (cfg.apiBase ?? "https://api.mercadopago.com").replace(/\/$/, "");

function call<T>(cfg: MercadoPagoConfig, method: string, path: string, what: string, body?: unknown, idempotencyKey?: string): Promise<T> {
  return providerJson<T>("mercadopago", `${base(cfg)}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${cfg.accessToken}`,
      ...(body !== undefined && { "content-type": "application/json" }),
      ...(idempotencyKey && { "x-idempotency-key": idempotencyKey }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  }, cfg.timeoutMs ?? 10_000, what);
}

/** MercadoPago wants local time with its offset (yyyy-MM-ddTHH:mm:ss.SSS-03:00); Brazil has no DST. */
export function saoPauloTimestamp(at: Date): string {
  return `${new Date(at.getTime() - 3 * 3600_000).toISOString().replace("Z", "")}-03:00`;
}

export function getMercadoPagoPayment(cfg: MercadoPagoConfig, id: string): Promise<MercadoPagoPayment> {
  if (!MERCADOPAGO_ID.test(id)) {
    return Promise.reject(new ProviderError("mercadopago", "rejected", `mercadopago payment id ${JSON.stringify(id.slice(0, 80))} is malformed`));
  }
  return call(cfg, "GET", `/v1/payments/${id}`, "get payment");
}

/** The signed ts in milliseconds, whichever unit it was sent in; undefined unless digits. */
export function signatureTimeMs(ts: string): number | undefined {
  if (!/^\d{1,16}$/.test(ts)) return undefined;
  const n = Number(ts);
  return ts.length >= 13 ? n : n * 1000;
}

/**
 * x-signature is `ts=<ts>,v1=<hex>`: HMAC-SHA256 of `id:<data.id>;request-id:<x-request-id>;ts:<ts>;`
 * with data.id from the query string; absent parts are left out. The docs lowercase data.id, the SDKs
 * (since 2026-06) keep its case: either is accepted. With `now`, ts must also be within the window.
 */
export async function verifyMercadoPagoSignature(
  xSignature: string | null, xRequestId: string | null, dataId: string | null, secret: string, now?: number,
): Promise<boolean> {
  if (!xSignature || xSignature.length > 1024) return false;
  const parts = new Map<string, string>();
  for (const part of xSignature.split(",")) {
    const i = part.indexOf("=");
    if (i > 0) parts.set(part.slice(0, i).trim().toLowerCase(), part.slice(i + 1).trim());
  }
  const ts = parts.get("ts");
  const v1 = parts.get("v1");
  if (!ts || !v1) return false;
  if (now !== undefined) {
    const at = signatureTimeMs(ts);
    if (at === undefined || Math.abs(now - at) > SIGNATURE_WINDOW_MS) return false;
  }
  const manifest = `${dataId ? `id:${dataId};` : ""}${xRequestId ? `request-id:${xRequestId};` : ""}ts:${ts};`;
  const candidates = new Set([manifest, manifest.replace(`id:${dataId};`, `id:${dataId?.toLowerCase()};`)]);
  for (const m of candidates) {
    if (timingSafeEqual(hmacSha256Hex(secret, m), v1.toLowerCase())) return true;
  }
  return false;
}

const refundState = (s: unknown): ProviderRefund["status"] =>
  s === "approved" ? "succeeded" : s === "rejected" || s === "cancelled" ? "failed" : "pending";

function refundOf(r: Obj, currency?: string): ProviderRefund {
  return { refundId: textOf(r.id), status: refundState(r.status), amount: fromDecimal(r.amount, "refund amount"), currency, object: r };
}

/** A MercadoPago Payment as our status. */
export function mercadoPagoUpdate(p: MercadoPagoPayment): ProviderUpdate {
  const amount = fromDecimal(p.transaction_amount, "transaction_amount");
  const refunded = fromDecimal(p.transaction_amount_refunded, "transaction_amount_refunded") ?? 0;
  let status: PaymentStatus;
  switch (p.status) {
    case "approved":
      // a partial refund keeps status approved and grows transaction_amount_refunded
      status = refunded > 0 ? (amount !== undefined && refunded >= amount ? "refunded" : "partially_refunded") : "succeeded";
      break;
    case "authorized":
    case "in_process":
      status = "processing";
      break;
    case "rejected":
      status = "failed";
      break;
    case "cancelled":
      status = p.status_detail === "expired" ? "expired" : "cancelled";
      break;
    case "refunded":
    case "charged_back":
      status = "refunded";
      break;
    case "in_mediation":
      status = "disputed";
      break;
    default:
      status = "pending";
  }
  const paid = ["approved", "refunded", "charged_back", "in_mediation"].includes(p.status);
  const currency = upperCurrency(p.currency_id);
  // the collector's fees: what MercadoPago keeps of what arrived
  const fees = (Array.isArray(p.fee_details) ? p.fee_details : [])
    .filter((f) => f?.fee_payer === undefined || f.fee_payer === "collector")
    .map((f) => fromDecimal(f?.amount, "fee amount") ?? 0);
  return {
    status,
    gatewayPaymentId: textOf(p.id),
    paymentId: asUuid(p.external_reference),
    endToEndId: p.point_of_interaction?.transaction_data?.e2e_id || undefined,
    amount,
    currency,
    amountReceived: paid ? fromDecimal(p.transaction_details?.total_paid_amount, "total_paid_amount") ?? amount : undefined,
    eventAt: timeOf(p.date_last_updated),
    gatewayStatus: p.status_detail ? `${textOf(p.status)}/${textOf(p.status_detail)}` : p.status,
    errorCode: status === "failed" ? p.status_detail : undefined,
    refundedAmount: status === "refunded" ? (refunded || undefined) : refunded || undefined,
    feeAmount: paid && fees.length ? fees.reduce((a, b) => a + b, 0) : undefined,
    refunds: Array.isArray(p.refunds) ? p.refunds.filter((r) => r && r.id != null).map((r) => refundOf(r, currency)) : undefined,
    object: p,
  };
}

/**
 * One page of /v1/payments/search over date_created in [from, to], oldest first (payments made while
 * paging land after the cursor, not before it), with `offset` as the cursor. A listed payment says its
 * refunded amount even when it is nothing.
 */
export async function searchMercadoPagoPayments(cfg: MercadoPagoConfig, window: ListWindow, cursor: ListCursor | null, pageSize: number): Promise<PaymentPage> {
  const offset = typeof cursor?.offset === "number" && Number.isSafeInteger(cursor.offset) && cursor.offset >= 0 ? cursor.offset : 0;
  const limit = Math.min(Math.max(pageSize, 1), 1000);
  const q = new URLSearchParams({
    sort: "date_created", criteria: "asc", range: "date_created",
    begin_date: saoPauloTimestamp(window.from), end_date: saoPauloTimestamp(new Date(window.to.getTime() - 1)),
    limit: String(limit), offset: String(offset),
  });
  const page = await call<{ paging?: { total?: number }; results?: MercadoPagoPayment[] }>(cfg, "GET", `/v1/payments/search?${q}`, "search payments");
  const results = Array.isArray(page?.results) ? page.results : [];
  const total = typeof page?.paging?.total === "number" ? page.paging.total : 0;
  const unreadable: UnreadableObject[] = [];
  return {
    updates: readEach(results, "payment",
      (p) => ({ ...mercadoPagoUpdate(p), refundedAmount: fromDecimal(p.transaction_amount_refunded, "transaction_amount_refunded") ?? 0 }), unreadable),
    next: results.length && offset + results.length < total ? { offset: offset + results.length } : null,
    calls: 1,
    unreadable,
  };
}

/**
 * Payments whose money moved in the window after they were made: /v1/payments/search over
 * date_last_updated (a refund or a chargeback updates the payment), those with anything refunded or
 * charged back. MercadoPago's disputes ride on the payment (charged_back, in_mediation): none listed apart.
 */
export async function mercadoPagoMoneyMoves(cfg: MercadoPagoConfig, window: ListWindow): Promise<MoneyMoves> {
  const ids: string[] = [];
  const unreadable: UnreadableObject[] = [];
  let calls = 0;
  for (let offset = 0; ;) {
    const q = new URLSearchParams({
      sort: "date_last_updated", criteria: "asc", range: "date_last_updated",
      begin_date: saoPauloTimestamp(window.from), end_date: saoPauloTimestamp(new Date(window.to.getTime() - 1)),
      limit: "1000", offset: String(offset),
    });
    const page = await call<{ paging?: { total?: number }; results?: MercadoPagoPayment[] }>(cfg, "GET", `/v1/payments/search?${q}`, "search updated payments");
    calls++;
    const results = Array.isArray(page?.results) ? page.results : [];
    readEach(results, "payment", (p) => {
      const refunded = fromDecimal(p.transaction_amount_refunded, "transaction_amount_refunded") ?? 0;
      if ((refunded > 0 || p.status === "refunded" || p.status === "charged_back" || p.status === "in_mediation") && p.id !== undefined) ids.push(textOf(p.id));
    }, unreadable);
    offset += results.length;
    if (!results.length || offset >= (typeof page?.paging?.total === "number" ? page.paging.total : 0)) break;
  }
  return { gatewayPaymentIds: ids, disputes: [], calls, unreadable };
}

/** The PIX codes of a payment (its point_of_interaction), those it has. */
function mercadoPagoPayFields(p: MercadoPagoPayment | null): Record<string, string> {
  const data = p?.point_of_interaction?.transaction_data;
  return presentStrings({ qr_code: data?.qr_code, qr_code_base64: data?.qr_code_base64, ticket_url: data?.ticket_url });
}

export function mercadoPagoProvider(settings: () => MercadoPagoSettings): PaymentProvider {
  const cfg = (): MercadoPagoConfig => {
    const s = settings();
    if (!s.accessToken) throw new ProviderError("mercadopago", "not_configured", "mercadopago is not configured (MERCADOPAGO_ACCESS_TOKEN)");
    return { accessToken: s.accessToken, apiBase: s.apiBase };
  };
  const readPayment = async (id: string) => mercadoPagoUpdate(await getMercadoPagoPayment(cfg(), id));

  /** An IPN: nothing in it is trusted; the payment it names is read from MercadoPago. */
  async function ipn(url: URL, known?: KnownPayment): Promise<WebhookParse> {
    const topic = url.searchParams.get("topic");
    const id = url.searchParams.get("id") ?? "";
    if (topic !== "payment") {
      return { kind: "answered", status: 200, body: { received: true, status: "ignored", message: `IPN topic ${textOf(topic).slice(0, 40)} is not acted on` } };
    }
    if (!/^\d{1,20}$/.test(id)) return { kind: "refused", status: 400, error: "invalid_event", message: "an IPN names a payment by its numeric id" };
    // unsigned: only a payment of ours is worth a call with our token (anyone can post ids); one whose
    // checkout has not yet recorded its id is told by its next notification and the poller
    if (known && !(await known(id))) {
      return { kind: "answered", status: 200, body: { received: true, status: "ignored", message: `payment ${id} is none of ours` } };
    }
    let update: ProviderUpdate;
    try {
      update = await readPayment(id);
    } catch (err) {
      if (err instanceof ProviderError && err.kind === "not_found") {
        // not a payment of this account: MercadoPago must stop asking, and nobody proved anything
        return { kind: "answered", status: 200, body: { received: true, status: "ignored", message: `mercadopago does not know payment ${id}` } };
      }
      if (err instanceof UnusableAnswer) {
        return { kind: "event", event: { eventId: `ipn:payment:${id}:unusable`, eventType: "ipn.payment", payload: { topic, id }, poison: err.message } };
      }
      if (err instanceof ProviderError) {
        return { kind: "refused", status: 503, error: "provider_unavailable", message: `mercadopago did not answer the lookup of ${id}; retry later` };
      }
      throw err;
    }
    // a fetched state is the event: the same state notified twice is one event
    const eventId = `ipn:payment:${textOf(update.gatewayPaymentId)}:${textOf(update.gatewayStatus)}:${update.eventAt?.toISOString() ?? "-"}`;
    return { kind: "event", event: { eventId, eventType: "ipn.payment", payload: { topic, id, verified_by: "lookup" }, update } };
  }

  return {
    name: "mercadopago",
    methods: ["pix"],
    configured: () => !!settings().accessToken,
    webhookConfigured: () => !!settings().accessToken && !!settings().webhookSecret,

    async createPayment(r) {
      const s = settings();
      const notificationUrl = s.notificationUrl && `${s.notificationUrl}?source_news=webhooks`;
      if (!r.payer.email) throw new ProviderError("mercadopago", "rejected", "mercadopago needs the payer's e-mail");
      const p = await call<MercadoPagoPayment>(cfg(), "POST", "/v1/payments", "create payment", {
        transaction_amount: r.amount / 100,
        description: r.description,
        payment_method_id: "pix",
        payer: { email: r.payer.email, ...(r.payer.name && { first_name: r.payer.name }) },
        external_reference: r.paymentId,
        ...(notificationUrl && { notification_url: notificationUrl }),
        date_of_expiration: saoPauloTimestamp(r.expiresAt),
        metadata: { payment_id: r.paymentId },
      }, r.idempotencyKey);
      return { update: mercadoPagoUpdate(p), pay: mercadoPagoPayFields(p) };
    },

    payFields: (stored) => mercadoPagoPayFields(stored as MercadoPagoPayment | null),

    readPayment,

    async parseWebhook(req, url, body, known): Promise<WebhookParse> {
      const xSignature = req.headers.get("x-signature");
      if (!xSignature && (url.searchParams.has("topic") || url.searchParams.has("id")) && !url.searchParams.has("data.id")) return ipn(url, known);
      const secret = settings().webhookSecret!;
      const dataId = url.searchParams.get("data.id") ?? url.searchParams.get("id");
      const requestId = req.headers.get("x-request-id");
      if (!xSignature) return { kind: "refused", status: 400, error: "missing_signature", message: "the x-signature header is missing" };
      if (!(await verifyMercadoPagoSignature(xSignature, requestId, dataId, secret, Date.now()))) {
        return { kind: "refused", status: 400, error: "invalid_signature", signature: true,
                 message: `the x-signature does not match this notification, or its ts is over ${SIGNATURE_WINDOW_MS / 1000} s from now` };
      }
      // signed: from here on the notification is recorded, whatever its body says (which is not signed)
      let n: Obj = {};
      try {
        const v = body.trim() ? JSON.parse(body) : {};
        if (v && typeof v === "object" && !Array.isArray(v)) n = v;
      } catch {
        // the body is not signed: the query string and headers are what counts
      }
      const type = typeof n.type === "string" ? n.type : url.searchParams.get("type") ?? url.searchParams.get("topic") ?? "";
      const action = typeof n.action === "string" ? n.action : type;
      // the event id comes from what is signed (data.id and x-request-id), and only the notification's own
      // fields are kept, so a replayed signature cannot make up events or store junk
      const ts = xSignature.match(/ts=([^,]+)/)?.[1];
      const eventId = `${dataId ?? "-"}:${requestId ?? ts}`;
      const eventType = action || type || "notification";
      const payload = { id: n.id, action, type, data: { id: dataId }, date_created: n.date_created, live_mode: n.live_mode };
      if (!dataId || !MERCADOPAGO_ID.test(dataId)) {
        return { kind: "event", event: { eventId: `${sha256Hex(eventId).slice(0, 40)}:malformed`, eventType, payload,
                                         poison: `the notification names no payment MercadoPago could have (data.id ${JSON.stringify((dataId ?? "").slice(0, 80))})` } };
      }
      if (type !== "payment") return { kind: "event", event: { eventId, eventType, payload, update: null, note: `notification type ${type.slice(0, 60) || "(none)"} is not acted on` } };
      return { kind: "event", event: { eventId, eventType, payload, lookup: { gatewayPaymentId: dataId } } };
    },

    async lookUp(key) {
      if (typeof key.gatewayPaymentId !== "string") throw new ProviderError("mercadopago", "not_found", "the event names no payment");
      // a signed notification naming a payment no request can ask about: asking again never helps (dead, not retried)
      if (!MERCADOPAGO_ID.test(key.gatewayPaymentId)) {
        throw new UnusableAnswer(`mercadopago payment id ${JSON.stringify(key.gatewayPaymentId.slice(0, 80))} is malformed`);
      }
      return readPayment(key.gatewayPaymentId);
    },

    async createRefund(r) {
      if (!MERCADOPAGO_ID.test(r.gatewayPaymentId)) {
        throw new ProviderError("mercadopago", "rejected", `mercadopago payment id ${JSON.stringify(r.gatewayPaymentId)} is malformed`);
      }
      const refund = await call<Obj>(cfg(), "POST", `/v1/payments/${r.gatewayPaymentId}/refunds`, "refund payment",
        { amount: r.amount / 100 }, r.idempotencyKey);
      return answeredRefund("mercadopago", r, refundOf(refund ?? {}, r.currency), { id: refund?.id, payment: refund?.payment_id });
    },

    async readRefund(r) {
      if (!MERCADOPAGO_ID.test(r.gatewayPaymentId)) {
        throw new ProviderError("mercadopago", "rejected", `mercadopago payment id ${JSON.stringify(r.gatewayPaymentId)} is malformed`);
      }
      // the list answers for every refund of the payment (GET /v1/payments/{id}/refunds)
      const list = await call<Obj[]>(cfg(), "GET", `/v1/payments/${r.gatewayPaymentId}/refunds`, "list refunds");
      const found = (Array.isArray(list) ? list : []).find((x) => textOf(x?.id) === r.refundId);
      if (!found) throw new ProviderError("mercadopago", "not_found", `mercadopago payment ${r.gatewayPaymentId} has no refund ${r.refundId}`);
      return refundOf(found);
    },

    listPayments: (window, cursor, pageSize) => searchMercadoPagoPayments(cfg(), window, cursor, pageSize),
    listMoneyMoves: (window) => mercadoPagoMoneyMoves(cfg(), window),
  };
}
