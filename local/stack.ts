// The whole local stack of `npm start`: PostgreSQL 17 (embedded, or DATABASE_URL), Supabase-like
// bootstrap, migrations through the Supabase CLI, seed on a database's first start, the provider
// sandbox (unless real provider keys are set), the edge functions under Deno at
// http://127.0.0.1:54321/functions/v1/<name>, and the scheduler (the poller every 5 minutes, the
// retention cleanup daily).
//
// The gateway, the sandbox and the scheduler are child processes under a supervisor (supervisor.ts): one
// that dies is started again with backoff and the death is one line in the log. Only PostgreSQL dying
// ends the stack (onFailure).
import path from "node:path";
import { pathToFileURL } from "node:url";
import postgres from "postgres";
import { scheduleFunction } from "./cron.ts";
import { startFunctions, type FunctionsServer } from "./functions.ts";
import { prefixed } from "./child_output.ts";
import { jwksOf, loadOrCreateSigningKey, localIssuer } from "./auth_keys.ts";
import { DEFAULT_LOCAL_JWT_SECRET, localKeys } from "./keys.ts";
import { loadSeed, migrate, projectRoot } from "./migrate.ts";
import { enableOpsConsoleLogin, opsConsoleDbUrl } from "./ops_console_login.ts";
import { assertPortFree } from "./ports.ts";
import { startLocalPostgres, type LocalPostgres } from "./postgres.ts";
import { newCronSecret, passthroughEnv, realProvidersConfigured, sandboxEnv } from "./provider_env.ts";
import { startSandboxProcess, type SandboxProcess } from "./sandbox_process.ts";
import { startSchedulerProcess } from "./scheduler.ts";
import { supervise, type Backoff, type Child, type Supervised } from "./supervisor.ts";

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
  /** the cron secret was given (RESERVE_CRON_SECRET), not made for this start */
  cronSecretFromEnv?: boolean;
  /** how often the local cron calls poll_payment_status; 0 = never */
  pollEveryMs: number;
  /** how often the local cron runs the retention cleanup (pg_cron: daily); 0 = never */
  retentionEveryMs?: number;
  /** how often the local cron calls reconcile (pg_cron: every 15 minutes, until yesterday is done) and the ledger's full check (daily); 0 = never */
  reconcileEveryMs?: number;
  /** how often the local cron runs run_integrity_audit (pg_cron: hourly); 0 = never */
  integrityAuditEveryMs?: number;
  /** how often the local cron runs verify_recent_writes (the checks' watermark; pg_cron: every minute); 0 = never */
  integrityVerifyEveryMs?: number;
  /** how often the local cron calls notify (alert evaluation and delivery; pg_cron: every minute); 0 = never */
  notifyEveryMs?: number;
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
    cronSecret: env.RESERVE_CRON_SECRET || newCronSecret(),
    cronSecretFromEnv: !!env.RESERVE_CRON_SECRET,
    pollEveryMs: Number(env.RESERVE_POLL_INTERVAL_S ?? 300) * 1000,
    retentionEveryMs: Number(env.RESERVE_RETENTION_INTERVAL_S ?? 86_400) * 1000,
    reconcileEveryMs: Number(env.RESERVE_RECONCILE_INTERVAL_S ?? 900) * 1000,
    integrityAuditEveryMs: Number(env.RESERVE_INTEGRITY_AUDIT_INTERVAL_S ?? 3_600) * 1000,
    integrityVerifyEveryMs: Number(env.RESERVE_INTEGRITY_VERIFY_INTERVAL_S ?? 60) * 1000,
    notifyEveryMs: Number(env.RESERVE_NOTIFY_INTERVAL_S ?? 60) * 1000,
  };
}

export interface Stack {
  databaseUrl: string;
  /** the gateway running now (a new one after each restart) */
  readonly functions: FunctionsServer;
  keys: { anon: string; serviceRole: string };
  /** the sandbox running now, if any (a new process after each restart, same port) */
  readonly sandbox?: SandboxProcess;
  cronSecret: string;
  /** true when the cron secret came from RESERVE_CRON_SECRET rather than being made for this start */
  cronSecretFromEnv: boolean;
  /** runs poll_payment_status now, as the schedule would */
  poll(): Promise<unknown>;
  /** runs notify now (evaluate the alerts, deliver the outbox), as the schedule would */
  notify(): Promise<unknown>;
  seeded: boolean;
  applied: string[];
  /** the supervised children, by name (gateway, sandbox, scheduler) */
  supervised: Record<string, Supervised<Child>>;
  /** called once if PostgreSQL dies on its own after start: the one thing that ends the stack */
  onFailure(cb: (reason: string) => void): void;
  stop(): Promise<void>;
}

/** No cities means nobody has seeded this database (or a seed failed and rolled back). */
async function needsSeed(url: string): Promise<boolean> {
  const sql = postgres(url, { max: 1, onnotice: () => {}, fetch_types: false });
  try {
    const [{ empty }] = await sql`select not exists (select 1 from reserve.cities) as empty`;
    return empty;
  } finally {
    await sql.end();
  }
}

// The functions' own settings (supabase/functions/_shared/db.ts), passed on from npm start's environment.
const FUNCTION_SETTINGS = ["RESERVE_DB_QUERY_TIMEOUT_MS", "RESERVE_DB_POOL_SIZE", "RESERVE_CORS_ORIGINS", "RESERVE_NOTIFY_TIMEOUT_MS", "RESERVE_METRICS_TOKEN"];

function functionSettings(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  return Object.fromEntries(FUNCTION_SETTINGS.filter((k) => env[k]).map((k) => [k, env[k]!]));
}

// A PostgreSQL stopped by the same Ctrl-C as we are (one process group) is no failure: the signal's
// shutdown gets this long to begin before its exit counts as a death.
const PG_EXIT_GRACE_MS = 300;

const sameKeys = (a: Record<string, string>, b: Record<string, string>) =>
  Object.keys(a).length === Object.keys(b).length && Object.entries(a).every(([k, v]) => b[k] === v);

export async function startStack(
  cfg: StackConfig, log: (line: string) => void, signal?: AbortSignal, backoff?: Backoff,
): Promise<Stack> {
  await assertPortFree(cfg.functionsPort, "edge functions");
  if (cfg.sandbox) await assertPortFree(cfg.sandboxPort, "provider sandbox");
  let pg: LocalPostgres | undefined;
  const started: Supervised<Child>[] = [];
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
    // the ops console's on-call actions and ledger corrections come on its own login (RESERVE_OPS_DB_URL)
    if (!process.env.RESERVE_OPS_DB_URL) await enableOpsConsoleLogin(databaseUrl);
    signal?.throwIfAborted();
    const seeded = cfg.seed && (await needsSeed(databaseUrl));
    if (seeded) {
      await loadSeed(databaseUrl);
      log("loaded supabase/seed.sql");
    }
    signal?.throwIfAborted();
    const keys = localKeys(cfg.jwtSecret);
    // user tokens (npm run token) are signed with this key; the gateway publishes its public half
    const signingKey = loadOrCreateSigningKey(cfg.dataDir);
    const functionsBase = `http://127.0.0.1:${cfg.functionsPort}/functions/v1`;

    let sandbox: Supervised<SandboxProcess> | undefined;
    if (cfg.sandbox) {
      sandbox = await supervise("provider sandbox", () => startSandboxProcess({
        port: cfg.sandboxPort,
        stripeWebhookUrl: `${functionsBase}/webhook_stripe`,
        openpixWebhookUrl: `${functionsBase}/webhook_pix/openpix`,
        // the real providers redeliver for hours or days; the sandbox a few times within a minute
        retry: { attempts: 3, baseMs: 5_000 },
        // its payments and keys survive its restarts (and ours) there
        stateDir: path.join(cfg.dataDir, "sandbox"),
      }, (line) => log(prefixed("sandbox", line))), log, backoff);
      started.push(sandbox);
      log(`provider sandbox on ${sandbox.current.url} (Stripe, MercadoPago, OpenPIX; control at ${sandbox.current.url}/_sandbox)`);
    } else {
      log("real provider keys are set: no sandbox, the functions call the providers");
    }
    signal?.throwIfAborted();

    // the gateway always gets the keys of the sandbox running now
    const providerEnv = () => (sandbox ? sandboxEnv(sandbox.current) : passthroughEnv());
    let gatewayProviderEnv = providerEnv();
    const gateway = await supervise("edge gateway", () => {
      gatewayProviderEnv = providerEnv();
      return startFunctions({
        port: cfg.functionsPort,
        env: {
          SUPABASE_DB_URL: databaseUrl,
          RESERVE_OPS_DB_URL: process.env.RESERVE_OPS_DB_URL || opsConsoleDbUrl(databaseUrl),
          SUPABASE_URL: `http://127.0.0.1:${cfg.functionsPort}`,
          SUPABASE_ANON_KEY: keys.anon,
          SUPABASE_SERVICE_ROLE_KEY: keys.serviceRole,
          RESERVE_JWT_SECRET: cfg.jwtSecret,
          RESERVE_AUTH_JWKS: JSON.stringify(jwksOf(signingKey)),
          RESERVE_JWT_ISSUER: localIssuer(cfg.functionsPort),
          RESERVE_CRON_SECRET: cfg.cronSecret,
          // alert links open the runbook of this checkout
          RESERVE_RUNBOOK_URL: process.env.RESERVE_RUNBOOK_URL || pathToFileURL(path.join(projectRoot, "docs/RUNBOOK.md")).href,
          ...functionSettings(),
          ...gatewayProviderEnv,
        },
        onLog: (line) => log(`[functions] ${line}`),
        signal,
        detached: true,
      });
    }, log, backoff);
    started.push(gateway);
    // a sandbox that came back with other keys (one that keeps none across restarts) would fail every
    // signature and API call: the gateway is started again with the new ones
    sandbox?.onRestart((sb) => {
      if (sameKeys(sandboxEnv(sb), gatewayProviderEnv)) return;
      log(`supervisor: the provider sandbox came back with new keys (GET ${sb.url}/_sandbox shows them); restarting the edge gateway with them`);
      void gateway.replace().catch((err) => log(`supervisor: the edge gateway did not restart (${(err as Error).message.split("\n")[0]})`));
    });
    signal?.throwIfAborted();

    const pollUrl = `${functionsBase}/poll_payment_status`;
    const scheduler = await supervise("scheduler", () => startSchedulerProcess({
      pollUrl, cronSecret: cfg.cronSecret, pollEveryMs: cfg.pollEveryMs,
      notifyUrl: `${functionsBase}/notify`, notifyEveryMs: cfg.notifyEveryMs ?? 0,
      databaseUrl: databaseUrl!, retentionEveryMs: cfg.retentionEveryMs ?? 0,
      reconcileUrl: `${functionsBase}/reconcile`, reconcileEveryMs: cfg.reconcileEveryMs ?? 0,
      integrityAuditEveryMs: cfg.integrityAuditEveryMs ?? 0,
      integrityVerifyEveryMs: cfg.integrityVerifyEveryMs ?? 0,
    }, (line) => log(prefixed("scheduler", line))), log, backoff);
    started.push(scheduler);
    // an on-demand run, as the schedule's would be (the scheduler's own runs are in its process)
    const onDemand = scheduleFunction(pollUrl, cfg.cronSecret, 0, log);
    const notifyNow = scheduleFunction(`${functionsBase}/notify`, cfg.cronSecret, 0, log);

    let stopped: Promise<void> | undefined;
    return {
      databaseUrl,
      get functions() { return gateway.current; },
      keys,
      get sandbox() { return sandbox?.current; },
      cronSecret: cfg.cronSecret,
      cronSecretFromEnv: cfg.cronSecretFromEnv ?? false,
      poll: () => onDemand.runNow(),
      notify: () => notifyNow.runNow(),
      seeded,
      applied,
      supervised: Object.fromEntries(started.map((s) => [s.name, s])),
      onFailure(cb) {
        let told = false;
        pg?.onUnexpectedExit((how) => {
          setTimeout(() => {
            if (told || stopped) return;
            told = true;
            cb(`PostgreSQL exited unexpectedly (${how}); see ${path.join(cfg.dataDir, "postgres.log")}`);
          }, PG_EXIT_GRACE_MS);
        });
      },
      stop() {
        // the scheduler first (no new runs), then the gateway (no new requests), the sandbox, PostgreSQL
        stopped ??= (async () => {
          onDemand.stop();
          notifyNow.stop();
          for (const s of [scheduler, gateway, sandbox]) await s?.stop().catch(() => {});
          await pg?.stop();
        })();
        return stopped;
      },
    };
  } catch (err) {
    for (const s of started.reverse()) await s.stop().catch(() => {});
    await pg?.stop().catch(() => {});
    throw err;
  }
}

/** The database URL with its password masked, for printing. */
export function maskUrl(url: string): string {
  return url.replace(/\/\/([^:/@]+):([^@]+)@/, (_m, user, pass) =>
    `//${user}:${pass === "postgres" ? pass : "****"}@`);
}
