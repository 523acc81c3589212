// npm run bench:retention — the audit retention job on 5M due rows, two ways, with a writer running:
//   (a) batched: CALL reserve.retention_cleanup_job() (run_retention_cleanup, 5,000-row batches, a
//       commit after each 20 batches), moving the rows to audit_logs_archive;
//   (b) by partition: the same rows in a monthly-partitioned copy, archived by INSERT ... SELECT of a
//       whole partition, then DETACH and DROP of it (what a partitioned audit_logs would do).
// Meanwhile one connection inserts an audit row every 2 ms (the triggers' workload); reported: rows/s
// of the job, and the writer's p50 / p99 / worst insert latency during it and in a quiet baseline.
// Production durability (fsync, synchronous_commit on).
//
//   npm run bench:retention        env: ROWS (default 5000000)
import { rm } from "node:fs/promises";
import { cpus, loadavg, totalmem } from "node:os";
import path from "node:path";
import postgres from "postgres";
import { migrate } from "../../local/migrate.ts";
import { freePort } from "../../local/ports.ts";
import { startLocalPostgres, tempClusterDir } from "../../local/postgres.ts";

const rows = Number(process.env.ROWS ?? 5_000_000);
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

async function fillOld(sql: postgres.Sql, table: string, n: number) {
  const chunk = 500_000;
  for (let done = 0; done < n; done += chunk) {
    const k = Math.min(chunk, n - done);
    // spread over the 13th to 24th month back, as a year of trail past its retention would be
    await sql.unsafe(`
      insert into ${table} (occurred_at, actor, action, table_name, row_id, old_values, new_values, xact_id)
      select now() - interval '366 days' - make_interval(secs => (g * 31536000.0 / ${n})::int), 'trigger', 'UPDATE', 'payments',
             md5(g::text), jsonb_build_object('status', 'processing'), jsonb_build_object('status', 'succeeded', 'amount', g), g
      from generate_series(${done + 1}, ${done + k}) g`);
    log(`  ${table}: ${done + k} / ${n} rows`);
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

    // (a) batched, on the real table and function
    log(`(a) batched: loading ${rows} due rows into reserve.audit_logs`);
    await fillOld(sql, "reserve.audit_logs", rows);
    await sql.unsafe("vacuum analyze reserve.audit_logs");
    const quiet = writer(url, "reserve.audit_logs");
    await sleep(5000);
    const baseline = await quiet.stop();
    const w1 = writer(url, "reserve.audit_logs");
    const t1 = performance.now();
    await sql.unsafe("call reserve.retention_cleanup_job()");
    const s1 = (performance.now() - t1) / 1000;
    const lat1 = await w1.stop();
    const [{ archived }] = await sql`select count(*)::int as archived from reserve.audit_logs_archive`;
    const [{ left }] = await sql`select count(*)::int as left from reserve.audit_logs where occurred_at < now() - interval '365 days'`;

    // (b) by partition, on a monthly-partitioned copy of audit_logs
    log(`(b) partitions: loading ${rows} due rows into a monthly-partitioned copy`);
    await sql.unsafe(`
      create table public.audit_parted (
        id bigint generated always as identity, occurred_at timestamptz not null default now(), actor text not null,
        action text not null, table_name text not null, row_id text, old_values jsonb, new_values jsonb, reason text,
        xact_id bigint not null default (pg_current_xact_id()::text::bigint)) partition by range (occurred_at);
      create table public.audit_parted_archive (like reserve.audit_logs_archive including defaults);
      do $$ declare m date; begin
        for m in select generate_series(date_trunc('month', now() - interval '26 months'), date_trunc('month', now() + interval '1 month'), interval '1 month')::date loop
          execute format('create table public.audit_parted_%s partition of public.audit_parted for values from (%L) to (%L)',
                         to_char(m, 'YYYYMM'), m, m + interval '1 month');
        end loop; end $$;
      create index on public.audit_parted (occurred_at);`);
    await fillOld(sql, "public.audit_parted", rows);
    await sql.unsafe("vacuum analyze public.audit_parted");
    const w2 = writer(url, "public.audit_parted");
    const t2 = performance.now();
    // whole months past the cutoff: archive and drop each (the month that straddles it stays for the batched job)
    const parts = await sql<{ name: string }[]>`
      select c.relname as name from pg_inherits i join pg_class c on c.oid = i.inhrelid
      where i.inhparent = 'public.audit_parted'::regclass
        and pg_get_expr(c.relpartbound, c.oid) ~ 'TO'
        and (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1]::timestamptz < now() - interval '365 days'
      order by 1`;
    let moved = 0;
    for (const p of parts) {
      const r = await sql.unsafe(`insert into public.audit_parted_archive (id, occurred_at, actor, action, table_name, row_id, old_values, new_values, reason, xact_id)
                                  select id, occurred_at, actor, action, table_name, row_id, old_values, new_values, reason, xact_id from public.${p.name}`);
      moved += r.count;
      await sql.unsafe(`alter table public.audit_parted detach partition public.${p.name} concurrently`);
      await sql.unsafe(`drop table public.${p.name}`);
    }
    const s2 = (performance.now() - t2) / 1000;
    const lat2 = await w2.stop();

    console.log(`
## bench:retention (${new Date().toISOString()})
${cpus().length} vCPU ${cpus()[0]?.model ?? ""}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB, Node ${process.version}, load ${loadavg()[0].toFixed(2)}; fsync and synchronous_commit on

| way | rows | seconds | rows/s | concurrent writer insert latency |
| --- | --- | --- | --- | --- |
| quiet baseline (no job) | | 5 | | ${fmt(baseline)} |
| (a) batched: call retention_cleanup_job() | ${archived} archived (${left} left due) | ${s1.toFixed(1)} | ${(archived / s1).toFixed(0)} | ${fmt(lat1)} |
| (b) partitions: insert-select + detach concurrently + drop, ${parts.length} months | ${moved} archived | ${s2.toFixed(1)} | ${(moved / s2).toFixed(0)} | ${fmt(lat2)} |`);
    await sql.end();
  } finally {
    await pg.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
