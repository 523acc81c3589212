// P2: PAYMENT STUCK IN PROCESSING. Stripe says processing, then its later events are lost; an hour on
// the payment is stuck. Option 2 of the runbook, done with recover_payment by a named operator after
// checking Stripe's dashboard: the payment succeeds and is finalized in the same call.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sqlState } from "../helpers/db.ts";
import { startE2E, until, type E2E } from "../helpers/e2e.ts";
import { isoDate, unit } from "../helpers/fixtures.ts";
import { paidInFull, recoverPayment } from "../helpers/money.ts";
import { asOperator, expectFires, expectResolved, operatorName } from "../helpers/runbook.ts";

let e: E2E;
beforeAll(async () => {
  e = await startE2E();
});
afterAll(async () => {
  await e?.stop();
});

describe("P2: payment stuck in processing", () => {
  it("fires past an hour in processing, and recover_payment confirms it", async () => {
    const { unitId } = await unit(e.db.sql);
    const res = await e.checkout({ unit_id: unitId, check_in: isoDate(2), check_out: isoDate(4), guests: 2, method: "card" });
    e.sandbox.control.stripeConfirm(res.body.gateway_payment_id, "processing");
    await until(async () => (await e.db.sql`select 1 from reserve.payments where id = ${res.body.payment_id} and status = 'processing'`)[0], "processing");
    e.sandbox.control.setWebhookMode("stripe", "drop");
    e.sandbox.control.stripeSettle(res.body.gateway_payment_id, "succeeded");
    await e.sandbox.control.flush();
    await e.db.sql`update reserve.payments set status_changed_at = now() - interval '2 hours' where id = ${res.body.payment_id}`;

    await expectFires(e.db.sql, "stuck_payments", "P2", "P2: PAYMENT STUCK IN PROCESSING");
    const stuck = await e.db.sql.unsafe(`SELECT * FROM reserve.stuck_payments;`);
    expect(stuck.map((s) => s.payment_id)).toEqual([res.body.payment_id]);
    expect(stuck[0]).toMatchObject({ provider: "stripe", status: "processing" });

    // a recovery needs a proven operator: the shared login proves nobody
    expect(await sqlState(recoverPayment(e.db.sql, res.body.payment_id, paidInFull(res.body.amount), "Stripe shows succeeded"))).toBe("RC604");
    const [r] = await asOperator(e.db.sql, "oncall@reserve", (tx) =>
      recoverPayment(tx, res.body.payment_id, paidInFull(res.body.amount), "Stripe dashboard: pi succeeded at 03:12"));
    expect(r).toMatchObject({ previous_status: "processing", status: "succeeded", outcome: "applied", finalize_outcome: "created" });
    // idempotent: a second operator doing the same changes nothing
    const [again] = await asOperator(e.db.sql, "second@reserve", (tx) =>
      recoverPayment(tx, res.body.payment_id, paidInFull(res.body.amount), "double check"));
    expect(again).toMatchObject({ outcome: "unchanged", finalize_outcome: "already_finalized" });

    expect(await e.db.sql.unsafe(`SELECT * FROM reserve.stuck_payments;`)).toHaveLength(0);
    const [audit] = await e.db.sql`select actor, reason from reserve.audit_trail where table_name = 'payments' and row_id = ${res.body.payment_id}
                                   and new_values ->> 'status' = 'succeeded' order by audit_id, change_no limit 1`;
    expect(audit).toMatchObject({ actor: operatorName(e.db.sql, "oncall@reserve") });
    expect(audit.reason).toContain("recover_payment");
    // the lost webhook arrives later: a no-op
    e.sandbox.control.setWebhookMode("stripe", "deliver");
    for (const d of e.sandbox.control.deliveries().filter((x) => x.status === "dropped")) await e.sandbox.control.redeliver(d.eventId);
    const [{ n }] = await e.db.sql`select count(*)::int as n from reserve.reservations where booking_intent_id = ${res.body.booking_intent_id}`;
    expect(n).toBe(1);
    await expectResolved(e.db.sql, "stuck_payments");
  });
});
