// Stripe's objects and state machine: PaymentIntents, Charges, Refunds, Disputes, Balance Transactions,
// Payouts and the Events they emit, in the shapes of API version `Stripe.API_VERSION` of the installed
// stripe-node (compared field for field with tests/fixtures/providers/stripe by tests/sandbox/shapes.test.ts).
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

/**
 * The sandbox's card pricing, Stripe Brazil's published domestic-card rate (3.99% + R$0.39); the dispute
 * fee is withdrawn with the disputed amount and given back when the dispute is won.
 */
export const STRIPE_FEES = { percent: 3.99, fixed: 39, dispute: 1500 };
export const stripeFee = (amount: number) => Math.round((amount * STRIPE_FEES.percent) / 100) + STRIPE_FEES.fixed;
const AVAILABLE_AFTER_S = 2 * 86_400;

/** What a restart keeps: every object, plus which payout settled which balance transaction. */
export interface StripeSnapshot {
  intents: Obj[];
  charges: Obj[];
  refunds: Obj[];
  disputes: Obj[];
  events: Obj[];
  balanceTransactions: Obj[];
  payouts: Obj[];
  paidOutBy: [string, string][];
}

export class StripeState {
  readonly intents = new Map<string, Obj>();
  readonly charges = new Map<string, Obj>();
  readonly refunds = new Map<string, Obj>();
  readonly disputes = new Map<string, Obj>(); // by PaymentIntent id: one dispute per charge
  readonly events = new Map<string, Obj>();
  readonly balanceTransactions = new Map<string, Obj>();
  readonly payouts = new Map<string, Obj>();
  /** balance transaction id -> the payout that settled it (`GET /v1/balance_transactions?payout=`) */
  readonly paidOutBy = new Map<string, string>();

  constructor(
    private emitEvent: (e: SandboxEvent) => void,
    private webhookUrl: () => string | null,
    readonly apiVersion: string = Stripe.API_VERSION,
  ) {}

  snapshot(): StripeSnapshot {
    return {
      intents: [...this.intents.values()], charges: [...this.charges.values()], refunds: [...this.refunds.values()],
      disputes: [...this.disputes.values()], events: [...this.events.values()],
      balanceTransactions: [...this.balanceTransactions.values()], payouts: [...this.payouts.values()],
      paidOutBy: [...this.paidOutBy],
    };
  }

  restore(s: StripeSnapshot): void {
    for (const o of s.intents) this.intents.set(o.id as string, o);
    for (const o of s.charges) this.charges.set(o.id as string, o);
    for (const o of s.refunds) this.refunds.set(o.id as string, o);
    for (const o of s.disputes) this.disputes.set(o.payment_intent as string, o);
    for (const o of s.events) this.events.set(o.id as string, o);
    for (const o of s.balanceTransactions) this.balanceTransactions.set(o.id as string, o);
    for (const o of s.payouts) this.payouts.set(o.id as string, o);
    for (const [k, v] of s.paidOutBy) this.paidOutBy.set(k, v);
  }

  /** Any object by its id prefix, for expansion and the control API. */
  byId(id: string): Obj | undefined {
    if (id.startsWith("pi_")) return this.intents.get(id);
    if (id.startsWith("ch_")) return this.charges.get(id);
    if (id.startsWith("re_")) return this.refunds.get(id);
    if (id.startsWith("txn_")) return this.balanceTransactions.get(id);
    if (id.startsWith("po_")) return this.payouts.get(id);
    if (id.startsWith("evt_")) return this.events.get(id);
    if (id.startsWith("du_") || id.startsWith("dp_")) return [...this.disputes.values()].find((d) => d.id === id);
    return undefined;
  }

  createIntent(p: { amount: number; currency: string; metadata: Record<string, string>; description: string | null;
    payment_method_types: string[]; allowed_payment_method_types: string[] | null; automatic: boolean; receipt_email: string | null; capture_method: string }, req: RequestInfo): Obj {
    const pi = newIntent(p, unixSeconds());
    this.intents.set(pi.id as string, pi);
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

  /**
   * What Stripe.js does with a test card in the guest's browser. `amountReceived`/`currency` make the bank
   * settle a different amount than the PaymentIntent asked for (a mismatch our side must catch).
   */
  confirm(piId: string, outcome: "succeeded" | "declined" | "processing",
    opts: { declineCode?: string; amountReceived?: number; currency?: string } = {}): Obj {
    const pi = this.intent(piId);
    if (pi.status !== "requires_payment_method" && pi.status !== "requires_confirmation") {
      throw new SandboxError(409, `You cannot confirm this PaymentIntent because it has a status of ${pi.status}.`);
    }
    if (opts.amountReceived !== undefined && !(Number.isInteger(opts.amountReceived) && opts.amountReceived > 0)) {
      throw new SandboxError(400, "amountReceived must be a positive integer (minor units)");
    }
    const req = { id: randomId("req_", 14), idempotency_key: null };
    const pm = randomId("pm_1");
    const status = outcome === "processing" ? "pending" : outcome === "declined" ? "failed" : "succeeded";
    const charge = this.newCharge(pi, pm, status, opts.declineCode ?? "generic_decline", opts.amountReceived, opts.currency);
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
      Object.assign(charge, { status: "succeeded", paid: true, captured: true, amount_captured: charge.amount,
        outcome: approvedOutcome() });
      this.succeed(pi, charge, NO_REQUEST);
    } else {
      Object.assign(charge, declinedChargeFields("generic_decline"));
      this.decline(pi, charge, NO_REQUEST);
    }
    return pi;
  }

  refund(pi: Obj, amount: number, reason: string | null, metadata: Record<string, string>, req: RequestInfo): Obj {
    const charge = this.charges.get(pi.latest_charge as string)!;
    const now = unixSeconds();
    const id = randomId("re_3");
    const txn = this.balanceTransaction({ amount: -amount, currency: charge.currency as string, created: now, source: id,
      type: "refund", reporting_category: "refund", description: "REFUND FOR CHARGE", fee: 0 });
    const refund: Obj = {
      id, object: "refund", amount, balance_transaction: txn.id, charge: charge.id, created: now, currency: charge.currency,
      customer: null, destination_details: { card: { reference: null, reference_status: "pending", reference_type: "acquirer_reference_number", type: "refund" }, type: "card" },
      metadata, payment_intent: pi.id, payment_method: charge.payment_method, reason, receipt_number: null,
      source_transfer_reversal: null, status: "succeeded", transfer_reversal: null,
    };
    this.refunds.set(id, refund);
    const refunded = (charge.amount_refunded as number) + amount;
    Object.assign(charge, { amount_refunded: refunded, refunded: refunded === charge.amount });
    this.emit("charge.refunded", charge, req);
    this.emit("refund.created", refund, req);
    return refund;
  }

  /** `amount`: a cardholder disputing part of the charge (at most what was not refunded); the whole charge by default. */
  dispute(piId: string, reason = "fraudulent", amount?: number): Obj {
    const pi = this.intent(piId);
    if (pi.status !== "succeeded") throw new SandboxError(409, `PaymentIntent ${piId} is ${pi.status}: only a paid charge can be disputed`);
    if (this.disputes.get(piId)?.status === "needs_response") throw new SandboxError(409, `PaymentIntent ${piId} already has an open dispute`);
    const charge = this.charges.get(pi.latest_charge as string)!;
    const left = (charge.amount as number) - (charge.amount_refunded as number);
    if (amount !== undefined && (!Number.isInteger(amount) || amount <= 0 || amount > left)) {
      throw new SandboxError(400, `a dispute of PaymentIntent ${piId} is for 1 to ${left} (what was not refunded), not ${amount}`);
    }
    const disputed = amount ?? (charge.amount as number);
    const now = unixSeconds();
    const id = randomId("du_1");
    // the disputed amount and the dispute fee leave the balance when the dispute opens
    const withdrawal = this.balanceTransaction({ amount: -disputed, currency: charge.currency as string, created: now,
      source: id, type: "adjustment", reporting_category: "dispute", description: `Chargeback withdrawal for ${charge.id}`,
      fee: STRIPE_FEES.dispute, feeDescription: "Dispute fee" });
    const dispute: Obj = {
      id, object: "dispute", amount: disputed, balance_transactions: [structuredClone(withdrawal)], charge: charge.id,
      created: now, currency: charge.currency, enhanced_eligibility_types: [], evidence: emptyEvidence(),
      evidence_details: { due_by: now + 7 * 86400, enhanced_eligibility: {}, has_evidence: false, past_due: false,
        submission_count: 0, submission_method: null },
      intended_submission_method: null, is_charge_refundable: false, livemode: false, metadata: {},
      network_reason_code: reason === "fraudulent" ? "10.4" : "13.1", payment_intent: pi.id,
      payment_method_details: { card: { brand: "visa", case_type: "chargeback", network_reason_code: reason === "fraudulent" ? "10.4" : "13.1" }, type: "card" },
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
    if (outcome === "won") {
      const reinstated = this.balanceTransaction({ amount: dispute.amount as number, currency: dispute.currency as string,
        created: unixSeconds(), source: dispute.id as string, type: "adjustment", reporting_category: "dispute_reversal",
        description: `Chargeback reversal for ${dispute.charge}`, fee: -STRIPE_FEES.dispute, feeDescription: "Dispute fee refund" });
      (dispute.balance_transactions as Obj[]).push(structuredClone(reinstated));
    }
    this.emit("charge.dispute.closed", dispute, NO_REQUEST);
    return dispute;
  }

  /**
   * An automatic payout of everything not yet paid out (gross − fees − refunds − disputes = net), as
   * Stripe's daily schedule does: the settled balance transactions become available and point at it.
   */
  payout(opts: { currency?: string; status?: "paid" | "in_transit" | "failed" } = {}): Obj {
    const currency = opts.currency ?? "brl";
    const now = unixSeconds();
    const settled = [...this.balanceTransactions.values()]
      .filter((t) => t.currency === currency && t.type !== "payout" && !this.paidOutBy.has(t.id as string));
    const net = settled.reduce((s, t) => s + (t.net as number), 0);
    if (settled.length === 0 || net <= 0) throw new SandboxError(409, `nothing to pay out in ${currency} (net balance ${net})`);
    const id = randomId("po_1");
    const txn = this.balanceTransaction({ amount: -net, currency, created: now, source: id, type: "payout",
      reporting_category: "payout", description: "STRIPE PAYOUT", fee: 0, status: "available" });
    const status = opts.status ?? "paid";
    const payout: Obj = {
      id, object: "payout", amount: net, application_fee: null, application_fee_amount: null, arrival_date: now + 86_400,
      automatic: true, balance_transaction: txn.id, created: now, currency, description: "STRIPE PAYOUT",
      destination: "ba_1SandboxBankAccount000", failure_balance_transaction: null,
      failure_code: status === "failed" ? "account_closed" : null,
      failure_message: status === "failed" ? "The bank account has been closed." : null,
      livemode: false, metadata: {}, method: "standard", original_payout: null, payout_method: null,
      reconciliation_status: "completed", reversed_by: null, source_type: "card", statement_descriptor: null,
      status: status === "paid" ? "in_transit" : status, trace_id: { status: "pending", value: null }, type: "bank_account",
    };
    this.payouts.set(id, payout);
    for (const t of settled) {
      this.paidOutBy.set(t.id as string, id);
      t.status = "available";
    }
    this.paidOutBy.set(txn.id as string, id);
    this.emit("payout.created", payout, NO_REQUEST);
    if (status === "paid" || status === "failed") this.payoutOutcome(id, status);
    return payout;
  }

  /**
   * A payout in transit arrives (paid) or bounces (failed, also after paid, as a bank can return it):
   * a failure puts the amount back in the balance with a payout_failure balance transaction, as Stripe does.
   */
  payoutOutcome(id: string, outcome: "paid" | "failed"): Obj {
    const payout = this.payouts.get(id);
    if (!payout) throw new SandboxError(404, `No such payout: '${id}'`);
    if (payout.status === "failed" || payout.status === "canceled") throw new SandboxError(409, `payout ${id} is already ${payout.status}`);
    if (outcome === "paid") {
      if (payout.status === "paid") return payout;
      Object.assign(payout, { status: "paid", trace_id: { status: "supported", value: `TRACE${id.slice(-10).toUpperCase()}` } });
      this.emit("payout.paid", payout, NO_REQUEST);
      return payout;
    }
    const back = this.balanceTransaction({ amount: payout.amount as number, currency: payout.currency as string, created: unixSeconds(),
      source: id, type: "payout_failure", reporting_category: "payout_reversal", description: "STRIPE PAYOUT FAILURE", fee: 0,
      status: "available" });
    Object.assign(payout, { status: "failed", failure_balance_transaction: back.id, failure_code: "account_closed",
      failure_message: "The bank account has been closed." });
    this.emit("payout.failed", payout, NO_REQUEST);
    return payout;
  }

  /**
   * GET /v1/balance: the net of every balance transaction, available or pending by its status, per
   * currency (payouts and disputes take from it, payout failures and won disputes give back).
   */
  balance(): Obj {
    const sums = new Map<string, { available: number; pending: number }>();
    for (const t of this.balanceTransactions.values()) {
      const s = sums.get(t.currency as string) ?? { available: 0, pending: 0 };
      if (t.status === "available") s.available += t.net as number;
      else s.pending += t.net as number;
      sums.set(t.currency as string, s);
    }
    const part = (k: "available" | "pending") => [...sums].map(([currency, s]) => ({ amount: s[k], currency, source_types: { card: s[k] } }));
    return { object: "balance", available: part("available"), connect_reserved: [], instant_available: [], livemode: false, pending: part("pending") };
  }

  /**
   * A payment Stripe holds and we were never told of: succeeded at once, no webhook sent (its events are
   * recorded as Stripe would list them at /v1/events, but not delivered).
   */
  unnotifiedPayment(o: { amount: number; currency?: string; metadata?: Record<string, string>; description?: string | null }): Obj {
    const pi = newIntent({ amount: o.amount, currency: o.currency ?? "brl", metadata: { ...o.metadata }, description: o.description ?? null,
      payment_method_types: ["card"], allowed_payment_method_types: ["card"], automatic: false, receipt_email: null,
      capture_method: "automatic_async" }, unixSeconds());
    this.intents.set(pi.id as string, pi);
    const charge = this.newCharge(pi, randomId("pm_1"), "succeeded", "generic_decline");
    Object.assign(pi, { payment_method: charge.payment_method, latest_charge: charge.id });
    this.succeed(pi, charge, NO_REQUEST, false);
    return pi;
  }

  /** Bulk objects for benchmarks and reconciliation: no events; paid ones get their charge and balance transaction. */
  seed(n: number, o: { status: string; amount: number; currency?: string; metadata?: Record<string, string>; created?: number }): string[] {
    const ids: string[] = new Array(n);
    const created = o.created ?? unixSeconds();
    for (let i = 0; i < n; i++) {
      const pi = newIntent({ amount: o.amount, currency: o.currency ?? "brl", metadata: { ...o.metadata }, description: null,
        payment_method_types: ["card"], allowed_payment_method_types: ["card"], automatic: false, receipt_email: null,
        capture_method: "automatic_async" }, created);
      pi.status = o.status;
      this.intents.set(pi.id as string, pi);
      if (o.status === "succeeded") {
        const charge = this.newCharge(pi, randomId("pm_1"), "succeeded", "generic_decline", undefined, undefined, created);
        Object.assign(pi, { payment_method: charge.payment_method, latest_charge: charge.id, amount_received: o.amount });
      }
      ids[i] = pi.id as string;
    }
    return ids;
  }

  private balanceTransaction(t: { amount: number; currency: string; created: number; source: string; type: string;
    reporting_category: string; description: string | null; fee: number; feeDescription?: string; status?: string }): Obj {
    const id = randomId("txn_3");
    const txn: Obj = {
      id, object: "balance_transaction", amount: t.amount, available_on: t.created + AVAILABLE_AFTER_S, balance_type: "payments",
      created: t.created, currency: t.currency, description: t.description, exchange_rate: null, fee: t.fee,
      fee_details: t.fee === 0 ? [] : [{ amount: t.fee, application: null, currency: t.currency,
        description: t.feeDescription ?? "Stripe processing fees", type: "stripe_fee" }],
      net: t.amount - t.fee, reporting_category: t.reporting_category, source: t.source, status: t.status ?? "pending", type: t.type,
    };
    this.balanceTransactions.set(id, txn);
    return txn;
  }

  private newCharge(pi: Obj, pm: string, status: string, declineCode: string, amountReceived?: number, currency?: string,
    created = unixSeconds()): Obj {
    const amount = amountReceived ?? (pi.amount as number);
    const cur = currency?.toLowerCase() ?? (pi.currency as string);
    const id = randomId("ch_3");
    const charge: Obj = {
      id, object: "charge", amount, amount_captured: status === "succeeded" ? amount : 0,
      amount_refunded: 0, application: null, application_fee: null, application_fee_amount: null, balance_transaction: null,
      billing_details: { address: { city: null, country: "BR", line1: null, line2: null, postal_code: null, state: null },
        email: null, name: null, phone: null, tax_id: null },
      calculated_statement_descriptor: "RESERVE CONNECT", captured: status === "succeeded",
      created, currency: cur, customer: null, description: pi.description, disputed: false,
      failure_balance_transaction: null, failure_code: null, failure_message: null, fraud_details: {}, livemode: false,
      metadata: { ...(pi.metadata as Obj) }, on_behalf_of: null, outcome: approvedOutcome(),
      paid: status === "succeeded", payment_intent: pi.id, payment_method: pm,
      payment_method_details: { card: { amount_authorized: amount, brand: "visa",
        checks: { address_line1_check: null, address_postal_code_check: null, cvc_check: "pass" },
        country: "BR", exp_month: 12, exp_year: 2034, fingerprint: randomId("", 16), funding: "credit", installments: null,
        last4: status === "failed" ? "0002" : "4242", mandate: null, network: "visa", three_d_secure: null, wallet: null }, type: "card" },
      radar_options: {}, receipt_email: pi.receipt_email ?? null, receipt_number: null,
      receipt_url: `https://pay.stripe.com/receipts/payment/${randomId("", 40)}`, refunded: false, review: null,
      shipping: null, source: null, source_transfer: null, statement_descriptor: null, statement_descriptor_suffix: null,
      status, transfer_data: null, transfer_group: null,
    };
    if (status === "failed") Object.assign(charge, declinedChargeFields(declineCode));
    if (status === "succeeded") this.attachBalanceTransaction(charge);
    this.charges.set(id, charge);
    return charge;
  }

  private attachBalanceTransaction(charge: Obj): void {
    if (charge.balance_transaction) return;
    const amount = charge.amount as number;
    const txn = this.balanceTransaction({ amount, currency: charge.currency as string, created: charge.created as number,
      source: charge.id as string, type: "charge", reporting_category: "charge", description: (charge.description as string) ?? null,
      fee: stripeFee(amount) });
    charge.balance_transaction = txn.id;
  }

  private succeed(pi: Obj, charge: Obj, req: RequestInfo, notify = true): void {
    Object.assign(pi, { status: "succeeded", amount_received: charge.amount, last_payment_error: null, latest_charge: charge.id });
    this.attachBalanceTransaction(charge);
    this.emit("charge.succeeded", charge, req, notify);
    this.emit("payment_intent.succeeded", pi, req, notify);
  }

  // Stripe puts a declined PaymentIntent back to requires_payment_method so the guest can try again
  private decline(pi: Obj, charge: Obj, req: RequestInfo): void {
    const code = (charge.outcome as Obj).reason as string;
    Object.assign(pi, {
      status: "requires_payment_method",
      payment_method: null,
      last_payment_error: {
        advice_code: "try_again_later", charge: charge.id, code: "card_declined", decline_code: code,
        doc_url: "https://stripe.com/docs/error-codes/card-declined", message: "Your card was declined.",
        payment_method: { id: charge.payment_method, object: "payment_method", type: "card" }, type: "card_error",
      },
    });
    this.emit("charge.failed", charge, req);
    this.emit("payment_intent.payment_failed", pi, req);
  }

  emit(type: string, object: Obj, req: RequestInfo, notify = true): void {
    const url = notify ? this.webhookUrl() : null;
    const event: Obj = {
      id: randomId("evt_3"), object: "event", api_version: this.apiVersion, created: unixSeconds(),
      data: { object: structuredClone(object) }, livemode: false, pending_webhooks: url ? 1 : 0,
      request: req, type,
    };
    this.events.set(event.id as string, event);
    this.emitEvent({ provider: "stripe", id: event.id as string, type, url, body: event,
      raw: JSON.stringify(event, null, 2), createdAt: new Date().toISOString() });
  }
}

function newIntent(p: { amount: number; currency: string; metadata: Record<string, string>; description: string | null;
  payment_method_types: string[]; allowed_payment_method_types: string[] | null; automatic: boolean; receipt_email: string | null; capture_method: string },
created: number): Obj {
  const id = randomId("pi_3");
  return {
    id, object: "payment_intent", allowed_payment_method_types: p.allowed_payment_method_types, amount: p.amount, amount_capturable: 0,
    amount_details: { tip: {} }, amount_received: 0, application: null, application_fee_amount: null,
    automatic_payment_methods: p.automatic ? { allow_redirects: "always", enabled: true } : null,
    canceled_at: null, cancellation_reason: null, capture_method: p.capture_method,
    client_secret: `${id}_secret_${randomId("", 25)}`, confirmation_method: "automatic",
    created, currency: p.currency, customer: null, customer_account: null, description: p.description,
    excluded_payment_method_types: null, last_payment_error: null, latest_charge: null, livemode: false,
    managed_payments: null, metadata: p.metadata, next_action: null,
    on_behalf_of: null, payment_method: null, payment_method_configuration_details: null,
    payment_method_options: {}, payment_method_types: p.payment_method_types, payment_record: null, processing: null,
    receipt_email: p.receipt_email, review: null, setup_future_usage: null, shipping: null, source: null,
    statement_descriptor: null, statement_descriptor_suffix: null, status: "requires_payment_method",
    transfer_data: null, transfer_group: null,
  };
}

function emptyEvidence(): Obj {
  const fields = ["access_activity_log", "billing_address", "cancellation_policy", "cancellation_policy_disclosure",
    "cancellation_rebuttal", "customer_communication", "customer_email_address", "customer_name", "customer_purchase_ip",
    "customer_signature", "duplicate_charge_documentation", "duplicate_charge_explanation", "duplicate_charge_id",
    "product_description", "receipt", "refund_policy", "refund_policy_disclosure", "refund_refusal_explanation",
    "service_date", "service_documentation", "shipping_address", "shipping_carrier", "shipping_date",
    "shipping_documentation", "shipping_tracking_number", "uncategorized_file", "uncategorized_text"];
  return { ...Object.fromEntries(fields.map((f) => [f, null])), enhanced_evidence: {} };
}

function approvedOutcome(): Obj {
  return { advice_code: null, network_advice_code: null, network_decline_code: null, network_status: "approved_by_network",
    reason: null, risk_level: "normal", risk_score: 32, seller_message: "Payment complete.", type: "authorized" };
}

function declinedChargeFields(declineCode: string): Obj {
  return {
    status: "failed", paid: false, captured: false, amount_captured: 0, balance_transaction: null,
    failure_code: "card_declined", failure_message: "Your card was declined.",
    outcome: { advice_code: "try_again_later", network_advice_code: null, network_decline_code: "05", network_status: "declined_by_network",
      reason: declineCode, risk_level: "normal", risk_score: 40,
      seller_message: "The bank did not return any further details with this decline.", type: "issuer_declined" },
  };
}
