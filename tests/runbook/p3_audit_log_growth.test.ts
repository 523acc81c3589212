// P3: AUDIT LOG GROWTH. A year and more of audit rows and a retention job that never ran: the P3 alerts
// fire (size over audit_log_max_mb, lowered here to a size a test can reach; retention stale). The
// runbook's run_retention_cleanup() moves what is due to audit_logs_archive in batches; its checks
// read as the runbook expects; the space comes back after VACUUM FULL.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { expectFires, expectResolved } from "../helpers/runbook.ts";

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => await db?.drop());

describe("P3: audit log growth", () => {
  it("fires at P3, and the retention cleanup archives what is due", async () => {
    // 13 months of trail, the way the triggers write it (no reason, an actor, old and new values)
    await db.sql`
      insert into reserve.audit_logs (occurred_at, actor, action, table_name, row_id, new_values)
      select now() - make_interval(days => 400 - g / 1000), 'webhook_stripe', 'UPDATE', 'payments', gen_random_uuid()::text,
             jsonb_build_object('status', 'succeeded', 'padding', repeat('x', 300))
      from generate_series(1, 20000) g`;
    await db.sql`update reserve.settings set value = '4' where key = 'audit_log_max_mb'`;

    await expectFires(db.sql, "audit_log_size", "P3", "P3: AUDIT LOG GROWTH");
    await expectFires(db.sql, "retention_stale", "P3", "P3: AUDIT LOG GROWTH");

    // Checks, as written
    await db.sql.unsafe(`SELECT pg_size_pretty(pg_total_relation_size('reserve.audit_logs'));`);
    const [{ count }] = await db.sql.unsafe(`SELECT COUNT(*) FROM reserve.audit_logs;`);
    const [stats] = (await db.sql.unsafe(`SELECT * FROM reserve.retention_statistics;`)).filter((s) => s.table_name === "audit_logs");
    expect(Number(stats.due_rows)).toBeGreaterThan(0);
    const due = Number(stats.due_rows);

    // Resolution, as written
    const done = await db.sql.unsafe(`SELECT * FROM reserve.run_retention_cleanup();`);
    const audit = done.find((d) => d.table_name === "audit_logs")!;
    expect(Number(audit.rows_moved)).toBe(due);
    expect(audit.batches).toBe(Math.ceil(due / 5000) + (due % 5000 === 0 ? 1 : 0));
    const archived = await db.sql.unsafe(`SELECT * FROM reserve.audit_logs_archive LIMIT 5;`);
    expect(archived).toHaveLength(5);
    const [policy] = await db.sql.unsafe(`SELECT * FROM reserve.retention_policies WHERE table_name = 'audit_logs';`);
    expect(policy).toMatchObject({ retention_days: 365, retention_type: "archive" });
    const [{ left }] = await db.sql`select count(*)::int as left from reserve.audit_logs where occurred_at < now() - interval '365 days'`;
    expect(left).toBe(0);
    const [{ total }] = await db.sql`select (select count(*) from reserve.audit_logs) + (select count(*) from reserve.audit_logs_archive) as total`;
    expect(Number(total)).toBeGreaterThanOrEqual(Number(count));

    await expectResolved(db.sql, "retention_stale");
    // deleted rows leave their pages behind until the table is rewritten
    await db.sql.unsafe(`VACUUM FULL reserve.audit_logs`);
    await expectResolved(db.sql, "audit_log_size");
  });
});
