// P3: AUDIT LOG GROWTH. A year and more of audit rows and a retention job that never ran: the P3 alerts
// fire (size over audit_log_max_mb, lowered here to a size a test can reach; retention stale). audit_logs
// is partitioned by month: the runbook's run_retention_cleanup() archives the months wholly past the
// cutoff and drops them, so the size (every partition summed) is back under the limit at once, with no
// VACUUM FULL; a row older than every partition (in the default one) is archived in a batch.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import postgres from "postgres";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { expectFires, expectResolved } from "../helpers/runbook.ts";

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => await db?.drop());

const partitions = async () =>
  (await db.sql<{ name: string }[]>`select c.relname as name from pg_inherits i join pg_class c on c.oid = i.inhrelid
                                    where i.inhparent = 'reserve.audit_logs'::regclass order by 1`).map((r) => r.name);

describe("P3: audit log growth", () => {
  it("fires at P3, and the retention cleanup hands the months past the cutoff to the archive whole", async () => {
    // a load of back-dated history creates its months first; a row older than those lands in the default partition
    await db.sql`select reserve.create_audit_log_partitions(current_date - 431, 3)`;
    const before = await partitions();
    // 14 months of trail and older, the way the triggers write it (no reason, an actor, old and new values):
    // 400 to 430 days back, all in months that ended more than 365 days ago
    await db.sql`
      insert into reserve.audit_logs (occurred_at, actor, action, table_name, row_id, new_values)
      select now() - make_interval(days => 430) + make_interval(secs => g * 125.0), 'webhook_stripe', 'UPDATE', 'payments',
             gen_random_uuid()::text, jsonb_build_object('status', 'succeeded', 'padding', repeat('x', 300))
      from generate_series(1, 20000) g`;
    await db.sql`insert into reserve.audit_logs (occurred_at, actor, action, table_name, row_id)
                 select now() - interval '800 days', 'import', 'INSERT', 'payments', g::text from generate_series(1, 10) g`;
    const [{ n: inDefault }] = await db.sql`select count(*)::int as n from reserve.audit_logs_default`;
    expect(inDefault).toBe(10);
    await db.sql`update reserve.settings set value = '4' where key = 'audit_log_max_mb'`;

    const size = await expectFires(db.sql, "audit_log_size", "P3", "P3: AUDIT LOG GROWTH");
    expect(size.summary).toMatch(/setting audit_log_max_mb/);
    expect(size.summary).not.toMatch(/GB/);
    const [{ threshold }] = await db.sql`select threshold from reserve.check_all_alerts() where alert_name = 'audit_log_size'`;
    expect(threshold).toBe("<= 4 MB (setting audit_log_max_mb)");
    await expectFires(db.sql, "retention_stale", "P3", "P3: AUDIT LOG GROWTH");

    // Checks, as written
    const [{ pg_size_pretty: pretty }] = await db.sql.unsafe(
      `SELECT pg_size_pretty(sum(pg_total_relation_size(relid))) FROM pg_partition_tree('reserve.audit_logs');`);
    expect(pretty).toMatch(/MB/);
    const [stats] = (await db.sql.unsafe(`SELECT * FROM reserve.retention_statistics;`)).filter((s) => s.table_name === "audit_logs");
    expect(Number(stats.due_rows)).toBe(20010);
    expect(Number(stats.total_bytes)).toBeGreaterThan(4 * 1024 * 1024);

    // Resolution, as written
    const done = await db.sql.unsafe(`SELECT * FROM reserve.run_retention_cleanup();`);
    const audit = done.find((d) => d.table_name === "audit_logs")!;
    expect(Number(audit.rows_moved)).toBe(20010);
    const archived = await db.sql.unsafe(`SELECT * FROM reserve.audit_logs_archive LIMIT 5;`);
    expect(archived).toHaveLength(5);
    const [{ n: inArchive }] = await db.sql`select count(*)::int as n from reserve.audit_logs_archive`;
    expect(inArchive).toBe(20010);
    const [policy] = await db.sql.unsafe(`SELECT * FROM reserve.retention_policies WHERE table_name = 'audit_logs';`);
    expect(policy).toMatchObject({ retention_days: 365, retention_type: "archive" });
    const [{ left }] = await db.sql`select count(*)::int as left from reserve.audit_logs where occurred_at < now() - interval '365 days'`;
    expect(left).toBe(0);

    // the months past the cutoff are gone as tables, the rest stay, and three months ahead exist
    const after = await partitions();
    const gone = before.filter((p) => !after.includes(p));
    expect(gone.length).toBeGreaterThanOrEqual(2);
    const [{ last_ok: lastOk }] = await db.sql`select reserve.audit_log_partition_name((date_trunc('month', current_date) + interval '3 months')::date) = any(${after}) as last_ok`;
    expect(lastOk).toBe(true);
    const [{ summary }] = await db.sql`select summary from reserve.job_last_runs where job = 'run_retention_cleanup'`;
    expect(summary.partitions_moved).toBe(gone.length);
    // each month went whole to the archive: a partition of audit_logs_archive now
    const [{ n: archiveMonths }] = await db.sql`select count(*)::int as n from pg_inherits where inhparent = 'reserve.audit_logs_archive'::regclass`;
    expect(archiveMonths).toBe(gone.length + 1);

    await expectResolved(db.sql, "retention_stale");
    // the space came back with the dropped months: no VACUUM FULL
    await expectResolved(db.sql, "audit_log_size");
  });

  it("leaves a month whole for the next run when a reader holds audit_logs past the 500 ms lock wait", async () => {
    await db.sql`select reserve.create_audit_log_partitions(current_date - 500, 3)`;
    await db.sql`insert into reserve.audit_logs (occurred_at, actor, action, table_name, row_id)
                 select now() - interval '470 days' + make_interval(secs => g), 'import', 'INSERT', 'payments', g::text
                 from generate_series(1, 100) g`;
    const month = (await db.sql`select reserve.audit_log_partition_name((now() - interval '470 days')::date) as p`)[0].p as string;
    const reader = postgres(db.url, { max: 1, onnotice: () => {} });
    try {
      await reader.begin(async (tx) => {
        // a long report on audit_logs: its ACCESS SHARE lock is held until it ends
        await tx`select count(*) from reserve.audit_logs`;
        const started = Date.now();
        const rows = await db.sql`select * from reserve.run_retention_cleanup()`;
        expect(Date.now() - started).toBeLessThan(5000);
        // the month is still due, and the pass says so: a loop until more_due is false goes on
        expect(rows.find((r) => r.table_name === "audit_logs")).toMatchObject({ more_due: true });
        const [{ summary }] = await db.sql`select summary from reserve.job_last_runs where job = 'run_retention_cleanup'`;
        expect(summary.partitions_moved).toBe(0);
        expect((await partitions()).includes(month)).toBe(true);
      });
    } finally {
      await reader.end();
    }
    const [{ n: still }] = await db.sql`select count(*)::int as n from reserve.audit_logs where occurred_at < now() - interval '465 days'`;
    expect(still).toBe(100);
    await db.sql`select * from reserve.run_retention_cleanup()`;
    expect((await partitions()).includes(month)).toBe(false);
    const [{ n: archived }] = await db.sql`select count(*)::int as n from reserve.audit_logs_archive where actor = 'import' and occurred_at between now() - interval '471 days' and now() - interval '469 days'`;
    expect(archived).toBe(100);
  });
});
