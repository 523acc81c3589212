// MercadoPago's Payments API for PIX under /mercadopago: create (X-Idempotency-Key required), read,
// refund, lazy expiry, and signed notifications to each payment's own notification_url.
import { createHash, createHmac, randomUUID } from "node:crypto";
import type { SandboxEvent } from "./types.ts";
import { SandboxError } from "./types.ts";
import type { ApiRequest, ApiResponse } from "./util.ts";
import { brDate, header, parseJson, pixBrCode, TINY_PNG_BASE64 } from "./util.ts";

type Obj = Record<string, unknown>;
interface Payment extends Obj {
  id: number;
  status: string;
  transaction_amount: number;
  date_of_expiration: string;
}

const DEFAULT_EXPIRY_MS = 24 * 3600_000;

/** MercadoPago's error body ({message, error, status, cause}), as the official SDK types it. */
export function mpError(status: number, message: string, code?: string | number): ApiResponse {
  const error = { 400: "bad_request", 401: "unauthorized", 404: "not_found", 409: "conflict", 429: "too_many_requests" }[status]
    ?? (status >= 500 ? "internal_error" : "bad_request");
  return { status, body: { message, error, status, cause: code === undefined ? [] : [{ code, description: message, data: null }] } };
}

// MercadoPago stores metadata keys in snake_case (bookingId comes back as booking_id)
const snake = (k: string) => k.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toLowerCase();

export class MercadoPago {
  readonly payments = new Map<number, Payment>();
  private idempotent = new Map<string, { fingerprint: string; id: number }>();
  private refundKeys = new Map<string, Obj>();
  private nextId = 1_320_000_000 + Math.floor(Math.random() * 1_000_000);
  private nextRefundId = 1_500_000_000;
  private nextNotificationId = 120_000_000_000;
  readonly userId = String(100_000_000 + Math.floor(Math.random() * 900_000_000));

  constructor(
    private accessToken: string,
    private webhookSecret: string,
    private apiBase: string,
    private emitEvent: (e: SandboxEvent) => void,
  ) {}

  handle(req: ApiRequest): ApiResponse {
    if (header(req.headers, "authorization") !== `Bearer ${this.accessToken}`) {
      return mpError(401, "invalid access token", "unauthorized");
    }
    const seg = req.path.split("/").filter(Boolean); // ["v1", "payments", id?, "refunds"?]
    if (seg[0] !== "v1" || seg[1] !== "payments") return mpError(404, `resource ${req.method} ${req.path} not found`);
    const parsed = parseJson(req.rawBody);
    if (!parsed.ok) return mpError(400, "invalid json body");
    const body = (parsed.value ?? {}) as Obj;
    if (req.method === "POST" && seg.length === 2) return this.create(body, header(req.headers, "x-idempotency-key"), req.rawBody);
    const id = Number(seg[2]);
    const payment = this.payments.get(id);
    if (seg.length >= 3 && !payment) return mpError(404, "Payment not found", 2000);
    if (req.method === "GET" && seg.length === 3) return { status: 200, body: this.read(id) };
    if (req.method === "POST" && seg.length === 4 && seg[3] === "refunds") {
      return this.refund(payment!, body, header(req.headers, "x-idempotency-key"));
    }
    if (req.method === "GET" && seg.length === 4 && seg[3] === "refunds") return { status: 200, body: payment!.refunds };
    return mpError(404, `resource ${req.method} ${req.path} not found`);
  }

  private create(b: Obj, key: string | undefined, raw: string): ApiResponse {
    if (!key) return mpError(400, "Header X-Idempotency-Key can't be null");
    const fingerprint = createHash("sha256").update(raw).digest("hex");
    const seen = this.idempotent.get(key);
    if (seen && seen.fingerprint !== fingerprint) {
      return mpError(409, "the X-Idempotency-Key was already used with a different request body");
    }
    if (seen) return { status: 201, body: this.read(seen.id) };
    const amount = b.transaction_amount;
    if (typeof amount !== "number" || !(amount > 0)) return mpError(400, "transaction_amount attribute must be a positive number", 4037);
    if (Math.abs(Math.round(amount * 100) - amount * 100) > 1e-6) return mpError(400, "transaction_amount must have at most 2 decimals", 4037);
    if (b.payment_method_id !== "pix") return mpError(400, "the sandbox only takes payment_method_id 'pix'", 4037);
    const payer = (b.payer ?? {}) as Obj;
    if (typeof payer.email !== "string" || !payer.email.includes("@")) return mpError(400, "payer.email must be a valid email", 4050);
    if (b.notification_url !== undefined && !URL.canParse(String(b.notification_url))) {
      return mpError(400, "notification_url attribute must be url valid", 4020);
    }
    const now = Date.now();
    let expires = now + DEFAULT_EXPIRY_MS;
    if (b.date_of_expiration !== undefined) {
      const ms = typeof b.date_of_expiration === "string" && /T.*([+-]\d\d:\d\d|Z)$/.test(b.date_of_expiration)
        ? Date.parse(b.date_of_expiration) : NaN;
      if (Number.isNaN(ms)) return mpError(400, "Invalid date_of_expiration: use yyyy-MM-dd'T'HH:mm:ss.SSSz", 23);
      expires = ms;
    }
    const id = this.nextId++;
    const metadata = Object.fromEntries(Object.entries((b.metadata ?? {}) as Obj).map(([k, v]) => [snake(k), v]));
    const payment: Payment = {
      id, date_created: brDate(now), date_approved: null, date_last_updated: brDate(now),
      date_of_expiration: brDate(expires), money_release_date: null, operation_type: "regular_payment", issuer_id: null,
      payment_method_id: "pix", payment_type_id: "bank_transfer", payment_method: { id: "pix", type: "bank_transfer" },
      status: "pending", status_detail: "pending_waiting_transfer", currency_id: "BRL",
      description: (b.description as string) ?? null, live_mode: false, collector_id: Number(this.userId),
      payer: { id: null, email: payer.email, first_name: payer.first_name ?? null, last_name: payer.last_name ?? null,
        identification: payer.identification ?? { type: null, number: null }, type: null },
      metadata, additional_info: b.additional_info ?? {}, external_reference: (b.external_reference as string) ?? null,
      transaction_amount: amount, transaction_amount_refunded: 0, coupon_amount: 0,
      transaction_details: { net_received_amount: 0, total_paid_amount: amount, overpaid_amount: 0,
        installment_amount: 0, financial_institution: null, external_resource_url: null, payable_deferral_period: null },
      installments: 1, notification_url: (b.notification_url as string) ?? null, refunds: [], captured: true, binary_mode: false,
      point_of_interaction: { type: "PIX", sub_type: null, application_data: { name: null, version: null },
        transaction_data: { qr_code: pixBrCode(Math.round(amount * 100), randomUUID(), `MP${id}`), qr_code_base64: TINY_PNG_BASE64,
          ticket_url: `${this.apiBase}/payments/${id}/ticket?caller_id=${this.userId}`, transaction_id: null,
          bank_transfer_id: null, e2e_id: null, financial_institution: null, bank_info: { payer: {}, collector: {} } } },
    };
    this.payments.set(id, payment);
    this.idempotent.set(key, { fingerprint, id });
    this.notify(payment, "payment.created");
    return { status: 201, body: structuredClone(payment) };
  }

  /** Reads apply expiry first, like the real API that answers with the current status. */
  read(id: number): Payment {
    const p = this.payments.get(id);
    if (!p) throw new SandboxError(404, `no MercadoPago payment ${id}`);
    this.expireIfDue(p);
    return structuredClone(p);
  }

  expireIfDue(p: Payment, now = Date.now()): void {
    if (p.status === "pending" && Date.parse(p.date_of_expiration) <= now) this.markExpired(p);
  }

  /** The timer half of expiry: notifications go out even if nobody reads the payment. */
  sweep(now = Date.now()): void {
    for (const p of this.payments.values()) this.expireIfDue(p, now);
  }

  expireNow(id: number): Payment {
    const p = this.get(id);
    if (p.status !== "pending") throw new SandboxError(409, `payment ${id} is ${p.status}, not pending`);
    p.date_of_expiration = brDate(Date.now());
    this.markExpired(p);
    return structuredClone(p);
  }

  pay(id: number, afterExpiry = false): Payment {
    const p = this.get(id);
    this.expireIfDue(p);
    const expired = p.status === "cancelled" && p.status_detail === "expired";
    if (expired && !afterExpiry) throw new SandboxError(409, `payment ${id} expired at ${p.date_of_expiration}; pass afterExpiry to pay anyway`);
    if (p.status !== "pending" && !expired) throw new SandboxError(409, `payment ${id} is ${p.status}, cannot be paid`);
    const now = Date.now();
    Object.assign(p, { status: "approved", status_detail: "accredited", date_approved: brDate(now), date_last_updated: brDate(now),
      money_release_date: brDate(now) });
    (p.transaction_details as Obj).net_received_amount = Math.round(p.transaction_amount * 99.01) / 100; // 0.99% PIX fee
    ((p.point_of_interaction as Obj).transaction_data as Obj).e2e_id = `E${Date.now()}${Math.floor(Math.random() * 1e6)}`;
    this.notify(p, "payment.updated");
    return structuredClone(p);
  }

  seed(n: number, o: { status?: string; transaction_amount: number; external_reference?: string; metadata?: Obj }): number[] {
    const ids: number[] = new Array(n);
    const now = Date.now();
    const status = o.status ?? "pending";
    for (let i = 0; i < n; i++) {
      const id = this.nextId++;
      this.payments.set(id, {
        id, status, status_detail: status === "approved" ? "accredited" : status === "pending" ? "pending_waiting_transfer" : status,
        transaction_amount: o.transaction_amount, transaction_amount_refunded: 0, currency_id: "BRL",
        date_created: brDate(now), date_last_updated: brDate(now), date_approved: status === "approved" ? brDate(now) : null,
        date_of_expiration: brDate(now + DEFAULT_EXPIRY_MS), external_reference: o.external_reference ?? null,
        metadata: { ...o.metadata }, payment_method_id: "pix", payment_type_id: "bank_transfer", notification_url: null, refunds: [],
      });
      ids[i] = id;
    }
    return ids;
  }

  private refund(p: Payment, b: Obj, key: string | undefined): ApiResponse {
    if (key && this.refundKeys.has(key)) return { status: 201, body: this.refundKeys.get(key) };
    this.expireIfDue(p);
    if (p.status !== "approved") return mpError(400, `Payment not refundable: status ${p.status}`, 2063);
    const remaining = Math.round((p.transaction_amount - (p.transaction_amount_refunded as number)) * 100) / 100;
    const amount = b.amount === undefined ? remaining : b.amount;
    if (typeof amount !== "number" || !(amount > 0)) return mpError(400, "amount must be a positive number", 4037);
    if (amount > remaining + 1e-9) return mpError(400, `The amount to refund (${amount}) exceeds the payment's remaining amount (${remaining})`, 2085);
    const now = Date.now();
    const refund: Obj = { id: this.nextRefundId++, payment_id: p.id, amount, metadata: {}, source: { id: this.userId, name: "Reserve Connect", type: "collector" },
      date_created: brDate(now), unique_sequence_number: null, refund_mode: "standard", adjustment_amount: 0, status: "approved",
      reason: null, labels: [], amount_refunded_to_payer: amount, partition_details: [] };
    (p.refunds as Obj[]).push(refund);
    p.transaction_amount_refunded = Math.round(((p.transaction_amount_refunded as number) + amount) * 100) / 100;
    const full = p.transaction_amount_refunded === p.transaction_amount;
    Object.assign(p, { status: full ? "refunded" : "approved", status_detail: full ? "refunded" : "partially_refunded", date_last_updated: brDate(now) });
    if (key) this.refundKeys.set(key, refund);
    this.notify(p, "payment.updated");
    return { status: 201, body: refund };
  }

  private get(id: number): Payment {
    const p = this.payments.get(Number(id));
    if (!p) throw new SandboxError(404, `no MercadoPago payment ${id}`);
    return p;
  }

  private markExpired(p: Payment): void {
    Object.assign(p, { status: "cancelled", status_detail: "expired", date_last_updated: brDate(Date.now()) });
    this.notify(p, "payment.updated");
  }

  private notify(p: Payment, action: string): void {
    const notificationId = this.nextNotificationId++;
    const body = { action, api_version: "v1", data: { id: String(p.id) }, date_created: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
      id: notificationId, live_mode: false, type: "payment", user_id: this.userId };
    let url: string | null = null;
    if (typeof p.notification_url === "string" && p.notification_url) {
      const u = new URL(p.notification_url);
      u.searchParams.append("data.id", String(p.id));
      u.searchParams.append("type", "payment");
      url = u.toString();
    }
    this.emitEvent({ provider: "mercadopago", id: String(notificationId), type: action, url, body, raw: JSON.stringify(body),
      createdAt: new Date().toISOString() });
  }
}

/**
 * x-signature as MercadoPago computes it: HMAC-SHA256 hex over `id:<data.id>;request-id:<x-request-id>;ts:<ts>;`
 * with data.id taken verbatim from the query string (the official SDKs stopped lowercasing it).
 * ts is sent in seconds: the SDK fix for its bug #458 says real headers carry seconds, though doc examples show
 * 13 digits; receivers should use ts verbatim in the manifest and not assume the unit.
 */
export function signMercadoPago(event: SandboxEvent, secret: string): Record<string, string> {
  const dataId = new URL(event.url!).searchParams.get("data.id") ?? "";
  const requestId = randomUUID();
  const ts = String(Math.floor(Date.now() / 1000));
  const v1 = createHmac("sha256", secret).update(`id:${dataId};request-id:${requestId};ts:${ts};`).digest("hex");
  return { "x-signature": `ts=${ts},v1=${v1}`, "x-request-id": requestId };
}
