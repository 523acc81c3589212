// supabase/schema/ is the schema as the migrations leave it, committed for reading. It goes stale the
// moment a migration changes something without `npm run schema:dump`: this dumps a clone of the test
// template (migrated once per run, exactly as the dump's own fresh database) and compares, file by file.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dumpSchema, readSchemaDir } from "../../scripts/schema_dump.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";

let db: TestDatabase;
let fresh: Map<string, string>;
beforeAll(async () => {
  db = await createTestDatabase();
  fresh = await dumpSchema(db.url);
});
afterAll(async () => {
  await db?.drop();
});

describe("supabase/schema (the present-state dump)", () => {
  it("matches what the migrations build: run `npm run schema:dump` and commit supabase/schema when this fails", async () => {
    const committed = await readSchemaDir();
    const missing = [...fresh.keys()].filter((f) => !committed.has(f));
    const extra = [...committed.keys()].filter((f) => !fresh.has(f));
    const changed = [...fresh.keys()].filter((f) => committed.has(f) && committed.get(f) !== fresh.get(f));
    const stale = [
      ...missing.map((f) => `missing ${f}`), ...extra.map((f) => `no longer in the schema ${f}`), ...changed.map((f) => `stale ${f}`),
    ];
    expect(stale, "supabase/schema is stale: run `npm run schema:dump` and commit the result").toEqual([]);
  });

  it("holds every table, view and function of schema reserve, and the reference rows", async () => {
    const [n] = await db.sql`
      select (select count(*) from pg_class where relnamespace = 'reserve'::regnamespace and relkind in ('r', 'p')
                and not (relispartition and pg_get_expr(relpartbound, oid) <> 'DEFAULT'))::int as tables,
             (select count(*) from pg_class where relnamespace = 'reserve'::regnamespace and relkind = 'v')::int as views,
             (select count(distinct proname) from pg_proc where pronamespace = 'reserve'::regnamespace)::int as functions`;
    const count = (dir: string) => [...fresh.keys()].filter((k) => k.startsWith(dir)).length;
    expect({ tables: count("tables/"), views: count("views/"), functions: count("functions/") }).toEqual(n);
    for (const f of ["tables/payments.sql", "views/ops_dashboard_summary.sql", "functions/process_webhook_event.sql",
      "data/error_codes.sql", "data/settings.sql", "data/alert_rules.sql", "schema.sql"]) {
      expect(fresh.has(f), f).toBe(true);
    }
    const payments = fresh.get("tables/payments.sql")!;
    for (const part of ["create table reserve.payments (", "add constraint payments_refunded_in_full_check", "CREATE UNIQUE INDEX payments_one_active_per_intent",
      "CREATE TRIGGER _900_audit", "alter table reserve.payments enable row level security;", "comment on table reserve.payments is",
      "grant select on table reserve.payments to service_role;"]) {
      expect(payments).toContain(part);
    }
  });

  it("is the same bytes from two dumps: no OIDs, no timestamps, sorted", async () => {
    const again = await dumpSchema(db.url);
    expect([...again]).toEqual([...fresh]);
    const all = [...fresh.values()].join("\n");
    expect(all).not.toMatch(/\b20\d\d-\d\d-\d\d[ T]\d\d:\d\d/); // the time of migrating
    expect(all).not.toMatch(/\boid\s*[=:]\s*\d{4,}/i);
  });
});
