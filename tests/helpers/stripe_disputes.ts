// The steps the Stripe dispute e2e tests share: a card paid and finalized through the sandbox, what Stripe
// does while none of its webhooks reach us, a reconciliation run of Stripe, and what is left open after.
import { expect } from "vitest";
import { until, type E2E } from "./e2e.ts";
import { isoDate, unit } from "./fixtures.ts";
import { asOperator } from "./runbook.ts";

export interface PaidCard { payment_id: string; booking_intent_id: string; gateway_payment_id: string; amount: number }

/** The steps, on the stack `stack()` returns once beforeAll has started it. */
export function stripeDisputeSteps(stack: () => E2E) {
  return {
    /** A card checkout paid at Stripe, its webhook delivered and the stay finalized. */
    async paidCard(): Promise<PaidCard> {
      const e = stack();
      const { unitId } = await unit(e.db.sql);
      const res = await e.checkout({ unit_id: unitId, check_in: isoDate(2), check_out: isoDate(4), guests: 2, method: "card", guest_email: "g@example.com" });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
      const c = res.body as PaidCard;
      e.sandbox.control.stripeConfirm(c.gateway_payment_id, "succeeded");
      await until(async () => (await e.db.sql`select 1 from reserve.reservations where booking_intent_id = ${c.booking_intent_id}`)[0], "reservation");
      await e.sandbox.control.flush();
      return c;
    },

    /** What Stripe does while no webhook of it reaches us. */
    unseen(f: () => void): void {
      const e = stack();
      e.sandbox.control.setWebhookMode("stripe", "drop");
      try {
        f();
      } finally {
        e.sandbox.control.setWebhookMode("stripe", "deliver");
      }
    },

    /** One reconciliation of Stripe over the hour around now, done. */
    async reconcile(): Promise<{ repaired: number; unrepaired: number; items: number }> {
      const e = stack();
      const window = { from: new Date(Date.now() - 3_600_000).toISOString(), to: new Date(Date.now() + 3_600_000).toISOString() };
      const run = await e.post("reconcile", { ...window, provider: "stripe" }, { authorization: `Bearer ${e.cronSecret}` });
      expect(run.status, JSON.stringify(run.body)).toBe(200);
      expect(run.body.runs[0], JSON.stringify(run.body)).toMatchObject({ status: "done" });
      return run.body.runs[0];
    },

    /** The kinds of the payment's reconciliation items neither repaired nor resolved. */
    async openItems(paymentId: string): Promise<string[]> {
      return (await stack().db.sql`
        select kind::text from reserve.reconciliation_items where payment_id = ${paymentId} and repaired_at is null and resolved_at is null
        order by kind`).map((r) => r.kind as string);
    },

    imbalances: () => stack().db.sql`select * from reserve.find_ledger_imbalances()`,

    /** An operator's refund, sent by the poller and confirmed by its read of the payment: Stripe's webhooks of it are lost. */
    async refundConfirmedByRead(paymentId: string, amount: number): Promise<string> {
      const e = stack();
      const [rr] = await asOperator(e.db.sql, "oncall@reserve", (tx) =>
        tx`select * from reserve.refund_payment(${paymentId}::uuid, ${amount}, 'goodwill: late check-in')`);
      e.sandbox.control.setWebhookMode("stripe", "drop");
      try {
        expect((await e.poll({}, [])).body.refunds_sent).toBeGreaterThanOrEqual(1);
        await e.sandbox.control.flush();
        for (let i = 0; i < 3; i++) {
          await e.db.sql`update reserve.refund_requests set next_attempt_at = now() - interval '1 second' where id = ${rr.id} and status = 'sent'`;
          await e.poll({}, []);
        }
      } finally {
        e.sandbox.control.setWebhookMode("stripe", "deliver");
      }
      return (await e.db.sql`select status from reserve.refund_requests where id = ${rr.id}`)[0]!.status as string;
    },

    paymentOf: async (id: string) => (await stack().db.sql`
      select status, refunded_amount::int from reserve.payments where id = ${id}`)[0]!,

    /** What went back of the payment, each ledger transaction's kind and what it took from the Stripe receivable. */
    moneyBack: async (id: string): Promise<[string, number][]> => (await stack().db.sql`
      select t.kind::text, sum(e.amount)::int as amount
      from reserve.ledger_transactions t join reserve.ledger_entries e on e.transaction_id = t.id
      where t.payment_id = ${id} and t.kind in ('refund', 'chargeback') and e.direction = 'credit' and e.account = reserve.receivable_account('stripe')
      group by t.id order by t.posted_at, t.id`).map((r) => [r.kind as string, r.amount as number]),
  };
}
