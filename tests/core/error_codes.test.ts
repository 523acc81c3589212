// Our SQLSTATEs live in one place: every code a migration raises is listed in reserve.error_codes,
// and supabase/functions/_shared/db_errors.ts (what the edge functions map to HTTP) says exactly the same.
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DB_ERRORS, domainError } from "../../supabase/functions/_shared/db_errors.ts";
import { projectRoot } from "../../local/migrate.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";

let db: TestDatabase;
beforeAll(async () => (db = await createTestDatabase()));
afterAll(async () => await db?.drop());

async function codesRaisedInMigrations(): Promise<Set<string>> {
  const dir = path.join(projectRoot, "supabase", "migrations");
  const codes = new Set<string>();
  for (const file of await readdir(dir)) {
    const text = await readFile(path.join(dir, file), "utf8");
    for (const m of text.matchAll(/errcode\s*=\s*'(RC\d{3})'/g)) codes.add(m[1]);
  }
  return codes;
}

describe("error codes", () => {
  it("lists every code the migrations raise", async () => {
    const listed = new Set((await db.sql`select sqlstate from reserve.error_codes`).map((r) => r.sqlstate as string));
    const raised = await codesRaisedInMigrations();
    expect(raised.size).toBeGreaterThan(20);
    expect([...raised].filter((c) => !listed.has(c))).toEqual([]);
  });

  it("has no listed code that nothing raises", async () => {
    const raised = await codesRaisedInMigrations();
    const listed = (await db.sql`select sqlstate from reserve.error_codes`).map((r) => r.sqlstate as string);
    expect(listed.filter((c) => !raised.has(c))).toEqual([]);
  });

  it("matches supabase/functions/_shared/db_errors.ts code for code", async () => {
    const rows = await db.sql`select sqlstate, name, http_status from reserve.error_codes order by sqlstate`;
    const fromDb = Object.fromEntries(rows.map((r) => [r.sqlstate, { name: r.name, http: r.http_status }]));
    expect(fromDb).toEqual(DB_ERRORS);
  });

  it("maps a raised code to its name and status, and leaves PostgreSQL's own codes alone", async () => {
    const err = await db.sql`select reserve.create_booking_intent(gen_random_uuid(), current_date + 1, current_date + 2, 1)`
      .catch((e: { code?: string }) => e);
    expect(domainError((err as { code?: string }).code)).toEqual({ name: "unit_not_found", http: 404 });
    expect(domainError("23505")).toBeUndefined();
  });
});
