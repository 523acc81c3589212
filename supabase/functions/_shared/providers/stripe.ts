// Stripe: the client (real API, or the sandbox through host/port/protocol), PaymentIntent creation,
// and the reduction of PaymentIntents and webhook events to our payment status.
import Stripe from "stripe";
import { asUuid, ProviderError, type PaymentStatus, type ProviderUpdate } from "./types.ts";

export interface StripeConfig {
  secretKey: string;
  /** e.g. http://127.0.0.1:12111 for the sandbox; absent means api.stripe.com */
  apiBase?: string;
  timeoutMs?: number;
}

export function stripeClient(cfg: StripeConfig): Stripe {
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
  const e = err as { type?: string; statusCode?: number; code?: string; message?: string; detail?: { code?: string } };
  const status = e?.statusCode;
  const kind = e?.type === "StripeConnectionError" && e.detail?.code === "ETIMEDOUT" ? "timeout"
    : e?.type === "StripeRateLimitError" || status === 429 ? "rate_limited"
    : e?.type === "StripeConnectionError" || status === undefined || status >= 500 ? "unavailable"
    : "rejected";
  return new ProviderError("stripe", kind, `stripe: ${e?.message ?? String(err)}`, status, e?.code);
}

export interface CardCheckout {
  paymentId: string;
  bookingIntentId: string;
  amount: number;
  currency: string;
  idempotencyKey: string;
  description: string;
}

export async function createCardPaymentIntent(stripe: Stripe, c: CardCheckout): Promise<Stripe.PaymentIntent> {
  try {
    return await stripe.paymentIntents.create({
      amount: c.amount,
      currency: c.currency.toLowerCase(),
      allowed_payment_method_types: ["card"],
      description: c.description,
      metadata: { payment_id: c.paymentId, booking_intent_id: c.bookingIntentId },
    }, { idempotencyKey: c.idempotencyKey });
  } catch (err) {
    throw stripeError(err);
  }
}

export async function retrievePaymentIntent(stripe: Stripe, id: string): Promise<Stripe.PaymentIntent> {
  try {
    return await stripe.paymentIntents.retrieve(id, { expand: ["latest_charge"] });
  } catch (err) {
    throw stripeError(err);
  }
}

function refundStatus(amount: number, refunded: number): PaymentStatus {
  return refunded >= amount ? "refunded" : "partially_refunded";
}

/** A PaymentIntent (latest_charge expanded) as our status: what the poller applies. */
export function paymentIntentUpdate(pi: Stripe.PaymentIntent): ProviderUpdate {
  const charge = typeof pi.latest_charge === "object" ? pi.latest_charge : null;
  let status: PaymentStatus;
  switch (pi.status) {
    case "succeeded":
      status = charge?.disputed ? "disputed"
        : charge && charge.amount_refunded > 0 ? refundStatus(charge.amount, charge.amount_refunded)
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
      status = pi.last_payment_error ? "failed" : "pending";
  }
  return {
    status,
    gatewayPaymentId: pi.id,
    paymentId: asUuid(pi.metadata?.payment_id),
    gatewayStatus: pi.status,
    errorCode: pi.last_payment_error?.decline_code ?? pi.last_payment_error?.code ?? undefined,
    errorMessage: pi.last_payment_error?.message ?? undefined,
    refundedAmount: charge?.amount_refunded || undefined,
    object: withoutClientSecret(pi),
  };
}

const piId = (v: string | { id: string } | null | undefined) => (typeof v === "string" ? v : v?.id);

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
export function storableEvent(event: Stripe.Event): Stripe.Event {
  return { ...event, data: { ...event.data, object: withoutClientSecret(event.data.object) } } as Stripe.Event;
}

/** A webhook event as our status, or null for a type we record but do not act on. */
export function stripeEventUpdate(event: Stripe.Event): ProviderUpdate | null {
  const eventAt = new Date(event.created * 1000);
  switch (event.type) {
    case "payment_intent.processing":
    case "payment_intent.succeeded":
    case "payment_intent.payment_failed":
    case "payment_intent.canceled": {
      const pi = event.data.object;
      const status: PaymentStatus = event.type === "payment_intent.processing" ? "processing"
        : event.type === "payment_intent.succeeded" ? "succeeded"
        : event.type === "payment_intent.canceled" ? "cancelled" : "failed";
      const err = status === "failed" ? pi.last_payment_error : null;
      return {
        status,
        gatewayPaymentId: pi.id,
        paymentId: asUuid(pi.metadata?.payment_id),
        eventAt,
        gatewayStatus: pi.status,
        errorCode: err?.decline_code ?? err?.code ?? undefined,
        errorMessage: err?.message ?? undefined,
        object: withoutClientSecret(pi),
      };
    }
    case "charge.refunded": {
      const ch = event.data.object;
      const pi = piId(ch.payment_intent);
      if (!pi || ch.amount_refunded <= 0) return null;
      return {
        status: refundStatus(ch.amount, ch.amount_refunded),
        gatewayPaymentId: pi,
        paymentId: asUuid(ch.metadata?.payment_id),
        eventAt,
        gatewayStatus: ch.refunded ? "refunded" : "partially_refunded",
        refundedAmount: ch.amount_refunded,
        object: ch,
      };
    }
    case "charge.dispute.created":
    case "charge.dispute.closed": {
      const dp = event.data.object;
      const pi = piId(dp.payment_intent);
      if (!pi) return null;
      if (event.type === "charge.dispute.created") {
        return { status: "disputed", gatewayPaymentId: pi, eventAt, gatewayStatus: `dispute_${dp.status}`, object: dp };
      }
      // won (or an inquiry closed without a chargeback) gives the money back to us; lost takes it
      if (dp.status === "lost") {
        return {
          status: "refunded",
          gatewayPaymentId: pi,
          eventAt,
          gatewayStatus: "dispute_lost",
          refundedAmount: dp.amount,
          object: dp,
        };
      }
      return { status: "succeeded", gatewayPaymentId: pi, eventAt, gatewayStatus: `dispute_${dp.status}`, object: dp };
    }
    default:
      return null;
  }
}

/** A refund of (part of) a PaymentIntent; the key makes a resend the same refund. */
export async function createStripeRefund(
  stripe: Stripe, r: { paymentIntent: string; amount: number; duplicate: boolean; idempotencyKey: string; requestId: string },
): Promise<string> {
  try {
    const refund = await stripe.refunds.create({
      payment_intent: r.paymentIntent,
      amount: r.amount,
      reason: r.duplicate ? "duplicate" : "requested_by_customer",
      metadata: { refund_request_id: r.requestId },
    }, { idempotencyKey: r.idempotencyKey });
    return refund.id;
  } catch (err) {
    throw stripeError(err);
  }
}
