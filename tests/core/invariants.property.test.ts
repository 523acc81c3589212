// Property-based: random provider events (any status, duplicates, random and stale event times,
// random partial refunds), applied in random orders with p_on_illegal => 'ignore' to 1-3 payments of
// random checkouts that compete for one-or-two-per-night units and whose holds lapse, never break:
//   (a) a payment never leaves a paid state backwards, refunded is final, refunds never shrink;
//   (b) the ledger balances (per transaction and in total) and no payment's account goes negative;
//   (c) at most one live reservation per intent, and money received is a reservation or flagged;
//   (d) the calendar counters match their sources and nothing is overbooked;
//   (e) a paid payment has exactly one receipt transaction, an unpaid one none;
//   (f) each receivable_<provider> equals the sum of amount - refunded_amount of its paid payments.
// A concurrent variant fires one checkout's events at once from separate connections (and the hold
// sweeper with them); a deadlock there is a bug, and one known interleaving is replayed exactly.
import fc from "fast-check";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";
import { applyStatus, newsFor, providerUpdate } from "../helpers/money.ts";

type Q = postgres.Sql;

const STATUSES = ["pending", "processing", "succeeded", "failed", "cancelled", "expired",
  "refunded", "partially_refunded", "disputed"] as const;
const PAID = new Set(["succeeded", "partially_refunded", "refunded", "disputed"]);
const CHECKOUTS = [
  { provider: "stripe", method: "card" }, { provider: "stripe", method: "pix" },
  { provider: "mercadopago", method: "pix" }, { provider: "openpix", method: "pix" },
] as const;

let db: TestDatabase;
let pool: Q; // separate connections for the concurrent variant
let legal: Set<string>;

beforeAll(async () => {
  db = await createTestDatabase();
  pool = postgres(db.url, { max: 8, onnotice: () => {} });
  const rows = await db.sql`select from_status, to_status from reserve.payment_status_transitions`;
  legal = new Set(rows.map((r) => `${r.from_status}->${r.to_status}`));
});
afterAll(async () => {
  await pool?.end({ timeout: 5 });
  await db?.drop();
});

// ---------------------------------------------------------------- generators

type Refund = { small: number } | { permille: number };
interface ProviderEvent { status: string; second: number | null; refund: Refund; dup: boolean; rank: number }

const eventArb: fc.Arbitrary<ProviderEvent> = fc.record({
  // every status can arrive; the ones that move money come more often
  status: fc.constantFrom(...STATUSES, "succeeded", "succeeded", "failed", "cancelled"),
  // null: the poller, which has no provider time; else seconds after the run's base time
  second: fc.option(fc.integer({ min: 0, max: 60 }), { nil: null, freq: 4 }),
  // a few centavos exercise rounding; 0 and 1000 permille are invalid partial refunds (RC001)
  refund: fc.oneof(fc.integer({ min: 1, max: 20 }).map((small) => ({ small })),
                   fc.integer({ min: 0, max: 1000 }).map((permille) => ({ permille }))),
  dup: fc.integer({ min: 0, max: 3 }).map((n) => n === 0),
  rank: fc.nat(1000),
});

type Step =
  | { kind: "intent"; unit: number; start: number; nights: number }
  | { kind: "payment"; intent: number; via: number }
  | { kind: "event"; payment: number; event: ProviderEvent }
  | { kind: "lapse"; intent: number; intentToo: boolean; sweep: boolean }
  | { kind: "sweep" };

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("intent" as const), unit: fc.nat(1),
                                      start: fc.integer({ min: 1, max: 3 }), nights: fc.integer({ min: 1, max: 3 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("payment" as const), intent: fc.nat(5), via: fc.nat(3) }) },
  { weight: 9, arbitrary: fc.record({ kind: fc.constant("event" as const), payment: fc.nat(5), event: eventArb }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("lapse" as const), intent: fc.nat(5),
                                      intentToo: fc.boolean(), sweep: fc.boolean() }) },
  { weight: 1, arbitrary: fc.constant({ kind: "sweep" as const }) },
);

// ---------------------------------------------------------------- actions

interface Payment { id: string; amount: number }

function sqlStateOf(err: unknown): string | undefined {
  return (err as { code?: string }).code;
}

/** Runs an action whose refusal with one of `codes` is a legitimate answer, not a failure. */
async function tolerating<T>(codes: string[], action: Promise<T>): Promise<T | undefined> {
  try {
    return await action;
  } catch (err) {
    if (codes.includes(sqlStateOf(err) ?? "")) return undefined;
    throw err;
  }
}

function refundAmount(r: Refund, amount: number): number {
  return "small" in r ? r.small : Math.round((amount * r.permille) / 1000);
}

async function fire(q: Q, p: Payment, e: ProviderEvent, base: number): Promise<void> {
  const refunded = e.status === "partially_refunded" ? refundAmount(e.refund, p.amount) : null;
  // all of it is a full refund, more is refused (outcome refused, a money discrepancy): neither raises
  const invalidRefund = refunded !== null && refunded <= 0;
  const at = e.second === null ? null : new Date(base + e.second * 1000);
  await tolerating(invalidRefund ? ["RC001"] : [], applyStatus(q, p.id, e.status, {
    event_at: at, refunded_amount: refunded, error_code: e.status === "failed" ? "card_declined" : null, on_illegal: "ignore",
  }));
}

async function checkout(q: Q, unitId: string, start: number, nights: number): Promise<{ id: string; amount: number } | undefined> {
  const rows = await tolerating(["RC106"], q`
    select id, amount from reserve.create_booking_intent(${unitId}, ${f.isoDate(start)}, ${f.isoDate(start + nights)}, 2)`);
  return rows?.[0] ? { id: rows[0].id as string, amount: Number(rows[0].amount) } : undefined;
}

async function pay(q: Q, intent: { id: string; amount: number }, via: number): Promise<Payment | undefined> {
  const { provider, method } = CHECKOUTS[via % CHECKOUTS.length];
  const rows = await tolerating(["RC108", "RC204"], q`
    select id, amount from reserve.create_payment(${intent.id}, ${provider}, ${method}, ${intent.amount})`);
  return rows?.[0] ? { id: rows[0].id as string, amount: Number(rows[0].amount) } : undefined;
}

/** Time passes for one checkout: its holds (and maybe the intent itself) are past their expiry. */
async function lapse(q: Q, intentId: string, intentToo: boolean): Promise<void> {
  await q`update reserve.booking_locks set expires_at = now() - interval '1 minute'
          where booking_intent_id = ${intentId} and status = 'held'`;
  if (intentToo) {
    await q`update reserve.booking_intents set expires_at = now() - interval '1 minute'
            where id = ${intentId} and status = 'pending'`;
  }
}

const sweep = (q: Q) => q`select * from reserve.release_expired_holds()`;

// ---------------------------------------------------------------- invariants

async function assertInvariants(q: Q, paymentIds: string[]): Promise<void> {
  // (a) every status change legal, paid never goes back, refunded final, refunded_amount never shrinks
  const audit = await q`
    select row_id, action, old_values ->> 'status' as old_status, new_values ->> 'status' as new_status,
           (old_values ->> 'refunded_amount')::bigint as old_refunded, (new_values ->> 'refunded_amount')::bigint as new_refunded
    from reserve.audit_trail
    where table_name = 'payments' and row_id in ${q(paymentIds)}
    order by audit_id, change_no`;
  for (const id of paymentIds) {
    const rows = audit.filter((r) => r.row_id === id);
    const history = [rows[0]?.new_status as string, ...rows.filter((r) => r.action === "UPDATE").map((r) => r.new_status as string)];
    expect(rows[0]?.action, `payment ${id} has its INSERT audited`).toBe("INSERT");
    for (const r of rows.filter((x) => x.action === "UPDATE")) {
      if (r.old_status !== r.new_status) expect(legal.has(`${r.old_status}->${r.new_status}`), `${id}: ${r.old_status}->${r.new_status}`).toBe(true);
      expect(BigInt(r.new_refunded as string) >= BigInt(r.old_refunded as string), `${id}: refunded_amount shrank`).toBe(true);
    }
    const firstPaid = history.findIndex((s) => PAID.has(s));
    if (firstPaid >= 0) expect(history.slice(firstPaid).filter((s) => !PAID.has(s)), `${id}: ${history.join(" > ")}`).toEqual([]);
    const firstRefunded = history.indexOf("refunded");
    if (firstRefunded >= 0) expect(history.slice(firstRefunded).filter((s) => s !== "refunded"), `${id}: ${history.join(" > ")}`).toEqual([]);
  }

  // (b) the ledger balances per transaction and in total
  expect(await q`select * from reserve.find_ledger_imbalances(current_date - 1)`).toEqual([]);
  expect(await q`
    select currency from reserve.ledger_entries group by currency
    having sum(amount) filter (where direction = 'debit') <> sum(amount) filter (where direction = 'credit')`).toEqual([]);

  // (c) one live reservation per intent; money received became a reservation or is flagged for refund
  expect(await q`
    select booking_intent_id from reserve.reservations where reserve.is_live_reservation(status)
    group by booking_intent_id having count(*) > 1`).toEqual([]);
  expect(await q`
    select p.id, p.status from reserve.payments p
    where p.id in ${q(paymentIds)} and p.status in ${q([...PAID])} and p.refund_reason is null
      and not exists (select 1 from reserve.reservations r where r.payment_id = p.id)`).toEqual([]);

  // (d) counters exact, nothing overbooked
  expect(await q`select * from reserve.availability_counter_drift`).toEqual([]);
  expect(await q`select * from reserve.overbooking_check`).toEqual([]);

  // (e) one receipt per paid payment, none for the others; succeeded_at marks exactly the paid ones
  const receipts = await q`
    select p.id, p.status, p.succeeded_at is not null as ever_succeeded,
           (select count(*)::int from reserve.ledger_transactions t where t.idempotency_key = 'receipt:' || p.id) as receipts
    from reserve.payments p where p.id in ${q(paymentIds)}`;
  for (const r of receipts) {
    const paid = PAID.has(r.status as string);
    expect({ id: r.id, status: r.status, receipts: r.receipts, ever_succeeded: r.ever_succeeded })
      .toEqual({ id: r.id, status: r.status, receipts: paid ? 1 : 0, ever_succeeded: paid });
  }

  // (f) what each provider owes us is what the guests paid and were not refunded (all payments so far)
  expect(await q`
    with receivable as (
      select substr(account, length('receivable_') + 1) as provider,
             sum(case direction when 'debit' then amount else -amount end) as balance
      from reserve.ledger_entries where account like 'receivable\_%' group by 1
    ), owed as (
      select provider, sum(amount - refunded_amount) as balance
      from reserve.payments where status in ${q([...PAID])} group by 1
    )
    select provider, coalesce(r.balance, 0)::bigint as ledger, coalesce(o.balance, 0)::bigint as payments
    from receivable r full join owed o using (provider)
    where coalesce(r.balance, 0) <> coalesce(o.balance, 0)`).toEqual([]);

  // per payment: no liability or revenue account negative; a full refund leaves every account at zero
  const accounts = await q`
    select t.payment_id, e.account, p.status,
           sum(case e.direction when 'credit' then e.amount else -e.amount end)::bigint as credit_balance
    from reserve.ledger_transactions t
    join reserve.ledger_entries e on e.transaction_id = t.id
    join reserve.payments p on p.id = t.payment_id
    where t.payment_id in ${q(paymentIds)}
    group by t.payment_id, e.account, p.status`;
  for (const a of accounts) {
    const balance = BigInt(a.credit_balance as string);
    if (!(a.account as string).startsWith("receivable_")) expect(balance >= 0n, `${a.payment_id} ${a.account} ${balance}`).toBe(true);
    if (a.status === "refunded") expect(balance, `${a.payment_id} ${a.account} after a full refund`).toBe(0n);
  }
}

// ---------------------------------------------------------------- properties

describe("random provider events, one after another", () => {
  it("never break the invariants", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.tuple(fc.constantFrom(1, 2), fc.constantFrom(1, 2)),
        fc.array(stepArb, { minLength: 4, maxLength: 30 }),
        async (allotments, steps) => {
          const units = [
            (await f.unit(db.sql, { nights: 8, allotment: allotments[0] })).unitId,
            (await f.unit(db.sql, { nights: 8, allotment: allotments[1] })).unitId,
          ];
          const base = Date.now() - 3_600_000;
          const intents: Array<{ id: string; amount: number }> = [];
          const payments: Payment[] = [];
          const script: Step[] = [
            { kind: "intent", unit: 0, start: 1, nights: 2 }, { kind: "payment", intent: 0, via: 0 }, ...steps];

          for (const s of script) {
            if (s.kind === "intent" && intents.length < 3) {
              const bi = await checkout(db.sql, units[s.unit], s.start, s.nights);
              if (bi) intents.push(bi);
            } else if (s.kind === "payment" && intents.length > 0 && payments.length < 3) {
              const p = await pay(db.sql, intents[s.intent % intents.length], s.via);
              if (p && !payments.some((x) => x.id === p.id)) payments.push(p);
            } else if (s.kind === "event" && payments.length > 0) {
              const p = payments[s.payment % payments.length];
              await fire(db.sql, p, s.event, base);
              if (s.event.dup) await fire(db.sql, p, s.event, base);
            } else if (s.kind === "lapse" && intents.length > 0) {
              await lapse(db.sql, intents[s.intent % intents.length].id, s.intentToo);
              if (s.sweep) await sweep(db.sql);
            } else if (s.kind === "sweep") {
              await sweep(db.sql);
            }
          }
          await assertInvariants(db.sql, payments.map((p) => p.id));
        },
      ),
      { numRuns: 40 },
    );
  });
});

describe("random provider events, all at once from separate connections", () => {
  it("never break the invariants and never deadlock", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          allotment: fc.constantFrom(1, 2),
          via: fc.nat(3),
          // a second checkout for overlapping nights once the first one's hold lapsed
          competitor: fc.boolean(),
          intentToo: fc.boolean(),
          sweepFirst: fc.boolean(),
          eventsA: fc.array(eventArb, { minLength: 2, maxLength: 12 }),
          eventsB: fc.array(eventArb, { maxLength: 6 }),
          sweeps: fc.array(fc.nat(1000), { maxLength: 2 }),
        }),
        async (s) => {
          const { unitId } = await f.unit(db.sql, { nights: 8, allotment: s.allotment });
          const base = Date.now() - 3_600_000;
          const a = await checkout(db.sql, unitId, 1, 2);
          expect(a).toBeDefined();
          const payA = (await pay(db.sql, a!, s.via))!;
          const payments: Payment[] = [payA];
          if (s.competitor) {
            await lapse(db.sql, a!.id, s.intentToo);
            if (s.sweepFirst) await sweep(db.sql);
            const b = await checkout(db.sql, unitId, 2, 2);
            const payB = b && (await pay(db.sql, b, s.via + 1));
            if (payB) payments.push(payB);
          }

          const tasks: Array<{ rank: number; run: () => Promise<unknown> }> = [];
          for (const e of s.eventsA) for (let i = 0; i < (e.dup ? 2 : 1); i++) tasks.push({ rank: e.rank, run: () => fire(pool, payA, e, base) });
          if (payments[1]) for (const e of s.eventsB) tasks.push({ rank: e.rank, run: () => fire(pool, payments[1], e, base) });
          for (const rank of s.sweeps) tasks.push({ rank, run: () => sweep(pool) });
          tasks.sort((x, y) => x.rank - y.rank);

          const results = await Promise.allSettled(tasks.map((t) => t.run()));
          const errors = results.flatMap((r) => (r.status === "rejected" ? [r.reason as Error & { code?: string }] : []));
          expect(errors.map((e) => `${e.code}: ${e.message}`), "deadlocks (40P01) or other errors").toEqual([]);
          await assertInvariants(db.sql, payments.map((p) => p.id));
        },
      ),
      // a race does not replay on demand, so shrinking it would only burn time
      { numRuns: 30, endOnFailure: true },
    );
  });
});

// ---------------------------------------------------------------- one interleaving, replayed exactly

/** A connection of its own, so a test can tell when that backend waits on a lock. */
async function session(): Promise<{ sql: Q; pid: number }> {
  const sql = postgres(db.url, { max: 1, onnotice: () => {} });
  const [{ pid }] = await sql`select pg_backend_pid() as pid`;
  return { sql, pid: pid as number };
}

async function untilWaitingOnLock(pid: number): Promise<void> {
  for (let i = 0; i < 400; i++) {
    const [{ waiting }] = await db.sql`select exists (select 1 from pg_locks where pid = ${pid} and not granted) as waiting`;
    if (waiting) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`backend ${pid} never waited on a lock`);
}

describe("a late payment finalized while the sweeper expires its hold", () => {
  async function race(opts: { sweptBefore: boolean; allotment: number }) {
    const { unitId } = await f.unit(db.sql, { nights: 8, allotment: opts.allotment });
    const intent = (await checkout(db.sql, unitId, 1, 2))!;
    const payment = (await pay(db.sql, intent, 0))!;
    // holds the properties above left lapsed are swept first: the counts below are of this test's hold
    await sweep(db.sql);
    // the hold lapsed a minute ago; the intent itself is still pending, the guest pays now
    await lapse(db.sql, intent.id, false);

    const [blocker, payer, sweeper] = [await session(), await session(), await session()];
    let release!: () => void;
    try {
      let locked!: () => void;
      const isLocked = new Promise<void>((r) => (locked = r));
      const released = new Promise<void>((r) => (release = r));
      // someone holds the first night: the payer queues on it
      const blocking = blocker.sql.begin(async (tx) => {
        await tx`select 1 from reserve.availability_calendar where unit_id = ${unitId} and date = ${f.isoDate(1)} for update`;
        locked();
        await released;
      });
      await isLocked;
      const swept: number[] = [];
      if (opts.sweptBefore) swept.push((await sweep(sweeper.sql))[0].released_locks as number);
      // postgres.js sends a query when it is awaited; execute() sends it now
      const news = await newsFor(payer.sql, payment.id as string, "succeeded");
      const paying = payer.sql`select * from reserve.apply_payment_status(${payment.id}::uuid, ${providerUpdate(payer.sql, news)})`.execute();
      await untilWaitingOnLock(payer.pid);
      // the sweeper never queues behind them: it leaves the night in use for its next run, and holds a
      // finalize has locked (it takes them before their nights) become that finalize's stay
      swept.push((await sweep(sweeper.sql))[0].released_locks as number);
      release();
      await blocking;

      const results = await Promise.allSettled([paying, sweep(sweeper.sql).execute()]);
      const errors = results.flatMap((r, i) => (r.status === "rejected"
        ? [`${["payer", "sweeper"][i]} ${(r.reason as { code?: string }).code}: ${(r.reason as Error).message}`] : []));
      expect(errors).toEqual([]);
      await assertInvariants(db.sql, [payment.id]);
      expect(await db.sql`select 1 from reserve.reservations where payment_id = ${payment.id} and status = 'host_commit_pending'`).toHaveLength(1);
      return swept;
    } finally {
      release?.();
      await Promise.all([blocker.sql.end({ timeout: 5 }), payer.sql.end({ timeout: 5 }), sweeper.sql.end({ timeout: 5 })]);
    }
  }

  // one stay a night: the finalize takes the nights before its reservation; two: after it
  it.each([1, 2])("every night still held (allotment %i): the payer locks its holds, the sweeper skips them, neither deadlocks, the payer gets the stay", async (allotment) => {
    expect(await race({ sweptBefore: false, allotment })).toEqual([0]);
  });

  it.each([1, 2])("the second night swept first (allotment %i): the payer takes the nights, holds the second anew, and gets the stay", async (allotment) => {
    // the sweep before the payment expires the second night and leaves the first (in use); the payer
    // then waits on the first night, and the sweep beside it skips the first night's hold it has locked
    expect(await race({ sweptBefore: true, allotment })).toEqual([1, 0]);
  });
});
