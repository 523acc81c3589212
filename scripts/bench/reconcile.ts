// npm run bench:reconcile — the books close, measured.
//
// 1. A day of N (10,000) Stripe PaymentIntents in the provider sandbox, each our payment (same id, amount,
//    fee booked) except planted differences: payments Stripe holds that are none of ours, ours for
//    another amount, ours Stripe does not list. The reconcile edge function (real Deno, over HTTP) runs
//    the day to the end, resuming from its cursor when its budget runs out. Reported: time, provider
//    calls, items by kind, and the ceiling measured in the same run: the bare list walk (stripe-node's
//    auto-pagination over the same pages, same expansion, nothing compared or written).
// 2. With RESERVE_LARGE_DIR (a copy of a `npm run seed:large` database; the pending migrations, with
//    the balances' backfill, are applied first and timed): a busy host's statement for the year from
//    the kept days (host_statement, host_statement_days) against the same figures summed from the
//    ledger (the ceiling), and the ledger drift checks (incremental, full).
//
//   npm run bench:reconcile            env: OBJECTS (10000), BUDGET_MS (25000), RUNS (5), RESERVE_LARGE_DIR,
//                                      SKIP_DAY=1 (only the year), RESERVE_MIGRATE_TIMEOUT_MS (the backfill on a year)
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { rm } from "node:fs/promises";
import { cpus, loadavg, totalmem } from "node:os";
import path from "node:path";
import postgres from "postgres";
import Stripe from "stripe";
import { startFunctions } from "../../local/functions.ts";
import { DEFAULT_LOCAL_JWT_SECRET } from "../../local/keys.ts";
import { migrate } from "../../local/migrate.ts";
import { freePort } from "../../local/ports.ts";
import { newCronSecret, sandboxEnv } from "../../local/provider_env.ts";
import { startLocalPostgres, tempClusterDir } from "../../local/postgres.ts";
import { startProviderSandbox } from "../../local/sandbox/index.ts";
import { stripeFee } from "../../local/sandbox/stripe.ts";

const OBJECTS = Number(process.env.OBJECTS ?? 10_000);
const BUDGET_MS = Number(process.env.BUDGET_MS ?? 25_000);
const RUNS = Number(process.env.RUNS ?? 5);
const PLANTED = { strangers: 25, otherAmount: 25, notListed: 25 };
const log = (m: string) => process.stderr.write(`${m}\n`);
const load = () => loadavg().map((l) => l.toFixed(2)).join(" ");
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function reconcileDay(): Promise<string> {
  const dir = await tempClusterDir("bench-reconcile-");
  const pg = await startLocalPostgres({ dataDir: path.join(dir, "postgres"), port: await freePort(), logFile: path.join(dir, "postgres.log") });
  const url = pg.url("postgres");
  await migrate(url);
  const sql = postgres(url, { max: 4, onnotice: () => {} });
  const sandbox = await startProviderSandbox({});
  const port = await freePort();
  const cronSecret = newCronSecret();
  const functions = await startFunctions({
    port,
    env: { SUPABASE_DB_URL: url, SUPABASE_URL: `http://127.0.0.1:${port}`, RESERVE_JWT_SECRET: DEFAULT_LOCAL_JWT_SECRET,
           RESERVE_CRON_SECRET: cronSecret, ...sandboxEnv(sandbox) },
    onLog: () => {},
  });
  try {
    // the day: yesterday (UTC), one PaymentIntent every 86400 / N seconds
    const to = new Date(Math.floor(Date.now() / 86_400_000) * 86_400_000);
    const from = new Date(to.getTime() - 86_400_000);
    const step = Math.max(1, Math.floor(86_400 / OBJECTS));
    log(`seeding ${OBJECTS} PaymentIntents and our payments for ${from.toISOString().slice(0, 10)} ...`);
    const t0 = performance.now();
    const rows: { id: string; pi: string; amount: number; created: Date }[] = [];
    for (let i = 0; i < OBJECTS; i++) {
      const id = randomUUID();
      const amount = 20_000 + (i % 50) * 1_000;
      const created = Math.floor(from.getTime() / 1000) + 1 + i * step;
      const [pi] = sandbox.control.seedStripePaymentIntents(1, { status: "succeeded", amount, created, metadata: { payment_id: id } });
      rows.push({ id, pi: pi!, amount, created: new Date(created * 1000) });
    }
    for (let i = 0; i < PLANTED.strangers; i++) {
      sandbox.control.seedStripePaymentIntents(1, { status: "succeeded", amount: 7_777, created: Math.floor(from.getTime() / 1000) + 100 + i });
    }
    const [{ unit_id, property_id, city_code }] = await sql`
      with c as (insert into reserve.cities (code, name, state) values ('BEN', 'Bench', 'RJ') returning code),
           p as (insert into reserve.properties_map (city_code, name, host_id) select code, 'Bench property', ${randomUUID()} from c returning id, city_code),
           u as (insert into reserve.unit_map (property_id, name, unit_type, max_occupancy, base_price)
                 select id, 'Bench unit', 'apartment', 4, 50000 from p returning id, property_id)
      select u.id as unit_id, u.property_id, p.city_code from u join p on p.id = u.property_id`;
    // our side as the success path leaves it (payment succeeded with what arrived, its fee booked);
    // loaded around the triggers, as a restore would, the fee then through the posting function
    const planted = new Set(rows.slice(0, PLANTED.otherAmount).map((r) => r.id));
    for (let lo = 0; lo < rows.length; lo += 2_000) {
      const chunk = rows.slice(lo, lo + 2_000);
      await sql.begin(async (tx) => {
        await tx`set local session_replication_role = replica`;
        await tx`insert into reserve.booking_intents (id, unit_id, property_id, city_code, check_in, check_out, guests, amount, expires_at, status, converted_at, created_at)
                 select x.id, ${unit_id}, ${property_id}, ${city_code}, current_date + 10, current_date + 12, 2, x.amount, x.created + interval '15 minutes', 'converted', x.created, x.created
                 from jsonb_to_recordset(${tx.json(chunk.map((r) => ({ id: r.id, amount: r.amount, created: r.created.toISOString() })))})
                   as x(id uuid, amount bigint, created timestamptz)`;
        await tx`insert into reserve.payments (id, booking_intent_id, provider, method, status, amount, currency, idempotency_key,
                   gateway_payment_id, gateway_status, received_amount, received_currency, succeeded_at, created_at, updated_at, status_changed_at)
                 select x.id, x.id, 'stripe', 'card', 'succeeded', x.asked, 'BRL', 'bench:' || x.id, x.pi, 'succeeded', x.amount, 'BRL',
                        x.created + interval '5 seconds', x.created, x.created, x.created
                 from jsonb_to_recordset(${tx.json(chunk.map((r) => ({ id: r.id, pi: r.pi, amount: r.amount, asked: planted.has(r.id) ? r.amount + 100 : r.amount, created: r.created.toISOString() })))})
                   as x(id uuid, pi text, amount bigint, asked bigint, created timestamptz)`;
      });
    }
    await sql`select count(reserve.post_provider_fee(p.id, round(p.received_amount * 3.99 / 100)::bigint + 39)) from reserve.payments p`;
    // ours that Stripe never listed: gateway ids Stripe does not have
    await sql.begin(async (tx) => {
      await tx`set local session_replication_role = replica`;
      for (let i = 0; i < PLANTED.notListed; i++) {
        const id = randomUUID();
        const created = new Date(from.getTime() + 3_600_000 + i * 1000);
        await tx`insert into reserve.booking_intents (id, unit_id, property_id, city_code, check_in, check_out, guests, amount, expires_at, status, converted_at, created_at)
                 values (${id}, ${unit_id}, ${property_id}, ${city_code}, current_date + 10, current_date + 12, 2, 30000, ${created}, 'converted', ${created}, ${created})`;
        await tx`insert into reserve.payments (id, booking_intent_id, provider, method, status, amount, currency, idempotency_key, gateway_payment_id,
                   received_amount, received_currency, succeeded_at, created_at)
                 values (${id}, ${id}, 'stripe', 'card', 'succeeded', 30000, 'BRL', ${"bench:" + id}, ${"pi_not_at_stripe_" + i}, 30000, 'BRL', ${created}, ${created})`;
      }
    });
    await sql`analyze`;
    log(`seeded in ${((performance.now() - t0) / 1000).toFixed(1)} s; fees booked: ${rows.length}`);

    // the ceiling: the bare walk of the same pages
    const stripe = new Stripe(sandbox.stripe.secretKey, { host: sandbox.stripe.host, port: sandbox.stripe.port, protocol: "http", maxNetworkRetries: 0 });
    const walkTimes: number[] = [];
    let walked = 0;
    let walkPages = 0;
    for (let r = 0; r < 3; r++) {
      const t = performance.now();
      walked = 0;
      let after: string | undefined;
      walkPages = 0;
      for (;;) {
        const page = await stripe.paymentIntents.list({
          created: { gte: Math.floor(from.getTime() / 1000), lt: Math.floor(to.getTime() / 1000) }, limit: 100,
          expand: ["data.latest_charge.balance_transaction"], ...(after && { starting_after: after }) });
        walkPages++;
        walked += page.data.length;
        if (!page.has_more) break;
        after = page.data.at(-1)!.id;
      }
      walkTimes.push(performance.now() - t);
    }
    const walkMs = median(walkTimes);
    log(`bare walk: ${walked} objects in ${walkPages} pages, ${walkMs.toFixed(0)} ms (load ${load()})`);

    // reconcile, as an operator would for the day, until done
    const loadBefore = load();
    const t1 = performance.now();
    let calls = 0;
    let body: any;
    do {
      const res = await fetch(`http://127.0.0.1:${port}/functions/v1/reconcile`, {
        method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${cronSecret}` },
        body: JSON.stringify({ provider: "stripe", from: from.toISOString(), to: to.toISOString(), budget_ms: BUDGET_MS }),
      });
      body = await res.json();
      calls++;
      if (res.status !== 200) throw new Error(`reconcile answered ${res.status}: ${JSON.stringify(body)}`);
    } while (!body.done && calls < 100);
    const reconcileMs = performance.now() - t1;
    const run = body.runs[0];
    const kinds = await sql`select kind::text, count(*)::int as n, count(*) filter (where repaired_at is not null)::int as repaired
                            from reserve.reconciliation_items group by 1 order by 1`;
    log(`reconcile: ${run.objects} objects, ${run.provider_calls} provider calls, ${calls} function calls, ${reconcileMs.toFixed(0)} ms`);
    return `
### a day of ${OBJECTS} Stripe PaymentIntents (+${PLANTED.strangers} not ours)
| what | time | ratio to the bare walk |
| --- | ---: | ---: |
| bare list walk (stripe-node, 100 a page, charge + balance transaction expanded): ${walked} objects, ${walkPages} pages | ${walkMs.toFixed(0)} ms | 1.00 |
| reconcile function (real Deno, over HTTP; budget ${BUDGET_MS} ms, ${calls} call(s) to finish): ${run.objects} objects, ${run.provider_calls} provider calls | ${reconcileMs.toFixed(0)} ms | ${(reconcileMs / walkMs).toFixed(2)} |

load before / after: ${loadBefore} / ${load()}; expected items: ${PLANTED.strangers} paid_unknown, ${PLANTED.otherAmount} amount_mismatch, ${PLANTED.notListed} ours_missing_there (+1 payout_mismatch: the balance holds the strangers' money)

| item kind | found | repaired |
| --- | ---: | ---: |
${kinds.map((k) => `| ${k.kind} | ${k.n} | ${k.repaired} |`).join("\n")}
`;
  } finally {
    await functions.stop();
    await sandbox.stop();
    await sql.end();
    await pg.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

async function hostStatement(largeDir: string): Promise<string> {
  const pg = await startLocalPostgres({
    dataDir: path.join(largeDir, "postgres"), port: await freePort(), logFile: path.join(largeDir, "postgres.log"),
    settings: { shared_buffers: "1GB", work_mem: "64MB" },
  });
  try {
    const url = pg.url("reserve_large");
    const t0 = performance.now();
    const applied = await migrate(url);
    const migrateMs = performance.now() - t0;
    if (applied.applied.length) log(`applied ${applied.applied.join(", ")} in ${(migrateMs / 1000).toFixed(1)} s`);
    const sql = postgres(url, { max: 1, onnotice: () => {} });
    try {
      await sql`analyze reserve.ledger_host_days`;
      const [sizes] = await sql`select (select count(*) from reserve.ledger_entries) as entries, (select count(distinct (host_id, currency, day)) from reserve.ledger_host_days) as host_days,
                                       (select count(distinct host_id) from reserve.ledger_host_days) as hosts`;
      // the busiest host
      const [{ host_id }] = await sql`select host_id from reserve.ledger_host_days group by host_id order by sum(entries) desc limit 1`;
      const [{ from, to }] = await sql`select (current_date - 365)::text as from, current_date::text as to`;
      const time = async (q: () => Promise<unknown>) => {
        await q();
        const ts: number[] = [];
        for (let i = 0; i < RUNS; i++) {
          const t = performance.now();
          await q();
          ts.push(performance.now() - t);
        }
        return median(ts);
      };
      const statement = await sql`select * from reserve.host_statement(${host_id}, ${from}, ${to})`;
      const summed = await sql`
        select e.currency, sum(case e.direction when 'credit' then e.amount else -e.amount end)::bigint as closing,
               sum(e.amount) filter (where e.direction = 'credit')::bigint as credits, count(*) as entries
        from reserve.ledger_entries e
        join reserve.ledger_transactions t on t.id = e.transaction_id
        left join reserve.reservations r on r.id = t.reservation_id
        left join reserve.payments p on p.id = t.payment_id
        left join reserve.booking_intents bi on bi.id = p.booking_intent_id
        join reserve.properties_map pm on pm.id = coalesce(r.property_id, bi.property_id)
        where e.account = 'host_payable' and pm.host_id = ${host_id} and e.created_at < (${to}::date + 1)
        group by e.currency`;
      const statementMs = await time(() => sql`select * from reserve.host_statement(${host_id}, ${from}, ${to})`);
      const daysMs = await time(() => sql`select * from reserve.host_statement_days(${host_id}, ${from}, ${to})`);
      const summedMs = await time(() => sql`
        select sum(case e.direction when 'credit' then e.amount else -e.amount end)
        from reserve.ledger_entries e
        join reserve.ledger_transactions t on t.id = e.transaction_id
        left join reserve.reservations r on r.id = t.reservation_id
        left join reserve.payments p on p.id = t.payment_id
        left join reserve.booking_intents bi on bi.id = p.booking_intent_id
        join reserve.properties_map pm on pm.id = coalesce(r.property_id, bi.property_id)
        where e.account = 'host_payable' and pm.host_id = ${host_id}`);
      const driftMs = await time(() => sql`select * from reserve.ledger_balance_drift()`);
      const t1 = performance.now();
      const fullDrift = await sql`select * from reserve.ledger_balance_drift(true)`;
      const fullMs = performance.now() - t1;
      const balancesMs = await time(() => sql`select * from reserve.ledger_balances`);
      const agrees = statement.length === summed.length && statement.every((s) => {
        const x = summed.find((y) => y.currency === s.currency);
        return x && String(x.closing) === String(s.closing_balance) && String(x.credits) === String(s.credits);
      });
      return `
### host statement on the year dataset (${largeDir})
data: ${sizes.entries} ledger entries, ${sizes.host_days} host days of ${sizes.hosts} hosts; migrations applied first (balances backfilled): ${(migrateMs / 1000).toFixed(1)} s
busiest host ${host_id}: ${statement.map((s) => `${s.currency} opening ${s.opening_balance}, credits ${s.credits}, debits ${s.debits}, closing ${s.closing_balance}, ${s.entries} entries on ${s.days_with_movement} days`).join("; ")}; equal to the ledger's sum: ${agrees}

| query (median of ${RUNS}) | time | ratio to summing the ledger |
| --- | ---: | ---: |
| the host's year summed from the ledger entries (ceiling) | ${summedMs.toFixed(1)} ms | 1.00 |
| host_statement(host, year) | ${statementMs.toFixed(2)} ms | ${(statementMs / summedMs).toFixed(4)} |
| host_statement_days(host, year) | ${daysMs.toFixed(2)} ms | ${(daysMs / summedMs).toFixed(4)} |
| ledger_balances (every account) | ${balancesMs.toFixed(2)} ms | |
| ledger_balance_drift() since the checkpoint | ${driftMs.toFixed(1)} ms | |
| ledger_balance_drift(true), every entry (once) | ${fullMs.toFixed(0)} ms | ${fullDrift.length} accounts drifting |

load: ${load()}
`;
    } finally {
      await sql.end();
    }
  } finally {
    await pg.stop();
  }
}

async function main() {
  let out = `## bench:reconcile (${new Date().toISOString()})
${cpus().length} vCPU ${cpus()[0]?.model ?? ""}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB, load ${load()}
`;
  if (process.env.SKIP_DAY !== "1") out += await reconcileDay();
  const large = process.env.RESERVE_LARGE_DIR;
  if (large && existsSync(path.join(large, "postgres"))) out += await hostStatement(path.resolve(large));
  else out += "\n(host statement: set RESERVE_LARGE_DIR to a copy of a seed:large database)\n";
  console.log(out);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
