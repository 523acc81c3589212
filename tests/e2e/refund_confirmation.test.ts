// Refunds always end: with the provider's confirmation webhook dropped by the sandbox, a sent refund is
// looked up at the provider by the poller (read a refund, then the payment) and confirmed, its ledger
// refund posted, for each provider. Runs the stack as `npm start` does: the sandbox and real Deno.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startE2E, until, type E2E } from "../helpers/e2e.ts";
import { isoDate, unit } from "../helpers/fixtures.ts";
import { asOperator } from "../helpers/runbook.ts";

type Provider = "stripe" | "mercadopago" | "openpix";

let e: E2E;
beforeAll(async () => {
  e = await startE2E();
});
afterAll(async () => {
  await e?.stop();
});

async function paidStay(provider: Provider) {
  const { unitId } = await unit(e.db.sql);
  const res = await e.checkout({
    unit_id: unitId, check_in: isoDate(2), check_out: isoDate(4), guests: 2,
    ...(provider === "stripe" ? { method: "card" } : { method: "pix", provider, guest_email: "pagador@example.com", guest_name: "Ana" }),
  });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  const c = res.body as { payment_id: string; booking_intent_id: string; gateway_payment_id: string; amount: number };
  if (provider === "stripe") e.sandbox.control.stripeConfirm(c.gateway_payment_id, "succeeded");
  else if (provider === "mercadopago") e.sandbox.control.mercadopagoPay(c.gateway_payment_id);
  else e.sandbox.control.openpixPay(c.gateway_payment_id);
  await until(async () => (await e.db.sql`select 1 from reserve.reservations where booking_intent_id = ${c.booking_intent_id}`)[0], "reservation");
  await e.sandbox.control.flush();
  return c;
}

describe("a cancellation refunded while the guest's chargeback is not yet known here", () => {
  it("stripe: the refund is refused (charge_disputed) and failed, so the money goes back once, by the chargeback", async () => {
    const c = await paidStay("stripe");
    const [r] = await e.db.sql`select id from reserve.reservations where booking_intent_id = ${c.booking_intent_id}`;
    // the dispute's webhook is lost for now: the operator cancels a stay whose money the bank already took back
    e.sandbox.control.setWebhookMode("stripe", "drop");
    let disputeEvent: string;
    try {
      const opened = e.sandbox.control.stripeDispute(c.gateway_payment_id);
      disputeEvent = e.sandbox.control.events("stripe").find((ev) => ev.type === "charge.dispute.created"
        && (ev.body as { data: { object: { id: string } } }).data.object.id === opened.id)!.id;
    } finally {
      e.sandbox.control.setWebhookMode("stripe", "deliver");
    }
    const [cancelled] = await asOperator(e.db.sql, "oncall@reserve", (tx) =>
      tx`select * from reserve.cancel_reservation_with_refund(${r.id as string}, 'guest asked to cancel')`);
    expect(cancelled.refund_amount).toBe(String(c.amount));
    const sent = await e.poll({}, []);
    expect(sent.status, JSON.stringify(sent.body)).toBe(200);
    await e.sandbox.control.flush();
    const [rr] = await e.db.sql`select status, error_message from reserve.refund_requests where id = ${cancelled.refund_request_id}`;
    expect(rr.status).toBe("failed");
    expect(rr.error_message).toMatch(/charged back/);
    const pi = await fetch(`http://${e.sandbox.stripe.host}:${e.sandbox.stripe.port}/v1/payment_intents/${c.gateway_payment_id}?expand[]=latest_charge`,
      { headers: { authorization: `Bearer ${e.sandbox.stripe.secretKey}` } }).then((x) => x.json() as Promise<{ latest_charge: { amount_refunded: number } }>);
    expect(pi.latest_charge.amount_refunded).toBe(0);

    // the dispute's webhook arrives at last, and its loss: the money went back by the chargeback alone
    const redelivered = await e.sandbox.control.redeliver(disputeEvent!);
    expect(redelivered.status).toBe(200);
    const payment = async () => (await e.db.sql`select status, refunded_amount::int from reserve.payments where id = ${c.payment_id}`)[0];
    expect(await payment()).toEqual({ status: "disputed", refunded_amount: 0 });
    e.sandbox.control.stripeCloseDispute(c.gateway_payment_id, "lost");
    await e.sandbox.control.flush();
    expect(await payment()).toEqual({ status: "refunded", refunded_amount: c.amount });
    expect(await e.db.sql`select * from reserve.find_ledger_imbalances(current_date - 1)`).toEqual([]);
  });
});

describe("a sent refund whose confirmation webhook is lost", () => {
  it.each(["stripe", "mercadopago", "openpix"] as Provider[])("%s: is looked up at the provider and confirmed", async (provider) => {
    const c = await paidStay(provider);
    const [rr] = await asOperator(e.db.sql, "oncall@reserve", (tx) =>
      tx`select * from reserve.refund_payment(${c.payment_id}::uuid, 30000, 'goodwill: late check-in')`);
    e.sandbox.control.setWebhookMode(provider, "drop");
    try {
      const sent = await e.poll({}, []);
      expect(sent.body.refunds_sent).toBeGreaterThanOrEqual(1);
      await e.sandbox.control.flush();
      const [r1] = await e.db.sql`select status, provider_refund_id, lookups from reserve.refund_requests where id = ${rr.id}`;
      expect(r1).toMatchObject({ status: "sent", lookups: 0 });
      expect(r1.provider_refund_id).toEqual(expect.any(String));
      const [p1] = await e.db.sql`select refunded_amount::int from reserve.payments where id = ${c.payment_id}`;
      expect(p1.refunded_amount).toBe(0); // the confirmation never came
      const dropped = e.sandbox.control.deliveries().filter((d) => d.provider === provider && d.status === "dropped");
      expect(dropped.length).toBeGreaterThan(0);

      // the first lookup is due two minutes after sending; the clock moves on
      await e.db.sql`update reserve.refund_requests set next_attempt_at = now() - interval '1 second' where id = ${rr.id}`;
      const looked = await e.poll({}, []);
      expect(looked.body).toMatchObject({ ok: true });
      expect(looked.body.refunds_looked_up).toBeGreaterThanOrEqual(1);
      const [r2] = await e.db.sql`select status, lookups, provider_refund_status from reserve.refund_requests where id = ${rr.id}`;
      expect(r2).toEqual({ status: "confirmed", lookups: 1, provider_refund_status: "succeeded" });
      const [p2] = await e.db.sql`select status, refunded_amount::int from reserve.payments where id = ${c.payment_id}`;
      expect(p2).toEqual({ status: "partially_refunded", refunded_amount: 30000 });
      const kinds = await e.db.sql`select kind from reserve.ledger_transactions where payment_id = ${c.payment_id} order by posted_at`;
      expect(kinds.map((k) => k.kind).filter((k) => k !== "provider_fee")).toEqual(["payment", "refund"]);
      // the provider's fee, once, when the provider's answers carried it
      const [fee] = await e.db.sql`select fee_amount from reserve.payments where id = ${c.payment_id}`;
      expect(kinds.filter((k) => k.kind === "provider_fee")).toHaveLength(fee!.fee_amount ? 1 : 0);
      expect(await e.db.sql`select * from reserve.find_ledger_imbalances(current_date - 1)`).toEqual([]);
    } finally {
      e.sandbox.control.setWebhookMode(provider, "deliver");
    }
  });

  it("a refund the provider has not finished is looked up again later, with backoff", async () => {
    const c = await paidStay("stripe");
    const [rr] = await asOperator(e.db.sql, "oncall@reserve", (tx) =>
      tx`select * from reserve.refund_payment(${c.payment_id}::uuid, 10000, 'goodwill')`);
    e.sandbox.control.setWebhookMode("stripe", "drop");
    try {
      await e.poll({}, []);
      // the provider's answer to a lookup, before the money went back: pending
      await e.db.sql`update reserve.refund_requests set next_attempt_at = now() - interval '1 second' where id = ${rr.id}`;
      e.sandbox.control.failApi("stripe", { status: 503, times: 4 });
      await e.poll({}, []);
      const [r] = await e.db.sql`select status, lookups, error_message, next_attempt_at > now() as later from reserve.refund_requests where id = ${rr.id}`;
      expect(r).toMatchObject({ status: "sent", lookups: 1, later: true });
      expect(r.error_message).toContain("stripe");
    } finally {
      e.sandbox.control.setWebhookMode("stripe", "deliver");
    }
  });
});
