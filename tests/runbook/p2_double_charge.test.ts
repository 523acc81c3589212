// P2: DOUBLE CHARGE. A guest pays the same stay in two browser tabs: the second charge is flagged by
// finalize and the P2 alert fires. refund_duplicate_charge queues the refund, the poller sends it to
// Stripe, Stripe's charge.refunded posts the ledger refund; the runbook's duplicate query comes back empty.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sqlState } from "../helpers/db.ts";
import { startE2E, until, type E2E } from "../helpers/e2e.ts";
import { isoDate, unit } from "../helpers/fixtures.ts";
import { asOperator, expectFires, expectResolved } from "../helpers/runbook.ts";

let e: E2E;
beforeAll(async () => {
  e = await startE2E();
});
afterAll(async () => {
  await e?.stop();
});

const duplicatesQuery = `
  SELECT booking_intent_id, COUNT(*) as payment_count, SUM(amount) as total_charged, array_agg(id) as payment_ids
  FROM reserve.payments
  WHERE status = 'succeeded' AND created_at > NOW() - INTERVAL '7 days'
  GROUP BY booking_intent_id HAVING COUNT(*) > 1;`;

describe("P2: double charge", () => {
  it("fires, and the duplicate is refunded through Stripe with its ledger entries", async () => {
    const { unitId } = await unit(e.db.sql);
    const token = e.userToken();
    const first = await e.checkout({ unit_id: unitId, check_in: isoDate(2), check_out: isoDate(4), guests: 2, method: "card" }, token);
    e.sandbox.control.stripeConfirm(first.body.gateway_payment_id, "declined");
    await until(async () => (await e.db.sql`select 1 from reserve.payments where id = ${first.body.payment_id} and status = 'failed'`)[0], "declined");
    const second = await e.post("checkout", { booking_intent_id: first.body.booking_intent_id, method: "card" }, { authorization: `Bearer ${token}` });
    e.sandbox.control.stripeConfirm(second.body.gateway_payment_id, "succeeded");
    await until(async () => (await e.db.sql`select 1 from reserve.reservations where booking_intent_id = ${first.body.booking_intent_id}`)[0], "reservation");
    e.sandbox.control.stripeConfirm(first.body.gateway_payment_id, "succeeded"); // the other tab
    await until(async () => (await e.db.sql`select 1 from reserve.payments where id = ${first.body.payment_id} and duplicate_of is not null`)[0], "flagged");

    await expectFires(e.db.sql, "double_charge", "P2", "P2: DOUBLE CHARGE");
    const [dup] = await e.db.sql.unsafe(duplicatesQuery);
    expect(dup.payment_count).toBe("2");

    // not a duplicate: refused
    expect(await sqlState(asOperator(e.db.sql, "oncall@reserve", (tx) =>
      tx`select reserve.refund_duplicate_charge(${second.body.payment_id}, 'guest says twice')`))).toBe("RC207");
    const [rr] = await asOperator(e.db.sql, "oncall@reserve", (tx) =>
      tx`select * from reserve.refund_duplicate_charge(${first.body.payment_id}, 'two tabs, INC-7')`);
    expect(rr).toMatchObject({ status: "requested", amount: "100000" });
    const [same] = await asOperator(e.db.sql, "oncall@reserve", (tx) =>
      tx`select * from reserve.refund_duplicate_charge(${first.body.payment_id}, 'asked again')`);
    expect(same.id).toBe(rr.id);

    // the poller sends it; Stripe's charge.refunded confirms it
    const run = await e.poll({}, []);
    expect(run.body.refunds_sent).toBe(1);
    await until(async () => (await e.db.sql`select 1 from reserve.payments where id = ${first.body.payment_id} and status = 'refunded'`)[0], "refunded");
    const [req] = await e.db.sql`select status, provider_refund_id from reserve.refund_requests where id = ${rr.id}`;
    expect(req.status).toBe("confirmed");
    expect(req.provider_refund_id).toMatch(/^re_/);

    expect(await e.db.sql.unsafe(duplicatesQuery)).toHaveLength(0);
    const [{ owed }] = await e.db.sql`select reserve.payment_ledger_balance(${first.body.payment_id}, array['refunds_payable']) as owed`;
    expect(Number(owed)).toBe(0);
    const [{ n }] = await e.db.sql`select count(*)::int as n from reserve.find_ledger_imbalances(current_date - 1)`;
    expect(n).toBe(0);
    await expectResolved(e.db.sql, "double_charge");
  });
});
