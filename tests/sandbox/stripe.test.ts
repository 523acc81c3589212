// stripe-node against the sandbox: the same client, params and error classes our functions use.
import Stripe from "stripe";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startProviderSandbox, type ProviderSandbox } from "../../local/sandbox/index.ts";

let sb: ProviderSandbox;
let stripe: Stripe;

beforeAll(async () => {
  sb = await startProviderSandbox();
  stripe = new Stripe(sb.stripe.secretKey, { host: sb.stripe.host, port: sb.stripe.port, protocol: "http", maxNetworkRetries: 0 });
});
afterAll(async () => await sb.stop());

const create = (extra: Record<string, unknown> = {}, opts: Stripe.RequestOptions = {}) =>
  stripe.paymentIntents.create({ amount: 45_000, currency: "brl", allowed_payment_method_types: ["card"],
    metadata: { booking_id: "b-1" }, description: "2 nights", ...extra } as Stripe.PaymentIntentCreateParams, opts);

describe("PaymentIntents", () => {
  it("creates one in Stripe's shape and reads it back", async () => {
    const pi = await create();
    expect(pi.id).toMatch(/^pi_/);
    expect(pi.client_secret).toMatch(new RegExp(`^${pi.id}_secret_`));
    expect(pi).toMatchObject({ object: "payment_intent", amount: 45_000, amount_received: 0, currency: "brl",
      status: "requires_payment_method", metadata: { booking_id: "b-1" }, latest_charge: null, last_payment_error: null,
      livemode: false, payment_method_types: ["card"] });
    const again = await stripe.paymentIntents.retrieve(pi.id);
    expect(again).toEqual(pi);
    expect(sb.control.events("stripe").map((e) => e.type)).toContain("payment_intent.created");
  });

  it("expands latest_charge into the Charge after a successful confirm", async () => {
    const pi = await create();
    sb.control.stripeConfirm(pi.id, "succeeded");
    const plain = await stripe.paymentIntents.retrieve(pi.id);
    expect(plain.status).toBe("succeeded");
    expect(plain.amount_received).toBe(45_000);
    expect(typeof plain.latest_charge).toBe("string");
    const expanded = await stripe.paymentIntents.retrieve(pi.id, { expand: ["latest_charge"] });
    const charge = expanded.latest_charge as Stripe.Charge;
    expect(charge).toMatchObject({ id: plain.latest_charge, object: "charge", amount: 45_000, amount_refunded: 0,
      refunded: false, disputed: false, payment_intent: pi.id, status: "succeeded", paid: true });
  });

  it("cancels an open one and refuses to cancel a paid one", async () => {
    const open = await create();
    const canceled = await stripe.paymentIntents.cancel(open.id, { cancellation_reason: "abandoned" });
    expect(canceled).toMatchObject({ status: "canceled", cancellation_reason: "abandoned" });
    expect(canceled.canceled_at).toBeTypeOf("number");
    const paid = await create();
    sb.control.stripeConfirm(paid.id, "succeeded");
    const err = await stripe.paymentIntents.cancel(paid.id).catch((e) => e);
    expect(err).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(err.code).toBe("payment_intent_unexpected_state");
  });

  it("refunds partially then fully, moving the charge and refusing a third refund", async () => {
    const pi = await create();
    sb.control.stripeConfirm(pi.id, "succeeded");
    const r1 = await stripe.refunds.create({ payment_intent: pi.id, amount: 10_000, reason: "requested_by_customer" });
    expect(r1).toMatchObject({ object: "refund", amount: 10_000, payment_intent: pi.id, status: "succeeded", reason: "requested_by_customer" });
    const r2 = await stripe.refunds.create({ payment_intent: pi.id });
    expect(r2.amount).toBe(35_000);
    const charge = (await stripe.paymentIntents.retrieve(pi.id, { expand: ["latest_charge"] })).latest_charge as Stripe.Charge;
    expect(charge).toMatchObject({ amount_refunded: 45_000, refunded: true });
    const err = await stripe.refunds.create({ payment_intent: pi.id }).catch((e) => e);
    expect(err.code).toBe("charge_already_refunded");
    const refunded = sb.control.events("stripe").filter((e) => e.type === "charge.refunded" &&
      ((e.body as Stripe.Event).data.object as { id?: string }).id === charge.id);
    expect(refunded.map((e) => ((e.body as Stripe.Event).data.object as Stripe.Charge).amount_refunded)).toEqual([10_000, 45_000]);
  });

  it("refuses to refund an unpaid PaymentIntent or more than is left", async () => {
    const pi = await create();
    await expect(stripe.refunds.create({ payment_intent: pi.id })).rejects.toThrow(/does not have a successful charge/);
    sb.control.stripeConfirm(pi.id, "succeeded");
    const err = await stripe.refunds.create({ payment_intent: pi.id, amount: 45_001 }).catch((e) => e);
    expect(err.type).toBe("StripeInvalidRequestError");
    expect(err.param).toBe("amount");
  });
});

describe("idempotency", () => {
  it("replays the same response for the same key and params", async () => {
    const a = await create({}, { idempotencyKey: "checkout-r1" });
    const b = await create({}, { idempotencyKey: "checkout-r1" });
    expect(b.id).toBe(a.id);
    expect(b.lastResponse.headers["idempotent-replayed"]).toBe("true");
    expect([...sb.control.events("stripe")].filter((e) => ((e.body as Stripe.Event).data.object as { id?: string }).id === a.id)).toHaveLength(1);
  });

  it("rejects the same key with different params", async () => {
    await create({}, { idempotencyKey: "checkout-r2" });
    const err = await create({ amount: 46_000 }, { idempotencyKey: "checkout-r2" }).catch((e) => e);
    expect(err).toBeInstanceOf(Stripe.errors.StripeIdempotencyError);
    expect(err.statusCode).toBe(400);
  });

  it("lets stripe-node's own retry after an injected 500 land on the same PaymentIntent", async () => {
    const retrying = new Stripe(sb.stripe.secretKey, { host: sb.stripe.host, port: sb.stripe.port, protocol: "http", maxNetworkRetries: 1 });
    const before = sb.control.events("stripe").length;
    sb.control.failApi("stripe", { status: 500, times: 1 });
    const pi = await retrying.paymentIntents.create({ amount: 5_000, currency: "brl" });
    expect(pi.status).toBe("requires_payment_method");
    expect(sb.control.events("stripe").slice(before).map((e) => e.type)).toEqual(["payment_intent.created"]);
  });
});

describe("errors in Stripe's shape", () => {
  it("401 for a wrong key", async () => {
    const bad = new Stripe("sk_test_wrong", { host: sb.stripe.host, port: sb.stripe.port, protocol: "http", maxNetworkRetries: 0 });
    const err = await bad.paymentIntents.create({ amount: 5_000, currency: "brl" }).catch((e) => e);
    expect(err).toBeInstanceOf(Stripe.errors.StripeAuthenticationError);
    expect(err.statusCode).toBe(401);
  });

  it("validates amount and currency like Stripe", async () => {
    const small = await create({ amount: 49 }).catch((e) => e);
    expect([small.statusCode, small.code, small.param]).toEqual([400, "amount_too_small", "amount"]);
    const large = await create({ amount: 100_000_000 }).catch((e) => e);
    expect(large.code).toBe("amount_too_large");
    const noCurrency = await create({ currency: undefined }).catch((e) => e);
    expect([noCurrency.code, noCurrency.param]).toEqual(["parameter_missing", "currency"]);
    const unknown = await create({ bogus: "x" }).catch((e) => e);
    expect(unknown.code).toBe("parameter_unknown");
    expect(await create({ amount: 50 })).toMatchObject({ amount: 50 });
  });

  it("404 resource_missing for an unknown id", async () => {
    const err = await stripe.paymentIntents.retrieve("pi_nope").catch((e) => e);
    expect(err).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect([err.statusCode, err.code]).toEqual([404, "resource_missing"]);
  });

  it("injected 429 and 402 come back as stripe-node's error classes", async () => {
    sb.control.failApi("stripe", { status: 429, times: 1 });
    expect(await create().catch((e) => e)).toBeInstanceOf(Stripe.errors.StripeRateLimitError);
    sb.control.failApi("stripe", { status: 402, code: "card_declined", times: 1 });
    const card = await create().catch((e) => e);
    expect(card).toBeInstanceOf(Stripe.errors.StripeCardError);
    expect(card.code).toBe("card_declined");
    expect(await create()).toMatchObject({ status: "requires_payment_method" });
  });
});

describe("guest actions", () => {
  it("a decline leaves the PaymentIntent open, and a second confirm can still charge it (two tabs)", async () => {
    const pi = await create();
    const declined = sb.control.stripeConfirm(pi.id, "declined", { declineCode: "insufficient_funds" });
    expect(declined).toMatchObject({ status: "requires_payment_method",
      last_payment_error: { type: "card_error", code: "card_declined", decline_code: "insufficient_funds" } });
    const other = await create();
    sb.control.stripeConfirm(other.id, "succeeded");
    expect(sb.control.stripeConfirm(pi.id, "succeeded")).toMatchObject({ status: "succeeded", last_payment_error: null });
    expect(() => sb.control.stripeConfirm(pi.id, "succeeded")).toThrow(/status of succeeded/);
  });

  it("processing settles later either way", async () => {
    const pi = await create();
    expect(sb.control.stripeConfirm(pi.id, "processing")).toMatchObject({ status: "processing" });
    expect((await stripe.paymentIntents.retrieve(pi.id)).status).toBe("processing");
    expect(sb.control.stripeSettle(pi.id, "declined")).toMatchObject({ status: "requires_payment_method" });
    sb.control.stripeConfirm(pi.id, "processing");
    expect(sb.control.stripeSettle(pi.id, "succeeded")).toMatchObject({ status: "succeeded", amount_received: 45_000 });
  });

  it("disputes open and close with Dispute objects", async () => {
    const pi = await create();
    sb.control.stripeConfirm(pi.id, "succeeded");
    const opened = sb.control.stripeDispute(pi.id);
    expect(opened).toMatchObject({ object: "dispute", payment_intent: pi.id, amount: 45_000, status: "needs_response" });
    expect(sb.control.stripeCloseDispute(pi.id, "lost")).toMatchObject({ status: "lost" });
    const types = sb.control.events("stripe").filter((e) => ((e.body as Stripe.Event).data.object as { payment_intent?: string }).payment_intent === pi.id)
      .map((e) => e.type);
    expect(types).toEqual(expect.arrayContaining(["charge.dispute.created", "charge.dispute.closed"]));
  });

  it("a dispute of part of the charge takes that much, at most what was not refunded", async () => {
    const pi = await create();
    sb.control.stripeConfirm(pi.id, "succeeded");
    await stripe.refunds.create({ payment_intent: pi.id, amount: 5_000 });
    expect(() => sb.control.stripeDispute(pi.id, { amount: 40_001 })).toThrow(/1 to 40000/);
    expect(() => sb.control.stripeDispute(pi.id, { amount: 0 })).toThrow(/1 to 40000/);
    const opened = sb.control.stripeDispute(pi.id, { amount: 12_000 });
    expect(opened).toMatchObject({ amount: 12_000, status: "needs_response" });
    const [withdrawal] = (await stripe.disputes.retrieve(opened.id as string)).balance_transactions;
    expect([withdrawal!.amount, withdrawal!.fee]).toEqual([-12_000, 1500]);
  });

  it("refuses to refund what a dispute took back (charge_disputed), refunds the rest of a partial one, and all once a dispute is won", async () => {
    const whole = await create();
    sb.control.stripeConfirm(whole.id, "succeeded");
    const opened = sb.control.stripeDispute(whole.id);
    const err = await stripe.refunds.create({ payment_intent: whole.id }).catch((e) => e);
    expect([err.statusCode, err.code]).toEqual([400, "charge_disputed"]);
    expect(err.message).toContain(opened.id as string);
    const charge = (await stripe.paymentIntents.retrieve(whole.id, { expand: ["latest_charge"] })).latest_charge as Stripe.Charge;
    expect(charge.amount_refunded).toBe(0);
    expect(sb.control.events("stripe").filter((e) => e.type === "charge.refunded" &&
      ((e.body as Stripe.Event).data.object as { id?: string }).id === charge.id)).toEqual([]);
    sb.control.stripeCloseDispute(whole.id, "lost");
    expect((await stripe.refunds.create({ payment_intent: whole.id }).catch((e) => e)).code).toBe("charge_disputed");

    const part = await create();
    sb.control.stripeConfirm(part.id, "succeeded");
    sb.control.stripeDispute(part.id, { amount: 12_000 });
    await expect(stripe.refunds.create({ payment_intent: part.id, amount: 33_001 })).rejects.toThrow(/greater than unrefunded amount/);
    expect((await stripe.refunds.create({ payment_intent: part.id })).amount).toBe(33_000);

    const won = await create();
    sb.control.stripeConfirm(won.id, "succeeded");
    sb.control.stripeDispute(won.id);
    sb.control.stripeCloseDispute(won.id, "won");
    expect((await stripe.refunds.create({ payment_intent: won.id })).amount).toBe(45_000);
  });

  it("lists a PaymentIntent's disputes as Stripe does, as they are now; the charge stays disputed after a win", async () => {
    const pi = await create();
    sb.control.stripeConfirm(pi.id, "succeeded");
    const other = await create();
    sb.control.stripeConfirm(other.id, "succeeded");
    sb.control.stripeDispute(other.id);
    const raw = async () => (await fetch(`http://${sb.stripe.host}:${sb.stripe.port}/v1/disputes?payment_intent=${pi.id}`,
                                         { headers: { authorization: `Bearer ${sb.stripe.secretKey}` } })).json();
    expect(await raw()).toEqual({ object: "list", data: [], has_more: false, url: "/v1/disputes" });
    const opened = sb.control.stripeDispute(pi.id);
    expect(await raw()).toEqual({ object: "list", data: [opened], has_more: false, url: "/v1/disputes" });
    sb.control.stripeCloseDispute(pi.id, "won");
    const listed = await stripe.disputes.list({ payment_intent: pi.id });
    expect(listed.data.map((d) => [d.id, d.status, d.payment_intent])).toEqual([[opened.id, "won", pi.id]]);
    const charge = (await stripe.paymentIntents.retrieve(pi.id, { expand: ["latest_charge"] })).latest_charge as Stripe.Charge;
    expect(charge.disputed).toBe(true);
    expect((await stripe.disputes.list({ charge: charge.id })).data.map((d) => d.id)).toEqual([opened.id]);
  });

  it("seeds 10,000 PaymentIntents (for the bench), each readable through the API", async () => {
    const ids = sb.control.seedStripePaymentIntents(10_000, { status: "succeeded", amount: 30_000, metadata: { seed: "1" } });
    expect(new Set(ids).size).toBe(10_000);
    expect(await stripe.paymentIntents.retrieve(ids[9_999]!)).toMatchObject({ status: "succeeded", amount_received: 30_000 });
  });
});
