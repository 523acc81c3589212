// The whole local stack of `npm start`: PostgreSQL 17 (embedded, or DATABASE_URL), Supabase-like
// bootstrap, migrations through the Supabase CLI, seed on a database's first start, the provider
// sandbox (unless real provider keys are set), the edge functions under Deno at
// http://127.0.0.1:54321/functions/v1/<name>, and the poller's 5-minute schedule.
import path from "node:path";
import postgres from "postgres";
import { scheduleFunction, scheduleSql, type LocalCron } from "./cron.ts";
import { startFunctions, type FunctionsServer } from "./functions.ts";
import { DEFAULT_LOCAL_JWT_SECRET, localKeys } from "./keys.ts";
import { loadSeed, migrate, projectRoot } from "./migrate.ts";
import { assertPortFree } from "./ports.ts";
import { startLocalPostgres, type LocalPostgres } from "./postgres.ts";
import { newCronSecret, passthroughEnv, realProvidersConfigured, sandboxEnv } from "./provider_env.ts";
import { startProviderSandbox, type ProviderSandbox } from "./sandbox/index.ts";

export interface StackConfig {
  databaseUrl?: string;
  dataDir: string;
  dbPort: number;
  functionsPort: number;
  jwtSecret: string;
  /** load seed.sql into a database that has no cities yet; on by default only for the embedded one */
  seed: boolean;
  /** run the provider sandbox (default: unless real provider keys are in the environment) */
  sandbox: boolean;
  sandboxPort: number;
  cronSecret: string;
  /** how often the local cron calls poll_payment_status; 0 = never */
  pollEveryMs: number;
  /** how often the local cron runs the retention cleanup (pg_cron: daily); 0 = never */
  retentionEveryMs?: number;
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
    sandbox: env.RESERVE_SANDBOX ? env.RESERVE_SANDBOX === "1" : !realProvidersConfigured(env),
    sandboxPort: Number(env.RESERVE_SANDBOX_PORT ?? 54329),
    cronSecret: env.RESERVE_CRON_SECRET ?? newCronSecret(),
    pollEveryMs: Number(env.RESERVE_POLL_INTERVAL_S ?? 300) * 1000,
    retentionEveryMs: Number(env.RESERVE_RETENTION_INTERVAL_S ?? 86_400) * 1000,
  };
}

export interface Stack {
  databaseUrl: string;
  functions: FunctionsServer;
  keys: { anon: string; serviceRole: string };
  sandbox?: ProviderSandbox;
  cronSecret: string;
  /** runs poll_payment_status now, as the schedule would */
  poll(): Promise<unknown>;
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
  if (cfg.sandbox) await assertPortFree(cfg.sandboxPort, "provider sandbox");
  let pg: LocalPostgres | undefined;
  let functions: FunctionsServer | undefined;
  let sandbox: ProviderSandbox | undefined;
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
    const functionsBase = `http://127.0.0.1:${cfg.functionsPort}/functions/v1`;
    if (cfg.sandbox) {
      sandbox = await startProviderSandbox({
        port: cfg.sandboxPort,
        stripeWebhookUrl: `${functionsBase}/webhook_stripe`,
        openpixWebhookUrl: `${functionsBase}/webhook_pix/openpix`,
        // the real providers redeliver for hours or days; the sandbox a few times within a minute
        retry: { attempts: 3, baseMs: 5_000 },
        log: (line) => log(`[sandbox] ${line}`),
      });
      log(`provider sandbox on ${sandbox.url} (Stripe, MercadoPago, OpenPIX; control at ${sandbox.url}/_sandbox)`);
    } else {
      log("real provider keys are set: no sandbox, the functions call the providers");
    }
    signal?.throwIfAborted();
    functions = await startFunctions({
      port: cfg.functionsPort,
      env: {
        SUPABASE_DB_URL: databaseUrl,
        SUPABASE_URL: `http://127.0.0.1:${cfg.functionsPort}`,
        SUPABASE_ANON_KEY: keys.anon,
        SUPABASE_SERVICE_ROLE_KEY: keys.serviceRole,
        RESERVE_JWT_SECRET: cfg.jwtSecret,
        RESERVE_CRON_SECRET: cfg.cronSecret,
        ...(sandbox ? sandboxEnv(sandbox) : passthroughEnv()),
      },
      onLog: (line) => log(`[functions] ${line}`),
      signal,
    });
    const cron: LocalCron = scheduleFunction(`${functionsBase}/poll_payment_status`, cfg.cronSecret,
      cfg.pollEveryMs, (line) => log(line));
    const retention = scheduleSql(databaseUrl, "call reserve.retention_cleanup_job()", cfg.retentionEveryMs ?? 0, (line) => log(line));
    const started = { pg, functions, sandbox, cron, retention };
    return {
      databaseUrl,
      functions,
      keys,
      sandbox,
      cronSecret: cfg.cronSecret,
      poll: () => cron.runNow(),
      seeded,
      applied,
      onFailure(cb) {
        let told = false;
        const once = (reason: string) => { if (!told) { told = true; cb(reason); } };
        started.pg?.onUnexpectedExit((code) => once(`PostgreSQL exited unexpectedly (${code}); see ${path.join(cfg.dataDir, "postgres.log")}`));
        started.functions.onUnexpectedExit((code) => once(`the edge gateway exited unexpectedly (${code})`));
      },
      async stop() {
        started.cron.stop();
        started.retention.stop();
        await started.functions.stop();
        await started.sandbox?.stop();
        await started.pg?.stop();
      },
    };
  } catch (err) {
    await functions?.stop().catch(() => {});
    await sandbox?.stop().catch(() => {});
    await pg?.stop().catch(() => {});
    throw err;
  }
}

/** The database URL with its password masked, for printing. */
export function maskUrl(url: string): string {
  return url.replace(/\/\/([^:/@]+):([^@]+)@/, (_m, user, pass) =>
    `//${user}:${pass === "postgres" ? pass : "****"}@`);
}
