// OpenPIX/Woovi (PIX): charge creation and lookup, the RSA check of webhooks, and the reduction of
// charges and webhook events to our status. Our payment id is the charge's correlationID, so the
// correlationID is also the gateway id we store.
import { importRsaPublicKey, verifyRsaSha256 } from "../crypto.ts";
import { asUuid, ProviderError, providerJson, type PaymentStatus, type ProviderUpdate } from "./types.ts";

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
  paidAt?: string | null;
  createdAt?: string;
  updatedAt?: string;
}

export interface OpenPixRefund {
  status: "IN_PROCESSING" | "CONFIRMED" | string;
  value: number;
  correlationID: string;
  time?: string;
}

const base = (cfg: OpenPixConfig) => (cfg.apiBase ?? "https://api.openpix.com.br").replace(/\/$/, "");

function call<T>(cfg: OpenPixConfig, method: string, path: string, what: string, body?: unknown): Promise<T> {
  return providerJson<T>("openpix", `${base(cfg)}${path}`, {
    method,
    headers: { authorization: cfg.appId, ...(body !== undefined && { "content-type": "application/json" }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  }, cfg.timeoutMs ?? 10_000, what);
}

export interface OpenPixCheckout {
  paymentId: string;
  amount: number;
  comment: string;
  expiresAt: Date;
  customer?: { name: string; email?: string };
}

/** return_existing makes a repeated correlationID give the same charge back: our retry is idempotent. */
export async function createOpenPixCharge(cfg: OpenPixConfig, c: OpenPixCheckout): Promise<OpenPixCharge> {
  const out = await call<{ charge: OpenPixCharge }>(cfg, "POST", "/api/v1/charge?return_existing=true", "create charge", {
    correlationID: c.paymentId,
    value: c.amount,
    comment: c.comment.slice(0, 140),
    expiresIn: Math.max(60, Math.floor((c.expiresAt.getTime() - Date.now()) / 1000)),
    ...(c.customer && { customer: c.customer }),
  });
  return out.charge;
}

const ID = /^[0-9A-Za-z_:=-]{1,128}$/;

export async function getOpenPixCharge(cfg: OpenPixConfig, correlationID: string): Promise<OpenPixCharge> {
  if (!ID.test(correlationID)) throw new ProviderError("openpix", "rejected", `openpix charge id ${JSON.stringify(correlationID)} is malformed`);
  return (await call<{ charge: OpenPixCharge }>(cfg, "GET", `/api/v1/charge/${correlationID}`, "get charge")).charge;
}

export async function getOpenPixRefunds(cfg: OpenPixConfig, correlationID: string): Promise<OpenPixRefund[]> {
  if (!ID.test(correlationID)) throw new ProviderError("openpix", "rejected", `openpix charge id ${JSON.stringify(correlationID)} is malformed`);
  return (await call<{ refunds: OpenPixRefund[] }>(cfg, "GET", `/api/v1/charge/${correlationID}/refund`, "list refunds")).refunds ?? [];
}

/** x-webhook-signature: base64 RSA-SHA256 over the raw body; any of the keys (they rotate) may have signed. */
export async function verifyOpenPixSignature(body: string, signature: string | null, publicKeys: string[]): Promise<boolean> {
  if (!signature) return false;
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

function refundUpdate(charge: OpenPixCharge, refunds: OpenPixRefund[], eventAt?: Date): ProviderUpdate {
  const refunded = refunds.filter((r) => r.status === "CONFIRMED").reduce((s, r) => s + r.value, 0);
  const status: PaymentStatus = refunded >= charge.value ? "refunded" : "partially_refunded";
  return {
    status,
    gatewayPaymentId: charge.correlationID,
    paymentId: asUuid(charge.correlationID),
    eventAt,
    gatewayStatus: `${charge.status}/refunded`,
    refundedAmount: refunded,
    object: { charge, refunds },
  };
}

/** A charge (and its confirmed refunds, if any) as our status: what the poller applies. */
export function openPixChargeUpdate(charge: OpenPixCharge, refunds: OpenPixRefund[] = []): ProviderUpdate {
  const at = charge.updatedAt ? new Date(charge.updatedAt) : undefined;
  if (charge.status === "COMPLETED" && refunds.some((r) => r.status === "CONFIRMED")) return refundUpdate(charge, refunds, at);
  const status: PaymentStatus = charge.status === "COMPLETED" ? "succeeded" : charge.status === "EXPIRED" ? "expired" : "pending";
  return {
    status,
    gatewayPaymentId: charge.correlationID,
    paymentId: asUuid(charge.correlationID),
    eventAt: at,
    gatewayStatus: charge.status,
    object: charge,
  };
}

export interface OpenPixEvent {
  event?: string;
  charge?: OpenPixCharge | null;
  pix?: { endToEndId?: string; time?: string; value?: number } | null;
  refundTransaction?: { value?: number; time?: string; endToEndId?: string } | null;
  originalTransaction?: { charge?: OpenPixCharge | null; correlationID?: string } | null;
}

export const OPENPIX_REFUND_EVENTS = new Set([
  "OPENPIX:TRANSACTION_REFUND_RECEIVED",
  "PIX_TRANSACTION_REFUND_SENT_CONFIRMED",
  "OPENPIX:PIX_TRANSACTION_REFUND_SENT_CONFIRMED",
]);

/** The charge an event is about: its correlationID, wherever the event type keeps it. */
export function openPixEventCorrelationId(e: OpenPixEvent): string | undefined {
  return e.charge?.correlationID ?? e.originalTransaction?.charge?.correlationID ?? e.originalTransaction?.correlationID;
}

/**
 * A charge event as our status, or null for one we do not act on here. Refund events carry one refund,
 * not the total: the caller fetches the charge and its refunds and uses openPixChargeUpdate.
 */
export function openPixEventUpdate(e: OpenPixEvent): ProviderUpdate | null {
  const charge = e.charge ?? null;
  switch (e.event) {
    case "OPENPIX:CHARGE_COMPLETED":
    case "OPENPIX:CHARGE_COMPLETED_NOT_SAME_CUSTOMER_PAYER":
    case "OPENPIX:CHARGE_EXPIRED": {
      if (!charge?.correlationID) return null;
      const update = openPixChargeUpdate(charge);
      const paidAt = e.pix?.time ?? charge.paidAt;
      return { ...update, eventAt: paidAt ? new Date(paidAt) : update.eventAt, object: e };
    }
    default:
      return null;
  }
}

/** A charge with its refunds as our status: what a refund event means (it carries one refund, not the total). */
export async function fetchOpenPixUpdate(cfg: OpenPixConfig, correlationID: string): Promise<ProviderUpdate> {
  const [charge, refunds] = await Promise.all([getOpenPixCharge(cfg, correlationID), getOpenPixRefunds(cfg, correlationID)]);
  return openPixChargeUpdate(charge, refunds);
}

/** A refund of `value` centavos; the refund's own correlationID (our request id) makes a resend the same refund. */
export async function createOpenPixRefund(cfg: OpenPixConfig, chargeCorrelationID: string, value: number, refundId: string, comment: string): Promise<string> {
  if (!ID.test(chargeCorrelationID)) throw new ProviderError("openpix", "rejected", `openpix charge id ${JSON.stringify(chargeCorrelationID)} is malformed`);
  const out = await call<{ refund: OpenPixRefund }>(cfg, "POST", `/api/v1/charge/${chargeCorrelationID}/refund`, "refund charge",
    { correlationID: refundId, value, comment: comment.slice(0, 140) });
  return out.refund?.correlationID ?? refundId;
}
