// webhook_pix under real Deno: MercadoPago (x-signature, status fetched from the API) and OpenPIX
// (RSA x-webhook-signature) confirm PIX bookings; forged, failed and repeated notifications.
import { createHmac, randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startE2E, until, type E2E } from "../helpers/e2e.ts";
import { isoDate, unit } from "../helpers/fixtures.ts";

let e: E2E;
beforeAll(async () => {
  e = await startE2E({ pixProvider: "mercadopago" });
});
afterAll(async () => {
  await e?.stop();
});

async function pixCheckout(provider: "mercadopago" | "openpix") {
  const { unitId } = await unit(e.db.sql);
  const res = await e.checkout({
    unit_id: unitId, check_in: isoDate(2), check_out: isoDate(4), guests: 2, method: "pix", provider,
    guest_email: "pagador@example.com", guest_name: "Ana",
  });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body as { payment_id: string; booking_intent_id: string; gateway_payment_id: string; qr_code: string; payment_expires_at: string };
}

const reservationOf = (intentId: string) =>
  until(async () => (await e.db.sql`select * from reserve.reservations where booking_intent_id = ${intentId}`)[0], "reservation");

/** A MercadoPago notification as MercadoPago sends it, signed with the sandbox's (or another) secret. */
function mpNotification(dataId: string, secret = e.sandbox.mercadopago.webhookSecret) {
  const requestId = randomUUID();
  const ts = String(Date.now());
  const v1 = createHmac("sha256", secret).update(`id:${dataId};request-id:${requestId};ts:${ts};`).digest("hex");
  const body = JSON.stringify({ action: "payment.updated", api_version: "v1", data: { id: dataId }, date_created: new Date().toISOString(),
    id: Math.floor(Math.random() * 1e12), live_mode: false, type: "payment", user_id: "123" });
  return e.post(`webhook_pix/mercadopago?data.id=${dataId}&type=payment`, body, { "x-signature": `ts=${ts},v1=${v1}`, "x-request-id": requestId });
}

describe("MercadoPago PIX", () => {
  it("checkout returns the QR code; paying it confirms the reservation through the signed notification", async () => {
    const c = await pixCheckout("mercadopago");
    expect(c.qr_code).toBeTruthy();
    const [p] = await e.db.sql`select provider, method, status, expires_at from reserve.payments where id = ${c.payment_id}`;
    expect(p).toMatchObject({ provider: "mercadopago", method: "pix", status: "pending" });
    e.sandbox.control.mercadopagoPay(c.gateway_payment_id);
    const r = await reservationOf(c.booking_intent_id);
    expect(r.payment_status).toBe("paid");
    const hooks = await e.db.sql`select status from reserve.processed_webhooks where provider = 'mercadopago' and payment_id = ${c.payment_id}`;
    expect(hooks.some((h) => h.status === "completed")).toBe(true);
  });

  it("a forged notification is 400 and writes nothing", async () => {
    const c = await pixCheckout("mercadopago");
    await e.sandbox.control.flush(); // the payment.created notification of the checkout
    const [before] = await e.db.sql`select count(*)::int as n from reserve.processed_webhooks`;
    const res = await mpNotification(c.gateway_payment_id, "not-the-secret");
    expect(res.status).toBe(400);
    expect(res.body.error).toBe("invalid_signature");
    const [after] = await e.db.sql`select count(*)::int as n from reserve.processed_webhooks`;
    expect(after.n).toBe(before.n);
  });

  it("one captured signature replayed with other bodies records one event, and none of the junk", async () => {
    const c = await pixCheckout("mercadopago");
    await e.sandbox.control.flush();
    const requestId = randomUUID();
    const ts = String(Date.now());
    const v1 = createHmac("sha256", e.sandbox.mercadopago.webhookSecret).update(`id:${c.gateway_payment_id};request-id:${requestId};ts:${ts};`).digest("hex");
    for (let i = 0; i < 3; i++) {
      const res = await e.post(`webhook_pix/mercadopago?data.id=${c.gateway_payment_id}&type=payment`,
        JSON.stringify({ id: `attacker-${i}`, type: "payment", action: "payment.updated", pad: "x".repeat(10_000) }),
        { "x-signature": `ts=${ts},v1=${v1}`, "x-request-id": requestId });
      expect(res.status).toBe(200);
    }
    const rows = await e.db.sql`select payload from reserve.processed_webhooks where event_id = ${`${c.gateway_payment_id}:${requestId}`}`;
    expect(rows).toHaveLength(1);
    expect(JSON.stringify(rows[0].payload)).not.toContain("xxxx");
  });

  it("when MercadoPago's API fails the lookup, the event is kept as failed (500) and the redelivery completes it", async () => {
    const c = await pixCheckout("mercadopago");
    await e.sandbox.control.flush(); // nothing else may call MercadoPago's API while it fails
    e.sandbox.control.setWebhookMode("mercadopago", "drop");
    e.sandbox.control.mercadopagoPay(c.gateway_payment_id);
    e.sandbox.control.setWebhookMode("mercadopago", "deliver");
    const dropped = e.sandbox.control.deliveries().filter((d) => d.provider === "mercadopago" && d.status === "dropped").at(-1)!;
    e.sandbox.control.failApi("mercadopago", { status: 503, times: 1 });
    const first = await e.sandbox.control.redeliver(dropped.eventId);
    expect(first.status).toBe(500);
    const [w] = await e.db.sql`select status, error_message from reserve.processed_webhooks where provider = 'mercadopago' and payment_id is null
                               order by received_at desc limit 1`;
    expect(w.status).toBe("failed");
    expect(w.error_message).toContain("503");
    const second = await e.sandbox.control.redeliver(dropped.eventId);
    expect(second.status).toBe(200);
    await reservationOf(c.booking_intent_id);
  });

  it("a PIX paid after its expiry is still honoured when its nights are free", async () => {
    const c = await pixCheckout("mercadopago");
    e.sandbox.control.expire("mercadopago", c.gateway_payment_id);
    await until(async () => (await e.db.sql`select 1 from reserve.payments where id = ${c.payment_id} and status = 'expired'`)[0], "expired");
    e.sandbox.control.mercadopagoPay(c.gateway_payment_id, { afterExpiry: true });
    const r = await reservationOf(c.booking_intent_id);
    expect(r.payment_status).toBe("paid");
  });

  it("a refund at MercadoPago reaches the payment and the ledger", async () => {
    const c = await pixCheckout("mercadopago");
    e.sandbox.control.mercadopagoPay(c.gateway_payment_id);
    await reservationOf(c.booking_intent_id);
    const res = await fetch(`${e.sandbox.mercadopago.apiBase}/v1/payments/${c.gateway_payment_id}/refunds`, {
      method: "POST",
      headers: { authorization: `Bearer ${e.sandbox.mercadopago.accessToken}`, "content-type": "application/json", "x-idempotency-key": randomUUID() },
      body: JSON.stringify({ amount: 250 }),
    });
    expect(res.status).toBeLessThan(300);
    await until(async () => (await e.db.sql`select 1 from reserve.payments where id = ${c.payment_id}
                                             and status = 'partially_refunded' and refunded_amount = 25000`)[0], "partial refund");
  });
});

describe("OpenPIX PIX", () => {
  it("checkout returns the brCode; CHARGE_COMPLETED (RSA-signed) confirms the reservation", async () => {
    const c = await pixCheckout("openpix");
    expect(c.qr_code).toBeTruthy();
    expect(c.gateway_payment_id).toBe(c.payment_id);
    e.sandbox.control.openpixPay(c.gateway_payment_id);
    const r = await reservationOf(c.booking_intent_id);
    expect(r.payment_status).toBe("paid");
  });

  it("a notification signed with another key is 400 and writes nothing", async () => {
    const c = await pixCheckout("openpix");
    await e.sandbox.control.flush();
    const [before] = await e.db.sql`select count(*)::int as n from reserve.processed_webhooks`;
    const seen = e.sandbox.control.deliveries().length;
    e.sandbox.control.setWebhookMode("openpix", "wrong_secret");
    try {
      e.sandbox.control.openpixPay(c.gateway_payment_id);
      await e.sandbox.control.flush();
      const sent = e.sandbox.control.deliveries().slice(seen);
      expect(sent.length).toBeGreaterThan(0);
      expect(sent.every((d) => d.provider === "openpix" && d.status === 400)).toBe(true);
    } finally {
      e.sandbox.control.setWebhookMode("openpix", "deliver");
    }
    const [after] = await e.db.sql`select count(*)::int as n from reserve.processed_webhooks`;
    expect(after.n).toBe(before.n);
    const [p] = await e.db.sql`select status from reserve.payments where id = ${c.payment_id}`;
    expect(p.status).toBe("pending");
  });

  it("an expired charge expires the payment; a refund is applied with the total refunded", async () => {
    const expiring = await pixCheckout("openpix");
    e.sandbox.control.expire("openpix", expiring.gateway_payment_id);
    await until(async () => (await e.db.sql`select 1 from reserve.payments where id = ${expiring.payment_id} and status = 'expired'`)[0], "expired");

    const c = await pixCheckout("openpix");
    e.sandbox.control.openpixPay(c.gateway_payment_id);
    await reservationOf(c.booking_intent_id);
    for (const value of [10000, 90000]) {
      const res = await fetch(`${e.sandbox.openpix.apiBase}/api/v1/charge/${c.gateway_payment_id}/refund`, {
        method: "POST",
        headers: { authorization: e.sandbox.openpix.appId, "content-type": "application/json" },
        body: JSON.stringify({ correlationID: randomUUID(), value }),
      });
      expect(res.status).toBe(200);
    }
    await until(async () => (await e.db.sql`select 1 from reserve.payments where id = ${c.payment_id}
                                             and status = 'refunded' and refunded_amount = 100000`)[0], "full refund");
  });
});

describe("webhook_pix routes", () => {
  it("answers 404 off its two paths and 415 for a body that is not JSON", async () => {
    expect((await e.post("webhook_pix", "{}")).status).toBe(404);
    expect((await e.post("webhook_pix/stripe", "{}")).status).toBe(404);
    expect((await e.post("webhook_pix/openpix", "x", { "content-type": "text/plain" })).status).toBe(415);
  });
});
