// The provider's money is the truth about money, our intent the truth about the sale: per provider and
// per path (webhook, poll, replay, recover), a success for another amount or currency never confirms a
// stay. The money that arrived is booked as it is and owed back (receivable against refunds_payable, in
// its currency), the payment is flagged amount_mismatch, its refund is queued and the P1 alert fires. A
// provider payment that names ours at another price is never attached; a refund or dispute beyond what
// arrived is refused. The providers' APIs are fakes answering recorded shapes with the test's figures,
// read by the functions through their real clients; every event is signed inside the test.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startE2E, type E2E } from "../helpers/e2e.ts";
import * as f from "../helpers/fixtures.ts";
import { attachGateway, recoverPayment } from "../helpers/money.ts";
import {
  fixture, mercadoPagoNotification, mercadoPagoPayment, openPixCompleted, startFakeProviders, stripeEvent, stripeIntent, type FakeProviders,
} from "../helpers/provider_fakes.ts";
import { asOperator } from "../helpers/runbook.ts";

type Provider = "stripe" | "mercadopago" | "openpix";

let e: E2E;
let fakes: FakeProviders;
beforeAll(async () => {
  fakes = await startFakeProviders();
  e = await startE2E({ env: fakes.env });
});
afterAll(async () => {
  await e?.stop();
  await fakes?.stop();
});

interface Attempt {
  paymentId: string;
  intentId: string;
  amount: number;
  gatewayId: string;
  provider: Provider;
}

/** A checkout's attempt recorded in SQL (the functions never create it here), attached unless told not to. */
async function attempt(provider: Provider, attach = true): Promise<Attempt> {
  const { unitId } = await f.unit(e.db.sql, { nights: 6 });
  const [c] = await e.db.sql`
    select * from reserve.begin_checkout(${`guest-${crypto.randomUUID()}`}, ${provider === "stripe" ? "card" : "pix"}, ${provider},
                                         ${unitId}, ${f.isoDate(1)}, ${f.isoDate(3)}, 2)`;
  const paymentId = c.payment_id as string;
  const gatewayId = provider === "stripe" ? `pi_${crypto.randomUUID().replace(/-/g, "")}`
    : provider === "mercadopago" ? String(1_400_000_000 + Math.floor(Math.random() * 100_000_000)) : paymentId;
  if (attach) await attachGateway(e.db.sql, paymentId, gatewayId);
  return { paymentId, intentId: c.booking_intent_id as string, amount: Number(c.amount), gatewayId, provider };
}

/** What the provider's API answers about the attempt: paid `received` (minor units) in `currency`, for `asked`. */
function providerSays(a: Attempt, o: { received: number; currency?: string; asked?: number; reference?: string | null }) {
  const asked = o.asked ?? a.amount;
  const reference = o.reference === undefined ? a.paymentId : o.reference;
  if (a.provider === "stripe") {
    fakes.stripe.intents.set(a.gatewayId, stripeIntent({ id: a.gatewayId, paymentId: reference ?? "", amount: asked, received: o.received,
                                                         currency: (o.currency ?? "BRL").toLowerCase() }));
  } else if (a.provider === "mercadopago") {
    fakes.mercadopago.payments.set(a.gatewayId, mercadoPagoPayment({ id: a.gatewayId, paymentId: reference, reais: asked / 100,
                                                                     paidReais: o.received / 100, currency: o.currency ?? "BRL" }));
  } else {
    const charge = openPixCompleted({ correlationID: a.gatewayId, value: asked, paid: o.received }).charge;
    fakes.openpix.charges.set(a.gatewayId, { ...charge, paymentMethods: { pix: { ...charge.paymentMethods.pix, value: o.received } } });
  }
}

/** The provider's signed webhook that says the attempt was paid: `received` in `currency`. */
async function webhookPaid(a: Attempt, o: { received: number; currency?: string; asked?: number }) {
  providerSays(a, o);
  if (a.provider === "stripe") {
    const { payload, header } = await stripeEvent(fakes.stripe.webhookSecret, "payment_intent.succeeded", fakes.stripe.intents.get(a.gatewayId)!);
    return e.post("webhook_stripe", payload, { "stripe-signature": header });
  }
  if (a.provider === "mercadopago") {
    const n = mercadoPagoNotification(fakes.mercadopago.webhookSecret, a.gatewayId);
    return e.post(n.path, n.body, n.headers);
  }
  // OpenPIX's current event name; the body is what OpenPIX documents, with our charge and what its pix paid
  const body = JSON.stringify(openPixCompleted({ correlationID: a.gatewayId, value: o.asked ?? a.amount, paid: o.received, event: "woovi:CHARGE_COMPLETED" }));
  return e.post("webhook_pix/openpix", body, { "x-webhook-signature": fakes.openpix.sign(body) });
}

async function ledgerLegs(paymentId: string) {
  return e.db.sql`
    select t.kind, e.account, e.direction, e.amount::int, e.currency
    from reserve.ledger_transactions t join reserve.ledger_entries e on e.transaction_id = t.id
    where t.payment_id = ${paymentId} order by e.direction, e.account`;
}

/** The provider fee's legs a payment should have: none when the provider said no fee. */
async function feeLegs(a: Attempt, currency: string) {
  const [p] = await e.db.sql`select fee_amount::int from reserve.payments where id = ${a.paymentId}`;
  return p?.fee_amount ? [
    { kind: "provider_fee", account: `receivable_${a.provider}`, direction: "credit", amount: p.fee_amount, currency },
    { kind: "provider_fee", account: "provider_fees", direction: "debit", amount: p.fee_amount, currency },
  ] : [];
}

/** The money that arrived is booked as it is, owed back and refunded; no stay; the P1 alert fires. */
async function expectOwedBack(a: Attempt, received: number, currency: string, refundStatus = "requested") {
  expect(await e.db.sql`select id from reserve.reservations where booking_intent_id = ${a.intentId}`).toEqual([]);
  const [p] = await e.db.sql`select status, refund_reason, received_amount::int, received_currency, refunded_amount::int
                             from reserve.payments where id = ${a.paymentId}`;
  expect(p).toEqual({ status: "succeeded", refund_reason: "amount_mismatch", received_amount: received, received_currency: currency, refunded_amount: 0 });
  const legs = await ledgerLegs(a.paymentId);
  expect(legs.filter((l) => l.kind === "payment")).toEqual([
    { kind: "payment", account: "refunds_payable", direction: "credit", amount: received, currency },
    { kind: "payment", account: `receivable_${a.provider}`, direction: "debit", amount: received, currency },
  ]);
  // the provider's fee on the money that arrived is its own, booked once against the receivable
  expect(legs.filter((l) => l.kind !== "payment")).toEqual(await feeLegs(a, currency));
  expect(await e.db.sql`select * from reserve.find_ledger_imbalances(current_date - 1)`).toEqual([]);
  const refunds = await e.db.sql`select amount::int, currency, reason, status, request_key from reserve.refund_requests where payment_id = ${a.paymentId}`;
  expect(refunds).toEqual([{ amount: received, currency, reason: "amount_mismatch", status: refundStatus, request_key: `mismatch:${a.paymentId}` }]);
  const d = await e.db.sql`select kind, provider_amount::int, provider_currency, expected_amount::int, expected_currency
                           from reserve.money_discrepancies where payment_id = ${a.paymentId} and resolved_at is null`;
  expect(d).toEqual([{ kind: "amount_mismatch", provider_amount: received, provider_currency: currency, expected_amount: a.amount, expected_currency: "BRL" }]);
  const [alert] = await e.db.sql`select state, severity, runbook_section from reserve.check_all_alerts() where alert_name = 'money_mismatch'`;
  expect(alert).toEqual({ state: "firing", severity: "P1", runbook_section: "P1: PROVIDER MONEY DIFFERS FROM OURS" });
}

/** A provider payment never attached to ours: nothing booked, nothing sold, an attach_mismatch open. */
async function expectNotAttached(a: Attempt) {
  const [p] = await e.db.sql`select status, gateway_payment_id, received_amount from reserve.payments where id = ${a.paymentId}`;
  expect(p.gateway_payment_id).toBeNull();
  expect(p.received_amount).toBeNull();
  expect(await e.db.sql`select id from reserve.reservations where booking_intent_id = ${a.intentId}`).toEqual([]);
  expect(await ledgerLegs(a.paymentId)).toEqual([]);
  const d = await e.db.sql`select kind from reserve.money_discrepancies where payment_id = ${a.paymentId} and resolved_at is null`;
  expect(d.map((x) => x.kind)).toEqual(["attach_mismatch"]);
  const [alert] = await e.db.sql`select state from reserve.check_all_alerts() where alert_name = 'money_mismatch'`;
  expect(alert.state).toBe("firing");
}

const AMOUNT_CASES: Array<[Provider, number | null, string]> = [
  ["stripe", 100, "BRL"], ["stripe", null, "USD"],
  ["mercadopago", 100, "BRL"], ["mercadopago", null, "USD"],
  // OpenPIX takes BRL only: only its amount can differ
  ["openpix", 100, "BRL"],
];
const label = (p: Provider, amount: number | null, currency: string) => `${p}: ${amount ?? "our amount"} ${currency}`;

describe("a success for another amount or currency, by webhook", () => {
  it.each(AMOUNT_CASES)("%s %s %s is booked as owed back, never as a stay", async (provider, amount, currency) => {
    const a = await attempt(provider);
    const received = amount ?? a.amount;
    const res = await webhookPaid(a, { received, currency });
    expect(res.status, label(provider, amount, currency)).toBe(200);
    expect(res.body).toMatchObject({ status: "completed", outcome: "applied", payment_status: "succeeded", finalize_outcome: "amount_mismatch" });
    expect(res.body.reservation_id).toBeUndefined();
    await expectOwedBack(a, received, currency);
  });

  it("a redelivery of the same event changes nothing more (one receipt, one refund, one discrepancy)", async () => {
    const a = await attempt("stripe");
    providerSays(a, { received: 100 });
    const { payload, header } = await stripeEvent(fakes.stripe.webhookSecret, "payment_intent.succeeded", fakes.stripe.intents.get(a.gatewayId)!);
    for (let i = 0; i < 3; i++) expect((await e.post("webhook_stripe", payload, { "stripe-signature": header })).status).toBe(200);
    await expectOwedBack(a, 100, "BRL");
  });
});

describe("a success for another amount or currency, by the poller", () => {
  it.each(AMOUNT_CASES)("%s %s %s is booked as owed back, never as a stay", async (provider, amount, currency) => {
    const a = await attempt(provider);
    const received = amount ?? a.amount;
    providerSays(a, { received, currency });
    const r = await e.poll({}, [a.paymentId]);
    expect(r.status).toBe(200);
    // the same run sends the refund of what arrived
    expect(r.body).toMatchObject({ ok: true, applied: 1, finalized: 0 });
    expect(r.body.refunds_sent).toBeGreaterThanOrEqual(1);
    await expectOwedBack(a, received, currency, "sent");
  });
});

describe("a success for another amount, replayed by an operator after it failed", () => {
  it.each(["stripe", "mercadopago", "openpix"] as Provider[])("%s", async (provider) => {
    const a = await attempt(provider);
    // the fault: the first delivery cannot record the discrepancy, so the whole apply is undone and the event fails
    await e.db.sql.unsafe(`
      create function public.refuse_discrepancy() returns trigger language plpgsql as $$
      begin raise exception 'injected: discrepancies refused'; end $$;
      create trigger _000_refuse before insert on reserve.money_discrepancies for each row execute function public.refuse_discrepancy();`);
    let res;
    try {
      res = await webhookPaid(a, { received: 100 });
    } finally {
      await e.db.sql.unsafe(`drop trigger _000_refuse on reserve.money_discrepancies; drop function public.refuse_discrepancy();`);
    }
    expect(res.status).toBe(500);
    const [failed] = await e.db.sql`select id, status from reserve.processed_webhooks where payment_id = ${a.paymentId} and status = 'failed'`;
    expect(failed).toBeDefined();
    expect(await ledgerLegs(a.paymentId)).toEqual([]);
    const [r] = await asOperator(e.db.sql, "oncall@reserve", (tx) => tx`select * from reserve.replay_webhook(${failed.id as string})`);
    expect(r).toMatchObject({ webhook_status: "completed", outcome: "applied", finalize_outcome: "amount_mismatch" });
    await expectOwedBack(a, 100, "BRL");
  });
});

describe("a success for another amount, recovered by an operator from the dashboard", () => {
  it.each(["stripe", "mercadopago", "openpix"] as Provider[])("%s", async (provider) => {
    const a = await attempt(provider);
    const [r] = await asOperator(e.db.sql, "oncall@reserve", (tx) =>
      recoverPayment(tx, a.paymentId, { status: "succeeded", amount_received: 100, currency: "BRL" }, "dashboard shows 1.00 BRL paid"));
    expect(r).toMatchObject({ previous_status: "pending", status: "succeeded", outcome: "applied", finalize_outcome: "amount_mismatch" });
    await expectOwedBack(a, 100, "BRL");
  });

  it("a success without the amount that arrived is refused (RC001) and writes nothing", async () => {
    const a = await attempt("stripe");
    const state = await asOperator(e.db.sql, "oncall@reserve", (tx) =>
      recoverPayment(tx, a.paymentId, { status: "succeeded" }, "dashboard says paid")).catch((err) => err.code);
    expect(state).toBe("RC001");
    const [p] = await e.db.sql`select status from reserve.payments where id = ${a.paymentId}`;
    expect(p.status).toBe("pending");
  });
});

describe("a provider payment that names ours at another price is never attached", () => {
  it.each(["stripe", "mercadopago", "openpix"] as Provider[])("%s: by webhook, recorded dead", async (provider) => {
    const a = await attempt(provider, false);
    const res = await webhookPaid(a, { received: 100, asked: 100 });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ status: "dead", outcome: "refused" });
    await expectNotAttached(a);
  });

  it("openpix: by the poller, which finds the charge by our id, refused", async () => {
    const a = await attempt("openpix", false);
    providerSays(a, { received: 100, asked: 100 });
    const r = await e.poll({}, [a.paymentId]);
    expect(r.body).toMatchObject({ ok: true, refused: 1 });
    await expectNotAttached(a);
  });

  it("stripe: a PaymentIntent naming another payment of ours is not attached to this one", async () => {
    const a = await attempt("stripe", false);
    providerSays(a, { received: a.amount, reference: crypto.randomUUID() });
    const { payload, header } = await stripeEvent(fakes.stripe.webhookSecret, "payment_intent.succeeded", fakes.stripe.intents.get(a.gatewayId)!);
    const res = await e.post("webhook_stripe", payload, { "stripe-signature": header });
    // it names no payment we have: not ours
    expect(res.body).toMatchObject({ status: "ignored" });
    const [p] = await e.db.sql`select gateway_payment_id from reserve.payments where id = ${a.paymentId}`;
    expect(p.gateway_payment_id).toBeNull();
  });
});

describe("a payment's creation answered with what no payment can hold", () => {
  it.each([
    ["an amount that is text", (pi: Record<string, unknown>) => ({ ...pi, amount: String(pi.amount) })],
    ["an id longer than any we store", (pi: Record<string, unknown>) => ({ ...pi, id: `pi_${"x".repeat(300)}` })],
  ])("%s: 502 provider_rejected, the attempt failed and its nights released (not a 500 or a 400 that holds them)", async (_what, spoil) => {
    const { unitId } = await f.unit(e.db.sql, { nights: 6 });
    fakes.stripe.createAnswers.push((form) => spoil({
      ...stripeIntent({ id: `pi_${crypto.randomUUID().replace(/-/g, "")}`, paymentId: form.get("metadata[payment_id]")!, amount: Number(form.get("amount")),
                        status: "requires_payment_method" }),
      client_secret: "pi_secret_x",
    }));
    const res = await e.checkout({ unit_id: unitId, check_in: f.isoDate(1), check_out: f.isoDate(3), guests: 2, method: "card" });
    expect(res.status).toBe(502);
    expect(res.body).toMatchObject({ error: "provider_rejected", provider: "stripe" });
    expect(JSON.stringify(res.body)).not.toContain("pi_secret_x");
    const [p] = await e.db.sql`select p.status, p.gateway_payment_id, bi.status as intent_status from reserve.payments p
                               join reserve.booking_intents bi on bi.id = p.booking_intent_id where bi.unit_id = ${unitId}`;
    expect(p).toMatchObject({ status: "failed", gateway_payment_id: null });
    const [held] = await e.db.sql`select count(*)::int as n from reserve.booking_locks l join reserve.booking_intents bi on bi.id = l.booking_intent_id
                                  where bi.unit_id = ${unitId} and l.status = 'held'`;
    expect(held.n).toBe(0);
  });
});

describe("refunds and disputes beyond the money received are refused", () => {
  async function paid(provider: Provider) {
    const a = await attempt(provider);
    const res = await webhookPaid(a, { received: a.amount });
    expect(res.body.finalize_outcome).toBe("created");
    return a;
  }

  async function expectRefused(a: Attempt, kind: string) {
    const [p] = await e.db.sql`select status, refunded_amount::int from reserve.payments where id = ${a.paymentId}`;
    expect(p).toEqual({ status: "succeeded", refunded_amount: 0 });
    const legs = await ledgerLegs(a.paymentId);
    // the receipt (and the provider's fee, when it said one), never a refund
    expect(legs.filter((l) => l.kind !== "provider_fee").every((l) => l.kind === "payment")).toBe(true);
    expect(legs.filter((l) => l.kind === "provider_fee")).toEqual(await feeLegs(a, legs[0]!.currency as string));
    const d = await e.db.sql`select kind from reserve.money_discrepancies where payment_id = ${a.paymentId}`;
    expect(d.map((x) => x.kind)).toEqual([kind]);
  }

  it("stripe: charge.refunded for twice what arrived", async () => {
    const a = await paid("stripe");
    const charge = { id: `ch_${crypto.randomUUID().slice(0, 8)}`, object: "charge", amount: a.amount, amount_refunded: a.amount * 2,
                     currency: "brl", payment_intent: a.gatewayId, refunded: true, metadata: {} };
    const { payload, header } = await stripeEvent(fakes.stripe.webhookSecret, "charge.refunded", charge);
    const res = await e.post("webhook_stripe", payload, { "stripe-signature": header });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ status: "dead", outcome: "refused" });
    await expectRefused(a, "refund_exceeds_received");
  });

  it("stripe: a dispute for more than arrived", async () => {
    const a = await paid("stripe");
    const dispute = { id: `du_${crypto.randomUUID().slice(0, 8)}`, object: "dispute", amount: a.amount + 1, currency: "brl",
                      charge: "ch_1", payment_intent: a.gatewayId, status: "warning_needs_response" };
    const { payload, header } = await stripeEvent(fakes.stripe.webhookSecret, "charge.dispute.created", dispute);
    const res = await e.post("webhook_stripe", payload, { "stripe-signature": header });
    expect(res.body).toMatchObject({ status: "dead", outcome: "refused" });
    await expectRefused(a, "dispute_exceeds_received");
  });

  it("stripe: the recorded dispute shape, which names only its charge, is looked up and applied, then lost for what arrived", async () => {
    const a = await paid("stripe");
    const chargeId = `ch_${crypto.randomUUID().replace(/-/g, "").slice(0, 24)}`;
    fakes.stripe.charges.set(chargeId, { ...fixture("stripe/charge"), id: chargeId, amount: a.amount, currency: "brl", payment_intent: a.gatewayId });
    const recorded = fixture("stripe/dispute");
    const dispute = { ...recorded, charge: chargeId, payment_intent: null, amount: a.amount, currency: "brl" };
    const opened = await stripeEvent(fakes.stripe.webhookSecret, "charge.dispute.created", dispute);
    const res = await e.post("webhook_stripe", opened.payload, { "stripe-signature": opened.header });
    expect(res.body).toMatchObject({ status: "completed", outcome: "applied", payment_status: "disputed" });
    const lost = await stripeEvent(fakes.stripe.webhookSecret, "charge.dispute.closed", { ...dispute, status: "lost" });
    const closed = await e.post("webhook_stripe", lost.payload, { "stripe-signature": lost.header });
    expect(closed.body).toMatchObject({ status: "completed", payment_status: "refunded" });
    const kinds = await e.db.sql`select kind from reserve.ledger_transactions where payment_id = ${a.paymentId} order by posted_at`;
    expect(kinds.map((k) => k.kind)).toEqual(["payment", "chargeback"]);
    expect(fakes.requests).toContain(`GET /v1/charges/${chargeId}`);
  });

  it("stripe: a refund in another currency than arrived", async () => {
    const a = await paid("stripe");
    const charge = { id: "ch_x", object: "charge", amount: a.amount, amount_refunded: 100, currency: "usd", payment_intent: a.gatewayId, refunded: false, metadata: {} };
    const { payload, header } = await stripeEvent(fakes.stripe.webhookSecret, "charge.refunded", charge);
    const res = await e.post("webhook_stripe", payload, { "stripe-signature": header });
    expect(res.body).toMatchObject({ status: "dead", outcome: "refused" });
    await expectRefused(a, "currency_mismatch");
  });

  it("mercadopago: a payment refunded for more than it received", async () => {
    const a = await paid("mercadopago");
    fakes.mercadopago.payments.set(a.gatewayId, { ...fakes.mercadopago.payments.get(a.gatewayId)!, transaction_amount_refunded: (a.amount * 2) / 100 });
    const n = mercadoPagoNotification(fakes.mercadopago.webhookSecret, a.gatewayId);
    const res = await e.post(n.path, n.body, n.headers);
    expect(res.body).toMatchObject({ status: "dead", outcome: "refused" });
    await expectRefused(a, "refund_exceeds_received");
  });

  it("openpix: refunds confirmed for more than the pix paid", async () => {
    const a = await paid("openpix");
    fakes.openpix.refunds.set(a.gatewayId, [{ status: "CONFIRMED", value: a.amount * 2, correlationID: crypto.randomUUID(), endToEndId: "D1" }]);
    const body = JSON.stringify({ event: "OPENPIX:TRANSACTION_REFUND_RECEIVED", charge: fakes.openpix.charges.get(a.gatewayId) });
    const res = await e.post("webhook_pix/openpix", body, { "x-webhook-signature": fakes.openpix.sign(body) });
    expect(res.body).toMatchObject({ status: "dead", outcome: "refused" });
    await expectRefused(a, "refund_exceeds_received");
  });
});
