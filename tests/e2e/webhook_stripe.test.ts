// webhook_stripe under real Deno: real Stripe signatures, duplicates, storms, late and out-of-order
// deliveries, and every kind of bad request (4xx, nothing written).
import Stripe from "stripe";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startE2E, until, type E2E } from "../helpers/e2e.ts";
import { isoDate, unit } from "../helpers/fixtures.ts";

let e: E2E;
beforeAll(async () => {
  e = await startE2E();
});
afterAll(async () => {
  await e?.stop();
});

async function cardCheckout() {
  const { unitId } = await unit(e.db.sql);
  const res = await e.checkout({ unit_id: unitId, check_in: isoDate(2), check_out: isoDate(4), guests: 2, method: "card" });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body as { payment_id: string; booking_intent_id: string; gateway_payment_id: string };
}

/** A Stripe event as Stripe would send it, signed with the sandbox's endpoint secret. */
async function signedEvent(type: string, object: Record<string, unknown>, opts: { created?: number; timestamp?: number; secret?: string } = {}) {
  const created = opts.created ?? Math.floor(Date.now() / 1000);
  const payload = JSON.stringify({
    id: `evt_test_${Math.random().toString(36).slice(2)}`, object: "event", api_version: "2026-07-29.dahlia", created,
    data: { object }, livemode: false, pending_webhooks: 1, request: { id: null, idempotency_key: null }, type,
  });
  const header = await Stripe.webhooks.generateTestHeaderStringAsync({
    payload, secret: opts.secret ?? e.sandbox.stripe.webhookSecret, timestamp: opts.timestamp,
  });
  return { payload, header };
}

const send = (payload: string, header: string, contentType = "application/json") =>
  e.post("webhook_stripe", payload, { "stripe-signature": header, "content-type": contentType });

const paymentIntent = (id: string, paymentId: string, status: string, extra: Record<string, unknown> = {}) =>
  ({ id, object: "payment_intent", amount: 100000, amount_received: status === "succeeded" ? 100000 : 0, currency: "brl", status,
     metadata: { payment_id: paymentId }, ...extra });

async function counts() {
  const [c] = await e.db.sql`select (select count(*) from reserve.processed_webhooks)::int as webhooks,
                                    (select count(*) from reserve.audit_logs)::int as audit,
                                    (select count(*) from reserve.reservations)::int as reservations,
                                    (select count(*) from reserve.ledger_transactions)::int as ledger`;
  return c;
}

describe("webhook_stripe: deliveries", () => {
  it("a storm of 20 concurrent deliveries of one succeeded event makes one reservation and one receipt", async () => {
    const c = await cardCheckout();
    const { payload, header } = await signedEvent("payment_intent.succeeded", paymentIntent(c.gateway_payment_id, c.payment_id, "succeeded"));
    const answers = await Promise.all(Array.from({ length: 20 }, () => send(payload, header)));
    expect(answers.map((a) => a.status)).toEqual(Array(20).fill(200));
    expect(answers.filter((a) => a.body.duplicate === false)).toHaveLength(1);
    const [r] = await e.db.sql`select count(*)::int as n from reserve.reservations where booking_intent_id = ${c.booking_intent_id}`;
    expect(r.n).toBe(1);
    const [l] = await e.db.sql`select count(*)::int as n from reserve.ledger_transactions where payment_id = ${c.payment_id}`;
    expect(l.n).toBe(1);
    const [w] = await e.db.sql`select status, attempts from reserve.processed_webhooks where payment_id = ${c.payment_id} and event_type = 'payment_intent.succeeded'`;
    expect(w.status).toBe("completed");
  });

  it("a failed event delivered after succeeded leaves the payment succeeded", async () => {
    const c = await cardCheckout();
    const t = Math.floor(Date.now() / 1000);
    const ok = await signedEvent("payment_intent.succeeded", paymentIntent(c.gateway_payment_id, c.payment_id, "succeeded"), { created: t });
    const late = await signedEvent("payment_intent.payment_failed", paymentIntent(c.gateway_payment_id, c.payment_id, "requires_payment_method", {
      last_payment_error: { type: "card_error", code: "card_declined", decline_code: "generic_decline", message: "Your card was declined." },
    }), { created: t - 30 });
    expect((await send(ok.payload, ok.header)).status).toBe(200);
    const res = await send(late.payload, late.header);
    expect(res.status).toBe(200);
    expect(res.body.outcome).toBe("stale");
    const [p] = await e.db.sql`select status from reserve.payments where id = ${c.payment_id}`;
    expect(p.status).toBe("succeeded");
  });

  it("events reordered by the provider end in the state of the newest", async () => {
    const c = await cardCheckout();
    e.sandbox.control.setWebhookMode("stripe", "reorder");
    try {
      e.sandbox.control.stripeConfirm(c.gateway_payment_id, "succeeded");
      await e.sandbox.control.flush();
    } finally {
      e.sandbox.control.setWebhookMode("stripe", "deliver");
    }
    const r = await until(async () => (await e.db.sql`select * from reserve.reservations where booking_intent_id = ${c.booking_intent_id}`)[0], "reservation");
    expect(r.payment_status).toBe("paid");
    const [p] = await e.db.sql`select status from reserve.payments where id = ${c.payment_id}`;
    expect(p.status).toBe("succeeded");
  });

  it("duplicated deliveries from the provider are answered 200 and applied once", async () => {
    const c = await cardCheckout();
    const before = e.sandbox.control.deliveries().length;
    e.sandbox.control.setWebhookMode("stripe", { duplicate: 3 });
    try {
      e.sandbox.control.stripeConfirm(c.gateway_payment_id, "succeeded");
      await until(async () => e.sandbox.control.deliveries().length - before >= 6, "duplicated deliveries");
    } finally {
      e.sandbox.control.setWebhookMode("stripe", "deliver");
    }
    await until(async () => (await e.db.sql`select 1 from reserve.reservations where booking_intent_id = ${c.booking_intent_id}`)[0], "reservation");
    const ds = e.sandbox.control.deliveries().slice(before);
    expect(ds.every((d) => d.status === 200)).toBe(true);
    const [w] = await e.db.sql`select count(*)::int as n, sum(attempts)::int as attempts from reserve.processed_webhooks
                               where payment_id = ${c.payment_id} and event_type = 'payment_intent.succeeded'`;
    expect(w.n).toBe(1);
  });

  it("an unknown event type is 200 and recorded as ignored, so Stripe does not retry it for days", async () => {
    const { payload, header } = await signedEvent("customer.created", { id: "cus_1", object: "customer" });
    const res = await send(payload, header);
    expect(res.status).toBe(200);
    expect(res.body.status).toBe("ignored");
  });

  it("a processing error is 500 with the event kept as failed; the redelivery processes it", async () => {
    const c = await cardCheckout();
    // the runbook's "database constraint violation": finalize cannot insert the reservation
    await e.db.sql.unsafe(`
      create function public.refuse_reservation() returns trigger language plpgsql as $$
      begin raise exception 'injected: reservations are refused'; end $$;
      create trigger _000_refuse before insert on reserve.reservations for each row execute function public.refuse_reservation();`);
    const { payload, header } = await signedEvent("payment_intent.succeeded", paymentIntent(c.gateway_payment_id, c.payment_id, "succeeded"));
    try {
      const res = await send(payload, header);
      expect(res.status).toBe(500);
      const [row] = await e.db.sql`select status, error_message, attempts from reserve.processed_webhooks
                                   where payment_id = ${c.payment_id} and event_type = 'payment_intent.succeeded'`;
      expect(row.status).toBe("failed");
      expect(row.error_message).toContain("injected");
      const [p] = await e.db.sql`select status from reserve.payments where id = ${c.payment_id}`;
      expect(p.status).toBe("pending"); // the apply was undone with the failure
    } finally {
      await e.db.sql.unsafe(`drop trigger _000_refuse on reserve.reservations; drop function public.refuse_reservation();`);
    }
    const again = await send(payload, header);
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ status: "completed", duplicate: false, finalize_outcome: "created" });
    const [row] = await e.db.sql`select status, attempts from reserve.processed_webhooks where payment_id = ${c.payment_id} and event_type = 'payment_intent.succeeded'`;
    expect(row).toMatchObject({ status: "completed", attempts: 2 });
  });

  it("a dispute ahead of its payment's success is 503 with Retry-After, kept, and applied on the redelivery after the success", async () => {
    const c = await cardCheckout();
    const dispute = { id: `dp_${Math.random().toString(36).slice(2)}`, object: "dispute", amount: 100000, currency: "brl",
                      status: "needs_response", payment_intent: c.gateway_payment_id };
    const early = await signedEvent("charge.dispute.created", dispute);
    const first = await send(early.payload, early.header);
    expect(first.status, JSON.stringify(first.body)).toBe(503);
    expect(first.headers.get("retry-after")).toBe("60");
    expect(first.body).toMatchObject({ error: "waiting_for_payment", status: "failed", payment_id: c.payment_id, payment_status: "pending" });
    const [kept] = await e.db.sql`select status, attempts from reserve.processed_webhooks where payment_id = ${c.payment_id}
                                  and event_type = 'charge.dispute.created'`;
    expect(kept).toMatchObject({ status: "failed", attempts: 1 });

    const paid = await signedEvent("payment_intent.succeeded", paymentIntent(c.gateway_payment_id, c.payment_id, "succeeded"));
    expect((await send(paid.payload, paid.header)).status).toBe(200);
    const again = await send(early.payload, early.header);
    expect(again.status, JSON.stringify(again.body)).toBe(200);
    expect(again.body).toMatchObject({ status: "completed", payment_status: "disputed" });
  });

  it("a redelivery of an event already handled is answered from its key, without asking Stripe again", async () => {
    const c = await cardCheckout();
    e.sandbox.control.stripeConfirm(c.gateway_payment_id, "succeeded");
    await until(async () => (await e.db.sql`select 1 from reserve.reservations where booking_intent_id = ${c.booking_intent_id}`)[0], "reservation");
    const pi = e.sandbox.control.payment("stripe", c.gateway_payment_id) as { latest_charge: string | { id: string } };
    const charge = typeof pi.latest_charge === "string" ? pi.latest_charge : pi.latest_charge.id;
    // an older dispute names only its charge: the function asks Stripe which PaymentIntent it belongs to
    const { payload, header } = await signedEvent("charge.dispute.closed",
      { id: `dp_${Math.random().toString(36).slice(2)}`, object: "dispute", amount: 100000, currency: "brl", status: "won", charge });
    const first = await send(payload, header);
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    expect(first.body).toMatchObject({ status: "completed", duplicate: false, payment_id: c.payment_id });
    const before = await counts();
    // the next call to Stripe's API fails, so whether the redelivery asked Stripe shows in that failure
    // still waiting afterwards (the answer alone would not tell: a duplicate was 200 either way)
    e.sandbox.control.failApi("stripe", { status: 503, times: 1 });
    const again = await send(payload, header);
    expect(again.status, JSON.stringify(again.body)).toBe(200);
    expect(again.body).toMatchObject({ webhook_id: first.body.webhook_id, status: "completed", duplicate: true, outcome: "duplicate",
                                       payment_id: c.payment_id, payment_status: "succeeded" });
    expect(await counts()).toEqual(before);
    // the injected failure is still there for the next caller: the redelivery made no API call
    const direct = await fetch(`http://${e.sandbox.stripe.host}:${e.sandbox.stripe.port}/v1/charges/${charge}`,
                               { headers: { authorization: `Bearer ${e.sandbox.stripe.secretKey}` } });
    expect(direct.status).toBe(503);
    await direct.arrayBuffer();
  });

  it("refunds and a lost dispute reach the payment and the reservation through Stripe's events", async () => {
    const c = await cardCheckout();
    e.sandbox.control.stripeConfirm(c.gateway_payment_id, "succeeded");
    await until(async () => (await e.db.sql`select 1 from reserve.reservations where booking_intent_id = ${c.booking_intent_id}`)[0], "reservation");
    const stripe = new Stripe(e.sandbox.stripe.secretKey, { host: e.sandbox.stripe.host, port: e.sandbox.stripe.port, protocol: "http" });
    await stripe.refunds.create({ payment_intent: c.gateway_payment_id, amount: 30000 });
    await until(async () => (await e.db.sql`select 1 from reserve.payments where id = ${c.payment_id} and status = 'partially_refunded' and refunded_amount = 30000`)[0], "partial refund");
    e.sandbox.control.stripeDispute(c.gateway_payment_id);
    await until(async () => (await e.db.sql`select 1 from reserve.payments where id = ${c.payment_id} and status = 'disputed'`)[0], "dispute");
    e.sandbox.control.stripeCloseDispute(c.gateway_payment_id, "lost");
    await until(async () => (await e.db.sql`select 1 from reserve.payments where id = ${c.payment_id} and status = 'refunded'`)[0], "chargeback");
    const kinds = await e.db.sql`select kind from reserve.ledger_transactions where payment_id = ${c.payment_id} order by posted_at`;
    expect(kinds.map((k) => k.kind)).toEqual(["payment", "refund", "chargeback"]);
    const [bad] = await e.db.sql`select count(*)::int as n from reserve.find_ledger_imbalances(current_date - 1)`;
    expect(bad.n).toBe(0);
  });
});

describe("webhook_stripe: bad requests are 4xx and write nothing", () => {
  it.each([
    ["an invalid signature", async () => {
      const { payload } = await signedEvent("payment_intent.succeeded", paymentIntent("pi_x", "00000000-0000-0000-0000-000000000000", "succeeded"));
      const forged = await signedEvent("payment_intent.succeeded", {}, { secret: "whsec_not_ours" });
      return send(payload, forged.header);
    }, 400, "invalid_signature"],
    ["a missing signature", async () => e.post("webhook_stripe", "{}"), 400, "missing_signature"],
    ["a timestamp older than 300 s", async () => {
      const old = Math.floor(Date.now() / 1000) - 301;
      const { payload, header } = await signedEvent("payment_intent.succeeded", paymentIntent("pi_x", "00000000-0000-0000-0000-000000000000", "succeeded"), { timestamp: old });
      return send(payload, header);
    }, 400, "invalid_signature"],
    ["malformed JSON (correctly signed)", async () => {
      const payload = '{"id": "evt_1", "type": ';
      const header = await Stripe.webhooks.generateTestHeaderStringAsync({ payload, secret: e.sandbox.stripe.webhookSecret });
      return send(payload, header);
    }, 400, "invalid_json"],
    ["a wrong content type", async () => {
      const { payload, header } = await signedEvent("payment_intent.succeeded", {});
      return send(payload, header, "text/plain");
    }, 415, "unsupported_media_type"],
    ["a 2 MB body", async () => {
      const payload = JSON.stringify({ pad: "x".repeat(2 * 1024 * 1024) });
      const header = await Stripe.webhooks.generateTestHeaderStringAsync({ payload, secret: e.sandbox.stripe.webhookSecret });
      return send(payload, header);
    }, 413, "payload_too_large"],
  ])("%s", async (_what, call, status, error) => {
    const before = await counts();
    const res = await (call as () => Promise<{ status: number; body: any }>)();
    expect(res.status).toBe(status);
    expect(res.body.error).toBe(error);
    expect(await counts()).toEqual(before);
  });

  it("GET is 405", async () => {
    const res = await fetch(e.url("webhook_stripe"));
    expect(res.status).toBe(405);
    expect((await res.json()).error).toBe("method_not_allowed");
  });
});
