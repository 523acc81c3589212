// Concurrent successes that each post two ledger transactions (the provider's fee, then the receipt)
// must never deadlock on the kept balances (ledger_account_balances, ledger_host_days). Each posting adds
// to one bucket row per account. When the bucket was chosen per ledger transaction, a database
// transaction could hold receivable_stripe's bucket 3 (its fee) and want bucket 5 (its receipt) while
// another held 5 and wanted 3. When it was the backend's (pid modulo the buckets), two backends equal
// modulo the buckets shared rows, and their postings in another order deadlocked (a fee then a receipt
// against a receipt). A transaction now holds its bucket alone (claim_balance_bucket). Real connections,
// real concurrency; nothing here is timed.
import { randomUUID } from "node:crypto";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";
import { applyStatus, processEvent } from "../helpers/money.ts";
import { waitUntilLockWait } from "../ops/ops_helpers.ts";

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

// fewer buckets than the 64 every account has, so that a test finds two backends equal modulo them among
// a few connections, and can hold every one
async function fewBuckets(n = 4) {
  await db.sql`update reserve.ledger_accounts set balance_buckets = ${n}`;
  return n;
}

// the bucket a connection's open transaction holds (its advisory lock) and the one it says it writes
async function holding(c: postgres.ReservedSql) {
  const [h] = await c<{ locked: number[]; claimed: string }[]>`
    select coalesce(array_agg(l.objid::int order by l.objid), '{}') as locked,
           coalesce(current_setting('reserve.balance_bucket', true), '') as claimed
    from pg_locks l where l.locktype = 'advisory' and l.pid = pg_backend_pid() and l.classid::int = hashtext('reserve.balance_bucket')`;
  return h!;
}

// every bucket held: each connection's open transaction posts a fee of one of `paid`; returns the bucket
// each holds, in the connections' order
async function holdEveryBucket(conns: postgres.ReservedSql[], paid: string[]) {
  const taken: number[] = [];
  for (const [i, c] of conns.entries()) {
    await c`begin`;
    await c`select reserve.post_provider_fee(${paid[i]!}::uuid, 150)`;
    const h = await holding(c);
    expect(h.locked).toHaveLength(1);
    taken.push(h.locked[0]!);
  }
  expect(new Set(taken).size).toBe(conns.length);
  return taken;
}

// two reserved connections of `pool` whose backends' pids are equal modulo `buckets` (among buckets + 1
// there are always two); every connection reserved is pushed to `held`, for the caller to release
async function twinBackends(pool: postgres.Sql, buckets: number, held: postgres.ReservedSql[]) {
  const seen = new Map<number, { c: postgres.ReservedSql; pid: number }>();
  for (let i = 0; i <= buckets; i++) {
    const c = await pool.reserve();
    held.push(c);
    const [{ pid }] = await c<{ pid: number }[]>`select pg_backend_pid() as pid`;
    const twin = seen.get(pid % buckets);
    if (twin) return { a: twin.c, pidA: twin.pid, b: c, pidB: pid };
    seen.set(pid % buckets, { c, pid });
  }
  throw new Error(`no two of ${buckets + 1} backends equal modulo ${buckets}`);
}

// pending card payments for stays on units of one host's properties: their receipts add to its statement day
async function hostStays(host: string, n: number) {
  const pays: { id: string; pi: string }[] = [];
  for (let i = 0; i < n; i++) {
    const u = await f.unit(db.sql);
    await db.sql`update reserve.properties_map set host_id = ${host} where id = ${u.propertyId}`;
    const pi = `pi_${randomUUID().replace(/-/g, "")}`;
    pays.push({ id: (await f.checkoutAttempt(db.sql, { unitId: u.unitId, gatewayId: pi })).paymentId, pi });
  }
  return pays;
}

// payments already paid and booked, their provider fee not yet known
async function paidStays(n: number) {
  const paid: string[] = [];
  for (const p of await hostStays(randomUUID(), n)) {
    await applyStatus(db.sql, p.id, "succeeded", { gateway_payment_id: p.pi });
    paid.push(p.id);
  }
  return paid;
}

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

  it("never queue a posting behind another connection's open transaction, even from a backend equal modulo the buckets: each transaction adds to a bucket of the balances and of the host's day that it holds alone", async () => {
    await fewBuckets();
    const [{ buckets, hostBuckets }] = await db.sql<{ buckets: number; hostBuckets: number }[]>`
      select (select balance_buckets from reserve.ledger_accounts where code = 'receivable_stripe') as buckets,
             (select balance_buckets from reserve.ledger_accounts where code = 'host_payable') as "hostBuckets"`;
    const spare = postgres(db.url, { max: buckets + 2, onnotice: () => {} });
    const held: postgres.ReservedSql[] = [];
    try {
      // two backends equal modulo the buckets, the pair that shared rows when a backend's bucket was its pid's
      const { a, pidA, b } = await twinBackends(spare, buckets, held);
      expect(hostBuckets).toBe(buckets);
      // two stays of one host: the receipts also add to the host's statement day
      const host = randomUUID();
      const pays = await hostStays(host, 2);

      const receivableBuckets = async () => Object.fromEntries((await db.sql<{ bucket: number; entries: string }[]>`
        select bucket, entries from reserve.ledger_account_balances where account = 'receivable_stripe' and currency = 'BRL'`)
        .map((r) => [r.bucket, Number(r.entries)])) as Record<number, number>;
      const before = await receivableBuckets();

      await a`begin`;
      await applyStatus(a, pays[0]!.id, "succeeded", { gateway_payment_id: pays[0]!.pi });
      // a holds its receipt's balance rows and its host day until it commits; b's receipt moves the same
      // three accounts and the same host's day. Were they one row, b would wait for a, which commits only
      // after b answers: the lock timeout turns that wait into an error (55P03) instead of a hung test.
      await b`set lock_timeout = '5s'`;
      const r = await applyStatus(b, pays[1]!.id, "succeeded", { gateway_payment_id: pays[1]!.pi });
      expect(r.finalize_outcome).toBe("created");
      await a`commit`;

      // each receipt added its one receivable entry to a bucket of its own: a took its backend's, and b,
      // finding that one held, the next
      const after = await receivableBuckets();
      const grown = Object.keys(after).map(Number).filter((k) => after[k]! - (before[k] ?? 0) > 0).sort((x, y) => x - y);
      const mine = [pidA % buckets, (pidA + 1) % buckets].sort((x, y) => x - y);
      expect(grown).toEqual(mine);
      expect(grown.map((k) => after[k]! - (before[k] ?? 0))).toEqual([1, 1]);
      // and the host's day is the same two buckets' rows, read as one day
      expect((await db.sql`select bucket from reserve.ledger_host_days where host_id = ${host} order by bucket`).map((r) => r.bucket))
        .toEqual(mine);
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

  it("never deadlock two transactions whose backends share a bucket and whose postings come in another order (a run books a missing fee, then a stay; a webhook books a stay)", async () => {
    const buckets = await fewBuckets();
    const spare = postgres(db.url, { max: buckets + 2, onnotice: () => {} });
    const held: postgres.ReservedSql[] = [];
    try {
      const { a, b, pidB } = await twinBackends(spare, buckets, held);
      const host = randomUUID();
      const pays = await hostStays(host, 3);
      const [paid, webhook, repaired] = pays as [typeof pays[0], typeof pays[0], typeof pays[0]];
      // paid and booked before, its fee still missing (a webhook's PaymentIntent carries none)
      await applyStatus(db.sql, paid.id, "succeeded", { gateway_payment_id: paid.pi });

      for (const c of [a, b]) await c`set deadlock_timeout = '50ms'`;
      await b`set lock_timeout = '5s'`;
      // a is a reconciliation run: one transaction books the missing fee (provider_fees, receivable_stripe)...
      await a`begin`;
      await a`select reserve.post_provider_fee(${paid.id}::uuid, 150)`;
      // ...while a webhook books a stay: commission_revenue, host_payable, then receivable_stripe
      await b`begin`;
      const errors: string[] = [];
      const webhookDone = applyStatus(b, webhook.id, "succeeded", { gateway_payment_id: webhook.pi })
        .catch((e: { code?: string; message: string }) => { errors.push(`webhook ${e.code}: ${e.message}`); return null; });
      // until it has finished or queues behind a's rows (a lock wait): then a goes on
      let settled = false;
      void webhookDone.then(() => { settled = true; });
      for (let i = 0; i < 200 && !settled; i++) {
        const [w] = await db.sql`select wait_event_type from pg_stat_activity where pid = ${pidB}`;
        if (w?.wait_event_type === "Lock") break;
        await new Promise((r) => setTimeout(r, 10));
      }
      // ...and the run goes on to repair a stay paid there and not here: its receipt moves the webhook's accounts
      const r = await applyStatus(a, repaired.id, "succeeded", { gateway_payment_id: repaired.pi })
        .catch((e: { code?: string; message: string }) => { errors.push(`run ${e.code}: ${e.message}`); return null; });
      const w = await webhookDone;
      expect(errors).toEqual([]);
      expect(r?.finalize_outcome).toBe("created");
      await a`commit`;
      expect(w?.finalize_outcome).toBe("created");
      await b`commit`;

      expect(await db.sql`select * from reserve.find_ledger_imbalances(current_date - 1)`).toEqual([]);
      expect(await db.sql`select * from reserve.ledger_balance_drift(true)`).toEqual([]);
      expect(await db.sql`select * from reserve.ledger_host_drift()`).toEqual([]);
    } finally {
      for (const c of held) c.release();
      await spare.end();
    }
  });

  it("make a transaction wait for a bucket, before it holds any balance row, only when every bucket is held; and give a bucket back with a rolled-back savepoint", async () => {
    const buckets = await fewBuckets();
    const paid = await paidStays(buckets + 1);
    const spare = postgres(db.url, { max: buckets + 1, onnotice: () => {} });
    const held: postgres.ReservedSql[] = [];
    try {
      for (let i = 0; i <= buckets; i++) held.push(await spare.reserve());
      const last = held[buckets]!;

      // a rolled-back savepoint gives its bucket back, and the next posting claims one again
      await last`begin`;
      await last`savepoint s`;
      await last`select reserve.post_provider_fee(${paid[buckets]!}::uuid, 150)`;
      const inSavepoint = await holding(last);
      expect(inSavepoint.locked).toHaveLength(1);
      expect(inSavepoint.claimed).toBe(String(inSavepoint.locked[0]));
      await last`rollback to savepoint s`;
      expect(await holding(last)).toEqual({ locked: [], claimed: "" });
      await last`rollback`;

      const taken = await holdEveryBucket(held.slice(0, buckets), paid);

      // one more waits, on its backend's bucket, not on a balance row
      const [{ pid }] = await last<{ pid: number }[]>`select pg_backend_pid() as pid`;
      await last`begin`;
      let done = false;
      const waiting = last`select reserve.post_provider_fee(${paid[buckets]!}::uuid, 150)`.then(() => { done = true; });
      await waitUntilLockWait(db.sql, pid);
      expect(done).toBe(false);
      const [seen] = await db.sql`select wait_event_type, wait_event from pg_stat_activity where pid = ${pid}`;
      expect(seen).toEqual({ wait_event_type: "Lock", wait_event: "advisory" });
      const [{ n }] = await db.sql`
        select count(*)::int as n from pg_locks where pid = ${pid} and not granted and locktype <> 'advisory'`;
      expect(n).toBe(0);

      // the holder of that bucket commits, and the waiting posting adds to it
      const owner = held[taken.indexOf(pid % buckets)]!;
      await owner`commit`;
      await waiting;
      expect((await holding(last)).locked).toEqual([pid % buckets]);
      for (let i = 0; i < buckets; i++) if (held[i] !== owner) await held[i]!`commit`;
      await last`commit`;
      const [{ fees }] = await db.sql`
        select count(*)::int as fees from reserve.ledger_transactions where kind = 'provider_fee' and payment_id = any(${paid}::uuid[])`;
      expect(fees).toBe(buckets + 1);
      expect(await db.sql`select * from reserve.ledger_balance_drift(true)`).toEqual([]);
      expect(await db.sql`select * from reserve.find_ledger_imbalances(current_date - 1)`).toEqual([]);
    } finally {
      for (const c of held) c.release();
      await spare.end();
    }
  });

  it("make every path that posts wait for a bucket before it locks a row: a webhook's payment, and a cancellation's payment and nights, stay free while they wait", async () => {
    const buckets = await fewBuckets();
    const paid = await paidStays(buckets + 1);
    const [pending] = await hostStays(randomUUID(), 1);
    const spare = postgres(db.url, { max: buckets + 2, onnotice: () => {} });
    const held: postgres.ReservedSql[] = [];
    try {
      for (let i = 0; i < buckets + 2; i++) held.push(await spare.reserve());
      const [hook, cancel] = [held[buckets]!, held[buckets + 1]!];
      const holders = held.slice(0, buckets);
      await holdEveryBucket(holders, paid);
      const [stay] = await db.sql`select id, unit_id, check_in::text, check_out::text, payment_id
                                  from reserve.reservations where payment_id = ${paid[buckets]!}`;
      const [{ pid: hookPid }] = await hook<{ pid: number }[]>`select pg_backend_pid() as pid`;
      const [{ pid: cancelPid }] = await cancel<{ pid: number }[]>`select pg_backend_pid() as pid`;

      const hooked = processEvent(hook, {}, { status: "succeeded", gateway_payment_id: pending!.pi, payment_reference: pending!.id });
      // execute(): a postgres.js query is sent when awaited, and this one must be sent now to wait in the database
      const cancelled = cancel`select reserve.cancel_reservation(${stay!.id}::uuid, 'guest cancelled')`.execute();
      for (const pid of [hookPid, cancelPid]) {
        await waitUntilLockWait(db.sql, pid);
        const [seen] = await db.sql`select wait_event_type, wait_event from pg_stat_activity where pid = ${pid}`;
        expect(seen).toEqual({ wait_event_type: "Lock", wait_event: "advisory" });
      }
      // while they wait, nothing of theirs is locked: another transaction takes every row at once
      await db.sql.begin(async (tx) => {
        await tx`select 1 from reserve.payments where id = any(${[pending!.id, stay!.payment_id]}::uuid[]) for update nowait`;
        await tx`select 1 from reserve.reservations where id = ${stay!.id} for update nowait`;
        await tx`select 1 from reserve.booking_locks l join reserve.payments p on p.booking_intent_id = l.booking_intent_id
                 where p.id = ${pending!.id} for update of l nowait`;
        await tx`select 1 from reserve.availability_calendar where unit_id = ${stay!.unit_id}
                 and date >= ${stay!.check_in}::date and date < ${stay!.check_out}::date for update nowait`;
      });

      for (const c of holders) await c`commit`;
      expect((await hooked).finalize_outcome).toBe("created");
      await cancelled;
      const [{ status }] = await db.sql`select status from reserve.reservations where id = ${stay!.id}`;
      expect(status).toBe("cancelled");
      expect(await db.sql`select * from reserve.ledger_balance_drift(true)`).toEqual([]);
      expect(await db.sql`select * from reserve.find_ledger_imbalances(current_date - 1)`).toEqual([]);
    } finally {
      for (const c of held) c.release();
      await spare.end();
    }
  });

  it("write only to a bucket the transaction holds, whatever reserve.balance_bucket a session sets", async () => {
    const buckets = await fewBuckets();
    const paid = await paidStays(5);
    const spare = postgres(db.url, { max: 2, onnotice: () => {} });
    const [a, b] = [await spare.reserve(), await spare.reserve()];
    try {
      await a`begin`;
      await a`select reserve.post_provider_fee(${paid[0]!}::uuid, 150)`;
      const [{ mine }] = await a<{ mine: string }[]>`select current_setting('reserve.balance_bucket') as mine`;
      // b names a's bucket for its session: as itself, as itself plus the buckets (the same row modulo them),
      // and as what is no bucket; each posting neither waits for a's rows nor adds to them, nor fails
      await b`set lock_timeout = '5s'`;
      for (const [i, named] of [mine, String(Number(mine) + buckets), "-1", "a bucket"].entries()) {
        await b`select set_config('reserve.balance_bucket', ${named}, false)`;
        await b`begin`;
        await b`select reserve.post_provider_fee(${paid[i + 1]!}::uuid, 150)`;
        const h = await holding(b);
        expect(h.locked).toHaveLength(1);
        expect(String(h.locked[0])).toBe(h.claimed);
        expect(h.claimed).not.toBe(mine);
        expect(h.locked[0]).toBeLessThan(buckets);
        await b`commit`;
      }
      await a`commit`;
      expect(await db.sql`select * from reserve.ledger_balance_drift(true)`).toEqual([]);
    } finally {
      a.release();
      b.release();
      await spare.end();
    }
  });

  it("lose nothing but the killed transaction's own posting when a backend dies holding its bucket rows", async () => {
    const doomed = postgres(db.url, { max: 1, onnotice: () => {} });
    const other = postgres(db.url, { max: 1, onnotice: () => {}, connection: { lock_timeout: 5000 } });
    try {
      const host = randomUUID();
      const pays = await hostStays(host, 2);
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
