// The detection views the runbook queries first: stuck_payments, webhook_status,
// webhook_failure_analysis, failed_payments_analysis, retention_statistics, ops_dashboard_summary.
// Each case crafts its rows in a transaction that is rolled back, and the runbook's own queries run as written.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, rolledBack, type Sql, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";
import { attachGateway, processEvent } from "../helpers/money.ts";
import { replica, type Q } from "./ops_helpers.ts";

let db: TestDatabase;
let sql: Sql;
let unitId: string;
beforeAll(async () => {
  db = await createTestDatabase();
  sql = db.sql;
  unitId = (await f.unit(sql, { nights: 30 })).unitId;
});
afterAll(async () => await db?.drop());

/** A payment of its own intent, in `status`, whose status changed `minutesAgo` minutes ago. */
async function paymentAged(q: Q, o: { method?: "card" | "pix"; status?: string; minutesAgo?: number; row?: Record<string, unknown> } = {}) {
  const i = await f.intent(q, unitId);
  const pix = o.method === "pix";
  const p = await f.payment(q, i.id as string, {
    method: o.method ?? "card", provider: pix ? "mercadopago" : "stripe", status: o.status ?? "pending",
    ...(pix ? { expires_at: new Date(Date.now() + 30 * 60_000) } : {}),
    ...(o.row ?? {}),
  });
  if (o.minutesAgo !== undefined) {
    await q`update reserve.payments set status_changed_at = now() - make_interval(mins => ${o.minutesAgo}) where id = ${p.id as string}`;
  }
  return p.id as string;
}

async function webhook(q: Q, provider: string, status: string, extra: Record<string, unknown> = {}) {
  const w = await f.insert(q, "processed_webhooks", {
    provider, event_id: `evt_${crypto.randomUUID()}`, event_type: "payment_intent.succeeded", status, ...extra,
  });
  return w.id as string;
}

describe("stuck_payments", () => {
  it("lists pending/processing payments past their method's threshold by status_changed_at, with the threshold", async () => {
    await rolledBack(sql, async (tx) => {
      const cardStuck = await paymentAged(tx, { minutesAgo: 61 });
      const cardProcessingStuck = await paymentAged(tx, { status: "processing", minutesAgo: 120 });
      const cardFresh = await paymentAged(tx, { minutesAgo: 59 });
      const pixStuck = await paymentAged(tx, { method: "pix", minutesAgo: 46 });
      const pixFresh = await paymentAged(tx, { method: "pix", minutesAgo: 44 });
      const failedOld = await paymentAged(tx, { status: "failed", minutesAgo: 500, row: { failed_at: new Date() } });
      // created long ago but its status changed just now: not stuck
      const recentlyMoved = await paymentAged(tx, { row: { created_at: new Date(Date.now() - 5 * 3600_000) } });
      const rows = await tx`select * from reserve.stuck_payments`;
      const ids = rows.map((r) => r.payment_id);
      expect(ids.sort()).toEqual([cardStuck, cardProcessingStuck, pixStuck].sort());
      for (const id of [cardFresh, pixFresh, failedOld, recentlyMoved]) expect(ids).not.toContain(id);
      expect(rows.find((r) => r.payment_id === cardStuck)).toMatchObject({ method: "card", threshold_minutes: 60, age_minutes: 61 });
      expect(rows.find((r) => r.payment_id === pixStuck)).toMatchObject({ method: "pix", threshold_minutes: 45, age_minutes: 46 });

      // the thresholds are settings
      await tx`update reserve.settings set value = '30' where key = 'stuck_minutes_pix'`;
      expect((await tx`select payment_id from reserve.stuck_payments where method = 'pix'`).map((r) => r.payment_id).sort())
        .toEqual([pixStuck, pixFresh].sort());

      const [c] = await tx.unsafe(`SELECT COUNT(*) as stuck_count
FROM reserve.stuck_payments;`);
      expect(Number(c.stuck_count)).toBe(4);
    });
  });

  it("is empty when all is well (the runbook's verification: Expected: 0)", async () => {
    const [c] = await sql.unsafe(`SELECT COUNT(*) FROM reserve.stuck_payments;`);
    expect(Number(c.count)).toBe(0);
  });
});

describe("webhook_status", () => {
  it("counts per provider, including providers with no rows", async () => {
    await rolledBack(sql, async (tx) => {
      await webhook(tx, "stripe", "completed", { processed_at: new Date() });
      await webhook(tx, "stripe", "completed", { processed_at: new Date() });
      await webhook(tx, "stripe", "failed");
      await webhook(tx, "stripe", "dead");
      // an old failure still awaits retry; an old completed one is outside the hour
      await webhook(tx, "stripe", "failed", { received_at: new Date(Date.now() - 3 * 3600_000) });
      await webhook(tx, "stripe", "completed", { received_at: new Date(Date.now() - 3 * 3600_000) });
      await webhook(tx, "mercadopago", "ignored");
      await webhook(tx, "mercadopago", "processing", { last_attempt_at: new Date(Date.now() - 10 * 60_000) });
      const rows = await tx`select * from reserve.webhook_status order by provider`;
      expect(rows.map((r) => r.provider)).toEqual(["mercadopago", "openpix", "stripe"]);
      const by = Object.fromEntries(rows.map((r) => [r.provider, r]));
      expect(by.stripe).toMatchObject({ received_1h: "4", completed_1h: "2", failed_1h: "1", ignored_1h: "0",
                                        failed_awaiting_retry: "2", dead: "1", stalled_processing: "0" });
      expect(Number(by.stripe.failure_rate_1h)).toBe(50);
      expect(by.stripe.last_completed_at).not.toBeNull();
      expect(by.mercadopago).toMatchObject({ received_1h: "2", ignored_1h: "1", stalled_processing: "1", dead: "0" });
      expect(by.openpix).toMatchObject({ received_1h: "0", completed_1h: "0", failed_awaiting_retry: "0", dead: "0",
                                         last_received_at: null, failure_rate_1h: null });
    });
  });
});

describe("webhook_failure_analysis", () => {
  it("groups failures whose messages differ only by ids and numbers, with counts and a replayable count", async () => {
    await rolledBack(sql, async (tx) => {
      const msg = (n: number) =>
        `ZZ001: payment ${crypto.randomUUID()} (pi_${crypto.randomUUID().replace(/-/g, "").slice(0, 16)}) failed on step ${n}`;
      await webhook(tx, "stripe", "failed", { error_message: msg(1), apply_args: tx.json({ payment_id: crypto.randomUUID(), status: "succeeded" }) });
      await webhook(tx, "stripe", "failed", { error_message: msg(22), attempts: 3 });
      await webhook(tx, "stripe", "failed", { error_message: "OpenPIX API answered 502" });
      await webhook(tx, "stripe", "dead", { error_message: msg(7) });
      await webhook(tx, "stripe", "completed", { error_message: msg(8) });
      const rows = await tx`select * from reserve.webhook_failure_analysis order by status, count desc`;
      expect(rows).toHaveLength(3);
      const grouped = rows.find((r) => r.status === "failed" && Number(r.count) === 2)!;
      expect(grouped).toMatchObject({ provider: "stripe", event_type: "payment_intent.succeeded", attempts: "4", replayable: "1" });
      expect(grouped.error_class).not.toMatch(/[0-9]/);
      expect(rows.find((r) => r.status === "dead")).toMatchObject({ count: "1", error_class: grouped.error_class });
      expect(rows.find((r) => r.status === "failed" && Number(r.count) === 1)!.error_class).toBe("OpenPIX API answered #");

      const recent = await tx.unsafe(`SELECT * FROM reserve.webhook_failure_analysis
ORDER BY last_seen DESC
LIMIT 10;`);
      expect(recent).toHaveLength(3);
    });
  });
});

describe("failed_payments_analysis", () => {
  it("groups the last 24 hours' failures by code, and the shares sum to 100", async () => {
    await rolledBack(sql, async (tx) => {
      const failed = (code: string | null, hoursAgo = 0) => paymentAged(tx, {
        status: "failed", row: { error_code: code, error_message: code ? `declined: ${code}` : null,
                                 failed_at: new Date(Date.now() - hoursAgo * 3600_000) },
      });
      for (let i = 0; i < 3; i++) await failed("card_declined");
      await failed("insufficient_funds");
      await failed(null);
      await failed(null);
      await failed("card_declined", 30); // outside the 24 hours
      const rows = await tx.unsafe(`SELECT * FROM reserve.failed_payments_analysis
ORDER BY count DESC;`);
      expect(rows.map((r) => [r.error_code, Number(r.count), Number(r.share)])).toEqual([
        ["card_declined", 3, 50], ["unknown", 2, 33.33], ["insufficient_funds", 1, 16.67],
      ]);
      expect(rows.reduce((s, r) => s + Number(r.share), 0)).toBeCloseTo(100, 5);
      expect(rows[0]).toMatchObject({ providers: ["stripe"], methods: ["card"], sample_message: "declined: card_declined" });
    });
  });
});

describe("retention_statistics", () => {
  it("shows every policy with due_rows counted past its retention", async () => {
    await rolledBack(sql, async (tx) => {
      await tx`insert into reserve.audit_logs (occurred_at, actor, action, table_name, row_id)
               select now() - interval '400 days', 'test', 'INSERT', 'payments', g::text from generate_series(1, 3) g`;
      await tx`insert into reserve.audit_logs (occurred_at, actor, action, table_name, row_id)
               values (now() - interval '300 days', 'test', 'INSERT', 'payments', 'young')`;
      await webhook(tx, "stripe", "completed", { received_at: new Date(Date.now() - 200 * 86400_000) });
      const rows = await tx.unsafe(`SELECT * FROM reserve.retention_statistics;`);
      const by = Object.fromEntries(rows.map((r) => [r.table_name, r]));
      expect(Object.keys(by).sort()).toEqual(["alert_events", "audit_logs", "booking_locks", "integrity_audits", "job_heartbeats",
        "notification_outbox", "processed_webhook_keys", "processed_webhooks", "rate_limit_counters", "refund_requests"]);
      expect(by.audit_logs).toMatchObject({ due_rows: "3", retention_days: 365, retention_type: "archive" });
      expect(by.processed_webhooks.due_rows).toBe("1");
      expect(by.job_heartbeats.due_rows).toBe("0");
      expect((by.audit_logs.oldest_row_at as Date).getTime()).toBeLessThan(Date.now() - 399 * 86400_000);
    });
  });
});

describe("ops_dashboard_summary", () => {
  it("is one row whose numbers agree with the data", async () => {
    await rolledBack(sql, async (tx) => {
      await paymentAged(tx, { minutesAgo: 90 });
      await paymentAged(tx, { method: "pix", row: { created_at: new Date(Date.now() - 40 * 60_000) } });
      await paymentAged(tx, { status: "failed", row: { failed_at: new Date() } });
      await webhook(tx, "stripe", "failed");
      await webhook(tx, "openpix", "dead");
      const rows = await tx`select * from reserve.ops_dashboard_summary`;
      expect(rows).toHaveLength(1);
      expect(rows[0]).toMatchObject({
        stuck_payments: "1", pix_pending_over_30m: "1", in_flight: "2", failed_1h: "1", succeeded_1h: "0",
        webhooks_failed_1h: "1", webhooks_dead: "1", overbooked_nights: "0", ledger_imbalances_7d: "0",
        unrefunded_duplicate_charges: "0",
      });
      expect(Number(rows[0].success_rate_1h)).toBe(0);
    });
    expect(await sql`select * from reserve.ops_dashboard_summary`).toHaveLength(1);
  });
});

describe("overbooking written by moving a stay's dates with the guards off", () => {
  it("is seen although the unit's count of nights is unchanged", async () => {
    const u = await f.unit(sql, { nights: 12, allotment: 2 });
    const stay = async (from: number, to: number) => {
      const [c] = await sql`select * from reserve.begin_checkout(${`g-${crypto.randomUUID()}`}, 'card', 'stripe', ${u.unitId},
                              ${f.isoDate(from)}, ${f.isoDate(to)}, 2)`;
      const pi = `pi_${crypto.randomUUID()}`;
      await attachGateway(sql, c.payment_id as string, pi);
      const w = await processEvent(sql, { event_id: `evt_${pi}`, event_at: new Date(), payload: {} },
                                   { status: "succeeded", payment_reference: c.payment_id as string, gateway_payment_id: pi });
      return w.reservation_id as string;
    };
    const r1 = await stay(1, 3);
    await stay(5, 7);
    await stay(5, 7);
    await sql.begin(async (tx) => {
      await replica(tx);
      await tx`update reserve.reservations set check_in = ${f.isoDate(5)}, check_out = ${f.isoDate(7)} where id = ${r1}`;
    });
    const oversold = await sql`select date from reserve.overbooking_check where unit_id = ${u.unitId}`;
    expect(oversold.map((o) => o.date.toISOString().slice(0, 10))).toEqual([f.isoDate(5), f.isoDate(6)]);
    expect((await sql`select * from reserve.availability_counter_drift where unit_id = ${u.unitId}`).length).toBeGreaterThan(0);
  });
});
