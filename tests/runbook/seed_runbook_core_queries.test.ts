// The seed runbook's SQL that names the booking core's functions and views, pasted as written
// (placeholders filled with real ids): finalize_reservation with named arguments, the overbooking
// queries, the ledger checks. Each returns what the runbook says to expect.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type Sql, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";

let db: TestDatabase;
let sql: Sql;
let paid: { unitId: string; intentId: string; paymentId: string };
beforeAll(async () => {
  db = await createTestDatabase();
  sql = db.sql;
  const { unitId } = await f.unit(sql, { nights: 10 });
  const [bi] = await sql`select * from reserve.create_booking_intent(${unitId}, ${f.isoDate(2)}, ${f.isoDate(4)}, 2)`;
  const [p] = await sql`select * from reserve.create_payment(${bi.id}, 'stripe', 'card', ${bi.amount})`;
  // succeeded at Stripe; our webhook never came (P1 webhook down), then the runbook's manual update
  await sql.unsafe(`
    UPDATE reserve.payments
    SET status = 'succeeded',
        succeeded_at = COALESCE(succeeded_at, NOW()),
        metadata = metadata || '{"manual_recovery": "processing_stuck"}'::jsonb
    WHERE id = '${p.id}';`);
  paid = { unitId, intentId: bi.id, paymentId: p.id };
});
afterAll(async () => await db?.drop());

const q = (text: string) => sql.unsafe(text);

describe("P1 payment succeeded but no reservation", () => {
  it("finds the payment, finalizes it with named arguments, and verifies as the runbook says", async () => {
    const affected = await q(`
      SELECT
        p.id as payment_id,
        p.booking_intent_id,
        p.succeeded_at,
        r.id as reservation_id,
        r.confirmation_code
      FROM reserve.payments p
      LEFT JOIN reserve.reservations r ON p.booking_intent_id = r.booking_intent_id
      WHERE p.status = 'succeeded'
      AND r.id IS NULL
      AND p.succeeded_at > NOW() - INTERVAL '24 hours';`);
    expect(affected.map((a) => a.payment_id)).toEqual([paid.paymentId]);

    const [result] = await q(`
      SELECT * FROM reserve.finalize_reservation(
        p_payment_id := '${paid.paymentId}',
        p_webhook_id := NULL
      );`);
    expect(result).toMatchObject({ success: true, error_message: null });
    expect(result.confirmation_code).toMatch(/^RES-\d{4}-[A-Z0-9]{6}$/);

    const reservations = await q(`SELECT * FROM reserve.reservations
      WHERE booking_intent_id = '${paid.intentId}';`);
    expect(reservations).toHaveLength(1);
    const [intent] = await q(`SELECT status FROM reserve.booking_intents
      WHERE id = '${paid.intentId}';`);
    expect(intent.status).toBe("converted");
    const [again] = await q(`SELECT * FROM reserve.finalize_reservation('${paid.paymentId}', NULL);`);
    expect(again).toMatchObject({ success: true, reservation_id: result.reservation_id, confirmation_code: result.confirmation_code });
  });
});

describe("P1 overbooking detected", () => {
  it("runs the immediate checks and the investigation queries", async () => {
    expect(await q(`SELECT * FROM reserve.overbooking_check;`)).toEqual([]);
    const conflicts = await q(`
      SELECT
        r1.id as res1_id,
        r2.id as res2_id,
        r1.unit_id,
        r1.check_in,
        r1.check_out,
        r1.status as res1_status,
        r2.status as res2_status
      FROM reserve.reservations r1
      JOIN reserve.reservations r2 ON r1.unit_id = r2.unit_id
        AND r1.id != r2.id
        AND (r1.check_in, r1.check_out) OVERLAPS (r2.check_in, r2.check_out)
      WHERE r1.status IN ('confirmed', 'checked_in', 'host_commit_pending')
      AND r2.status IN ('confirmed', 'checked_in', 'host_commit_pending')
      AND r1.check_in > CURRENT_DATE;`);
    expect(conflicts).toEqual([]);
    const [bi] = await sql`select * from reserve.create_booking_intent(${paid.unitId}, ${f.isoDate(6)}, ${f.isoDate(8)}, 1)`;
    const held = await q(`SELECT * FROM reserve.active_booking_locks
      WHERE unit_id = '${paid.unitId}';`);
    expect(held.map((l) => [l.booking_intent_id, l.status])).toEqual([[bi.id, "held"], [bi.id, "held"]]);
    const history = await q(`
      SELECT * FROM reserve.booking_locks
      WHERE unit_id = '${paid.unitId}'
      AND lock_date BETWEEN '${f.isoDate(2)}' AND '${f.isoDate(8)}'
      ORDER BY created_at;`);
    expect(history.map((l) => l.status).sort()).toEqual(["converted", "converted", "held", "held"]);
  });
});

describe("P1 ledger imbalance", () => {
  it("finds nothing, the trigger is enabled, and the balance check says OK", async () => {
    expect(await q(`SELECT * FROM reserve.find_ledger_imbalances(NOW()::date - 7);`)).toEqual([]);
    expect(await q(`SELECT * FROM reserve.find_ledger_imbalances(NOW()::date);`)).toEqual([]);
    const [trigger] = await q(`
      SELECT tgenabled
      FROM pg_trigger
      WHERE tgname = 'trg_ledger_balance';`);
    expect(trigger.tgenabled).toBe("O");
    await q(`
      ALTER TABLE reserve.ledger_entries
      ENABLE TRIGGER trg_ledger_balance;`);
    const check = await q(`
      SELECT * FROM reserve.ledger_balance_check
      LIMIT 5;`);
    expect(check.length).toBeGreaterThan(0);
    expect(check.every((row) => row.status === "OK")).toBe(true);
  });
});
