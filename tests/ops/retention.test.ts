// run_retention_cleanup() and the retention_cleanup_job() procedure: audit rows past 365 days
// move to audit_logs_archive unchanged, in batches; other tables are deleted past their days; held
// night locks are never deleted; a run leaves last_run_at and a heartbeat; writers are never blocked.
import postgres from "postgres";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createTestDatabase, sqlState, type Sql, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";
import { backendPid, replica, sleep } from "./ops_helpers.ts";

let db: TestDatabase;
let sql: Sql;
beforeAll(async () => {
  db = await createTestDatabase();
  sql = db.sql;
});
afterAll(async () => await db?.drop());
beforeEach(async () => {
  await sql`update reserve.retention_policies set batch_size = 5000`;
});

/** n audit rows `days` old, with distinct contents; returns their ids. */
async function oldAudit(n: number, days = 400): Promise<string[]> {
  const rows = await sql`
    insert into reserve.audit_logs (occurred_at, actor, action, table_name, row_id, old_values, new_values, reason)
    select now() - make_interval(days => ${days}) + g * interval '1 second', 'old@actor', 'UPDATE', 'payments',
           'row-' || g, jsonb_build_object('n', g), jsonb_build_object('n', g + 1), 'why ' || g
    from generate_series(1, ${n}) g
    returning id`;
  return rows.map((r) => String(r.id));
}

async function due(): Promise<number> {
  const [r] = await sql`select count(*)::int as n from reserve.audit_logs where occurred_at < now() - interval '365 days'`;
  return r.n;
}

describe("run_retention_cleanup: audit_logs archive", () => {
  it("moves rows past 365 days to audit_logs_archive with the same ids and contents, batch_size at a time", async () => {
    const ids = await oldAudit(10);
    const young = await oldAudit(2, 300);
    const before = await sql`select id, occurred_at, actor, action, table_name, row_id, old_values, new_values, reason, xact_id
                             from reserve.audit_logs where id = any(${ids}::bigint[]) order by id`;
    await sql`update reserve.retention_policies set batch_size = 3 where table_name = 'audit_logs'`;

    const first = await sql`select * from reserve.run_retention_cleanup(2)`;
    expect(first.find((r) => r.table_name === "audit_logs")).toMatchObject({
      retention_type: "archive", rows_moved: "6", batches: 2, more_due: true,
    });
    // the oldest first
    const archivedFirst = await sql`select id from reserve.audit_logs_archive order by id`;
    expect(archivedFirst.map((r) => String(r.id))).toEqual(ids.slice(0, 6));
    expect(await due()).toBe(4);

    const second = await sql`select * from reserve.run_retention_cleanup()`;
    expect(second.find((r) => r.table_name === "audit_logs")).toMatchObject({ rows_moved: "4", batches: 2, more_due: false });
    expect(await due()).toBe(0);
    const archived = await sql`select id, occurred_at, actor, action, table_name, row_id, old_values, new_values, reason, xact_id
                               from reserve.audit_logs_archive where id = any(${ids}::bigint[]) order by id`;
    expect(archived).toEqual(before);
    const left = await sql`select id from reserve.audit_logs where id = any(${young}::bigint[])`;
    expect(left).toHaveLength(2);

    const [p] = await sql`select * from reserve.retention_policies where table_name = 'audit_logs'`;
    expect(p.last_run_rows).toBe("4");
    expect(p.last_run_at).not.toBeNull();
    const [hb] = await sql`select * from reserve.job_last_runs where job = 'run_retention_cleanup'`;
    expect(hb).toMatchObject({ ok: true });
    expect(hb.summary).toMatchObject({ audit_logs: 4 });
    const runs = await sql`select count(*)::int as n from reserve.job_heartbeats where job = 'run_retention_cleanup'`;
    expect(runs[0].n).toBe(2);
  });

  it("refuses p_max_batches < 1 and p_max_partitions < 1 with RC001", async () => {
    expect(await sqlState(sql`select * from reserve.run_retention_cleanup(0)`)).toBe("RC001");
    expect(await sqlState(sql`select * from reserve.run_retention_cleanup(20, 0)`)).toBe("RC001");
  });

  it("refuses to make partitions from a month out of reach (the year 1, BC, infinity) with RC001, making none, instead of thousands", async () => {
    const count = async () => (await sql`select count(*)::int as n from pg_inherits
                                         where inhparent in ('reserve.audit_logs'::regclass, 'reserve.processed_webhooks'::regclass)`)[0].n;
    const before = await count();
    for (const fn of ["create_audit_log_partitions", "create_processed_webhook_partitions"]) {
      for (const from of ["infinity", "-infinity", "5874897-12-31", "0001-01-01", "4713-01-01 BC"]) {
        expect(await sqlState(sql`select ${sql(`reserve.${fn}`)}(${from}::text::date, 0)`)).toBe("RC001");
      }
    }
    expect(await count()).toBe(before);
  });

  it("moves at most p_max_partitions whole months per call, and the job one month per committed call", async () => {
    // months whose rows are still in audit_logs past the cutoff
    const months = async () => (await sql<{ n: number }[]>`
      select count(distinct date_trunc('month', occurred_at))::int as n from reserve.audit_logs where occurred_at < now() - interval '365 days'`)[0].n;
    const archived = async () => (await sql<{ n: number }[]>`select count(*)::int as n from reserve.audit_logs_archive`)[0].n;
    // three whole months past the cutoff, 20 rows in each: the three months before the one the cutoff falls
    // in, named as months (offsets in days land two in one month on some dates, as on 5 December)
    await sql`select reserve.create_audit_log_partitions((date_trunc('month', now() - interval '365 days') - interval '3 months')::date, 3)`;
    for (const back of [1, 2, 3]) {
      await sql`insert into reserve.audit_logs (occurred_at, actor, action, table_name, row_id)
                select date_trunc('month', now() - interval '365 days') - make_interval(months => ${back}) + g * interval '1 hour',
                       'old@actor', 'UPDATE', 'payments', 'r' || g
                from generate_series(1, 20) g`;
    }
    const dueMonths = await months();
    expect(dueMonths).toBeGreaterThanOrEqual(3);
    const before = await archived();

    const one = await sql`select * from reserve.run_retention_cleanup(20, 1)`;
    expect(one.find((r) => r.table_name === "audit_logs")).toMatchObject({ more_due: true });
    expect(await months()).toBe(dueMonths - 1);
    const [{ summary }] = await sql`select summary from reserve.job_last_runs where job = 'run_retention_cleanup'`;
    expect(summary.partitions_moved).toBe(1);

    const [job] = await sql.unsafe(`CALL reserve.retention_cleanup_job()`);
    expect(job.more_due).toBe(true);
    expect(await months()).toBe(dueMonths - 2);
    for (let i = 0; i < dueMonths && (await months()) > 0; i++) await sql.unsafe(`CALL reserve.retention_cleanup_job()`);
    expect(await months()).toBe(0);
    const [last] = await sql.unsafe(`CALL reserve.retention_cleanup_job()`);
    expect(last.more_due).toBe(false);
    expect(await archived() - before).toBeGreaterThanOrEqual(60);
    expect(await due()).toBe(0);
  });

  it("the runbook's resolution runs as written", async () => {
    await oldAudit(1);
    const rows = await sql.unsafe(`SELECT * FROM reserve.run_retention_cleanup();`);
    expect(rows.map((r) => r.table_name)).toContain("audit_logs");
    expect(await sql.unsafe(`SELECT * FROM reserve.audit_logs_archive LIMIT 5;`)).not.toHaveLength(0);
  });
});

describe("run_retention_cleanup: deleted tables", () => {
  it("deletes processed_webhooks, job_heartbeats, rate_limit_counters and alert_events past their days, and never a held lock", async () => {
    const day = 86400_000;
    const ago = (d: number) => new Date(Date.now() - d * day);
    const wh = async (d: number) => (await f.insert(sql, "processed_webhooks", {
      provider: "stripe", event_id: `evt_${crypto.randomUUID()}`, event_type: "x", status: "completed", received_at: ago(d),
    })).id as string;
    const oldWh = await wh(181), youngWh = await wh(179);
    await sql`insert into reserve.job_heartbeats (job, started_at, finished_at, ok) values
              ('old_job', ${ago(31)}, ${ago(31)}, true), ('young_job', ${ago(29)}, ${ago(29)}, true)`;
    await sql`insert into reserve.rate_limit_counters (bucket, window_start, hits) values
              ('old', ${ago(3)}, 1), ('young', ${ago(1)}, 1)`;
    await sql`insert into reserve.alert_events (alert_name, state, at) values
              ('overbooking', 'firing', ${ago(366)}), ('overbooking', 'resolved', ${ago(364)})`;
    // night locks of 100 days ago: one still held (live state), one released
    const { unitId } = await f.unit(sql, { nights: 1 });
    const i1 = await f.intent(sql, unitId), i2 = await f.intent(sql, unitId);
    const lockDate = f.isoDate(-100);
    await sql.begin(async (tx) => {
      await replica(tx);
      await tx`insert into reserve.availability_calendar (unit_id, date, allotment) values (${unitId}, ${lockDate}, 2)`;
      await tx`insert into reserve.booking_locks (booking_intent_id, unit_id, lock_date, expires_at, status, released_at) values
               (${i1.id as string}, ${unitId}, ${lockDate}, now(), 'held', null),
               (${i2.id as string}, ${unitId}, ${lockDate}, now(), 'released', now())`;
    });

    const rows = await sql`select * from reserve.run_retention_cleanup()`;
    const by = Object.fromEntries(rows.map((r) => [r.table_name, r]));
    expect(by.processed_webhooks.rows_moved).toBe("1");
    expect(by.booking_locks.rows_moved).toBe("1");
    expect(by.alert_events.rows_moved).toBe("1");
    expect(by.rate_limit_counters.rows_moved).toBe("1");
    expect(Number(by.job_heartbeats.rows_moved)).toBe(1);

    expect((await sql`select id from reserve.processed_webhooks where id in (${oldWh}, ${youngWh})`).map((r) => r.id)).toEqual([youngWh]);
    expect((await sql`select job from reserve.job_heartbeats where job in ('old_job', 'young_job')`).map((r) => r.job)).toEqual(["young_job"]);
    expect((await sql`select bucket from reserve.rate_limit_counters`).map((r) => r.bucket)).toEqual(["young"]);
    expect((await sql`select state from reserve.alert_events`).map((r) => r.state)).toEqual(["resolved"]);
    expect((await sql`select status from reserve.booking_locks where unit_id = ${unitId}`).map((r) => r.status)).toEqual(["held"]);
    const policies = await sql`select table_name, last_run_at, last_run_rows from reserve.retention_policies`;
    for (const p of policies) expect(p.last_run_at, p.table_name as string).not.toBeNull();
  });
});

describe("concurrency and the job", () => {
  it("does not block a writer inserting audit rows while the cleanup transaction is open", async () => {
    await oldAudit(500);
    const cleaner = postgres(db.url, { max: 1, onnotice: () => {} });
    const writer = postgres(db.url, { max: 1, onnotice: () => {} });
    try {
      const writerPid = await backendPid(writer);
      await cleaner.begin(async (tx) => {
        const rows = await tx`select * from reserve.run_retention_cleanup()`;
        expect(Number(rows.find((r) => r.table_name === "audit_logs")!.rows_moved)).toBe(500);
        // the cleanup's transaction is still open: a writer appends audit rows, new payments included
        let done = false;
        const writes = (async () => {
          await writer`insert into reserve.audit_logs (actor, action, table_name, row_id) select 'w', 'INSERT', 'payments', g::text
                       from generate_series(1, 50) g`;
          const { unitId } = await f.unit(writer, { nights: 3 });
          const i = await f.intent(writer, unitId);
          await f.payment(writer, i.id as string);
          done = true;
        })();
        while (!done) {
          const [a] = await sql`select wait_event_type, state from pg_stat_activity where pid = ${writerPid}`;
          expect(a.wait_event_type, "the writer waits on a lock held by the cleanup").not.toBe("Lock");
          await Promise.race([writes, sleep(20)]);
        }
        await writes;
      });
    } finally {
      await cleaner.end({ timeout: 5 });
      await writer.end({ timeout: 5 });
    }
    expect(await due()).toBe(0);
  });

  it("a job killed in the middle of moving a month leaves the month whole in audit_logs, and the next call moves it", async () => {
    // a month no other test archives, and the oldest of audit_logs: the one the next call moves
    await sql`select reserve.create_audit_log_partitions((now() - interval '530 days')::date, 3)`;
    const at = sql`date_trunc('month', now() - interval '530 days')`;
    await sql`insert into reserve.audit_logs (occurred_at, actor, action, table_name, row_id)
              select ${at} + g * interval '1 hour', 'killed@move', 'UPDATE', 'payments', 'r' || g from generate_series(1, 30) g`;
    // a row of that month archived one by one before: the move sets it aside before it locks audit_logs,
    // and puts it into the month after it has detached it, where a test trigger holds it
    await sql`insert into reserve.audit_logs_archive (id, occurred_at, actor, action, table_name, xact_id)
              values (900000001, ${at} + interval '2 days', 'killed@move', 'UPDATE', 'payments', 0)`;
    const [{ part }] = await sql`select reserve.audit_log_partition_name((now() - interval '530 days')::date) as part`;
    await sql.unsafe(`create function public.test_hold_the_move() returns trigger language plpgsql as $$
                      begin perform pg_sleep(60); return new; end $$;
                      create trigger test_hold_the_move before insert on reserve.${part}
                      for each row execute function public.test_hold_the_move();`);
    const month = async () => {
      const [r] = await sql`select (select count(*)::int from reserve.audit_logs where actor = 'killed@move') as kept,
                                   (select count(*)::int from reserve.audit_logs_archive where actor = 'killed@move') as archived,
                                   (select count(*)::int from pg_inherits i join pg_class c on c.oid = i.inhrelid
                                    where i.inhparent = 'reserve.audit_logs_archive'::regclass
                                      and c.relname = 'audit_logs_archive_p' || to_char(now() - interval '530 days', 'YYYYMM')) as archive_months`;
      return r;
    };
    // the CHECKs of the archive's default partition: the move adds its proof there before the DETACH
    const defaultChecks = async () => (await sql<{ conname: string }[]>`
      select conname from pg_constraint where conrelid = 'reserve.audit_logs_archive_default'::regclass and contype = 'c'
      order by 1`).map((r) => r.conname);
    const checksBefore = await defaultChecks();
    const job = postgres(db.url, { max: 1, onnotice: () => {} });
    try {
      const pid = await backendPid(job);
      const call = job.unsafe(`CALL reserve.retention_cleanup_job()`).then(() => "finished", (e: { code?: string }) => e.code ?? "error");
      for (let i = 0; i < 500; i++) {
        const [a] = await sql`select wait_event from pg_stat_activity where pid = ${pid}`;
        if (a?.wait_event === "PgSleep") break;
        await sleep(20);
      }
      const [held] = await sql`select count(*)::int as n from pg_locks
                               where pid = ${pid} and relation = 'reserve.audit_logs'::regclass and mode = 'AccessExclusiveLock' and granted`;
      expect(held.n, "the job is mid-move: it holds audit_logs' ACCESS EXCLUSIVE lock").toBe(1);
      await sql`select pg_terminate_backend(${pid})`;
      // the server's 57P01, or the closed connection, whichever the client sees first
      expect(["57P01", "CONNECTION_CLOSED"]).toContain(await call);
    } finally {
      await job.end({ timeout: 1 }).catch(() => {});
      await sql.unsafe(`drop trigger test_hold_the_move on reserve.${part};
                        drop function public.test_hold_the_move();`);
    }
    // all of the move was undone: the month is still audit_logs', whole, and writers can append again
    expect(await month()).toEqual({ kept: 30, archived: 1, archive_months: 0 });
    expect(await defaultChecks()).toEqual(checksBefore);
    await sql`insert into reserve.audit_logs (actor, action, table_name, row_id) values ('after@kill', 'INSERT', 'payments', 'x')`;

    // every month past the cutoff goes, one per call
    let more = true;
    for (let i = 0; i < 40 && more; i++) more = (await sql.unsafe(`CALL reserve.retention_cleanup_job()`))[0].more_due;
    expect(more).toBe(false);
    expect(await month()).toEqual({ kept: 0, archived: 31, archive_months: 1 });
  });

  it("CALL reserve.retention_cleanup_job() is one bounded pass that says when more is due; repeated calls drain a backlog", async () => {
    await sql`update reserve.retention_policies set batch_size = 2 where table_name = 'audit_logs'`;
    await oldAudit(55); // one call moves at most 20 batches of 2
    const [before] = await sql`select count(*)::int as n from reserve.job_heartbeats where job = 'run_retention_cleanup'`;
    const [first] = await sql.unsafe(`CALL reserve.retention_cleanup_job()`);
    expect(first.more_due).toBe(true);
    expect(await due()).toBe(15);
    const [second] = await sql.unsafe(`CALL reserve.retention_cleanup_job()`);
    expect(second.more_due).toBe(false);
    expect(await due()).toBe(0);
    const [after] = await sql`select count(*)::int as n from reserve.job_heartbeats where job = 'run_retention_cleanup'`;
    expect(after.n - before.n).toBe(2); // two committed calls
  });

  it("has a fixed search_path, as every function and procedure of reserve (splinter 0011 function_search_path_mutable)", async () => {
    const rows = await sql`
      select p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      left join pg_depend d on d.objid = p.oid and d.deptype = 'e'
      where n.nspname = 'reserve' and d.objid is null
        and not exists (select 1 from unnest(coalesce(p.proconfig, '{}')) c where c like 'search_path=%')
      order by 1`;
    expect(rows.map((r) => r.proname)).toEqual([]);
  });
});

// after every other test: these create months back to 25 months ago, which would change what the tests
// above find due
describe("run_retention_cleanup: a month's move under audit_logs' lock", () => {
  // what PostgreSQL says when ATTACH PARTITION finds the default partition's rows ruled out (tablecmds.c)
  const defaultImplied = `updated partition constraint for default partition "audit_logs_archive_default" is implied by existing constraints`;
  /** The messages of one call of `query` on its own connection, DEBUG1 included. */
  async function debugOf(query: (job: Sql) => Promise<unknown>): Promise<string[]> {
    const debug: string[] = [];
    const job = postgres(db.url, { max: 1, onnotice: (n) => debug.push(String(n.message)), connection: { client_min_messages: "debug1" } });
    try {
      await query(job);
    } finally {
      await job.end();
    }
    return debug;
  }
  /** The name of the CHECK bounding the archive's default partition below a month. */
  const defaultBound = async () => (await sql<{ conname: string }[]>`
    select conname from pg_constraint where conrelid = 'reserve.audit_logs_archive_default'::regclass
      and conname like 'audit\\_logs\\_archive\\_default\\_before\\_p%'`)[0].conname;
  /** Drops by hand the oldest empty archive month after the bound's month; returns its lower bound. */
  async function dropEmptyArchiveMonthAbove(bound: string): Promise<Date> {
    const [{ part, at }] = await sql`
      select c.relname as part, (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']+)''\\)'))[1]::timestamptz as at
      from pg_inherits i join pg_class c on c.oid = i.inhrelid
      where i.inhparent = 'reserve.audit_logs_archive'::regclass and c.relname ~ '^audit_logs_archive_p[0-9]{6}$'
        and c.relname > 'audit_logs_archive_p' || right(${bound}, 6)
        and not exists (select 1 from reserve.audit_logs_archive x where x.tableoid = c.oid)
      order by c.relname limit 1`;
    await sql.unsafe(`drop table reserve.${part}`);
    return at;
  }
  /** The CHECK constraints of the archive's default partition. */
  const defaultChecks = async () => (await sql<{ conname: string }[]>`
    select conname from pg_constraint where conrelid = 'reserve.audit_logs_archive_default'::regclass and contype = 'c' order by 1`).map((r) => r.conname);

  it("a month's move proves the archive's default partition before it locks audit_logs: ATTACH reads no row, and no row is lost", async () => {
    // the oldest month due, 700 days back: 10 rows in audit_logs, 3 of its rows archived one by one before it
    // was a partition, and 4 rows of other months in the archive's default partition
    const at = sql`date_trunc('month', now() - interval '700 days')`;
    await sql`select reserve.create_audit_log_partitions((now() - interval '700 days')::date, 3)`;
    await sql`insert into reserve.audit_logs (occurred_at, actor, action, table_name, row_id)
              select ${at} + g * interval '1 hour', 'default@proof', 'UPDATE', 'payments', 'r' || g from generate_series(1, 10) g`;
    await sql`insert into reserve.audit_logs_archive (id, occurred_at, actor, action, table_name, xact_id, archived_at)
              select 910000000 + g, ${at} + g * interval '1 day', 'default@proof', 'UPDATE', 'payments', 0, now() - interval '90 days'
              from generate_series(1, 3) g
              union all
              select 910000100 + g, ${at} - g * interval '40 days', 'default@proof', 'UPDATE', 'payments', 0, now() - interval '90 days'
              from generate_series(1, 4) g`;
    const month = sql`reserve.audit_log_partition_name((now() - interval '700 days')::date)`;
    const [{ name }] = await sql`select 'audit_logs_archive_p' || right(${month}, 6) as name`;
    const bound = `audit_logs_archive_default_before_p${name.slice(-6)}`;

    const debug = await debugOf((job) => job`select * from reserve.run_retention_cleanup(20, 1)`);
    // what PostgreSQL says when ATTACH PARTITION skips its scans (tablecmds.c)
    expect(debug).toContain(defaultImplied);
    expect(debug.filter((m) => /^partition constraint for table ".*" is implied by existing constraints$/.test(m))).toHaveLength(1);
    // the month's bounds, proved by the CHECK it was created with: the month is not read for them again
    expect(debug.filter((m) => m === `verifying table "audit_logs_p${name.slice(-6)}"`)).toEqual([]);
    const rows = await sql`select tableoid::regclass::text as part, count(*)::int as n, min(archived_at) < now() - interval '80 days' as kept_archived_at
                           from reserve.audit_logs_archive where actor = 'default@proof' group by 1 order by 1`;
    expect(rows).toEqual([
      { part: "reserve.audit_logs_archive_default", n: 4, kept_archived_at: true },
      { part: `reserve.${name}`, n: 13, kept_archived_at: true },
    ]);
    expect((await sql`select count(*)::int as n from reserve.audit_logs where actor = 'default@proof'`)[0].n).toBe(0);
    // nothing of the default is of this month or after it now: one CHECK bounds it below the month, at
    // the cost of one scan of the default
    expect(await defaultChecks()).toEqual([bound]);
    expect(debug.filter((m) => m === 'verifying table "audit_logs_archive_default"')).toHaveLength(1);
    // the next month is above the bound: ruled out by it, with no CHECK of its own and no scan of the default
    const next = await debugOf((job) => job`select * from reserve.run_retention_cleanup(20, 1)`);
    expect(next).toContain(defaultImplied);
    expect(next.filter((m) => m.includes('"audit_logs_archive_default"') && m !== defaultImplied)).toEqual([]);
    expect(await defaultChecks()).toEqual([bound]);
    await sql`select * from reserve.run_retention_cleanup()`; // the empty months left due, for the tests after
  });

  it("drops the archive default's bound before archiving one by one a row above it that has no month of its own, and loses no row", async () => {
    const bound = await defaultBound();
    // a month above the bound, archived whole and empty, its archive partition dropped by hand: a row of it
    // written late (into audit_logs' default partition, the month having left audit_logs) has no month in
    // the archive either, so archiving it puts it in the archive's default partition
    const at = await dropEmptyArchiveMonthAbove(bound);
    await sql`insert into reserve.audit_logs (occurred_at, actor, action, table_name, row_id)
              values (${at}::timestamptz + interval '3 days', 'late@row', 'UPDATE', 'payments', 'r')`;
    const [{ held }] = await sql`select tableoid::regclass::text as held from reserve.audit_logs where actor = 'late@row'`;
    expect(held).toBe("reserve.audit_logs_default");

    const answer = await sql`select * from reserve.run_retention_cleanup()`;
    expect(answer.find((r) => r.table_name === "audit_logs")).toMatchObject({ more_due: false });
    const rows = await sql`select tableoid::regclass::text as part from reserve.audit_logs_archive where actor = 'late@row'`;
    expect(rows).toEqual([{ part: "reserve.audit_logs_archive_default" }]);
    expect((await sql`select count(*)::int as n from reserve.audit_logs where actor = 'late@row'`)[0].n).toBe(0);
    expect(await defaultChecks()).not.toContain(bound);
  });

  it("refuses a temporary table of the caller's where it sets a month's rows aside, and writes nothing", async () => {
    await sql`select reserve.create_audit_log_partitions((now() - interval '760 days')::date, 3)`;
    const at = sql`date_trunc('month', now() - interval '760 days')`;
    await sql`insert into reserve.audit_logs (occurred_at, actor, action, table_name, row_id) values (${at} + interval '1 hour', 'temp@caller', 'UPDATE', 'payments', 'r')`;
    await sql`insert into reserve.audit_logs_archive (id, occurred_at, actor, action, table_name, xact_id)
              values (920000001, ${at} + interval '2 days', 'temp@caller', 'UPDATE', 'payments', 0)`;
    const caller = postgres(db.url, { max: 1, onnotice: () => {} });
    try {
      await caller`create temporary table retention_month_back (like reserve.audit_logs_archive)`;
      expect(await sqlState(caller`select * from reserve.run_retention_cleanup(20, 1)`)).toBe("42P07");
    } finally {
      await caller.end();
    }
    const [r] = await sql`select (select count(*)::int from reserve.audit_logs where actor = 'temp@caller') as kept,
                                 (select count(*)::int from reserve.audit_logs_archive_default where actor = 'temp@caller') as set_aside`;
    expect(r).toEqual({ kept: 1, set_aside: 1 });
    // without it, the same call moves the month and its row set aside
    await sql`select * from reserve.run_retention_cleanup()`;
    const [after] = await sql`select (select count(*)::int from reserve.audit_logs where actor = 'temp@caller') as kept,
                                     (select count(*)::int from reserve.audit_logs_archive where actor = 'temp@caller') as archived`;
    expect(after).toEqual({ kept: 0, archived: 2 });
  });

  it("proves every month of a call before its first DETACH: waiting on the archive's default partition, it holds no lock on audit_logs", async () => {
    // two months due, 820 and 790 days back, one with a row archived one by one before; moved in one call (no month cap)
    await sql`select reserve.create_audit_log_partitions((now() - interval '820 days')::date, 3)`;
    const first = sql`date_trunc('month', now() - interval '820 days')`;
    const second = sql`date_trunc('month', now() - interval '790 days')`;
    await sql`insert into reserve.audit_logs (occurred_at, actor, action, table_name, row_id)
              select m + g * interval '1 hour', 'two@months', 'UPDATE', 'payments', 'r' || g
              from generate_series(1, 5) g, (select ${first} as m union all select ${second}) months`;
    await sql`insert into reserve.audit_logs_archive (id, occurred_at, actor, action, table_name, xact_id)
              values (930000001, ${second} + interval '3 days', 'two@months', 'UPDATE', 'payments', 0)`;
    const state = async () => (await sql`
      select (select count(*)::int from reserve.audit_logs where actor = 'two@months') as kept,
             (select count(*)::int from reserve.audit_logs_archive where actor = 'two@months') as archived`)[0];

    // a reader of the archive's default partition: the call waits for it (up to 500 ms) before any DETACH
    const reader = postgres(db.url, { max: 1, onnotice: () => {} });
    const job = postgres(db.url, { max: 1, onnotice: () => {} });
    let release = () => {};
    const released = new Promise<void>((r) => (release = r));
    let tx: Promise<unknown> = Promise.resolve();
    try {
      await new Promise<void>((held, failed) => {
        tx = reader.begin(async (r) => {
          await r`lock table reserve.audit_logs_archive_default in access share mode`;
          held();
          await released;
        }).catch(failed);
      });
      const pid = await backendPid(job);
      const call = job`select * from reserve.run_retention_cleanup(20)`.then((rows) => rows); // sent now, not when awaited
      let seen: { waiting_on: string; holds_audit_logs: number } | undefined;
      for (let i = 0; i < 100 && !seen; i++) {
        const [w] = await sql`
          select (select l.relation::regclass::text from pg_locks l where l.pid = ${pid} and not l.granted) as waiting_on,
                 (select count(*)::int from pg_locks l where l.pid = ${pid} and l.granted and l.relation = 'reserve.audit_logs'::regclass
                    and l.mode = 'AccessExclusiveLock') as holds_audit_logs`;
        if (w.waiting_on) seen = { waiting_on: String(w.waiting_on), holds_audit_logs: Number(w.holds_audit_logs) };
        else await sleep(5);
      }
      expect(seen).toEqual({ waiting_on: "reserve.audit_logs_archive_default", holds_audit_logs: 0 });
      // the lock wait ran out: the months are left for the next run, not counted as moved, and still due
      const answer = await call;
      expect(answer.find((r) => r.table_name === "audit_logs")).toMatchObject({ rows_moved: "0", more_due: true });
      const [{ last_run_rows }] = await sql`select last_run_rows from reserve.retention_policies where table_name = 'audit_logs'`;
      expect(Number(last_run_rows)).toBe(0);
      const [{ summary }] = await sql`select summary from reserve.job_last_runs where job = 'run_retention_cleanup'`;
      expect(summary).toMatchObject({ audit_logs: 0, partitions_moved: 0 });
    } finally {
      release();
      await tx;
      await reader.end();
      await job.end();
    }
    expect(await state()).toEqual({ kept: 10, archived: 1 });

    // each ALTER TABLE of the archive's default partition records whether its transaction held audit_logs'
    // ACCESS EXCLUSIVE lock then (an event trigger runs inside the statement's transaction)
    await sql.unsafe(`create table public.test_default_alters (holds_audit_logs boolean not null);
                      create function public.test_record_default_alter() returns event_trigger language plpgsql as $$
                      begin
                        insert into public.test_default_alters
                        select exists (select 1 from pg_locks l where l.pid = pg_backend_pid() and l.granted
                                         and l.relation = 'reserve.audit_logs'::regclass and l.mode = 'AccessExclusiveLock')
                        from pg_event_trigger_ddl_commands() c
                        where c.objid = 'reserve.audit_logs_archive_default'::regclass;
                      end $$;
                      create event trigger test_record_default_alter on ddl_command_end when tag in ('ALTER TABLE')
                      execute function public.test_record_default_alter();`);
    let debug: string[];
    let alters: { holds_audit_logs: boolean }[];
    try {
      debug = await debugOf((job) => job`select * from reserve.run_retention_cleanup(20)`);
    } finally {
      alters = await sql`select holds_audit_logs from public.test_default_alters`;
      await sql.unsafe(`drop event trigger test_record_default_alter; drop function public.test_record_default_alter();
                        drop table public.test_default_alters;`);
    }
    expect(await state()).toEqual({ kept: 0, archived: 11 });
    expect(alters.length).toBeGreaterThanOrEqual(1);
    expect(alters.filter((a) => a.holds_audit_logs)).toEqual([]);
    expect(debug.filter((m) => m === defaultImplied).length).toBeGreaterThanOrEqual(2); // each month attached, and the empty ones after them
    expect(debug.filter((m) => m.includes("audit_logs_archive_default") && m !== defaultImplied && /constraint/.test(m))).toEqual([]);
  });

  it("names an archive month for its audit_logs partition whatever the caller's time zone (bounds at UTC midnight read as the month before west of it)", async () => {
    await sql`select reserve.create_audit_log_partitions((now() - interval '880 days')::date, 3)`;
    const [{ part }] = await sql`select reserve.audit_log_partition_name((now() - interval '880 days')::date) as part`;
    await sql`insert into reserve.audit_logs (occurred_at, actor, action, table_name, row_id)
              values (date_trunc('month', now() - interval '880 days') + interval '5 days', 'tz@caller', 'UPDATE', 'payments', 'r')`;
    const brazil = postgres(db.url, { max: 1, onnotice: () => {}, connection: { TimeZone: "America/Sao_Paulo" } });
    try {
      await brazil`select * from reserve.run_retention_cleanup(20, 1)`;
    } finally {
      await brazil.end();
    }
    const [r] = await sql`select tableoid::regclass::text as part from reserve.audit_logs_archive where actor = 'tz@caller'`;
    expect(r.part).toBe(`reserve.audit_logs_archive_p${part.slice(-6)}`);
    // the default holds nothing of this month or after it: the bound is lowered to it, named for it too
    expect(await defaultChecks()).toEqual([`audit_logs_archive_default_before_p${part.slice(-6)}`]);
    await sql`select * from reserve.run_retention_cleanup()`;
  });

  it("proves a month below the bound with a CHECK of its own while the default holds a later row, and lowers the bound once it holds none", async () => {
    await sql`select reserve.create_audit_log_partitions((now() - interval '940 days')::date, 3)`;
    const bound = await defaultBound();
    const [{ first, second }] = await sql`
      select right(reserve.audit_log_partition_name((now() - interval '940 days')::date), 6) as first,
             right(reserve.audit_log_partition_name((date_trunc('month', now() - interval '940 days') + interval '1 month')::date), 6) as second`;
    expect(second < bound.slice(-6)).toBe(true);
    const at = sql`date_trunc('month', now() - interval '940 days')`;
    await sql`insert into reserve.audit_logs (occurred_at, actor, action, table_name, row_id)
              values (${at} + interval '2 days', 'below@bound', 'UPDATE', 'payments', 'r')`;
    // archived one by one before its month was a partition: a row of the month after, in the default
    await sql`insert into reserve.audit_logs_archive (id, occurred_at, actor, action, table_name, xact_id)
              values (940000001, ${at} + interval '1 month' + interval '2 days', 'below@bound', 'UPDATE', 'payments', 0)`;

    const debug = await debugOf((job) => job`select * from reserve.run_retention_cleanup(20, 1)`);
    expect(debug).toContain(defaultImplied);
    expect(await defaultChecks()).toEqual([bound, `audit_logs_archive_default_not_p${first}`].sort());
    // the month after is moved with its row set aside: nothing of the default is left at or above it
    await sql`select * from reserve.run_retention_cleanup()`;
    expect(await defaultChecks()).toEqual([`audit_logs_archive_default_before_p${second}`]);
    const rows = await sql`select tableoid::regclass::text as part from reserve.audit_logs_archive where actor = 'below@bound' order by occurred_at`;
    expect(rows).toEqual([{ part: `reserve.audit_logs_archive_p${first}` }, { part: `reserve.audit_logs_archive_p${second}` }]);
  });

  it("drops the bound before copying into the default a month above it with a column the archive lacks, and loses no row", async () => {
    const bound = await defaultBound();
    // the oldest month above the bound, archived and empty: its archive partition dropped by hand, the
    // month made again in audit_logs with a column the archive does not have, so it is copied, not attached
    const at = await dropEmptyArchiveMonthAbove(bound);
    await sql`select reserve.create_audit_log_partitions(${at}::timestamptz::date, 0)`;
    await sql`alter table reserve.audit_logs add column test_extra text`;
    try {
      await sql`insert into reserve.audit_logs (occurred_at, actor, action, table_name, row_id, test_extra)
                values (${at}::timestamptz + interval '4 days', 'copied@above', 'UPDATE', 'payments', 'r', 'x')`;
      const answer = await sql`select * from reserve.run_retention_cleanup()`;
      expect(answer.find((r) => r.table_name === "audit_logs")).toMatchObject({ more_due: false });
    } finally {
      await sql`alter table reserve.audit_logs drop column test_extra`;
    }
    const rows = await sql`select tableoid::regclass::text as part from reserve.audit_logs_archive where actor = 'copied@above'`;
    expect(rows).toEqual([{ part: "reserve.audit_logs_archive_default" }]);
    expect((await sql`select count(*)::int as n from reserve.audit_logs where actor = 'copied@above'`)[0].n).toBe(0);
    expect(await defaultChecks()).not.toContain(bound);
  });

  it("reads the months' bounds back exactly whatever the caller's DateStyle and time zone (IST in 'SQL' style reads as Israel's)", async () => {
    await sql`select reserve.create_audit_log_partitions((now() - interval '1000 days')::date, 3)`;
    const [{ part }] = await sql`select reserve.audit_log_partition_name((now() - interval '1000 days')::date) as part`;
    // an hour into the month (UTC): inside the month only if its lower bound is read back to the second
    await sql`insert into reserve.audit_logs (occurred_at, actor, action, table_name, row_id)
              values (date_trunc('month', now() - interval '1000 days') + interval '1 hour', 'style@caller', 'UPDATE', 'payments', 'r')`;
    const kolkata = postgres(db.url, { max: 1, onnotice: () => {}, connection: { TimeZone: "Asia/Kolkata", DateStyle: "SQL, DMY" } });
    try {
      await kolkata`select * from reserve.run_retention_cleanup(20, 1)`;
    } finally {
      await kolkata.end();
    }
    const [r] = await sql`select tableoid::regclass::text as part from reserve.audit_logs_archive where actor = 'style@caller'`;
    expect(r.part).toBe(`reserve.audit_logs_archive_p${part.slice(-6)}`);
    const [{ bounds }] = await sql`select pg_get_expr(c.relpartbound, c.oid) as bounds from pg_class c
                                   where c.oid = ${"reserve.audit_logs_archive_p" + part.slice(-6)}::regclass`;
    const [{ expected }] = await sql`select format('FOR VALUES FROM (%L) TO (%L)', m, m + interval '1 month') as expected
                                     from (select date_trunc('month', now() - interval '1000 days') as m) x`;
    expect(bounds).toBe(expected);
  });

  it("runs one cleanup at a time: a second call waits for the first to commit", async () => {
    const first = postgres(db.url, { max: 1, onnotice: () => {} });
    const second = postgres(db.url, { max: 1, onnotice: () => {} });
    let release = () => {};
    const released = new Promise<void>((r) => (release = r));
    let tx: Promise<unknown> = Promise.resolve();
    try {
      await new Promise<void>((ran, failed) => {
        tx = first.begin(async (t) => {
          await t`select * from reserve.run_retention_cleanup()`;
          ran();
          await released;
        }).catch(failed);
      });
      const pid = await backendPid(second);
      let done = false;
      const call = second`select * from reserve.run_retention_cleanup()`.then(() => (done = true));
      let waiting = false;
      for (let i = 0; i < 100 && !waiting; i++) {
        const [w] = await sql`select exists (select 1 from pg_locks l where l.pid = ${pid} and l.locktype = 'advisory' and not l.granted) as waiting`;
        waiting = w.waiting;
        if (!waiting) await sleep(5);
      }
      expect(waiting).toBe(true);
      expect(done).toBe(false);
      release();
      await tx;
      await call;
      expect(done).toBe(true);
    } finally {
      release();
      await tx;
      await first.end();
      await second.end();
    }
  });
});
