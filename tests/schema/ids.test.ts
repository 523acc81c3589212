// Ids are time-ordered UUIDs (version 7): every reserve table keyed by a UUID defaults to one expression
// over pg_catalog (no function of ours, so nothing to call per row and no search_path to pin) that makes
// a valid RFC 9562 version 7 UUID whose first 48 bits are the time it was made. A paid stay's rows carry them.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";
import { paidStay } from "../helpers/runbook.ts";

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => await db?.drop());

const V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
/** The Unix milliseconds a version 7 UUID says it was made at. */
const msOf = (id: string) => parseInt(id.replace(/-/g, "").slice(0, 12), 16);

/** The default expression of reserve.payments.id, as the catalog holds it. */
async function idDefault(): Promise<string> {
  const [d] = await db.sql<{ expr: string }[]>`
    select pg_get_expr(d.adbin, d.adrelid) as expr from pg_attrdef d
    join pg_attribute a on a.attrelid = d.adrelid and a.attnum = d.adnum
    where d.adrelid = 'reserve.payments'::regclass and a.attname = 'id'`;
  return d.expr;
}

/** That default, evaluated n times on its own. */
async function newIds(n: number): Promise<string[]> {
  const [r] = await db.sql.unsafe(`select array_agg((${await idDefault()})::text order by g) as ids from generate_series(1, ${n}) g`);
  return r.ids as string[];
}

describe("ids of new rows", () => {
  it("default to one time-ordered UUID expression on every UUID key of reserve; none to a random UUID", async () => {
    const defaults = await db.sql<{ table_name: string; column_name: string; column_default: string }[]>`
      select c.table_name, c.column_name, c.column_default from information_schema.columns c
      where c.table_schema = 'reserve' and c.data_type = 'uuid' and c.column_default is not null
      order by 1, 2`;
    expect(defaults.filter((d) => d.column_default === "gen_random_uuid()")).toEqual([]);
    const keyed = defaults.filter((d) => d.column_default.includes("uuid_send(gen_random_uuid())"));
    expect(new Set(keyed.map((d) => d.column_default)).size).toBe(1);
    const tables = keyed.map((d) => d.table_name);
    for (const t of ["payments", "booking_intents", "booking_locks", "reservations", "ledger_transactions", "ledger_entries",
                     "processed_webhooks", "refund_requests", "money_discrepancies", "properties_map", "unit_map"]) {
      expect(tables).toContain(t);
    }
    expect(keyed.some((d) => d.table_name === "processed_webhook_keys" && d.column_name === "webhook_id")).toBe(true);
  });

  it("are distinct RFC 9562 version 7 UUIDs carrying the time they were made, later ones sorting later", async () => {
    const before = Date.now();
    const first = await newIds(2000);
    await db.sql`select pg_sleep(0.005)`;
    const [later] = await newIds(1);
    const after = Date.now();
    expect(new Set(first).size).toBe(2000);
    for (const id of [...first, later]) {
      expect(id).toMatch(V7);
      expect(msOf(id)).toBeGreaterThanOrEqual(before - 1000); // the database's clock, within a second of ours
      expect(msOf(id)).toBeLessThanOrEqual(after + 1000);
    }
    expect(later > first.reduce((a, b) => (a > b ? a : b))).toBe(true);
  });

  it("call no function of ours: the default names only pg_catalog", async () => {
    const expr = await idDefault();
    expect(expr).toContain("gen_random_uuid()");
    expect(expr).not.toMatch(/\breserve\./);
  });

  it("gives a paid stay's payment, intent, reservation, ledger transaction and webhook row time-ordered ids", async () => {
    const { unitId } = await f.unit(db.sql, { nights: 10 });
    const started = Date.now();
    const stay = await paidStay(db.sql, unitId, f.isoDate(2), f.isoDate(4));
    const [ids] = await db.sql<{ payment: string; intent: string; reservation: string; ledger: string; webhook: string; lock: string }[]>`
      select p.id::text as payment, bi.id::text as intent, r.id::text as reservation,
             (select t.id::text from reserve.ledger_transactions t where t.payment_id = p.id limit 1) as ledger,
             (select w.id::text from reserve.processed_webhooks w where w.payment_id = p.id limit 1) as webhook,
             (select l.id::text from reserve.booking_locks l where l.booking_intent_id = bi.id limit 1) as lock
      from reserve.payments p join reserve.booking_intents bi on bi.id = p.booking_intent_id
      join reserve.reservations r on r.payment_id = p.id
      where p.id = ${stay.paymentId}`;
    for (const id of Object.values(ids)) {
      expect(id).toMatch(V7);
      expect(Math.abs(msOf(id) - started)).toBeLessThan(60_000);
    }
    // made in this order: the intent with its holds, then the payment, then the reservation
    expect(msOf(ids.intent)).toBeLessThanOrEqual(msOf(ids.payment));
    expect(msOf(ids.payment)).toBeLessThanOrEqual(msOf(ids.reservation));
  });
});
