// A statement whose deadline passes while it waits for a connection answers its caller 503 and never
// runs afterwards: postgres.js takes it out of the queue with a 57014 it makes itself, which db.ts must
// not take for a statement "refused unsent" by a terminated backend and send again behind the caller.
import { spawnSync } from "node:child_process";
import path from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { denoBinary } from "../../local/functions.ts";
import { projectRoot } from "../../local/migrate.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";

let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase();
  await db.sql`create table public.queued_deadline_probe (note text)`;
});

afterAll(async () => {
  await db?.drop();
});

it("a statement timed out in the pool's queue is not sent once the connection is free", () => {
  const probe = spawnSync(denoBinary(), ["run", "--quiet", "--allow-net", "--allow-env", "--allow-read", "--allow-sys",
    "--config", path.join(projectRoot, "deno.json"), path.join(projectRoot, "tests/faults/queued_deadline_probe.ts")], {
    cwd: projectRoot, encoding: "utf8", timeout: 60_000,
    env: { ...process.env, NO_COLOR: "1", SUPABASE_DB_URL: db.url, RESERVE_DB_POOL_SIZE: "1" },
  });
  const last = probe.stdout.trim().split("\n").at(-1) ?? "";
  expect(last, probe.stderr).toMatch(/^\{/);
  expect(JSON.parse(last)).toEqual({ insert: "rejected DatabaseUnavailable", held: "held", rows: 0 });
}, 90_000);
