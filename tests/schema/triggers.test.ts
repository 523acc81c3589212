// Columns the database keeps right by itself, whoever writes the row.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, rolledBack, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";

let db: TestDatabase;
let unitId: string;
beforeAll(async () => {
  db = await createTestDatabase();
  ({ unitId } = await f.unit(db.sql, { nights: 10 }));
});
afterAll(async () => await db?.drop());

describe("payments.status_changed_at", () => {
  it("moves when the status changes and only then", async () => {
    await rolledBack(db.sql, async (tx) => {
      const p = await f.payment(tx, (await f.intent(tx, unitId)).id as string);
      // now() is the transaction's start, so compare with clock_timestamp() stamps set by hand
      await tx`update reserve.payments set status_changed_at = '2000-01-01' where id = ${p.id as string}`;
      const [meta] = await tx`
        update reserve.payments set metadata = metadata || '{"polled": 1}'
        where id = ${p.id as string} returning status_changed_at`;
      expect(meta.status_changed_at.toISOString()).toBe("2000-01-01T00:00:00.000Z");
      const [moved] = await tx`
        update reserve.payments set status = 'processing'
        where id = ${p.id as string} returning status_changed_at, now() as now`;
      expect(moved.status_changed_at).toEqual(moved.now);
    });
  });
});

describe("reservations filled from their booking intent", () => {
  it("takes unit, dates, guests, amount and the paying payment from the intent", async () => {
    await rolledBack(db.sql, async (tx) => {
      const i = await f.intent(tx, unitId, { guests: 3, amount: 123400 });
      const p = await f.payment(tx, i.id as string, { status: "succeeded", succeeded_at: new Date(), amount: 123400 });
      const [r] = await tx`
        insert into reserve.reservations (booking_intent_id, confirmation_code)
        values (${i.id as string}, ${f.confirmationCode()})
        returning unit_id, check_in, check_out, guests, total_amount, payment_id`;
      expect(r).toEqual({
        unit_id: unitId, check_in: i.check_in, check_out: i.check_out, guests: 3, total_amount: "123400", payment_id: p.id,
      });
    });
  });

  it("keeps what the writer gave", async () => {
    await rolledBack(db.sql, async (tx) => {
      const i = await f.intent(tx, unitId);
      const r = await f.reservation(tx, i, { guests: 1, check_out: f.isoDate(2) });
      expect(r.guests).toBe(1);
      expect(r.nights).toBe(1);
    });
  });
});

describe("booking_locks", () => {
  it("lets an intent hold a night again after its earlier hold was released, keeping the history", async () => {
    await rolledBack(db.sql, async (tx) => {
      const i = await f.intent(tx, unitId);
      const lock = { booking_intent_id: i.id as string, unit_id: unitId, lock_date: f.isoDate(1), expires_at: new Date(Date.now() + 60_000) };
      const first = await f.insert(tx, "booking_locks", lock);
      await tx`update reserve.booking_locks set status = 'released', released_at = now() where id = ${first.id as string}`;
      await f.insert(tx, "booking_locks", lock);
      const [{ n }] = await tx`select count(*)::int as n from reserve.booking_locks where booking_intent_id = ${i.id as string}`;
      expect(n).toBe(2);
    });
  });
});
