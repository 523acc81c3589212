// npm run bench:faults — the database fault loop of tests/faults for a minute, at a realistic rate: the
// functions' backends terminated (pg_terminate_backend, as a failover or a pooler restart does) every
// KILL_EVERY_MS while guests pay by card and PIX through the provider sandbox, its signed webhooks reach
// the functions under real Deno, a guest checks out and a monitor asks for health, and the poller runs
// with its default budget. Reports the kills survived, the slowest webhook answer, the poller's longest
// run against its budget, how many events needed redelivery, and what is wrong in the database after.
//
// A backlog of card payments still processing at Stripe keeps the poller busy for its whole budget, so
// its runs show whether the budget holds while the connections flap.
//
//   npm run bench:faults     env: DURATION_S (default 60), KILL_EVERY_MS (default 1000),
//                                 PAYMENTS (default 2 per second of DURATION_S), BUDGET_MS (default 25000),
//                                 BACKLOG (default 5000 payments for the poller)
import { randomUUID } from "node:crypto";
import { rm } from "node:fs/promises";
import { cpus, loadavg } from "node:os";
import path from "node:path";
import postgres from "postgres";
import { startFunctions } from "../../local/functions.ts";
import { DEFAULT_LOCAL_JWT_SECRET, signJwt } from "../../local/keys.ts";
import { migrate } from "../../local/migrate.ts";
import { freePort } from "../../local/ports.ts";
import { startLocalPostgres, tempClusterDir } from "../../local/postgres.ts";
import { newCronSecret, sandboxEnv } from "../../local/provider_env.ts";
import { startProviderSandbox } from "../../local/sandbox/index.ts";
import { runFaultLoop, startWebhookRecorder, summarize } from "../../tests/faults/fault_loop.ts";

const durationMs = Number(process.env.DURATION_S ?? 60) * 1000;
const killEveryMs = Number(process.env.KILL_EVERY_MS ?? 1000);
const payments = Number(process.env.PAYMENTS ?? Math.round((durationMs / 1000) * 2));
const budgetMs = Number(process.env.BUDGET_MS ?? 25_000);
const backlog = Number(process.env.BACKLOG ?? 5000);
const log = (m: string) => process.stderr.write(`${m}\n`);
const load = () => loadavg().map((l) => l.toFixed(2)).join(" ");

async function main() {
  const loadBefore = load();
  const dir = await tempClusterDir("reserve-bench-faults-");
  const pg = await startLocalPostgres({ dataDir: path.join(dir, "postgres"), port: await freePort(), logFile: path.join(dir, "postgres.log") });
  const stops: (() => Promise<void>)[] = [async () => { await pg.stop(); await rm(dir, { recursive: true, force: true }); }];
  try {
    const root = postgres(pg.url(), { max: 1, onnotice: () => {} });
    await root.unsafe("create database bench");
    await root.end();
    const url = pg.url("bench");
    await migrate(url);
    const sql = postgres(url, { max: 4, onnotice: () => {} });
    stops.unshift(() => sql.end());

    const recorder = await startWebhookRecorder();
    stops.unshift(() => recorder.close());
    const fnPort = await freePort();
    const base = `http://127.0.0.1:${fnPort}/functions/v1`;
    recorder.target = base;
    const sandbox = await startProviderSandbox({ stripeWebhookUrl: `${recorder.base}/webhook_stripe`, openpixWebhookUrl: `${recorder.base}/webhook_pix/openpix` });
    stops.unshift(() => sandbox.stop());
    const cronSecret = newCronSecret();
    const gatewayLog: string[] = [];
    const functions = await startFunctions({
      port: fnPort,
      env: { SUPABASE_DB_URL: url, SUPABASE_URL: `http://127.0.0.1:${fnPort}`, RESERVE_FUNCTIONS_URL: recorder.base,
             RESERVE_JWT_SECRET: DEFAULT_LOCAL_JWT_SECRET, RESERVE_CRON_SECRET: cronSecret, ...sandboxEnv(sandbox) },
      onLog: (l) => gatewayLog.push(l),
    });
    stops.unshift(() => functions.stop());

    if (backlog > 0) {
      log(`seeding a backlog of ${backlog} card payments still processing at Stripe...`);
      const units = Math.ceil(backlog / 300);
      await sql`insert into reserve.cities (code, name, state) values ('SAO', 'São Paulo', 'SP') on conflict do nothing`;
      const [prop] = await sql`insert into reserve.properties_map (city_code, name) values ('SAO', 'Backlog') returning id`;
      await sql`
        with u as (insert into reserve.unit_map (property_id, name, unit_type, max_occupancy, base_price)
                   select ${prop.id}, 'backlog ' || g, 'apartment', 4, 50000 from generate_series(1, ${units}) g returning id)
        insert into reserve.availability_calendar (unit_id, date, allotment)
        select u.id, current_date + d, 1 from u, generate_series(1, 320) d`;
      const piIds = sandbox.control.seedStripePaymentIntents(backlog, { status: "processing", amount: 50000 });
      await sql`
        with stays as (
          select u.id as unit_id, current_date + d as night, row_number() over (order by u.id, d) as n
          from reserve.unit_map u join reserve.properties_map p on p.id = u.property_id and p.name = 'Backlog',
               generate_series(1, 300) d
        ), ids as (select i, id from unnest(${piIds}::text[]) with ordinality as t(id, i))
        select reserve.create_payment(
                 (reserve.create_booking_intent(s.unit_id, s.night, s.night + 1, 2, 'card', null, null, null, '{}', 600)).id,
                 'stripe', 'card', 50000, ids.id)
        from stays s join ids on ids.i = s.n`;
    }

    const userToken = () => signJwt({ sub: randomUUID(), email: "guest@example.com", role: "authenticated", aud: "authenticated",
                                      exp: Math.floor(Date.now() / 1000) + 3600 }, DEFAULT_LOCAL_JWT_SECRET);
    const cards = Math.ceil(payments * 0.6);
    const report = await runFaultLoop(
      { functionsBase: base, gateway: functions.process, sandbox, sql, cronSecret, recorder, userToken },
      { durationMs, killEveryMs, cards, pix: payments - cards, pollBudgetMs: budgetMs },
      log,
    );
    const figures = summarize(report, budgetMs);
    const uncaught = gatewayLog.filter((l) => /Uncaught/.test(l)).length;
    const kept = gatewayLog.filter((l) => /process kept running/.test(l)).length;
    console.log(JSON.stringify({
      bench: "faults", duration_s: durationMs / 1000, kill_every_ms: killEveryMs, ...figures,
      uncaught_in_gateway: uncaught, guarded_rejections: kept,
      machine: { cpus: cpus().length, load_before: loadBefore, load_after: load() },
    }, null, 2));
    log(`\nkills survived: ${figures.kills} backends in ${figures.kill_rounds} rounds, gateway ${figures.gateway_exited ? `EXITED (${figures.gateway_exited})` : "never exited"}`);
    log(`slowest webhook answer: ${figures.slowest_webhook_ms} ms (of ${figures.webhook_answers}); slowest of all ${figures.answers} answers: ${figures.slowest_answer_ms} ms`);
    log(`poller: longest run ${figures.longest_poll_ms} ms against a budget of ${budgetMs} ms (${figures.poll_runs} runs)`);
    log(`events: ${figures.webhook_events}, ${figures.events_redelivered} needed redelivery, ${figures.events_undelivered} never completed`);
    log(`problems: ${figures.problems.length ? figures.problems.join("; ") : "none"}; load average ${load()} on ${cpus().length} cores`);
    if (figures.gateway_exited || figures.problems.length || figures.events_undelivered) process.exitCode = 1;
  } finally {
    for (const stop of stops) await stop().catch(() => {});
  }
}

await main();
