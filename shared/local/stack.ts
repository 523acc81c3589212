// The whole local stack of `npm start`: PostgreSQL 17 (embedded, or DATABASE_URL), Supabase-like
// bootstrap, migrations through the Supabase CLI, seed on a database's first start, and the edge
// functions under Deno at http://127.0.0.1:54321/functions/v1/<name>.
import path from "node:path";
import postgres from "postgres";
import { startFunctions, type FunctionsServer } from "./functions.ts";
import { DEFAULT_LOCAL_JWT_SECRET, localKeys } from "./keys.ts";
import { loadSeed, migrate, projectRoot } from "./migrate.ts";
import { assertPortFree } from "./ports.ts";
import { startLocalPostgres, type LocalPostgres } from "./postgres.ts";

export interface StackConfig {
  databaseUrl?: string;
  dataDir: string;
  dbPort: number;
  functionsPort: number;
  jwtSecret: string;
  /** load seed.sql into a database that has no cities yet; on by default only for the embedded one */
  seed: boolean;
}

export function configFromEnv(env: NodeJS.ProcessEnv = process.env): StackConfig {
  const databaseUrl = env.DATABASE_URL || undefined;
  return {
    databaseUrl,
    dataDir: path.resolve(projectRoot, env.RESERVE_DATA_DIR ?? ".data"),
    dbPort: Number(env.RESERVE_DB_PORT ?? 54322),
    functionsPort: Number(env.RESERVE_FUNCTIONS_PORT ?? 54321),
    jwtSecret: env.RESERVE_JWT_SECRET ?? DEFAULT_LOCAL_JWT_SECRET,
    seed: env.RESERVE_SEED ? env.RESERVE_SEED === "1" : !databaseUrl,
  };
}

export interface Stack {
  databaseUrl: string;
  functions: FunctionsServer;
  keys: { anon: string; serviceRole: string };
  seeded: boolean;
  applied: string[];
  /** called once if PostgreSQL or the gateway dies on its own after start */
  onFailure(cb: (reason: string) => void): void;
  stop(): Promise<void>;
}

/** No cities means nobody has seeded this database (or a seed failed and rolled back). */
async function needsSeed(url: string): Promise<boolean> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const [{ empty }] = await sql`select not exists (select 1 from reserve.cities) as empty`;
    return empty;
  } finally {
    await sql.end();
  }
}

export async function startStack(cfg: StackConfig, log: (line: string) => void, signal?: AbortSignal): Promise<Stack> {
  await assertPortFree(cfg.functionsPort, "edge functions");
  let pg: LocalPostgres | undefined;
  let functions: FunctionsServer | undefined;
  try {
    let databaseUrl = cfg.databaseUrl;
    if (!databaseUrl) {
      pg = await startLocalPostgres({
        dataDir: path.join(cfg.dataDir, "postgres"),
        port: cfg.dbPort,
        logFile: path.join(cfg.dataDir, "postgres.log"),
      });
      log(`postgres ${pg.created ? "created and started" : "started"} on port ${cfg.dbPort} (data in ${cfg.dataDir})`);
      databaseUrl = pg.url();
    }
    signal?.throwIfAborted();
    const { bootstrapped, applied } = await migrate(databaseUrl);
    if (bootstrapped) log("bootstrapped Supabase roles and schemas");
    log(applied.length ? `applied ${applied.length} migration(s): ${applied.join(", ")}` : "migrations up to date");
    signal?.throwIfAborted();
    const seeded = cfg.seed && (await needsSeed(databaseUrl));
    if (seeded) {
      await loadSeed(databaseUrl);
      log("loaded supabase/seed.sql");
    }
    signal?.throwIfAborted();
    const keys = localKeys(cfg.jwtSecret);
    functions = await startFunctions({
      port: cfg.functionsPort,
      env: {
        SUPABASE_DB_URL: databaseUrl,
        SUPABASE_URL: `http://127.0.0.1:${cfg.functionsPort}`,
        SUPABASE_ANON_KEY: keys.anon,
        SUPABASE_SERVICE_ROLE_KEY: keys.serviceRole,
        RESERVE_JWT_SECRET: cfg.jwtSecret,
      },
      onLog: (line) => log(`[functions] ${line}`),
      signal,
    });
    const started = { pg, functions };
    return {
      databaseUrl,
      functions,
      keys,
      seeded,
      applied,
      onFailure(cb) {
        let told = false;
        const once = (reason: string) => { if (!told) { told = true; cb(reason); } };
        started.pg?.onUnexpectedExit((code) => once(`PostgreSQL exited unexpectedly (${code}); see ${path.join(cfg.dataDir, "postgres.log")}`));
        started.functions.onUnexpectedExit((code) => once(`the edge gateway exited unexpectedly (${code})`));
      },
      async stop() {
        await started.functions.stop();
        await started.pg?.stop();
      },
    };
  } catch (err) {
    await functions?.stop().catch(() => {});
    await pg?.stop().catch(() => {});
    throw err;
  }
}

/** The database URL with its password masked, for printing. */
export function maskUrl(url: string): string {
  return url.replace(/\/\/([^:/@]+):([^@]+)@/, (_m, user, pass) =>
    `//${user}:${pass === "postgres" ? pass : "****"}@`);
}
