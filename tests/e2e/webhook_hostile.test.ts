// Every signed event is recorded, whatever it holds: NUL and control characters, lone surrogates, JSON
// nested 100,000 deep, huge arrays and strings, an id over 255 characters, numbers beyond 2^53. Each is
// answered 2xx (the provider stops retrying), stored sanitized, and dead-lettered (an alert) when what it
// says cannot be applied; no money moves on it. Unsigned, badly signed or stale requests write nothing.
// MercadoPago: ts enforced within 5 minutes (seconds or milliseconds), IPN verified by fetching the
// payment, its documented test notification (404 at the lookup) recorded and answered 200. OpenPIX: both
// event namings, deliveries without `event`, refund events named by endToEndId only. Real shapes from
// tests/fixtures/providers/, signed inside the test; the providers' APIs are fakes answering them.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startE2E, type E2E } from "../helpers/e2e.ts";
import * as f from "../helpers/fixtures.ts";
import { attachGateway } from "../helpers/money.ts";
import {
  fixture, mercadoPagoNotification, mercadoPagoPayment, openPixCompleted, startFakeProviders, stripeEvent, stripeIntent, type FakeProviders,
} from "../helpers/provider_fakes.ts";

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

/** What any delivery could write. */
async function counts() {
  const [c] = await e.db.sql`
    select (select count(*)::int from reserve.processed_webhooks) as webhooks,
           (select count(*)::int from reserve.ledger_transactions) as ledger,
           (select count(*)::int from reserve.reservations) as reservations,
           (select count(*)::int from reserve.money_discrepancies) as discrepancies,
           (select count(*)::int from reserve.refund_requests) as refunds,
           (select coalesce(max(updated_at), 'epoch') from reserve.payments) as payments_changed`;
  return c;
}

async function webhookRow(id: string) {
  const [w] = await e.db.sql`select * from reserve.processed_webhooks where id = ${id}`;
  return w;
}

async function attempt(provider: "stripe" | "mercadopago" | "openpix", attach = true) {
  const { unitId } = await f.unit(e.db.sql, { nights: 6 });
  const [c] = await e.db.sql`
    select * from reserve.begin_checkout(${`guest-${crypto.randomUUID()}`}, ${provider === "stripe" ? "card" : "pix"}, ${provider},
                                         ${unitId}, ${f.isoDate(1)}, ${f.isoDate(3)}, 2)`;
  const paymentId = c.payment_id as string;
  const gatewayId = provider === "stripe" ? `pi_${crypto.randomUUID().replace(/-/g, "")}`
    : provider === "mercadopago" ? String(1_500_000_000 + Math.floor(Math.random() * 100_000_000)) : paymentId;
  if (attach) await attachGateway(e.db.sql, paymentId, gatewayId);
  return { paymentId, intentId: c.booking_intent_id as string, amount: Number(c.amount), gatewayId };
}

const sendStripe = (payload: string, header: string) => e.post("webhook_stripe", payload, { "stripe-signature": header });

/** A signed Stripe event whose body is built by hand (so it can hold what JSON.stringify would not write). */
async function signedStripeRaw(body: string) {
  const Stripe = (await import("stripe")).default;
  return { payload: body, header: await Stripe.webhooks.generateTestHeaderStringAsync({ payload: body, secret: fakes.stripe.webhookSecret }) };
}

describe("signed Stripe events that hold what no database column takes: recorded, sanitized, answered 200", () => {
  it("a NUL and other control characters in a string are stored escaped, and the payment still confirms", async () => {
    const a = await attempt("stripe");
    const pi = stripeIntent({ id: a.gatewayId, paymentId: a.paymentId, amount: a.amount });
    const body = JSON.stringify({ ...fixture("stripe/event"), id: `evt_nul_${crypto.randomUUID()}`, type: "payment_intent.succeeded",
      created: Math.floor(Date.now() / 1000), data: { object: { ...pi, description: "Noite\u0000 em \u001b[31mRio\u0007" } } });
    const { payload, header } = await signedStripeRaw(body);
    const res = await sendStripe(payload, header);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ status: "completed", finalize_outcome: "created" });
    const w = await webhookRow(res.body.webhook_id);
    expect(w.payload.data.object.description).toBe("Noite\\u0000 em \\u001b[31mRio\\u0007");
  });

  it("lone UTF-16 surrogates are stored escaped", async () => {
    const body = `{"id":"evt_sur_${crypto.randomUUID()}","object":"event","type":"customer.created","created":${Math.floor(Date.now() / 1000)},"data":{"object":{"id":"cus_1","name":"\\ud800x\\udfffy"}}}`;
    const { payload, header } = await signedStripeRaw(body);
    const res = await sendStripe(payload, header);
    expect(res.status).toBe(200);
    expect(res.body.status).toBe("ignored");
    expect((await webhookRow(res.body.webhook_id)).payload.data.object.name).toBe("\\ud800x\\udfffy");
  });

  it("JSON nested 100,000 deep is stored cut at a bounded depth", async () => {
    const deep = "[".repeat(100_000) + "]".repeat(100_000);
    const body = `{"id":"evt_deep_${crypto.randomUUID()}","object":"event","type":"customer.updated","created":${Math.floor(Date.now() / 1000)},"data":{"object":{"id":"cus_1","deep":${deep}}}}`;
    const { payload, header } = await signedStripeRaw(body);
    const res = await sendStripe(payload, header);
    expect(res.status).toBe(200);
    expect(res.body.status).toBe("ignored");
    const w = await webhookRow(res.body.webhook_id);
    expect(JSON.stringify(w.payload)).toContain("nested deeper than");
  });

  it("an event id over 255 characters is recorded under a bounded hash of it; its redelivery is a duplicate", async () => {
    const id = `evt_${"x".repeat(400)}`;
    const { payload, header } = await stripeEvent(fakes.stripe.webhookSecret, "customer.created", { id: "cus_1", object: "customer" }, id);
    const first = await sendStripe(payload, header);
    expect(first.status).toBe(200);
    const w = await webhookRow(first.body.webhook_id);
    expect(w.event_id.length).toBeLessThanOrEqual(255);
    expect(w.event_id).toContain("sha256:");
    const again = await sendStripe(payload, header);
    expect(again.body).toMatchObject({ webhook_id: first.body.webhook_id, duplicate: true });
  });

  it("huge arrays and strings are stored cut, saying how much was left out", async () => {
    const object = { id: "cus_1", object: "customer", items: Array.from({ length: 50_000 }, (_, i) => i), note: "y".repeat(200_000) };
    const { payload, header } = await stripeEvent(fakes.stripe.webhookSecret, "customer.updated", object);
    const res = await sendStripe(payload, header);
    expect(res.status).toBe(200);
    const w = await webhookRow(res.body.webhook_id);
    const stored = JSON.stringify(w.payload);
    expect(stored.length).toBeLessThan(64 * 1024);
    expect(stored).toContain("49800 more items left out");
    expect(stored).toContain("more characters]");
  });

  it.each([
    ["beyond 2^53", "9007199254740993"],
    ["negative", "-100"],
    ["fractional", "100.5"],
    ["1e400", "1e400"],
  ])("an amount_received %s: dead-lettered, no money moves, the payment stays pending", async (_what, literal) => {
    const a = await attempt("stripe");
    const pi = stripeIntent({ id: a.gatewayId, paymentId: a.paymentId, amount: a.amount });
    const body = JSON.stringify({ ...fixture("stripe/event"), id: `evt_num_${crypto.randomUUID()}`, type: "payment_intent.succeeded",
      created: Math.floor(Date.now() / 1000), data: { object: { ...pi, amount_received: "__AMOUNT__" } } }).replace('"__AMOUNT__"', literal);
    const { payload, header } = await signedStripeRaw(body);
    const before = await counts();
    const res = await sendStripe(payload, header);
    expect(res.status).toBe(200);
    expect(res.body.status).toBe("dead");
    const after = await counts();
    expect(after).toEqual({ ...before, webhooks: before.webhooks + 1 });
    const [p] = await e.db.sql`select status from reserve.payments where id = ${a.paymentId}`;
    expect(p.status).toBe("pending");
  });

  it("a currency that is not one, or a success that does not say what arrived: dead, nothing moves", async () => {
    for (const o of [{ currency: "bitcoin" }, { amount_received: undefined }]) {
      const a = await attempt("stripe");
      const pi = { ...stripeIntent({ id: a.gatewayId, paymentId: a.paymentId, amount: a.amount }), ...o };
      const { payload, header } = await stripeEvent(fakes.stripe.webhookSecret, "payment_intent.succeeded", pi);
      const res = await sendStripe(payload, header);
      expect(res.status).toBe(200);
      expect(res.body.status).toBe("dead");
      const [p] = await e.db.sql`select status from reserve.payments where id = ${a.paymentId}`;
      expect(p.status).toBe("pending");
    }
  });

  it("a status and a decline code longer than their columns are stored cut within them, and the event applies (not a 500 retried for days)", async () => {
    const a = await attempt("stripe");
    const pi = { ...stripeIntent({ id: a.gatewayId, paymentId: a.paymentId, amount: a.amount, status: "requires_payment_method" }),
                 status: "s".repeat(10_000), last_payment_error: { code: "c".repeat(300), message: "m".repeat(5000) } };
    const { payload, header } = await stripeEvent(fakes.stripe.webhookSecret, "payment_intent.payment_failed", pi);
    const res = await sendStripe(payload, header);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ status: "completed", payment_status: "failed" });
    const [p] = await e.db.sql`select gateway_status, error_code, error_message from reserve.payments where id = ${a.paymentId}`;
    expect(p.gateway_status.length).toBeLessThanOrEqual(255);
    expect(p.gateway_status).toMatch(/^s+…\[\d+ more characters\]$/);
    expect(p.error_code.length).toBeLessThanOrEqual(255);
    expect(p.error_message.length).toBeLessThanOrEqual(2000);
  });

  it.each([
    ["an array nested 5,000 deep", "[".repeat(5000) + "]".repeat(5000)],
    ["an object with a toString key", '{"toString":1,"valueOf":1}'],
  ])("a status that is %s is stored as its bounded JSON, and the payment confirms (not a 500)", async (_what, status) => {
    const a = await attempt("stripe");
    const pi = stripeIntent({ id: a.gatewayId, paymentId: a.paymentId, amount: a.amount });
    const body = JSON.stringify({ ...fixture("stripe/event"), id: `evt_status_${crypto.randomUUID()}`, type: "payment_intent.succeeded",
      created: Math.floor(Date.now() / 1000), data: { object: { ...pi, status: "__STATUS__" } } }).replace('"__STATUS__"', status);
    const { payload, header } = await signedStripeRaw(body);
    const res = await sendStripe(payload, header);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ status: "completed", payment_status: "succeeded" });
    const [p] = await e.db.sql`select gateway_status from reserve.payments where id = ${a.paymentId}`;
    expect(p.gateway_status.length).toBeLessThanOrEqual(255);
  });
});

describe("requests that are not a verified event write nothing", () => {
  it.each([
    ["a signed body that is not JSON", async () => signedStripeRaw('{"id": "evt_1", "type": '), 400, "invalid_json"],
    ["a signed JSON body that is no event (no id)", async () => signedStripeRaw('{"type": "payment_intent.succeeded", "data": {"object": {}}}'), 400, "invalid_event"],
    ["a signed event whose object is not an object", async () => signedStripeRaw('{"id": "evt_1", "type": "x", "data": {"object": "pi_1"}}'), 400, "invalid_event"],
    ["a poisonous body with a forged signature", async () => {
      const { payload } = await signedStripeRaw('{"id": "evt_1", "type": "x\\u0000", "data": {"object": {}}}');
      return { payload, header: `t=${Math.floor(Date.now() / 1000)},v1=${"0".repeat(64)}` };
    }, 400, "invalid_signature"],
    ["a signature header of garbage", async () => ({ payload: "{}", header: "t=abc,v1=%%%,v0=" + "x".repeat(2000) }), 400, "invalid_signature"],
  ])("%s", async (_what, make, status, error) => {
    const before = await counts();
    const { payload, header } = await make();
    const res = await sendStripe(payload, header);
    expect(res.status).toBe(status);
    expect(res.body.error).toBe(error);
    expect(await counts()).toEqual(before);
  });
});

describe("MercadoPago notifications", () => {
  const post = (n: { path: string; body: string; headers: Record<string, string> }) => e.post(n.path, n.body, n.headers);

  it("a real notification shape (the docs' example) confirms a payment after looking it up", async () => {
    const a = await attempt("mercadopago");
    fakes.mercadopago.payments.set(a.gatewayId, mercadoPagoPayment({ id: a.gatewayId, paymentId: a.paymentId, reais: a.amount / 100 }));
    const res = await post(mercadoPagoNotification(fakes.mercadopago.webhookSecret, a.gatewayId));
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ status: "completed", finalize_outcome: "created" });
    // the fee MercadoPago reported is kept
    const [p] = await e.db.sql`select fee_amount::int from reserve.payments where id = ${a.paymentId}`;
    expect(p.fee_amount).toBe(62);
  });

  it("ts in milliseconds is accepted within the window", async () => {
    const a = await attempt("mercadopago");
    fakes.mercadopago.payments.set(a.gatewayId, mercadoPagoPayment({ id: a.gatewayId, paymentId: a.paymentId, reais: a.amount / 100 }));
    const res = await post(mercadoPagoNotification(fakes.mercadopago.webhookSecret, a.gatewayId, { ts: String(Date.now() - 60_000) }));
    expect(res.body.status).toBe("completed");
  });

  it.each([
    ["a ts 30 days old (seconds)", () => String(Math.floor(Date.now() / 1000) - 30 * 86400)],
    ["a ts 30 days old (milliseconds)", () => String(Date.now() - 30 * 86400_000)],
    ["a ts 6 minutes old", () => String(Math.floor(Date.now() / 1000) - 360)],
    ["a ts 10 minutes ahead", () => String(Math.floor(Date.now() / 1000) + 600)],
    ["a ts that is not a number", () => "yesterday"],
  ])("%s is refused 400 and writes nothing, though correctly signed", async (_what, ts) => {
    const before = await counts();
    const res = await post(mercadoPagoNotification(fakes.mercadopago.webhookSecret, "123456789", { ts: ts() }));
    expect(res.status).toBe(400);
    expect(res.body.error).toBe("invalid_signature");
    expect(await counts()).toEqual(before);
  });

  it.each([
    ["a path", "../../v1/users/me"],
    ["NUL", "12\u00003"],
    ["300 characters", "9".repeat(300)],
    ["a space", "123 456"],
  ])("a signed notification whose data.id holds %s is recorded dead and answered 200", async (_what, dataId) => {
    const before = await counts();
    const res = await post(mercadoPagoNotification(fakes.mercadopago.webhookSecret, dataId));
    expect(res.status).toBe(200);
    expect(res.body.status).toBe("dead");
    expect(await counts()).toEqual({ ...before, webhooks: before.webhooks + 1 });
    // no lookup was made for it
    expect(fakes.requests.some((r) => r.includes(encodeURIComponent(dataId)) || r.includes("users"))).toBe(false);
  });

  it("the dashboard's test notification (data.id 123456, which the account cannot read: 404) is recorded ignored, 200, and not retried", async () => {
    const body = JSON.stringify(fixture("mercadopago/webhook_test_notification"));
    const n = mercadoPagoNotification(fakes.mercadopago.webhookSecret, "123456", { body: JSON.parse(body) });
    const res = await post(n);
    expect(res.status).toBe(200);
    expect(res.body.status).toBe("ignored");
    const w = await webhookRow(res.body.webhook_id);
    expect(w.error_message).toContain("not ours");
    expect(w.next_retry_at).toBeNull();
    const [{ n: due }] = await e.db.sql`select count(*)::int as n from reserve.claim_webhooks_to_refetch(1000)`;
    expect(due).toBe(0);
  });

  it("a lookup answer that no payment can hold (an amount beyond 2^53 reais) is dead", async () => {
    const a = await attempt("mercadopago");
    fakes.mercadopago.payments.set(a.gatewayId, { ...mercadoPagoPayment({ id: a.gatewayId, paymentId: a.paymentId, reais: a.amount / 100 }), transaction_amount: 1e300 });
    const res = await post(mercadoPagoNotification(fakes.mercadopago.webhookSecret, a.gatewayId));
    expect(res.status).toBe(200);
    expect(res.body.status).toBe("dead");
  });

  it("a notification of another topic is recorded ignored", async () => {
    const n = mercadoPagoNotification(fakes.mercadopago.webhookSecret, "987654321", { body: { type: "merchant_order", action: "merchant_order.updated", data: { id: "987654321" } } });
    const res = await e.post(n.path.replace("type=payment", "type=merchant_order"), n.body, n.headers);
    expect(res.status).toBe(200);
    expect(res.body.status).toBe("ignored");
  });

  describe("IPN (topic=payment&id=..., unsigned by design)", () => {
    const ipn = (query: string) => e.post(`webhook_pix/mercadopago?${query}`, "", { "content-type": "application/x-www-form-urlencoded" });

    it("about a payment of ours: verified by fetching it with our token, then applied", async () => {
      const a = await attempt("mercadopago");
      fakes.mercadopago.payments.set(a.gatewayId, mercadoPagoPayment({ id: a.gatewayId, paymentId: a.paymentId, reais: a.amount / 100 }));
      const res = await ipn(fixture("mercadopago/ipn_payment").query.replace("123456789", a.gatewayId));
      expect(res.status).toBe(200);
      expect(res.body).toMatchObject({ status: "completed", finalize_outcome: "created" });
      // the same state notified again is one event
      expect((await ipn(`topic=payment&id=${a.gatewayId}`)).body.duplicate).toBe(true);
    });

    it("about ids that are none of ours: 200 ignored, and MercadoPago is never asked (anyone could spend our rate limit)", async () => {
      const before = await counts();
      const asked = fakes.requests.filter((r) => r.includes("/v1/payments/")).length;
      fakes.mercadopago.payments.set("555000111", mercadoPagoPayment({ id: "555000111", paymentId: crypto.randomUUID(), reais: 10 }));
      const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => ipn(`topic=payment&id=${i === 0 ? "555000111" : 555000200 + i}`)));
      expect(answers.map((a) => [a.status, a.body.status])).toEqual(Array.from({ length: 20 }, () => [200, "ignored"]));
      expect(fakes.requests.filter((r) => r.includes("/v1/payments/")).length).toBe(asked);
      expect(await counts()).toEqual(before);
    });

    it.each([
      ["about a payment MercadoPago does not know (404): 200, nothing written", "topic=payment&id=123456789", 200],
      ["with a malformed id: 400, nothing written", "topic=payment&id=1%3B2", 400],
      ["of another topic: 200, nothing written", "topic=merchant_order&id=123", 200],
    ])("%s", async (_what, query, status) => {
      const before = await counts();
      const res = await ipn(query);
      expect(res.status).toBe(status);
      expect(await counts()).toEqual(before);
    });
  });
});

describe("OpenPIX deliveries as OpenPIX sends them", () => {
  const post = (body: string, signature = fakes.openpix.sign(body)) => e.post("webhook_pix/openpix", body, { "x-webhook-signature": signature });

  it.each(["OPENPIX:CHARGE_COMPLETED", "woovi:CHARGE_COMPLETED"])("%s confirms our charge", async (event) => {
    const a = await attempt("openpix");
    const res = await post(JSON.stringify(openPixCompleted({ correlationID: a.gatewayId, value: a.amount, event })));
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ status: "completed", finalize_outcome: "created" });
    const [p] = await e.db.sql`select fee_amount::int, pix_end_to_end_id from reserve.payments where id = ${a.paymentId}`;
    expect(p.fee_amount).toBe(85);
    expect(p.pix_end_to_end_id).toMatch(/^E/);
  });

  it.each([
    ["a delivery without `event` (a detached PIX)", () => fixture("openpix/webhook_pix_without_event")],
    ["the test request sent when a webhook is registered", () => fixture("openpix/webhook_test")],
    ["CHARGE_COMPLETED of a charge that is not ours", () => fixture("openpix/webhook_charge_completed_woovi")],
    ["CHARGE_EXPIRED of a charge that is not ours", () => fixture("openpix/webhook_charge_expired")],
  ])("%s is recorded ignored and answered 200", async (_what, body) => {
    const res = await post(JSON.stringify(body()));
    expect(res.status).toBe(200);
    expect(res.body.status).toBe("ignored");
  });

  it("a refund event for a charge OpenPIX does not know (404 at the lookup) is ignored, not retried", async () => {
    const body = JSON.stringify({ event: "OPENPIX:TRANSACTION_REFUND_RECEIVED", charge: { correlationID: crypto.randomUUID(), value: 1, status: "COMPLETED" } });
    const res = await post(body);
    expect(res.status).toBe(200);
    expect(res.body.status).toBe("ignored");
    expect((await webhookRow(res.body.webhook_id)).next_retry_at).toBeNull();
  });

  it("PIX_TRANSACTION_REFUND_SENT_CONFIRMED, named by endToEndIds only, finds our payment by the endToEndId we stored", async () => {
    const a = await attempt("openpix");
    const paid = openPixCompleted({ correlationID: a.gatewayId, value: a.amount });
    fakes.openpix.charges.set(a.gatewayId, paid.charge);
    expect((await post(JSON.stringify(paid))).body.finalize_outcome).toBe("created");
    // the refund went out (made at OpenPIX's dashboard); its event names only the endToEndIds
    fakes.openpix.refunds.set(a.gatewayId, [{ status: "CONFIRMED", value: 10001, correlationID: crypto.randomUUID(), endToEndId: "D548114172025081421318FbVaF2LTWr" }]);
    const recorded = fixture("openpix/webhook_refund_sent_confirmed");
    const body = JSON.stringify({ ...recorded, originalTransaction: { ...recorded.originalTransaction, endToEndId: paid.pix.endToEndId } });
    const res = await post(body);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ status: "completed", payment_id: a.paymentId, payment_status: "partially_refunded" });
    const [p] = await e.db.sql`select refunded_amount::int from reserve.payments where id = ${a.paymentId}`;
    expect(p.refunded_amount).toBe(10001);
  });

  it("the recorded refund event, whose endToEndIds name no payment of ours, is ignored", async () => {
    const res = await post(JSON.stringify(fixture("openpix/webhook_refund_sent_confirmed")));
    expect(res.status).toBe(200);
    expect(res.body.status).toBe("ignored");
  });

  it.each([
    ["a NUL in the charge's comment is stored escaped", (a: { gatewayId: string; amount: number }) => {
      const b = openPixCompleted({ correlationID: a.gatewayId, value: a.amount });
      return { ...b, charge: { ...b.charge, comment: "a\u0000b" } };
    }, "completed"],
    ["a pix value beyond 2^53 is dead", (a: { gatewayId: string; amount: number }) => {
      const b = openPixCompleted({ correlationID: a.gatewayId, value: a.amount });
      return { ...b, pix: { ...b.pix, value: 2 ** 60 } };
    }, "dead"],
    ["a correlationID of 300 characters names nothing we could have", (a: { gatewayId: string; amount: number }) =>
      openPixCompleted({ correlationID: "c".repeat(300), value: a.amount }), "dead"],
  ])("%s", async (_what, make, status) => {
    const a = await attempt("openpix");
    const res = await post(JSON.stringify(make(a)));
    expect(res.status).toBe(200);
    expect(res.body.status).toBe(status);
  });

  it.each([
    ["signed with another key", (b: string) => Buffer.from("not a signature").toString("base64")],
    ["without a signature", () => ""],
  ])("a delivery %s is refused 400 and writes nothing", async (_what, sig) => {
    const body = JSON.stringify(openPixCompleted({ correlationID: crypto.randomUUID(), value: 100 }));
    const before = await counts();
    const res = await e.post("webhook_pix/openpix", body, { "x-webhook-signature": sig(body) });
    expect(res.status).toBe(400);
    expect(["invalid_signature", "missing_signature"]).toContain(res.body.error);
    expect(await counts()).toEqual(before);
  });

  it("a signed body that is a JSON array is refused 400 (no event) and writes nothing", async () => {
    const before = await counts();
    const res = await post("[1, 2, 3]");
    expect(res.status).toBe(400);
    expect(res.body.error).toBe("invalid_json");
    expect(await counts()).toEqual(before);
  });
});

describe("signed events naming an id no payment can have, or dated outside years 1 to 9999: answered 200, never retried", () => {
  const now = () => Math.floor(Date.now() / 1000);
  const postPix = (body: string) => e.post("webhook_pix/openpix", body, { "x-webhook-signature": fakes.openpix.sign(body) });

  it.each([
    ["a NUL", "pi_\\u0000x"],
    ["a lone surrogate", "pi_\\ud800x"],
  ])("a Stripe PaymentIntent id with %s is dead (an alert), and nothing moves", async (_what, id) => {
    const before = await counts();
    const body = `{"id":"evt_badid_${crypto.randomUUID()}","object":"event","type":"payment_intent.processing","created":${now()},` +
      `"data":{"object":{"id":"${id}","object":"payment_intent","amount":10000,"currency":"brl","status":"processing"}}}`;
    const { payload, header } = await signedStripeRaw(body);
    const res = await sendStripe(payload, header);
    expect(res.status).toBe(200);
    expect(res.body.status).toBe("dead");
    const w = await webhookRow(res.body.webhook_id);
    expect(w.error_message).toMatch(/payment id .* has control characters or lone surrogates/);
    expect(w.next_retry_at).toBeNull();
    const after = await counts();
    expect(after).toMatchObject({ ...before, webhooks: before.webhooks + 1 });
  });

  it.each([
    ["the year 10000", 253402300800],
    ["3e11 seconds", 3e11],
    ["before the year 1", -1e11],
    ["beyond what a Date holds", 1e20],
  ])("a Stripe event created in %s is recorded without a time", async (_what, created) => {
    const a = await attempt("stripe");
    const pi = stripeIntent({ id: a.gatewayId, paymentId: a.paymentId, amount: a.amount });
    const body = JSON.stringify({ id: `evt_time_${crypto.randomUUID()}`, object: "event", type: "payment_intent.succeeded", created,
      data: { object: pi } });
    const { payload, header } = await signedStripeRaw(body);
    const res = await sendStripe(payload, header);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ status: "completed", finalize_outcome: "created" });
    expect((await webhookRow(res.body.webhook_id)).event_created_at).toBeNull();
  });

  it("an old-style dispute (named by its charge) created beyond what a Date holds is looked up and applied, not a 500", async () => {
    const a = await attempt("stripe");
    const chargeId = `ch_${a.gatewayId.slice(3)}`;
    const pi = stripeIntent({ id: a.gatewayId, paymentId: a.paymentId, amount: a.amount, charge: chargeId });
    fakes.stripe.intents.set(a.gatewayId, pi);
    fakes.stripe.charges.set(chargeId, { ...fixture("stripe/charge"), id: chargeId, amount: a.amount, currency: "brl", payment_intent: a.gatewayId });
    const paid = await stripeEvent(fakes.stripe.webhookSecret, "payment_intent.succeeded", pi);
    expect((await sendStripe(paid.payload, paid.header)).body.finalize_outcome).toBe("created");
    const body = JSON.stringify({ id: `evt_dp_${crypto.randomUUID()}`, object: "event", type: "charge.dispute.created", created: 1e20,
      data: { object: { id: `dp_${crypto.randomUUID().slice(0, 8)}`, object: "dispute", charge: chargeId, amount: a.amount,
                        currency: "brl", status: "needs_response" } } });
    const { payload, header } = await signedStripeRaw(body);
    const res = await sendStripe(payload, header);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ status: "completed", payment_status: "disputed" });
  });

  it("an old-style dispute whose charge lookup answers about another charge is dead, and no payment is disputed", async () => {
    const a = await attempt("stripe");
    const b = await attempt("stripe");
    for (const x of [a, b]) {
      const paid = await stripeEvent(fakes.stripe.webhookSecret, "payment_intent.succeeded", stripeIntent({ id: x.gatewayId, paymentId: x.paymentId, amount: x.amount }));
      expect((await sendStripe(paid.payload, paid.header)).body.finalize_outcome).toBe("created");
    }
    const chargeA = `ch_${a.gatewayId.slice(3)}`;
    fakes.stripe.charges.set(chargeA, { ...fixture("stripe/charge"), id: `ch_${b.gatewayId.slice(3)}`, amount: b.amount, currency: "brl", payment_intent: b.gatewayId });
    const body = JSON.stringify({ id: `evt_dpx_${crypto.randomUUID()}`, object: "event", type: "charge.dispute.created", created: now(),
      data: { object: { id: `dp_${crypto.randomUUID().slice(0, 8)}`, object: "dispute", charge: chargeA, amount: a.amount, currency: "brl", status: "needs_response" } } });
    const { payload, header } = await signedStripeRaw(body);
    const res = await sendStripe(payload, header);
    expect(res.status).toBe(200);
    expect(res.body.status).toBe("dead");
    const rows = await e.db.sql`select id, status from reserve.payments where id in (${a.paymentId}, ${b.paymentId})`;
    expect(rows.map((r) => r.status)).toEqual(["succeeded", "succeeded"]);
  });

  it("an OpenPIX CHARGE_COMPLETED whose correlationID holds a NUL is dead, and nothing moves", async () => {
    const before = await counts();
    const body = JSON.stringify(openPixCompleted({ correlationID: `${crypto.randomUUID()}\u0000`, value: 100 }));
    const res = await postPix(body);
    expect(res.status).toBe(200);
    expect(res.body.status).toBe("dead");
    expect(await counts()).toMatchObject({ ...before, webhooks: before.webhooks + 1 });
  });

  it("an OpenPIX refund event naming a charge id no request can ask about is dead at once, not retried", async () => {
    const body = JSON.stringify({ event: "OPENPIX:TRANSACTION_REFUND_RECEIVED",
      charge: { correlationID: `x\u0000${crypto.randomUUID()}`, value: 1, status: "COMPLETED" } });
    const res = await postPix(body);
    expect(res.status).toBe(200);
    expect(res.body.status).toBe("dead");
    const w = await webhookRow(res.body.webhook_id);
    expect(w.attempts).toBe(1);
    expect(w.next_retry_at).toBeNull();
    expect(w.error_message).toMatch(/openpix charge id .* is malformed/);
  });

  it("a signed MercadoPago notification naming a payment id no request can ask about is dead at once, not retried", async () => {
    const n = mercadoPagoNotification(fakes.mercadopago.webhookSecret, "123/../456");
    const res = await e.post(n.path, n.body, n.headers);
    expect(res.status).toBe(200);
    expect(res.body.status).toBe("dead");
    const w = await webhookRow(res.body.webhook_id);
    expect(w.next_retry_at).toBeNull();
    expect(w.error_message).toMatch(/^cannot be applied: /);
  });

  it("an OpenPIX event paid at a time before the year 1 is recorded, not a 500", async () => {
    const a = await attempt("openpix");
    const paid = openPixCompleted({ correlationID: a.gatewayId, value: a.amount });
    const body = JSON.stringify({ ...paid, pix: { ...(paid.pix as object), time: -8.64e15 } });
    const res = await postPix(body);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ status: "completed", finalize_outcome: "created" });
  });
});
