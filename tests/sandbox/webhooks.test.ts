// Webhooks as a receiver sees them: verified signatures for all three providers, and every failure mode.
import Stripe from "stripe";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startProviderSandbox, type ProviderSandbox } from "../../local/sandbox/index.ts";
import { startReceiver, type Receiver } from "./receiver.ts";

let sb: ProviderSandbox;
let rx: Receiver;
let stripe: Stripe;

beforeAll(async () => {
  rx = await startReceiver(() => sb);
  sb = await startProviderSandbox({ stripeWebhookUrl: `${rx.url}/stripe`, openpixWebhookUrl: `${rx.url}/openpix`,
    retry: { attempts: 2, baseMs: 20 } });
  stripe = new Stripe(sb.stripe.secretKey, { host: sb.stripe.host, port: sb.stripe.port, protocol: "http", maxNetworkRetries: 0 });
});
afterEach(async () => {
  sb.control.setWebhookMode("all", "deliver");
  await sb.control.flush();
});
afterAll(async () => {
  await sb.stop();
  await rx.close();
});

/** Waits until `n` more deliveries than `before` are recorded and returns just those. */
async function next(before: number, n: number) {
  return (await sb.control.waitForDeliveries(before + n, 5_000)).slice(before);
}

const newIntent = () => stripe.paymentIntents.create({ amount: 20_000, currency: "brl", metadata: { booking_id: "b-9" } });

async function mpPayment(notificationPath = "/mp?source=sandbox") {
  const res = await fetch(`${sb.mercadopago.apiBase}/v1/payments`, {
    method: "POST",
    headers: { authorization: `Bearer ${sb.mercadopago.accessToken}`, "content-type": "application/json",
      "x-idempotency-key": crypto.randomUUID() },
    body: JSON.stringify({ transaction_amount: 150.5, description: "Studio", payment_method_id: "pix",
      payer: { email: "guest@example.com" }, external_reference: "b-10", notification_url: `${rx.url}${notificationPath}` }),
  });
  expect(res.status).toBe(201);
  return (await res.json()) as { id: number };
}

describe("signatures", () => {
  it("Stripe events verify with constructEventAsync and carry the Event envelope", async () => {
    const before = sb.control.deliveries().length;
    const pi = await newIntent();
    sb.control.stripeConfirm(pi.id, "succeeded");
    const got = await next(before, 3);
    expect(got.map((d) => [d.type, d.status])).toEqual(expect.arrayContaining([
      ["payment_intent.created", 200], ["charge.succeeded", 200], ["payment_intent.succeeded", 200]]));
    const succeeded = rx.received.find((r) => r.body.type === "payment_intent.succeeded" &&
      (r.body.data as { object: { id: string } }).object.id === pi.id)!;
    expect(succeeded.verified).toBe(true);
    expect(succeeded.headers["stripe-signature"]).toMatch(/^t=\d+,v1=[0-9a-f]{64}$/);
    expect(succeeded.body).toMatchObject({ object: "event", api_version: Stripe.API_VERSION, livemode: false,
      data: { object: { id: pi.id, status: "succeeded", amount_received: 20_000 } } });
    expect(succeeded.body.id).toMatch(/^evt_/);
  });

  it("MercadoPago notifications append data.id and type to the notification_url and verify with the HMAC", async () => {
    const before = sb.control.deliveries().length;
    const p = await mpPayment();
    sb.control.mercadopagoPay(p.id);
    await next(before, 2);
    const mine = rx.received.filter((r) => r.query.get("data.id") === String(p.id));
    expect(mine.map((r) => r.body.action)).toEqual(["payment.created", "payment.updated"]);
    for (const r of mine) {
      expect(r.verified).toBe(true);
      expect(r.query.get("source")).toBe("sandbox");
      expect(r.query.get("type")).toBe("payment");
      expect(r.body).toMatchObject({ api_version: "v1", type: "payment", live_mode: false, data: { id: String(p.id) } });
      expect(r.headers["x-signature"]).toMatch(/^ts=\d+,v1=[0-9a-f]{64}$/);
    }
  });

  it("OpenPIX webhooks verify with the published public key", async () => {
    const before = sb.control.deliveries().length;
    const res = await fetch(`${sb.openpix.apiBase}/api/v1/charge`, {
      method: "POST", headers: { authorization: sb.openpix.appId, "content-type": "application/json" },
      body: JSON.stringify({ correlationID: "b-11", value: 30_000 }),
    });
    expect(res.status).toBe(200);
    sb.control.openpixPay("b-11");
    await next(before, 1);
    const r = rx.received.find((x) => (x.body.charge as { correlationID?: string } | undefined)?.correlationID === "b-11")!;
    expect(r.verified).toBe(true);
    expect(r.body).toMatchObject({ event: "OPENPIX:CHARGE_COMPLETED", charge: { status: "COMPLETED", value: 30_000 },
      pix: { value: 30_000 } });
    expect((r.body.pix as { endToEndId: string }).endToEndId).toMatch(/^E/);
  });
});

describe("failure modes", () => {
  it("drop records the event but never sends it; redeliver sends it like a dashboard resend", async () => {
    sb.control.setWebhookMode("stripe", "drop");
    const before = sb.control.deliveries().length;
    const sent = rx.received.length;
    const pi = await newIntent();
    const [dropped] = await next(before, 1);
    expect(dropped).toMatchObject({ status: "dropped", type: "payment_intent.created" });
    expect(rx.received.length).toBe(sent);
    const resent = await sb.control.redeliver(dropped!.eventId);
    expect(resent).toMatchObject({ status: 200, attempt: 2 });
    expect(rx.received.at(-1)!.body.id).toBe(dropped!.eventId);
    expect((rx.received.at(-1)!.body.data as { object: { id: string } }).object.id).toBe(pi.id);
  });

  it("delayMs sends late", async () => {
    sb.control.setWebhookMode("stripe", { delayMs: 300 });
    const before = sb.control.deliveries().length;
    const t0 = Date.now();
    await newIntent();
    await next(before, 1);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
  });

  it("duplicate sends each event n times, all validly signed", async () => {
    sb.control.setWebhookMode("stripe", { duplicate: 3 });
    const before = sb.control.deliveries().length;
    await newIntent();
    const got = await next(before, 3);
    expect(new Set(got.map((d) => d.eventId)).size).toBe(1);
    expect(got.every((d) => d.status === 200)).toBe(true);
  });

  it("reorder holds events until flush, then delivers newest first", async () => {
    sb.control.setWebhookMode("stripe", "reorder");
    const before = sb.control.deliveries().length;
    const pi = await newIntent();
    sb.control.stripeConfirm(pi.id, "succeeded");
    await new Promise((r) => setTimeout(r, 100));
    expect(sb.control.deliveries().length).toBe(before);
    await sb.control.flush();
    expect(sb.control.deliveries().slice(before).map((d) => d.type))
      .toEqual(["payment_intent.succeeded", "charge.succeeded", "payment_intent.created"]);
  });

  it("wrong_secret signs with another secret, so a correct receiver rejects every attempt and retries run out", async () => {
    sb.control.setWebhookMode("all", "wrong_secret");
    const before = sb.control.deliveries().length;
    const pi = await newIntent();
    const got = await next(before, 3);
    expect(got.map((d) => [d.status, d.attempt])).toEqual([[400, 1], [400, 2], [400, 3]]);
    const last = rx.received.at(-1)!;
    expect((last.body.data as { object: { id: string } }).object.id).toBe(pi.id);
    expect(last.verified).toBe(false);
  });

  it("non-2xx answers are redelivered with backoff until accepted", async () => {
    rx.answers.push(500, 503);
    const before = sb.control.deliveries().length;
    await newIntent();
    const got = await next(before, 3);
    expect(got.map((d) => [d.status, d.attempt])).toEqual([[500, 1], [503, 2], [200, 3]]);
  });

  it("an unreachable endpoint is recorded as error", async () => {
    sb.control.setWebhookUrl("stripe", "http://127.0.0.1:9/unreachable");
    try {
      const before = sb.control.deliveries().length;
      await newIntent();
      const got = await next(before, 3);
      expect(got.every((d) => d.status === "error")).toBe(true);
    } finally {
      sb.control.setWebhookUrl("stripe", `${rx.url}/stripe`);
    }
  });

  it("timeoutApi hangs the next call; the work still happens, as at a real provider", async () => {
    sb.control.timeoutApi("stripe", { ms: 800, times: 1 });
    const impatient = new Stripe(sb.stripe.secretKey, { host: sb.stripe.host, port: sb.stripe.port, protocol: "http",
      maxNetworkRetries: 0, timeout: 200 });
    const before = sb.control.events("stripe").length;
    const err = await impatient.paymentIntents.create({ amount: 7_000, currency: "brl" }, { idempotencyKey: "slow-1" }).catch((e) => e);
    expect(err).toBeInstanceOf(Stripe.errors.StripeConnectionError);
    await new Promise((r) => setTimeout(r, 900));
    const created = sb.control.events("stripe").slice(before).filter((e) => e.type === "payment_intent.created");
    expect(created).toHaveLength(1);
    const retried = await stripe.paymentIntents.create({ amount: 7_000, currency: "brl" }, { idempotencyKey: "slow-1" });
    expect(retried.id).toBe(((created[0]!.body as Stripe.Event).data.object as { id?: string }).id);
  });

  it("failApi answers MercadoPago and OpenPIX calls with their own error shapes", async () => {
    sb.control.failApi("all", { status: 503, times: 1 });
    const mp = await fetch(`${sb.mercadopago.apiBase}/v1/payments/1`, { headers: { authorization: `Bearer ${sb.mercadopago.accessToken}` } });
    expect(mp.status).toBe(503);
    expect(await mp.json()).toMatchObject({ status: 503, error: expect.any(String), message: expect.any(String), cause: [] });
    const op = await fetch(`${sb.openpix.apiBase}/api/v1/charge/x`, { headers: { authorization: sb.openpix.appId } });
    expect(op.status).toBe(503);
    expect(await op.json()).toEqual({ error: expect.any(String) });
    const stripeErr = await newIntent().catch((e) => e);
    expect(stripeErr.statusCode).toBe(503);
  });
});
