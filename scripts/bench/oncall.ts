// npm run bench:oncall — how fast an alert reaches people, and what one evaluation costs.
//
// 1. Through the real stack (`npm start`'s: PostgreSQL, the functions under Deno, the sandbox, the
//    scheduler calling notify every RESERVE_NOTIFY_INTERVAL_S, default here 10 s): the sandbox drops
//    Stripe's webhooks, card payments paid at Stripe stay pending (stuck_minutes_card set to 1 minute for
//    the run), stuck_payments fires, and the time until the sandbox's PagerDuty receiver holds the trigger
//    is measured; then the webhooks flow again, the poller confirms the payments, and the time until the
//    resolve arrives. The notify interval is the ceiling each latency is set against (same run).
// 2. On the year dataset (RESERVE_LARGE_DIR, a copy of `npm run seed:large`'s; skipped without one):
//    system_health_check() (the checks an evaluation must run: the ceiling), check_all_alerts(),
//    evaluate_alerts() and prometheus_samples(), median of RUNS runs, as ratios to the ceiling.
//
//   RESERVE_LARGE_DIR=/work/data/year-mine npm run bench:oncall      env: ROUNDS (2), RUNS (5), RESERVE_NOTIFY_INTERVAL_S
import { existsSync } from "node:fs";
import { rm } from "node:fs/promises";
import { cpus, loadavg } from "node:os";
import path from "node:path";
import postgres from "postgres";
import { DEFAULT_LOCAL_JWT_SECRET, signJwt } from "../../local/keys.ts";
import { migrate, projectRoot } from "../../local/migrate.ts";
import { freePort } from "../../local/ports.ts";
import { startLocalPostgres, tempClusterDir } from "../../local/postgres.ts";
import { startStack } from "../../local/stack.ts";

const rounds = Number(process.env.ROUNDS ?? 2);
const runs = Number(process.env.RUNS ?? 5);
const notifyEveryS = Number(process.env.RESERVE_NOTIFY_INTERVAL_S ?? 10);
const log = (m: string) => process.stderr.write(`${m}\n`);
const load = () => loadavg().map((l) => l.toFixed(2)).join(" ");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, check: () => Promise<T | undefined | false>, ms: number): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

interface PdEvent { at: string; body: { event_action?: string; dedup_key?: string } }

async function latency(): Promise<string[]> {
  const dataDir = await tempClusterDir("reserve-bench-oncall-");
  const stack = await startStack({
    dataDir, dbPort: await freePort(), functionsPort: await freePort(), jwtSecret: DEFAULT_LOCAL_JWT_SECRET, seed: true,
    sandbox: true, sandboxPort: await freePort(), cronSecret: "bench-oncall", pollEveryMs: 0, retentionEveryMs: 0,
    notifyEveryMs: notifyEveryS * 1000,
  }, () => {});
  const sql = postgres(stack.databaseUrl, { max: 2, onnotice: () => {} });
  const sb = stack.sandbox!;
  const fn = (name: string) => `${stack.functions.url}/functions/v1/${name}`;
  // a guest per payment: the stuck ones stay held, and one guest may hold only max_unpaid_holds_per_client
  const guestToken = () => signJwt({ sub: crypto.randomUUID(), email: "bench@example.com", role: "authenticated", aud: "authenticated",
    exp: Math.floor(Date.now() / 1000) + 3600 }, DEFAULT_LOCAL_JWT_SECRET);
  const pdEvents = async () => (await (await fetch(`${sb.url}/_sandbox/pagerdutyEvents`)).json()) as PdEvent[];
  const lines: string[] = [];
  try {
    await sql`update reserve.settings set value = '1' where key = 'stuck_minutes_card'`;
    const units = await sql`select u.id from reserve.unit_map u where u.is_active order by u.id limit ${rounds * 3}`;
    for (let round = 0; round < rounds; round++) {
      const seen = (await pdEvents()).length;
      // the fault: Stripe's webhooks never arrive; guests pay at Stripe
      await sb.control.setWebhookMode("stripe", "drop");
      const fault = Date.now();
      const paid: string[] = [];
      for (let i = 0; i < 3; i++) {
        const d0 = new Date(Date.now() + (30 + round * 10) * 86400_000).toISOString().slice(0, 10);
        const d1 = new Date(Date.now() + (35 + round * 10) * 86400_000).toISOString().slice(0, 10);
        const res = await fetch(fn("checkout"), { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${guestToken()}` },
          body: JSON.stringify({ unit_id: units[round * 3 + i]!.id, check_in: d0, check_out: d1, guests: 2, method: "card" }) });
        const c = (await res.json()) as { gateway_payment_id: string; payment_id: string };
        if (res.status !== 201) throw new Error(`checkout answered ${res.status}: ${JSON.stringify(c)}`);
        await sb.control.stripeConfirm(c.gateway_payment_id, "succeeded");
        paid.push(c.payment_id);
      }
      const trigger = await until("the PagerDuty trigger", async () => (await pdEvents()).slice(seen)
        .find((e) => e.body.dedup_key === "reserve/stuck_payments" && e.body.event_action === "trigger"), 5 * 60_000);
      const [{ since }] = await sql`select min(status_changed_at) + interval '1 minute' as since from reserve.payments where id = any(${paid}::uuid[])`;
      const tTrigger = Date.parse(trigger.at);
      // the recovery: webhooks flow again and the poller asks Stripe about the payments
      await sb.control.setWebhookMode("stripe", "deliver");
      await sql`update reserve.payment_polls set next_poll_at = now() where payment_id = any(${paid}::uuid[])`;
      await stack.poll();
      const recovered = Date.now();
      const [{ n }] = await sql`select count(*)::int as n from reserve.payments where id = any(${paid}::uuid[]) and status = 'succeeded'`;
      if (n !== paid.length) throw new Error(`the poller confirmed ${n} of ${paid.length} payments`);
      const resolve = await until("the PagerDuty resolve", async () => (await pdEvents()).slice(seen)
        .find((e) => e.body.dedup_key === "reserve/stuck_payments" && e.body.event_action === "resolve"), 5 * 60_000);
      const tResolve = Date.parse(resolve.at);
      const s = (ms: number) => (ms / 1000).toFixed(1);
      const holds = new Date(since).getTime();
      lines.push(`| ${round + 1} | ${s(tTrigger - fault)} | ${s(tTrigger - holds)} | ${((tTrigger - holds) / (notifyEveryS * 1000)).toFixed(2)} | ${s(tResolve - recovered)} | ${((tResolve - recovered) / (notifyEveryS * 1000)).toFixed(2)} | ${load()} |`);
      log(`round ${round + 1}: trigger ${s(tTrigger - fault)} s after the fault (${s(tTrigger - holds)} s after the condition held), resolve ${s(tResolve - recovered)} s after the recovery`);
    }
  } finally {
    await sql.end();
    await stack.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
  return lines;
}

async function evaluationCost(dir: string): Promise<string[]> {
  const pg = await startLocalPostgres({
    dataDir: path.join(dir, "postgres"), port: await freePort(), logFile: path.join(dir, "postgres.log"),
    settings: { shared_buffers: "1GB", work_mem: "64MB" },
  });
  try {
    const url = pg.url("reserve_large");
    const applied = await migrate(url);
    if (applied.applied.length) log(`applied ${applied.applied.length} migrations`);
    const sql = postgres(url, { max: 1, onnotice: () => {} });
    await sql`analyze`;
    const [sizes] = await sql`select (select count(*) from reserve.payments) as payments, (select count(*) from reserve.processed_webhooks) as webhooks,
      (select count(*) from reserve.audit_logs) as audit, pg_size_pretty(pg_database_size(current_database())) as size`;
    const time = async (q: string) => {
      await sql.unsafe(q);
      const t: number[] = [];
      for (let i = 0; i < runs; i++) {
        const s = performance.now();
        await sql.unsafe(q);
        t.push(performance.now() - s);
      }
      t.sort((a, b) => a - b);
      return t[Math.floor(t.length / 2)]!;
    };
    const ceiling = await time("select * from reserve.system_health_check()");
    const rows = [`| system_health_check() (ceiling) | ${ceiling.toFixed(1)} | 1.00 | ${load()} |`];
    for (const [name, q] of [["check_all_alerts()", "select * from reserve.check_all_alerts()"], ["evaluate_alerts()", "select * from reserve.evaluate_alerts()"],
      ["prometheus_samples()", "select * from reserve.prometheus_samples()"]] as const) {
      const ms = await time(q);
      rows.push(`| ${name} | ${ms.toFixed(1)} | ${(ms / ceiling).toFixed(2)} | ${load()} |`);
      log(`${name}: ${ms.toFixed(1)} ms`);
    }
    await sql.end();
    return [`data: ${sizes.payments} payments, ${sizes.webhooks} webhooks, ${sizes.audit} audit rows; ${sizes.size}`, "", "| statement | median ms | ratio to the ceiling | load (1/5/15 min) |", "|---|---|---|---|", ...rows];
  } finally {
    await pg.stop();
  }
}

const dir = process.env.RESERVE_LARGE_DIR ? path.resolve(projectRoot, process.env.RESERVE_LARGE_DIR) : undefined;
// PARTS=evaluation skips the stack part (PARTS=latency the year dataset's)
const parts = (process.env.PARTS ?? "latency,evaluation").split(",");
const out = [`## bench:oncall (${new Date().toISOString()})`, `${cpus().length} vCPU, load ${load()} at start; notify every ${notifyEveryS} s`];
if (parts.includes("latency")) {
  out.push("", "Fault (Stripe webhooks dropped, card payments stuck; stuck_minutes_card = 1) to the PagerDuty trigger, and recovery (poller run) to the resolve, seconds:", "",
    "| round | fault → trigger | condition held → trigger | ÷ notify interval | recovery → resolve | ÷ notify interval | load (1/5/15 min) |",
    "|---|---|---|---|---|---|---|", ...(await latency()));
}
if (!parts.includes("evaluation")) { /* skipped */ } else if (dir && existsSync(path.join(dir, "postgres"))) out.push("", `One evaluation on the year dataset (${runs} runs, median):`, "", ...(await evaluationCost(dir)));
else out.push("", "(no RESERVE_LARGE_DIR with a seeded database: the year-dataset part was skipped)");
console.log(out.join("\n"));
