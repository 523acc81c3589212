// Refunds we owe, sent to the provider: each request carries its own idempotency key (refund:<id>), so
// a resend after a timeout is the same refund. The provider's confirmation comes back as a webhook or a
// poll and raises the payment's refunded_amount, which posts the ledger refund.
import type { Sql } from "../_shared/db.ts";
import { mercadoPago, openPix, stripeApi } from "../_shared/provider_config.ts";
import { createMercadoPagoRefund } from "../_shared/providers/mercadopago.ts";
import { createOpenPixRefund } from "../_shared/providers/openpix.ts";
import { createStripeRefund } from "../_shared/providers/stripe.ts";
import { ProviderError, type Provider } from "../_shared/providers/types.ts";

export interface RefundTally {
  refunds_sent: number;
  refunds_failed: number;
  refunds_retrying: number;
}

interface Due {
  refund_request_id: string;
  provider: Provider;
  gateway_payment_id: string | null;
  amount: string;
  reason: string;
  idempotency_key: string;
}

async function send(r: Due): Promise<string> {
  if (!r.gateway_payment_id) throw new ProviderError(r.provider, "rejected", "the payment has no provider id to refund");
  const amount = Number(r.amount);
  if (r.provider === "stripe") {
    const stripe = stripeApi();
    if (!stripe) throw new ProviderError("stripe", "unavailable", "stripe is not configured");
    return createStripeRefund(stripe, {
      paymentIntent: r.gateway_payment_id, amount, duplicate: r.reason === "duplicate_charge",
      idempotencyKey: r.idempotency_key, requestId: r.refund_request_id,
    });
  }
  if (r.provider === "mercadopago") {
    const cfg = mercadoPago();
    if (!cfg) throw new ProviderError("mercadopago", "unavailable", "mercadopago is not configured");
    return createMercadoPagoRefund(cfg, r.gateway_payment_id, amount, r.idempotency_key);
  }
  const cfg = openPix();
  if (!cfg) throw new ProviderError("openpix", "unavailable", "openpix is not configured");
  return createOpenPixRefund(cfg, r.gateway_payment_id, amount, r.refund_request_id, `Reserve Connect refund (${r.reason})`);
}

/**
 * Claims none after `deadline` (the poller's budget); what it claimed it sends, since a claim counts as
 * an attempt (skipping one would spend a try without sending).
 */
export async function sendRefunds(sql: Sql, t: RefundTally, deadline = Infinity): Promise<void> {
  if (Date.now() >= deadline) return;
  const due = await sql<Due[]>`
    select refund_request_id, provider, gateway_payment_id, amount, reason, idempotency_key from reserve.claim_refund_requests(20)`;
  for (const r of due) {
    let outcome: "sent" | "retry" | "failed";
    let refundId: string | null = null;
    let error: string | null = null;
    try {
      refundId = await send(r);
      outcome = "sent";
    } catch (err) {
      // refused is for an operator to look at; no answer is tried again
      outcome = err instanceof ProviderError && err.kind === "rejected" ? "failed" : "retry";
      error = (err as Error)?.message ?? String(err);
      console.error(`poll_payment_status: refund ${r.refund_request_id} at ${r.provider}: ${outcome}: ${error}`);
    }
    await sql`select reserve.record_refund_result(${r.refund_request_id}::uuid, ${outcome}, ${refundId}, ${error})`;
    if (outcome === "sent") t.refunds_sent++;
    else if (outcome === "failed") t.refunds_failed++;
    else t.refunds_retrying++;
  }
}
