// Stripe (card): PaymentIntents, webhooks signed with Stripe-Signature, refunds, all reduced to the
// normalized ProviderUpdate / ProviderRefund. The client is the real API or the sandbox (host/port).
// Money: amount_received and currency of the PaymentIntent (what arrived), amount_refunded of its charge,
// the dispute's amount, and Stripe's fee from the charge's balance transaction (a read expands
// latest_charge.balance_transaction; a webhook's PaymentIntent carries no fee, reconciliation books it).
// A read of a charge ever disputed also lists its disputes: the charge's `disputed` never clears.
// Reconciliation lists PaymentIntents by `created` with the same expansion, payouts, and /v1/balance.
import Stripe from "stripe";
import { hmacSha256Hex, sha256Bytes } from "../crypto.ts";
import { textOf } from "../sanitize.ts";
import type { StripeSettings } from "../provider_config.ts";
import {
  answeredRefund, asUuid, fromUnixSeconds, minor, ProviderError, readEach, shown, timeOf, upperCurrency, UnusableAnswer, type ListCursor, type ListWindow, type LookupKey,
  type MoneyMoves, type PaymentPage, type PaymentProvider, type PaymentStatus, type ProviderBalance, type ProviderDispute,
  type ProviderPayout, type ProviderRefund,
  type ProviderUpdate, type UnreadableObject, type WebhookParse,
} from "./types.ts";

type Obj = Record<string, any>;

export function stripeClient(cfg: { secretKey: string; apiBase?: string; timeoutMs?: number }): Stripe {
  const base = cfg.apiBase ? new URL(cfg.apiBase) : undefined;
  return new Stripe(cfg.secretKey, {
    httpClient: Stripe.createFetchHttpClient(),
    timeout: cfg.timeoutMs ?? 10_000,
    // stripe-node repeats a failed call itself with the same idempotency key, so a retry is safe
    maxNetworkRetries: 1,
    ...(base && {
      host: base.hostname,
      port: Number(base.port || (base.protocol === "https:" ? 443 : 80)),
      protocol: base.protocol.replace(":", "") as "http" | "https",
    }),
  });
}

/** A Stripe SDK error as ours: the guest's answer depends on whether a retry can help. */
export function stripeError(err: unknown): ProviderError {
  if (err instanceof ProviderError) return err;
  const e = err as { type?: string; statusCode?: number; code?: string; message?: string; detail?: { code?: string } };
  const status = e?.statusCode;
  const kind = e?.type === "StripeConnectionError" && e.detail?.code === "ETIMEDOUT" ? "timeout"
    : e?.type === "StripeRateLimitError" || status === 429 ? "rate_limited"
    : status === 404 || e?.code === "resource_missing" ? "not_found"
    : e?.type === "StripeConnectionError" || status === undefined || status >= 500 ? "unavailable"
    : "rejected";
  return new ProviderError("stripe", kind, `stripe: ${e?.message ?? String(err)}`, status, e?.code);
}

const piId = (v: unknown): string | undefined => (typeof v === "string" ? v : typeof (v as Obj)?.id === "string" ? (v as Obj).id : undefined);

/**
 * A PaymentIntent's client_secret completes a payment from the browser: Stripe says never to store or
 * log it. Objects we keep as evidence (payments.provider_payload, processed_webhooks.payload) go without.
 */
export function withoutClientSecret<T>(o: T): T {
  if (!o || typeof o !== "object" || !("client_secret" in o)) return o;
  const { client_secret: _dropped, ...rest } = o as T & { client_secret?: unknown };
  return rest as T;
}

/** The event as we store it: the same, minus its object's client_secret. */
export function storableEvent(event: Obj): Obj {
  const object = event?.data?.object;
  return object ? { ...event, data: { ...event.data, object: withoutClientSecret(object) } } : event;
}

function refundStatus(amount: number | undefined, refunded: number): PaymentStatus {
  return amount !== undefined && refunded >= amount ? "refunded" : "partially_refunded";
}

/** What a PaymentIntent says about money: its amount, currency, what arrived, and our reference. */
function intentMoney(pi: Obj) {
  return {
    amount: minor(pi.amount, "amount"),
    currency: upperCurrency(pi.currency),
    amountReceived: pi.status === "succeeded" ? minor(pi.amount_received, "amount_received") : undefined,
    paymentId: asUuid(pi.metadata?.payment_id),
  };
}

/**
 * What a charge's disputes say, all told: open while any is open, lost once any was lost, won when each
 * went our way (won, an inquiry closed, or prevented); undefined when none is listed.
 */
export function disputesOutcome(disputes: readonly ProviderDispute[]): ProviderDispute["status"] | undefined {
  const statuses = new Set(disputes.map((d) => d.status));
  return statuses.has("open") ? "open" : statuses.has("lost") ? "lost" : statuses.has("won") ? "won" : undefined;
}

/** Whether a PaymentIntent's charge was ever disputed: Stripe keeps `disputed` true after a dispute is won. */
function everDisputed(pi: Obj): boolean {
  return pi.status === "succeeded" && typeof pi.latest_charge === "object" && pi.latest_charge?.disputed === true;
}

/**
 * A PaymentIntent (latest_charge expanded) as our status: what a read (poll, lookup, listing) applies.
 * `disputes` is what the charge's Dispute objects say (disputesOutcome), asked when it was ever disputed.
 */
export function paymentIntentUpdate(pi: Stripe.PaymentIntent | Obj, disputes?: ProviderDispute["status"]): ProviderUpdate {
  const p = pi as Obj;
  const charge = p.latest_charge && typeof p.latest_charge === "object" ? p.latest_charge as Obj : null;
  const refunded = minor(charge?.amount_refunded, "amount_refunded") ?? 0;
  let status: PaymentStatus;
  switch (p.status) {
    case "succeeded":
      // a dispute won gives back the charge's own state, as charge.dispute.closed (won) does. Lost reads
      // as disputed, without its amount: the chargeback is booked once, by the webhook or reconciliation's
      // dispute listing; an amount on every read would be booked again on each
      status = charge?.disputed && disputes !== "won" ? "disputed"
        : refunded > 0 ? refundStatus(minor(charge?.amount, "charge amount") ?? minor(p.amount_received, "amount_received"), refunded)
        : "succeeded";
      break;
    case "processing":
    case "requires_capture":
      status = "processing";
      break;
    case "canceled":
      status = "cancelled";
      break;
    default:
      // requires_payment_method after a decline is a failed attempt; before any, nobody has paid yet
      status = p.last_payment_error ? "failed" : "pending";
  }
  const money = intentMoney(p);
  // the fee Stripe took, when the charge's balance transaction was expanded
  const txn = charge?.balance_transaction && typeof charge.balance_transaction === "object" ? charge.balance_transaction as Obj : null;
  const fee = p.status === "succeeded" ? minor(txn?.fee, "balance transaction fee") : undefined;
  return {
    status,
    gatewayPaymentId: p.id,
    ...money,
    feeAmount: fee || undefined,
    gatewayStatus: textOf(p.status),
    errorCode: p.last_payment_error?.decline_code ?? p.last_payment_error?.code ?? undefined,
    errorMessage: p.last_payment_error?.message ?? undefined,
    refundedAmount: refunded || undefined,
    object: withoutClientSecret(p),
  };
}

/** A webhook event: the update it carries, what to look up, or null for a type we record but do not act on. */
export function stripeEventNews(event: Obj): { update: ProviderUpdate | null; lookup?: LookupKey } {
  const eventAt = fromUnixSeconds(event.created);
  const o = event.data?.object ?? {};
  switch (event.type) {
    case "payment_intent.processing":
    case "payment_intent.succeeded":
    case "payment_intent.payment_failed":
    case "payment_intent.canceled": {
      if (typeof o.id !== "string") return { update: null };
      const status: PaymentStatus = event.type === "payment_intent.processing" ? "processing"
        : event.type === "payment_intent.succeeded" ? "succeeded"
        : event.type === "payment_intent.canceled" ? "cancelled" : "failed";
      const err = status === "failed" ? o.last_payment_error : null;
      const money = intentMoney(o);
      return {
        update: {
          status,
          gatewayPaymentId: o.id,
          ...money,
          // a succeeded event says what arrived; Stripe sets amount_received with the status
          amountReceived: status === "succeeded" ? minor(o.amount_received, "amount_received") : undefined,
          eventAt,
          gatewayStatus: textOf(o.status),
          errorCode: err?.decline_code ?? err?.code ?? undefined,
          errorMessage: err?.message ?? undefined,
          object: withoutClientSecret(o),
        },
      };
    }
    case "charge.refunded": {
      const pi = piId(o.payment_intent);
      const refunded = minor(o.amount_refunded, "amount_refunded");
      if (!pi || !refunded) return { update: null };
      return {
        update: {
          status: refundStatus(minor(o.amount, "amount"), refunded),
          gatewayPaymentId: pi,
          paymentId: asUuid(o.metadata?.payment_id),
          currency: upperCurrency(o.currency),
          refundedAmount: refunded,
          eventAt,
          gatewayStatus: o.refunded ? "refunded" : "partially_refunded",
          object: o,
        },
      };
    }
    case "charge.dispute.created":
    case "charge.dispute.closed": {
      let update: ProviderUpdate;
      const disputeAmount = minor(o.amount, "dispute amount");
      const currency = upperCurrency(o.currency);
      // named, so its chargeback is booked once however often and in whatever order its news comes
      const disputeId = typeof o.id === "string" ? o.id : undefined;
      if (event.type === "charge.dispute.created") {
        update = { status: "disputed", gatewayPaymentId: "", disputeAmount, disputeId, currency, eventAt, gatewayStatus: `dispute_${textOf(o.status)}`, object: o };
      } else if (o.status === "lost") {
        // won (or an inquiry closed without a chargeback) gives the money back to us; lost takes it
        update = { status: "refunded", gatewayPaymentId: "", disputeAmount, disputeId, currency, eventAt, gatewayStatus: "dispute_lost", object: o };
      } else {
        update = { status: "succeeded", gatewayPaymentId: "", disputeId, eventAt, gatewayStatus: `dispute_${textOf(o.status)}`, object: o };
      }
      const pi = piId(o.payment_intent);
      if (pi) return { update: { ...update, gatewayPaymentId: pi } };
      // older disputes name only the charge: its PaymentIntent is looked up, the rest is this signed event
      const charge = piId(o.charge);
      if (!charge) return { update: null };
      return { update: null, lookup: { charge, news: { ...update, eventAt: eventAt?.toISOString() } } };
    }
    default:
      return { update: null };
  }
}

const unixSeconds = (d: Date) => Math.floor(d.getTime() / 1000);
/** what an object lacks, of the parts it needs */
const lacking = (has: Record<string, boolean>) => Object.entries(has).filter(([, ok]) => !ok).map(([part]) => part).join(", ");
const PAYOUT_STATUSES = new Set(["pending", "in_transit", "paid", "failed", "canceled"]);

/** A Stripe payout as ours. */
export function stripePayout(o: Obj): ProviderPayout {
  const amount = minor(o.amount, "payout amount");
  const currency = upperCurrency(o.currency);
  if (!amount || !currency || typeof o.id !== "string" || !PAYOUT_STATUSES.has(o.status)) {
    throw new UnusableAnswer(`stripe payout ${textOf(o.id).slice(0, 40)} lacks ${lacking({ id: typeof o.id === "string", amount: !!amount, currency: !!currency,
                                                                                           [`a known status (${shown(o.status)})`]: PAYOUT_STATUSES.has(o.status) })}`);
  }
  return { payoutId: o.id, amount, currency, status: o.status, createdAt: fromUnixSeconds(o.created), arrivalAt: fromUnixSeconds(o.arrival_date), object: o };
}

// a cardholder may dispute a charge up to 120 days after it; a dispute open since is still holding money
const DISPUTE_HORIZON_S = 180 * 86_400;
const OPEN_DISPUTE = new Set(["needs_response", "under_review", "warning_needs_response", "warning_under_review"]);
const WON_DISPUTE = new Set(["won", "warning_closed", "prevented"]);

/** A Stripe dispute as ours: what its balance transactions took from our balance and charged as a fee. */
export function stripeDispute(o: Obj): ProviderDispute {
  const amount = minor(o.amount, "dispute amount");
  const currency = upperCurrency(o.currency);
  const pi = typeof o.payment_intent === "string" ? o.payment_intent : o.payment_intent?.id;
  const status = OPEN_DISPUTE.has(o.status) ? "open" : WON_DISPUTE.has(o.status) ? "won" : o.status === "lost" ? "lost" : undefined;
  if (typeof o.id !== "string" || typeof pi !== "string" || !amount || !currency || !status) {
    throw new UnusableAnswer(`stripe dispute ${textOf(o.id).slice(0, 40)} lacks ${lacking({ id: typeof o.id === "string", payment_intent: typeof pi === "string",
                                                                                           amount: !!amount, currency: !!currency, [`a known status (${shown(o.status)})`]: !!status })}`);
  }
  let moved = 0;
  let fee = 0;
  for (const t of (Array.isArray(o.balance_transactions) ? o.balance_transactions : []) as Obj[]) {
    moved += minor(Math.abs(t.amount), "dispute balance transaction amount")! * Math.sign(t.amount);
    fee += minor(Math.abs(t.fee ?? 0), "dispute balance transaction fee")! * Math.sign(t.fee ?? 0);
  }
  // a balance transaction's amount is gross (the fee is taken on top): what left our balance is -amount
  return { disputeId: o.id, gatewayPaymentId: pi, amount, currency, status, withheld: Math.max(0, -moved), fee: Math.max(0, fee),
           dueBy: status === "open" ? fromUnixSeconds(o.evidence_details?.due_by) : undefined, object: o };
}

const stripeRefundStatus = (s: unknown): ProviderRefund["status"] =>
  s === "succeeded" ? "succeeded" : s === "failed" || s === "canceled" ? "failed" : "pending";

function refundOf(r: Obj): ProviderRefund {
  return { refundId: r.id, status: stripeRefundStatus(r.status), amount: minor(r.amount, "refund amount"), currency: upperCurrency(r.currency), object: r };
}

/**
 * The HMAC of Stripe-Signature through node:crypto (crypto.ts); the SDK still parses the header, checks
 * the 300 s tolerance and compares. Its Deno build would use WebCrypto, an async op on another thread
 * per call, which under load cost more than the rest of a duplicate delivery's checks.
 */
class NodeHmacCryptoProvider extends Stripe.CryptoProvider {
  override computeHMACSignature(payload: string, secret: string): string {
    return hmacSha256Hex(secret, payload);
  }
  override computeHMACSignatureAsync(payload: string, secret: string): Promise<string> {
    return Promise.resolve(hmacSha256Hex(secret, payload));
  }
  override computeSHA256Async(data: Uint8Array): Promise<Uint8Array> {
    return Promise.resolve(sha256Bytes(data));
  }
}

export function stripeProvider(settings: () => StripeSettings): PaymentProvider {
  let client: { key: string; base?: string; stripe: Stripe } | undefined;
  let verifier: Stripe | undefined;
  const cryptoProvider = new NodeHmacCryptoProvider();

  function api(): Stripe {
    const s = settings();
    if (!s.secretKey) throw new ProviderError("stripe", "not_configured", "stripe is not configured (STRIPE_SECRET_KEY)");
    if (!client || client.key !== s.secretKey || client.base !== s.apiBase) {
      client = { key: s.secretKey, base: s.apiBase, stripe: stripeClient({ secretKey: s.secretKey, apiBase: s.apiBase }) };
    }
    return client.stripe;
  }

  async function call<T>(f: (s: Stripe) => Promise<T>): Promise<T> {
    try {
      return await f(api());
    } catch (err) {
      throw stripeError(err);
    }
  }

  /** What the disputes of a PaymentIntent say (GET /v1/disputes?payment_intent=); another payment's cannot be right. */
  async function disputesOf(piId: string, tally: { calls: number }): Promise<ProviderDispute["status"] | undefined> {
    const disputes: ProviderDispute[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await call((s) => s.disputes.list({ payment_intent: piId, limit: 100, ...(after && { starting_after: after }) }));
      tally.calls++;
      for (const o of page.data as unknown as Obj[]) {
        const d = stripeDispute(o);
        if (d.gatewayPaymentId !== piId) {
          throw new UnusableAnswer(`stripe answered the disputes of ${piId} with dispute ${d.disputeId.slice(0, 80)} of ${d.gatewayPaymentId.slice(0, 80)}`);
        }
        disputes.push(d);
      }
      if (!page.has_more || !page.data.length) return disputesOutcome(disputes);
      after = page.data.at(-1)!.id;
    }
  }

  const readPayment = async (id: string) => {
    const pi = await call((s) => s.paymentIntents.retrieve(id, { expand: ["latest_charge.balance_transaction"] })) as unknown as Obj;
    return paymentIntentUpdate(pi, everDisputed(pi) && typeof pi.id === "string" ? await disputesOf(pi.id, { calls: 0 }) : undefined);
  };

  /** A listed PaymentIntent: what its charge says was refunded is said even when it is nothing. */
  const listed = (pi: Obj, disputes?: ProviderDispute["status"]): ProviderUpdate => {
    const u = paymentIntentUpdate(pi, disputes);
    const charge = pi.latest_charge && typeof pi.latest_charge === "object" ? pi.latest_charge as Obj : null;
    return charge ? { ...u, refundedAmount: minor(charge.amount_refunded, "amount_refunded") ?? 0 } : u;
  };

  return {
    name: "stripe",
    methods: ["card"],
    configured: () => !!settings().secretKey,
    webhookConfigured: () => !!settings().webhookSecret,

    async createPayment(r) {
      const pi = await call((s) => s.paymentIntents.create({
        amount: r.amount,
        currency: r.currency.toLowerCase(),
        allowed_payment_method_types: ["card"],
        description: r.description,
        metadata: { payment_id: r.paymentId, booking_intent_id: r.bookingIntentId },
      }, { idempotencyKey: r.idempotencyKey }));
      // the client secret goes to the guest, never to our database or logs
      return { update: paymentIntentUpdate(pi), pay: { client_secret: pi.client_secret } };
    },

    // the client secret is never stored: a checkout retry on the intent hands the same attempt out again
    payFields: () => ({}),

    readPayment,

    async parseWebhook(req, _url, body): Promise<WebhookParse> {
      const type = req.headers.get("content-type") ?? "";
      if (!/^application\/json\s*(;|$)/i.test(type)) {
        return { kind: "refused", status: 415, error: "unsupported_media_type", message: "send the body as application/json" };
      }
      const header = req.headers.get("stripe-signature");
      if (!header) return { kind: "refused", status: 400, error: "missing_signature", message: "the Stripe-Signature header is missing" };
      // verification needs no API key; a client without one is enough when only the webhook is configured
      verifier ??= stripeClient({ secretKey: settings().secretKey ?? "sk_verify_only" });
      try {
        await (verifier.webhooks as unknown as { signature: { verifyHeaderAsync(...a: unknown[]): Promise<boolean> } })
          .signature.verifyHeaderAsync(body, header, settings().webhookSecret, 300, cryptoProvider);
      } catch {
        return { kind: "refused", status: 400, error: "invalid_signature", signature: true,
                 message: "the Stripe-Signature does not match the body, or is older than 300 s" };
      }
      let event: Obj;
      try {
        event = JSON.parse(body);
      } catch {
        return { kind: "refused", status: 400, error: "invalid_json", message: "the body is not valid JSON" };
      }
      if (!event || typeof event !== "object" || typeof event.id !== "string" || !event.id
          || typeof event.type !== "string" || !event.type || !event.data?.object || typeof event.data.object !== "object") {
        return { kind: "refused", status: 400, error: "invalid_event", message: "the body is not a Stripe event" };
      }
      const base = { eventId: event.id, eventType: event.type, eventAt: fromUnixSeconds(event.created),
                     payload: storableEvent(event) };
      try {
        const news = stripeEventNews(event);
        return { kind: "event", event: { ...base, update: news.update, lookup: news.lookup } };
      } catch (err) {
        if (err instanceof UnusableAnswer) return { kind: "event", event: { ...base, poison: err.message } };
        throw err;
      }
    },

    async lookUp(key) {
      if (typeof key.charge === "string" && key.news && typeof key.news === "object") {
        const charge = await call((s) => s.charges.retrieve(key.charge as string));
        // an answer about another charge would put this dispute on another payment
        if (charge.id !== key.charge) throw new UnusableAnswer(`stripe answered charge ${key.charge} with charge ${textOf(charge.id).slice(0, 80)}`);
        const pi = piId(charge.payment_intent);
        if (!pi) throw new ProviderError("stripe", "not_found", `stripe charge ${key.charge} has no PaymentIntent`);
        const news = key.news as Obj;
        return { ...news, gatewayPaymentId: pi, eventAt: timeOf(news.eventAt) } as ProviderUpdate;
      }
      if (typeof key.gatewayPaymentId === "string") return readPayment(key.gatewayPaymentId);
      throw new ProviderError("stripe", "not_found", "nothing to look up");
    },

    async createRefund(r) {
      const refund = await call((s) => s.refunds.create({
        payment_intent: r.gatewayPaymentId,
        amount: r.amount,
        reason: r.reason === "duplicate_charge" ? "duplicate" : "requested_by_customer",
        metadata: { refund_request_id: r.requestId },
      }, { idempotencyKey: r.idempotencyKey })) as unknown as Obj;
      return answeredRefund("stripe", r, refundOf(refund), { id: refund?.id, payment: piId(refund?.payment_intent) });
    },

    async readRefund(r) {
      const refund = await call((s) => s.refunds.retrieve(r.refundId)) as unknown as Obj;
      // an answer about another refund, or another payment's, says nothing of ours
      if (refund?.id !== r.refundId || (refund.payment_intent != null && piId(refund.payment_intent) !== r.gatewayPaymentId)) {
        throw new UnusableAnswer(`stripe answered refund ${r.refundId} of ${r.gatewayPaymentId} with refund ${textOf(refund?.id).slice(0, 80)} of ${String(piId(refund?.payment_intent)).slice(0, 80)}`);
      }
      return refundOf(refund);
    },

    async listPayments(window: ListWindow, cursor: ListCursor | null, pageSize: number): Promise<PaymentPage> {
      const after = typeof cursor?.starting_after === "string" ? cursor.starting_after : undefined;
      const page = await call((s) => s.paymentIntents.list({
        created: { gte: unixSeconds(window.from), lt: unixSeconds(window.to) },
        limit: Math.min(Math.max(pageSize, 1), 100),
        expand: ["data.latest_charge.balance_transaction"],
        ...(after && { starting_after: after }),
      }));
      const data = page.data as unknown as Obj[];
      const unreadable: UnreadableObject[] = [];
      const tally = { calls: 1 };
      // a listed charge ever disputed is read with its disputes; disputes that cannot be right set its payment aside
      const disputes = new Map<string, ProviderDispute["status"] | UnusableAnswer | undefined>();
      for (const pi of data) {
        if (!everDisputed(pi) || typeof pi.id !== "string") continue;
        try {
          disputes.set(pi.id, await disputesOf(pi.id, tally));
        } catch (err) {
          if (!(err instanceof UnusableAnswer)) throw err;
          disputes.set(pi.id, err);
        }
      }
      const read = (pi: Obj) => {
        const d = disputes.get(pi.id);
        if (d instanceof UnusableAnswer) throw d;
        return listed(pi, d);
      };
      return {
        updates: readEach(data, "payment", read, unreadable),
        next: page.has_more && data.length ? { starting_after: data.at(-1)!.id as string } : null,
        calls: tally.calls,
        unreadable,
      };
    },

    async listPayouts(window: ListWindow) {
      const payouts: ProviderPayout[] = [];
      const unreadable: UnreadableObject[] = [];
      let calls = 0;
      let after: string | undefined;
      // a payout made before the window can still change in it (in_transit to paid or failed)
      const since = unixSeconds(window.from) - 14 * 86_400;
      for (;;) {
        const page = await call((s) => s.payouts.list({ created: { gte: since, lt: unixSeconds(window.to) }, limit: 100, ...(after && { starting_after: after }) }));
        calls++;
        payouts.push(...readEach(page.data as unknown as Obj[], "payout", stripePayout, unreadable));
        if (!page.has_more || !page.data.length) break;
        after = page.data.at(-1)!.id;
      }
      return { payouts, calls, unreadable };
    },

    async listMoneyMoves(window: ListWindow): Promise<MoneyMoves> {
      let calls = 0;
      const walk = async (list: (after?: string) => Promise<{ data: unknown[]; has_more: boolean }>, each: (o: Obj) => void) => {
        let after: string | undefined;
        for (;;) {
          const page = await list(after);
          calls++;
          for (const o of page.data as Obj[]) each(o);
          if (!page.has_more || !page.data.length) return;
          after = (page.data.at(-1) as Obj).id;
        }
      };
      const ids = new Set<string>();
      const within = { gte: unixSeconds(window.from), lt: unixSeconds(window.to) };
      await walk((after) => call((s) => s.refunds.list({ created: within, limit: 100, ...(after && { starting_after: after }) })),
        (r) => { if (typeof r.payment_intent === "string") ids.add(r.payment_intent); });
      const disputes: ProviderDispute[] = [];
      const unreadable: UnreadableObject[] = [];
      await walk((after) => call((s) => s.disputes.list({ created: { gte: within.lt - DISPUTE_HORIZON_S, lt: within.lt }, limit: 100,
                                                          ...(after && { starting_after: after }) })),
        (d) => {
          const [dispute] = readEach([d], "dispute", stripeDispute, unreadable);
          if (!dispute) return;
          disputes.push(dispute);
          if (typeof d.created === "number" && d.created >= within.gte) ids.add(dispute.gatewayPaymentId);
        });
      return { gatewayPaymentIds: [...ids], disputes, calls, unreadable };
    },

    async readBalance(): Promise<ProviderBalance[]> {
      const b = await call((s) => s.balance.retrieve()) as unknown as Obj;
      const sums = new Map<string, number>();
      for (const part of [...(b.available ?? []), ...(b.pending ?? [])] as Obj[]) {
        const currency = upperCurrency(part.currency);
        if (!currency || typeof part.amount !== "number" || !Number.isSafeInteger(part.amount)) {
          throw new UnusableAnswer("stripe balance has a part without a currency or a whole amount");
        }
        sums.set(currency, (sums.get(currency) ?? 0) + part.amount);
      }
      return [...sums].map(([currency, amount]) => ({ currency, amount }));
    },
  };
}
