// npm run bench:retention — the audit retention job on 5M due rows, with a writer running. audit_logs is
// partitioned by month: the rows are loaded into the twelve whole months before the one the cutoff (365
// days) falls in, and CALL reserve.retention_cleanup_job() is repeated until more_due is false: each call
// proves and counts one month (a CHECK of its bounds), detaches it from audit_logs and attaches it to
// audit_logs_archive (no row copied; the ACCESS EXCLUSIVE lock on audit_logs is held for that month's
// catalog changes, last in the call's transaction). Meanwhile one connection inserts an audit row every
// 2 ms (the triggers' workload); reported: rows/s of the job, and the writer's p50 / p99 / worst insert
// latency during it and in a quiet baseline. The archive already holds ARCHIVED rows in its default
// partition, as the partitioning conversion left the batch era's archive: attaching a month must prove none
// of them is of that month, and a proof that reads them under audit_logs' lock is a writer's wait. The
// batched way it replaced (5,000-row DELETE ... RETURNING into the archive) measured 105 s for the same 5M
// rows on this machine. Production durability (fsync, synchronous_commit on).
//
// PACE_MS spaces the calls as a schedule would (the cron calls it every ten minutes): the writer's p99 then
// shows what a move costs it, not what back-to-back moves on two cores do.
//
//   npm run bench:retention        env: ROWS (default 5000000), ARCHIVED (default 2000000), PACE_MS (default 0)
import { rm } from "node:fs/promises";
import { cpus, loadavg, totalmem } from "node:os";
import path from "node:path";
import postgres from "postgres";
import { migrate } from "../../local/migrate.ts";
import { freePort } from "../../local/ports.ts";
import { startLocalPostgres, tempClusterDir } from "../../local/postgres.ts";

const rows = Number(process.env.ROWS ?? 5_000_000);
const archivedBefore = Number(process.env.ARCHIVED ?? 2_000_000);
const paceMs = Number(process.env.PACE_MS ?? 0);
const log = (m: string) => process.stderr.write(`${m}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function pct(sorted: number[], p: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] : NaN;
}

/** Inserts one audit row every `everyMs` until stopped; returns the insert latencies (ms). */
function writer(url: string, target: string, everyMs = 2) {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  const lat: number[] = [];
  let on = true;
  const done = (async () => {
    await sql`select 1`;
    while (on) {
      const t = performance.now();
      await sql.unsafe(`insert into ${target} (occurred_at, actor, action, table_name, row_id, new_values)
                        values (now(), 'writer', 'UPDATE', 'payments', gen_random_uuid()::text, '{"status":"succeeded"}')`);
      lat.push(performance.now() - t);
      await sleep(everyMs);
    }
    await sql.end();
  })();
  return {
    async stop() {
      on = false;
      await done;
      return lat.sort((a, b) => a - b);
    },
  };
}

const fmt = (l: number[]) => `p50 ${pct(l, 0.5).toFixed(2)} / p99 ${pct(l, 0.99).toFixed(2)} / max ${l[l.length - 1]?.toFixed(1)} ms over ${l.length} inserts`;

async function fillOld(sql: postgres.Sql, n: number) {
  const chunk = 500_000;
  for (let done = 0; done < n; done += chunk) {
    const k = Math.min(chunk, n - done);
    // spread over the twelve whole months before the month the cutoff falls in, as a year of trail past
    // its retention would be
    await sql.unsafe(`
      insert into reserve.audit_logs (occurred_at, actor, action, table_name, row_id, old_values, new_values, xact_id)
      select m - interval '12 months' + (g - 1) * ((m - (m - interval '12 months')) / ${n}), 'trigger', 'UPDATE', 'payments',
             md5(g::text), jsonb_build_object('status', 'processing'), jsonb_build_object('status', 'succeeded', 'amount', g), g
      from generate_series(${done + 1}, ${done + k}) g,
           lateral (select date_trunc('month', now() - interval '365 days') as m) cutoff_month`);
    log(`  audit_logs: ${done + k} / ${n} rows`);
  }
}

async function main() {
  const dir = await tempClusterDir("reserve-bench-retention-");
  const pg = await startLocalPostgres({ dataDir: path.join(dir, "postgres"), port: await freePort(), logFile: path.join(dir, "postgres.log"),
    settings: { max_wal_size: "4GB" } });
  try {
    const root = postgres(pg.url(), { max: 1, onnotice: () => {} });
    await root.unsafe("create database bench");
    await root.end();
    const url = pg.url("bench");
    await migrate(url);
    const sql = postgres(url, { max: 2, onnotice: () => {} });

    log(`loading ${rows} due rows into reserve.audit_logs (its months created first, as a load of history does)`);
    await sql`select reserve.create_audit_log_partitions((current_date - interval '26 months')::date, 3)`;
    await fillOld(sql, rows);
    log(`loading ${archivedBefore} rows archived before into reserve.audit_logs_archive (its default partition)`);
    await sql.unsafe(`
      insert into reserve.audit_logs_archive (id, occurred_at, actor, action, table_name, row_id, old_values, new_values, xact_id, archived_at)
      select -g, now() - interval '40 months' + g * interval '1 second', 'trigger', 'UPDATE', 'payments', md5(g::text),
             jsonb_build_object('status', 'processing'), jsonb_build_object('status', 'succeeded', 'amount', g), g, now() - interval '1 year'
      from generate_series(1, ${archivedBefore}) g`);
    await sql.unsafe("vacuum analyze reserve.audit_logs_archive");
    await sql.unsafe("vacuum analyze reserve.audit_logs");
    const [{ months }] = await sql`select count(*)::int as months from pg_inherits where inhparent = 'reserve.audit_logs'::regclass`;
    const quiet = writer(url, "reserve.audit_logs");
    await sleep(5000);
    const baseline = await quiet.stop();
    const w1 = writer(url, "reserve.audit_logs");
    const t1 = performance.now();
    let calls = 0;
    for (;;) {
      calls++;
      const [{ more_due: more }] = await sql.unsafe("call reserve.retention_cleanup_job()");
      if (!more) break;
      if (paceMs > 0) await sleep(paceMs);
    }
    const s1 = (performance.now() - t1) / 1000;
    const lat1 = await w1.stop();
    const [{ archived }] = await sql`select count(*)::int as archived from reserve.audit_logs_archive where id > 0`;
    const [{ left }] = await sql`select count(*)::int as left from reserve.audit_logs where occurred_at < now() - interval '365 days'`;
    const [{ dropped }] = await sql`select (summary->>'partitions_moved')::int as dropped from reserve.job_last_runs where job = 'run_retention_cleanup'`;
    const [{ kept }] = await sql`select count(*)::int as kept from pg_inherits where inhparent = 'reserve.audit_logs'::regclass`;
    if (archived !== rows) throw new Error(`archived ${archived} of ${rows} rows`);

    console.log(`
## bench:retention (${new Date().toISOString()})
${cpus().length} vCPU ${cpus()[0]?.model ?? ""}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB, Node ${process.version}, load ${loadavg()[0].toFixed(2)}; fsync and synchronous_commit on

| way | rows | seconds | rows/s | concurrent writer insert latency |
| --- | --- | --- | --- | --- |
| quiet baseline (no job) | | 5 | | ${fmt(baseline)} |
| call retention_cleanup_job() x ${calls}${paceMs > 0 ? `, ${paceMs} ms apart` : ", back to back"}: whole months detached and attached to audit_logs_archive (${months} partitions, ${months - kept} moved to the archive, ${dropped} in the last call; ${archivedBefore} rows archived before in its default partition) | ${archived} archived (${left} left due) | ${s1.toFixed(1)} | ${(archived / s1).toFixed(0)} | ${fmt(lat1)} |`);
    await sql.end();
  } finally {
    await pg.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
