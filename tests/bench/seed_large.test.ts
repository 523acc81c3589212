// scripts/seed_large.ts at a tiny SCALE: the invariants hold on what it writes with the triggers off
// (counters, overbooking, overlaps, ledger), sizes follow SCALE, every status of the mix is there, two
// runs give the same data, and the real functions keep working on it.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { planFor, seedLarge, verifyLarge } from "../../scripts/seed_large.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { applyStatus } from "../helpers/money.ts";

const SCALE = 0.002;
const NOW = "2026-03-15T12:34:00Z";
let db: TestDatabase;
let twin: TestDatabase;
const plan = planFor({ scale: SCALE, now: NOW });

beforeAll(async () => {
  [db, twin] = await Promise.all([createTestDatabase(), createTestDatabase()]);
  await Promise.all([
    seedLarge(db.url, { scale: SCALE, now: NOW, log: null }),
    seedLarge(twin.url, { scale: SCALE, now: NOW, log: null }),
  ]);
});
afterAll(async () => {
  await db?.drop();
  await twin?.drop();
});

describe("seed:large", () => {
  it("keeps every invariant: counters, overbooking, overlaps, ledger, receipts, polls", async () => {
    const report = await verifyLarge(db.url, "2024-01-01");
    expect(report.checks.filter((c) => !c.ok)).toEqual([]);
    expect(report.checks.map((c) => c.name)).toEqual(expect.arrayContaining([
      "availability_counter_drift rows", "overbooking_check rows", "find_ledger_imbalances over the year"]));
  });

  it("sizes follow SCALE", async () => {
    const { counts, auditDue } = await verifyLarge(db.url);
    expect(counts.unit_map).toBe(plan.units);
    expect(counts.availability_calendar).toBe(plan.units * 365);
    expect(counts.processed_webhooks).toBe(plan.webhooks);
    // each delivery has its dedupe key, and every row is in its month's partition, none in the default ones
    expect(counts.processed_webhook_keys).toBe(plan.webhooks);
    const [defaults] = await db.sql`select (select count(*)::int from reserve.audit_logs_default) as audit,
                                           (select count(*)::int from reserve.processed_webhooks_default) as webhooks`;
    expect(defaults).toEqual({ audit: 0, webhooks: 0 });
    expect(counts.audit_logs).toBeGreaterThanOrEqual(plan.auditRows);
    expect(counts.payments).toBeGreaterThanOrEqual(plan.payments);
    expect(counts.payments).toBeLessThan(plan.payments * 1.05);
    expect(counts.booking_intents).toBe(counts.payments - plan.doubleCharges);
    expect(counts.reservations / counts.payments).toBeGreaterThan(0.7);
    expect(counts.reservations / counts.payments).toBeLessThan(0.88);
    expect(counts.ledger_entries / counts.payments).toBeGreaterThan(4);
    expect(counts.ledger_entries / counts.payments).toBeLessThan(6);
    expect(counts.job_heartbeats).toBe(288);
    // about a third of the audit trail is past its 365 days (anchored in the past, so a bit more here)
    expect(auditDue / plan.auditRows).toBeGreaterThan(0.3);
  });

  it("has the whole status mix, the error codes and the in-flight tail", async () => {
    const r = await verifyLarge(db.url);
    const total = Object.values(r.paymentStatus).reduce((a, b) => a + b, 0);
    for (const s of ["succeeded", "failed", "expired", "cancelled", "refunded", "partially_refunded", "disputed", "pending", "processing"]) {
      expect(r.paymentStatus[s], s).toBeGreaterThan(0);
    }
    expect(r.paymentStatus.succeeded / total).toBeGreaterThan(0.7);
    expect(r.paymentStatus.failed / total).toBeGreaterThan(0.1);
    expect(r.paymentStatus.failed / total).toBeLessThan(0.2);
    for (const code of ["card_declined", "expired_card", "insufficient_funds", "processing_error"]) {
      expect(r.errorCodes[code], code).toBeGreaterThan(0);
    }
    expect(Object.keys(r.errorCodes).some((c) => c.startsWith("cc_rejected_"))).toBe(true);
    expect(r.inFlight.doubleCharges).toBe(plan.doubleCharges);
    for (const s of ["completed", "ignored", "failed", "dead"]) expect(r.webhookStatus[s], s).toBeGreaterThan(0);
    for (const s of ["checked_out", "checked_in", "confirmed", "host_commit_pending", "cancelled"]) {
      expect(r.reservationStatus[s], s).toBeGreaterThan(0);
    }
  });

  it("stuck payments and old PIX charges are old against the anchor", async () => {
    const [row] = await db.sql`
      select count(*) filter (where status = 'processing' and status_changed_at < ${NOW}::timestamptz - interval '1 hour')::int as stuck,
             count(*) filter (where method = 'pix' and status = 'pending' and created_at < ${NOW}::timestamptz - interval '30 minutes')::int as pix_old,
             count(*) filter (where duplicate_of is not null and refund_reason = 'duplicate_charge')::int as dups
      from reserve.payments`;
    expect(row.stuck).toBeGreaterThanOrEqual(2);
    expect(row.pix_old).toBeGreaterThanOrEqual(2);
    expect(row.dups).toBe(plan.doubleCharges);
  });

  it("gives the same data on a second run", async () => {
    const digest = (sql: TestDatabase["sql"]) => sql`
      select (select md5(string_agg(id::text || status || amount || created_at, ',' order by id)) from reserve.payments) as payments,
             (select md5(string_agg(unit_id::text || date || bookings_count || temp_holds || is_blocked, ',' order by unit_id, date))
                from reserve.availability_calendar) as calendar,
             (select md5(string_agg(id::text || account || direction || amount, ',' order by id)) from reserve.ledger_entries) as ledger,
             (select md5(string_agg(confirmation_code || unit_id || stay, ',' order by confirmation_code)) from reserve.reservations) as stays,
             (select md5(string_agg(id || occurred_at::text || row_id, ',' order by id)) from reserve.audit_logs) as audit`;
    expect((await digest(db.sql))[0]).toEqual((await digest(twin.sql))[0]);
  });

  it("the real functions keep working on it: a payment in flight succeeds and is finalized, a stay is cancelled with a refund", async () => {
    const [p] = await db.sql`
      select id from reserve.payments where status = 'processing' and method = 'card' order by id limit 1`;
    const applied = await applyStatus(db.sql, p.id as string, "succeeded");
    expect(applied).toMatchObject({ status: "succeeded", finalize_outcome: "created" });
    expect(applied.reservation_id).not.toBeNull();
    const [r] = await db.sql`
      select id from reserve.reservations where status = 'confirmed' order by id limit 1`;
    await db.sql`select reserve.cancel_reservation(${r.id}, 'guest cancelled in the test', 10000)`;
    const report = await verifyLarge(db.url, "2024-01-01");
    expect(report.checks.filter((c) => !c.ok)).toEqual([]);
  });
});
