// P1: PAYMENT SUCCEEDED BUT NO RESERVATION. It happens the way the old runbook did it by hand: someone
// marks a payment succeeded with an UPDATE and never finalizes. The alert fires at P1; the runbook's
// finalize_reservation call creates the reservation; its verification queries say so.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { isoDate, unit } from "../helpers/fixtures.ts";
import { attachGateway } from "../helpers/money.ts";
import { expectFires, expectResolved } from "../helpers/runbook.ts";

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => await db?.drop());

describe("P1: payment succeeded but no reservation", () => {
  it("fires, and finalize_reservation (as the runbook writes it) repairs it", async () => {
    const { unitId } = await unit(db.sql);
    const [c] = await db.sql`select * from reserve.begin_checkout('guest-1', 'card', 'stripe', ${unitId}, ${isoDate(2)}, ${isoDate(4)}, 2)`;
    await attachGateway(db.sql, c.payment_id as string, "pi_paid_by_hand");
    // the fault: a direct UPDATE (the old runbook's "Option 2") without the finalize that should follow
    await db.sql`update reserve.payments set status = 'succeeded', succeeded_at = now() - interval '10 minutes' where id = ${c.payment_id}`;

    await expectFires(db.sql, "paid_without_reservation", "P1", "P1: PAYMENT SUCCEEDED BUT NO RESERVATION");

    // Immediate checks, as written
    const affected = await db.sql.unsafe(`
      SELECT p.id as payment_id, p.booking_intent_id, p.succeeded_at, r.id as reservation_id, r.confirmation_code
      FROM reserve.payments p
      LEFT JOIN reserve.reservations r ON p.booking_intent_id = r.booking_intent_id
      WHERE p.status = 'succeeded' AND r.id IS NULL AND p.succeeded_at > NOW() - INTERVAL '24 hours';`);
    expect(affected.map((a) => a.payment_id)).toEqual([c.payment_id]);

    // Resolution, as written (placeholder filled in)
    const [f] = await db.sql.unsafe(`SELECT * FROM reserve.finalize_reservation(p_payment_id := '${c.payment_id}', p_webhook_id := NULL);`);
    expect(f).toMatchObject({ success: true, outcome: "created" });

    // Verification, as written
    const rs = await db.sql.unsafe(`SELECT * FROM reserve.reservations WHERE booking_intent_id = '${c.booking_intent_id}';`);
    expect(rs).toHaveLength(1);
    const [bi] = await db.sql.unsafe(`SELECT status FROM reserve.booking_intents WHERE id = '${c.booking_intent_id}';`);
    expect(bi.status).toBe("converted");
    await expectResolved(db.sql, "paid_without_reservation");
    const [{ n }] = await db.sql`select count(*)::int as n from reserve.find_ledger_imbalances(current_date - 1)`;
    expect(n).toBe(0);
  });
});
