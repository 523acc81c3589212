// What reconciliation needs from the sandbox: Stripe's list endpoints with cursor pagination and
// created filters, walked by stripe-node's own auto-pagination; balance transactions with fees and payouts
// (gross − fees − refunds − disputes = net); MercadoPago's payment search and OpenPIX's charge list with
// their real parameters; and the levers that make the provider know what we were never told (a payment
// with no webhook, amounts and currencies that differ).
import Stripe from "stripe";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startProviderSandbox, type ProviderSandbox } from "../../local/sandbox/index.ts";
import { STRIPE_FEES, stripeFee } from "../../local/sandbox/stripe.ts";
import { startReceiver, type Receiver } from "./receiver.ts";

type Json = Record<string, any>;
let sb: ProviderSandbox;
let rx: Receiver;
let stripe: Stripe;

beforeAll(async () => {
  rx = await startReceiver(() => sb);
  sb = await startProviderSandbox({ stripeWebhookUrl: `${rx.url}/stripe`, openpixWebhookUrl: `${rx.url}/openpix` });
  stripe = new Stripe(sb.stripe.secretKey, { host: sb.stripe.host, port: sb.stripe.port, protocol: "http", maxNetworkRetries: 0 });
});
afterAll(async () => {
  await sb.stop();
  await rx.close();
});

const day = 86_400;
const control = async (method: string, ...args: unknown[]) => {
  const res = await fetch(`${sb.url}/_sandbox/${method}`, { method: "POST", body: JSON.stringify(args) });
  return { status: res.status, body: (await res.json()) as any };
};

describe("Stripe lists", () => {
  it("pages newest first with limit, starting_after, ending_before and has_more; stripe-node auto-pagination walks them", async () => {
    const base = Math.floor(Date.now() / 1000) - 30 * day;
    const oldIds = sb.control.seedStripePaymentIntents(7, { status: "succeeded", amount: 10_000, created: base, metadata: { batch: "old" } });
    const newIds = sb.control.seedStripePaymentIntents(25, { status: "succeeded", amount: 20_000, created: base + 2 * day, metadata: { batch: "new" } });
    const window = { gte: base + day, lte: base + 3 * day };

    const first = await stripe.paymentIntents.list({ limit: 10, created: window });
    expect(first).toMatchObject({ object: "list", url: "/v1/payment_intents", has_more: true });
    expect(first.data.map((p) => p.id)).toEqual([...newIds].reverse().slice(0, 10));
    const second = await stripe.paymentIntents.list({ limit: 10, created: window, starting_after: first.data.at(-1)!.id });
    expect(second.data.map((p) => p.id)).toEqual([...newIds].reverse().slice(10, 20));
    const back = await stripe.paymentIntents.list({ limit: 10, created: window, ending_before: second.data[0]!.id });
    expect(back.data.map((p) => p.id)).toEqual(first.data.map((p) => p.id));
    expect(back.has_more).toBe(false);

    const walked: string[] = [];
    for await (const pi of stripe.paymentIntents.list({ limit: 4, created: window })) walked.push(pi.id);
    expect(walked).toEqual([...newIds].reverse());
    const each: string[] = [];
    await stripe.paymentIntents.list({ limit: 3, created: { lt: base + day } }).autoPagingEach((pi) => void each.push(pi.id));
    expect(each).toEqual([...oldIds].reverse());
    expect((await stripe.paymentIntents.list({ created: base })).data).toHaveLength(7);

    const charges = await stripe.charges.list({ limit: 100, created: window, expand: ["data.balance_transaction"] });
    expect(charges.data).toHaveLength(25);
    const txn = charges.data[0]!.balance_transaction as Stripe.BalanceTransaction;
    expect(txn).toMatchObject({ amount: 20_000, fee: stripeFee(20_000), net: 20_000 - stripeFee(20_000), type: "charge" });
  });

  it("refuses what Stripe refuses", async () => {
    const err = (p: Promise<unknown>) => p.then(() => undefined, (e) => e);
    expect(await err(stripe.paymentIntents.list({ limit: 101 }))).toMatchObject({ type: "StripeInvalidRequestError", param: "limit" });
    expect(await err(stripe.paymentIntents.list({ starting_after: "pi_nope" }))).toMatchObject({ code: "resource_missing" });
    expect(await err(stripe.paymentIntents.list({ created: { gte: "soon" as unknown as number } }))).toMatchObject({ param: "created[gte]" });
    expect(await err(stripe.paymentIntents.list({ bogus: 1 } as Stripe.PaymentIntentListParams))).toMatchObject({ code: "parameter_unknown" });
  });

  it("lists refunds, disputes, balance transactions and payouts; a payout is gross − fees − refunds − disputes", async () => {
    const fresh = await startProviderSandbox();
    const s = new Stripe(fresh.stripe.secretKey, { host: fresh.stripe.host, port: fresh.stripe.port, protocol: "http", maxNetworkRetries: 0 });
    try {
      const pis = await Promise.all([40_000, 60_000, 25_000].map((amount) =>
        s.paymentIntents.create({ amount, currency: "brl", allowed_payment_method_types: ["card"] })));
      for (const pi of pis) fresh.control.stripeConfirm(pi.id, "succeeded");
      await s.refunds.create({ payment_intent: pis[0]!.id, amount: 15_000 });
      fresh.control.stripeDispute(pis[2]!.id);
      const refunds = await s.refunds.list({ payment_intent: pis[0]!.id });
      expect(refunds.data.map((r) => r.amount)).toEqual([15_000]);
      expect((await s.disputes.list({ limit: 10 })).data.map((d) => d.payment_intent)).toEqual([pis[2]!.id]);

      const payout = fresh.control.stripePayout() as Json;
      const gross = 40_000 + 60_000 + 25_000;
      const fees = stripeFee(40_000) + stripeFee(60_000) + stripeFee(25_000) + STRIPE_FEES.dispute;
      expect(payout).toMatchObject({ object: "payout", automatic: true, status: "paid", currency: "brl", amount: gross - fees - 15_000 - 25_000 });
      const settled: Stripe.BalanceTransaction[] = [];
      for await (const t of s.balanceTransactions.list({ payout: payout.id, limit: 2 })) settled.push(t);
      expect(settled.map((t) => t.type).sort()).toEqual(["adjustment", "charge", "charge", "charge", "payout", "refund"]);
      expect(settled.reduce((sum, t) => sum + t.net, 0)).toBe(0); // what came in went out to the bank
      expect(settled.filter((t) => t.type !== "payout").every((t) => t.status === "available")).toBe(true);
      expect((await s.payouts.list()).data.map((p) => p.id)).toEqual([payout.id]);
      expect(await s.payouts.retrieve(payout.id)).toEqual(payout);
      const events = fresh.control.events("stripe").map((e) => e.type);
      expect(events).toEqual(expect.arrayContaining(["payout.created", "payout.paid"]));
      expect(() => fresh.control.stripePayout()).toThrow(/nothing to pay out/);
    } finally {
      await fresh.stop();
    }
  });

  it("answers /v1/balance as the net of its balance transactions; a payout in transit arrives or bounces back into it", async () => {
    const fresh = await startProviderSandbox();
    const s = new Stripe(fresh.stripe.secretKey, { host: fresh.stripe.host, port: fresh.stripe.port, protocol: "http", maxNetworkRetries: 0 });
    const total = async () => {
      const b = await s.balance.retrieve();
      expect(b.object).toBe("balance");
      return [...b.available, ...b.pending].filter((x) => x.currency === "brl").reduce((sum, x) => sum + x.amount, 0);
    };
    try {
      expect(await total()).toBe(0);
      const pi = await s.paymentIntents.create({ amount: 50_000, currency: "brl", allowed_payment_method_types: ["card"] });
      fresh.control.stripeConfirm(pi.id, "succeeded");
      expect(await total()).toBe(50_000 - stripeFee(50_000));
      const b = await s.balance.retrieve();
      expect(b.pending.find((x) => x.currency === "brl")!.amount).toBe(50_000 - stripeFee(50_000));
      const payout = fresh.control.stripePayout({ status: "in_transit" }) as Json;
      expect(payout).toMatchObject({ status: "in_transit", amount: 50_000 - stripeFee(50_000) });
      expect(await total()).toBe(0);
      expect(fresh.control.stripePayoutOutcome(payout.id, "paid")).toMatchObject({ status: "paid" });
      const failed = fresh.control.stripePayoutOutcome(payout.id, "failed") as Json;
      expect(failed).toMatchObject({ status: "failed", failure_code: "account_closed" });
      const back = await s.balanceTransactions.retrieve(failed.failure_balance_transaction);
      expect(back).toMatchObject({ type: "payout_failure", amount: payout.amount, source: payout.id });
      expect(await total()).toBe(payout.amount);
      expect(() => fresh.control.stripePayoutOutcome(payout.id, "paid")).toThrow(/already failed/);
      expect(fresh.control.events("stripe").map((e) => e.type)).toEqual(expect.arrayContaining(["payout.created", "payout.paid", "payout.failed"]));
    } finally {
      await fresh.stop();
    }
  });

  it("knows payments we were never told of, and settles other figures than asked", async () => {
    const seen = rx.received.length;
    const unnotified = (await control("stripeCreateUnnotifiedPayment", { amount: 77_000, metadata: { payment_id: "ours-lost" } })).body;
    expect(unnotified).toMatchObject({ status: "succeeded", amount_received: 77_000, metadata: { payment_id: "ours-lost" } });
    const stranger = (await control("stripeCreateUnnotifiedPayment", { amount: 100 })).body;
    expect(stranger.metadata).toEqual({});
    const listed = await stripe.paymentIntents.list({ limit: 5 });
    expect(listed.data.map((p) => p.id)).toEqual(expect.arrayContaining([unnotified.id, stranger.id]));
    const pi = await stripe.paymentIntents.create({ amount: 64_000, currency: "brl", allowed_payment_method_types: ["card"] });
    const short = (await control("stripeConfirm", pi.id, "succeeded", { amountReceived: 100, currency: "usd" })).body;
    expect(short).toMatchObject({ status: "succeeded", amount: 64_000, amount_received: 100 });
    const charge = await stripe.charges.retrieve(short.latest_charge, { expand: ["balance_transaction"] });
    expect(charge).toMatchObject({ amount: 100, currency: "usd" });
    await sb.control.flush();
    const hooks = rx.received.slice(seen).map((r) => (r.body as Json).data.object.id);
    expect(hooks).not.toContain(unnotified.id);
    expect(hooks).toContain(pi.id);
  });
});

async function mp(path: string) {
  const res = await fetch(`${sb.mercadopago.apiBase}${path}`, { headers: { authorization: `Bearer ${sb.mercadopago.accessToken}` } });
  return { status: res.status, body: (await res.json()) as Json };
}

describe("MercadoPago payment search", () => {
  it("filters by range and dates, sorts, pages with limit and offset; answers paging {total, limit, offset}", async () => {
    const now = Date.now();
    const old = sb.control.seedMercadoPagoPayments(3, { status: "approved", transaction_amount: 50, external_reference: "search-old", created: now - 40 * day * 1000 });
    const recent = sb.control.seedMercadoPagoPayments(12, { status: "approved", transaction_amount: 75, external_reference: "search-new", created: now - 2 * day * 1000 });
    const page1 = await mp("/v1/payments/search?sort=date_created&criteria=asc&range=date_created&begin_date=NOW-10DAYS&end_date=NOW&external_reference=search-new&limit=5&offset=0");
    expect(page1.body.paging).toEqual({ total: 12, limit: 5, offset: 0 });
    expect(page1.body.results.map((p: Json) => p.id)).toEqual(recent.slice(0, 5));
    const page3 = await mp("/v1/payments/search?sort=date_created&criteria=asc&range=date_created&begin_date=NOW-10DAYS&end_date=NOW&external_reference=search-new&limit=5&offset=10");
    expect(page3.body.results.map((p: Json) => p.id)).toEqual(recent.slice(10));
    const iso = encodeURIComponent(new Date(now - 50 * day * 1000).toISOString());
    const isoEnd = encodeURIComponent(new Date(now - 30 * day * 1000).toISOString());
    const byIso = await mp(`/v1/payments/search?range=date_approved&begin_date=${iso}&end_date=${isoEnd}&status=approved`);
    expect(byIso.body.results.map((p: Json) => p.id).sort()).toEqual([...old].sort());
    expect(byIso.body.results[0]).toMatchObject({ fee_details: [{ type: "mercadopago_fee", amount: 0.5 }],
      transaction_details: { net_received_amount: 49.5 } });
    expect((await mp("/v1/payments/search?limit=0")).status).toBe(400);
    expect((await mp("/v1/payments/search?sort=amount")).status).toBe(400);
    expect((await mp("/v1/payments/search?begin_date=yesterday&range=date_created")).status).toBe(400);
    expect((await mp("/v1/payments/search?begin_date=NOW-1DAYS")).status).toBe(400); // a date needs its range
  });

  it("knows PIX we were never told of, and approves for another amount or currency", async () => {
    const ours = sb.control.mercadopagoCreateUnnotifiedPayment({ transaction_amount: 640, external_reference: "p-lost" });
    expect(ours).toMatchObject({ status: "approved", external_reference: "p-lost", notification_url: null });
    expect(sb.control.events("mercadopago").some((e) => (e.body as Json).data?.id === String(ours.id))).toBe(false);
    const found = await mp("/v1/payments/search?external_reference=p-lost");
    expect(found.body.results.map((p: Json) => p.id)).toEqual([ours.id]);
    const res = await fetch(`${sb.mercadopago.apiBase}/v1/payments`, { method: "POST",
      headers: { authorization: `Bearer ${sb.mercadopago.accessToken}`, "content-type": "application/json", "x-idempotency-key": "mismatch-1" },
      body: JSON.stringify({ transaction_amount: 640, payment_method_id: "pix", payer: { email: "a@example.com" }, notification_url: `${rx.url}/mp` }) });
    const created = (await res.json()) as Json;
    const paid = (await control("mercadopagoPay", created.id, { amount: 1, currency: "USD" })).body;
    expect(paid).toMatchObject({ status: "approved", transaction_amount: 1, currency_id: "USD", transaction_details: { total_paid_amount: 1 } });
  });
});

async function op(path: string) {
  const res = await fetch(`${sb.openpix.apiBase}${path}`, { headers: { authorization: sb.openpix.appId } });
  return { status: res.status, body: (await res.json()) as Json };
}

describe("OpenPIX charge list", () => {
  it("filters by start, end and status and pages with skip and limit", async () => {
    const start = new Date(Date.now() - 1000).toISOString();
    for (let i = 0; i < 5; i++) {
      await fetch(`${sb.openpix.apiBase}/api/v1/charge`, { method: "POST", headers: { authorization: sb.openpix.appId, "content-type": "application/json" },
        body: JSON.stringify({ correlationID: `list-${i}`, value: 1_000 + i }) });
    }
    sb.control.openpixPay("list-1");
    sb.control.openpixPay("list-3", { value: 5 }); // completed for another value than asked
    const q = `start=${encodeURIComponent(start)}&end=${encodeURIComponent(new Date(Date.now() + 1000).toISOString())}`;
    const all = await op(`/api/v1/charge?${q}&limit=2`);
    expect(all.body.pageInfo).toEqual({ skip: 0, limit: 2, totalCount: 5, hasPreviousPage: false, hasNextPage: true });
    const last = await op(`/api/v1/charge?${q}&limit=2&skip=4`);
    expect(last.body.pageInfo).toMatchObject({ hasPreviousPage: true, hasNextPage: false });
    expect(last.body.charges).toHaveLength(1);
    const done = await op(`/api/v1/charge?${q}&status=COMPLETED`);
    expect(done.body.charges.map((c: Json) => [c.correlationID, c.value]).sort()).toEqual([["list-1", 1_001], ["list-3", 5]]);
    expect(done.body.charges.find((c: Json) => c.correlationID === "list-1").fee).toBe(50);
    expect((await op("/api/v1/charge?status=PAID")).status).toBe(400);
    expect((await op("/api/v1/charge?start=tomorrow")).status).toBe(400);
    const unnotified = sb.control.openpixCreateUnnotifiedCharge({ value: 32_000, correlationID: "never-told" });
    expect(unnotified).toMatchObject({ status: "COMPLETED", value: 32_000 });
    expect((await op("/api/v1/charge/never-told")).body.charge.status).toBe("COMPLETED");
    expect(sb.control.events("openpix").some((e) => JSON.stringify(e.body).includes("never-told"))).toBe(false);
  });
});
