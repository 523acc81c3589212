// A dispute closed at Stripe whose closing webhook never reached us is learnt by reading: the charge's
// `disputed` flag stays true for ever, so a read asks the PaymentIntent's disputes. Won gives the payment
// back its state before the dispute (reconciliation's dispute listing, the poller's read confirming a
// refund, reconciliation's listing of payments), once; lost is booked once, however often it is read.
// Real Deno functions against the provider sandbox, Stripe's webhooks dropped by the sandbox.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
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

const { paidCard, unseen, reconcile, openItems, imbalances } = stripeDisputeSteps(() => e);

const paymentOf = async (id: string) => (await e.db.sql`
  select status, refunded_amount::int, received_amount::int from reserve.payments where id = ${id}`)[0]!;
/** The payment's books: each ledger transaction's kind and what it moved through the Stripe receivable. */
const booksOf = async (id: string) => (await e.db.sql`
  select t.kind::text, t.idempotency_key,
         coalesce(sum(e.amount) filter (where e.direction = 'debit'), 0)::int as debits,
         coalesce(sum(e.amount) filter (where e.direction = 'credit'), 0)::int as credits
  from reserve.ledger_transactions t join reserve.ledger_entries e on e.transaction_id = t.id
  where t.payment_id = ${id} group by t.id order by t.idempotency_key`).map((r) => ({ ...r }));

describe("a Stripe dispute closed out of sight", () => {
  it("opened by its webhook and won without one: reconciliation gives the payment back, and a second run changes nothing", async () => {
    const c = await paidCard();
    e.sandbox.control.stripeDispute(c.gateway_payment_id);
    await e.sandbox.control.flush();
    await until(async () => (await paymentOf(c.payment_id)).status === "disputed", "disputed by the webhook");
    unseen(() => e.sandbox.control.stripeCloseDispute(c.gateway_payment_id, "won"));

    await reconcile();
    expect(await paymentOf(c.payment_id)).toEqual({ status: "succeeded", refunded_amount: 0, received_amount: c.amount });
    expect(await openItems(c.payment_id)).toEqual([]);
    const [reservation] = await e.db.sql`select status from reserve.reservations where payment_id = ${c.payment_id}`;
    expect(reservation!.status).not.toBe("cancelled");
    const books = await booksOf(c.payment_id);
    expect(books.map((b) => b.kind)).not.toContain("chargeback");

    await reconcile();
    expect(await paymentOf(c.payment_id)).toEqual({ status: "succeeded", refunded_amount: 0, received_amount: c.amount });
    expect(await booksOf(c.payment_id)).toEqual(books);
    expect(await openItems(c.payment_id)).toEqual([]);
    expect(await imbalances()).toEqual([]);
  });

  it("opened and won with no webhook: a refund after it, confirmed by the poller's read of the payment, is a partial refund, not a dispute", async () => {
    const c = await paidCard();
    unseen(() => e.sandbox.control.stripeDispute(c.gateway_payment_id));
    await reconcile(); // the open dispute, seen by its listing
    expect((await paymentOf(c.payment_id)).status).toBe("disputed");
    unseen(() => e.sandbox.control.stripeCloseDispute(c.gateway_payment_id, "won"));

    // the stay is cut short: part of it goes back, and Stripe's confirmation of that refund is lost too
    const [rr] = await asOperator(e.db.sql, "oncall@reserve", (tx) =>
      tx`select * from reserve.refund_payment(${c.payment_id}::uuid, 30000, 'goodwill: late check-in')`);
    e.sandbox.control.setWebhookMode("stripe", "drop");
    try {
      expect((await e.poll({}, [])).body.refunds_sent).toBeGreaterThanOrEqual(1);
      await e.sandbox.control.flush();
      await e.db.sql`update reserve.refund_requests set next_attempt_at = now() - interval '1 second' where id = ${rr.id}`;
      expect((await e.poll({}, [])).body.refunds_looked_up).toBeGreaterThanOrEqual(1);
    } finally {
      e.sandbox.control.setWebhookMode("stripe", "deliver");
    }
    expect((await e.db.sql`select status from reserve.refund_requests where id = ${rr.id}`)[0]!.status).toBe("confirmed");
    expect(await paymentOf(c.payment_id)).toEqual({ status: "partially_refunded", refunded_amount: 30000, received_amount: c.amount });
    const refunds = (await booksOf(c.payment_id)).filter((b) => b.kind === "refund" || b.kind === "chargeback");
    expect(refunds.map((b) => [b.kind, b.debits])).toEqual([["refund", 30000]]);

    // read again by reconciliation (listed, and its dispute listed won): the money stays where it is, and
    // the dispute fee Stripe gave back with the win is given back in our books too
    await reconcile();
    expect(await paymentOf(c.payment_id)).toEqual({ status: "partially_refunded", refunded_amount: 30000, received_amount: c.amount });
    const books = await booksOf(c.payment_id);
    expect(books.filter((b) => b.kind === "refund" || b.kind === "chargeback").map((b) => [b.kind, b.debits])).toEqual([["refund", 30000]]);
    expect(books.filter((b) => b.idempotency_key.startsWith("dispute_fee")).map((b) => [b.idempotency_key.split(":")[0], b.debits]))
      .toEqual([["dispute_fee", 1500], ["dispute_fee_refund", 1500]]);
    expect(await imbalances()).toEqual([]);
  });

  it("opened and won with no webhook, then refunded from Stripe's dashboard: reconciliation's listing reads a partial refund, twice the same", async () => {
    const c = await paidCard();
    e.sandbox.control.setWebhookMode("stripe", "drop");
    try {
      e.sandbox.control.stripeDispute(c.gateway_payment_id);
      e.sandbox.control.stripeCloseDispute(c.gateway_payment_id, "won");
      const res = await fetch(`http://${e.sandbox.stripe.host}:${e.sandbox.stripe.port}/v1/refunds`, {
        method: "POST", body: new URLSearchParams({ payment_intent: c.gateway_payment_id, amount: "5000" }),
        headers: { authorization: `Bearer ${e.sandbox.stripe.secretKey}`, "content-type": "application/x-www-form-urlencoded" } });
      expect(res.status).toBe(200);
    } finally {
      e.sandbox.control.setWebhookMode("stripe", "deliver");
    }
    for (const pass of [1, 2]) {
      await reconcile();
      expect(await paymentOf(c.payment_id), `pass ${pass}`).toEqual({ status: "partially_refunded", refunded_amount: 5000, received_amount: c.amount });
      const refunds = (await booksOf(c.payment_id)).filter((b) => b.kind === "refund" || b.kind === "chargeback");
      expect(refunds.map((b) => [b.kind, b.debits]), `pass ${pass}`).toEqual([["refund", 5000]]);
    }
    expect(await imbalances()).toEqual([]);
  });

  it("lost without its closing webhook: the chargeback is booked once, however often the payment is read", async () => {
    const c = await paidCard();
    e.sandbox.control.stripeDispute(c.gateway_payment_id);
    await e.sandbox.control.flush();
    await until(async () => (await paymentOf(c.payment_id)).status === "disputed", "disputed by the webhook");
    unseen(() => e.sandbox.control.stripeCloseDispute(c.gateway_payment_id, "lost"));
    let books: Awaited<ReturnType<typeof booksOf>> | undefined;
    for (const pass of [1, 2, 3]) {
      await reconcile();
      expect(await paymentOf(c.payment_id), `pass ${pass}`).toEqual({ status: "refunded", refunded_amount: c.amount, received_amount: c.amount });
      const now = await booksOf(c.payment_id);
      expect(now.filter((b) => b.kind === "chargeback" || b.kind === "refund").map((b) => [b.kind, b.debits]), `pass ${pass}`)
        .toEqual([["chargeback", c.amount]]);
      if (books) expect(now, `pass ${pass}`).toEqual(books);
      books = now;
    }
    expect(await imbalances()).toEqual([]);
  });
});
