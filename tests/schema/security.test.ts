// Nothing in reserve is reachable by anon or authenticated; every table has RLS and a comment;
// every SECURITY DEFINER function pins its search_path.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, rolledBack, sqlState, type TestDatabase } from "../helpers/db.ts";

let db: TestDatabase;
let tables: string[];

beforeAll(async () => {
  db = await createTestDatabase();
  tables = (await db.sql`select tablename from pg_tables where schemaname = 'reserve' order by 1`).map((r) => r.tablename);
});
afterAll(async () => await db?.drop());

const RUNBOOK_TABLES = [
  "properties_map", "unit_map", "availability_calendar", "booking_intents", "booking_locks", "payments",
  "reservations", "processed_webhooks", "ledger_entries", "audit_logs", "audit_logs_archive", "retention_policies",
];

describe("schema reserve", () => {
  it("has every table the runbook names", () => {
    expect(tables).toEqual(expect.arrayContaining(RUNBOOK_TABLES));
  });

  it("has row level security on every table", async () => {
    const rows = await db.sql`
      select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = 'reserve' and c.relkind in ('r', 'p') and not c.relrowsecurity`;
    expect(rows.map((r) => r.relname)).toEqual([]);
  });

  it("has a comment on every table", async () => {
    const rows = await db.sql`
      select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = 'reserve' and c.relkind in ('r', 'p', 'v') and obj_description(c.oid, 'pg_class') is null`;
    expect(rows.map((r) => r.relname)).toEqual([]);
  });

  it("grants nothing to anon, authenticated or public", async () => {
    const grants = await db.sql`
      select grantee, table_name, privilege_type from information_schema.role_table_grants
      where table_schema = 'reserve' and grantee in ('anon', 'authenticated', 'PUBLIC')`;
    expect(grants).toEqual([]);
    const fns = await db.sql`
      select p.proname, r.rolname from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      cross join (values ('anon'), ('authenticated'), ('public')) as r(rolname)
      where n.nspname = 'reserve'
        and has_function_privilege(case r.rolname when 'public' then 'anon' else r.rolname end, p.oid, 'execute')`;
    expect(fns).toEqual([]);
  });

  it("pins search_path on every SECURITY DEFINER function", async () => {
    const rows = await db.sql`
      select p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where n.nspname = 'reserve' and p.prosecdef
        and not coalesce(p.proconfig @> array['search_path=""'], false)`;
    expect(rows.map((r) => r.proname)).toEqual([]);
  });
});

describe.each(["anon", "authenticated"])("as %s", (role) => {
  it("cannot read, insert, update or delete any reserve table", async () => {
    for (const table of tables) {
      for (const stmt of [
        `select * from reserve.${table} limit 1`,
        `insert into reserve.${table} default values`,
        `update reserve.${table} set ctid = ctid`,
        `delete from reserve.${table}`,
      ]) {
        const code = await rolledBack(db.sql, async (tx) => {
          await tx.unsafe(`set local role ${role}`);
          return await sqlState(tx.unsafe(stmt));
        });
        expect(code, `${role}: ${stmt}`).toBe("42501");
      }
    }
  });
});

describe.each(["reserve_operator", "reserve_ops_console"])("as %s (an operator's role, the console's login)", (role) => {
  it("may run what the functions it is granted call, when they run as their caller (SECURITY INVOKER)", async () => {
    const missing = await db.sql`
      select p.proname as caller, q.proname as callee
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      join pg_proc q on q.pronamespace = n.oid and p.prosrc ~ ('reserve\\.' || q.proname || '\\s*\\(')
      where n.nspname = 'reserve' and not p.prosecdef and has_function_privilege(${role}, p.oid, 'execute')
        and not has_function_privilege(${role}, q.oid, 'execute')
      order by 1, 2`;
    expect(missing).toEqual([]);
  });
});

describe("as service_role", () => {
  it("may run what the functions it is granted call, when they run as their caller (SECURITY INVOKER)", async () => {
    const missing = await db.sql`
      select p.proname as caller, q.proname as callee
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      join pg_proc q on q.pronamespace = n.oid and p.prosrc ~ ('reserve\\.' || q.proname || '\\s*\\(')
      where n.nspname = 'reserve' and not p.prosecdef and has_function_privilege('service_role', p.oid, 'execute')
        and not has_function_privilege('service_role', q.oid, 'execute')
      order by 1, 2`;
    expect(missing).toEqual([]);
    await rolledBack(db.sql, async (tx) => {
      await tx.unsafe("set local role service_role");
      const [r] = await tx`select (reserve.as_provider_update('{"status": "succeeded", "gateway_payment_id": "pi_1"}')).status,
                                  (reserve.as_webhook_event('{"provider": "stripe", "event_id": "evt_1", "event_type": "x"}')).event_id,
                                  (reserve.status_update('failed', null, null, null, null)).status as failed`;
      expect(r).toEqual({ status: "succeeded", event_id: "evt_1", failed: "failed" });
    });
  });

  it("reads every table (bypassing RLS) and writes none directly", async () => {
    for (const table of tables) {
      await rolledBack(db.sql, async (tx) => {
        await tx.unsafe("set local role service_role");
        await tx.unsafe(`select * from reserve.${table} limit 1`);
        expect(await sqlState(tx.unsafe(`delete from reserve.${table}`)), table).toBe("42501");
      });
    }
  });
});
