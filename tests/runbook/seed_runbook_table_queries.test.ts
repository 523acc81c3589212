// The seed runbook's read-only SQL about our tables, as the on-call engineer pastes it (placeholders
// filled with real ids). Its SQL that names the booking core's functions and views (finalize_reservation,
// overbooking_check, find_ledger_imbalances, ...) is in seed_runbook_core_queries.test.ts.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, rolledBack, sqlState, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";

let db: TestDatabase;
let ids: { unitId: string; intentId: string; paymentId: string; txId: string; cityCode: string };

beforeAll(async () => {
  db = await createTestDatabase();
  const { unitId, cityCode } = await f.unit(db.sql, { nights: 10 });
  const i = await f.intent(db.sql, unitId);
  const p = await f.payment(db.sql, i.id as string, {
    status: "succeeded", succeeded_at: new Date(), gateway_payment_id: "pix-e2e-123", provider: "mercadopago", method: "pix",
    expires_at: new Date(Date.now() + 30 * 60_000),
  });
  await f.insert(db.sql, "booking_locks", {
    booking_intent_id: i.id as string, unit_id: unitId, lock_date: f.isoDate(2), expires_at: new Date(Date.now() + 60_000),
  });
  await f.insert(db.sql, "processed_webhooks", {
    provider: "stripe", event_id: "evt_failed", event_type: "payment_intent.succeeded", status: "failed", error_message: "boom",
  });
  const [t] = await db.sql`select * from reserve.post_ledger_transaction('payment', 'runbook', ${db.sql.json([
    { account: "receivable_mercadopago", direction: "debit", amount: 100000 },
    { account: "host_payable", direction: "credit", amount: 100000, entry_type: "host_share" },
  ])}, null, null, null, ${cityCode})`;
  ids = { unitId, intentId: i.id as string, paymentId: p.id as string, txId: t.id as string, cityCode };
});
afterAll(async () => await db?.drop());

const q = (text: string) => db.sql.unsafe(text);

describe("P1 webhook down", () => {
  it("checks webhook processing status", async () => {
    const rows = await q(`
      SELECT provider, status, COUNT(*)
      FROM reserve.processed_webhooks
      WHERE received_at > NOW() - INTERVAL '1 hour'
      GROUP BY provider, status;`);
    expect(rows).toEqual([{ provider: "stripe", status: "failed", count: "1" }]);
  });

  it("checks the connection pool and long-running queries", async () => {
    await q(`SELECT count(*) as active_connections FROM pg_stat_activity WHERE state = 'active';`);
    await q(`SELECT pid, query_start, query FROM pg_stat_activity
             WHERE state = 'active' AND query_start < NOW() - INTERVAL '5 minutes';`);
  });
});

describe("P1 payment succeeded but no reservation", () => {
  it("finds the affected payment", async () => {
    const rows = await q(`
      SELECT p.id as payment_id, p.booking_intent_id, p.succeeded_at, r.id as reservation_id, r.confirmation_code
      FROM reserve.payments p
      LEFT JOIN reserve.reservations r ON p.booking_intent_id = r.booking_intent_id
      WHERE p.status = 'succeeded'
      AND r.id IS NULL
      AND p.succeeded_at > NOW() - INTERVAL '24 hours';`);
    expect(rows.map((r) => r.payment_id)).toEqual([ids.paymentId]);
  });

  it("checks failed webhook attempts", async () => {
    const rows = await q(`
      SELECT * FROM reserve.processed_webhooks
      WHERE event_type = 'payment_intent.succeeded'
      AND status = 'failed'
      ORDER BY received_at DESC
      LIMIT 10;`);
    expect(rows[0].error_message).toBe("boom");
  });

  it("runs the verification queries", async () => {
    await q(`SELECT * FROM reserve.reservations WHERE booking_intent_id = '${ids.intentId}';`);
    const [intent] = await q(`SELECT status FROM reserve.booking_intents WHERE id = '${ids.intentId}';`);
    expect(intent.status).toBe("pending");
  });
});

describe("P1 ledger imbalance", () => {
  it("reads a transaction's entries and computes its imbalance", async () => {
    const entries = await q(`SELECT * FROM reserve.ledger_entries WHERE transaction_id = '${ids.txId}' ORDER BY direction;`);
    expect(entries.map((e) => e.direction)).toEqual(["credit", "debit"]);
    const imbalance = await q(`
      WITH tx_entries AS (
        SELECT
          transaction_id,
          SUM(CASE WHEN direction = 'debit' THEN amount ELSE 0 END) as debits,
          SUM(CASE WHEN direction = 'credit' THEN amount ELSE 0 END) as credits
        FROM reserve.ledger_entries
        WHERE transaction_id = '${ids.txId}'
        GROUP BY transaction_id
      )
      SELECT
        transaction_id,
        debits - credits as imbalance_amount,
        CASE WHEN debits > credits THEN 'credit' ELSE 'debit' END as needed_direction
      FROM tx_entries
      WHERE debits != credits;`);
    expect(imbalance).toEqual([]);
  });

  it("checks the trigger state query parses", async () => {
    await q(`SELECT tgenabled FROM pg_trigger WHERE tgname = 'trg_ledger_balance';`);
  });
});

describe("P1 overbooking", () => {
  it("finds conflicting reservations", async () => {
    await q(`
      SELECT r1.id as res1_id, r2.id as res2_id, r1.unit_id, r1.check_in, r1.check_out,
        r1.status as res1_status, r2.status as res2_status
      FROM reserve.reservations r1
      JOIN reserve.reservations r2 ON r1.unit_id = r2.unit_id
        AND r1.id != r2.id
        AND (r1.check_in, r1.check_out) OVERLAPS (r2.check_in, r2.check_out)
      WHERE r1.status IN ('confirmed', 'checked_in', 'host_commit_pending')
      AND r2.status IN ('confirmed', 'checked_in', 'host_commit_pending')
      AND r1.check_in > CURRENT_DATE;`);
  });

  it("finds an alternative unit", async () => {
    const rows = await q(`
      SELECT um.id, um.name
      FROM reserve.unit_map um
      JOIN reserve.properties_map pm ON um.property_id = pm.id
      WHERE pm.city_code = '${ids.cityCode}'
      AND um.max_occupancy >= 2
      AND NOT EXISTS (
        SELECT 1 FROM reserve.reservations r
        WHERE r.unit_id = um.id
        AND r.status IN ('confirmed', 'checked_in')
        AND (r.check_in, r.check_out) OVERLAPS ('${f.isoDate(1)}'::date, '${f.isoDate(3)}'::date)
      );`);
    expect(rows.map((r) => r.id)).toContain(ids.unitId);
  });

  it("inspects the locks of a unit", async () => {
    const rows = await q(`
      SELECT * FROM reserve.booking_locks
      WHERE unit_id = '${ids.unitId}'
      AND lock_date BETWEEN '${f.isoDate(1)}' AND '${f.isoDate(3)}'
      ORDER BY created_at;`);
    expect(rows).toHaveLength(1);
  });
});

describe("P2 PIX paid but not confirmed, double charge, failure rate", () => {
  it("finds the PIX payment and its webhooks", async () => {
    const rows = await q(`
      SELECT * FROM reserve.payments
      WHERE gateway_payment_id = 'pix-e2e-123'
      OR booking_intent_id = '${ids.intentId}';`);
    expect(rows.map((r) => r.id)).toEqual([ids.paymentId]);
    await q(`
      SELECT * FROM reserve.processed_webhooks
      WHERE provider IN ('mercadopago', 'openpix')
      AND received_at > NOW() - INTERVAL '24 hours'
      ORDER BY received_at DESC;`);
  });

  it("finds duplicate charges", async () => {
    await q(`
      SELECT booking_intent_id, COUNT(*) as payment_count, SUM(amount) as total_charged, array_agg(id) as payment_ids
      FROM reserve.payments
      WHERE status = 'succeeded'
      AND created_at > NOW() - INTERVAL '7 days'
      GROUP BY booking_intent_id
      HAVING COUNT(*) > 1;`);
  });

  it("computes the hourly success rate", async () => {
    const rows = await q(`
      SELECT
        DATE_TRUNC('hour', created_at) as hour,
        COUNT(*) FILTER (WHERE status = 'succeeded') as succeeded,
        COUNT(*) FILTER (WHERE status = 'failed') as failed,
        ROUND(
          COUNT(*) FILTER (WHERE status = 'succeeded')::numeric /
          COUNT(*) * 100, 2
        ) as success_rate
      FROM reserve.payments
      WHERE created_at > NOW() - INTERVAL '24 hours'
      GROUP BY DATE_TRUNC('hour', created_at)
      ORDER BY hour DESC;`);
    expect(rows[0].success_rate).toBe("100.00");
  });
});

describe("P3 slow queries and audit log growth", () => {
  it("reads pg_stat_statements as written (extensions on the search path)", async () => {
    await q(`
      SELECT query, calls, mean_exec_time, total_exec_time
      FROM pg_stat_statements
      WHERE mean_exec_time > 1000
      ORDER BY mean_exec_time DESC
      LIMIT 10;`);
  });

  it("checks table sizes and lock contention", async () => {
    const sizes = await q(`
      SELECT schemaname, tablename,
             pg_size_pretty(pg_total_relation_size(schemaname||'.'||tablename)) as size
      FROM pg_tables
      WHERE schemaname = 'reserve'
      ORDER BY pg_total_relation_size(schemaname||'.'||tablename) DESC;`);
    expect(sizes.length).toBeGreaterThanOrEqual(12);
    await q(`
      SELECT blocked_locks.pid AS blocked_pid, blocking_locks.pid AS blocking_pid, blocked_activity.query AS blocked_query
      FROM pg_catalog.pg_locks blocked_locks
      JOIN pg_catalog.pg_stat_activity blocked_activity ON blocked_activity.pid = blocked_locks.pid
      JOIN pg_catalog.pg_locks blocking_locks ON blocking_locks.locktype = blocked_locks.locktype
      JOIN pg_catalog.pg_stat_activity blocking_activity ON blocking_activity.pid = blocking_locks.pid
      WHERE NOT blocked_locks.granted;`);
  });

  it("measures audit_logs and reads the archive and the policy", async () => {
    await q(`SELECT pg_size_pretty(pg_total_relation_size('reserve.audit_logs'));`);
    const [{ count }] = await q(`SELECT COUNT(*) FROM reserve.audit_logs;`);
    expect(Number(count)).toBeGreaterThan(0);
    await q(`SELECT * FROM reserve.audit_logs_archive LIMIT 5;`);
    const [policy] = await q(`SELECT * FROM reserve.retention_policies WHERE table_name = 'audit_logs';`);
    expect(policy).toMatchObject({ retention_days: 365, retention_type: "archive" });
  });
});

describe("the runbook's manual writes fit the schema (run here in a rolled-back transaction)", () => {
  // each write starts from the state the runbook wrote it for
  const payIn = async (tx: Parameters<Parameters<typeof rolledBack>[1]>[0], status: string, over: Record<string, unknown> = {}) => {
    const { unitId } = await f.unit(tx, { nights: 5 });
    const i = await f.intent(tx, unitId);
    const p = await f.payment(tx, i.id as string, { status, ...(status === "succeeded" ? { succeeded_at: new Date() } : {}), ...over });
    return { unitId, intent: i, paymentId: p.id as string };
  };

  it("accepts the synthetic webhook record and the payment recovery updates as written", async () => {
    await rolledBack(db.sql, async (tx) => {
      await tx.unsafe(`
        INSERT INTO reserve.processed_webhooks (provider, event_id, event_type, status)
        VALUES ('mercadopago', 'manual_' || gen_random_uuid(), 'payment.approved', 'processing');`);
      const down = await payIn(tx, "processing");
      await tx.unsafe(`
        UPDATE reserve.payments
        SET status = 'failed', metadata = metadata || '{"manual_recovery": "webhook_down"}'::jsonb
        WHERE id = '${down.paymentId}';`);
      const stuck = await payIn(tx, "processing");
      await tx.unsafe(`
        UPDATE reserve.payments
        SET status = 'succeeded', succeeded_at = COALESCE(succeeded_at, NOW()),
            metadata = metadata || '{"manual_recovery": "processing_stuck"}'::jsonb
        WHERE id = '${stuck.paymentId}';`);
      const pix = await payIn(tx, "pending", { provider: "mercadopago", method: "pix", expires_at: new Date(Date.now() + 60_000) });
      await tx.unsafe(`
        UPDATE reserve.payments
        SET status = 'succeeded',
            succeeded_at = NOW(),
            metadata = metadata || '{"manual_confirmation": true}'::jsonb
        WHERE id = '${pix.paymentId}';`);
      const statuses = await tx`select id, status, failed_at is not null as failed_stamped from reserve.payments
                                where id in ${tx([down.paymentId, stuck.paymentId, pix.paymentId])}`;
      expect(Object.fromEntries(statuses.map((r) => [r.id, [r.status, r.failed_stamped]]))).toEqual({
        [down.paymentId]: ["failed", true], [stuck.paymentId]: ["succeeded", false], [pix.paymentId]: ["succeeded", false],
      });
    });
  });

  it("accepts the manual reservation INSERT, which converts the intent and books the nights", async () => {
    await rolledBack(db.sql, async (tx) => {
      const paid = await payIn(tx, "succeeded");
      await tx`select reserve.acquire_booking_lock(${paid.intent.id as string})`;
      // the P1 "payment succeeded but no reservation" fallback, word for word
      const [manual] = await tx.unsafe(`
        INSERT INTO reserve.reservations (
          booking_intent_id,
          confirmation_code,
          city_code,
          property_id,
          unit_id,
          -- ... other fields from booking_intent
          status,
          payment_status
        )
        SELECT
          bi.id,
          'RES-' || TO_CHAR(NOW(), 'YYYY') || '-' || UPPER(SUBSTRING(MD5(RANDOM()::text), 1, 6)),
          bi.city_code,
          bi.property_id,
          bi.unit_id,
          'host_commit_pending',
          'paid'
        FROM reserve.booking_intents bi
        WHERE bi.id = '${paid.intent.id}'
        RETURNING *;`);
      expect(manual).toMatchObject({ payment_id: paid.paymentId, guests: 2, total_amount: "100000", status: "host_commit_pending" });
      const [intent] = await tx.unsafe(`SELECT status FROM reserve.booking_intents WHERE id = '${paid.intent.id}';`);
      expect(intent.status).toBe("converted");
      const nights = await tx`select bookings_count, temp_holds from reserve.availability_calendar
                              where unit_id = ${paid.unitId} and date in (${f.isoDate(1)}, ${f.isoDate(2)}) order by date`;
      expect(nights).toEqual([{ bookings_count: 1, temp_holds: 0 }, { bookings_count: 1, temp_holds: 0 }]);
      const [receipt] = await tx`select count(*)::int as n from reserve.ledger_transactions where idempotency_key = ${"receipt:" + paid.paymentId}`;
      expect(receipt.n).toBe(1);
    });
  });

  it("accepts the double-charge refund UPDATE and posts its ledger entries", async () => {
    await rolledBack(db.sql, async (tx) => {
      const dup = await payIn(tx, "succeeded");
      await tx.unsafe(`
        UPDATE reserve.payments
        SET status = 'refunded',
            refunded_amount = amount,
            refunded_at = NOW(),
            metadata = metadata || '{"refund_reason": "duplicate_charge"}'::jsonb
        WHERE id = '${dup.paymentId}';`);
      const legs = await tx`select t.kind, e.account, e.direction, e.amount::int from reserve.ledger_transactions t
                            join reserve.ledger_entries e on e.transaction_id = t.id
                            where t.payment_id = ${dup.paymentId} order by t.posted_at, t.kind, e.account, e.direction`;
      // the money came in (to be refunded), then went back out
      expect(legs).toEqual(expect.arrayContaining([
        { kind: "payment", account: "receivable_stripe", direction: "debit", amount: 100000 },
        { kind: "payment", account: "refunds_payable", direction: "credit", amount: 100000 },
        { kind: "refund", account: "refunds_payable", direction: "debit", amount: 100000 },
        { kind: "refund", account: "receivable_stripe", direction: "credit", amount: 100000 },
      ]));
      expect(legs).toHaveLength(4);
    });
  });

  it("accepts the overbooking steps: block, move, cancel, recount", async () => {
    await rolledBack(db.sql, async (tx) => {
      const i = await f.intent(tx, ids.unitId, { check_in: f.isoDate(5), check_out: f.isoDate(7) });
      const r = await f.reservation(tx, i);
      await tx.unsafe(`
        UPDATE reserve.availability_calendar
        SET is_available = false, is_blocked = true
        WHERE unit_id = '${ids.unitId}' AND date >= CURRENT_DATE;`);
      const other = await f.unit(tx, { cityCode: ids.cityCode });
      await tx.unsafe(`
        UPDATE reserve.reservations
        SET unit_id = '${other.unitId}',
            metadata = metadata || '{"moved_due_to_overbooking": true}'::jsonb
        WHERE id = '${r.id}';`);
      const moved = await tx`select unit_id, sum(bookings_count)::int as n from reserve.availability_calendar
                             where unit_id in ${tx([ids.unitId, other.unitId])} group by 1`;
      expect(Object.fromEntries(moved.map((m) => [m.unit_id, m.n]))).toEqual({ [ids.unitId]: 0, [other.unitId]: 2 });
      await tx.unsafe(`
        UPDATE reserve.reservations
        SET status = 'cancelled',
            cancellation_reason = 'Overbooking - property error',
            updated_at = NOW()
        WHERE id = '${r.id}';`);
      await tx.unsafe(`
        UPDATE reserve.availability_calendar ac
        SET bookings_count = subquery.actual_bookings,
            is_available = (subquery.actual_bookings + ac.temp_holds) < ac.allotment
        FROM (
          SELECT
            unit_id,
            date,
            COUNT(*) as actual_bookings
          FROM reserve.reservations r
          JOIN generate_series(r.check_in, r.check_out - INTERVAL '1 day', INTERVAL '1 day') AS date
          ON true
          WHERE r.status IN ('confirmed', 'checked_in', 'host_commit_pending')
          GROUP BY unit_id, date
        ) subquery
        WHERE ac.unit_id = subquery.unit_id
        AND ac.date = subquery.date;`);
      const drift = await tx`select * from reserve.availability_counter_drift`;
      expect(drift).toEqual([]);
    });
  });

  it("refuses the hand-written ledger INSERT and DELETE: corrections go through the 4-eyes functions", async () => {
    const insert = await rolledBack(db.sql, (tx) => sqlState(tx.unsafe(`
        INSERT INTO reserve.ledger_entries (transaction_id, entry_type, account, direction, amount, description, city_code)
        VALUES ('${ids.txId}', 'correction', 'corrections', 'credit', 1, 'Manual correction for imbalance', '${ids.cityCode}');`)));
    expect(insert).toBe("RC403");
    const del = await rolledBack(db.sql, (tx) => sqlState(tx.unsafe(`
        WITH duplicates AS (
          SELECT id,
                 ROW_NUMBER() OVER (
                   PARTITION BY transaction_id, account, direction
                   ORDER BY created_at
                 ) as rn
          FROM reserve.ledger_entries
          WHERE transaction_id = '${ids.txId}'
        )
        DELETE FROM reserve.ledger_entries
        WHERE id IN (SELECT id FROM duplicates WHERE rn > 1);`)));
    expect(del).toBe("RC402");
  });
});
