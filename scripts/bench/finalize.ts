// npm run bench:finalize — the success path in SQL, as the webhook functions call it (one
// reserve.process_webhook_event per delivery), on a throwaway PostgreSQL 17 with production durability
// (fsync, synchronous_commit, full_page_writes on). Side by side in one run, at CONNS connections:
//   (a) a single-row INSERT into a scratch table (the ceiling),
//   (b) process_webhook_event(payment_intent.succeeded) on distinct payments: verify nothing (the edge
//       did), record, apply, finalize (reservation, calendar, ledger receipt, audit),
//   (c) process_webhook_event of a delivery of an already completed event (the duplicate path),
//   (d) a plain read of that completed event (the floor of a duplicate),
//   (e) finalize on one hot unit (every call contends for the same night): how long the night is held.
// Then what one finalize costs, from a single execution: statements (pg_stat_statements, track = all),
// trigger calls (pg_stat_xact_user_functions), rows inserted and updated, audit rows, and over a run of
// finalizes after a checkpoint the WAL per finalize with the share of it that is the audit's (pg_walinspect:
// each record's bytes split over the relations its blocks belong to), full-page images included and not.
// For a duplicate: whether it took a transaction id, wrote WAL or took a lock.
//
//   npm run bench:finalize      env: DURATION_S (default 6) per cell, CONNS (default 8), PAYMENTS (default 20000),
//                               HISTORY (default 1500: payments finalized and analyzed before anything is measured),
//                               PROFILE=N (N finalizes on one connection: self time per function, time per statement)
//                               BUCKETS=N (every ledger account's balance_buckets: at most N posting transactions
//                               open at once, the others waiting for a bucket before their first row lock)
import { randomUUID } from "node:crypto";
import { rm } from "node:fs/promises";
import { cpus, loadavg, totalmem } from "node:os";
import path from "node:path";
import postgres from "postgres";
import { migrate } from "../../local/migrate.ts";
import { freePort } from "../../local/ports.ts";
import { startLocalPostgres, tempClusterDir } from "../../local/postgres.ts";

type Sql = postgres.Sql;

const durationMs = Number(process.env.DURATION_S ?? 6) * 1000;
const conns = Number(process.env.CONNS ?? 8);
const paymentCount = Number(process.env.PAYMENTS ?? 20_000);
const profileRuns = Number(process.env.PROFILE ?? 0);
const buckets = process.env.BUCKETS ? Number(process.env.BUCKETS) : null;
const historyCount = Number(process.env.HISTORY ?? 1500);
const NIGHTS_PER_UNIT = 300;
const WAL_SAMPLE = 200;
const log = (m: string) => process.stderr.write(`${m}\n`);

interface Cell { name: string; ops: number; errors: number; rps: number; p50: number; p99: number }

function pct(sorted: number[], p: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] : NaN;
}

/** One pending Stripe card payment for one night, with what its success webhook carries. */
interface Pending { paymentId: string; gatewayId: string; amount: number }

function succeededEvent(p: Pending, eventId = `evt_${randomUUID().replace(/-/g, "")}`) {
  const now = new Date().toISOString();
  const object = { id: p.gatewayId, object: "payment_intent", amount: p.amount, amount_received: p.amount, currency: "brl",
                   status: "succeeded", metadata: { payment_id: p.paymentId }, latest_charge: `ch_${p.gatewayId.slice(3)}` };
  return {
    event: { provider: "stripe", event_id: eventId, event_type: "payment_intent.succeeded", event_at: now,
             payload: { id: eventId, object: "event", type: "payment_intent.succeeded", data: { object } } },
    update: { status: "succeeded", gateway_payment_id: p.gatewayId, payment_reference: p.paymentId, amount: p.amount,
              currency: "BRL", amount_received: p.amount, event_at: now, gateway_status: "succeeded", provider_object: object },
  };
}

async function processEvent(c: Sql | postgres.TransactionSql, ev: ReturnType<typeof succeededEvent>) {
  const [r] = await c`select webhook_status, duplicate, finalize_outcome from reserve.process_webhook_event(
    reserve.as_webhook_event(${c.json(ev.event as never)}), reserve.as_provider_update(${c.json(ev.update as never)}))`;
  return r as { webhook_status: string; duplicate: boolean; finalize_outcome: string | null };
}

async function load(pool: Sql, name: string, op: (c: Sql) => Promise<void>): Promise<Cell> {
  const reserved = await Promise.all(Array.from({ length: conns }, () => pool.reserve()));
  for (const c of reserved) await op(c).catch(() => {}); // warm: plans and plpgsql compiled, as in a long-lived pool
  const lat: number[] = [];
  let errors = 0;
  const end = Date.now() + durationMs;
  const started = performance.now();
  await Promise.all(reserved.map(async (c) => {
    while (Date.now() < end) {
      const t = performance.now();
      try { await op(c); } catch (err) { if (errors++ === 0) log(`  ${name}: ${(err as Error).message}`); }
      lat.push(performance.now() - t);
    }
  }));
  const secs = (performance.now() - started) / 1000;
  for (const c of reserved) c.release();
  lat.sort((a, b) => a - b);
  return { name, ops: lat.length, errors, rps: lat.length / secs, p50: pct(lat, 0.5), p99: pct(lat, 0.99) };
}

async function main() {
  const loadBefore = loadavg().map((l) => l.toFixed(2)).join(" ");
  const dir = await tempClusterDir("reserve-bench-finalize-");
  const pg = await startLocalPostgres({ dataDir: path.join(dir, "postgres"), port: await freePort(), logFile: path.join(dir, "postgres.log") });
  const stops: (() => Promise<void>)[] = [async () => { await pg.stop(); await rm(dir, { recursive: true, force: true }); }];
  try {
    const root = postgres(pg.url(), { max: 1, onnotice: () => {} });
    await root.unsafe("create database bench");
    await root.end();
    const url = pg.url("bench");
    await migrate(url);
    const sql = postgres(url, { max: conns + 2, onnotice: () => {} });
    stops.unshift(() => sql.end());
    if (buckets) await sql`update reserve.ledger_accounts set balance_buckets = ${buckets}`;
    await sql`create extension if not exists pg_stat_statements with schema extensions`;
    await sql`create extension if not exists pg_walinspect with schema extensions`;
    await sql`create table public.bench_scratch (id bigint generated always as identity primary key, payload text not null,
                                                 created_at timestamptz not null default now())`;

    const units = Math.ceil((paymentCount + historyCount + WAL_SAMPLE + 50) / NIGHTS_PER_UNIT);
    log(`seeding ${units * NIGHTS_PER_UNIT} pending card payments on ${units} units and a hot unit...`);
    await sql`insert into reserve.cities (code, name, state) values ('BEN', 'Bench', 'RJ')`;
    // one host's property of many units (a property manager's): every receipt also adds to that host's statement day
    const [prop] = await sql`insert into reserve.properties_map (city_code, name, host_id) values ('BEN', 'Bench', gen_random_uuid()) returning id`;
    await sql`
      with u as (insert into reserve.unit_map (property_id, name, unit_type, max_occupancy, base_price)
                 select ${prop.id}, 'u' || g, 'apartment', 4, 50000 from generate_series(1, ${units}) g returning id)
      insert into reserve.availability_calendar (unit_id, date, allotment)
      select u.id, current_date + d, 1 from u, generate_series(1, ${NIGHTS_PER_UNIT}) d`;
    const [hot] = await sql`insert into reserve.unit_map (property_id, name, unit_type, max_occupancy, base_price)
                            values (${prop.id}, 'hot', 'room', 4, 50000) returning id`;
    await sql`insert into reserve.availability_calendar (unit_id, date, allotment) values (${hot.id}, current_date + 1, 1000000)`;
    const seedPayments = async (unitFilter: string, perNight: number, limit: number) => sql<{ payment_id: string; amount: string }[]>`
      select (x.p).id as payment_id, (x.p).amount::text as amount from (
        select reserve.create_payment(
                 (reserve.create_booking_intent(u.id, current_date + d, current_date + d + 1, 2, 'card', null, null, null, '{}', 600)).id,
                 'stripe', 'card', 50000, 'pi_' || replace(gen_random_uuid()::text, '-', '')) as p
        from reserve.unit_map u, generate_series(1, ${NIGHTS_PER_UNIT}) d, generate_series(1, ${perNight}) k
        where u.name ${sql.unsafe(unitFilter)} and (u.name <> 'hot' or d = 1)
        order by u.id, d limit ${limit}) x`;
    const toPending = async (rows: { payment_id: string; amount: string }[]) => {
      const gw = await sql<{ id: string; gateway_payment_id: string }[]>`
        select id, gateway_payment_id from reserve.payments where id = any(${rows.map((r) => r.payment_id)}::uuid[])`;
      const byId = new Map(gw.map((g) => [g.id, g.gateway_payment_id]));
      return rows.map((r) => ({ paymentId: r.payment_id, gatewayId: byId.get(r.payment_id)!, amount: Number(r.amount) }));
    };
    const distinct = await toPending(await seedPayments("<> 'hot'", 1, units * NIGHTS_PER_UNIT));
    const hotOnes = await toPending(await seedPayments("= 'hot'", Math.ceil(paymentCount / 4), Math.ceil(paymentCount / 4)));
    log(`seeded ${distinct.length} distinct and ${hotOnes.length} on the hot night`);
    let next = 0;
    const take = () => {
      if (next >= distinct.length) throw new Error("ran out of pending payments: raise PAYMENTS");
      return distinct[next++];
    };

    // ---------------------------------------------------------------- a history, then statistics
    // A live database has events, reservations and ledger rows, and statistics that say so. Analyzed
    // empty, those tables got plans from the planner's guess for an empty table, which the plan cache kept
    // as they grew: their key lookups grew 4-7x, and the cost of one finalize grew with the number of
    // finalizes before it (5.2 to 8.8 ms after 1,300 on one connection; an ANALYZE ended it).
    log(`finalizing a history of ${historyCount} payments...`);
    await Promise.all(Array.from({ length: conns }, async () => {
      while (next < historyCount) await processEvent(sql, succeededEvent(take()));
    }));
    await sql`vacuum analyze`;

    // ---------------------------------------------------------------- one finalize, counted
    // on a connection warmed after the ANALYZE above, which made every cached plan be rebuilt on its next use
    const one = await sql.reserve();
    let counted: { r: Awaited<ReturnType<typeof processEvent>>; t: Record<string, number>; f: Record<string, number> };
    try {
      for (let i = 0; i < 8; i++) await processEvent(one, succeededEvent(take()));
      await one`begin`;
      await one`set local track_functions = 'all'`;
      await one`set local pg_stat_statements.track = 'all'`;
      // a statement the plan cache plans anew on every call shows here as planned in this one execution
      await one`set local pg_stat_statements.track_planning = on`;
      // pg_stat_xact_* also show what this backend did in earlier transactions and has not reported yet
      // (the history above): counted before and after, the difference is this finalize's
      const counts = async () => {
        const [t] = await one`
        with audit as (select relid from pg_partition_tree('reserve.audit_logs'))
        select coalesce(sum(n_tup_ins), 0)::int as ins, coalesce(sum(n_tup_upd), 0)::int as upd,
               coalesce(sum(n_tup_ins) filter (where relid in (select relid from audit)), 0)::int as audit_ins,
               coalesce(sum(n_tup_upd) filter (where relid in (select relid from audit)), 0)::int as audit_upd
        from pg_stat_xact_user_tables where schemaname = 'reserve'`;
        const [f] = await one`
        select coalesce(sum(calls) filter (where p.prorettype = 'trigger'::regtype), 0)::int as trigger_calls,
               coalesce(sum(calls), 0)::int as function_calls
        from pg_stat_xact_user_functions s join pg_proc p on p.oid = s.funcid where s.schemaname = 'reserve'`;
        return { ...t, ...f } as Record<string, number>;
      };
      const before = await counts();
      await one`select extensions.pg_stat_statements_reset()`;
      const r = await processEvent(one, succeededEvent(take()));
      const after = await counts();
      const d = Object.fromEntries(Object.keys(after).map((k) => [k, after[k] - before[k]]));
      const t = { ins: d.ins, upd: d.upd, audit_ins: d.audit_ins, audit_upd: d.audit_upd };
      const f = { trigger_calls: d.trigger_calls, function_calls: d.function_calls };
      counted = { r, t, f };
      await one`commit`;
    } finally { one.release(); }
    const [st] = await sql`select coalesce(sum(calls), 0)::int as statements, coalesce(sum(plans), 0)::int as planned,
                                  round(coalesce(sum(total_plan_time), 0)::numeric, 3)::text as plan_ms
                           from extensions.pg_stat_statements
                           where query not like '%pg_stat_statements_reset%' and query not like '%pg_stat_xact_user%'
                             and query not like 'set local %' and toplevel is false`;
    if (counted.r.finalize_outcome !== "created") throw new Error(`finalize said ${counted.r.finalize_outcome}`);

    // ---------------------------------------------------------------- PROFILE=N: where N finalizes spend their time
    let profile = "";
    if (profileRuns > 0) {
      const one = await sql.reserve();
      try {
        await one`set track_functions = 'all'`;
        await one`set pg_stat_statements.track = 'all'`;
        await one`set pg_stat_statements.track_planning = on`;
        await one`select extensions.pg_stat_statements_reset(), pg_stat_reset()`;
        for (let i = 0; i < profileRuns; i++) await processEvent(one, succeededEvent(take()));
        await one`select pg_stat_force_next_flush()`;
        await one`select 1`;
      } finally { one.release(); }
      const fns = await sql`select s.funcname, s.calls::int, round(s.self_time::numeric / ${profileRuns}, 3)::text as self_ms,
                                   round(s.total_time::numeric / ${profileRuns}, 3)::text as total_ms
                            from pg_stat_user_functions s where s.schemaname = 'reserve' order by s.self_time desc limit 25`;
      const stmts = await sql`select calls::int, plans::int, round((total_exec_time / ${profileRuns})::numeric, 3)::text as ms,
                                     regexp_replace(left(query, 110), '[[:space:]]+', ' ', 'g') as query
                              from extensions.pg_stat_statements where toplevel is false
                              order by total_exec_time desc limit 30`;
      profile = `\n### PROFILE: ${profileRuns} finalizes on one connection, per finalize\n\n| function | calls | self ms | total ms |\n| --- | --- | --- | --- |\n` +
        fns.map((r) => `| ${r.funcname} | ${r.calls} | ${r.self_ms} | ${r.total_ms} |`).join("\n") +
        `\n\n| statement (inclusive of what it calls) | calls | planned | ms |\n| --- | --- | --- | --- |\n` +
        stmts.map((r) => `| ${String(r.query).replaceAll("|", "\\|")} | ${r.calls} | ${r.plans} | ${r.ms} |`).join("\n");
    }

    // ---------------------------------------------------------------- WAL of finalizes after a checkpoint
    await sql`checkpoint`;
    const walOf = async (fn: () => Promise<void>, n: number) => {
      const [{ lsn: from }] = await sql`select pg_current_wal_lsn()::text as lsn`;
      for (let i = 0; i < n; i++) await fn();
      const [{ lsn: to }] = await sql`select pg_current_wal_lsn()::text as lsn`;
      const [w] = await sql`
        with blocks as (
          select b.start_lsn, b.record_length, b.block_fpi_length, b.relfilenode,
                 count(*) over (partition by b.start_lsn) as refs
          from extensions.pg_get_wal_block_info(${from}::pg_lsn, ${to}::pg_lsn) b
        ), audit_rel as (
          select relid as oid from pg_partition_tree('reserve.audit_logs')
        ), audit as (
          select pg_relation_filenode(c.oid) as filenode from pg_class c
          where c.oid in (select oid from audit_rel union all
                          select indexrelid from pg_index where indrelid in (select oid from audit_rel) union all
                          select reltoastrelid from pg_class where oid in (select oid from audit_rel) and reltoastrelid <> 0 union all
                          select indexrelid from pg_index where indrelid in (select reltoastrelid from pg_class where oid in (select oid from audit_rel)))
        )
        select (${to}::pg_lsn - ${from}::pg_lsn)::bigint as bytes,
               (select coalesce(sum(block_fpi_length), 0) from blocks)::bigint as fpi,
               (select coalesce(sum(record_length::numeric / refs), 0) from blocks where relfilenode in (select filenode from audit))::bigint as audit_bytes,
               (select coalesce(sum((record_length - block_fpi_length)::numeric / refs), 0) from blocks where relfilenode in (select filenode from audit))::bigint as audit_bytes_no_fpi`;
      return { bytes: Number(w.bytes), fpi: Number(w.fpi), audit: Number(w.audit_bytes), auditNoFpi: Number(w.audit_bytes_no_fpi) };
    };
    const walFinalize = await walOf(async () => { await processEvent(sql, succeededEvent(take())); }, WAL_SAMPLE);

    // ---------------------------------------------------------------- a duplicate: xid, WAL, locks
    const dupPending = take();
    const dupEvent = succeededEvent(dupPending);
    await processEvent(sql, dupEvent);
    const dupFacts = await sql.begin(async (tx) => {
      const [{ lsn: before }] = await tx`select pg_current_wal_lsn()::text as lsn`;
      const r = await processEvent(tx, dupEvent);
      const [x] = await tx`select txid_current_if_assigned()::text as xid,
                                  (select count(*) from pg_locks where pid = pg_backend_pid() and locktype in ('transactionid', 'tuple'))::int as row_locks,
                                  (select count(*) from pg_locks where pid = pg_backend_pid() and locktype = 'relation' and mode not in ('AccessShareLock'))::int as write_locks`;
      const [{ lsn: after }] = await tx`select pg_current_wal_lsn()::text as lsn`;
      return { r, xid: x.xid as string | null, rowLocks: x.row_locks as number, writeLocks: x.write_locks as number, walSame: before === after };
    });
    if (!dupFacts.r.duplicate) throw new Error("the second delivery was not a duplicate");

    // ---------------------------------------------------------------- throughput, side by side
    await sql`checkpoint`;
    const cells: Cell[] = [];
    cells.push(await load(sql, "INSERT one row (ceiling)", async (c) => void await c`insert into public.bench_scratch (payload) values (${"x".repeat(64)})`));
    log(`${cells.at(-1)!.name}: ${cells.at(-1)!.rps.toFixed(0)}/s`);
    cells.push(await load(sql, "process_webhook_event(succeeded), distinct payments", async (c) => {
      const r = await processEvent(c, succeededEvent(take()));
      if (r.finalize_outcome !== "created") throw new Error(`finalize ${r.finalize_outcome} (${r.webhook_status})`);
    }));
    log(`${cells.at(-1)!.name}: ${cells.at(-1)!.rps.toFixed(0)}/s`);
    cells.push(await load(sql, "process_webhook_event, duplicate of a completed event", async (c) => {
      const r = await processEvent(c, dupEvent);
      if (!r.duplicate) throw new Error("not a duplicate");
    }));
    log(`${cells.at(-1)!.name}: ${cells.at(-1)!.rps.toFixed(0)}/s`);
    cells.push(await load(sql, "plain read of the completed event (floor)", async (c) => {
      await c`select status from reserve.processed_webhooks where provider = 'stripe' and event_id = ${dupEvent.event.event_id}`;
    }));
    log(`${cells.at(-1)!.name}: ${cells.at(-1)!.rps.toFixed(0)}/s`);
    let hotNext = 0;
    cells.push(await load(sql, "process_webhook_event(succeeded), one hot night", async (c) => {
      const p = hotOnes[hotNext++];
      if (!p) throw new Error("ran out of hot payments");
      const r = await processEvent(c, succeededEvent(p));
      if (r.finalize_outcome !== "created") throw new Error(`finalize ${r.finalize_outcome} (${r.webhook_status})`);
    }));
    log(`${cells.at(-1)!.name}: ${cells.at(-1)!.rps.toFixed(0)}/s`);
    cells.push(await load(sql, "INSERT one row (ceiling, again)", async (c) => void await c`insert into public.bench_scratch (payload) values (${"x".repeat(64)})`));

    const [checks] = await sql`select (select count(*) from reserve.overbooking_check)::int as overbooked,
                                      (select count(*) from reserve.find_ledger_imbalances(current_date - 1))::int as imbalanced,
                                      (select count(*) from reserve.units_with_counter_drift())::int as drift`.catch(async () =>
      sql`select (select count(*) from reserve.overbooking_check)::int as overbooked,
                 (select count(*) from reserve.find_ledger_imbalances(current_date - 1))::int as imbalanced, null as drift`);
    const ceiling = (cells[0].rps + cells[cells.length - 1].rps) / 2;
    const perF = (n: number) => (n / WAL_SAMPLE / 1024).toFixed(1);
    console.log(`
## bench:finalize (${new Date().toISOString()})
${cpus().length} vCPU ${cpus()[0]?.model ?? ""}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB, Node ${process.version}; load ${loadBefore} before, ${loadavg().map((l) => l.toFixed(2)).join(" ")} after; ${conns} connections${buckets ? `, balance_buckets ${buckets}` : ""}, ${durationMs / 1000} s per cell

| tx/s at ${conns} connections (p50 / p99 ms) | tx/s | ratio to INSERT | p50 | p99 | errors |
| --- | --- | --- | --- | --- | --- |
${cells.map((c) => `| ${c.name} | ${c.rps.toFixed(0)} | ${((100 * c.rps) / ceiling).toFixed(1)}% | ${c.p50.toFixed(2)} | ${c.p99.toFixed(2)} | ${c.errors} |`).join("\n")}

one process_webhook_event(succeeded), counted in one execution: ${st.statements} statements inside it (${st.planned} planned in it, ${st.plan_ms} ms), ${counted.f.trigger_calls} trigger calls (${counted.f.function_calls} function calls in all), ${counted.t.ins} rows inserted, ${counted.t.upd} updated; audit_logs ${counted.t.audit_ins} inserted, ${counted.t.audit_upd} updated
WAL over ${WAL_SAMPLE} finalizes after a checkpoint: ${perF(walFinalize.bytes)} KB per finalize (${perF(walFinalize.bytes - walFinalize.fpi)} KB without full-page images); audit_logs ${perF(walFinalize.audit)} KB = ${((100 * walFinalize.audit) / walFinalize.bytes).toFixed(1)}% (${((100 * walFinalize.auditNoFpi) / (walFinalize.bytes - walFinalize.fpi)).toFixed(1)}% without full-page images)
a duplicate delivery: duplicate = ${dupFacts.r.duplicate}, transaction id assigned: ${dupFacts.xid ?? "none"}, WAL written: ${dupFacts.walSame ? "none" : "yes"}, row locks held: ${dupFacts.rowLocks}, write locks on tables: ${dupFacts.writeLocks}
invariants: overbooking_check rows ${checks.overbooked}, ledger imbalances ${checks.imbalanced}, units with counter drift ${checks.drift ?? "n/a"}${profile}`);
  } finally {
    for (const stop of stops) await stop().catch(() => {});
  }
}

await main();
