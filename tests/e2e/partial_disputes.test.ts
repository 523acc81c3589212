// A lost dispute for less than what is left of a charge leaves the payment partially_refunded, and Stripe
// keeps saying `disputed` of that charge for ever: every read of it (the poller confirming a refund,
// reconciliation's listings) says disputed again. The chargeback is booked once per dispute, however often
// it is read and whichever path saw it lost, and a read never puts the payment back in dispute.
// Real Deno functions against the provider sandbox; Stripe's webhooks delivered or dropped by the sandbox.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startE2E, until, type E2E } from "../helpers/e2e.ts";
import { stripeDisputeSteps } from "../helpers/stripe_disputes.ts";

let e: E2E;
beforeAll(async () => {
  e = await startE2E();
});
afterAll(async () => {
  await e?.stop();
});

const { paidCard, unseen, reconcile, openItems, imbalances, refundConfirmedByRead, paymentOf, moneyBack } = stripeDisputeSteps(() => e);

/** Every read path, several times over; after each the payment and its books are still `expected`. */
async function readOften(paymentId: string, expected: { status: string; refunded_amount: number }, back: [string, number][]) {
  for (const pass of [1, 2, 3]) {
    await reconcile();
    expect(await paymentOf(paymentId), `reconcile ${pass}`).toEqual(expected);
    expect(await moneyBack(paymentId), `reconcile ${pass}`).toEqual(back);
  }
  expect(await imbalances()).toEqual([]);
}

describe("a Stripe dispute for part of a charge, lost", () => {
  it("with its webhooks: one chargeback of the disputed part, partially refunded through every later read and refund", async () => {
    const c = await paidCard();
    e.sandbox.control.stripeDispute(c.gateway_payment_id, { amount: 25000 });
    await e.sandbox.control.flush();
    await until(async () => (await paymentOf(c.payment_id)).status === "disputed", "disputed by the webhook");
    e.sandbox.control.stripeCloseDispute(c.gateway_payment_id, "lost");
    await e.sandbox.control.flush();
    await until(async () => (await paymentOf(c.payment_id)).refunded_amount === 25000, "the chargeback by its webhook");
    expect(await paymentOf(c.payment_id)).toEqual({ status: "partially_refunded", refunded_amount: 25000 });
    expect(await moneyBack(c.payment_id)).toEqual([["chargeback", 25000]]);
    await readOften(c.payment_id, { status: "partially_refunded", refunded_amount: 25000 }, [["chargeback", 25000]]);
    expect(await openItems(c.payment_id)).toEqual([]);

    // part of the rest goes back later; Stripe's read (refunded 30000, the charge disputed) confirms it
    expect(await refundConfirmedByRead(c.payment_id, 30000)).toBe("confirmed");
    expect(await paymentOf(c.payment_id)).toEqual({ status: "partially_refunded", refunded_amount: 55000 });
    expect(await moneyBack(c.payment_id)).toEqual([["chargeback", 25000], ["refund", 30000]]);
    await readOften(c.payment_id, { status: "partially_refunded", refunded_amount: 55000 }, [["chargeback", 25000], ["refund", 30000]]);
    expect(await openItems(c.payment_id)).toEqual([]);
  });

  it("its opening webhook delivered after its closing one: the dispute is over, the payment stays partially refunded, one chargeback", async () => {
    const c = await paidCard();
    unseen(() => {
      e.sandbox.control.stripeDispute(c.gateway_payment_id, { amount: 25000 });
      e.sandbox.control.stripeCloseDispute(c.gateway_payment_id, "lost");
    });
    const event = (type: string) => e.sandbox.control.events("stripe")
      .find((x) => x.type === type && (x.body as { data: { object: { payment_intent: string } } }).data.object.payment_intent === c.gateway_payment_id)!;
    expect((await e.sandbox.control.redeliver(event("charge.dispute.closed").id)).status).toBe(200);
    expect(await paymentOf(c.payment_id)).toEqual({ status: "partially_refunded", refunded_amount: 25000 });
    expect((await e.sandbox.control.redeliver(event("charge.dispute.created").id)).status).toBe(200);
    expect(await paymentOf(c.payment_id)).toEqual({ status: "partially_refunded", refunded_amount: 25000 });
    expect(await moneyBack(c.payment_id)).toEqual([["chargeback", 25000]]);
    await readOften(c.payment_id, { status: "partially_refunded", refunded_amount: 25000 }, [["chargeback", 25000]]);
    expect(await openItems(c.payment_id)).toEqual([]);
  });

  it("without its closing webhook: reconciliation books it once, and a refund after it is booked as a refund", async () => {
    const c = await paidCard();
    e.sandbox.control.stripeDispute(c.gateway_payment_id, { amount: 25000 });
    await e.sandbox.control.flush();
    await until(async () => (await paymentOf(c.payment_id)).status === "disputed", "disputed by the webhook");
    unseen(() => e.sandbox.control.stripeCloseDispute(c.gateway_payment_id, "lost"));
    await readOften(c.payment_id, { status: "partially_refunded", refunded_amount: 25000 }, [["chargeback", 25000]]);
    expect(await openItems(c.payment_id)).toEqual([]);

    expect(await refundConfirmedByRead(c.payment_id, 30000)).toBe("confirmed");
    await readOften(c.payment_id, { status: "partially_refunded", refunded_amount: 55000 }, [["chargeback", 25000], ["refund", 30000]]);
    expect(await openItems(c.payment_id)).toEqual([]);
  });

  it("never seen open or closed: reconciliation's dispute listing books it once", async () => {
    const c = await paidCard();
    unseen(() => {
      e.sandbox.control.stripeDispute(c.gateway_payment_id, { amount: 25000 });
      e.sandbox.control.stripeCloseDispute(c.gateway_payment_id, "lost");
    });
    await readOften(c.payment_id, { status: "partially_refunded", refunded_amount: 25000 }, [["chargeback", 25000]]);
    expect(await openItems(c.payment_id)).toEqual([]);
  });
});

describe("a Stripe dispute lost after a partial refund", () => {
  it("of the whole charge, closed out of sight: the chargeback takes what was left, once", async () => {
    const c = await paidCard();
    expect(await refundConfirmedByRead(c.payment_id, 30000)).toBe("confirmed");
    expect(await paymentOf(c.payment_id)).toEqual({ status: "partially_refunded", refunded_amount: 30000 });
    e.sandbox.control.stripeDispute(c.gateway_payment_id);
    await e.sandbox.control.flush();
    await until(async () => (await paymentOf(c.payment_id)).status === "disputed", "disputed by the webhook");
    unseen(() => e.sandbox.control.stripeCloseDispute(c.gateway_payment_id, "lost"));
    await readOften(c.payment_id, { status: "refunded", refunded_amount: c.amount }, [["refund", 30000], ["chargeback", c.amount - 30000]]);
  });

  it("of the rest, never seen open or closed: reconciliation's dispute listing books it once", async () => {
    const c = await paidCard();
    expect(await refundConfirmedByRead(c.payment_id, 30000)).toBe("confirmed");
    unseen(() => {
      e.sandbox.control.stripeDispute(c.gateway_payment_id, { amount: c.amount - 30000 });
      e.sandbox.control.stripeCloseDispute(c.gateway_payment_id, "lost");
    });
    await readOften(c.payment_id, { status: "refunded", refunded_amount: c.amount }, [["refund", 30000], ["chargeback", c.amount - 30000]]);
    expect(await openItems(c.payment_id)).toEqual([]);
  });

  it("of part of the rest, with its webhooks: partially refunded, one refund and one chargeback, through every read", async () => {
    const c = await paidCard();
    expect(await refundConfirmedByRead(c.payment_id, 30000)).toBe("confirmed");
    e.sandbox.control.stripeDispute(c.gateway_payment_id, { amount: 20000 });
    e.sandbox.control.stripeCloseDispute(c.gateway_payment_id, "lost");
    await e.sandbox.control.flush();
    await until(async () => (await paymentOf(c.payment_id)).refunded_amount === 50000, "the chargeback by its webhook");
    await readOften(c.payment_id, { status: "partially_refunded", refunded_amount: 50000 }, [["refund", 30000], ["chargeback", 20000]]);
    expect(await openItems(c.payment_id)).toEqual([]);
  });
});
