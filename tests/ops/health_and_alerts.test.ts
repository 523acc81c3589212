// system_health_check() and check_all_alerts(): every check is present, each goes WARNING or
// CRITICAL under its fault and back to OK once fixed; alerts are pending/firing/resolved with state kept
// between calls, a stable fingerprint, one alert_events row per change, and one evaluation at a time.
import { randomUUID } from "node:crypto";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, rolledBack, type Sql, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";
import { applyStatus } from "../helpers/money.ts";
import { duplicateCharge, paidReservation, replica, type Q, type Row } from "./ops_helpers.ts";

let db: TestDatabase;
let sql: Sql;
let unitId: string;
beforeAll(async () => {
  db = await createTestDatabase();
  sql = db.sql;
  unitId = (await f.unit(sql, { nights: 30 })).unitId;
});
afterAll(async () => await db?.drop());

async function health(q: Q): Promise<Record<string, Row>> {
  const rows = await q`select * from reserve.system_health_check()`;
  return Object.fromEntries(rows.map((r) => [r.check_name as string, r]));
}
async function status(q: Q, check: string): Promise<string> {
  return (await health(q))[check].status as string;
}

async function payment(q: Q, row: Record<string, unknown>) {
  const i = await f.intent(q, unitId);
  const pix = row.method === "pix";
  const p = await f.payment(q, i.id as string, { ...(pix ? { provider: "mercadopago", expires_at: new Date(Date.now() + 60_000) } : {}), ...row });
  return p.id as string;
}

async function webhook(q: Q, status: string) {
  const [w] = await q`insert into reserve.processed_webhooks (provider, event_id, event_type, status)
                      values ('stripe', ${`evt_${randomUUID()}`}, 'payment_intent.succeeded', ${status}) returning id`;
  return w.id as string;
}

/** One leg of a transaction, written with the writer flag as the runbook's manual SQL would. */
async function leg(tx: Q, txId: string, direction: "debit" | "credit", amount: number, header = false) {
  await tx`select set_config('reserve.ledger_writer', 'on', true)`;
  if (header) await tx`insert into reserve.ledger_transactions (id, kind, description) values (${txId}, 'payment', 'by hand')`;
  await tx`insert into reserve.ledger_entries (transaction_id, entry_type, account, direction, amount)
           values (${txId}, 'guest_payment', ${direction === "debit" ? "receivable_stripe" : "host_payable"}, ${direction}, ${amount})`;
  await tx`select set_config('reserve.ledger_writer', '', true)`;
}

/** Two held locks of other intents on a night of allotment 1, written with the triggers bypassed. */
async function oversell(tx: Q, u: string, date: string) {
  const intents = [await f.intent(tx, u), await f.intent(tx, u)];
  await replica(tx);
  for (const i of intents) {
    await tx`insert into reserve.booking_locks (booking_intent_id, unit_id, lock_date, expires_at)
             values (${i.id as string}, ${u}, ${date}, now() + interval '1 hour')`;
  }
  await replica(tx, false);
}
async function undoOversell(tx: Q, u: string) {
  await replica(tx);
  await tx`delete from reserve.booking_locks where unit_id = ${u}`;
  await replica(tx, false);
}

const CHECKS = ["ledger_balance", "ledger_trigger_enabled", "overbooking", "availability_counter_drift", "stuck_payments",
  "pix_pending_over_30m", "payment_success_rate_1h", "double_charges", "paid_without_reservation", "webhooks_failed_1h",
  "webhooks_dead", "webhook_delivery", "webhooks_ignored_1h", "refunds_stuck", "poller_heartbeat", "retention_last_run",
  "integrity_audit", "integrity_watermark", "active_connections", "long_running_queries", "audit_log_size", "money_discrepancies", "ledger_balance_drift",
  "reconciliation_unrepaired", "reconciliation_stale", "notification_outbox"];

describe("system_health_check", () => {
  it("names every check, each OK on a clean database, with a threshold", async () => {
    const h = await health(sql);
    expect(Object.keys(h).sort()).toEqual([...CHECKS].sort());
    for (const c of CHECKS) {
      expect(h[c].status, c).toBe("OK");
      expect(h[c].threshold, c).toEqual(expect.any(String));
    }
  });

  it("ledger: CRITICAL with trg_ledger_balance disabled and an unbalanced pair inserted, OK once fixed", async () => {
    await rolledBack(sql, async (tx) => {
      await tx`alter table reserve.ledger_entries disable trigger trg_ledger_balance`;
      expect(await status(tx, "ledger_trigger_enabled")).toBe("CRITICAL");
      const id = randomUUID();
      await leg(tx, id, "debit", 1000, true);
      await leg(tx, id, "credit", 900);
      const h = await health(tx);
      expect(h.ledger_balance).toMatchObject({ status: "CRITICAL", observed_value: "1" });
      // fixed: the missing leg appended and the trigger back on
      await leg(tx, id, "credit", 100);
      await tx`alter table reserve.ledger_entries enable trigger trg_ledger_balance`;
      const after = await health(tx);
      expect(after.ledger_balance.status).toBe("OK");
      expect(after.ledger_trigger_enabled.status).toBe("OK");
    });
  });

  it("overbooking (session_replication_role = replica): CRITICAL, with counter drift WARNING; OK once undone", async () => {
    await rolledBack(sql, async (tx) => {
      const u = (await f.unit(tx, { nights: 5 })).unitId;
      await oversell(tx, u, f.isoDate(2));
      const h = await health(tx);
      expect(h.overbooking).toMatchObject({ status: "CRITICAL", observed_value: "1" });
      expect(h.availability_counter_drift.status).toBe("WARNING");
      await undoOversell(tx, u);
      const after = await health(tx);
      expect(after.overbooking.status).toBe("OK");
      expect(after.availability_counter_drift.status).toBe("OK");
    });
  });

  it("overbooking with the capacity check dropped: CRITICAL though the counters add up to their rows", async () => {
    await rolledBack(sql, async (tx) => {
      const u = (await f.unit(tx, { nights: 5 })).unitId;
      await tx`alter table reserve.availability_calendar drop constraint availability_calendar_capacity_check`;
      // the counter and the two holds agree, so nothing drifts and drifting_units() names no unit
      await tx`update reserve.availability_calendar set temp_holds = 2 where unit_id = ${u} and date = ${f.isoDate(2)}`;
      const intents = [await f.intent(tx, u), await f.intent(tx, u)];
      await replica(tx);
      for (const i of intents) {
        await tx`insert into reserve.booking_locks (booking_intent_id, unit_id, lock_date, expires_at)
                 values (${i.id as string}, ${u}, ${f.isoDate(2)}, now() + interval '1 hour')`;
      }
      await replica(tx, false);
      await tx`select reserve.run_integrity_audit()`;
      expect(await tx`select * from reserve.drifting_units()`).toEqual([]);
      const h = await health(tx);
      expect(h.overbooking).toMatchObject({ status: "CRITICAL", observed_value: "1" });
      expect(h.availability_counter_drift.status).toBe("OK");
    });
  });

  it("stuck payments: WARNING (and webhook_delivery CRITICAL with no completed webhook), OK once failed", async () => {
    await rolledBack(sql, async (tx) => {
      const p = await payment(tx, {});
      await tx`update reserve.payments set status_changed_at = now() - interval '2 hours' where id = ${p}`;
      const h = await health(tx);
      expect(h.stuck_payments).toMatchObject({ status: "WARNING", observed_value: "1" });
      expect(h.webhook_delivery.status).toBe("CRITICAL");
      await applyStatus(tx, p as string, "failed");
      const after = await health(tx);
      expect(after.stuck_payments.status).toBe("OK");
      expect(after.webhook_delivery.status).toBe("OK");
    });
  });

  it("PIX pending over 30 minutes: WARNING, OK once it expired", async () => {
    await rolledBack(sql, async (tx) => {
      const p = await payment(tx, { method: "pix", created_at: new Date(Date.now() - 31 * 60_000) });
      expect(await status(tx, "pix_pending_over_30m")).toBe("WARNING");
      await applyStatus(tx, p as string, "expired");
      expect(await status(tx, "pix_pending_over_30m")).toBe("OK");
    });
  });

  it("success rate under 80% with at least 10 decided: WARNING, under 50%: CRITICAL; fewer than 10 decided is OK", async () => {
    await rolledBack(sql, async (tx) => {
      const ids: string[] = [];
      for (let n = 0; n < 7; n++) ids.push(await payment(tx, { status: "succeeded", succeeded_at: new Date() }));
      for (let n = 0; n < 2; n++) ids.push(await payment(tx, { status: "failed", failed_at: new Date() }));
      expect(await status(tx, "payment_success_rate_1h")).toBe("OK"); // 9 decided
      ids.push(await payment(tx, { status: "failed", failed_at: new Date() }));
      expect((await health(tx)).payment_success_rate_1h).toMatchObject({ status: "WARNING", observed_value: "70.00" });
      for (let n = 0; n < 5; n++) await payment(tx, { status: "failed", failed_at: new Date() });
      expect(await status(tx, "payment_success_rate_1h")).toBe("CRITICAL"); // 7 of 15
      for (let n = 0; n < 45; n++) await payment(tx, { status: "succeeded", succeeded_at: new Date() });
      expect(await status(tx, "payment_success_rate_1h")).toBe("OK"); // 52 of 60
    });
  });

  it("double charge: WARNING until the duplicate is refunded", async () => {
    await rolledBack(sql, async (tx) => {
      const d = await duplicateCharge(tx);
      expect((await health(tx)).double_charges).toMatchObject({ status: "WARNING", observed_value: "1" });
      await applyStatus(tx, d.duplicateId as string, "refunded");
      expect(await status(tx, "double_charges")).toBe("OK");
      expect(await tx`select * from reserve.find_ledger_imbalances(current_date - 7)`).toEqual([]);
    });
  });

  it("paid without reservation: CRITICAL until finalized", async () => {
    await rolledBack(sql, async (tx) => {
      const p = await payment(tx, { status: "succeeded", succeeded_at: new Date(Date.now() - 10 * 60_000) });
      expect((await health(tx)).paid_without_reservation).toMatchObject({ status: "CRITICAL", observed_value: "1" });
      const [fin] = await tx`select * from reserve.finalize_reservation(${p})`;
      expect(fin.success).toBe(true);
      expect(await status(tx, "paid_without_reservation")).toBe("OK");
    });
  });

  it("failed and dead webhooks: WARNING, CRITICAL at 10 failed; OK once completed", async () => {
    await rolledBack(sql, async (tx) => {
      const failed = await webhook(tx, "failed");
      const dead = await webhook(tx, "dead");
      const h = await health(tx);
      expect(h.webhooks_failed_1h).toMatchObject({ status: "WARNING", observed_value: "1" });
      expect(h.webhooks_dead).toMatchObject({ status: "WARNING", observed_value: "1" });
      const more: string[] = [];
      for (let n = 0; n < 9; n++) more.push(await webhook(tx, "failed"));
      expect(await status(tx, "webhooks_failed_1h")).toBe("CRITICAL");
      await tx`update reserve.processed_webhooks set status = 'completed', processed_at = now()
               where id = any(${[failed, dead, ...more]}::uuid[])`;
      const after = await health(tx);
      expect(after.webhooks_failed_1h.status).toBe("OK");
      expect(after.webhooks_dead.status).toBe("OK");
    });
  });

  it("poller heartbeat: WARNING after 15 minutes, CRITICAL after an hour, OK after a run", async () => {
    await rolledBack(sql, async (tx) => {
      await tx`insert into reserve.job_heartbeats (job, started_at, finished_at, ok)
               values ('poll_payment_status', now() - interval '21 minutes', now() - interval '20 minutes', true)`;
      expect(await status(tx, "poller_heartbeat")).toBe("WARNING");
      await tx`update reserve.job_heartbeats set finished_at = now() - interval '70 minutes' where job = 'poll_payment_status'`;
      expect(await status(tx, "poller_heartbeat")).toBe("CRITICAL");
      await tx`select reserve.record_job_heartbeat('poll_payment_status', now(), true)`;
      expect(await status(tx, "poller_heartbeat")).toBe("OK");
    });
  });

  it("retention never ran: OK while not yet due (saying when it is), WARNING 36 h after it was installed or with audit rows that old", async () => {
    await rolledBack(sql, async (tx) => {
      const fresh = (await health(tx)).retention_last_run;
      expect(fresh.status).toBe("OK");
      expect(fresh.details).toMatch(/^never ran; retention installed .+ \(0(\.\d)? h ago\): the daily run is due within 36 h of that$/);
      await tx`update reserve.retention_policies set created_at = now() - interval '37 hours'`;
      expect((await health(tx)).retention_last_run).toMatchObject({ status: "WARNING", observed_value: "37.0" });
      await tx`update reserve.retention_policies set created_at = now()`;
      await tx`insert into reserve.audit_logs (occurred_at, actor, action, table_name) values (now() - interval '3 days', 't', 'INSERT', 'payments')`;
      expect(await status(tx, "retention_last_run")).toBe("WARNING");
      await tx`select * from reserve.run_retention_cleanup()`;
      const ran = (await health(tx)).retention_last_run;
      expect(ran.status).toBe("OK");
      expect(ran.details).toMatch(/^last run /);
      await tx`update reserve.job_heartbeats set finished_at = now() - interval '37 hours' where job = 'run_retention_cleanup'`;
      expect(await status(tx, "retention_last_run")).toBe("WARNING");
      await tx`update reserve.retention_policies set is_enabled = false`;
      expect((await health(tx)).retention_last_run).toMatchObject({ status: "OK", details: "no retention policy is enabled" });
    });
  });

  it("audit_log_size reports MB, the unit of its threshold, and compares in bytes", async () => {
    await rolledBack(sql, async (tx) => {
      // audit_logs is partitioned by month: its size is the sum of its partitions'
      const [{ bytes }] = await tx`select sum(pg_total_relation_size(relid)) as bytes from pg_partition_tree('reserve.audit_logs')`;
      const h = (await health(tx)).audit_log_size;
      expect(h).toMatchObject({ status: "OK", threshold: "<= 5120 MB (setting audit_log_max_mb)" });
      expect(Number(h.observed_value)).toBeCloseTo(Number(bytes) / 1024 / 1024, 1);
      // grow it past 1 MB, the smallest limit the setting can say
      await tx`insert into reserve.audit_logs (occurred_at, actor, action, table_name, new_values)
               select now(), 't', 'INSERT', 'payments', jsonb_build_object('pad', repeat(md5(g::text), 20)) from generate_series(1, 3000) g`;
      await tx`update reserve.settings set value = '1' where key = 'audit_log_max_mb'`;
      const big = (await health(tx)).audit_log_size;
      expect(big).toMatchObject({ status: "WARNING", threshold: "<= 1 MB (setting audit_log_max_mb)" });
      expect(Number(big.observed_value)).toBeGreaterThan(1);
      expect(Number(big.observed_value)).toBeLessThan(100);
    });
  });

  it("ledger imbalance of any age: CRITICAL here and in the dashboard's ledger_imbalances; ledger_imbalances_7d counts the last 7 days", async () => {
    for (const [age, seen] of [["3 days", true], ["6 days", true], ["9 days", false], ["400 days", false]] as const) {
      await rolledBack(sql, async (tx) => {
        await tx`alter table reserve.ledger_entries disable trigger trg_ledger_balance`;
        const id = randomUUID();
        await leg(tx, id, "debit", 1000, true);
        await leg(tx, id, "credit", 900);
        await tx`alter table reserve.ledger_entries enable trigger trg_ledger_balance`;
        await tx`select set_config('reserve.ledger_writer', 'on', true)`;
        await replica(tx);
        await tx`update reserve.ledger_entries set created_at = now() - ${age}::interval where transaction_id = ${id}`;
        await tx`update reserve.ledger_transactions set posted_at = now() - ${age}::interval where id = ${id}`;
        await replica(tx, false);
        const [dash] = await tx`select ledger_imbalances_7d, ledger_imbalances from reserve.ops_dashboard_summary`;
        const h = (await health(tx)).ledger_balance;
        const [alert] = (await tx`select * from reserve.check_all_alerts()`).filter((a) => a.alert_name === "ledger_imbalance");
        expect({ age, week: dash.ledger_imbalances_7d, all: dash.ledger_imbalances, health: h.status, alert: [alert.severity, alert.state] })
          .toEqual({ age, week: seen ? "1" : "0", all: "1", health: "CRITICAL", alert: ["P1", "firing"] });
      });
    }
  });
});

describe("check_all_alerts", () => {
  const alerts = async (q: Q = sql): Promise<Record<string, Row>> =>
    Object.fromEntries((await q`select * from reserve.check_all_alerts()`).map((r) => [r.alert_name as string, r]));
  const events = async (name: string) =>
    (await sql`select state from reserve.alert_events where alert_name = ${name} order by id`).map((r) => r.state);

  it("returns every enabled rule, resolved on a clean database, recording no events", async () => {
    const a = await alerts();
    const [n] = await sql`select count(*)::int as n from reserve.alert_rules where is_enabled`;
    expect(Object.keys(a)).toHaveLength(n.n);
    for (const r of Object.values(a)) expect(r.state).toBe("resolved");
    expect((await sql`select count(*)::int as n from reserve.alert_events`)[0].n).toBe(0);
  });

  it("fires a for=0 rule at once (overbooking, ledger_imbalance) as P1 with the runbook section, and resolves it", async () => {
    const u = (await f.unit(sql, { nights: 5 })).unitId;
    await sql.begin((tx) => oversell(tx, u, f.isoDate(3)));
    const txId = randomUUID();
    await sql`alter table reserve.ledger_entries disable trigger trg_ledger_balance`;
    try {
      await sql.begin((tx) => leg(tx, txId, "debit", 500, true));
    } finally {
      await sql`alter table reserve.ledger_entries enable trigger trg_ledger_balance`;
    }
    const a = await alerts();
    expect(a.overbooking).toMatchObject({ state: "firing", severity: "P1", runbook_section: "P1: OVERBOOKING DETECTED",
                                          resolved_at: null });
    expect(a.overbooking.fired_at).not.toBeNull();
    expect(a.ledger_imbalance).toMatchObject({ state: "firing", severity: "P1", runbook_section: "P1: LEDGER IMBALANCE DETECTED" });
    expect(await events("overbooking")).toEqual(["firing"]);

    await sql.begin((tx) => undoOversell(tx, u));
    await sql.begin((tx) => leg(tx, txId, "credit", 500)); // the missing leg: the transaction balances again
    const b = await alerts();
    expect(b.overbooking.state).toBe("resolved");
    expect(b.overbooking.resolved_at).not.toBeNull();
    expect(b.ledger_imbalance.state).toBe("resolved");
    expect(await events("overbooking")).toEqual(["firing", "resolved"]);
    expect(await events("ledger_imbalance")).toEqual(["firing", "resolved"]);
  });

  it("keeps a for>0 rule pending until the condition has held for for_duration, resolves it, and starts a new episode pending", async () => {
    const name = "pix_pending_over_30m";
    const p = await payment(sql, { method: "pix", created_at: new Date(Date.now() - 40 * 60_000) });
    const first = (await alerts())[name];
    expect(first).toMatchObject({ state: "pending", severity: "P2", fired_at: null, runbook_section: "P2: PIX PAID BUT NOT CONFIRMED" });
    const second = (await alerts())[name];
    expect(second.state).toBe("pending");
    expect(second.fingerprint).toBe(first.fingerprint);
    expect((second.first_seen as Date).getTime()).toBe((first.first_seen as Date).getTime());
    expect(await events(name)).toEqual(["pending"]);

    // simulate time: the condition started 11 minutes ago
    await sql`update reserve.alert_states set active_since = now() - interval '11 minutes' where alert_name = ${name}`;
    const firing = (await alerts())[name];
    expect(firing.state).toBe("firing");
    expect(firing.fired_at).not.toBeNull();
    expect(firing.fingerprint).toBe(first.fingerprint);
    expect((await alerts())[name].state).toBe("firing");
    expect(await events(name)).toEqual(["pending", "firing"]);

    await applyStatus(sql, p as string, "expired");
    const resolved = (await alerts())[name];
    expect(resolved.state).toBe("resolved");
    expect(resolved.resolved_at).not.toBeNull();
    const [st] = await sql`select * from reserve.alert_states where alert_name = ${name}`;
    expect(st).toMatchObject({ state: "resolved" });
    expect(st.resolved_at).not.toBeNull();
    expect((await alerts())[name].state).toBe("resolved");
    expect(await events(name)).toEqual(["pending", "firing", "resolved"]);

    const p2 = await payment(sql, { method: "pix", created_at: new Date(Date.now() - 40 * 60_000) });
    const again = (await alerts())[name];
    expect(again).toMatchObject({ state: "pending", fired_at: null, resolved_at: null, fingerprint: first.fingerprint });
    expect(await events(name)).toEqual(["pending", "firing", "resolved", "pending"]);
    await applyStatus(sql, p2 as string, "expired");
    await alerts();
  });

  it("two concurrent calls record a transition once", async () => {
    const dead = await webhook(sql, "dead");
    const a = postgres(db.url, { max: 1, onnotice: () => {} });
    const b = postgres(db.url, { max: 1, onnotice: () => {} });
    try {
      const [ra, rb] = await Promise.all([a`select * from reserve.check_all_alerts()`, b`select * from reserve.check_all_alerts()`]);
      expect(ra.find((r) => r.alert_name === "webhooks_dead")!.state).toBe("firing");
      expect(rb.find((r) => r.alert_name === "webhooks_dead")!.state).toBe("firing");
    } finally {
      await a.end({ timeout: 5 });
      await b.end({ timeout: 5 });
    }
    expect(await events("webhooks_dead")).toEqual(["firing"]);
    await sql`update reserve.processed_webhooks set status = 'completed', processed_at = now() where id = ${dead}`;
    await alerts();
    expect(await events("webhooks_dead")).toEqual(["firing", "resolved"]);
  });
});
