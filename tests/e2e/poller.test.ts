// poll_payment_status under real Deno: the runbook's lost-webhook failures recovered by polling, PIX
// expiry, provider errors, the cron secret and the heartbeat.
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

async function checkout(method: "card" | "pix", provider?: string) {
  const { unitId } = await unit(e.db.sql);
  const res = await e.checkout({
    unit_id: unitId, check_in: isoDate(2), check_out: isoDate(4), guests: 2, method, provider, guest_email: "g@example.com",
  });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body as { payment_id: string; booking_intent_id: string; gateway_payment_id: string };
}

const statusOf = async (id: string) => (await e.db.sql`select status from reserve.payments where id = ${id}`)[0].status as string;

describe("poll_payment_status", () => {
  it("webhook down: payments paid at Stripe stay pending until the poller confirms them", async () => {
    const a = await checkout("card");
    const b = await checkout("card");
    await e.sandbox.control.flush();
    e.sandbox.control.setWebhookMode("stripe", "drop");
    try {
      e.sandbox.control.stripeConfirm(a.gateway_payment_id, "succeeded");
      e.sandbox.control.stripeConfirm(b.gateway_payment_id, "declined");
      expect(await statusOf(a.payment_id)).toBe("pending");
      const run = await e.poll();
      expect(run.status).toBe(200);
      expect(run.body).toMatchObject({ ok: true, finalized: 1 });
      expect(run.body.claimed).toBeGreaterThanOrEqual(2);
    } finally {
      e.sandbox.control.setWebhookMode("stripe", "deliver");
    }
    expect(await statusOf(a.payment_id)).toBe("succeeded");
    expect(await statusOf(b.payment_id)).toBe("failed");
    const [r] = await e.db.sql`select confirmation_code from reserve.reservations where booking_intent_id = ${a.booking_intent_id}`;
    expect(r.confirmation_code).toMatch(/^RES-/);
    const [poll] = await e.db.sql`select * from reserve.payment_polls where payment_id = ${a.payment_id}`;
    expect(poll).toBeUndefined(); // out of flight, off the schedule
  });

  it("a webhook delayed past the poller's confirmation is answered 200 and changes nothing", async () => {
    const c = await checkout("card");
    await e.sandbox.control.flush();
    const seen = e.sandbox.control.deliveries().length;
    e.sandbox.control.setWebhookMode("stripe", { delayMs: 1500 });
    try {
      e.sandbox.control.stripeConfirm(c.gateway_payment_id, "succeeded");
      const run = await e.poll({}, [c.payment_id]);
      expect(run.body.finalized).toBe(1);
      await e.sandbox.control.flush();
    } finally {
      e.sandbox.control.setWebhookMode("stripe", "deliver");
    }
    const late = e.sandbox.control.deliveries().slice(seen).filter((d) => d.type === "payment_intent.succeeded");
    expect(late.map((d) => d.status)).toEqual([200]);
    const [w] = await e.db.sql`select status, error_message from reserve.processed_webhooks
                               where payment_id = ${c.payment_id} and event_type = 'payment_intent.succeeded'`;
    expect(w.status).toBe("completed");
    const [r] = await e.db.sql`select count(*)::int as n from reserve.reservations where booking_intent_id = ${c.booking_intent_id}`;
    expect(r.n).toBe(1);
  });

  it("PIX paid but its webhook lost: confirmed by polling (MercadoPago and OpenPIX)", async () => {
    const mp = await checkout("pix", "mercadopago");
    const op = await checkout("pix", "openpix");
    await e.sandbox.control.flush();
    e.sandbox.control.setWebhookMode("all", "drop");
    try {
      e.sandbox.control.mercadopagoPay(mp.gateway_payment_id);
      e.sandbox.control.openpixPay(op.gateway_payment_id);
      await e.poll();
    } finally {
      e.sandbox.control.setWebhookMode("all", "deliver");
    }
    expect(await statusOf(mp.payment_id)).toBe("succeeded");
    expect(await statusOf(op.payment_id)).toBe("succeeded");
    const rs = await e.db.sql`select count(*)::int as n from reserve.reservations where booking_intent_id in (${mp.booking_intent_id}, ${op.booking_intent_id})`;
    expect(rs[0].n).toBe(2);
  });

  it("a PIX still unpaid past its expiry and grace is expired by the last check, and its nights released", async () => {
    const c = await checkout("pix", "mercadopago");
    await e.db.sql`update reserve.payments set expires_at = now() - interval '6 minutes' where id = ${c.payment_id}`;
    await e.poll();
    expect(await statusOf(c.payment_id)).toBe("expired");
    const [h] = await e.db.sql`select count(*)::int as n from reserve.booking_locks where booking_intent_id = ${c.booking_intent_id} and status = 'held'`;
    expect(h.n).toBe(0);
    // a payment made after all that is still money in: finalize re-holds the free nights
    e.sandbox.control.mercadopagoPay(c.gateway_payment_id, { afterExpiry: true });
    await until(async () => (await e.db.sql`select 1 from reserve.reservations where booking_intent_id = ${c.booking_intent_id}`)[0], "reservation");
  });

  it("a provider that fails is counted, the payment stays in flight and is polled again with backoff", async () => {
    const c = await checkout("card");
    await e.sandbox.control.flush();
    // our Stripe client retries a 500 once with the same idempotency key: two failures fail the poll
    e.sandbox.control.failApi("stripe", { status: 500, times: 2 });
    const run = await e.poll({}, [c.payment_id]);
    expect(run.status).toBe(200);
    expect(run.body).toMatchObject({ claimed: 1, errors: 1 });
    expect(await statusOf(c.payment_id)).toBe("pending");
    const [p] = await e.db.sql`select attempts, next_poll_at > now() as later, last_result from reserve.payment_polls where payment_id = ${c.payment_id}`;
    expect(p.later).toBe(true);
    expect(p.last_result).toMatch(/^error: /);
  });

  it("double charge from two tabs: one reservation, the second payment flagged for refund", async () => {
    const first = await checkout("card");
    e.sandbox.control.stripeConfirm(first.gateway_payment_id, "declined");
    await until(async () => (await statusOf(first.payment_id)) === "failed", "first attempt failed");
    const [owner] = await e.db.sql`select client_id from reserve.booking_intents where id = ${first.booking_intent_id}`;
    const retry = await e.post("checkout", { booking_intent_id: first.booking_intent_id, method: "card" }, {
      authorization: `Bearer ${e.userToken(owner.client_id)}`,
    });
    expect(retry.status, JSON.stringify(retry.body)).toBe(201);
    expect(retry.body.attempt).toBe(2);
    e.sandbox.control.stripeConfirm(retry.body.gateway_payment_id, "succeeded");
    await until(async () => (await statusOf(retry.body.payment_id)) === "succeeded", "second attempt paid");
    // the first tab was still open: the guest pays there too
    e.sandbox.control.stripeConfirm(first.gateway_payment_id, "succeeded");
    await until(async () => (await e.db.sql`select 1 from reserve.payments where id = ${first.payment_id} and duplicate_of is not null`)[0], "duplicate flagged");
    const [r] = await e.db.sql`select count(*)::int as n from reserve.reservations where booking_intent_id = ${first.booking_intent_id}`;
    expect(r.n).toBe(1);
    const [owed] = await e.db.sql`select reserve.payment_ledger_balance(${first.payment_id}, array['refunds_payable']) as b`;
    expect(Math.abs(Number(owed.b))).toBe(100000);
  });

  it("refuses a caller without the cron secret and leaves a heartbeat per run", async () => {
    const bad = await e.post("poll_payment_status", {}, { authorization: "Bearer wrong" });
    expect(bad.status).toBe(401);
    const none = await e.post("poll_payment_status", {});
    expect(none.status).toBe(401);
    const badOpts = await e.post("poll_payment_status", { batch_size: 0 }, { authorization: `Bearer ${e.cronSecret}` });
    expect(badOpts.status).toBe(400);
    const run = await e.poll();
    expect(run.status).toBe(200);
    const [h] = await e.db.sql`select * from reserve.job_last_runs where job = 'poll_payment_status'`;
    expect(h.ok).toBe(true);
    expect(h.summary).toHaveProperty("claimed");
    expect(h.summary).toHaveProperty("released_locks");
  });
});

describe("poll_payment_status for named payments", () => {
  it("an operator's payment_ids are polled now, whenever their next poll was due", async () => {
    const c = await checkout("card");
    await e.sandbox.control.flush();
    e.sandbox.control.setWebhookMode("stripe", "drop");
    try {
      e.sandbox.control.stripeConfirm(c.gateway_payment_id, "succeeded");
      await e.sandbox.control.flush();
    } finally {
      e.sandbox.control.setWebhookMode("stripe", "deliver");
    }
    await e.db.sql`update reserve.payment_polls set next_poll_at = now() + interval '1 hour'`;
    const res = await e.post("poll_payment_status", { payment_ids: [c.payment_id] }, { authorization: `Bearer ${e.cronSecret}` });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ claimed: 1, finalized: 1 });
  });
});
