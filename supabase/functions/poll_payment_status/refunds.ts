// Refunds we owe, through each payment's provider: requests are sent with their own idempotency key
// (refund:<id>), so a resend after a timeout is the same refund; a sent refund whose confirmation has
// not come (the provider's webhook lost) is looked up at the provider with backoff until it is confirmed
// (the provider's payment shows the money gone back, which posts the ledger refund) or failed.
import type { Sql } from "../_shared/db.ts";
import { providerNamed } from "../_shared/providers/registry.ts";
import { ProviderError, UnusableAnswer, type PaymentProvider, type ProviderRefund, type ProviderUpdate } from "../_shared/providers/types.ts";
import { refundJsonOf, unusableUpdate, updateJson } from "../_shared/webhook.ts";

export interface RefundTally {
  refunds_sent: number;
  refunds_failed: number;
  refunds_retrying: number;
  refunds_looked_up: number;
  refunds_confirmed: number;
}

interface Due {
  refund_request_id: string;
  provider: string;
  gateway_payment_id: string | null;
  amount: string;
  currency: string;
  reason: string;
  idempotency_key: string;
}

interface Sent {
  refund_request_id: string;
  provider: string;
  gateway_payment_id: string | null;
  provider_refund_id: string | null;
  amount: string;
}

function providerOf(name: string): PaymentProvider {
  const p = providerNamed(name);
  if (!p) throw new ProviderError(name, "not_configured", `no payment provider ${name}`);
  return p;
}

async function send(r: Due): Promise<ProviderRefund> {
  if (!r.gateway_payment_id) throw new ProviderError(r.provider, "rejected", "the payment has no provider id to refund");
  return providerOf(r.provider).createRefund({
    requestId: r.refund_request_id, gatewayPaymentId: r.gateway_payment_id, amount: Number(r.amount), currency: r.currency,
    reason: r.reason, idempotencyKey: r.idempotency_key,
  });
}

async function sendDue(sql: Sql, t: RefundTally): Promise<void> {
  const due = await sql<Due[]>`
    select refund_request_id, provider, gateway_payment_id, amount, currency, reason, idempotency_key
    from reserve.claim_refund_requests(20)`;
  for (const r of due) {
    let outcome: "sent" | "retry" | "failed";
    let refund: ProviderRefund | null = null;
    let error: string | null = null;
    try {
      refund = await send(r);
      outcome = "sent";
    } catch (err) {
      // refused is for an operator to look at; no answer is tried again
      outcome = err instanceof ProviderError && (err.kind === "rejected" || err.kind === "not_found") ? "failed" : "retry";
      error = (err as Error)?.message ?? String(err);
      console.error(`poll_payment_status: refund ${r.refund_request_id} at ${r.provider}: ${outcome}: ${error}`);
    }
    await sql`select reserve.record_refund_result(${r.refund_request_id}::uuid, ${outcome},
                reserve.as_provider_refund(${refund ? sql.json(refundJsonOf(refund) as never) : null}), ${error})`;
    if (outcome === "sent") t.refunds_sent++;
    else if (outcome === "failed") t.refunds_failed++;
    else t.refunds_retrying++;
  }
}

/** What the provider says about a sent refund, and, when it went through, about its payment. */
async function lookUp(s: Sent): Promise<{ refund: ProviderRefund | null; update: ProviderUpdate | null; error: string | null }> {
  if (!s.gateway_payment_id || !s.provider_refund_id) {
    return { refund: { refundId: s.provider_refund_id ?? "?", status: "failed" }, update: null, error: null };
  }
  const provider = providerOf(s.provider);
  try {
    const refund = await provider.readRefund({ gatewayPaymentId: s.gateway_payment_id, refundId: s.provider_refund_id, requestId: s.refund_request_id });
    let update: ProviderUpdate | null = null;
    if (refund.status === "succeeded") {
      update = await provider.readPayment(s.gateway_payment_id);
      const unusable = unusableUpdate(update);
      if (unusable) throw new UnusableAnswer(unusable);
    }
    return { refund, update, error: null };
  } catch (err) {
    // a refund the provider does not know, though it took it: an operator's (failed, the refunds_stuck alert)
    if (err instanceof ProviderError && err.kind === "not_found") {
      return { refund: { refundId: s.provider_refund_id, status: "failed", object: { error: err.message } }, update: null, error: null };
    }
    if (err instanceof ProviderError || err instanceof UnusableAnswer) return { refund: null, update: null, error: err.message };
    // an answer the module could not read is this lookup's error (looked up again with backoff), not the run's
    return { refund: null, update: null, error: `could not read the provider's answer: ${String((err as Error)?.message ?? err).slice(0, 300)}` };
  }
}

async function confirmSent(sql: Sql, t: RefundTally): Promise<void> {
  const sent = await sql<Sent[]>`
    select refund_request_id, provider, gateway_payment_id, provider_refund_id, amount from reserve.claim_refunds_to_confirm(20)`;
  for (const s of sent) {
    const { refund, update, error } = await lookUp(s);
    if (error) console.error(`poll_payment_status: refund ${s.refund_request_id} lookup at ${s.provider}: ${error}`);
    const [rr] = await sql<{ status: string }[]>`
      select status from reserve.record_refund_lookup(${s.refund_request_id}::uuid,
        reserve.as_provider_refund(${refund ? sql.json(refundJsonOf(refund) as never) : null}),
        reserve.as_provider_update(${update ? sql.json(updateJson(update) as never) : null}), ${error})`;
    t.refunds_looked_up++;
    if (rr?.status === "confirmed") t.refunds_confirmed++;
    else if (rr?.status === "failed") t.refunds_failed++;
  }
}

/**
 * Claims nothing after `deadline` (the poller's budget); what it claimed it sends or looks up, since a
 * claim counts as an attempt (skipping one would spend a try without asking).
 */
export async function sendRefunds(sql: Sql, t: RefundTally, deadline = Infinity): Promise<void> {
  if (Date.now() >= deadline) return;
  await sendDue(sql, t);
  if (Date.now() >= deadline) return;
  await confirmSent(sql, t);
}
