// npm run bench:runbook — every query the runbook runs first, on a year of a busy platform (the
// database `npm run seed:large` built in .data-large): median and best of RUNS runs each, and the plan
// of one run (EXPLAIN ANALYZE, BUFFERS) written to .data-large/explain/<name>.txt. Pending migrations
// (new indexes) are applied first, so running it before and after a migration gives before / after;
// their time is reported, with the audit rows counted before and after them (the monthly partitioning
// of audit_logs copies every row). Then one run_integrity_audit(), as the hourly schedule would have
// run it, and one verify_recent_writes() over the hour since it, are timed; the checks then read the
// dataset's newest six minutes, the worst case of the minute schedule (the watermark five minutes back),
// and then, for the three checks, windows of 60 and 600 minutes: the writes of ten and a hundred times
// the write rate.
//
//   npm run seed:large && npm run bench:runbook       env: RUNS (default 5), RESERVE_LARGE_DIR
import { mkdir, writeFile } from "node:fs/promises";
import { cpus, loadavg, totalmem } from "node:os";
import path from "node:path";
import postgres from "postgres";
import { migrate, projectRoot } from "../../local/migrate.ts";
import { datasetSizes, setChecksWindow, stampSeededStays, startYearDataset } from "./year_dataset.ts";

const runs = Number(process.env.RUNS ?? 5);
const dir = path.resolve(projectRoot, process.env.RESERVE_LARGE_DIR ?? ".data-large");
const log = (m: string) => process.stderr.write(`${m}\n`);

// what an on-call engineer runs, as the runbook writes it
const QUERIES: [string, string][] = [
  ["check_all_alerts", "select * from reserve.check_all_alerts()"],
  ["system_health_check", "select * from reserve.system_health_check()"],
  ["ops_dashboard_summary", "select * from reserve.ops_dashboard_summary"],
  ["stuck_payments", "select * from reserve.stuck_payments"],
  ["stuck_payments_count", "select count(*) as stuck_count from reserve.stuck_payments"],
  ["webhook_status", "select * from reserve.webhook_status"],
  ["webhook_failure_analysis", "select * from reserve.webhook_failure_analysis order by last_seen desc limit 10"],
  ["failed_payments_analysis", "select * from reserve.failed_payments_analysis order by count desc"],
  ["overbooking_check", "select * from reserve.overbooking_check"],
  ["availability_counter_drift", "select * from reserve.availability_counter_drift"],
  ["active_booking_locks", "select * from reserve.active_booking_locks"],
  ["ledger_balance_check", "select * from reserve.ledger_balance_check limit 5"],
  ["find_ledger_imbalances_7d", "select * from reserve.find_ledger_imbalances(now()::date - 7)"],
  ["retention_statistics", "select * from reserve.retention_statistics"],
  ["known_ledger_imbalances", "select * from reserve.known_ledger_imbalances()"],
  ["audit_logs_size_all_partitions", "select pg_size_pretty(sum(pg_total_relation_size(relid))) from pg_partition_tree('reserve.audit_logs')"],
  ["audit_logs_months", `select c.relname, c.reltuples::bigint as rows_estimate, pg_size_pretty(pg_total_relation_size(c.oid)) as size
                         from pg_inherits i join pg_class c on c.oid = i.inhrelid where i.inhparent = 'reserve.audit_logs'::regclass order by c.relname`],
  ["integrity_audits_last_5", `select id, started_at, verified_through, finished_at, ledger_transactions, cardinality(imbalanced_transactions),
                               cardinality(drifted_units), duration_ms from reserve.integrity_audits order by finished_at desc limit 5`],
  ["webhooks_last_hour", "select provider, status, count(*) from reserve.processed_webhooks where received_at > now() - interval '1 hour' group by provider, status"],
  ["paid_no_reservation", `select p.id from reserve.payments p left join reserve.reservations r on p.booking_intent_id = r.booking_intent_id
                           where p.status = 'succeeded' and r.id is null and p.succeeded_at > now() - interval '24 hours'`],
  ["double_charges_7d", `select booking_intent_id, count(*) from reserve.payments where status = 'succeeded'
                         and created_at > now() - interval '7 days' group by booking_intent_id having count(*) > 1`],
  ["success_rate_by_hour", `select date_trunc('hour', created_at), count(*) filter (where status = 'succeeded'), count(*)
                            from reserve.payments where created_at > now() - interval '24 hours' group by 1 order by 1 desc`],
];

async function main() {
  const { pg, url } = await startYearDataset(dir);
  try {
    const sql = postgres(url, { max: 1, onnotice: () => {} });
    const auditRows = async () => Number((await sql`select count(*) as n from reserve.audit_logs`)[0].n);
    const auditBefore = await auditRows();
    const tm = performance.now();
    // a copy of the lead's dataset may carry newer migrations of main than this branch's own
    const applied = await migrate(url, { includeAll: true, timeoutMs: 3_600_000 });
    const migrateS = (performance.now() - tm) / 1000;
    if (applied.applied.length) log(`applied ${applied.applied.join(", ")} in ${migrateS.toFixed(1)} s`);
    const auditAfter = await auditRows();
    if (auditAfter < auditBefore) throw new Error(`the migrations lost audit rows: ${auditBefore} before, ${auditAfter} after`);
    const stamped = await stampSeededStays(sql);
    if (stamped) log(`stamped nights_changed_at on ${stamped} seeded stays`);
    await sql`analyze`;
    const ta = performance.now();
    const [audit] = await sql`select id, ledger_transactions, cardinality(imbalanced_transactions) as imbalanced,
                                     cardinality(drifted_units) as drifted from reserve.run_integrity_audit()`;
    const auditS = (performance.now() - ta) / 1000;
    log(`run_integrity_audit: ${auditS.toFixed(1)} s`);
    // the first verify_recent_writes() after an hourly audit reads the hour since it (the audit's
    // watermark set to an hour before the dataset's newest payment)
    await sql`update reserve.integrity_audits set verified_through = least(verified_through, (select max(created_at) from reserve.payments) - interval '1 hour'),
                ledger_summed_before = least(ledger_summed_before, (select max(created_at) from reserve.payments) - interval '1 hour') where id = ${audit.id}`;
    const tv = performance.now();
    const [verified] = await sql`select id from reserve.verify_recent_writes()`;
    const verifyMs = performance.now() - tv;
    log(`verify_recent_writes over the hour: ${verifyMs.toFixed(0)} ms`);
    // sorted run times of q after one warm-up
    const timed = async (q: string) => {
      await sql.unsafe(q);
      const times: number[] = [];
      for (let i = 0; i < runs; i++) {
        const t = performance.now();
        await sql.unsafe(q);
        times.push(performance.now() - t);
      }
      return times.sort((a, b) => a - b);
    };
    // the checks' worst case on the minute schedule: the dataset's newest six minutes not yet verified
    // (the watermark stays five minutes back; a minute since the last run)
    const win = await setChecksWindow(sql, verified.id, 6);
    const sizes = await datasetSizes(sql);
    await mkdir(path.join(dir, "explain"), { recursive: true });
    const rows: string[] = [];
    for (const [name, q] of QUERIES) {
      const times = await timed(q);
      const plan = await sql.unsafe(`explain (analyze, buffers) ${q}`);
      await writeFile(path.join(dir, "explain", `${name}.txt`), plan.map((p) => p["QUERY PLAN"]).join("\n"));
      rows.push(`| ${name} | ${times[Math.floor(times.length / 2)].toFixed(1)} | ${times[0].toFixed(1)} |`);
      log(`${name}: ${times[Math.floor(times.length / 2)].toFixed(1)} ms`);
    }
    // what the checks cost as the write rate grows: the same three read a window holding ten and a
    // hundred times the six minutes' writes (the counts say how many more it really holds)
    const scaled: string[] = [];
    for (const minutes of [60, 600]) {
      const w = await setChecksWindow(sql, verified.id, minutes);
      const cells: string[] = [];
      for (const [name, q] of QUERIES.slice(0, 3)) {
        const times = await timed(q);
        cells.push(times[Math.floor(times.length / 2)].toFixed(1));
        log(`${name} over ${minutes} minutes: ${cells.at(-1)} ms`);
      }
      scaled.push(`| ${minutes} min | ${w.legs} | ${w.units} | ${w.stays} | ${cells.join(" | ")} |`);
    }
    console.log(`
## bench:runbook (${new Date().toISOString()})
${cpus().length} vCPU ${cpus()[0]?.model ?? ""}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB, load ${loadavg()[0].toFixed(2)}; ${runs} runs each after one warm-up
data: ${sizes.payments} payments, ${sizes.ledger_entries} ledger entries, ${sizes.nights} calendar nights, ${sizes.audit} audit rows, ${sizes.webhooks} webhooks; ${sizes.size}
plans: ${path.join(dir, "explain")}
migrations applied: ${applied.applied.length ? `${applied.applied.join(", ")} in ${migrateS.toFixed(1)} s` : "none"}; audit rows ${auditBefore} before, ${auditAfter} after
run_integrity_audit (the hourly full audit, once before the runs): ${auditS.toFixed(1)} s over ${audit.ledger_transactions} ledger transactions; found ${audit.imbalanced} imbalanced, ${audit.drifted} drifted units
verify_recent_writes (every minute), its first run after that audit with the audit's watermark an hour before the newest payment: ${verifyMs.toFixed(0)} ms\nchecks read since ${win.verified_through.toISOString()} (six minutes before the newest payment): ${win.legs} ledger legs, ${win.units} units written, ${win.stays} stays whose nights changed

| query | median ms | best ms |
| --- | --- | --- |
${rows.join("\n")}

the checks with a window of more writes (the minute schedule at ten and a hundred times the write rate), medians in ms:

| window | ledger legs | units written | stays whose nights changed | check_all_alerts | system_health_check | ops_dashboard_summary |
| --- | --- | --- | --- | --- | --- | --- |
| 6 min | ${win.legs} | ${win.units} | ${win.stays} | ${rows[0].split(" | ")[1]} | ${rows[1].split(" | ")[1]} | ${rows[2].split(" | ")[1]} |
${scaled.join("\n")}`);
    await sql.end();
  } finally {
    await pg.stop();
  }
}

await main();
