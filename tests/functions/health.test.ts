// health over HTTP under real Deno: 200 with the migration version, 503 with a JSON reason when the
// database is down or was never migrated.
import { readdirSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { FunctionsServer } from "../../local/functions.ts";
import { migrate, projectRoot } from "../../local/migrate.ts";
import { privateCluster } from "../helpers/cluster.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { startTestFunctions } from "../helpers/functions.ts";

const latestMigration = readdirSync(path.join(projectRoot, "supabase/migrations"))
  .filter((f) => f.endsWith(".sql")).sort().pop()!.split("_")[0];

describe("health against a migrated database", () => {
  let db: TestDatabase;
  let fns: FunctionsServer;
  beforeAll(async () => {
    db = await createTestDatabase();
    fns = await startTestFunctions(db.url);
  });
  afterAll(async () => {
    await fns?.stop();
    await db?.drop();
  });

  it("answers 200 with reachability, the latest migration and the server time", async () => {
    const res = await fetch(fns.functionUrl("health"));
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/application\/json/);
    const body = await res.json();
    expect(body).toMatchObject({ status: "ok", database: "reachable", migration_version: latestMigration });
    expect(Math.abs(Date.parse(body.server_time) - Date.now())).toBeLessThan(60_000);
  });

  it("refuses other methods with 405 and a JSON body", async () => {
    const res = await fetch(fns.functionUrl("health"), { method: "POST", body: "{}" });
    expect(res.status).toBe(405);
    expect(res.headers.get("allow")).toBe("GET, HEAD");
    expect(await res.json()).toMatchObject({ error: "method_not_allowed" });
  });

  it("answers 404 in JSON for a function that does not exist", async () => {
    const res = await fetch(`${fns.url}/functions/v1/nope`);
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ error: "function_not_found" });
  });
});

describe("health when the database goes away", () => {
  let cluster: Awaited<ReturnType<typeof privateCluster>>;
  let fns: FunctionsServer;
  beforeAll(async () => {
    cluster = await privateCluster();
    await migrate(cluster.url());
    fns = await startTestFunctions(cluster.url());
  });
  afterAll(async () => {
    await fns?.stop();
    await cluster?.destroy();
  });

  it("goes 200 -> 503 when PostgreSQL stops, and back to 200 when it returns", async () => {
    expect((await fetch(fns.functionUrl("health"))).status).toBe(200);

    await cluster.stop();
    const down = await fetch(fns.functionUrl("health"));
    expect(down.status).toBe(503);
    const body = await down.json();
    expect(body).toMatchObject({ status: "unavailable", database: "unreachable", reason: "database unreachable" });
    expect(JSON.stringify(body)).not.toContain("postgres:postgres"); // no credentials in the answer

    await cluster.restart();
    const up = await fetch(fns.functionUrl("health"));
    expect(up.status).toBe(200);
  });
});

describe("health against a database that never saw our migrations", () => {
  it("answers 503 unmigrated", async () => {
    const cluster = await privateCluster();
    const fns = await startTestFunctions(cluster.url());
    try {
      const res = await fetch(fns.functionUrl("health"));
      expect(res.status).toBe(503);
      expect(await res.json()).toMatchObject({ status: "unmigrated", database: "reachable", migration_version: null });
    } finally {
      await fns.stop();
      await cluster.destroy();
    }
  });
});
