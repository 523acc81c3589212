// A cardholder may dispute a charge we already refunded, and lose: the card network takes the money a
// second time. What went out beyond what arrived is never booked (the ledger takes back at most what was
// received), so it is a money discrepancy (dispute_exceeds_received) and the P1 money_mismatch alert,
// recorded once however the lost dispute reaches us: its webhooks in order, twice, out of order, or only
// reconciliation's dispute listing. After a partial refund, only what the chargeback took beyond the
// rest is the discrepancy. Real Deno functions against the provider sandbox; Stripe's webhooks delivered
// or dropped by the sandbox.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { startE2E, until, type E2E } from "../helpers/e2e.ts";
import { asOperator } from "../helpers/runbook.ts";
import { stripeDisputeSteps } from "../helpers/stripe_disputes.ts";

let e: E2E;
beforeAll(async () => {
  e = await startE2E();
});
afterAll(async () => {
  await e?.stop();
});

const { paidCard, unseen, reconcile, imbalances, refundConfirmedByRead, paymentOf, moneyBack } = stripeDisputeSteps(() => e);

/** The payment's money discrepancies: what was left to take back, what the provider took. */
const discrepancies = async (id: string) => (await e.db.sql`
  select kind, expected_amount::int as left_to_take, provider_amount::int as taken, resolved_at is null as open
  from reserve.money_discrepancies where payment_id = ${id} order by detected_at`);
const moneyAlert = async () =>
  (await e.db.sql`select state from reserve.check_all_alerts() where alert_name = 'money_mismatch'`)[0]!.state as string;

const disputeEvent = (gatewayPaymentId: string, type: "charge.dispute.created" | "charge.dispute.closed") => e.sandbox.control.events("stripe")
  .find((x) => x.type === type && (x.body as { data: { object: { payment_intent: string } } }).data.object.payment_intent === gatewayPaymentId)!;

// each case starts with no discrepancy open, so the alert it sees is its own
beforeEach(async () => {
  expect(await moneyAlert()).not.toBe("firing");
});
afterEach(async () => {
  for (const { id } of await e.db.sql`select id from reserve.money_discrepancies where resolved_at is null`) {
    await asOperator(e.db.sql, "oncall@reserve", (tx) =>
      tx`select reserve.resolve_money_discrepancy(${id}::uuid, 'the cardholder''s bank was asked to reverse the second take')`);
  }
  expect(await moneyAlert()).not.toBe("firing");
});

/** Every read path, several times over; after each the payment, its books and its one discrepancy are still as they were. */
async function readOften(paymentId: string, expected: { status: string; refunded_amount: number }, back: [string, number][],
                         discrepancy: { left_to_take: number; taken: number }) {
  for (const pass of [1, 2, 3]) {
    await reconcile();
    expect(await paymentOf(paymentId), `reconcile ${pass}`).toEqual(expected);
    expect(await moneyBack(paymentId), `reconcile ${pass}`).toEqual(back);
    expect(await discrepancies(paymentId), `reconcile ${pass}`).toEqual([{ kind: "dispute_exceeds_received", ...discrepancy, open: true }]);
  }
  expect(await moneyAlert()).toBe("firing");
  expect(await imbalances()).toEqual([]);
}

describe("a Stripe dispute lost on a charge refunded in full", () => {
  it("with its webhooks, the closing one delivered twice more: one discrepancy of all of it, the refund the only money booked back", async () => {
    const c = await paidCard();
    expect(await refundConfirmedByRead(c.payment_id, c.amount)).toBe("confirmed");
    expect(await paymentOf(c.payment_id)).toEqual({ status: "refunded", refunded_amount: c.amount });
    e.sandbox.control.stripeDispute(c.gateway_payment_id);
    e.sandbox.control.stripeCloseDispute(c.gateway_payment_id, "lost");
    await e.sandbox.control.flush();
    await until(async () => (await discrepancies(c.payment_id)).length > 0, "the discrepancy by the closing webhook");
    expect(await discrepancies(c.payment_id)).toEqual([{ kind: "dispute_exceeds_received", left_to_take: 0, taken: c.amount, open: true }]);
    expect(await moneyAlert()).toBe("firing");
    for (let i = 0; i < 2; i++) {
      expect((await e.sandbox.control.redeliver(disputeEvent(c.gateway_payment_id, "charge.dispute.closed").id)).status).toBe(200);
    }
    expect(await paymentOf(c.payment_id)).toEqual({ status: "refunded", refunded_amount: c.amount });
    expect(await moneyBack(c.payment_id)).toEqual([["refund", c.amount]]);
    await readOften(c.payment_id, { status: "refunded", refunded_amount: c.amount }, [["refund", c.amount]], { left_to_take: 0, taken: c.amount });
  });

  it("its closing webhook delivered before its opening one: one discrepancy, nothing booked", async () => {
    const c = await paidCard();
    expect(await refundConfirmedByRead(c.payment_id, c.amount)).toBe("confirmed");
    unseen(() => {
      e.sandbox.control.stripeDispute(c.gateway_payment_id);
      e.sandbox.control.stripeCloseDispute(c.gateway_payment_id, "lost");
    });
    expect((await e.sandbox.control.redeliver(disputeEvent(c.gateway_payment_id, "charge.dispute.closed").id)).status).toBe(200);
    expect(await discrepancies(c.payment_id)).toEqual([{ kind: "dispute_exceeds_received", left_to_take: 0, taken: c.amount, open: true }]);
    expect((await e.sandbox.control.redeliver(disputeEvent(c.gateway_payment_id, "charge.dispute.created").id)).status).toBe(200);
    expect(await paymentOf(c.payment_id)).toEqual({ status: "refunded", refunded_amount: c.amount });
    expect(await moneyBack(c.payment_id)).toEqual([["refund", c.amount]]);
    await readOften(c.payment_id, { status: "refunded", refunded_amount: c.amount }, [["refund", c.amount]], { left_to_take: 0, taken: c.amount });
  });

  it("never seen open or closed: reconciliation's dispute listing records the discrepancy, once", async () => {
    const c = await paidCard();
    expect(await refundConfirmedByRead(c.payment_id, c.amount)).toBe("confirmed");
    unseen(() => {
      e.sandbox.control.stripeDispute(c.gateway_payment_id);
      e.sandbox.control.stripeCloseDispute(c.gateway_payment_id, "lost");
    });
    await readOften(c.payment_id, { status: "refunded", refunded_amount: c.amount }, [["refund", c.amount]], { left_to_take: 0, taken: c.amount });
  });
});

describe("a Stripe dispute lost of the whole charge after a partial refund", () => {
  it("with its webhooks, the closing one delivered twice more: the chargeback takes the rest, the refunded part is the discrepancy", async () => {
    const c = await paidCard();
    expect(await refundConfirmedByRead(c.payment_id, 30000)).toBe("confirmed");
    e.sandbox.control.stripeDispute(c.gateway_payment_id);
    e.sandbox.control.stripeCloseDispute(c.gateway_payment_id, "lost");
    await e.sandbox.control.flush();
    await until(async () => (await paymentOf(c.payment_id)).status === "refunded", "the chargeback by its webhook");
    for (let i = 0; i < 2; i++) {
      expect((await e.sandbox.control.redeliver(disputeEvent(c.gateway_payment_id, "charge.dispute.closed").id)).status).toBe(200);
    }
    const back: [string, number][] = [["refund", 30000], ["chargeback", c.amount - 30000]];
    expect(await moneyBack(c.payment_id)).toEqual(back);
    await readOften(c.payment_id, { status: "refunded", refunded_amount: c.amount }, back, { left_to_take: c.amount - 30000, taken: c.amount });
  });

  it("never seen open or closed: reconciliation's dispute listing books the rest once and records the excess once", async () => {
    const c = await paidCard();
    expect(await refundConfirmedByRead(c.payment_id, 30000)).toBe("confirmed");
    unseen(() => {
      e.sandbox.control.stripeDispute(c.gateway_payment_id);
      e.sandbox.control.stripeCloseDispute(c.gateway_payment_id, "lost");
    });
    await readOften(c.payment_id, { status: "refunded", refunded_amount: c.amount }, [["refund", 30000], ["chargeback", c.amount - 30000]],
                    { left_to_take: c.amount - 30000, taken: c.amount });
  });
});

describe("a Stripe dispute lost on a charge refunded in full, the refund's news reaching us last", () => {
  it("its closing webhook, then the refund's: the chargeback is booked, the refund after it is the discrepancy, once", async () => {
    const c = await paidCard();
    await asOperator(e.db.sql, "oncall@reserve", (tx) =>
      tx`select * from reserve.refund_payment(${c.payment_id}::uuid, ${c.amount}, 'goodwill: late check-in')`);
    e.sandbox.control.setWebhookMode("stripe", "drop");
    try {
      expect((await e.poll({}, [])).body.refunds_sent).toBe(1);
      e.sandbox.control.stripeDispute(c.gateway_payment_id);
      e.sandbox.control.stripeCloseDispute(c.gateway_payment_id, "lost");
      await e.sandbox.control.flush();
    } finally {
      e.sandbox.control.setWebhookMode("stripe", "deliver");
    }
    expect((await e.sandbox.control.redeliver(disputeEvent(c.gateway_payment_id, "charge.dispute.closed").id)).status).toBe(200);
    expect(await paymentOf(c.payment_id)).toEqual({ status: "refunded", refunded_amount: c.amount });
    expect(await moneyBack(c.payment_id)).toEqual([["chargeback", c.amount]]);
    const refunded = e.sandbox.control.events("stripe").find((x) => x.type === "charge.refunded"
      && (x.body as { data: { object: { payment_intent: string } } }).data.object.payment_intent === c.gateway_payment_id)!;
    for (let i = 0; i < 2; i++) expect((await e.sandbox.control.redeliver(refunded.id)).status).toBe(200);
    expect(await discrepancies(c.payment_id)).toEqual([{ kind: "dispute_exceeds_received", left_to_take: 0, taken: c.amount, open: true }]);
    await readOften(c.payment_id, { status: "refunded", refunded_amount: c.amount }, [["chargeback", c.amount]], { left_to_take: 0, taken: c.amount });
  });
});
