// OpenPIX/Woovi (PIX): charge creation and lookup, refunds, and the RSA-signed webhooks, all reduced to
// the normalized ProviderUpdate / ProviderRefund. Our payment id is the charge's correlationID, so the
// correlationID is also the gateway id we store. Money: charge.value (centavos, BRL), what its pix says
// was paid (pix.value), charge.fee, and the refunds OpenPIX confirmed.
//
// Webhooks as OpenPIX really sends them (woovibr/woovi-developers examples): event names with either
// prefix (OPENPIX:CHARGE_COMPLETED in older docs, woovi:CHARGE_COMPLETED in current ones), deliveries
// without an `event` field (a detached PIX, named by what they carry), and refund events that name the
// money only by endToEndId (PIX_TRANSACTION_REFUND_SENT_CONFIRMED: no charge, no correlationID).
import { importRsaPublicKey, sha256Hex, verifyRsaSha256 } from "../crypto.ts";
import { textOf } from "../sanitize.ts";
import type { OpenPixSettings } from "../provider_config.ts";
import {
  answeredRefund, asUuid, minor, presentStrings, ProviderError, providerJson, readEach, shown, timeOf, UnusableAnswer, type LookupKey, type PaymentProvider,
  type PaymentStatus, type ProviderRefund, type ProviderUpdate, type WebhookParse, type ListCursor, type ListWindow, type PaymentPage,
  type UnreadableObject,
} from "./types.ts";

type Obj = Record<string, any>;

export interface OpenPixConfig {
  appId: string;
  apiBase?: string;
  timeoutMs?: number;
}

export interface OpenPixCharge {
  status: "ACTIVE" | "COMPLETED" | "EXPIRED" | string;
  value: number;
  correlationID: string;
  brCode?: string;
  qrCodeImage?: string;
  paymentLinkUrl?: string;
  expiresDate?: string;
  expiresIn?: number;
  globalID?: string;
  identifier?: string;
  fee?: number;
  endToEndId?: string;
  paymentMethods?: { pix?: { value?: number; status?: string; fee?: number } };
  paidAt?: string | null;
  createdAt?: string;
  updatedAt?: string;
}

export interface OpenPixRefund {
  status: "IN_PROCESSING" | "CONFIRMED" | string;
  value: number;
  correlationID: string;
  endToEndId?: string;
  time?: string;
}

export interface OpenPixEvent {
  event?: string;
  charge?: OpenPixCharge | null;
  pix?: { endToEndId?: string; time?: string; value?: number; charge?: { correlationID?: string } | null } | null;
  refundTransaction?: { value?: number; time?: string; endToEndId?: string; correlationID?: string } | null;
  originalTransaction?: { charge?: OpenPixCharge | null; correlationID?: string; endToEndId?: string } | null;
}

const base = (cfg: OpenPixConfig) => (cfg.apiBase ?? "https://api.openpix.com.br").replace(/\/$/, "");

function call<T>(cfg: OpenPixConfig, method: string, path: string, what: string, body?: unknown): Promise<T> {
  return providerJson<T>("openpix", `${base(cfg)}${path}`, {
    method,
    headers: { authorization: cfg.appId, ...(body !== undefined && { "content-type": "application/json" }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  }, cfg.timeoutMs ?? 10_000, what);
}

const ID = /^[0-9A-Za-z_:=-]{1,128}$/;
const E2E = /^[0-9A-Za-z]{1,64}$/;

function assertId(id: string): void {
  if (!ID.test(id)) throw new ProviderError("openpix", "rejected", `openpix charge id ${JSON.stringify(id.slice(0, 80))} is malformed`);
}

export async function getOpenPixCharge(cfg: OpenPixConfig, correlationID: string): Promise<OpenPixCharge> {
  assertId(correlationID);
  const answer = await call<{ charge?: OpenPixCharge } | null>(cfg, "GET", `/api/v1/charge/${correlationID}`, "get charge");
  const charge = answer?.charge;
  // a 200 without a charge (an error body) is the provider failing, asked again later
  if (!charge || typeof charge !== "object" || Array.isArray(charge)) {
    throw new ProviderError("openpix", "unavailable", `openpix answered get charge ${correlationID} without a charge`);
  }
  // an answer about another charge than the one asked for is never ours to apply
  if (charge.correlationID !== correlationID) {
    throw new UnusableAnswer(`openpix answered get charge ${correlationID} with charge ${safeId(charge.correlationID)}`);
  }
  return charge;
}

export async function getOpenPixRefunds(cfg: OpenPixConfig, correlationID: string): Promise<OpenPixRefund[]> {
  assertId(correlationID);
  const answer = await call<{ refunds?: unknown } | null>(cfg, "GET", `/api/v1/charge/${correlationID}/refund`, "list refunds");
  if (!answer || typeof answer !== "object") throw new ProviderError("openpix", "unavailable", `openpix answered list refunds of ${correlationID} with no body`);
  return refundList(answer.refunds);
}

const safeId = (v: unknown) => JSON.stringify(textOf(v).slice(0, 80));

/**
 * A charge's refunds as OpenPIX lists them, each once: a refund listed twice (the same correlationID) is
 * one refund, never counted twice; a list that is not a list of refunds, or one refund listed twice with
 * different values, cannot be right (UnusableAnswer).
 */
export function refundList(v: unknown): OpenPixRefund[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.some((r) => !r || typeof r !== "object" || Array.isArray(r) || typeof r.correlationID !== "string")) {
    throw new UnusableAnswer("openpix's refund list is not a list of refunds, each with its correlationID");
  }
  const byId = new Map<string, OpenPixRefund>();
  for (const r of v as OpenPixRefund[]) {
    const seen = byId.get(r.correlationID);
    if (seen && (seen.value !== r.value || seen.status !== r.status)) {
      throw new UnusableAnswer(`openpix lists refund ${safeId(r.correlationID)} twice, as ${shown(seen.status)} ${shown(seen.value)} and ${shown(r.status)} ${shown(r.value)}`);
    }
    byId.set(r.correlationID, r);
  }
  return [...byId.values()];
}

/** x-webhook-signature: base64 RSA-SHA256 over the raw body; any of the keys (they rotate) may have signed. */
export async function verifyOpenPixSignature(body: string, signature: string | null, publicKeys: string[]): Promise<boolean> {
  if (!signature || signature.length > 4096) return false;
  for (const k of publicKeys) {
    try {
      if (await verifyRsaSha256(await importRsaPublicKey(k), signature, body)) return true;
    } catch {
      // a malformed configured key must not hide a valid one
    }
  }
  return false;
}

/** OpenPIX publishes its current signing keys at an unauthenticated endpoint. */
export async function fetchOpenPixPublicKeys(cfg: OpenPixConfig): Promise<string[]> {
  const body = await providerJson<{ public_keys?: { key?: string }[] } | null>(
    "openpix", `${base(cfg)}/api/v1/webhook/public-keys`, {}, cfg.timeoutMs ?? 10_000, "public keys");
  return (body?.public_keys ?? []).map((k) => k.key).filter((k): k is string => typeof k === "string");
}

const e2eOf = (v: unknown): string | undefined => (typeof v === "string" && E2E.test(v) ? v : undefined);

function refundOf(r: OpenPixRefund | Obj): ProviderRefund {
  return {
    refundId: String(r.correlationID),
    // only a refund OpenPIX says it rejected failed; a status we do not know is not news of a failure
    status: r.status === "CONFIRMED" ? "succeeded" : r.status === "REJECTED" ? "failed" : "pending",
    amount: minor(r.value, "refund value"),
    currency: "BRL",
    endToEndId: e2eOf(r.endToEndId),
    object: r,
  };
}

/**
 * One page of the charge list over createdAt in [from, to] (newest first, as OpenPIX lists), `skip` as
 * the cursor. A listed charge says nothing of its refunds, so each completed one's are read (four at a
 * time): without them a refund we booked would look like money OpenPIX never sent back.
 */
export async function listOpenPixCharges(cfg: OpenPixConfig, window: ListWindow, cursor: ListCursor | null, pageSize: number): Promise<PaymentPage> {
  const skip = typeof cursor?.skip === "number" && Number.isSafeInteger(cursor.skip) && cursor.skip >= 0 ? cursor.skip : 0;
  const q = new URLSearchParams({ start: window.from.toISOString(), end: new Date(window.to.getTime() - 1).toISOString(),
                                  skip: String(skip), limit: String(Math.min(Math.max(pageSize, 1), 100)) });
  const page = await call<{ pageInfo?: { hasNextPage?: boolean }; charges?: OpenPixCharge[] }>(cfg, "GET", `/api/v1/charge?${q}`, "list charges");
  const charges = Array.isArray(page?.charges) ? page.charges : [];
  const refunds = new Map<OpenPixCharge, OpenPixRefund[]>();
  const unreadable: UnreadableObject[] = [];
  const completed = charges.filter((c) => c?.status === "COMPLETED" && typeof c.correlationID === "string" && ID.test(c.correlationID));
  for (let i = 0; i < completed.length; i += 4) {
    await Promise.all(completed.slice(i, i + 4).map(async (c) => {
      try {
        refunds.set(c, await getOpenPixRefunds(cfg, c.correlationID));
      } catch (err) {
        // a refund list that cannot be right sets its charge aside; the provider failing stops the page
        if (!(err instanceof UnusableAnswer)) throw err;
        unreadable.push({ kind: "payment", objectId: c.correlationID, reason: err.message, object: c });
      }
    }));
  }
  const aside = new Set(unreadable.map((u) => u.object));
  return {
    updates: readEach(charges.filter((c) => !aside.has(c)), "payment", (c) => openPixChargeUpdate(c, refunds.get(c)), unreadable),
    next: page?.pageInfo?.hasNextPage && charges.length ? { skip: skip + charges.length } : null,
    calls: 1 + completed.length,
    unreadable,
  };
}

/** A charge (with what its pix says, and its refunds, if known) as our status. */
export function openPixChargeUpdate(charge: OpenPixCharge, listed: OpenPixRefund[] = [], pix?: OpenPixEvent["pix"]): ProviderUpdate {
  const refunds = refundList(listed);
  const amount = minor(charge.value, "charge value");
  const completed = charge.status === "COMPLETED";
  const confirmed = refunds.filter((r) => r?.status === "CONFIRMED").reduce((s, r) => s + (minor(r.value, "refund value") ?? 0), 0);
  let status: PaymentStatus = completed ? "succeeded" : charge.status === "EXPIRED" ? "expired" : "pending";
  if (completed && confirmed > 0) status = amount !== undefined && confirmed >= amount ? "refunded" : "partially_refunded";
  return {
    status,
    gatewayPaymentId: charge.correlationID,
    paymentId: asUuid(charge.correlationID),
    endToEndId: e2eOf(pix?.endToEndId) ?? e2eOf(charge.endToEndId),
    amount,
    currency: "BRL",
    // what the PIX says was paid; a charge read (no pix at hand) says its value was
    amountReceived: completed ? minor(pix?.value, "pix value") ?? minor(charge.paymentMethods?.pix?.value, "pix value") ?? amount : undefined,
    refundedAmount: confirmed || undefined,
    feeAmount: completed ? minor(charge.fee, "charge fee") ?? minor(charge.paymentMethods?.pix?.fee, "pix fee") : undefined,
    refunds: refunds.length ? refunds.map(refundOf) : undefined,
    eventAt: timeOf(charge.updatedAt),
    gatewayStatus: confirmed > 0 ? `${textOf(charge.status)}/refunded` : textOf(charge.status),
    object: refunds.length ? { charge, refunds } : charge,
  };
}

/** OPENPIX:CHARGE_COMPLETED and woovi:CHARGE_COMPLETED are one event; a delivery without `event` is named by what it carries. */
export function openPixEventName(e: OpenPixEvent): string {
  if (typeof e.event === "string" && e.event) return e.event.replace(/^(openpix|woovi):/i, "").toUpperCase();
  if (e.refundTransaction) return "PIX_TRANSACTION_REFUND_SENT_CONFIRMED";
  if (e.charge?.status === "COMPLETED") return "CHARGE_COMPLETED";
  if (e.charge?.status === "EXPIRED") return "CHARGE_EXPIRED";
  if (e.pix) return "PIX_TRANSACTION_RECEIVED";
  return "UNKNOWN";
}

/** The charge an event is about: its correlationID, wherever the event type keeps it. */
export function openPixEventCorrelationId(e: OpenPixEvent): string | undefined {
  const id = e.charge?.correlationID ?? e.pix?.charge?.correlationID ?? e.originalTransaction?.charge?.correlationID
    ?? e.originalTransaction?.correlationID;
  return typeof id === "string" && id ? id : undefined;
}

const REFUND_EVENTS = new Set(["TRANSACTION_REFUND_RECEIVED", "PIX_TRANSACTION_REFUND_SENT_CONFIRMED", "PIX_TRANSACTION_REFUND_RECEIVED_CONFIRMED"]);

/**
 * What an event means: the update it carries (charge events), what to look up (refund events carry one
 * refund, not the total, so the charge and its refunds are fetched), or nothing to act on.
 */
export function openPixEventNews(e: OpenPixEvent): { update: ProviderUpdate | null; lookup?: LookupKey; note?: string } {
  const name = openPixEventName(e);
  const correlationID = openPixEventCorrelationId(e);
  if (REFUND_EVENTS.has(name)) {
    if (correlationID) return { update: null, lookup: { gatewayPaymentId: correlationID } };
    const endToEndIds = [e.refundTransaction?.endToEndId, e.originalTransaction?.endToEndId, e.pix?.endToEndId]
      .map(e2eOf).filter((x): x is string => !!x);
    if (endToEndIds.length) return { update: null, lookup: { endToEndIds } };
    return { update: null, note: `${name} names neither a charge nor an endToEndId` };
  }
  if ((name === "CHARGE_COMPLETED" || name === "CHARGE_COMPLETED_NOT_SAME_CUSTOMER_PAYER" || name === "CHARGE_EXPIRED") && e.charge) {
    if (typeof e.charge.correlationID !== "string" || !e.charge.correlationID) return { update: null, note: `${name} names no charge` };
    const update = openPixChargeUpdate(e.charge, [], e.pix);
    const paidAt = timeOf(e.pix?.time) ?? timeOf(e.charge.paidAt);
    return { update: { ...update, eventAt: name === "CHARGE_EXPIRED" ? update.eventAt : paidAt ?? update.eventAt, object: e } };
  }
  if (name === "PIX_TRANSACTION_RECEIVED" && !correlationID) return { update: null, note: "a PIX received without a charge (not ours)" };
  return { update: null, note: e.charge === undefined && name === "CHARGE_COMPLETED" ? "a test delivery without a charge" : undefined };
}

/** The PIX codes of a charge (brCode, its QR image and payment page), those it has. */
function openPixPayFields(charge: OpenPixCharge | null): Record<string, string> {
  return presentStrings({ qr_code: charge?.brCode, qr_code_image: charge?.qrCodeImage, payment_link_url: charge?.paymentLinkUrl });
}

export function openPixProvider(settings: () => OpenPixSettings): PaymentProvider {
  const cfg = (): OpenPixConfig => {
    const s = settings();
    if (!s.appId) throw new ProviderError("openpix", "not_configured", "openpix is not configured (OPENPIX_APP_ID)");
    return { appId: s.appId, apiBase: s.apiBase };
  };
  let fetched: { keys: string[]; at: number } | undefined;
  // a forged signature must not make us call OpenPIX on every request
  const KEY_REFRESH_MIN_MS = 60_000;

  /**
   * The configured OPENPIX_WEBHOOK_PUBLIC_KEY, plus the keys OpenPIX publishes (fetched once an hour,
   * because they rotate, or on `refresh` at most once a minute). A fetch that fails leaves the configured key.
   */
  async function publicKeys(refresh = false): Promise<string[]> {
    const s = settings();
    const age = fetched ? Date.now() - fetched.at : Infinity;
    if (s.appId && (age > 3600_000 || (refresh && age > KEY_REFRESH_MIN_MS))) {
      try {
        fetched = { keys: await fetchOpenPixPublicKeys(cfg()), at: Date.now() };
      } catch {
        fetched ??= { keys: [], at: Date.now() };
      }
    }
    return [...(s.webhookPublicKey ? [s.webhookPublicKey] : []), ...(fetched?.keys ?? [])];
  }

  async function readPayment(correlationID: string): Promise<ProviderUpdate> {
    const c = cfg();
    const charge = await getOpenPixCharge(c, correlationID);
    const refunds = charge.status === "COMPLETED" ? await getOpenPixRefunds(c, correlationID) : [];
    return openPixChargeUpdate(charge, refunds);
  }

  return {
    name: "openpix",
    methods: ["pix"],
    configured: () => !!settings().appId,
    async webhookConfigured() {
      return !!settings().appId && (await publicKeys()).length > 0;
    },

    async createPayment(r) {
      // return_existing makes a repeated correlationID give the same charge back: our retry is idempotent
      const out = await call<{ charge: OpenPixCharge }>(cfg(), "POST", "/api/v1/charge?return_existing=true", "create charge", {
        correlationID: r.paymentId,
        value: r.amount,
        comment: r.description.slice(0, 140),
        expiresIn: Math.max(60, Math.floor((r.expiresAt.getTime() - Date.now()) / 1000)),
        ...(r.payer.name && { customer: { name: r.payer.name, ...(r.payer.email && { email: r.payer.email }) } }),
      });
      const charge = out.charge;
      return { update: openPixChargeUpdate(charge), pay: openPixPayFields(charge) };
    },

    payFields: (stored) => {
      // stored is the charge, the charge with its refunds, or a webhook event carrying the charge
      const o = stored as { charge?: OpenPixCharge } & OpenPixCharge | null;
      return openPixPayFields(o && typeof o === "object" && o.charge && typeof o.charge === "object" ? o.charge : o);
    },

    readPayment,

    async findPayment(paymentId) {
      // the charge of a payment is named by our own id: an attempt the checkout never recorded is found
      try {
        return await readPayment(paymentId);
      } catch (err) {
        if (err instanceof ProviderError && err.kind === "not_found") return null;
        throw err;
      }
    },

    async parseWebhook(req, _url, body): Promise<WebhookParse> {
      const type = req.headers.get("content-type") ?? "";
      if (!/^application\/json\s*(;|$)/i.test(type)) {
        return { kind: "refused", status: 415, error: "unsupported_media_type", message: "send the body as application/json" };
      }
      const signature = req.headers.get("x-webhook-signature");
      let ok = await verifyOpenPixSignature(body, signature, await publicKeys());
      if (!ok && signature) ok = await verifyOpenPixSignature(body, signature, await publicKeys(true)); // a rotated key
      if (!ok) {
        return { kind: "refused", status: 400, error: signature ? "invalid_signature" : "missing_signature", signature: true,
                 message: "the x-webhook-signature does not match the body" };
      }
      let e: OpenPixEvent;
      try {
        const v = JSON.parse(body);
        if (!v || typeof v !== "object" || Array.isArray(v)) throw new SyntaxError("not an object");
        e = v;
      } catch {
        return { kind: "refused", status: 400, error: "invalid_json", message: "the body is not a JSON object" };
      }
      const name = openPixEventName(e);
      const correlationId = openPixEventCorrelationId(e);
      const key = correlationId ?? e.refundTransaction?.endToEndId ?? e.pix?.endToEndId ?? "-";
      // OpenPIX events carry no id of their own: a redelivery has the same body, so its hash is the id
      const eventId = `${name}:${textOf(key).slice(0, 128)}:${sha256Hex(body).slice(0, 32)}`;
      const eventType = typeof e.event === "string" && e.event ? e.event : `${name} (no event field)`;
      try {
        const news = openPixEventNews(e);
        return { kind: "event", event: { eventId, eventType, payload: e, update: news.update, lookup: news.lookup, note: news.note } };
      } catch (err) {
        if (err instanceof UnusableAnswer) return { kind: "event", event: { eventId, eventType, payload: e, poison: err.message } };
        throw err;
      }
    },

    async lookUp(key) {
      if (typeof key.gatewayPaymentId !== "string") throw new ProviderError("openpix", "not_found", "the event names no charge of ours");
      // a signed event naming a charge no request can ask about: asking again never helps (dead, not retried)
      if (!ID.test(key.gatewayPaymentId)) throw new UnusableAnswer(`openpix charge id ${JSON.stringify(key.gatewayPaymentId.slice(0, 80))} is malformed`);
      return readPayment(key.gatewayPaymentId);
    },

    async createRefund(r) {
      assertId(r.gatewayPaymentId);
      // the refund's own correlationID (our request id) makes a resend the same refund
      const out = await call<{ refund: OpenPixRefund }>(cfg(), "POST", `/api/v1/charge/${r.gatewayPaymentId}/refund`, "refund charge",
        { correlationID: r.requestId, value: r.amount, comment: `Reserve Connect refund (${r.reason})`.slice(0, 140) });
      const refund = out?.refund ?? { correlationID: r.requestId, status: "IN_PROCESSING", value: r.amount };
      // its id is the correlationID we gave it: an answer under another is about another refund
      if (refund.correlationID !== r.requestId) {
        throw new UnusableAnswer(`openpix answered the refund ${r.requestId} of ${r.gatewayPaymentId} with refund ${safeId(refund.correlationID)}`);
      }
      return answeredRefund("openpix", r, refundOf(refund), { id: refund.correlationID });
    },

    async readRefund(r) {
      const found = (await getOpenPixRefunds(cfg(), r.gatewayPaymentId)).find((x) => x?.correlationID === r.refundId);
      if (!found) throw new ProviderError("openpix", "not_found", `openpix charge ${r.gatewayPaymentId} has no refund ${r.refundId}`);
      return refundOf(found);
    },

    listPayments: (window, cursor, pageSize) => listOpenPixCharges(cfg(), window, cursor, pageSize),
  };
}
