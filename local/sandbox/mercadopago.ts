// MercadoPago's Payments API for PIX under /mercadopago: create (X-Idempotency-Key required), read, search,
// refund, lazy expiry, and signed notifications to each payment's own notification_url. Payments follow the
// recorded shape (tests/fixtures/providers/mercadopago): point_of_interaction.type OPENPLATFORM,
// fee_details / charges_details with MercadoPago's PIX fee, transaction_details.net_received_amount.
import { createHash, createHmac, randomUUID } from "node:crypto";
import type { SandboxEvent } from "./types.ts";
import { SandboxError } from "./types.ts";
import type { ApiRequest, ApiResponse } from "./util.ts";
import { brDate, header, parseJson, pixBrCode } from "./util.ts";

type Obj = Record<string, unknown>;
export interface Payment extends Obj {
  id: number;
  status: string;
  transaction_amount: number;
  date_of_expiration: string;
}

const DEFAULT_EXPIRY_MS = 24 * 3600_000;
/** The sandbox's PIX price: MercadoPago's published 0.99% for PIX received (the recorded payments show it). */
export const MP_PIX_FEE_PERCENT = 0.99;
const round2 = (x: number) => Math.round(x * 100) / 100;
export const mpPixFee = (amount: number) => round2((amount * MP_PIX_FEE_PERCENT) / 100);

/** MercadoPago's error body ({message, error, status, cause}), as the official SDK types it. */
export function mpError(status: number, message: string, code?: string | number): ApiResponse {
  const error = { 400: "bad_request", 401: "unauthorized", 404: "not_found", 409: "conflict", 429: "too_many_requests" }[status]
    ?? (status >= 500 ? "internal_error" : "bad_request");
  return { status, body: { message, error, status, cause: code === undefined ? [] : [{ code, description: message, data: null }] } };
}

// MercadoPago stores metadata keys in snake_case (bookingId comes back as booking_id)
const snake = (k: string) => k.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toLowerCase();

export interface MercadoPagoSnapshot {
  payments: Payment[];
  idempotent: [string, { fingerprint: string; id: number }][];
  refundKeys: [string, Obj][];
  nextId: number;
  nextRefundId: number;
  nextNotificationId: number;
  userId: string;
  pixKey: string;
}

const SORTS = ["date_approved", "date_created", "date_last_updated", "money_release_date"];
const MAX_SEARCH_LIMIT = 1000;

export class MercadoPago {
  readonly payments = new Map<number, Payment>();
  private idempotent = new Map<string, { fingerprint: string; id: number }>();
  private refundKeys = new Map<string, Obj>();
  private nextId = 1_320_000_000 + Math.floor(Math.random() * 1_000_000);
  private nextRefundId = 1_500_000_000;
  private nextNotificationId = 120_000_000_000;
  userId = String(100_000_000 + Math.floor(Math.random() * 900_000_000));
  private pixKey: string = randomUUID();
  /** IPN besides the webhook, as MercadoPago does unless notification_url says `source_news=webhooks` */
  ipn = false;

  constructor(
    private accessToken: string,
    private webhookSecret: string,
    private apiBase: string,
    private pagesBase: string,
    private emitEvent: (e: SandboxEvent) => void,
    private qr: (text: string) => string,
  ) {}

  snapshot(): MercadoPagoSnapshot {
    return { payments: [...this.payments.values()], idempotent: [...this.idempotent], refundKeys: [...this.refundKeys],
      nextId: this.nextId, nextRefundId: this.nextRefundId, nextNotificationId: this.nextNotificationId, userId: this.userId,
      pixKey: this.pixKey };
  }

  restore(s: MercadoPagoSnapshot): void {
    for (const p of s.payments) this.payments.set(p.id, p);
    for (const [k, v] of s.idempotent) this.idempotent.set(k, v);
    for (const [k, v] of s.refundKeys) this.refundKeys.set(k, v);
    Object.assign(this, { nextId: s.nextId, nextRefundId: s.nextRefundId, nextNotificationId: s.nextNotificationId,
      userId: s.userId, pixKey: s.pixKey });
  }

  handle(req: ApiRequest): ApiResponse {
    if (header(req.headers, "authorization") !== `Bearer ${this.accessToken}`) {
      return mpError(401, "invalid access token", "unauthorized");
    }
    const seg = req.path.split("/").filter(Boolean); // ["v1", "payments", id?, "refunds"?]
    if (seg[0] !== "v1" || seg[1] !== "payments") return mpError(404, `resource ${req.method} ${req.path} not found`);
    if (req.method === "GET" && seg.length === 3 && seg[2] === "search") return this.search(req.query);
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

  /**
   * GET /v1/payments/search: sort (date_approved | date_created | date_last_updated | money_release_date),
   * criteria (asc | desc), range + begin_date + end_date (ISO 8601 or NOW, NOW-<n>DAYS|HOURS|MINUTES),
   * external_reference, status, id, limit (default 30) and offset; answers {paging {total, limit, offset}, results}.
   */
  private search(q: URLSearchParams): ApiResponse {
    const limit = q.has("limit") ? Number(q.get("limit")) : 30;
    const offset = q.has("offset") ? Number(q.get("offset")) : 0;
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_SEARCH_LIMIT) return mpError(400, `limit must be an integer between 1 and ${MAX_SEARCH_LIMIT}`, "invalid_limit");
    if (!Number.isInteger(offset) || offset < 0) return mpError(400, "offset must be a non-negative integer", "invalid_offset");
    const sort = q.get("sort") ?? "date_created";
    if (!SORTS.includes(sort)) return mpError(400, `sort must be one of ${SORTS.join(", ")}`, "invalid_sort");
    const criteria = q.get("criteria") ?? "desc";
    if (criteria !== "asc" && criteria !== "desc") return mpError(400, "criteria must be asc or desc", "invalid_criteria");
    const range = q.get("range");
    if (range !== null && !SORTS.includes(range)) return mpError(400, `range must be one of ${SORTS.join(", ")}`, "invalid_range");
    const begin = q.has("begin_date") ? mpDate(q.get("begin_date")!) : undefined;
    const end = q.has("end_date") ? mpDate(q.get("end_date")!) : undefined;
    if (Number.isNaN(begin) || Number.isNaN(end)) return mpError(400, "begin_date and end_date must be ISO 8601 dates or NOW[-<n>DAYS|HOURS|MINUTES]", "invalid_date");
    if ((begin !== undefined || end !== undefined) && range === null) return mpError(400, "range is required with begin_date or end_date", "invalid_range");
    const filters: [string, string][] = (["external_reference", "status", "id", "payment_method_id"] as const)
      .filter((k) => q.has(k)).map((k) => [k, q.get(k)!]);
    this.sweep();
    const at = (p: Payment, field: string) => (typeof p[field] === "string" ? Date.parse(p[field] as string) : NaN);
    const all = [...this.payments.values()].filter((p) => {
      for (const [k, v] of filters) if (String(p[k]) !== v) return false;
      if (range !== null) {
        const t = at(p, range);
        if (Number.isNaN(t)) return false;
        if (begin !== undefined && t < begin) return false;
        if (end !== undefined && t > end) return false;
      }
      return true;
    });
    const dir = criteria === "asc" ? 1 : -1;
    all.sort((a, b) => dir * ((at(a, sort) || 0) - (at(b, sort) || 0) || a.id - b.id));
    return { status: 200, body: { paging: { total: all.length, limit, offset },
      results: all.slice(offset, offset + limit).map(searchResult) } };
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
    let expires = Date.now() + DEFAULT_EXPIRY_MS;
    if (b.date_of_expiration !== undefined) {
      const ms = typeof b.date_of_expiration === "string" && /T.*([+-]\d\d:\d\d|Z)$/.test(b.date_of_expiration)
        ? Date.parse(b.date_of_expiration) : NaN;
      if (Number.isNaN(ms)) return mpError(400, "Invalid date_of_expiration: use yyyy-MM-dd'T'HH:mm:ss.SSSz", 23);
      expires = ms;
    }
    const payment = this.newPayment({
      amount, expires, description: (b.description as string) ?? null, external_reference: (b.external_reference as string) ?? null,
      metadata: Object.fromEntries(Object.entries((b.metadata ?? {}) as Obj).map(([k, v]) => [snake(k), v])),
      payer, additional_info: (b.additional_info as Obj) ?? null, notification_url: (b.notification_url as string) ?? null,
    });
    this.idempotent.set(key, { fingerprint, id: payment.id });
    this.payments.set(payment.id, payment);
    this.notify(payment, "payment.created");
    return { status: 201, body: this.view(payment) };
  }

  private newPayment(o: { amount: number; expires: number; description: string | null; external_reference: string | null;
    metadata: Obj; payer: Obj; additional_info: Obj | null; notification_url: string | null; currency?: string; now?: number }): Payment {
    const now = o.now ?? Date.now();
    const id = this.nextId++;
    const qrCode = pixBrCode(Math.round(o.amount * 100), this.pixKey, `mpqrinter${id}`);
    const fee = mpPixFee(o.amount);
    return {
      id, date_created: brDate(now), date_approved: null, date_last_updated: brDate(now),
      date_of_expiration: brDate(o.expires), money_release_date: null, money_release_status: "released",
      operation_type: "regular_payment", issuer_id: null, payment_method_id: "pix", payment_type_id: "bank_transfer",
      payment_method: { id: "pix", type: "bank_transfer" },
      status: "pending", status_detail: "pending_waiting_transfer", currency_id: o.currency ?? "BRL",
      description: o.description, live_mode: false, sponsor_id: null, authorization_code: null, money_release_schema: null,
      taxes_amount: 0, counter_currency: null, brand_id: null, shipping_amount: 0, pos_id: null, store_id: null,
      integrator_id: null, platform_id: null, corporation_id: null, collector_id: Number(this.userId),
      payer: { type: null, id: null, operator_id: null, email: o.payer.email ?? null,
        identification: o.payer.identification ?? { type: null, number: null },
        phone: { area_code: null, number: null, extension: null },
        first_name: o.payer.first_name ?? null, last_name: o.payer.last_name ?? null, entity_type: null },
      marketplace_owner: null, metadata: o.metadata,
      additional_info: { ...(o.additional_info ?? {}), available_balance: null, nsu_processadora: null, authentication_code: null },
      order: {}, external_reference: o.external_reference,
      transaction_amount: o.amount, transaction_amount_refunded: 0, coupon_amount: 0, differential_pricing_id: null,
      deduction_schema: null, callback_url: null, installments: 1,
      transaction_details: { payment_method_reference_id: null, net_received_amount: 0, total_paid_amount: o.amount,
        overpaid_amount: 0, external_resource_url: null, installment_amount: 0, financial_institution: null,
        payable_deferral_period: null, acquirer_reference: null, bank_transfer_id: null, transaction_id: null },
      fee_details: [],
      // the fee is set when the payment is made, and charged once it is approved (the recorded PIX shows it while pending)
      charges_details: [{ id: `${id}-001`, name: "mercadopago_fee", type: "fee", accounts: { from: "collector", to: "mp" },
        client_id: 0, date_created: brDate(now), last_updated: brDate(now), amounts: { original: fee, refunded: 0 },
        metadata: {}, reserve_id: null, refund_charges: [] }],
      captured: true, binary_mode: false, call_for_authorize_id: null, statement_descriptor: null, card: {},
      notification_url: o.notification_url, refunds: [], processing_mode: "aggregator", merchant_account_id: null,
      merchant_number: null, acquirer_reconciliation: [],
      point_of_interaction: {
        type: "OPENPLATFORM", linked_to: null, business_info: { unit: "online_payments", sub_unit: "default" },
        location: { state_id: null, source: null }, application_data: { name: null, version: null },
        transaction_data: {
          qr_code: qrCode, bank_transfer_id: null, transaction_id: null, e2e_id: null, financial_institution: null,
          bank_info: { payer: { account_id: null, id: null, long_name: null, external_account_id: null },
            collector: { account_id: null, long_name: null, account_holder_name: "Reserve Connect Sandbox", transfer_account_id: null },
            is_same_bank_account_owner: null, origin_bank_id: null, origin_wallet_id: null },
          ticket_url: `${this.pagesBase}/payments/${id}/ticket?caller_id=${this.userId}&hash=${randomUUID()}`,
        },
      },
    };
  }

  /** Reads apply expiry first, like the real API that answers with the current status. */
  read(id: number): Payment {
    const p = this.payments.get(id);
    if (!p) throw new SandboxError(404, `no MercadoPago payment ${id}`);
    this.expireIfDue(p);
    return this.view(p);
  }

  /** The payment as the API answers it: with the QR image of its code (drawn on read, not kept in state). */
  view(p: Payment): Payment {
    const out = structuredClone(p);
    const data = (out.point_of_interaction as Obj).transaction_data as Obj;
    const { ticket_url: ticket, ...rest } = data;
    (out.point_of_interaction as Obj).transaction_data = { ...rest, qr_code_base64: this.qr(data.qr_code as string), ticket_url: ticket };
    return out;
  }

  expireIfDue(p: Payment, now = Date.now()): void {
    if (p.status === "pending" && Date.parse(p.date_of_expiration) <= now) this.markExpired(p);
  }

  /** The timer half of expiry: notifications go out even if nobody reads the payment. */
  sweep(now = Date.now()): boolean {
    let changed = false;
    for (const p of this.payments.values()) {
      if (p.status !== "pending") continue;
      this.expireIfDue(p, now);
      changed ||= p.status !== "pending";
    }
    return changed;
  }

  expireNow(id: number): Payment {
    const p = this.get(id);
    if (p.status !== "pending") throw new SandboxError(409, `payment ${id} is ${p.status}, not pending`);
    p.date_of_expiration = brDate(Date.now());
    this.markExpired(p);
    return this.view(p);
  }

  /**
   * The guest pays the PIX in the bank app. `amount`/`currency` make MercadoPago approve the payment for
   * other figures than it was created with (the mismatch our side must catch); `notify: false` sends nothing.
   */
  pay(id: number, opts: { afterExpiry?: boolean; amount?: number; currency?: string; notify?: boolean } = {}): Payment {
    const p = this.get(id);
    this.expireIfDue(p);
    const expired = p.status === "cancelled" && p.status_detail === "expired";
    if (expired && !opts.afterExpiry) throw new SandboxError(409, `payment ${id} expired at ${p.date_of_expiration}; pass afterExpiry to pay anyway`);
    if (p.status !== "pending" && !expired) throw new SandboxError(409, `payment ${id} is ${p.status}, cannot be paid`);
    if (opts.amount !== undefined && !(typeof opts.amount === "number" && opts.amount > 0)) throw new SandboxError(400, "amount must be a positive number (reais)");
    this.approve(p, Date.now(), opts.amount, opts.currency);
    if (opts.notify !== false) this.notify(p, "payment.updated");
    return this.view(p);
  }

  private approve(p: Payment, now: number, amount?: number, currency?: string): void {
    if (amount !== undefined) p.transaction_amount = amount;
    if (currency !== undefined) p.currency_id = currency.toUpperCase();
    const fee = mpPixFee(p.transaction_amount);
    Object.assign(p, { status: "approved", status_detail: "accredited", date_approved: brDate(now), date_last_updated: brDate(now),
      money_release_date: brDate(now), fee_details: [{ type: "mercadopago_fee", amount: fee, fee_payer: "collector" }] });
    const charge = (p.charges_details as Obj[])[0]!;
    Object.assign(charge, { amounts: { original: fee, refunded: 0 }, last_updated: brDate(now) });
    Object.assign(p.transaction_details as Obj, { net_received_amount: round2(p.transaction_amount - fee),
      total_paid_amount: p.transaction_amount, installment_amount: p.transaction_amount,
      bank_transfer_id: Math.floor(Math.random() * 1e11), transaction_id: `PIXE${randomUUID().replace(/-/g, "").slice(0, 28)}` });
    const data = (p.point_of_interaction as Obj).transaction_data as Obj;
    data.e2e_id = `E18236120${new Date(now).toISOString().replace(/\D/g, "").slice(0, 12)}${randomUUID().replace(/-/g, "").slice(0, 11)}`;
    (data.bank_info as Obj).payer = { account_id: String(Math.floor(Math.random() * 1e18)), id: null, long_name: "NU PAGAMENTOS S.A. - INSTITUIÇÃO DE PAGAMENTO", external_account_id: null };
  }

  /**
   * A PIX MercadoPago received and we were never told of: approved at once, no notification sent;
   * with our external_reference (a payment of ours whose notification was lost) or without (a stranger's).
   */
  unnotifiedPayment(o: { transaction_amount: number; external_reference?: string | null; metadata?: Obj; currency?: string; payer_email?: string }): Payment {
    if (!(typeof o.transaction_amount === "number" && o.transaction_amount > 0)) throw new SandboxError(400, "transaction_amount must be a positive number (reais)");
    const now = Date.now();
    const p = this.newPayment({ amount: o.transaction_amount, expires: now + DEFAULT_EXPIRY_MS, description: null,
      external_reference: o.external_reference ?? null, metadata: { ...o.metadata }, payer: { email: o.payer_email ?? "guest@example.com" },
      additional_info: null, notification_url: null, currency: o.currency });
    this.payments.set(p.id, p);
    this.approve(p, now);
    return this.view(p);
  }

  seed(n: number, o: { status?: string; transaction_amount: number; external_reference?: string; metadata?: Obj; created?: number }): number[] {
    const ids: number[] = new Array(n);
    const now = o.created ?? Date.now();
    const status = o.status ?? "pending";
    for (let i = 0; i < n; i++) {
      const p = this.newPayment({ amount: o.transaction_amount, expires: now + DEFAULT_EXPIRY_MS, description: null,
        external_reference: o.external_reference ?? null, metadata: { ...o.metadata }, payer: { email: "guest@example.com" },
        additional_info: null, notification_url: null, now });
      if (status === "approved") this.approve(p, now);
      else if (status !== "pending") Object.assign(p, { status, status_detail: status });
      this.payments.set(p.id, p);
      ids[i] = p.id;
    }
    return ids;
  }

  private refund(p: Payment, b: Obj, key: string | undefined): ApiResponse {
    if (key && this.refundKeys.has(key)) return { status: 201, body: this.refundKeys.get(key) };
    this.expireIfDue(p);
    if (p.status !== "approved") return mpError(400, `Payment not refundable: status ${p.status}`, 2063);
    const remaining = round2(p.transaction_amount - (p.transaction_amount_refunded as number));
    const amount = b.amount === undefined ? remaining : b.amount;
    if (typeof amount !== "number" || !(amount > 0)) return mpError(400, "amount must be a positive number", 4037);
    if (amount > remaining + 1e-9) return mpError(400, `The amount to refund (${amount}) exceeds the payment's remaining amount (${remaining})`, 2085);
    const now = Date.now();
    const refund: Obj = { id: this.nextRefundId++, payment_id: p.id, amount, metadata: {}, source: { id: this.userId, name: "Reserve Connect", type: "collector" },
      date_created: brDate(now), external_refund_id: null, unique_sequence_number: null, refund_mode: "standard", adjustment_amount: 0,
      status: "approved", reason: null, labels: [], amount_refunded_to_payer: amount, partition_details: [] };
    (p.refunds as Obj[]).push(refund);
    p.transaction_amount_refunded = round2((p.transaction_amount_refunded as number) + amount);
    const full = p.transaction_amount_refunded === p.transaction_amount;
    // MercadoPago gives its fee back in proportion to what was refunded
    const charge = (p.charges_details as Obj[])[0];
    if (charge) (charge.amounts as Obj).refunded = round2(((charge.amounts as Obj).original as number) * (p.transaction_amount_refunded as number) / p.transaction_amount);
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

  /**
   * To the payment's notification_url: the webhook (`?data.id=&type=payment`, signed) and, when IPN is on
   * and the URL does not say `source_news=webhooks`, the IPN (`?topic=payment&id=`, unsigned).
   */
  private notify(p: Payment, action: string): void {
    const notificationId = this.nextNotificationId++;
    const body = { action, api_version: "v1", data: { id: String(p.id) }, date_created: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
      id: notificationId, live_mode: false, type: "payment", user_id: this.userId };
    const target = typeof p.notification_url === "string" && p.notification_url ? new URL(p.notification_url) : null;
    const news = target?.searchParams.get("source_news");
    let url: string | null = null;
    if (target && news !== "ipn") {
      const u = new URL(target);
      u.searchParams.append("data.id", String(p.id));
      u.searchParams.append("type", "payment");
      url = u.toString();
    }
    if (url !== null || !target) {
      this.emitEvent({ provider: "mercadopago", id: String(notificationId), type: action, url, body, raw: JSON.stringify(body),
        createdAt: new Date().toISOString() });
    }
    if (target && (news === "ipn" || (this.ipn && news !== "webhooks"))) {
      const u = new URL(target);
      u.searchParams.append("topic", "payment");
      u.searchParams.append("id", String(p.id));
      const ipn = { resource: String(p.id), topic: "payment" };
      this.emitEvent({ provider: "mercadopago", id: `ipn_${notificationId}`, type: "ipn.payment", url: u.toString(), body: ipn,
        raw: JSON.stringify(ipn), createdAt: new Date().toISOString(), unsigned: true });
    }
  }
}

/** A search result as the recorded ones: the payment, its transaction_data without the QR image and ticket. */
function searchResult(p: Payment): Payment {
  const out = structuredClone(p);
  const data = (out.point_of_interaction as Obj).transaction_data as Obj;
  delete data.ticket_url;
  out.shipping_cost = 0; // in the recorded search results, not in single-payment answers
  return out;
}

/** MercadoPago's search dates: ISO 8601, or NOW / NOW-<n>DAYS|HOURS|MINUTES relative to now. */
function mpDate(v: string): number {
  const rel = /^NOW(?:-(\d+)(DAYS|HOURS|MINUTES))?$/.exec(v);
  if (rel) {
    const n = Number(rel[1] ?? 0);
    const unit = rel[2] === "DAYS" ? 86_400_000 : rel[2] === "HOURS" ? 3_600_000 : 60_000;
    return Date.now() - n * unit;
  }
  return /^\d{4}-\d\d-\d\dT/.test(v) ? Date.parse(v) : NaN;
}

/**
 * x-signature as MercadoPago computes it: HMAC-SHA256 hex over `id:<data.id>;request-id:<x-request-id>;ts:<ts>;`
 * with data.id taken verbatim from the query string (the official SDKs stopped lowercasing it).
 * ts is sent in seconds: the SDK fix for its bug #458 says real headers carry seconds, though doc examples show
 * 13 digits; receivers should use ts verbatim in the manifest and not assume the unit.
 */
export function signMercadoPago(event: SandboxEvent, secret: string): Record<string, string> {
  if (event.unsigned) return {};
  const dataId = new URL(event.url!).searchParams.get("data.id") ?? "";
  const requestId = randomUUID();
  const ts = String(Math.floor(Date.now() / 1000));
  const v1 = createHmac("sha256", secret).update(`id:${dataId};request-id:${requestId};ts:${ts};`).digest("hex");
  return { "x-signature": `ts=${ts},v1=${v1}`, "x-request-id": requestId };
}
