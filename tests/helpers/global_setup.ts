// Once per `npm test`: a throwaway PostgreSQL 17 on a free port, migrated once into a template
// database that every test file clones (graphile/worker's pattern).
import { rm } from "node:fs/promises";
import path from "node:path";
import postgres from "postgres";
import type { TestProject } from "vitest/node";
import { migrate } from "../../local/migrate.ts";
import { enableOpsConsoleLogin } from "../../local/ops_console_login.ts";
import { freePort } from "../../local/ports.ts";
import { startLocalPostgres, tempClusterDir } from "../../local/postgres.ts";

export const TEMPLATE_DB = "reserve_template";

declare module "vitest" {
  export interface ProvidedContext {
    adminUrl: string;
    templateDb: string;
  }
}

export default async function setup(project: TestProject) {
  const dir = await tempClusterDir("reserve-test-");
  const pg = await startLocalPostgres({
    dataDir: path.join(dir, "postgres"),
    port: await freePort(),
    logFile: path.join(dir, "postgres.log"),
    // a throwaway cluster: durability buys nothing here
    settings: { fsync: "off", synchronous_commit: "off", full_page_writes: "off" },
  }).catch(async (err) => {
    await rm(dir, { recursive: true, force: true });
    throw err;
  });
  try {
    const admin = postgres(pg.url(), { max: 1, onnotice: () => {} });
    await admin.unsafe(`create database ${TEMPLATE_DB}`);
    await admin.end();
    await migrate(pg.url(TEMPLATE_DB));
    await enableOpsConsoleLogin(pg.url());
  } catch (err) {
    await pg.stop();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }

  project.provide("adminUrl", pg.url());
  project.provide("templateDb", TEMPLATE_DB);

  return async () => {
    await pg.stop();
    await rm(dir, { recursive: true, force: true });
  };
}
