// Stripe's objects and state machine: PaymentIntents, Charges, Refunds, Disputes and the Events they
// emit, in the shapes of API version `Stripe.API_VERSION` of the installed stripe-node.
import Stripe from "stripe";
import type { SandboxEvent } from "./types.ts";
import { SandboxError } from "./types.ts";
import { randomId, unixSeconds } from "./util.ts";

export type Obj = Record<string, unknown>;
export interface RequestInfo {
  id: string | null;
  idempotency_key: string | null;
}
const NO_REQUEST: RequestInfo = { id: null, idempotency_key: null };

export const CANCELABLE = ["requires_payment_method", "requires_capture", "requires_confirmation", "requires_action", "processing"];

export class StripeState {
  readonly intents = new Map<string, Obj>();
  readonly charges = new Map<string, Obj>();
  readonly refunds = new Map<string, Obj>();
  readonly disputes = new Map<string, Obj>(); // by PaymentIntent id: one open dispute per charge
  readonly events = new Map<string, Obj>();

  constructor(
    private emitEvent: (e: SandboxEvent) => void,
    private webhookUrl: () => string | null,
    readonly apiVersion: string = Stripe.API_VERSION,
  ) {}

  createIntent(p: { amount: number; currency: string; metadata: Record<string, string>; description: string | null;
    payment_method_types: string[]; allowed_payment_method_types: string[] | null; automatic: boolean; receipt_email: string | null; capture_method: string }, req: RequestInfo): Obj {
    const id = randomId("pi_3");
    const pi: Obj = {
      id, object: "payment_intent", allowed_payment_method_types: p.allowed_payment_method_types, amount: p.amount, amount_capturable: 0, amount_details: { tip: {} },
      amount_received: 0, application: null, application_fee_amount: null,
      automatic_payment_methods: p.automatic ? { allow_redirects: "always", enabled: true } : null,
      canceled_at: null, cancellation_reason: null, capture_method: p.capture_method,
      client_secret: `${id}_secret_${randomId("", 25)}`, confirmation_method: "automatic",
      created: unixSeconds(), currency: p.currency, customer: null, customer_account: null, description: p.description,
      excluded_payment_method_types: null, last_payment_error: null, latest_charge: null, livemode: false,
      managed_payments: null, metadata: p.metadata, next_action: null,
      on_behalf_of: null, payment_method: null, payment_method_configuration_details: null,
      payment_method_options: {}, payment_method_types: p.payment_method_types, payment_record: null, processing: null,
      receipt_email: p.receipt_email, review: null, setup_future_usage: null, shipping: null, source: null,
      statement_descriptor: null, statement_descriptor_suffix: null, status: "requires_payment_method",
      transfer_data: null, transfer_group: null,
    };
    this.intents.set(id, pi);
    this.emit("payment_intent.created", pi, req);
    return pi;
  }

  intent(id: string): Obj {
    const pi = this.intents.get(id);
    if (!pi) throw new SandboxError(404, `No such payment_intent: '${id}'`);
    return pi;
  }

  cancel(pi: Obj, reason: string | null, req: RequestInfo): Obj {
    Object.assign(pi, { status: "canceled", canceled_at: unixSeconds(), cancellation_reason: reason });
    this.emit("payment_intent.canceled", pi, req);
    return pi;
  }

  /** What Stripe.js does with a test card in the guest's browser. */
  confirm(piId: string, outcome: "succeeded" | "declined" | "processing", declineCode = "generic_decline"): Obj {
    const pi = this.intent(piId);
    if (pi.status !== "requires_payment_method" && pi.status !== "requires_confirmation") {
      throw new SandboxError(409, `You cannot confirm this PaymentIntent because it has a status of ${pi.status}.`);
    }
    const req = { id: randomId("req_", 14), idempotency_key: null };
    const pm = randomId("pm_1");
    const charge = this.newCharge(pi, pm, outcome === "processing" ? "pending" : outcome === "declined" ? "failed" : "succeeded", declineCode);
    Object.assign(pi, { payment_method: pm, latest_charge: charge.id });
    if (outcome === "processing") {
      pi.status = "processing";
      this.emit("payment_intent.processing", pi, req);
      this.emit("charge.pending", charge, req);
    } else if (outcome === "declined") {
      this.decline(pi, charge, req);
    } else {
      this.succeed(pi, charge, req);
    }
    return pi;
  }

  /** The bank's late answer for a PaymentIntent left `processing`. */
  settle(piId: string, outcome: "succeeded" | "declined"): Obj {
    const pi = this.intent(piId);
    if (pi.status !== "processing") throw new SandboxError(409, `PaymentIntent ${piId} is ${pi.status}, not processing`);
    const charge = this.charges.get(pi.latest_charge as string)!;
    if (outcome === "succeeded") {
      Object.assign(charge, { status: "succeeded", paid: true, captured: true, amount_captured: charge.amount });
      this.succeed(pi, charge, NO_REQUEST);
    } else {
      Object.assign(charge, declinedChargeFields("generic_decline"));
      this.decline(pi, charge, NO_REQUEST);
    }
    return pi;
  }

  refund(pi: Obj, amount: number, reason: string | null, metadata: Record<string, string>, req: RequestInfo): Obj {
    const charge = this.charges.get(pi.latest_charge as string)!;
    const refund: Obj = {
      id: randomId("re_3"), object: "refund", amount, balance_transaction: randomId("txn_3"), charge: charge.id,
      created: unixSeconds(), currency: pi.currency, destination_details: { card: { type: "refund" }, type: "card" },
      metadata, payment_intent: pi.id, reason, receipt_number: null, source_transfer_reversal: null,
      status: "succeeded", transfer_reversal: null,
    };
    this.refunds.set(refund.id as string, refund);
    const refunded = (charge.amount_refunded as number) + amount;
    Object.assign(charge, { amount_refunded: refunded, refunded: refunded === charge.amount });
    this.emit("charge.refunded", charge, req);
    this.emit("refund.created", refund, req);
    return refund;
  }

  dispute(piId: string, reason = "fraudulent"): Obj {
    const pi = this.intent(piId);
    if (pi.status !== "succeeded") throw new SandboxError(409, `PaymentIntent ${piId} is ${pi.status}: only a paid charge can be disputed`);
    if (this.disputes.get(piId)?.status === "needs_response") throw new SandboxError(409, `PaymentIntent ${piId} already has an open dispute`);
    const charge = this.charges.get(pi.latest_charge as string)!;
    const now = unixSeconds();
    const dispute: Obj = {
      id: randomId("dp_1"), object: "dispute", amount: charge.amount, balance_transactions: [], charge: charge.id,
      created: now, currency: charge.currency, enhanced_eligibility_types: [], evidence: {},
      evidence_details: { due_by: now + 7 * 86400, has_evidence: false, past_due: false, submission_count: 0 },
      is_charge_refundable: false, livemode: false, metadata: {}, payment_intent: pi.id,
      payment_method_details: { card: { brand: "visa", network_reason_code: "10.4" }, type: "card" },
      reason, status: "needs_response",
    };
    this.disputes.set(piId, dispute);
    charge.disputed = true;
    this.emit("charge.dispute.created", dispute, NO_REQUEST);
    return dispute;
  }

  closeDispute(piId: string, outcome: "won" | "lost"): Obj {
    const dispute = this.disputes.get(piId);
    if (!dispute) throw new SandboxError(404, `PaymentIntent ${piId} has no dispute`);
    if (dispute.status !== "needs_response") throw new SandboxError(409, `dispute ${dispute.id} is already ${dispute.status}`);
    dispute.status = outcome;
    this.emit("charge.dispute.closed", dispute, NO_REQUEST);
    return dispute;
  }

  /** Bulk objects for benchmarks: no events, no per-object work beyond the object itself. */
  seed(n: number, o: { status: string; amount: number; currency?: string; metadata?: Record<string, string> }): string[] {
    const ids: string[] = new Array(n);
    const created = unixSeconds();
    for (let i = 0; i < n; i++) {
      const id = randomId("pi_3");
      const paid = o.status === "succeeded";
      const chargeId = paid ? randomId("ch_3") : null;
      this.intents.set(id, {
        id, object: "payment_intent", amount: o.amount, amount_received: paid ? o.amount : 0, capture_method: "automatic_async",
        client_secret: `${id}_secret_${randomId("", 25)}`, created, currency: o.currency ?? "brl", description: null,
        last_payment_error: null, latest_charge: chargeId, livemode: false, metadata: { ...o.metadata },
        payment_method_types: ["card"], status: o.status, canceled_at: null, cancellation_reason: null,
      });
      if (chargeId) {
        this.charges.set(chargeId, { id: chargeId, object: "charge", amount: o.amount, amount_captured: o.amount,
          amount_refunded: 0, captured: true, created, currency: o.currency ?? "brl", disputed: false, livemode: false,
          metadata: { ...o.metadata }, paid: true, payment_intent: id, refunded: false, status: "succeeded" });
      }
      ids[i] = id;
    }
    return ids;
  }

  private newCharge(pi: Obj, pm: string, status: string, declineCode: string): Obj {
    const charge: Obj = {
      id: randomId("ch_3"), object: "charge", amount: pi.amount, amount_captured: status === "succeeded" ? pi.amount : 0,
      amount_refunded: 0, application: null, application_fee: null, balance_transaction: status === "succeeded" ? randomId("txn_3") : null,
      billing_details: { address: null, email: null, name: null, phone: null }, calculated_statement_descriptor: "RESERVE CONNECT",
      captured: status === "succeeded",
      created: unixSeconds(), currency: pi.currency, customer: null, description: pi.description, disputed: false,
      failure_balance_transaction: null, failure_code: null, failure_message: null, fraud_details: {}, livemode: false,
      on_behalf_of: null, metadata: { ...(pi.metadata as Obj) },
      outcome: { network_status: "approved_by_network", reason: null, risk_level: "normal", risk_score: 32,
        seller_message: "Payment complete.", type: "authorized" },
      paid: status === "succeeded", payment_intent: pi.id, payment_method: pm,
      payment_method_details: { card: { brand: "visa", country: "BR", exp_month: 12, exp_year: 2034, funding: "credit",
        last4: status === "failed" ? "0002" : "4242", network: "visa" }, type: "card" },
      receipt_email: pi.receipt_email ?? null, receipt_number: null, receipt_url: null, refunded: false, review: null,
      shipping: null, source: null, source_transfer: null, statement_descriptor: null, statement_descriptor_suffix: null,
      status, transfer_data: null, transfer_group: null,
    };
    if (status === "failed") Object.assign(charge, declinedChargeFields(declineCode));
    this.charges.set(charge.id as string, charge);
    return charge;
  }

  private succeed(pi: Obj, charge: Obj, req: RequestInfo): void {
    Object.assign(pi, { status: "succeeded", amount_received: pi.amount, last_payment_error: null, latest_charge: charge.id });
    if (!charge.balance_transaction) charge.balance_transaction = randomId("txn_3");
    this.emit("charge.succeeded", charge, req);
    this.emit("payment_intent.succeeded", pi, req);
  }

  // Stripe puts a declined PaymentIntent back to requires_payment_method so the guest can try again
  private decline(pi: Obj, charge: Obj, req: RequestInfo): void {
    const code = (charge.outcome as Obj).reason as string;
    Object.assign(pi, {
      status: "requires_payment_method",
      payment_method: null,
      last_payment_error: {
        charge: charge.id, code: "card_declined", decline_code: code,
        doc_url: "https://stripe.com/docs/error-codes/card-declined", message: "Your card was declined.",
        payment_method: { id: charge.payment_method, object: "payment_method", type: "card" }, type: "card_error",
      },
    });
    this.emit("charge.failed", charge, req);
    this.emit("payment_intent.payment_failed", pi, req);
  }

  emit(type: string, object: Obj, req: RequestInfo): void {
    const event: Obj = {
      id: randomId("evt_3"), object: "event", api_version: this.apiVersion, created: unixSeconds(),
      data: { object: structuredClone(object) }, livemode: false, pending_webhooks: this.webhookUrl() ? 1 : 0,
      request: req, type,
    };
    this.events.set(event.id as string, event);
    this.emitEvent({ provider: "stripe", id: event.id as string, type, url: this.webhookUrl(), body: event,
      raw: JSON.stringify(event, null, 2), createdAt: new Date().toISOString() });
  }
}

function declinedChargeFields(declineCode: string): Obj {
  return {
    status: "failed", paid: false, captured: false, amount_captured: 0, balance_transaction: null,
    failure_code: "card_declined", failure_message: "Your card was declined.",
    outcome: { network_status: "declined_by_network", reason: declineCode, risk_level: "normal", risk_score: 40,
      seller_message: "The bank did not return any further details with this decline.", type: "issuer_declined" },
  };
}
