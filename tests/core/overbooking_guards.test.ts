// The belts behind the braces: even a writer that skips our functions and triggers cannot oversell.
// The capacity CHECK refuses counters beyond the allotment; the exclusion constraint refuses
// overlapping live stays of a one-per-night unit when the counting triggers are bypassed.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, rolledBack, sqlState, type Sql, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";

let db: TestDatabase;
let sql: Sql;
beforeAll(async () => {
  db = await createTestDatabase();
  sql = db.sql;
});
afterAll(async () => await db?.drop());

describe("availability_calendar_capacity_check", () => {
  it("refuses a hand-edited counter beyond the allotment", async () => {
    const { unitId } = await f.unit(sql, { nights: 2 });
    const code = await rolledBack(sql, (tx) =>
      sqlState(tx`update reserve.availability_calendar set bookings_count = 1, temp_holds = 1 where unit_id = ${unitId}`));
    expect(code).toBe("23514");
  });

  it("refuses lowering the allotment below what is sold", async () => {
    const { unitId } = await f.unit(sql, { nights: 2, allotment: 2 });
    await sql`select reserve.create_booking_intent(${unitId}, ${f.isoDate(1)}, ${f.isoDate(2)}, 1)`;
    await sql`select reserve.create_booking_intent(${unitId}, ${f.isoDate(1)}, ${f.isoDate(2)}, 1)`;
    const code = await rolledBack(sql, (tx) =>
      sqlState(tx`update reserve.availability_calendar set allotment = 1 where unit_id = ${unitId} and date = ${f.isoDate(1)}`));
    expect(code).toBe("23514");
  });
});

describe("reservations_no_overlap", () => {
  it("refuses a second live stay on a one-per-night unit even with every trigger skipped", async () => {
    const { unitId, propertyId, cityCode } = await f.unit(sql, { nights: 5 });
    const code = await rolledBack(sql, async (tx) => {
      await f.reservation(tx, await f.intent(tx, unitId, { check_in: f.isoDate(1), check_out: f.isoDate(3) }));
      const later = await f.intent(tx, unitId, { check_in: f.isoDate(2), check_out: f.isoDate(4) });
      await tx`set local session_replication_role = replica`;
      // what the skipped triggers would have filled in
      return sqlState(f.reservation(tx, later, { sole_occupancy: true, property_id: propertyId, city_code: cityCode }));
    });
    expect(code).toBe("23P01");
  });

  it("lets stays meet at the checkout day, and lets a cancelled stay overlap", async () => {
    const { unitId } = await f.unit(sql, { nights: 5 });
    await rolledBack(sql, async (tx) => {
      await f.reservation(tx, await f.intent(tx, unitId, { check_in: f.isoDate(1), check_out: f.isoDate(3) }), {
        status: "cancelled", cancellation_reason: "guest",
      });
      await f.reservation(tx, await f.intent(tx, unitId, { check_in: f.isoDate(1), check_out: f.isoDate(3) }));
      await f.reservation(tx, await f.intent(tx, unitId, { check_in: f.isoDate(3), check_out: f.isoDate(5) }));
      const [n] = await tx`select count(*)::int from reserve.reservations where unit_id = ${unitId} and status <> 'cancelled'`;
      expect(n.count).toBe(2);
    });
  });

  it("does not apply to units that sell several stays a night; their counters do", async () => {
    const { unitId } = await f.unit(sql, { nights: 3, allotment: 2 });
    await rolledBack(sql, async (tx) => {
      const a = await f.reservation(tx, await f.intent(tx, unitId));
      const b = await f.reservation(tx, await f.intent(tx, unitId));
      expect([a.sole_occupancy, b.sole_occupancy]).toEqual([false, false]);
      expect(await sqlState(f.reservation(tx, await f.intent(tx, unitId)))).toBe("RC106");
    });
  });
});

describe("overbooking_check", () => {
  it("shows the nights sold beyond their allotment once a guard was removed", async () => {
    const { unitId } = await f.unit(sql, { nights: 2 });
    const rows = await rolledBack(sql, async (tx) => {
      await tx`alter table reserve.availability_calendar drop constraint availability_calendar_capacity_check`;
      await tx`update reserve.availability_calendar set bookings_count = 2 where unit_id = ${unitId} and date = ${f.isoDate(1)}`;
      return tx.unsafe(`SELECT * FROM reserve.overbooking_check;`);
    });
    expect(rows).toEqual([expect.objectContaining({ unit_id: unitId, allotment: 1, bookings_count: 2, oversold_by: 1 })]);
    expect(await sql`select * from reserve.overbooking_check`).toEqual([]);
  });
});

describe("overbooking_check, when the counting triggers were bypassed", () => {
  it("counts the live reservations themselves, so an overbooking written around the triggers shows", async () => {
    const { unitId, propertyId, cityCode } = await f.unit(sql, { nights: 3, allotment: 2 });
    const rows = await rolledBack(sql, async (tx) => {
      const stays = [];
      for (let i = 0; i < 3; i++) stays.push(await f.intent(tx, unitId));
      await tx`set local session_replication_role = replica`;
      for (const i of stays) {
        await f.reservation(tx, i, { sole_occupancy: false, property_id: propertyId, city_code: cityCode });
      }
      await tx`set local session_replication_role = origin`;
      return tx.unsafe(`SELECT * FROM reserve.overbooking_check;`);
    });
    expect(rows.map((r) => [r.date.toISOString().slice(0, 10), r.allotment, r.bookings_count, r.live_reservations, r.oversold_by]))
      .toEqual([[f.isoDate(1), 2, 0, 3, 1], [f.isoDate(2), 2, 0, 3, 1]]);
  });
});
