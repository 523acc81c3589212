// The one interface every payment provider implements (PaymentProvider), and the normalized shapes its
// operations return: a ProviderUpdate (reserve.provider_update in SQL) and a ProviderRefund
// (reserve.provider_refund). Callers hold a PaymentProvider from the registry and never branch on a
// provider's name; adding a provider is adding a module that implements this.
import { storableTime } from "../times.ts";
import { textOf } from "../sanitize.ts";

export type PaymentStatus =
  | "pending" | "processing" | "succeeded" | "failed" | "cancelled" | "expired"
  | "refunded" | "partially_refunded" | "disputed";

export type PaymentMethod = "card" | "pix";

/** What a provider says about one payment. Amounts are integers in minor units; currency ISO 4217, upper case. */
export interface ProviderUpdate {
  status: PaymentStatus;
  /** the provider's id of the payment (PaymentIntent, MercadoPago payment, OpenPIX correlationID) */
  gatewayPaymentId: string;
  /** our payments.id as the provider echoes it (metadata payment_id, external_reference, correlationID) */
  paymentId?: string;
  /** the PIX endToEndId of the money received */
  endToEndId?: string;
  /** what the provider's payment is for */
  amount?: number;
  currency?: string;
  /** the money the provider says it received (on success) */
  amountReceived?: number;
  /** cumulative amount refunded */
  refundedAmount?: number;
  /** the amount a dispute (chargeback) is about */
  disputeAmount?: number;
  /** the provider's id of the dispute the news is about: its chargeback is booked once */
  disputeId?: string;
  /** the provider's fee, when it says it */
  feeAmount?: number;
  refunds?: ProviderRefund[];
  /** the provider's time of the news, which orders late deliveries */
  eventAt?: Date;
  gatewayStatus: string;
  errorCode?: string;
  errorMessage?: string;
  /** the provider's object, kept as evidence (never a client secret) */
  object: unknown;
}

export interface ProviderRefund {
  refundId: string;
  status: "pending" | "succeeded" | "failed";
  amount?: number;
  currency?: string;
  /** the PIX endToEndId of the money sent back */
  endToEndId?: string;
  object?: unknown;
}

export interface CreatePaymentRequest {
  paymentId: string;
  bookingIntentId: string;
  method: PaymentMethod;
  amount: number;
  currency: string;
  /** our idempotency key of the attempt: a resend is the same provider payment */
  idempotencyKey: string;
  description: string;
  expiresAt: Date;
  payer: { email?: string; name?: string };
}

export interface CreatedPayment {
  update: ProviderUpdate;
  /** what the guest's app needs to pay (client secret, QR code); never stored */
  pay: Record<string, unknown>;
}

export interface RefundRequest {
  requestId: string;
  gatewayPaymentId: string;
  amount: number;
  currency: string;
  reason: string;
  /** refund:<request id>: a resend is the same refund */
  idempotencyKey: string;
}

/**
 * The provider's answer to a refund we asked for, when it is that refund: an id of its own, our payment
 * (when it names one), the amount we asked (when it says one). Anything else cannot be right, and a
 * resend under the same idempotency key answers it again (UnusableAnswer).
 */
export function answeredRefund(provider: string, r: RefundRequest, got: ProviderRefund,
                               seen: { id: unknown; payment?: unknown }): ProviderRefund {
  const id = typeof seen.id === "number" && Number.isSafeInteger(seen.id) ? String(seen.id) : seen.id;
  const payment = seen.payment === undefined || seen.payment === null ? undefined : textOf(seen.payment);
  if (typeof id !== "string" || id.length < 1 || id.length > 255 || (payment !== undefined && payment !== r.gatewayPaymentId) ||
      (got.amount !== undefined && got.amount !== r.amount)) {
    throw new UnusableAnswer(`${provider} answered the refund of ${r.amount} on ${r.gatewayPaymentId} (request ${r.requestId}) with refund ${shown(seen.id, 80)}` +
                             ` of ${shown(got.amount, 80)} on ${payment === undefined ? "no payment named" : shown(payment, 80)}`);
  }
  return { ...got, refundId: id };
}

/**
 * What to ask the provider to learn an event's status, when the event carries none. JSON the module
 * makes and reads itself (kept in processed_webhooks.lookup so the poller can ask again); callers only
 * fill gatewayPaymentId from the PIX endToEndIds the database knows.
 */
export interface LookupKey {
  gatewayPaymentId?: string;
  endToEndIds?: string[];
  [k: string]: unknown;
}

export interface VerifiedEvent {
  eventId: string;
  eventType: string;
  eventAt?: Date;
  /** the event as evidence; sanitized before it is stored */
  payload: unknown;
  /** the event says it */
  update?: ProviderUpdate | null;
  /** or the provider must be asked */
  lookup?: LookupKey;
  /** signed, but can never be applied: recorded dead (an alert) */
  poison?: string;
  /** why there is nothing to apply (recorded as ignored) */
  note?: string;
}

/** Whether a provider payment id is one of our payments (a read of ours, before any call to the provider). */
export type KnownPayment = (gatewayPaymentId: string) => Promise<boolean>;

export type WebhookParse =
  /** a bad signature or a body that is no event: nothing is written */
  | { kind: "refused"; status: number; error: string; message: string; signature?: boolean }
  /** nothing to record, and the provider must stop retrying (e.g. an unsigned IPN about a payment not ours) */
  | { kind: "answered"; status: number; body: Record<string, unknown> }
  | { kind: "event"; event: VerifiedEvent };

/** Where a listing stopped: JSON the module makes and reads itself (kept in reconciliation_runs.cursor). */
export type ListCursor = Record<string, string | number | boolean | null>;

/** A window of provider objects: created at or after `from`, before `to`. */
export interface ListWindow {
  from: Date;
  to: Date;
}

/** One page of a provider's payments, normalized; `next` is null after the last page. */
export interface PaymentPage {
  updates: ProviderUpdate[];
  next: ListCursor | null;
  /** HTTP calls to the provider this page took */
  calls: number;
  /** listed objects the module could not read (the rest of the page is used) */
  unreadable?: UnreadableObject[];
}

/** A listed object that says something no payment, payout or dispute can hold: set aside for a person. */
export interface UnreadableObject {
  kind: "payment" | "payout" | "dispute";
  /** the provider's id for it, when it has a usable one */
  objectId?: string;
  reason: string;
  object: unknown;
}

/**
 * Each listed object read on its own: one the module cannot read (UnusableAnswer) is set aside with
 * why, so one odd object does not stop the listing of all the others (nor leave its run unfinished).
 */
export function readEach<O, T>(objects: readonly O[], kind: UnreadableObject["kind"], read: (o: O) => T,
                               unreadable: UnreadableObject[]): T[] {
  const out: T[] = [];
  for (const o of objects) {
    try {
      out.push(read(o));
    } catch (err) {
      if (!(err instanceof UnusableAnswer)) throw err;
      // OpenPIX names a charge by its correlationID, the others by id
      const named = o as { id?: unknown; correlationID?: unknown } | null;
      const id = named?.correlationID ?? named?.id;
      unreadable.push({ kind, objectId: typeof id === "string" || typeof id === "number" ? String(id) : undefined, reason: err.message, object: o });
    }
  }
  return out;
}

/** What a provider says about one payout from our balance there to our bank. */
export interface ProviderPayout {
  payoutId: string;
  amount: number;
  currency: string;
  status: "pending" | "in_transit" | "paid" | "failed" | "canceled";
  createdAt?: Date;
  arrivalAt?: Date;
  object: unknown;
}

/** A dispute (chargeback) as the provider reports it, with what it took from our balance for it. */
export interface ProviderDispute {
  disputeId: string;
  gatewayPaymentId: string;
  amount: number;
  currency: string;
  /** open (the provider holds the money back), won (given back) or lost (gone to the cardholder) */
  status: "open" | "won" | "lost";
  /** what the provider took from our balance for it, net of what it gave back (minor units, ≥ 0) */
  withheld: number;
  /** the dispute fee it charged, net of any fee given back */
  fee: number;
  /** the time the answer (evidence) is due, while open */
  dueBy?: Date;
  object: unknown;
}

/** Money that moved in a window on payments made before it: their refunds and disputes. */
export interface MoneyMoves {
  /** provider payments with a refund or a dispute created in the window */
  gatewayPaymentIds: string[];
  /** disputes that may still hold money: created in the window or up to the provider's dispute horizon before it */
  disputes: ProviderDispute[];
  calls: number;
  /** listed refunds or disputes the module could not read */
  unreadable?: UnreadableObject[];
}

/** What the provider holds for us in one currency: available plus pending, minor units (may be negative). */
export interface ProviderBalance {
  currency: string;
  amount: number;
}

export interface PaymentProvider {
  readonly name: string;
  readonly methods: readonly PaymentMethod[];
  /** whether its API key is set (payments can be created and read) */
  configured(): boolean;
  /** whether its webhooks can be verified */
  webhookConfigured(): boolean | Promise<boolean>;
  createPayment(r: CreatePaymentRequest): Promise<CreatedPayment>;
  /**
   * What the guest pays a pending payment with (CreatedPayment.pay's fields), read again from the
   * provider's object we stored (payments.provider_payload): PIX codes; never a secret, so nothing for
   * a card, whose client_secret is never stored.
   */
  payFields(stored: unknown): Record<string, string>;
  readPayment(gatewayPaymentId: string): Promise<ProviderUpdate>;
  /** a provider payment made for ours, found by our reference, when the provider can say (null: none) */
  findPayment?(paymentId: string): Promise<ProviderUpdate | null>;
  /**
   * signature check, event id and type, and the update or what to ask (from the raw request and body);
   * `known` says whether a provider payment id is one of ours, for a notification nothing signed
   */
  parseWebhook(req: Request, url: URL, body: string, known?: KnownPayment): Promise<WebhookParse>;
  lookUp(key: LookupKey): Promise<ProviderUpdate>;
  createRefund(r: RefundRequest): Promise<ProviderRefund>;
  readRefund(r: { gatewayPaymentId: string; refundId: string; requestId: string }): Promise<ProviderRefund>;
  /**
   * Reconciliation: one page of the payments created in the window, oldest or newest first as the
   * provider pages, with what each says about money (amount, received, refunded when the listing says
   * it, fee). refundedAmount is 0, not undefined, when the listing says nothing was refunded.
   */
  listPayments(window: ListWindow, cursor: ListCursor | null, pageSize: number): Promise<PaymentPage>;
  /** the payouts made or changed in the window, when the provider reports payouts (else none) */
  listPayouts?(window: ListWindow): Promise<{ payouts: ProviderPayout[]; calls: number; unreadable?: UnreadableObject[] }>;
  /** the balance the provider holds for us, when it reports one */
  readBalance?(): Promise<ProviderBalance[]>;
  /**
   * Reconciliation: refunds and disputes created in the window, so a payment made before it whose money
   * moved in it is compared again, and the disputes whose money the provider holds back (when it lists them).
   */
  listMoneyMoves?(window: ListWindow): Promise<MoneyMoves>;
}

/** A provider call that failed; kind decides our HTTP answer and whether a retry can help. */
export class ProviderError extends Error {
  constructor(
    readonly provider: string,
    /** not_found: the provider does not know it (404): not ours, never worth retrying */
    readonly kind: "rejected" | "not_found" | "rate_limited" | "unavailable" | "timeout" | "not_configured",
    message: string,
    readonly status?: number,
    readonly code?: string,
  ) {
    super(message);
    this.name = "ProviderError";
  }
}

/** The fields whose values are non-empty strings (what a provider's object has of a set of fields). */
export function presentStrings(fields: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(fields)) if (typeof v === "string" && v.length > 0) out[k] = v;
  return out;
}

export { asUuid } from "../uuid_text.ts";

/** A provider's answer that says something no payment can hold (an amount beyond 2^53, a negative one). */
export class UnusableAnswer extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UnusableAnswer";
  }
}

/** A provider's value as a message shows it: its JSON, cut to `max` characters. */
export const shown = (v: unknown, max = 40) => (typeof v === "string" ? JSON.stringify(v) : textOf(v)).slice(0, max);

/** A whole number of minor units the database can hold; absent is undefined, anything else UnusableAnswer. */
export function minor(v: unknown, what: string): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === "number" && Number.isSafeInteger(v) && v >= 0) return v;
  throw new UnusableAnswer(`${what} ${shown(v)} is not a whole number of minor units between 0 and 2^53 - 1`);
}

/** Decimal units (MercadoPago's reais) as minor units, without float drift; absent is undefined. */
export function fromDecimal(v: unknown, what: string): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === "number" && Number.isFinite(v) && v >= 0 && v <= 90_071_992_547_409) {
    const cents = Math.round(v * 100);
    if (Math.abs(cents - v * 100) < 1e-6 * Math.max(1, v)) return cents;
  }
  throw new UnusableAnswer(`${what} ${shown(v)} is not an amount with at most two decimals between 0 and 2^53 - 1 centavos`);
}

/** An ISO 4217 code in upper case; absent is undefined, anything else UnusableAnswer (money in an unknown currency). */
export function upperCurrency(v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === "string" && /^[a-z]{3}$/i.test(v)) return v.toUpperCase();
  throw new UnusableAnswer(`currency ${shown(v)} is not an ISO 4217 code`);
}

/** A time the provider gave, or undefined for anything that is not one (or one we cannot store: a signed event dated 1e20 is recorded without a time). */
export function timeOf(v: unknown): Date | undefined {
  if (typeof v !== "string" && typeof v !== "number") return undefined;
  return storableTime(new Date(v));
}

/** A time in Unix seconds (Stripe's), or undefined for anything that is not one we can store. */
export function fromUnixSeconds(t: unknown): Date | undefined {
  return typeof t === "number" && Number.isFinite(t) ? storableTime(new Date(t * 1000)) : undefined;
}

/** fetch with a deadline; a provider that hangs must not hold the function until the platform kills it. */
export async function fetchWithTimeout(provider: string, url: string, init: RequestInit, timeoutMs: number): Promise<Response> {
  try {
    return await fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    const name = (err as Error)?.name;
    if (name === "TimeoutError" || name === "AbortError") {
      throw new ProviderError(provider, "timeout", `${provider} did not answer within ${timeoutMs} ms`);
    }
    throw new ProviderError(provider, "unavailable", `${provider} unreachable: ${(err as Error)?.message ?? err}`);
  }
}

/** Non-2xx answers of a provider API as a ProviderError, keeping the provider's own code. */
export function httpError(provider: string, res: Response, body: unknown, what: string): ProviderError {
  const b = body as { message?: string; error?: unknown; cause?: { code?: unknown }[] } | null;
  const code = typeof b?.error === "string" ? b.error : b?.cause?.[0]?.code != null ? textOf(b.cause[0].code) : undefined;
  const message = `${provider} ${what}: HTTP ${res.status}${b?.message ? ` ${textOf(b.message)}` : code ? ` ${code}` : ""}`;
  const kind = res.status === 429 ? "rate_limited" : res.status === 404 ? "not_found" : res.status >= 500 ? "unavailable" : "rejected";
  return new ProviderError(provider, kind, message, res.status, code);
}

/**
 * One JSON call to a provider's API: the deadline covers the body too (headers that arrive and a body
 * that stalls are no answer), a body that is not JSON is the provider's fault, and non-2xx answers
 * become a ProviderError with the provider's own code.
 */
export async function providerJson<T>(provider: string, url: string, init: RequestInit, timeoutMs: number, what: string): Promise<T> {
  const res = await fetchWithTimeout(provider, url, init, timeoutMs);
  let text: string;
  try {
    text = await res.text();
  } catch (err) {
    const name = (err as Error)?.name;
    throw new ProviderError(provider, name === "TimeoutError" || name === "AbortError" ? "timeout" : "unavailable",
      `${provider} ${what}: the answer's body did not arrive (${(err as Error)?.message ?? err})`, res.status);
  }
  let parsed: unknown = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    throw new ProviderError(provider, res.ok ? "unavailable" : res.status === 404 ? "not_found" : "rejected",
      `${provider} ${what}: HTTP ${res.status} with a body that is not JSON`, res.status);
  }
  if (!res.ok) throw httpError(provider, res, parsed, what);
  return parsed as T;
}
