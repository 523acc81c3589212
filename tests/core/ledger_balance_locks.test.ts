// Concurrent successes that each post two ledger transactions (the provider's fee, then the receipt)
// must never deadlock on the kept balances (ledger_account_balances). Each posting adds to one bucket
// row per account; when the bucket was chosen per ledger transaction, a database transaction could
// hold receivable_stripe's bucket 3 (its fee) and want bucket 5 (its receipt) while another held 5 and
// wanted 3: PostgreSQL broke the cycle after deadlock_timeout by failing one (40P01), about one poll in
// thirty at 16 at once. Real connections, real concurrency; nothing here is timed.
import { randomUUID } from "node:crypto";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";
import { applyStatus } from "../helpers/money.ts";

const CONNECTIONS = 8;
const PAYMENTS = 160;

let db: TestDatabase;
let pool: postgres.Sql;
beforeAll(async () => {
  db = await createTestDatabase();
  // fail fast instead of waiting out a second per cycle: a deadlock is reported either way
  pool = postgres(db.url, { max: CONNECTIONS, onnotice: () => {}, connection: { deadlock_timeout: "50ms" } });
});
afterAll(async () => {
  await pool?.end();
  await db?.drop();
});

describe("kept ledger balances under concurrent postings", () => {
  it("take fee and receipt postings of many successes at once without a deadlock, and add up", async () => {
    const unit = await f.unit(db.sql, { nights: 200, allotment: PAYMENTS });
    const payments: { id: string; pi: string }[] = [];
    for (let i = 0; i < PAYMENTS; i++) {
      const pi = `pi_${randomUUID().replace(/-/g, "")}`;
      const c = await f.checkoutAttempt(db.sql, { unitId: unit.unitId, gatewayId: pi });
      payments.push({ id: c.paymentId, pi });
    }
    const errors: string[] = [];
    let next = 0;
    await Promise.all(Array.from({ length: CONNECTIONS }, async () => {
      while (next < payments.length) {
        const p = payments[next++]!;
        try {
          await applyStatus(pool, p.id, "succeeded", { gateway_payment_id: p.pi, fee_amount: 4029 });
        } catch (err) {
          errors.push(`${(err as { code?: string }).code}: ${(err as Error).message}`);
        }
      }
    }));
    expect(errors).toEqual([]);

    const [counts] = await db.sql`
      select count(*) filter (where t.kind = 'payment')::int as receipts, count(*) filter (where t.kind = 'provider_fee')::int as fees
      from reserve.ledger_transactions t where t.payment_id = any(${payments.map((p) => p.id)}::uuid[])`;
    expect(counts).toEqual({ receipts: PAYMENTS, fees: PAYMENTS });
    expect(await db.sql`select * from reserve.find_ledger_imbalances(current_date - 1)`).toEqual([]);
    // the kept balances are still the entries' sums
    expect(await db.sql`select * from reserve.ledger_balance_drift(true)`).toEqual([]);
  });

  it("never queue a posting behind another connection's open transaction: each backend adds to its own buckets of the balances and of the host's day", async () => {
    const [{ buckets, hostBuckets }] = await db.sql<{ buckets: number; hostBuckets: number }[]>`
      select (select balance_buckets from reserve.ledger_accounts where code = 'receivable_stripe') as buckets,
             (select balance_buckets from reserve.ledger_accounts where code = 'host_payable') as "hostBuckets"`;
    const spare = postgres(db.url, { max: 6, onnotice: () => {} });
    const held: postgres.ReservedSql[] = [];
    try {
      // two connections whose backends fall in distinct buckets (pids are distinct; modulo the buckets they may not be)
      let a: postgres.ReservedSql | undefined;
      let b: postgres.ReservedSql | undefined;
      let pidA = -1;
      let pidB = -1;
      for (let i = 0; i < 6 && !b; i++) {
        const c = await spare.reserve();
        held.push(c);
        const [{ pid }] = await c<{ pid: number }[]>`select pg_backend_pid() as pid`;
        if (!a) { a = c; pidA = pid; } else if (pid % buckets !== pidA % buckets && pid % hostBuckets !== pidA % hostBuckets) { b = c; pidB = pid; }
      }
      expect(b, "two backends in distinct buckets").toBeDefined();
      // two stays of one host: the receipts also add to the host's statement day
      const host = randomUUID();
      const pays = [];
      for (let i = 0; i < 2; i++) {
        const u = await f.unit(db.sql);
        await db.sql`update reserve.properties_map set host_id = ${host} where id = ${u.propertyId}`;
        const pi = `pi_${randomUUID().replace(/-/g, "")}`;
        pays.push({ id: (await f.checkoutAttempt(db.sql, { unitId: u.unitId, gatewayId: pi })).paymentId, pi });
      }

      const receivableBuckets = async () => Object.fromEntries((await db.sql<{ bucket: number; entries: string }[]>`
        select bucket, entries from reserve.ledger_account_balances where account = 'receivable_stripe' and currency = 'BRL'`)
        .map((r) => [r.bucket, Number(r.entries)])) as Record<number, number>;
      const before = await receivableBuckets();

      await a!`begin`;
      await applyStatus(a!, pays[0]!.id, "succeeded", { gateway_payment_id: pays[0]!.pi });
      // a holds its receipt's balance rows and its host day until it commits; b's receipt moves the same
      // three accounts and the same host's day. Were they one row, b would wait for a, which commits only
      // after b answers: the lock timeout turns that wait into an error (55P03) instead of a hung test.
      await b!`set lock_timeout = '5s'`;
      const r = await applyStatus(b!, pays[1]!.id, "succeeded", { gateway_payment_id: pays[1]!.pi });
      expect(r.finalize_outcome).toBe("created");
      await a!`commit`;

      // each receipt added its one receivable entry to the bucket of the backend that posted it
      const after = await receivableBuckets();
      const grown = Object.keys(after).map(Number).filter((k) => after[k]! - (before[k] ?? 0) > 0).sort((x, y) => x - y);
      expect(grown).toEqual([pidA % buckets, pidB % buckets].sort((x, y) => x - y));
      expect(grown.map((k) => after[k]! - (before[k] ?? 0))).toEqual([1, 1]);
      // and the host's day is two buckets' rows, read as one day
      expect((await db.sql`select bucket from reserve.ledger_host_days where host_id = ${host} order by bucket`).map((r) => r.bucket))
        .toEqual([pidA % hostBuckets, pidB % hostBuckets].sort((x, y) => x - y));
      const [st] = await db.sql`select entries::int, days_with_movement::int from reserve.host_statement(${host}, current_date, current_date)`;
      expect(st).toEqual({ entries: 2, days_with_movement: 1 });
      expect(await db.sql`select count(*)::int as n from reserve.host_statement_days(${host}, current_date, current_date)`).toEqual([{ n: 1 }]);
      expect(await db.sql`select * from reserve.ledger_host_drift()`).toEqual([]);
      expect(await db.sql`select * from reserve.find_ledger_imbalances(current_date - 1)`).toEqual([]);
      expect(await db.sql`select * from reserve.ledger_balance_drift(true)`).toEqual([]);
    } finally {
      for (const c of held) c.release();
      await spare.end();
    }
  });

  it("lose nothing but the killed transaction's own posting when a backend dies holding its bucket rows", async () => {
    const doomed = postgres(db.url, { max: 1, onnotice: () => {} });
    const other = postgres(db.url, { max: 1, onnotice: () => {}, connection: { lock_timeout: 5000 } });
    try {
      const host = randomUUID();
      const pays = [];
      for (let i = 0; i < 2; i++) {
        const u = await f.unit(db.sql);
        await db.sql`update reserve.properties_map set host_id = ${host} where id = ${u.propertyId}`;
        const pi = `pi_${randomUUID().replace(/-/g, "")}`;
        pays.push({ id: (await f.checkoutAttempt(db.sql, { unitId: u.unitId, gatewayId: pi })).paymentId, pi });
      }
      const kept = async () => (await db.sql<{ n: string }[]>`
        select coalesce(sum(entries), 0)::text as n from reserve.ledger_account_balances where account = 'receivable_stripe'`)[0]!.n;
      const before = await kept();

      const c = await doomed.reserve();
      const [{ pid }] = await c<{ pid: number }[]>`select pg_backend_pid() as pid`;
      await c`begin`;
      await applyStatus(c, pays[0]!.id, "succeeded", { gateway_payment_id: pays[0]!.pi });
      // the backend dies mid-transaction, its balance rows and host day locked
      await db.sql`select pg_terminate_backend(${pid})`;
      // the next statement meets the termination notice, the closed connection or the reset socket
      const err = await c`select 1`.then(() => null, (e: { code?: string }) => e);
      expect(["57P01", "CONNECTION_CLOSED", "ECONNRESET"]).toContain(err?.code);
      c.release();

      // nothing of it was kept: no receipt, no reservation, the payment still pending, the balances as before
      const [lost] = await db.sql`
        select (select status from reserve.payments where id = ${pays[0]!.id}) as status,
               (select count(*)::int from reserve.ledger_transactions where payment_id = ${pays[0]!.id}) as receipts,
               (select count(*)::int from reserve.reservations where payment_id = ${pays[0]!.id}) as stays`;
      expect(lost).toEqual({ status: "pending", receipts: 0, stays: 0 });
      expect(await kept()).toBe(before);
      expect(await db.sql`select * from reserve.ledger_host_days where host_id = ${host}`).toEqual([]);

      // and another connection posts the same accounts and the same host's day at once
      const r = await applyStatus(other, pays[1]!.id, "succeeded", { gateway_payment_id: pays[1]!.pi });
      expect(r.finalize_outcome).toBe("created");
      expect(BigInt(await kept()) - BigInt(before)).toBe(1n);
      const [st] = await db.sql`select entries::int, days_with_movement::int from reserve.host_statement(${host}, current_date, current_date)`;
      expect(st).toEqual({ entries: 1, days_with_movement: 1 });
      expect(await db.sql`select * from reserve.ledger_host_drift()`).toEqual([]);
      expect(await db.sql`select * from reserve.ledger_balance_drift(true)`).toEqual([]);
    } finally {
      await doomed.end({ timeout: 1 });
      await other.end();
    }
  });
});
