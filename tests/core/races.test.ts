// Races on real connections: many guests after one night, a storm of finalize calls for one payment,
// two charges of one checkout succeeding at once, overlapping stays on a busy unit. The database's
// locks and constraints decide; afterwards nothing is oversold, double-booked or unbalanced.
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type Sql, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";
import { applyStatus, attachGateway } from "../helpers/money.ts";
import { personalRoleUrl } from "../helpers/operator_roles.ts";

let db: TestDatabase;
let sql: Sql;
beforeAll(async () => {
  db = await createTestDatabase();
  sql = db.sql;
});
afterAll(async () => await db?.drop());

/** A pool of `size` connections, all opened before the race starts, so calls really overlap. */
async function pool(size: number, url = db.url): Promise<Sql> {
  const p = postgres(url, { max: size, onnotice: () => {} });
  await Promise.all(Array.from({ length: size }, () => p.reserve().then((c) => c.release())));
  return p;
}

async function settle<T>(calls: Promise<T>[]) {
  const results = await Promise.allSettled(calls);
  const codes = results.map((r) => (r.status === "fulfilled" ? "ok" : ((r.reason as { code?: string }).code ?? String(r.reason))));
  const tally: Record<string, number> = {};
  for (const c of codes) tally[c] = (tally[c] ?? 0) + 1;
  return { results, tally };
}

async function invariantsHold() {
  expect(await sql`select * from reserve.overbooking_check`).toEqual([]);
  expect(await sql`select * from reserve.availability_counter_drift`).toEqual([]);
  expect(await sql`select * from reserve.find_ledger_imbalances(current_date - 1)`).toEqual([]);
}

/** Another transaction holding one calendar night (a checkout or finalize of it) until `release()`. */
async function holdNight(unitId: string, day: number) {
  const conn = await pool(1);
  let locked!: () => void;
  let release!: () => void;
  const isLocked = new Promise<void>((r) => (locked = r));
  const released = new Promise<void>((r) => (release = r));
  const done = conn.begin(async (tx) => {
    await tx`select 1 from reserve.availability_calendar where unit_id = ${unitId} and date = ${f.isoDate(day)} for no key update`;
    locked();
    await released;
  });
  await isLocked;
  return { release: async () => { release(); await done; }, end: async () => { release(); await conn.end(); } };
}

async function backendPid(conn: Sql): Promise<number> {
  return (await conn`select pg_backend_pid() as pid`)[0].pid as number;
}

async function untilWaitingOnLock(pid: number): Promise<void> {
  for (let i = 0; i < 400; i++) {
    const [{ waiting }] = await sql`select exists (select 1 from pg_locks where pid = ${pid} and not granted) as waiting`;
    if (waiting) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`backend ${pid} never waited on a lock`);
}

async function intentWithPayment(unitId: string, from = 1, to = 3) {
  const [bi] = await sql`select * from reserve.create_booking_intent(${unitId}, ${f.isoDate(from)}, ${f.isoDate(to)}, 2)`;
  const [p] = await sql`select * from reserve.create_payment(${bi.id}, 'stripe', 'card', ${bi.amount})`;
  return { intentId: bi.id as string, paymentId: p.id as string, amount: Number(bi.amount) };
}

describe.each([1, 3])("50 concurrent checkouts for one night of a unit with allotment %i", (allotment) => {
  it("exactly the allotment succeeds, the rest get RC106", async () => {
    const { unitId } = await f.unit(sql, { nights: 3, allotment });
    const racers = await pool(50);
    try {
      const { tally } = await settle(Array.from({ length: 50 }, () =>
        racers`select reserve.create_booking_intent(${unitId}, ${f.isoDate(2)}, ${f.isoDate(3)}, 1)`));
      expect(tally).toEqual({ ok: allotment, RC106: 50 - allotment });
    } finally {
      await racers.end();
    }
    const [night] = await sql`select temp_holds, bookings_count from reserve.availability_calendar
                              where unit_id = ${unitId} and date = ${f.isoDate(2)}`;
    expect(night).toEqual({ temp_holds: allotment, bookings_count: 0 });
    await invariantsHold();
  });
});

describe("100 concurrent finalize_reservation calls for one payment", () => {
  it("make one reservation and one ledger transaction, and all return the same confirmation code", async () => {
    const { unitId } = await f.unit(sql, { nights: 4 });
    const { paymentId, intentId } = await intentWithPayment(unitId);
    // succeeded without finalizing, as the runbook's manual recovery leaves it
    await sql`update reserve.payments set status = 'succeeded' where id = ${paymentId}`;
    const racers = await pool(100);
    type Finalized = { success: boolean; confirmation_code: string; outcome: string };
    let rows: Finalized[];
    try {
      const { results, tally } = await settle(Array.from({ length: 100 }, () =>
        racers<Finalized[]>`select * from reserve.finalize_reservation(${paymentId})`));
      expect(tally).toEqual({ ok: 100 });
      rows = results.map((r) => (r as PromiseFulfilledResult<Finalized[]>).value[0]);
    } finally {
      await racers.end();
    }
    const codes = new Set(rows.map((r) => r.confirmation_code));
    expect(codes.size).toBe(1);
    expect(rows.every((r) => r.success)).toBe(true);
    expect(rows.filter((r) => r.outcome === "created")).toHaveLength(1);
    const [counts] = await sql`
      select (select count(*)::int from reserve.reservations where booking_intent_id = ${intentId}) as reservations,
             (select count(*)::int from reserve.ledger_transactions where payment_id = ${paymentId}) as ledger,
             (select confirmation_code from reserve.reservations where booking_intent_id = ${intentId}) as code`;
    expect(counts).toEqual({ reservations: 1, ledger: 1, code: [...codes][0] });
    await invariantsHold();
  });
});

describe("two payments of one intent succeeding at the same moment", () => {
  it("make one reservation; the other payment is a duplicate flagged for refund; the ledger balances", async () => {
    const racers = await pool(2);
    try {
      for (let round = 0; round < 10; round++) {
        const { unitId } = await f.unit(sql, { nights: 3 });
        const first = await intentWithPayment(unitId);
        // the first attempt was declined, the guest retried, then the bank let the first one through after all
        await applyStatus(sql, first.paymentId as string, "failed", { error_code: "card_declined" });
        const [second] = await sql`select * from reserve.create_payment(${first.intentId}, 'stripe', 'card', ${first.amount})`;
        const { tally } = await settle([first.paymentId, second.id as string].map((id) =>
          applyStatus(racers, id as string, "succeeded")));
        expect(tally).toEqual({ ok: 2 });

        const payments = await sql`select id, status, duplicate_of, refund_reason from reserve.payments
                                   where booking_intent_id = ${first.intentId} order by attempt`;
        const [reservation, ...more] = await sql`select payment_id from reserve.reservations where booking_intent_id = ${first.intentId}`;
        expect(more).toEqual([]);
        const dup = payments.find((p) => p.id !== reservation.payment_id)!;
        expect(payments.every((p) => p.status === "succeeded")).toBe(true);
        expect(dup).toMatchObject({ duplicate_of: reservation.payment_id, refund_reason: "duplicate_charge" });
        const [ledger] = await sql`
          select coalesce(sum(e.amount) filter (where e.account = 'refunds_payable' and e.direction = 'credit'), 0)::int as owed,
                 (select kind from reserve.ledger_transactions where payment_id = ${dup.id}) as kind
          from reserve.ledger_entries e join reserve.ledger_transactions t on t.id = e.transaction_id
          where t.payment_id = ${dup.id}`;
        expect(ledger).toEqual({ owed: first.amount, kind: "duplicate_charge" });
      }
    } finally {
      await racers.end();
    }
    await invariantsHold();
  });
});

describe("a busy unit: overlapping stays booked, paid, expired and cancelled concurrently", () => {
  it("never deadlocks, oversells or lets the counters drift", async () => {
    const { unitId } = await f.unit(sql, { nights: 12, allotment: 2 });
    const racers = await pool(16);
    try {
      const stays = Array.from({ length: 60 }, (_, i) => {
        const from = 1 + ((i * 7) % 9);
        return [from, from + 1 + (i % 3)] as const;
      });
      const { tally } = await settle(stays.map(async ([from, to], i) => {
        const [bi] = await racers`select * from reserve.create_booking_intent(${unitId}, ${f.isoDate(from)}, ${f.isoDate(to)}, 1)`;
        const [p] = await racers`select * from reserve.create_payment(${bi.id}, 'stripe', 'card', ${bi.amount})`;
        if (i % 4 === 0) return applyStatus(racers, p.id as string, "failed");
        const done = await applyStatus(racers, p.id as string, "succeeded");
        if (i % 5 === 0) return racers`select reserve.cancel_reservation(${done.reservation_id}, 'guest changed plans')`;
        if (i % 3 === 0) return racers`select reserve.host_commit_reservation(${done.reservation_id})`;
        return racers`select reserve.release_expired_holds()`;
      }));
      expect(tally["40P01"]).toBeUndefined(); // no deadlock
      expect(Object.keys(tally).sort()).toEqual(expect.arrayContaining(["ok"]));
      expect(Object.keys(tally).filter((k) => k !== "ok" && k !== "RC106")).toEqual([]);
    } finally {
      await racers.end();
    }
    await invariantsHold();
  });
});

describe("two webhook deliveries for one payment, each recording itself before applying", () => {
  it("do not deadlock on the foreign key from processed_webhooks to the payment", async () => {
    for (let round = 0; round < 5; round++) {
      const { unitId } = await f.unit(sql, { nights: 3 });
      const { paymentId } = await intentWithPayment(unitId);
      const [a, b] = [await pool(1), await pool(1)];
      try {
        let arrived = 0;
        let bothIn!: () => void;
        const barrier = new Promise<void>((r) => (bothIn = r));
        // the webhook pattern: record the delivery (naming its payment), then apply it, in one transaction
        const deliver = (conn: Sql, event: string, status: string) => conn.begin(async (tx) => {
          await tx`insert into reserve.processed_webhooks (provider, event_id, event_type, payment_id)
                   values ('stripe', ${event}, ${"payment_intent." + status}, ${paymentId})`;
          if (++arrived === 2) bothIn();
          await barrier;
          await applyStatus(tx, paymentId as string, status, { on_illegal: "ignore" });
        });
        const { tally } = await settle([deliver(a, `evt_a_${round}`, "processing"), deliver(b, `evt_b_${round}`, "succeeded")]);
        expect(tally).toEqual({ ok: 2 });
        const [p] = await sql`select status from reserve.payments where id = ${paymentId}`;
        expect(p.status).toBe("succeeded");
      } finally {
        await Promise.all([a.end(), b.end()]);
      }
    }
    await invariantsHold();
  });
});

describe("one provider id attached to two payments at the same moment", () => {
  it("the second waits for the first and is RC405 naming it, never a bare unique violation (23505)", async () => {
    const { unitId } = await f.unit(sql, { nights: 6 });
    const first = await intentWithPayment(unitId, 1, 3);
    const second = await intentWithPayment(unitId, 3, 5);
    const gatewayId = `pi_${crypto.randomUUID().replace(/-/g, "")}`;
    const [a, b] = [await pool(1), await pool(1)];
    try {
      let attached!: () => void;
      let commit!: () => void;
      const isAttached = new Promise<void>((r) => (attached = r));
      const mayCommit = new Promise<void>((r) => (commit = r));
      const held = a.begin(async (tx) => {
        await attachGateway(tx, first.paymentId, gatewayId);
        attached();
        await mayCommit;
      });
      await isAttached;
      const [{ pid }] = await b`select pg_backend_pid() as pid`;
      const racing = settle([attachGateway(b, second.paymentId, gatewayId)]);
      await untilWaitingOnLock(pid as number);
      commit();
      await held;
      const { results, tally } = await racing;
      expect(tally).toEqual({ RC405: 1 });
      expect(String((results[0] as PromiseRejectedResult).reason.message)).toContain(first.paymentId);
    } finally {
      await Promise.all([a.end(), b.end()]);
    }
    const rows = await sql`select id from reserve.payments where provider = 'stripe' and gateway_payment_id = ${gatewayId}`;
    expect(rows.map((r) => r.id)).toEqual([first.paymentId]);
  });
});

describe("a finalize on a busy night", () => {
  it("takes the night last, after its reservation and its receipt, with its own holds locked first", async () => {
    const { unitId } = await f.unit(sql, { nights: 3, allotment: 5 });
    const { intentId, paymentId } = await intentWithPayment(unitId, 1, 2);
    // another checkout or finalize of the night holds it
    const blocker = await holdNight(unitId, 1);
    const payer = await pool(1);
    const pid = await backendPid(payer);
    try {
      const paying = applyStatus(payer, paymentId, "succeeded");
      await untilWaitingOnLock(pid);
      // what the payer's transaction has written while it waits for the night: the intent, the
      // reservation and the receipt (its balance rows are the bucket it holds alone, which nobody waits on)
      const written = await sql`select c.relname from pg_locks l join pg_class c on c.oid = l.relation
                                where l.pid = ${pid} and l.granted and l.mode = 'RowExclusiveLock'
                                  and c.relnamespace = 'reserve'::regnamespace and c.relkind in ('r', 'p')`;
      const tables = written.map((r) => r.relname as string);
      expect(tables).toEqual(expect.arrayContaining(["booking_intents", "booking_locks", "reservations",
                                                     "ledger_transactions", "ledger_entries", "ledger_account_balances"]));
      // its holds are its own meanwhile: nobody else may change them
      const [{ held }] = await sql`select count(*)::int as held from reserve.booking_locks
                                   where booking_intent_id = ${intentId} and status = 'held'`;
      expect(held).toBe(1);
      await expect(sql.begin((tx) => tx`select 1 from reserve.booking_locks where booking_intent_id = ${intentId} for update nowait`))
        .rejects.toMatchObject({ code: "55P03" });
      await blocker.release();
      const done = await paying;
      expect(done.finalize_outcome).toBe("created");
    } finally {
      await Promise.all([blocker.end(), payer.end()]);
    }
    const [night] = await sql`select temp_holds, bookings_count from reserve.availability_calendar
                              where unit_id = ${unitId} and date = ${f.isoDate(1)}`;
    expect(night).toEqual({ temp_holds: 0, bookings_count: 1 });
    await invariantsHold();
  });
});

describe("one hot night of a hotel: stays paid and cancelled at the same moment", () => {
  it("never deadlock (neither waits on the other's balance rows; both take nights in date order), and the counters hold", async () => {
    const { unitId } = await f.unit(sql, { nights: 4, allotment: 100 });
    // 12 paid stays to cancel, 24 checkouts to pay; nights 1-3 overlap on night 2
    const stay = (i: number) => [1 + (i % 2), 3 + (i % 2)] as const;
    const booked = [];
    for (let i = 0; i < 12; i++) {
      const { paymentId } = await intentWithPayment(unitId, ...stay(i));
      booked.push((await applyStatus(sql, paymentId, "succeeded")).reservation_id as string);
    }
    const paying = [];
    for (let i = 0; i < 24; i++) paying.push((await intentWithPayment(unitId, ...stay(i))).paymentId);
    const racers = await pool(16);
    try {
      const { tally } = await settle([
        ...paying.map((id) => applyStatus(racers, id, "succeeded")),
        ...booked.map((id) => racers`select reserve.cancel_reservation(${id}, 'guest changed plans')`),
      ]);
      expect(tally).toEqual({ ok: 36 });
    } finally {
      await racers.end();
    }
    const nights = await sql`select date, temp_holds, bookings_count from reserve.availability_calendar
                             where unit_id = ${unitId} and date between ${f.isoDate(1)} and ${f.isoDate(4)} order by date`;
    expect(nights.map((n) => [n.temp_holds, n.bookings_count])).toEqual([[0, 12], [0, 24], [0, 12], [0, 0]]);
    await invariantsHold();
  });
});

describe("a move onto a one-stay-a-night unit while a checkout of those nights is being paid", () => {
  it("never deadlocks: the finalize takes the nights before its reservation exists, the move fails RC106, the payer gets the stay", async () => {
    // U before V in id order: the move takes U's nights first, then V's
    let [u, v] = [(await f.unit(sql, { nights: 6, allotment: 1 })).unitId, (await f.unit(sql, { nights: 6, allotment: 1 })).unitId];
    const [{ lt }] = await sql`select ${u}::uuid < ${v}::uuid as lt`;
    if (!lt) [u, v] = [v, u];
    const moved = await intentWithPayment(v, 1, 4);
    const reservationId = (await applyStatus(sql, moved.paymentId, "succeeded")).reservation_id as string;
    const paying = await intentWithPayment(u, 1, 4);
    // a checkout of V's first night holds it for a moment, so the move holds U's nights and waits
    const blocker = await holdNight(v, 1);
    // the operator on their own role (a repair takes its operator from the login)
    const [mover, payer] = [await pool(1, await personalRoleUrl(db.sql, "ops@example.com")), await pool(1)];
    const [moverPid, payerPid] = [await backendPid(mover), await backendPid(payer)];
    try {
      const moving = mover.begin((tx) => tx`select id from reserve.move_reservation(${reservationId}, ${u}, 'overbooked')`);
      await untilWaitingOnLock(moverPid);
      const pay = applyStatus(payer, paying.paymentId, "succeeded");
      await untilWaitingOnLock(payerPid);
      await blocker.release();
      const [moveResult, payResult] = await Promise.allSettled([moving, pay]);
      expect(moveResult).toMatchObject({ status: "rejected", reason: { code: "RC106" } });
      expect(payResult).toMatchObject({ status: "fulfilled", value: { finalize_outcome: "created" } });
    } finally {
      await Promise.all([blocker.end(), mover.end(), payer.end()]);
    }
    await invariantsHold();
  });
});

describe("a recount of drifting nights while another transaction changes them", () => {
  it("waits for it and counts what it committed (rebuild_unit_availability, the overbooking runbook's Step 4)", async () => {
    const { unitId } = await f.unit(sql, { nights: 3, allotment: 3 });
    const hold = async () => ((await sql`select id from reserve.create_booking_intent(${unitId}, ${f.isoDate(1)}, ${f.isoDate(3)}, 2)`)[0].id as string);
    await hold();
    const leaving = await hold(); // nights 1 and 2: temp_holds 2
    // the drift the recount is run for: a booking counted on night 1 that no stay has
    await sql.begin(async (tx) => {
      await tx`set local session_replication_role = replica`;
      await tx`update reserve.availability_calendar set bookings_count = 1 where unit_id = ${unitId} and date = ${f.isoDate(1)}`;
    });
    const [releaser, operator] = [await pool(1), await pool(1, await personalRoleUrl(db.sql, "ops@example.com"))];
    const pid = await backendPid(operator);
    let commit!: () => void;
    try {
      let released!: () => void;
      const isReleased = new Promise<void>((r) => (released = r));
      const committing = new Promise<void>((r) => (commit = r));
      // the second guest gives the nights back; that transaction has not committed yet
      const releasing = releaser.begin(async (tx) => {
        await tx`select reserve.release_booking_intent(${leaving}, 'guest left')`;
        released();
        await committing;
      });
      await isReleased;
      // the operator's recount queues on the nights' locks
      const rebuilding = operator.begin((tx) => tx`select * from reserve.rebuild_unit_availability(${unitId}, current_date, 'counters drift on night 1')`);
      await untilWaitingOnLock(pid);
      commit();
      await releasing;
      const [rebuilt] = await rebuilding;
      expect(rebuilt).toMatchObject({ nights_checked: 3, nights_changed: 1, nights_oversold: 0 });
    } finally {
      commit?.();
      await Promise.all([releaser.end(), operator.end()]);
    }
    const nights = await sql`select bookings_count, temp_holds from reserve.availability_calendar where unit_id = ${unitId} order by date`;
    expect(nights.map((n) => [n.bookings_count, n.temp_holds])).toEqual([[0, 1], [0, 1], [0, 0]]);
    expect(await sql`select * from reserve.availability_counter_drift where unit_id = ${unitId}`).toEqual([]);
  });
});
