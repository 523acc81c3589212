// MercadoPago (PIX): payment creation, lookup, the x-signature check of notifications, and the
// reduction of a Payment to our status. Plain fetch: the official SDK's base URL cannot be pointed at
// the sandbox, and it makes a fresh idempotency key per call unless given one.
import { hmacSha256Hex, timingSafeEqual } from "../crypto.ts";
import { asUuid, ProviderError, providerJson, type PaymentStatus, type ProviderUpdate } from "./types.ts";

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
  point_of_interaction?: { transaction_data?: { qr_code?: string; qr_code_base64?: string; ticket_url?: string } };
}

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

export interface PixCheckout {
  paymentId: string;
  amount: number;
  description: string;
  payerEmail: string;
  payerName?: string;
  notificationUrl: string;
  expiresAt: Date;
  idempotencyKey: string;
}

export function createPixPayment(cfg: MercadoPagoConfig, c: PixCheckout): Promise<MercadoPagoPayment> {
  return call(cfg, "POST", "/v1/payments", "create payment", {
    transaction_amount: c.amount / 100,
    description: c.description,
    payment_method_id: "pix",
    payer: { email: c.payerEmail, ...(c.payerName && { first_name: c.payerName }) },
    external_reference: c.paymentId,
    notification_url: c.notificationUrl,
    date_of_expiration: saoPauloTimestamp(c.expiresAt),
    metadata: { payment_id: c.paymentId },
  }, c.idempotencyKey);
}

export function getMercadoPagoPayment(cfg: MercadoPagoConfig, id: string): Promise<MercadoPagoPayment> {
  if (!/^[0-9A-Za-z_-]{1,64}$/.test(id)) {
    return Promise.reject(new ProviderError("mercadopago", "rejected", `mercadopago payment id ${JSON.stringify(id)} is malformed`));
  }
  return call(cfg, "GET", `/v1/payments/${id}`, "get payment");
}

/**
 * x-signature is `ts=<ts>,v1=<hex>`: HMAC-SHA256 of `id:<data.id>;request-id:<x-request-id>;ts:<ts>;`
 * with data.id from the query string; absent parts are left out. No age check: MercadoPago documents
 * no window, and a replay only makes us fetch the payment's current status again.
 */
export async function verifyMercadoPagoSignature(
  xSignature: string | null, xRequestId: string | null, dataId: string | null, secret: string,
): Promise<boolean> {
  if (!xSignature) return false;
  const parts = new Map<string, string>();
  for (const part of xSignature.split(",")) {
    const i = part.indexOf("=");
    if (i > 0) parts.set(part.slice(0, i).trim(), part.slice(i + 1).trim());
  }
  const ts = parts.get("ts");
  const v1 = parts.get("v1");
  if (!ts || !v1) return false;
  const manifest = `${dataId ? `id:${dataId};` : ""}${xRequestId ? `request-id:${xRequestId};` : ""}ts:${ts};`;
  // the docs say lowercase data.id, the SDKs (since 2026-06) keep its case: accept either
  const candidates = new Set([manifest, manifest.replace(`id:${dataId};`, `id:${dataId?.toLowerCase()};`)]);
  for (const m of candidates) {
    if (timingSafeEqual(await hmacSha256Hex(secret, m), v1.toLowerCase())) return true;
  }
  return false;
}

const centavos = (reais: number | undefined) => Math.round((reais ?? 0) * 100);

/** A MercadoPago Payment as our status. */
export function mercadoPagoUpdate(p: MercadoPagoPayment): ProviderUpdate {
  const amount = centavos(p.transaction_amount);
  const refunded = centavos(p.transaction_amount_refunded);
  let status: PaymentStatus;
  switch (p.status) {
    case "approved":
      // a partial refund keeps status approved and grows transaction_amount_refunded
      status = refunded > 0 ? (refunded >= amount ? "refunded" : "partially_refunded") : "succeeded";
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
  return {
    status,
    gatewayPaymentId: String(p.id),
    paymentId: asUuid(p.external_reference),
    eventAt: p.date_last_updated ? new Date(p.date_last_updated) : undefined,
    gatewayStatus: p.status_detail ? `${p.status}/${p.status_detail}` : p.status,
    errorCode: status === "failed" ? p.status_detail : undefined,
    refundedAmount: status === "refunded" ? (refunded || amount) : refunded || undefined,
    object: p,
  };
}

/** The payment's current state as our status: what a notification means (its body carries no status). */
export async function fetchMercadoPagoUpdate(cfg: MercadoPagoConfig, id: string): Promise<ProviderUpdate> {
  return mercadoPagoUpdate(await getMercadoPagoPayment(cfg, id));
}

/** A refund of `amount` centavos (reais to MercadoPago); X-Idempotency-Key makes a resend the same refund. */
export async function createMercadoPagoRefund(cfg: MercadoPagoConfig, paymentId: string, amount: number, idempotencyKey: string): Promise<string> {
  if (!/^[0-9A-Za-z_-]{1,64}$/.test(paymentId)) {
    throw new ProviderError("mercadopago", "rejected", `mercadopago payment id ${JSON.stringify(paymentId)} is malformed`);
  }
  const refund = await call<{ id: number | string }>(cfg, "POST", `/v1/payments/${paymentId}/refunds`, "refund payment",
    { amount: amount / 100 }, idempotencyKey);
  return String(refund.id);
}
