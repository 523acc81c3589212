// The audit trigger records who changed which row of money and booking tables, from what to what.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";

let db: TestDatabase;
beforeAll(async () => { db = await createTestDatabase(); });
afterAll(async () => await db?.drop());

describe("audit_logs", () => {
  it("records insert, update and delete with actor, old and new values", async () => {
    const { unitId } = await f.unit(db.sql, { nights: 2 });
    const i = await f.intent(db.sql, unitId);
    const p = await db.sql.begin(async (tx) => {
      await tx`select set_config('reserve.actor', 'ops:ana', true), set_config('reserve.reason', 'INC-42', true)`;
      const row = await f.payment(tx, i.id as string);
      await tx`update reserve.payments set status = 'processing' where id = ${row.id as string}`;
      return row;
    });
    const logs = await db.sql`
      select actor, action, reason, old_values ->> 'status' as old_status, new_values ->> 'status' as new_status
      from reserve.audit_trail where table_name = 'payments' and row_id = ${p.id as string} order by audit_id, change_no`;
    expect(logs).toEqual([
      { actor: "ops:ana", action: "INSERT", reason: "INC-42", old_status: null, new_status: "pending" },
      { actor: "ops:ana", action: "UPDATE", reason: "INC-42", old_status: "pending", new_status: "processing" },
    ]);
  });

  it("keys calendar rows by unit and date, and falls back to the database role as actor", async () => {
    const { unitId } = await f.unit(db.sql, { nights: 1 });
    const [night] = await db.sql`select date::text from reserve.availability_calendar where unit_id = ${unitId}`;
    await db.sql`update reserve.availability_calendar set is_blocked = true where unit_id = ${unitId}`;
    const [log] = await db.sql`
      select actor, row_id from reserve.audit_trail
      where table_name = 'availability_calendar' and action = 'UPDATE' and row_id like ${unitId + "%"}`;
    expect(log).toEqual({ actor: "postgres", row_id: `${unitId}:${night.date}` });
  });

  it("names the role that acted when no actor is set, not the trigger's owner", async () => {
    const { unitId } = await f.unit(db.sql, { nights: 1 });
    await db.sql.begin(async (tx) => {
      await tx`create role ops_ana nologin bypassrls`; // an operator role, as the SQL editor would use
      await tx`grant usage on schema reserve to ops_ana`;
      await tx`grant select, update on reserve.availability_calendar to ops_ana`;
      await tx`set local role ops_ana`;
      await tx`update reserve.availability_calendar set is_blocked = true where unit_id = ${unitId}`;
      await tx`reset role`;
      const [log] = await tx`
        select actor from reserve.audit_trail
        where table_name = 'availability_calendar' and action = 'UPDATE' and row_id like ${unitId + "%"}`;
      expect(log.actor).toBe("ops_ana");
      await tx`drop owned by ops_ana`;
      await tx`drop role ops_ana`;
    });
  });

  it("covers payments, reservations, booking intents, availability and the ledger", async () => {
    const rows = await db.sql`
      select distinct c.relname from pg_trigger t join pg_class c on c.oid = t.tgrelid
      join pg_proc p on p.oid = t.tgfoid
      where p.proname = 'audit_row_change' order by 1`;
    expect(rows.map((r) => r.relname)).toEqual([
      "alert_routes", "alert_rules", "alert_silences", "availability_calendar", "booking_intents", "incident_action_items", "incidents",
      "ledger_corrections", "money_discrepancies", "operator_logins", "ops_blocks", "payments", "poll_policies", "refund_requests", "reservations", "settings",
    ]);
  });

  it("groups the rows of one database transaction", async () => {
    const { unitId } = await f.unit(db.sql, { nights: 2 });
    const ids = await db.sql.begin(async (tx) => {
      const a = await f.intent(tx, unitId);
      const b = await f.intent(tx, unitId);
      return [a.id as string, b.id as string];
    });
    const [{ n }] = await db.sql`
      select count(distinct xact_id)::int as n from reserve.audit_trail
      where table_name = 'booking_intents' and row_id in ${db.sql(ids)}`;
    expect(n).toBe(1);
  });
});
