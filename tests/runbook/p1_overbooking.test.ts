// P1: OVERBOOKING DETECTED. The fault as it happens: the runbook's old manual move of a reservation,
// run with the triggers bypassed (session_replication_role = replica), puts a third stay on a unit that
// sells two a night. The P1 alert fires at once; the runbook's steps, done with the functions: block the
// unit, move the stay to a free unit, recount (Step 4). overbooking_check is empty again.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { isoDate, unit } from "../helpers/fixtures.ts";
import { asOperator, expectFires, expectResolved, operatorName, paidStay } from "../helpers/runbook.ts";

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => await db?.drop());

describe("P1: overbooking", () => {
  it("fires at once, and block + move + rebuild resolve it", async () => {
    const a = await unit(db.sql, { allotment: 2 });
    const b = await unit(db.sql, { allotment: 2 });
    const c = await unit(db.sql, { allotment: 2 });
    const [inn, out] = [isoDate(5), isoDate(8)];
    await paidStay(db.sql, a.unitId, inn, out);
    await paidStay(db.sql, a.unitId, inn, out);
    const third = await paidStay(db.sql, c.unitId, inn, out);
    // the fault: a manual move with the guards off
    await db.sql.begin(async (tx) => {
      await tx`set local session_replication_role = replica`;
      await tx`update reserve.reservations set unit_id = ${a.unitId} where id = ${third.reservationId}`;
    });

    await expectFires(db.sql, "overbooking", "P1", "P1: OVERBOOKING DETECTED");
    await expectFires(db.sql, "availability_counter_drift", "P2", "P1: OVERBOOKING DETECTED");

    // Immediate checks, as written
    const oversold = await db.sql.unsafe(`SELECT * FROM reserve.overbooking_check;`);
    expect(new Set(oversold.map((o) => o.unit_id))).toEqual(new Set([a.unitId]));
    await db.sql.unsafe(`
      SELECT r1.id as res1_id, r2.id as res2_id, r1.unit_id, r1.check_in, r1.check_out, r1.status as res1_status, r2.status as res2_status
      FROM reserve.reservations r1
      JOIN reserve.reservations r2 ON r1.unit_id = r2.unit_id AND r1.id != r2.id
        AND (r1.check_in, r1.check_out) OVERLAPS (r2.check_in, r2.check_out)
      WHERE r1.status IN ('confirmed', 'checked_in', 'host_commit_pending')
      AND r2.status IN ('confirmed', 'checked_in', 'host_commit_pending')
      AND r1.check_in > CURRENT_DATE;`);

    await asOperator(db.sql, "oncall@reserve", async (tx) => {
      // Step 1: stop new bookings of the unit
      const [blocked] = await tx`select * from reserve.block_unit_dates(${a.unitId}, current_date, current_date + 30, 'overbooking INC-1')`;
      expect(blocked.live_reservations).toBe(3);
      // counters cannot say more than the allotment: a recount now reports the oversold nights
      const [early] = await tx`select * from reserve.rebuild_unit_availability(${a.unitId}, current_date, 'INC-1')`;
      expect(early.nights_oversold).toBe(3);
      // Step 3, option A: move the last one to a free unit
      const [moved] = await tx`select * from reserve.move_reservation(${third.reservationId}, ${b.unitId}, 'overbooking INC-1: moved to a twin unit')`;
      expect(moved.unit_id).toBe(b.unitId);
      // Step 4: recount the units the bypassed move left wrong
      await tx`select * from reserve.rebuild_unit_availability(${a.unitId}, current_date, 'INC-1 step 4')`;
      await tx`select * from reserve.rebuild_unit_availability(${c.unitId}, current_date, 'INC-1 step 4')`;
    });

    expect(await db.sql.unsafe(`SELECT * FROM reserve.overbooking_check;`)).toHaveLength(0);
    expect(await db.sql`select * from reserve.availability_counter_drift`).toHaveLength(0);
    const [audit] = await db.sql`select actor, reason from reserve.audit_trail where table_name = 'reservations' and row_id = ${third.reservationId}
                                 order by audit_id desc, change_no desc limit 1`;
    expect(audit.actor).toBe(operatorName(db.sql, "oncall@reserve"));
    expect(audit.reason).toContain("move_reservation");
    await expectResolved(db.sql, "overbooking");
    await expectResolved(db.sql, "availability_counter_drift");
  });
});
