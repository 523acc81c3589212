// npm run bench:core — throughput and p50/p99 latency of the booking core on a throwaway
// PostgreSQL 17 with fsync and synchronous_commit ON, as in production:
//   (a) a single-row INSERT into a scratch table (the ceiling; `select 1` is the round-trip floor),
//   (b) create_booking_intent (2-night stays),
//   (c) the full path as the edge functions call it, four round trips: create_booking_intent,
//       create_payment, apply_payment_status(processing), apply_payment_status(succeeded),
//   (c') apply_payment_status(succeeded) alone (succeed and finalize: reservation + ledger),
// at 1, 4 and 16 connections, on distinct units (no two in-flight calls share a calendar row) and on
// one hot unit (every call contends for the same two calendar rows). Then where the time goes:
// wait events sampled every 50 ms during the 16-connection runs, pg_stat_statements (track = all, so
// statements inside plpgsql functions and triggers) and pg_stat_user_functions over a full-path run,
// nested EXPLAIN (ANALYZE, BUFFERS) plans of one create_booking_intent and one finalize (auto_explain),
// and the invariants afterwards (overbooking_check, availability_counter_drift, find_ledger_imbalances).
//
//   DURATION_S=5 npm run bench:core        env: DURATION_S (default 8) per cell, CONNS (default 1,4,16),
//                                               UNITS (default 400 units x 182 two-night stays)
import { randomUUID } from "node:crypto";
import { rm } from "node:fs/promises";
import { cpus, loadavg, totalmem } from "node:os";
import path from "node:path";
import postgres from "postgres";
import { migrate } from "../../local/migrate.ts";
import { freePort } from "../../local/ports.ts";
import { type LocalPostgres, startLocalPostgres, tempClusterDir } from "../../local/postgres.ts";

type Sql = postgres.Sql;

const durationMs = Number(process.env.DURATION_S ?? 8) * 1000;
const connLevels = (process.env.CONNS ?? "1,4,16").split(",").map(Number);
const unitCount = Number(process.env.UNITS ?? 400);
const CALENDAR_NIGHTS = 365;
const STAY_NIGHTS = 2;
const STAYS_PER_UNIT = Math.floor(CALENDAR_NIGHTS / STAY_NIGHTS);
const HOT_ALLOTMENT = 100_000;
const HOT_WINDOWS = 6; // each phase books its own two hot nights, so no phase inherits another's counters
const SAMPLE_EVERY_MS = 50;
// untimed calls per connection before the clock starts: a new backend first compiles the plpgsql
// functions and fills its caches, which long-lived pooled connections in production have done long ago
const WARMUP_CALLS = 3;
const NESTED_PLAN_MIN_MS = 0.1;
const maxConns = Math.max(...connLevels);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const log = (m: string) => process.stderr.write(`${m}\n`);

// ---------------------------------------------------------------- cluster and data

interface Bench {
  pg: LocalPostgres;
  dir: string;
  url: string;
  admin: Sql;
}

async function boot(): Promise<Bench> {
  const dir = await tempClusterDir("reserve-bench-core-");
  let pg: LocalPostgres | undefined;
  try {
    pg = await startLocalPostgres({
      dataDir: path.join(dir, "postgres"),
      port: await freePort(),
      logFile: path.join(dir, "postgres.log"),
      // durability stays at the defaults (fsync, synchronous_commit, full_page_writes on); only timing is added
      settings: { track_wal_io_timing: "on", track_io_timing: "on" },
    });
    const root = postgres(pg.url(), { max: 1, onnotice: () => {} });
    await root.unsafe("create database bench");
    await root.end();
    await migrate(pg.url("bench"));
  } catch (err) {
    await pg?.stop();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  const url = pg.url("bench");
  return { pg, dir, url, admin: postgres(url, { max: 1, onnotice: () => {} }) };
}

interface Seeded {
  today: string;
  units: string[];
  hotUnit: string;
}

/** UNITS units with 365 nights of allotment 1, one hot unit with a few nights of a huge allotment. */
async function seed(sql: Sql): Promise<Seeded> {
  await sql`insert into reserve.cities (code, name, state) values ('BEN', 'Bench City', 'RJ')`;
  const [prop] = await sql`insert into reserve.properties_map (city_code, name) values ('BEN', 'Bench property') returning id`;
  const units = await sql`
    insert into reserve.unit_map (property_id, name, unit_type, max_occupancy, base_price)
    select ${prop.id}, 'Unit ' || g, 'apartment', 4, 50000 from generate_series(1, ${unitCount}) g
    returning id`;
  await sql`
    insert into reserve.availability_calendar (unit_id, date, allotment)
    select u.id, current_date + g, 1
    from reserve.unit_map u cross join generate_series(1, ${CALENDAR_NIGHTS}) g
    where u.property_id = ${prop.id}`;
  const [hot] = await sql`
    insert into reserve.unit_map (property_id, name, unit_type, max_occupancy, base_price)
    values (${prop.id}, 'Hot unit', 'room', 4, 50000) returning id`;
  await sql`
    insert into reserve.availability_calendar (unit_id, date, allotment)
    select ${hot.id}, current_date + g, ${HOT_ALLOTMENT} from generate_series(1, ${HOT_WINDOWS * STAY_NIGHTS}) g`;
  await sql`create table public.bench_scratch (id bigint generated always as identity primary key,
                                               payload text not null, created_at timestamptz not null default now())`;
  await sql`create extension if not exists pg_stat_statements with schema extensions`;
  await sql`vacuum analyze`;
  await sql`checkpoint`;
  const [{ today }] = await sql`select current_date::text as today`;
  return { today, units: units.map((u) => u.id as string), hotUnit: hot.id as string };
}

// ---------------------------------------------------------------- stays

interface Stay {
  unitId: string;
  checkIn: string;
  checkOut: string;
}
type StaySource = () => Stay;

/** Thrown when a cell has nothing more to do (its queue or the distinct stays ran out). */
class NoMoreWork extends Error {}

function addDays(iso: string, days: number): string {
  const d = new Date(`${iso}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + days);
  return d.toISOString().slice(0, 10);
}

/** Consecutive calls go to consecutive units, so concurrent calls never share a calendar row. */
function distinctStays(s: Seeded): StaySource {
  let k = 0;
  return () => {
    const unit = k % s.units.length;
    const slot = Math.floor(k / s.units.length);
    k++;
    if (slot >= STAYS_PER_UNIT) throw new NoMoreWork("out of distinct stays: raise UNITS");
    const checkIn = addDays(s.today, 1 + slot * STAY_NIGHTS);
    return { unitId: s.units[unit], checkIn, checkOut: addDays(checkIn, STAY_NIGHTS) };
  };
}

/** Always the same two nights of the hot unit (window w of HOT_WINDOWS). */
function hotStays(s: Seeded, window: number): StaySource {
  const checkIn = addDays(s.today, 1 + window * STAY_NIGHTS);
  return () => ({ unitId: s.hotUnit, checkIn, checkOut: addDays(checkIn, STAY_NIGHTS) });
}

// ---------------------------------------------------------------- the calls, one round trip each

interface Intent {
  id: string;
  amount: string;
}

async function createIntent(c: Sql, s: Stay): Promise<Intent> {
  const [bi] = await c`select id, amount from reserve.create_booking_intent(${s.unitId}::uuid, ${s.checkIn}::date, ${s.checkOut}::date, 2)`;
  return { id: bi.id, amount: bi.amount };
}

async function createPayment(c: Sql, bi: Intent): Promise<string> {
  const [p] = await c`select id from reserve.create_payment(${bi.id}::uuid, 'stripe', 'card', ${bi.amount}::bigint, ${`pi_bench_${randomUUID()}`})`;
  return p.id;
}

async function applyStatus(c: Sql, paymentId: string, status: string): Promise<void> {
  // the provider's update: a success says what arrived (the bench's price, in BRL)
  const [r] = await c`select outcome, finalize_outcome from reserve.apply_payment_status(${paymentId}::uuid, reserve.as_provider_update(
    jsonb_build_object('status', ${status}::text) || case when ${status} = 'succeeded'
      then (select jsonb_build_object('amount_received', p.amount, 'currency', p.currency) from reserve.payments p where p.id = ${paymentId}::uuid)
      else '{}'::jsonb end))`;
  if (r.outcome !== "applied") throw Object.assign(new Error(`apply_payment_status ${r.outcome}`), { code: `apply:${r.outcome}` });
  if (status === "succeeded" && r.finalize_outcome !== "created") {
    throw Object.assign(new Error(`finalize ${r.finalize_outcome}`), { code: `finalize:${r.finalize_outcome}` });
  }
}

async function processingPayment(c: Sql, s: Stay): Promise<string> {
  const paymentId = await createPayment(c, await createIntent(c, s));
  await applyStatus(c, paymentId, "processing");
  return paymentId;
}

async function fullPath(c: Sql, s: Stay): Promise<void> {
  await applyStatus(c, await processingPayment(c, s), "succeeded");
}

// ---------------------------------------------------------------- running one cell

type Op = (c: Sql) => Promise<void>;

interface CellResult {
  op: string;
  target: string;
  conns: number;
  seconds: number;
  latencies: number[];
  errors: Map<string, number>;
  walBytes: number;
  walSyncs: number;
  nodeCpu: number;
  waits?: Map<string, number>;
}

async function reservedConnections(url: string, n: number, settings: Record<string, string>) {
  const pool = postgres(url, { max: n, onnotice: () => {}, connection: settings });
  const conns = await Promise.all(Array.from({ length: n }, () => pool.reserve()));
  const pids: number[] = [];
  for (const c of conns) {
    const [r] = await c`select pg_backend_pid() as pid`;
    pids.push(r.pid);
    for (const [k, v] of Object.entries(settings)) {
      const [{ value }] = await c`select current_setting(${k}) as value`;
      if (value !== v) throw new Error(`${k} is ${value} on a worker connection, not ${v}`);
    }
  }
  return { pool, conns, pids };
}

async function walSnapshot(admin: Sql) {
  const [r] = await admin`select pg_current_wal_lsn()::text as lsn, wal_sync::bigint as syncs from pg_stat_wal`;
  return { lsn: r.lsn as string, syncs: Number(r.syncs) };
}

/** Samples what the workers' backends are doing until stopped: state, wait_event_type:wait_event. */
function sampleWaits(admin: Sql, pids: number[]) {
  const counts = new Map<string, number>();
  let running = true;
  const loop = (async () => {
    while (running) {
      const rows = await admin`
        select state, wait_event_type, wait_event from pg_stat_activity where pid = any(${admin.array(pids)}::int[])`;
      for (const r of rows) {
        const key = r.state === "active"
          ? (r.wait_event_type ? `${r.wait_event_type}:${r.wait_event}` : "CPU (active, no wait event)")
          : `${r.state} (${r.wait_event_type ?? "-"}:${r.wait_event ?? "-"}) — the backend waits for the client`;
        counts.set(key, (counts.get(key) ?? 0) + 1);
      }
      await sleep(SAMPLE_EVERY_MS);
    }
  })();
  return async () => {
    running = false;
    await loop;
    return counts;
  };
}

async function warmUp(c: Sql, op: Op) {
  for (let i = 0; i < WARMUP_CALLS; i++) await op(c).catch(() => undefined);
}

async function worker(c: Sql, op: Op, deadline: number, latencies: number[], errors: Map<string, number>) {
  while (performance.now() < deadline) {
    const t0 = performance.now();
    try {
      await op(c);
      latencies.push(performance.now() - t0);
    } catch (err) {
      if (err instanceof NoMoreWork) return;
      const code = (err as { code?: string }).code ?? (err as Error).message;
      errors.set(code, (errors.get(code) ?? 0) + 1);
    }
  }
}

interface CellSpec {
  op: string;
  target: string;
  conns: number;
  run: Op;
  settings?: Record<string, string>;
  sample?: boolean;
  /** runs after the warm-up, right before the clock starts (the profile resets its statistics there) */
  beforeTimed?: (conns: Sql[]) => Promise<unknown>;
}

async function runCell(b: Bench, spec: CellSpec): Promise<CellResult> {
  const { pool, conns, pids } = await reservedConnections(b.url, spec.conns, spec.settings ?? {});
  await Promise.all(conns.map((c) => warmUp(c, spec.run)));
  await spec.beforeTimed?.(conns);
  const latencies: number[] = [];
  const errors = new Map<string, number>();
  const wal = await walSnapshot(b.admin);
  const cpu = process.cpuUsage();
  const stopSampling = spec.sample ? sampleWaits(b.admin, pids) : undefined;
  const started = performance.now();
  await Promise.all(conns.map((c) => worker(c, spec.run, started + durationMs, latencies, errors)));
  const seconds = (performance.now() - started) / 1000;
  const waits = await stopSampling?.();
  const used = process.cpuUsage(cpu);
  for (const c of conns) c.release();
  await pool.end();
  await sleep(300); // exiting backends flush their WAL statistics
  const [after] = await b.admin`
    select pg_wal_lsn_diff(pg_current_wal_lsn(), ${wal.lsn}::pg_lsn)::bigint as bytes, wal_sync::bigint as syncs from pg_stat_wal`;
  latencies.sort((x, y) => x - y);
  const result: CellResult = {
    op: spec.op, target: spec.target, conns: spec.conns, seconds, latencies, errors, waits,
    walBytes: Number(after.bytes), walSyncs: Number(after.syncs) - wal.syncs,
    nodeCpu: (used.user + used.system) / 1000 / (seconds * 1000),
  };
  log(`  ${spec.op} ${spec.target} x${spec.conns}: ${(latencies.length / seconds).toFixed(0)} ops/s, ${errorText(errors)}`);
  return result;
}

// ---------------------------------------------------------------- the cells

/** Payments in processing, made beforehand (untimed) so that c' times only succeed-and-finalize. */
async function preparedFinalizes(b: Bench, conns: number, count: number, stays: StaySource): Promise<Op> {
  const queue: string[] = [];
  const pool = postgres(b.url, { max: conns, onnotice: () => {} });
  let left = count;
  await Promise.all(Array.from({ length: conns }, async () => {
    const c = await pool.reserve();
    try {
      for (; left > 0; left--) queue.push(await processingPayment(c, stays()));
    } catch (err) {
      if (!(err instanceof NoMoreWork)) throw err;
    } finally {
      c.release();
    }
  }));
  await pool.end();
  return async (c) => {
    const id = queue.shift();
    if (!id) throw new NoMoreWork("prepared payments ran out");
    await applyStatus(c, id, "succeeded");
  };
}

const rate = (r: CellResult) => r.latencies.length / r.seconds;

async function runTable(b: Bench, s: Seeded, distinct: StaySource): Promise<CellResult[]> {
  const results: CellResult[] = [];
  const hot = (w: number) => hotStays(s, w);
  const targets = (w: number): [string, StaySource][] => [["distinct", distinct], ["hot", hot(w)]];
  const cell = async (spec: Omit<CellSpec, "sample">) => results.push(await runCell(b, { ...spec, sample: spec.conns === maxConns }));

  log("(a) ceilings");
  for (const conns of connLevels) await cell({ op: "select 1 (round trip)", target: "-", conns, run: async (c) => void (await c`select 1`) });
  for (const conns of connLevels) {
    await cell({ op: "INSERT one row", target: "-", conns, run: async (c) => void (await c`insert into public.bench_scratch (payload) values (${"x".repeat(64)})`) });
  }
  log("(b) create_booking_intent");
  for (const [target, stays] of targets(0)) {
    for (const conns of connLevels) await cell({ op: "create_booking_intent", target, conns, run: async (c) => void (await createIntent(c, stays())) });
  }
  log("(c) full path");
  for (const [target, stays] of targets(1)) {
    for (const conns of connLevels) await cell({ op: "full path (4 calls)", target, conns, run: (c) => fullPath(c, stays()) });
  }
  log("(c') succeed-and-finalize alone");
  for (const [target, stays] of targets(2)) {
    for (const conns of connLevels) {
      // enough for four times the full path's rate; if they run out, the cell ends early (secs says so)
      const full = results.find((r) => r.op.startsWith("full path") && r.target === target && r.conns === conns);
      const count = Math.ceil((full ? rate(full) : 100) * 4 * (durationMs / 1000)) + conns * (WARMUP_CALLS + 1);
      const run = await preparedFinalizes(b, conns, count, stays);
      await cell({ op: "apply_payment_status(succeeded)", target, conns, run });
    }
  }
  return results;
}

// ---------------------------------------------------------------- where the time goes

interface Profile {
  title: string;
  statements: postgres.Row[];
  functions: postgres.Row[];
  nestedSeen: number;
  audit: string;
}

/** A full-path run with every statement tracked, nested ones included, and every function timed. */
async function profileFullPath(b: Bench, target: string, stays: StaySource): Promise<Profile> {
  const settings = { "pg_stat_statements.track": "all", track_functions: "all" };
  // the statistics cover the timed calls only: the workers flush what their warm-up left pending, then reset
  const reset = async (conns: Sql[]) => {
    await Promise.all(conns.map((c) => c`select pg_stat_force_next_flush()`));
    await sleep(100);
    await b.admin`select extensions.pg_stat_statements_reset(), pg_stat_reset()`;
  };
  const r = await runCell(b, { op: "profile: full path", target, conns: maxConns, run: (c) => fullPath(c, stays()), settings, beforeTimed: reset });
  await sleep(500);
  const statements = await b.admin`
    with s as (
      select * from extensions.pg_stat_statements
      where dbid = (select oid from pg_database where datname = current_database())
        and query !~* 'pg_stat_activity|pg_stat_wal|pg_backend_pid|current_setting|pg_stat_statements_reset|pg_stat_reset')
    select toplevel, calls, total_exec_time, mean_exec_time, rows,
           shared_blks_hit, shared_blks_read, shared_blks_dirtied, wal_bytes,
           100 * total_exec_time / nullif((select sum(total_exec_time) from s where toplevel), 0) as pct_of_top,
           regexp_replace(query, '\\s+', ' ', 'g') as query
    from s order by total_exec_time desc limit 22`;
  const [{ nested }] = await b.admin`select count(*)::int as nested from extensions.pg_stat_statements where not toplevel`;
  const functions = await b.admin`
    select schemaname || '.' || funcname as fn, calls, total_time, self_time,
           100 * self_time / nullif(sum(self_time) over (), 0) as pct_self
    from pg_stat_user_functions order by self_time desc limit 16`;
  const title = `full path, ${maxConns} connections, ${target} units, ${rate(r).toFixed(0)} paths/s over ${r.seconds.toFixed(1)} s`;
  return { title, statements, functions, nestedSeen: nested, audit: await auditCost(b.admin, r) };
}

/** The audit trail's share: its INSERTs (leaf statements, so their WAL is exactly theirs) and trigger functions. */
async function auditCost(admin: Sql, r: CellResult): Promise<string> {
  const [a] = await admin`
    select coalesce(sum(calls), 0)::bigint as calls, coalesce(sum(wal_bytes), 0)::bigint as wal, coalesce(sum(total_exec_time), 0) as ms,
           (select sum(total_exec_time) from extensions.pg_stat_statements s
            where s.toplevel and s.dbid = (select oid from pg_database where datname = current_database())) as top_ms
    from extensions.pg_stat_statements
    where dbid = (select oid from pg_database where datname = current_database()) and query ilike 'insert into reserve.audit_logs%'`;
  const [f] = await admin`
    select 100 * sum(self_time) filter (where funcname in ('audit_row_change', 'current_actor')) / nullif(sum(self_time), 0) as pct
    from pg_stat_user_functions`;
  const paths = r.latencies.length || 1;
  const calls = Number(a.calls);
  return `audit trail: ${calls} audit_logs INSERTs (${(calls / paths).toFixed(1)} per path), ` +
    `${(100 * Number(a.ms) / Number(a.top_ms)).toFixed(1)}% of top-level statement time, ` +
    `${(Number(a.wal) / Math.max(calls, 1)).toFixed(0)} B of WAL each = ${(100 * Number(a.wal) / r.walBytes).toFixed(1)}% of the run's WAL; ` +
    `audit_row_change + current_actor = ${Number(f.pct ?? 0).toFixed(1)}% of all function self time`;
}

interface Explained {
  title: string;
  topLevel: string[];
  nested: string[];
  autoExplain: boolean;
}

/** EXPLAIN (ANALYZE, BUFFERS) of one call, and through auto_explain the plan of every statement inside it. */
async function explainCall(url: string, title: string, statement: string, warm: Op): Promise<Explained> {
  const notices: string[] = [];
  const c = postgres(url, { max: 1, onnotice: (n) => notices.push(String(n.message)) });
  try {
    await warmUp(c, warm);
    const autoExplain = await c.unsafe("load 'auto_explain'").then(() => true, () => false);
    if (autoExplain) {
      for (const set of ["log_min_duration = 0", "log_analyze = on", "log_buffers = on", "log_triggers = on",
                         "log_nested_statements = on", "log_timing = on", "log_level = notice"]) {
        await c.unsafe(`set auto_explain.${set}`);
      }
    }
    const plan = await c.unsafe(`explain (analyze, buffers) ${statement}`);
    const topLevel = plan.map((r) => String(r["QUERY PLAN"]));
    const plans = notices.filter((n) => !n.includes(statement)).map(summarizePlan);
    const small = plans.filter((p) => p.ms < NESTED_PLAN_MIN_MS);
    const nested = [
      ...plans.filter((p) => p.ms >= NESTED_PLAN_MIN_MS).flatMap((p) => p.lines),
      `  (and ${small.length} statements under ${NESTED_PLAN_MIN_MS} ms each, ${small.reduce((a, p) => a + p.ms, 0).toFixed(2)} ms together: ` +
        "foreign-key checks, settings lookups, audit key building)",
    ];
    return { title, topLevel, nested, autoExplain };
  } finally {
    await c.end();
  }
}

/** One auto_explain notice as: duration, statement, its top plan node, buffers and trigger times. */
function summarizePlan(notice: string): { ms: number; lines: string[] } {
  const lines = notice.split("\n");
  const ms = /duration: ([\d.]+) ms/.exec(lines[0])?.[1] ?? "0";
  const textAt = Math.max(0, lines.findIndex((l) => l.startsWith("Query Text:")));
  const nodeAt = lines.findIndex((l, i) => i > textAt && l.includes("(cost="));
  const query = lines.slice(textAt, nodeAt < 0 ? undefined : nodeAt).filter((l) => !l.startsWith("Query Parameters:"))
    .join(" ").replace("Query Text:", "").replace(/\s+/g, " ").trim();
  const planLines = nodeAt < 0 ? [] : lines.slice(nodeAt);
  const top = planLines[0]?.trim().replace(/\(cost=[^)]*\)\s*/, "") ?? "";
  const buffers = planLines.find((l) => l.trim().startsWith("Buffers:"))?.trim() ?? "";
  const triggers = planLines.filter((l) => l.trim().startsWith("Trigger ")).map((l) => `        ${l.trim()}`);
  const head = `${ms.padStart(8)} ms  ${clip(query, 95)}`;
  return { ms: Number(ms), lines: [head, `        ${clip(top, 110)}${buffers ? `  [${buffers}]` : ""}`, ...triggers] };
}

async function explainOneOfEach(b: Bench, stays: StaySource): Promise<Explained[]> {
  const warm: Op = (c) => fullPath(c, stays());
  const st = stays();
  const intent = await explainCall(b.url, "create_booking_intent (a free unit, warm connection)",
    `select * from reserve.create_booking_intent('${st.unitId}'::uuid, '${st.checkIn}'::date, '${st.checkOut}'::date, 2)`, warm);
  const paymentId = await processingPayment(b.admin, stays());
  const finalize = await explainCall(b.url, "apply_payment_status(succeeded): succeed and finalize (warm connection)",
    `select * from reserve.apply_payment_status('${paymentId}'::uuid, reserve.as_provider_update(
       (select jsonb_build_object('status', 'succeeded', 'amount_received', amount, 'currency', currency) from reserve.payments where id = '${paymentId}'::uuid)))`, warm);
  return [intent, finalize];
}

// ---------------------------------------------------------------- invariants and machine

async function invariants(admin: Sql): Promise<[string, number][]> {
  const count = async (q: Promise<postgres.Row[]>) => Number((await q)[0].n);
  return [
    ["overbooking_check", await count(admin`select count(*) as n from reserve.overbooking_check`)],
    ["availability_counter_drift", await count(admin`select count(*) as n from reserve.availability_counter_drift`)],
    ["find_ledger_imbalances(current_date - 1)", await count(admin`select count(*) as n from reserve.find_ledger_imbalances(current_date - 1)`)],
  ];
}

const load = () => loadavg().map((x) => x.toFixed(2)).join(" ");

async function machine(admin: Sql, loadBefore: string): Promise<string[]> {
  const [v] = await admin`select version() as version`;
  const settings = await admin`
    select name, setting, unit from pg_settings
    where name in ('fsync', 'synchronous_commit', 'full_page_writes', 'wal_sync_method', 'shared_buffers',
                   'max_wal_size', 'checkpoint_timeout', 'commit_delay')
    order by name`;
  return [
    `command: ${Object.entries(process.env).filter(([k]) => ["DURATION_S", "CONNS", "UNITS"].includes(k)).map(([k, v]) => `${k}=${v} `).join("")}npm run bench:core`,
    `machine: ${cpus().length} x ${cpus()[0]?.model ?? "cpu"}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM, node ${process.version}`,
    `load average (1/5/15 min) before: ${loadBefore}, after: ${load()} (anything else running on the machine skews the numbers)`,
    `database: ${v.version}`,
    `settings: ${settings.map((r) => `${r.name}=${r.setting}${r.unit ?? ""}`).join(", ")}`,
    `cells: ${durationMs / 1000} s each; ${unitCount} units x ${CALENDAR_NIGHTS} nights (allotment 1) and a hot unit ` +
      `(allotment ${HOT_ALLOTMENT}); client and server share the machine`,
  ];
}

// ---------------------------------------------------------------- printing

function clip(s: string, n: number): string {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}

function errorText(errors: Map<string, number>): string {
  return errors.size === 0 ? "-" : [...errors].map(([k, n]) => `${k} x${n}`).join(", ");
}

function percentile(sorted: number[], p: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

function table(headers: string[], rows: string[][], leftAligned = 1): string[] {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i < leftAligned ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ").trimEnd();
  return [line(headers), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)];
}

function resultsTable(results: CellResult[]): string[] {
  const f = (x: number, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : "-");
  return table(
    ["operation", "units", "conns", "ops/s", "p50 ms", "p99 ms", "ok", "secs", "WAL kB/op", "fsync/op", "node cpu", "errors"],
    results.map((r) => {
      const n = r.latencies.length;
      return [r.op, r.target, String(r.conns), f(rate(r), 0), f(percentile(r.latencies, 0.5)), f(percentile(r.latencies, 0.99)),
              String(n), f(r.seconds, 1), f(r.walBytes / 1024 / n, 1), f(r.walSyncs / n), `${f(100 * r.nodeCpu, 0)}%`, errorText(r.errors)];
    }),
    2,
  );
}

function waitsSection(results: CellResult[]): string[] {
  return results.filter((r) => r.waits).flatMap((r) => {
    const total = [...r.waits!.values()].reduce((a, x) => a + x, 0);
    const rows = [...r.waits!].sort((a, b) => b[1] - a[1]).map(([k, n]) => [k, String(n), `${((100 * n) / total).toFixed(1)}%`]);
    return ["", `${r.op}, ${r.target} units, ${r.conns} connections (${total} backend samples):`, ...table(["state / wait event", "samples", "share"], rows)];
  });
}

function profileSection(p: Profile): string[] {
  const ms = (x: unknown) => Number(x).toFixed(1);
  const stmts = p.statements.map((r) => [
    r.toplevel ? "top" : "nested", String(r.calls), ms(r.total_exec_time), Number(r.mean_exec_time).toFixed(3),
    `${Number(r.pct_of_top ?? 0).toFixed(1)}%`, `${r.shared_blks_hit}/${r.shared_blks_read}/${r.shared_blks_dirtied}`,
    (Number(r.wal_bytes) / Math.max(1, Number(r.calls))).toFixed(0), clip(String(r.query), 110)]);
  const fns = p.functions.map((r) => [String(r.fn), String(r.calls), ms(r.total_time), ms(r.self_time), `${Number(r.pct_self ?? 0).toFixed(1)}%`]);
  return [
    "", `pg_stat_statements (track = all, verified on every worker; ${p.nestedSeen} nested statements seen), ${p.title}:`,
    "  % = share of the summed top-level execution time; nested statements are part of their caller's time",
    ...table(["level", "calls", "total ms", "mean ms", "%", "blks hit/read/dirtied", "WAL B/call", "statement"], stmts, 1),
    "", "pg_stat_user_functions (track_functions = all; self = time in the function's own statements, triggers included):",
    ...table(["function", "calls", "total ms", "self ms", "self %"], fns),
    "", p.audit,
  ];
}

function explainSection(e: Explained): string[] {
  return [
    "", `EXPLAIN (ANALYZE, BUFFERS) ${e.title}:`, ...e.topLevel.map((l) => `  ${l}`),
    e.autoExplain
      ? "  statements inside it, in the order they finished (auto_explain, nested; a caller's time includes its callees):"
      : "  (auto_explain could not be loaded: no nested plans)",
    ...e.nested,
  ];
}

// ---------------------------------------------------------------- main

async function main() {
  const loadBefore = load();
  log("booting PostgreSQL 17 (fsync on) and applying the migrations…");
  const b = await boot();
  try {
    log(`seeding ${unitCount} units x ${CALENDAR_NIGHTS} nights and a hot unit…`);
    const s = await seed(b.admin);
    // one source for every phase: no stay of a distinct unit is ever booked twice
    const distinct = distinctStays(s);
    const results = await runTable(b, s, distinct);
    log("profiling the full path (pg_stat_statements track = all)…");
    const profiles = [await profileFullPath(b, "distinct", distinct), await profileFullPath(b, "hot", hotStays(s, 3))];
    const explained = await explainOneOfEach(b, distinct);
    const checks = await invariants(b.admin);
    const deadlocks = results.reduce((n, r) => n + (r.errors.get("40P01") ?? 0), 0);
    const out = [
      ...(await machine(b.admin, loadBefore)),
      "",
      ...resultsTable(results),
      "  ops/s counts successful operations; p50/p99 are per operation (the full path: all four calls);",
      "  WAL kB/op from the WAL position, fsync/op from pg_stat_wal.wal_sync; node cpu = the client's share of one core",
      "",
      "wait events of the workers' backends, sampled every 50 ms:",
      ...waitsSection(results),
      ...profiles.flatMap(profileSection),
      ...explained.flatMap(explainSection),
      "",
      "invariants after all runs:",
      ...checks.map(([name, n]) => `  ${n === 0 ? "OK  " : "FAIL"} ${name}: ${n} rows`),
      `  ${deadlocks === 0 ? "OK  " : "FAIL"} deadlocks (40P01) across all cells: ${deadlocks}`,
    ];
    console.log(out.join("\n"));
    if (checks.some(([, n]) => n !== 0) || deadlocks > 0) process.exitCode = 1;
  } finally {
    await b.admin.end();
    await b.pg.stop();
    await rm(b.dir, { recursive: true, force: true });
  }
}

await main();
