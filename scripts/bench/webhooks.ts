// npm run bench:webhooks — the edge path under load, on a throwaway PostgreSQL 17 with production
// durability (fsync, synchronous_commit on), the provider sandbox and the functions under real Deno:
//   (a) a bare Deno.serve doing one INSERT through postgres.js (the ceiling of this stack),
//   (b) webhook_stripe with signed payment_intent.succeeded events on distinct payments (verify,
//       record, apply, finalize: a reservation and a ledger receipt per request),
//   (c) webhook_stripe with deliveries of one already-completed event (the duplicate path),
// at concurrency 1, 8, 16 and 32; then the poller: payments reconciled per second from a backlog of
// stuck payments (paid at the sandbox, webhooks lost), by calling poll_payment_status as cron does.
//
//   npm run bench:webhooks     env: DURATION_S (default 4) per cell and round, ROUNDS (default 3),
//                                   CONCURRENCY (default 1,8,16,32),
//                                   BACKLOG (default 10000), POOL (edge DB pool size, default 4)
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { rm } from "node:fs/promises";
import { cpus, loadavg, totalmem } from "node:os";
import path from "node:path";
import postgres from "postgres";
import Stripe from "stripe";
import { denoBinary, startFunctions } from "../../local/functions.ts";
import { DEFAULT_LOCAL_JWT_SECRET } from "../../local/keys.ts";
import { migrate, projectRoot } from "../../local/migrate.ts";
import { freePort } from "../../local/ports.ts";
import { startLocalPostgres, tempClusterDir } from "../../local/postgres.ts";
import { newCronSecret, sandboxEnv } from "../../local/provider_env.ts";
import { startProviderSandbox } from "../../local/sandbox/index.ts";

const durationMs = Number(process.env.DURATION_S ?? 4) * 1000;
const levels = (process.env.CONCURRENCY ?? "1,8,16,32").split(",").map(Number);
const backlog = Number(process.env.BACKLOG ?? 10_000);
const pool = process.env.POOL ?? "4";
const roundsPerLevel = Number(process.env.ROUNDS ?? 3);
const log = (m: string) => process.stderr.write(`${m}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Cell { ops: number; errors: number; p50: number; p99: number; rps: number }

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** The round with the median rate, whole (its latencies with it). */
function medianCell(cells: Cell[]): Cell {
  return [...cells].sort((a, b) => a.rps - b.rps)[Math.floor(cells.length / 2)];
}

function pct(sorted: number[], p: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] : NaN;
}

/** `concurrency` loops sending next() until the time is up; latency per request in ms. */
async function load(concurrency: number, next: () => { url: string; init: RequestInit } | undefined): Promise<Cell> {
  const lat: number[] = [];
  let errors = 0;
  const end = Date.now() + durationMs;
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (Date.now() < end) {
      const req = next();
      if (!req) break;
      const t = performance.now();
      const res = await fetch(req.url, req.init).catch(() => undefined);
      if (!res || res.status !== 200) errors++;
      await res?.arrayBuffer();
      lat.push(performance.now() - t);
    }
  }));
  const secs = (performance.now() - started) / 1000;
  lat.sort((a, b) => a - b);
  return { ops: lat.length, errors, p50: pct(lat, 0.5), p99: pct(lat, 0.99), rps: lat.length / secs };
}

async function main() {
  const dir = await tempClusterDir("reserve-bench-webhooks-");
  const pg = await startLocalPostgres({ dataDir: path.join(dir, "postgres"), port: await freePort(), logFile: path.join(dir, "postgres.log") });
  const stops: (() => Promise<void>)[] = [async () => { await pg.stop(); await rm(dir, { recursive: true, force: true }); }];
  try {
    const root = postgres(pg.url(), { max: 1, onnotice: () => {} });
    await root.unsafe("create database bench");
    await root.end();
    const url = pg.url("bench");
    await migrate(url);
    const sql = postgres(url, { max: 8, onnotice: () => {} });
    stops.unshift(() => sql.end());

    const fnPort = await freePort();
    const base = `http://127.0.0.1:${fnPort}/functions/v1`;
    const sandbox = await startProviderSandbox({ stripeWebhookUrl: `${base}/webhook_stripe` });
    stops.unshift(() => sandbox.stop());
    // webhooks are posted by the bench itself; the sandbox's own would add load and skew the figures
    sandbox.control.setWebhookMode("all", "drop");
    const cronSecret = newCronSecret();
    const functions = await startFunctions({
      port: fnPort,
      env: { SUPABASE_DB_URL: url, SUPABASE_URL: `http://127.0.0.1:${fnPort}`, RESERVE_JWT_SECRET: DEFAULT_LOCAL_JWT_SECRET,
             RESERVE_CRON_SECRET: cronSecret, RESERVE_DB_POOL_SIZE: pool, ...sandboxEnv(sandbox) },
    });
    stops.unshift(() => functions.stop());

    const barePort = await freePort();
    const bare = spawn(denoBinary(), ["run", "--quiet", "--no-prompt", "--config", path.join(projectRoot, "deno.json"),
      "--allow-net", "--allow-env", "--allow-read", "--allow-sys", path.join(projectRoot, "scripts/bench/bare_insert.ts")], {
      env: { ...process.env, DENO_DIR: path.join(projectRoot, "node_modules", ".deno-cache"), SUPABASE_DB_URL: url, PORT: String(barePort), RESERVE_DB_POOL_SIZE: pool },
      stdio: ["ignore", "pipe", "inherit"],
    });
    await new Promise<void>((resolve) => bare.stdout!.on("data", (d: Buffer) => d.toString().includes("listening") && resolve()));
    stops.unshift(async () => { bare.kill(); });

    // one pending card payment per distinct night, each with its PaymentIntent at the sandbox
    const perCell = Math.ceil((durationMs / 1000) * 400);
    const needed = (perCell + 1) * levels.length * roundsPerLevel + 100;
    const units = Math.ceil((needed + backlog) / 300);
    log(`seeding ${needed + backlog} pending card payments on ${units} units...`);
    await sql`insert into reserve.cities (code, name, state) values ('RIO', 'Rio', 'RJ') on conflict do nothing`;
    // one host's property of many units (a property manager's): every receipt also adds to that host's statement day
    const [prop] = await sql`insert into reserve.properties_map (city_code, name, host_id) values ('RIO', 'Bench', gen_random_uuid()) returning id`;
    await sql`
      with u as (insert into reserve.unit_map (property_id, name, unit_type, max_occupancy, base_price)
                 select ${prop.id}, 'u' || g, 'apartment', 4, 50000 from generate_series(1, ${units}) g returning id)
      insert into reserve.availability_calendar (unit_id, date, allotment)
      select u.id, current_date + d, 1 from u, generate_series(1, 320) d`;
    const piIds = sandbox.control.seedStripePaymentIntents(needed + backlog, { status: "succeeded", amount: 50000 });
    // in statements of 5,000: each payment's subtransaction keeps a lock on its xid until the commit, and
    // 30,000 of them in one transaction overflow the lock table (max_locks_per_transaction)
    const made: { payment_id: string; gateway: string }[] = [];
    for (let from = 1; from <= needed + backlog; from += 5000) {
      const to = Math.min(needed + backlog, from + 4999);
      made.push(...await sql<{ payment_id: string; gateway: string }[]>`
        with stays as (
          select u.id as unit_id, current_date + d as night, row_number() over (order by u.id, d) as n
          from reserve.unit_map u, generate_series(1, 300) d
        ), ids as (select i, id from unnest(${piIds}::text[]) with ordinality as t(id, i))
        select (x.p).id as payment_id, (x.p).gateway_payment_id as gateway from (
          select reserve.create_payment(
                   (reserve.create_booking_intent(s.unit_id, s.night, s.night + 1, 2, 'card', null, null, null, '{}', 600)).id,
                   'stripe', 'card', 50000, ids.id) as p, s.n
          from stays s join ids on ids.i = s.n
          where s.n between ${from} and ${to}) x
        order by x.n`);
    }
    log(`seeded ${made.length} payments`);
    const payments = made.slice(0, needed);
    const stuck = made.slice(needed);

    const signed = async (pi: string, paymentId: string) => {
      const payload = JSON.stringify({
        id: `evt_${randomUUID().replace(/-/g, "")}`, object: "event", api_version: Stripe.API_VERSION, created: Math.floor(Date.now() / 1000),
        data: { object: { id: pi, object: "payment_intent", amount: 50000, amount_received: 50000, currency: "brl", status: "succeeded", metadata: { payment_id: paymentId } } },
        livemode: false, pending_webhooks: 1, request: { id: null, idempotency_key: null }, type: "payment_intent.succeeded",
      });
      const header = await Stripe.webhooks.generateTestHeaderStringAsync({ payload, secret: sandbox.stripe.webhookSecret });
      return { url: `${base}/webhook_stripe`, init: { method: "POST", headers: { "content-type": "application/json", "stripe-signature": header }, body: payload } };
    };

    // the three cells take turns, ROUNDS times per level, and each ratio is taken against the ceiling of
    // its own round: this machine's speed drifts by a third from one minute to the next
    const results: Record<string, Record<number, Cell>> = { bare: {}, distinct: {}, duplicate: {} };
    const ratios: Record<string, Record<number, number>> = { distinct: {}, duplicate: {} };
    let cursor = 0;
    for (const c of levels) {
      const rounds: Record<string, Cell[]> = { bare: [], distinct: [], duplicate: [] };
      for (let r = 0; r < roundsPerLevel; r++) {
        await sleep(300);
        let i = 0;
        rounds.bare.push(await load(c, () => ({ url: `http://127.0.0.1:${barePort}/`, init: { method: "POST", body: `{"n":${i++}}` } })));
        // sign just before the cell: signatures are valid for 300 s
        const batch = await Promise.all(payments.slice(cursor, cursor + perCell).map((p) => signed(p.gateway, p.payment_id)));
        cursor += perCell;
        let j = 0;
        await sleep(300);
        rounds.distinct.push(await load(c, () => batch[j++]));
        if (j >= batch.length) log("  (ran out of signed events: raise the per-cell seed)");
        const dup = await signed(payments[cursor].gateway, payments[cursor].payment_id);
        cursor++;
        await fetch(dup.url, dup.init).then((res) => res.arrayBuffer());
        await sleep(300);
        rounds.duplicate.push(await load(c, () => dup));
        log(`c=${c} round ${r + 1}: bare ${rounds.bare[r].rps.toFixed(0)}, distinct ${rounds.distinct[r].rps.toFixed(0)} (${rounds.distinct[r].errors} errors), duplicate ${rounds.duplicate[r].rps.toFixed(0)} req/s`);
      }
      for (const k of Object.keys(rounds)) results[k][c] = medianCell(rounds[k]);
      for (const k of Object.keys(ratios)) ratios[k][c] = median(rounds[k].map((cell, r) => cell.rps / rounds.bare[r].rps));
    }

    // the poller: the backlog's webhooks were never delivered; cron calls until nothing is due. Only
    // the backlog is due: what the cells above left unsent stays scheduled for later.
    await sql`update reserve.payment_polls set next_poll_at = now() + interval '1 hour'`;
    await sql`update reserve.payment_polls set next_poll_at = now() - interval '1 second'
              where payment_id = any(${stuck.map((s) => s.payment_id)}::uuid[])`;
    const t0 = performance.now();
    let runs = 0;
    let reconciled = 0;
    for (;;) {
      const res = await fetch(`${base}/poll_payment_status`, {
        method: "POST", headers: { authorization: `Bearer ${cronSecret}`, "content-type": "application/json" },
        body: JSON.stringify({ batch_size: 200, concurrency: 16, budget_ms: 25_000 }),
      });
      const body = await res.json() as { claimed: number; applied: number; finalized: number; errors: number };
      runs++;
      reconciled += body.applied;
      log(`poll run ${runs}: claimed ${body.claimed}, applied ${body.applied}, finalized ${body.finalized}, errors ${body.errors}`);
      if (body.claimed === 0) break;
    }
    const pollSecs = (performance.now() - t0) / 1000;
    const [left] = await sql`select count(*)::int as n from reserve.payments where id = any(${stuck.map((s) => s.payment_id)}::uuid[]) and status <> 'succeeded'`;
    const [checks] = await sql`select (select count(*) from reserve.overbooking_check)::int as overbooked,
                                      (select count(*) from reserve.find_ledger_imbalances(current_date - 1))::int as imbalanced`;

    const row = (name: string, cells: Record<number, Cell>, ratio?: Record<number, number>) =>
      `| ${name} | ${levels.map((c) => `${cells[c].rps.toFixed(0)}${ratio ? ` = ${(ratio[c] * 100).toFixed(1)}%` : ""} (${cells[c].p50.toFixed(1)} / ${cells[c].p99.toFixed(1)})${cells[c].errors ? ` ${cells[c].errors} err` : ""}`).join(" | ")} |`;
    console.log(`
## bench:webhooks (${new Date().toISOString()})
${cpus().length} vCPU ${cpus()[0]?.model ?? ""}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB, Node ${process.version}, load ${loadavg()[0].toFixed(2)} at the end; ${roundsPerLevel} rounds of ${durationMs / 1000} s per cell, edge DB pool ${pool}

Each figure is the median round; a percentage is the median over rounds of the cell's rate over the ceiling's in the same round.

| req/s (p50 / p99 ms) | ${levels.map((c) => `c=${c}`).join(" | ")} |
| --- | ${levels.map(() => "---").join(" | ")} |
${row("bare Deno.serve + 1 INSERT (ceiling)", results.bare)}
${row("webhook_stripe succeeded, distinct payments", results.distinct, ratios.distinct)}
${row("webhook_stripe duplicate of a completed event", results.duplicate, ratios.duplicate)}

poller: ${reconciled} of ${stuck.length} stuck payments reconciled in ${pollSecs.toFixed(1)} s over ${runs} runs = ${(reconciled / pollSecs).toFixed(0)} payments/s; not succeeded afterwards: ${left.n}
invariants: overbooking_check rows ${checks.overbooked}, ledger imbalances ${checks.imbalanced}`);
  } finally {
    for (const stop of stops) await stop().catch(() => {});
  }
}

await main();
