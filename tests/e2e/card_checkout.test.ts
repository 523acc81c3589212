// A card booking end to end: checkout under real Deno, the guest confirms at the Stripe sandbox,
// Stripe's signed webhook confirms the reservation.
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

describe("card checkout", () => {
  it("holds the nights, creates a PaymentIntent with our idempotency key, and returns its client secret", async () => {
    const { unitId } = await unit(e.db.sql);
    const res = await e.checkout({ unit_id: unitId, check_in: isoDate(2), check_out: isoDate(4), guests: 2, method: "card" });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    expect(res.body).toMatchObject({ provider: "stripe", method: "card", amount: 100000, currency: "BRL", status: "pending", attempt: 1 });
    expect(res.body.client_secret).toMatch(/^pi_.+_secret_.+/);
    const [p] = await e.db.sql`select * from reserve.payments where id = ${res.body.payment_id}`;
    expect(p.gateway_payment_id).toBe(res.body.gateway_payment_id);
    expect(JSON.stringify(p.provider_payload)).not.toContain("secret");
    const pi = e.sandbox.control.payment("stripe", p.gateway_payment_id) as Record<string, any>;
    expect(pi.metadata).toMatchObject({ payment_id: p.id, booking_intent_id: res.body.booking_intent_id });
    const [{ held }] = await e.db.sql`select count(*)::int as held from reserve.booking_locks
                                      where booking_intent_id = ${res.body.booking_intent_id} and status = 'held'`;
    expect(held).toBe(2);
  });

  it("confirms the reservation when the guest pays and Stripe's webhook arrives", async () => {
    const { unitId } = await unit(e.db.sql);
    const res = await e.checkout({ unit_id: unitId, check_in: isoDate(2), check_out: isoDate(4), guests: 2, method: "card" });
    expect(res.status).toBe(201);
    e.sandbox.control.stripeConfirm(res.body.gateway_payment_id, "succeeded");
    const r = await until(async () => (await e.db.sql`
      select r.* from reserve.reservations r where r.booking_intent_id = ${res.body.booking_intent_id}`)[0], "the reservation");
    expect(r.status).toBe("host_commit_pending"); // paid; the host commits next
    expect(r.payment_status).toBe("paid");
    const hooks = await e.db.sql`select event_type, status from reserve.processed_webhooks
                                 where payment_id = ${res.body.payment_id} order by received_at`;
    expect(hooks.map((h) => h.status).every((s) => s === "completed" || s === "ignored")).toBe(true);
    expect(hooks.some((h) => h.event_type === "payment_intent.succeeded" && h.status === "completed")).toBe(true);
    // Stripe's events carry the PaymentIntent's client_secret: it is never stored
    const [kept] = await e.db.sql`select (select count(*) from reserve.processed_webhooks where payload::text like '%client_secret%')::int as events,
                                         (select count(*) from reserve.payments where provider_payload::text like '%client_secret%')::int as payments`;
    expect(kept).toEqual({ events: 0, payments: 0 });
  });
});
