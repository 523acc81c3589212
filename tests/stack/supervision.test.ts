// `npm start` run through npm itself, as a person or a process manager runs it: it supervises what it
// runs (a gateway, sandbox or scheduler killed with SIGKILL is started again, the death logged in one line,
// and the stack serves on, a card payment through the restarted sandbox included), it stops entirely on
// SIGINT or SIGTERM sent to the npm process (no child left, no port held), it prints what a person needs
// to use it, and PostgreSQL dying ends it with one line.
import { spawn, type ChildProcess } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { readFile, rm } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { projectRoot } from "../../local/migrate.ts";
import { freePort } from "../../local/ports.ts";
import { tempClusterDir } from "../../local/postgres.ts";
import { isoDate } from "../helpers/fixtures.ts";

interface Run { npm: ChildProcess; output: () => string; exited: Promise<{ code: number | null; signal: string | null }> }

const runs: Run[] = [];

function npmStart(env: Record<string, string>): Run {
  const npm = spawn("npm", ["start"], {
    cwd: projectRoot, env: { ...process.env, DATABASE_URL: "", ...env }, stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  npm.stdout!.on("data", (c) => (out += c));
  npm.stderr!.on("data", (c) => (out += c));
  const exited = new Promise<{ code: number | null; signal: string | null }>((r) => npm.once("exit", (code, signal) => r({ code, signal })));
  const run = { npm, output: () => out, exited };
  runs.push(run);
  return run;
}

async function waitFor(run: Run, check: string | RegExp, ms = 90_000, from = 0): Promise<void> {
  const deadline = Date.now() + ms;
  const seen = () => { const o = run.output().slice(from); return typeof check === "string" ? o.includes(check) : check.test(o); };
  while (!seen()) {
    if (run.npm.exitCode !== null) throw new Error(`npm start exited ${run.npm.exitCode}:\n${run.output()}`);
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${check}:\n${run.output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function eventually(check: () => Promise<boolean>, what: string, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function isListening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1", () => { s.destroy(); resolve(true); });
    s.once("error", () => resolve(false));
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !readFileSync(`/proc/${pid}/stat`, "utf8").match(/^\d+ \(.*\) Z/); // a zombie has ended
  } catch {
    return false;
  }
}

/** Every process below pid, with its command line. */
function descendants(pid: number): { pid: number; cmd: string }[] {
  const children = new Map<number, number[]>();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const ppid = Number(readFileSync(`/proc/${d}/stat`, "utf8").replace(/^.*\) /, "").split(" ")[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(d)]);
    } catch { /* gone meanwhile */ }
  }
  const out: { pid: number; cmd: string }[] = [];
  const walk = (p: number) => {
    for (const c of children.get(p) ?? []) {
      try {
        out.push({ pid: c, cmd: readFileSync(`/proc/${c}/cmdline`, "utf8").replace(/\0/g, " ").trim() });
      } catch { continue; }
      walk(c);
    }
  };
  walk(pid);
  return out;
}

function childPid(run: Run, pattern: RegExp): number {
  const found = descendants(run.npm.pid!).filter((p) => pattern.test(p.cmd));
  if (found.length !== 1) throw new Error(`expected one process like ${pattern}, found ${JSON.stringify(found)}`);
  return found[0].pid;
}

const GATEWAY = /deno .*local_gateway\.ts/;
const SANDBOX = /node .*local\/sandbox\/main\.ts/;
const SCHEDULER = /node .*local\/scheduler\.ts/;

let dataDir: string;
let env: Record<string, string>;
let ports: { db: number; fn: number; sandbox: number };

beforeAll(async () => {
  dataDir = await tempClusterDir("reserve-supervision-");
  ports = { db: await freePort(), fn: await freePort(), sandbox: await freePort() };
  env = {
    RESERVE_DATA_DIR: dataDir, RESERVE_DB_PORT: String(ports.db), RESERVE_FUNCTIONS_PORT: String(ports.fn),
    RESERVE_SANDBOX_PORT: String(ports.sandbox), RESERVE_POLL_INTERVAL_S: "2",
  };
});

afterAll(async () => {
  for (const run of runs) {
    for (const p of descendants(run.npm.pid!)) try { process.kill(p.pid, "SIGKILL"); } catch { /* gone */ }
    run.npm.kill("SIGKILL");
  }
  const pid = Number((await readFile(path.join(dataDir, "postgres/postmaster.pid"), "utf8").catch(() => "")).split("\n")[0]);
  if (pid) try { process.kill(pid, "SIGKILL"); } catch { /* gone */ }
  await rm(dataDir, { recursive: true, force: true });
});

const fn = (name: string) => `http://127.0.0.1:${ports.fn}/functions/v1/${name}`;

async function health(): Promise<number> {
  try {
    return (await fetch(fn("health"), { signal: AbortSignal.timeout(5000) })).status;
  } catch {
    return 0;
  }
}

/** Signals the npm process and checks that everything it started is gone. */
async function expectStopsOn(run: Run, signal: NodeJS.Signals) {
  const started = descendants(run.npm.pid!);
  expect(started.filter((p) => GATEWAY.test(p.cmd) || SANDBOX.test(p.cmd) || SCHEDULER.test(p.cmd)).length).toBe(3);
  expect(started.some((p) => /bin\/postgres /.test(p.cmd))).toBe(true);
  process.kill(run.npm.pid!, signal);
  const { code } = await run.exited;
  expect(code, run.output()).toBe(0);
  expect(run.output()).toContain(`${signal}: stopping`);
  expect(run.output()).toMatch(/\nstopped\n/);
  await eventually(async () => started.every((p) => !alive(p.pid)), `every process npm start ran to end: ${JSON.stringify(started.filter((p) => alive(p.pid)))}`, 10_000);
  for (const port of Object.values(ports)) expect(await isListening(port), `port ${port}`).toBe(false);
}

describe("npm start under supervision", () => {
  it("prints the sandbox's keys, its control URL and the cron secret, each labelled", async () => {
    const run = npmStart(env);
    await waitFor(run, "Ctrl-C stops everything");
    const out = run.output();
    const info = await (await fetch(`http://127.0.0.1:${ports.sandbox}/_sandbox`)).json();
    expect(out).toMatch(new RegExp(`control\\s+http://127\\.0\\.0\\.1:${ports.sandbox}/_sandbox`));
    expect(out).toMatch(new RegExp(`Stripe\\s+secret key ${info.stripe.secretKey}\\n\\s+webhook secret ${info.stripe.webhookSecret.replace(/[+/]/g, "\\$&")}\\n`));
    expect(out).toMatch(new RegExp(`MercadoPago\\s+access token ${info.mercadopago.accessToken}\\n\\s+webhook secret ${info.mercadopago.webhookSecret}\\n`));
    expect(out).toMatch(new RegExp(`OpenPIX\\s+app id ${info.openpix.appId.replace(/[+/=]/g, "\\$&")}\\n`));
    expect(out).toMatch(/cron secret\s+[A-Za-z0-9_-]{20,} \(made for this start; set RESERVE_CRON_SECRET to choose it\)/);
    // every function and its URL apart, and no tag twice
    for (const name of ["checkout", "health", "poll_payment_status", "webhook_pix", "webhook_stripe"]) {
      expect(out).toMatch(new RegExp(`\\n    ${name} +${fn(name).replace(/\./g, "\\.")}\\n`));
    }
    expect(out).not.toMatch(/[a-z]http:\/\//);
    expect(out).not.toMatch(/\[(\w+)\] \[\1\]/);
    await expectStopsOn(run, "SIGINT");
  }, 120_000);

  it("restarts a gateway, a sandbox and a scheduler killed with SIGKILL, in one line each, and serves on", async () => {
    const run = npmStart(env);
    await waitFor(run, "Ctrl-C stops everything");
    const cronSecret = run.output().match(/cron secret\s+(\S+)/)![1];

    const gateway = childPid(run, GATEWAY);
    let mark = run.output().length;
    process.kill(gateway, "SIGKILL");
    await waitFor(run, `supervisor: edge gateway (pid ${gateway}) died (signal SIGKILL)`, 20_000, mark);
    await waitFor(run, "edge gateway listening", 30_000, mark);
    expect(await health()).toBe(200);
    expect(childPid(run, GATEWAY)).not.toBe(gateway);
    expect(run.output().slice(mark).match(/^supervisor: .*died.*$/gm)).toEqual([
      expect.stringMatching(/^supervisor: edge gateway \(pid \d+\) died \(signal SIGKILL\) after [\d.]+ s up; restarting in [\d.]+ s$/),
    ]);

    const sandbox = childPid(run, SANDBOX);
    mark = run.output().length;
    process.kill(sandbox, "SIGKILL");
    await waitFor(run, `supervisor: provider sandbox (pid ${sandbox}) died (signal SIGKILL)`, 20_000, mark);
    await eventually(async () => descendants(run.npm.pid!).some((p) => SANDBOX.test(p.cmd) && p.pid !== sandbox)
      && (await isListening(ports.sandbox)), "a new sandbox");
    // the gateway has the keys of the sandbox running now: a card payment goes through it
    await eventually(async () => (await health()) === 200, "the gateway after the sandbox restart");
    const sql = postgres(`postgresql://postgres:postgres@127.0.0.1:${ports.db}/postgres`, { max: 1, onnotice: () => {} });
    try {
      const [u] = await sql`select id from reserve.unit_map order by name limit 1`;
      const serviceRole = run.output().match(/service_role key\s+(\S+)/)![1];
      let res!: Response;
      let body: any;
      await eventually(async () => {
        res = await fetch(fn("checkout"), {
          method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${serviceRole}` },
          body: JSON.stringify({ unit_id: u.id, check_in: isoDate(40), check_out: isoDate(42), guests: 1, method: "card" }),
        });
        body = await res.json();
        return res.status !== 503; // the gateway being replaced with the sandbox's new keys
      }, "a checkout answered");
      expect(res.status, JSON.stringify(body)).toBe(201);
      const paid = await fetch(`http://127.0.0.1:${ports.sandbox}/_sandbox/stripeConfirm`, {
        method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify([body.gateway_payment_id, "succeeded"]),
      });
      expect(paid.status).toBe(200);
      await eventually(async () => (await sql`select 1 from reserve.reservations where booking_intent_id = ${body.booking_intent_id}`).length > 0,
        "the reservation paid through the restarted sandbox (its webhook signed with the keys the gateway has)");
      const [hook] = await sql`select status from reserve.processed_webhooks where payment_id = ${body.payment_id} and event_type = 'payment_intent.succeeded'`;
      expect(hook.status).toBe("completed");

      const scheduler = childPid(run, SCHEDULER);
      mark = run.output().length;
      process.kill(scheduler, "SIGKILL");
      await waitFor(run, `supervisor: scheduler (pid ${scheduler}) died (signal SIGKILL)`, 20_000, mark);
      // the new scheduler runs the poller on its schedule: a heartbeat after the restart
      const since = new Date();
      await eventually(async () => (await sql`select 1 from reserve.job_last_runs
                                             where job = 'poll_payment_status' and finished_at > ${since}`).length > 0,
        "a poll by the restarted scheduler");
      expect(childPid(run, SCHEDULER)).not.toBe(scheduler);
      // and the poller answers the secret the banner printed
      const poll = await fetch(fn("poll_payment_status"), { method: "POST", headers: { authorization: `Bearer ${cronSecret}` }, body: "{}" });
      expect(poll.status).toBe(200);
    } finally {
      await sql.end();
    }
    expect(run.output()).not.toMatch(/Uncaught|unhandled rejection/);
    await expectStopsOn(run, "SIGTERM");
  }, 120_000);

  it("ends with one line when PostgreSQL dies, and leaves nothing running", async () => {
    const run = npmStart(env);
    await waitFor(run, "Ctrl-C stops everything");
    const started = descendants(run.npm.pid!);
    const mark = run.output().length;
    const pid = Number((await readFile(path.join(dataDir, "postgres/postmaster.pid"), "utf8")).split("\n")[0]);
    process.kill(pid, "SIGKILL");
    const { code } = await run.exited;
    expect(code).toBe(1);
    const after = run.output().slice(mark).split("\n").filter((l) => l && !l.startsWith("[functions] "));
    expect(after).toEqual([`error: PostgreSQL exited unexpectedly (signal SIGKILL); see ${path.join(dataDir, "postgres.log")}`]);
    await eventually(async () => started.every((p) => !alive(p.pid)), "every process npm start ran to end", 10_000);
    for (const port of Object.values(ports)) expect(await isListening(port), `port ${port}`).toBe(false);
  }, 120_000);
});
