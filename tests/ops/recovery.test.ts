// The runbook's recovery functions: each needs a proven operator (a personal role in reserve_operator, or
// the ops console's login with the token's subject; a name typed on a shared login is RC604) and a reason
// (RC501), is audited (the rows it changes carry the operator and a reason naming the function and
// p_reason), is idempotent, and refuses unsafe cases with its code.
import postgres from "postgres";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, rolledBack, sqlState, type Sql, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";
import { applyStatus, paidInFull, recoverPayment } from "../helpers/money.ts";
import { becomePersonalRole, personalRoleName, personalRoleUrl } from "../helpers/operator_roles.ts";
import { asOperator as asNamedOperator } from "../helpers/runbook.ts";
import { duplicateCharge, paidReservation, replica, type Q, type Row } from "./ops_helpers.ts";

let db: TestDatabase;
let sql: Sql;
beforeAll(async () => {
  db = await createTestDatabase();
  sql = db.sql;
});
afterAll(async () => await db?.drop());
afterEach(async () => {
  expect(await sql`select * from reserve.availability_counter_drift`).toEqual([]);
  expect(await sql`select * from reserve.overbooking_check`).toEqual([]);
  expect(await sql`select * from reserve.find_ledger_imbalances(current_date - 7)`).toEqual([]);
});

const ONCALL = "oncall@reserve.test";
/** the proven name of the operator on call: their personal role */
let OP: string;
beforeAll(() => {
  OP = personalRoleName(sql, ONCALL);
});

/** Runs fn as the operator's own role in a committed transaction; returns fn's result and that transaction's audit rows. */
async function asOp<T>(fn: (tx: Q) => Promise<T>): Promise<{ result: T; audits: Row[] }> {
  const { result, xact } = await asNamedOperator(sql, ONCALL, async (tx) =>
    ({ result: await fn(tx), xact: (await tx`select pg_current_xact_id()::text as x`)[0].x as string }));
  const audits = await sql`select * from reserve.audit_trail where xact_id = ${xact}::bigint order by audit_id, change_no`;
  return { result, audits: [...audits] };
}

function expectAudited(audits: Row[], fn: string, reason: string, tables: string[]) {
  expect(audits.length).toBeGreaterThan(0);
  for (const a of audits) {
    expect(a.actor, `${a.table_name} ${a.action}`).toBe(OP);
    expect(a.reason, `${a.table_name} ${a.action}`).toEqual(expect.stringContaining(fn));
    expect(a.reason, `${a.table_name} ${a.action}`).toEqual(expect.stringContaining(reason));
  }
  for (const t of tables) expect(audits.map((a) => a.table_name)).toContain(t);
}

async function pendingPayment(opts: { unitId?: string } = {}) {
  const unitId = opts.unitId ?? (await f.unit(sql, { nights: 10 })).unitId;
  const [bi] = await sql`select * from reserve.create_booking_intent(${unitId}, ${f.isoDate(1)}::date, ${f.isoDate(3)}::date, 2)`;
  const [p] = await sql`select * from reserve.create_payment(${bi.id}, 'stripe', 'card', ${bi.amount})`;
  return { unitId, intentId: bi.id as string, paymentId: p.id as string };
}

/** What a repeated call must not change. */
async function snapshot() {
  const [r] = await sql`
    select (select count(*)::int from reserve.audit_logs) as audits,
           (select count(*)::int from reserve.ledger_transactions) as ledger,
           (select count(*)::int from reserve.refund_requests) as refunds,
           (select count(*)::int from reserve.reservations) as reservations,
           (select jsonb_agg(to_jsonb(p) order by id) from reserve.payments p) as payments,
           (select jsonb_agg(to_jsonb(r) order by id) from reserve.reservations r) as reservation_rows,
           (select sum(bookings_count + temp_holds)::int from reserve.availability_calendar) as counted`;
  return r;
}

describe("operator and reason", () => {
  const u = crypto.randomUUID();
  const calls: Array<[string, (q: Q, reason: string | null) => Promise<unknown>]> = [
    ["recover_payment", (q, r) => recoverPayment(q, u, paidInFull(), r)],
    ["mark_payment_failed", (q, r) => q`select * from reserve.mark_payment_failed(${u}, ${r})`],
    ["block_unit_dates", (q, r) => q`select * from reserve.block_unit_dates(${u}, current_date, current_date + 1, ${r})`],
    ["move_reservation", (q, r) => q`select * from reserve.move_reservation(${u}, ${u}, ${r})`],
    ["cancel_reservation_with_refund", (q, r) => q`select * from reserve.cancel_reservation_with_refund(${u}, ${r})`],
    ["refund_duplicate_charge", (q, r) => q`select * from reserve.refund_duplicate_charge(${u}, ${r})`],
    ["refund_payment", (q, r) => q`select * from reserve.refund_payment(${u}, 100, ${r})`],
    ["rebuild_unit_availability", (q, r) => q`select * from reserve.rebuild_unit_availability(${u}, current_date, ${r})`],
  ];
  for (const [name, call] of calls) {
    it(`${name} refuses a login that proves nobody (RC604) and a missing reason (RC501)`, async () => {
      expect(await sqlState(call(sql, "a reason"))).toBe("RC604");
      for (const reason of [null, "", "   "]) {
        expect(await sqlState(asNamedOperator(sql, ONCALL, (tx) => call(tx, reason)))).toBe("RC501");
      }
      // the operator's own role gets past the operator check, to the function's own (no such row)
      expect(await sqlState(asNamedOperator(sql, ONCALL, (tx) => call(tx, "a reason")))).not.toMatch(/^RC(501|604)$/);
    });
  }
});

describe("recover_payment", () => {
  it("applies succeeded through the state machine, finalizes, is audited, and a second call changes nothing that matters", async () => {
    const p = await pendingPayment();
    const reason = "Stripe dashboard shows paid";
    const { result, audits } = await asOp((tx) => recoverPayment(tx, p.paymentId, paidInFull(), reason));
    expect(result[0]).toMatchObject({ previous_status: "pending", status: "succeeded", outcome: "applied", finalize_outcome: "created" });
    expectAudited(audits, "recover_payment", reason, ["payments", "reservations"]);
    const [pay] = await sql`select metadata from reserve.payments where id = ${p.paymentId}`;
    expect(pay.metadata.manual_recovery).toMatchObject({ by: OP, reason, provider_status: "succeeded" });

    const before = await snapshot();
    const { result: again } = await asOp((tx) => recoverPayment(tx, p.paymentId, paidInFull(), reason));
    expect(again[0]).toMatchObject({ status: "succeeded", outcome: "unchanged", finalize_outcome: "already_finalized" });
    const after = await snapshot();
    expect({ ...after, audits: 0, payments: 0 }).toEqual({ ...before, audits: 0, payments: 0 });
  });

  // a repeat must not rewrite metadata.manual_recovery, nor write an audit row
  it("a second recover_payment leaves the payment row and audit_logs untouched", async () => {
    const p = await pendingPayment();
    await asOp((tx) => recoverPayment(tx, p.paymentId, { status: "failed" }, "provider says declined"));
    const before = await snapshot();
    await asOp((tx) => recoverPayment(tx, p.paymentId, { status: "failed" }, "provider says declined"));
    expect(await snapshot()).toEqual(before);
  });

  it("refuses an illegal move with RC202 and leaves the payment as it was", async () => {
    const p = await pendingPayment();
    const before = await snapshot();
    expect(await sqlState(asOp((tx) => recoverPayment(tx, p.paymentId, { status: "refunded" }, "dashboard says refunded")))).toBe("RC202");
    expect(await snapshot()).toEqual(before);
  });
});

describe("mark_payment_failed", () => {
  it("fails a pending payment, frees its nights, is audited and idempotent; RC202 on a succeeded one", async () => {
    const p = await pendingPayment();
    const [held] = await sql`select sum(temp_holds)::int as n from reserve.availability_calendar where unit_id = ${p.unitId}`;
    expect(held.n).toBe(2);
    const reason = "provider says declined";
    const { result, audits } = await asOp((tx) => tx`select * from reserve.mark_payment_failed(${p.paymentId}, ${reason})`);
    expect(result[0]).toMatchObject({ status: "failed", error_code: "manual_recovery" });
    expectAudited(audits, "mark_payment_failed", reason, ["payments"]);
    const [freed] = await sql`select sum(temp_holds)::int as n from reserve.availability_calendar where unit_id = ${p.unitId}`;
    expect(freed.n).toBe(0);
    const before = await snapshot();
    await asOp((tx) => tx`select * from reserve.mark_payment_failed(${p.paymentId}, ${reason})`);
    expect(await snapshot()).toEqual(before);

    const paid = await paidReservation(sql);
    expect(await sqlState(asOp((tx) => tx`select * from reserve.mark_payment_failed(${paid.paymentId}, 'oops')`))).toBe("RC202");
  });
});

describe("block_unit_dates", () => {
  it("blocks nights, counts live reservations, is audited and idempotent", async () => {
    const paid = await paidReservation(sql, { from: 2, to: 4 });
    const reason = "pipe burst";
    const { result, audits } = await asOp((tx) =>
      tx`select * from reserve.block_unit_dates(${paid.unitId}, ${f.isoDate(1)}::date, ${f.isoDate(6)}::date, ${reason})`);
    expect(result[0]).toMatchObject({ nights_blocked: 5, live_reservations: 1 });
    expectAudited(audits, "block_unit_dates", reason, ["availability_calendar"]);
    const before = await snapshot();
    const { result: again } = await asOp((tx) =>
      tx`select * from reserve.block_unit_dates(${paid.unitId}, ${f.isoDate(1)}::date, ${f.isoDate(6)}::date, ${reason})`);
    expect(again[0]).toMatchObject({ nights_blocked: 0, live_reservations: 1 });
    expect(await snapshot()).toEqual(before);
    // a new booking of a blocked night is refused
    expect(await sqlState(sql`select * from reserve.create_booking_intent(${paid.unitId}, ${f.isoDate(5)}::date, ${f.isoDate(6)}::date, 1)`)).toBe("RC106");
    expect(await sqlState(asOp((tx) => tx`select * from reserve.block_unit_dates(${paid.unitId}, ${f.isoDate(3)}::date, ${f.isoDate(3)}::date, ${reason})`))).toBe("RC103");
    expect(await sqlState(asOp((tx) => tx`select * from reserve.block_unit_dates(${crypto.randomUUID()}, ${f.isoDate(1)}::date, ${f.isoDate(3)}::date, ${reason})`))).toBe("RC101");
  });
});

describe("move_reservation", () => {
  it("moves a reservation to a free unit, counters follow, audited and idempotent", async () => {
    const paid = await paidReservation(sql);
    const { unitId: target } = await f.unit(sql, { nights: 10 });
    const reason = "overbooked, guest agreed";
    const { result, audits } = await asOp((tx) => tx`select * from reserve.move_reservation(${paid.reservationId}, ${target}, ${reason})`);
    expect(result[0]).toMatchObject({ id: paid.reservationId, unit_id: target });
    expect(result[0].metadata).toMatchObject({ moved_from_unit: paid.unitId, moved_by: OP });
    expectAudited(audits, "move_reservation", reason, ["reservations"]);
    const counts = await sql`select unit_id, sum(bookings_count)::int as n from reserve.availability_calendar
                             where unit_id in (${paid.unitId}, ${target}) group by unit_id`;
    expect(Object.fromEntries(counts.map((c) => [c.unit_id, c.n]))).toEqual({ [paid.unitId]: 0, [target]: 2 });
    const before = await snapshot();
    await asOp((tx) => tx`select * from reserve.move_reservation(${paid.reservationId}, ${target}, ${reason})`);
    expect(await snapshot()).toEqual(before);
  });

  it("refuses a unit whose nights are held by another checkout (RC106), over occupancy, the same unit, a checked-in guest and a past stay (RC304)", async () => {
    const paid = await paidReservation(sql, { guests: 3 });
    const held = await f.unit(sql, { nights: 10 });
    await sql`select * from reserve.create_booking_intent(${held.unitId}, ${f.isoDate(2)}::date, ${f.isoDate(3)}::date, 1)`;
    const tiny = (await f.unit(sql, { nights: 10, maxOccupancy: 2 })).unitId;
    const free = (await f.unit(sql, { nights: 10 })).unitId;
    const move = (to: string) => asOp((tx) => tx`select * from reserve.move_reservation(${paid.reservationId}, ${to}, 'try')`);
    const before = await snapshot();
    expect(await sqlState(move(held.unitId))).toBe("RC106");
    expect(await sqlState(move(tiny))).toBe("RC304");
    expect(await sqlState(move(paid.unitId))).toBe("RC304");
    expect(await sqlState(move(crypto.randomUUID()))).toBe("RC101");
    expect(await snapshot()).toEqual(before);
    await rolledBack(sql, async (tx) => {
      await replica(tx);
      await tx`update reserve.reservations set status = 'checked_in' where id = ${paid.reservationId}`;
      await replica(tx, false);
      await becomePersonalRole(tx, sql, ONCALL);
      expect(await sqlState(tx.savepoint((s) => s`select * from reserve.move_reservation(${paid.reservationId}, ${free}, 'try')`))).toBe("RC304");
    });
    await rolledBack(sql, async (tx) => {
      await replica(tx);
      await tx`update reserve.reservations set check_in = current_date - 3, check_out = current_date where id = ${paid.reservationId}`;
      await replica(tx, false);
      await becomePersonalRole(tx, sql, ONCALL);
      expect(await sqlState(tx.savepoint((s) => s`select * from reserve.move_reservation(${paid.reservationId}, ${free}, 'try')`))).toBe("RC304");
    });
  });
});

describe("move_reservation: nights that are not free", () => {
  // our code, not the exclusion constraint reservations_no_overlap's 23P01, answers first
  it("moving onto a unit sold on the same nights answers RC106", async () => {
    const paid = await paidReservation(sql);
    const full = await paidReservation(sql); // another unit, sold on the same nights
    expect(await sqlState(asOp((tx) => tx`select * from reserve.move_reservation(${paid.reservationId}, ${full.unitId}, 'try')`))).toBe("RC106");
  });

  // the counting trigger checks capacity only, so blocked nights are refused by move_reservation itself
  it("refuses to move onto nights an operator blocked (RC106)", async () => {
    const paid = await paidReservation(sql);
    const { unitId: blocked } = await f.unit(sql, { nights: 10 });
    await asOp((tx) => tx`select * from reserve.block_unit_dates(${blocked}, ${f.isoDate(1)}::date, ${f.isoDate(5)}::date, 'pipe burst')`);
    const state = await sqlState(asOp((tx) => tx`select * from reserve.move_reservation(${paid.reservationId}, ${blocked}, 'try')`));
    expect(state).toBe("RC106");
  });
});

describe("cancel_reservation_with_refund", () => {
  it("cancels, frees the nights, queues one refund, is audited and idempotent", async () => {
    const paid = await paidReservation(sql);
    const reason = "overbooked, guest relocated elsewhere";
    const { result, audits } = await asOp((tx) => tx`select * from reserve.cancel_reservation_with_refund(${paid.reservationId}, ${reason})`);
    expect(result[0]).toMatchObject({ reservation_id: paid.reservationId, status: "cancelled", refund_amount: String(paid.amount),
                                      refund_status: "requested" });
    expectAudited(audits, "cancel_reservation_with_refund", reason, ["reservations", "refund_requests"]);
    const rr = await sql`select * from reserve.refund_requests where payment_id = ${paid.paymentId}`;
    expect(rr).toHaveLength(1);
    expect(rr[0]).toMatchObject({ request_key: `cancel:${paid.reservationId}`, reason: "reservation_cancelled", requested_by: OP });
    const [n] = await sql`select sum(bookings_count)::int as n from reserve.availability_calendar where unit_id = ${paid.unitId}`;
    expect(n.n).toBe(0);
    const before = await snapshot();
    const { result: again } = await asOp((tx) => tx`select * from reserve.cancel_reservation_with_refund(${paid.reservationId}, ${reason})`);
    expect(again[0]).toMatchObject({ refund_request_id: rr[0].id });
    expect(await snapshot()).toEqual(before);
  });
});

describe("refund_duplicate_charge and refund_payment", () => {
  it("queues one whole refund for a duplicate, RC207 for a payment that is not one", async () => {
    const d = await duplicateCharge(sql);
    expect(await sqlState(asOp((tx) => tx`select * from reserve.refund_duplicate_charge(${d.paidId}, 'guest charged twice')`))).toBe("RC207");
    const reason = "guest charged twice";
    const { result, audits } = await asOp((tx) => tx`select * from reserve.refund_duplicate_charge(${d.duplicateId}, ${reason})`);
    expect(result[0]).toMatchObject({ payment_id: d.duplicateId, amount: String(d.amount), reason: "duplicate_charge",
                                      request_key: `duplicate:${d.duplicateId}`, status: "requested" });
    expectAudited(audits, "refund_duplicate_charge", reason, ["refund_requests"]);
    const before = await snapshot();
    const { result: again } = await asOp((tx) => tx`select * from reserve.refund_duplicate_charge(${d.duplicateId}, ${reason})`);
    expect(again[0].id).toBe(result[0].id);
    expect(await snapshot()).toEqual(before);
    // the poller sends it and the provider confirms: the ledger follows and the double charge is gone
    await sql`select * from reserve.claim_refund_requests(20)`;
    await sql`select reserve.record_refund_result(${result[0].id as string}::uuid, 'sent',
                reserve.as_provider_refund('{"refund_id": "re_dup", "status": "succeeded"}'))`;
    await applyStatus(sql, d.duplicateId as string, "refunded");
    const [rr] = await sql`select status from reserve.refund_requests where id = ${result[0].id as string}`;
    expect(rr.status).toBe("confirmed");
  });

  it("refund_payment queues one refund per call and RC208 past what is left", async () => {
    const paid = await paidReservation(sql);
    const reason = "goodwill for the noise";
    const { audits } = await asOp((tx) => tx`select * from reserve.refund_payment(${paid.paymentId}, 1000, ${reason})`);
    expectAudited(audits, "refund_payment", reason, ["refund_requests"]);
    await asOp((tx) => tx`select * from reserve.refund_payment(${paid.paymentId}, 1000, ${reason})`);
    expect(await sql`select * from reserve.refund_requests where payment_id = ${paid.paymentId}`).toHaveLength(2);
    expect(await sqlState(asOp((tx) => tx`select * from reserve.refund_payment(${paid.paymentId}, ${paid.amount}, ${reason})`))).toBe("RC208");
  });
});

describe("rebuild_unit_availability", () => {
  it("fixes drifted counters, is audited and idempotent; RC106 while the unit is oversold", async () => {
    const paid = await paidReservation(sql);
    await sql.begin(async (tx) => {
      await replica(tx);
      await tx`update reserve.availability_calendar set bookings_count = 0 where unit_id = ${paid.unitId}`;
      await tx`update reserve.availability_calendar set temp_holds = 1 where unit_id = ${paid.unitId} and date = ${f.isoDate(7)}`;
    });
    expect(await sql`select * from reserve.availability_counter_drift where unit_id = ${paid.unitId}`).toHaveLength(3);
    const reason = "counters drifted after replica-mode import";
    const { result, audits } = await asOp((tx) => tx`select * from reserve.rebuild_unit_availability(${paid.unitId}, current_date, ${reason})`);
    expect(result[0]).toMatchObject({ nights_checked: 20, nights_changed: 3 });
    expectAudited(audits, "rebuild_unit_availability", reason, ["availability_calendar"]);
    expect(await sql`select * from reserve.availability_counter_drift where unit_id = ${paid.unitId}`).toEqual([]);
    const before = await snapshot();
    const { result: again } = await asOp((tx) => tx`select * from reserve.rebuild_unit_availability(${paid.unitId}, current_date, ${reason})`);
    expect(again[0]).toMatchObject({ nights_checked: 20, nights_changed: 0 });
    expect(await snapshot()).toEqual(before);

    await rolledBack(sql, async (tx) => {
      const other = await f.intent(tx, paid.unitId);
      await replica(tx);
      await tx`insert into reserve.booking_locks (booking_intent_id, unit_id, lock_date, expires_at)
               values (${other.id as string}, ${paid.unitId}, ${f.isoDate(1)}, now() + interval '1 hour')`;
      await replica(tx, false);
      await becomePersonalRole(tx, sql, ONCALL);
      // a counter cannot exceed the allotment: the oversold night is counted full and reported
      const [answer] = await tx`select * from reserve.rebuild_unit_availability(${paid.unitId}, current_date, 'try')`;
      expect(answer.nights_oversold).toBe(1);
      await tx`reset session authorization`;
      expect(await tx`select date from reserve.overbooking_check where unit_id = ${paid.unitId}`).toHaveLength(1);
    });
  });
});

describe("ops blocks that overlap", () => {
  const block = (q: Sql, unitId: string, from: number, to: number, why: string): Promise<string> =>
    asNamedOperator(q, ONCALL, (tx) => tx`select * from reserve.block_unit_dates(${unitId}, ${f.isoDate(from)}::date, ${f.isoDate(to)}::date, ${why})`)
      .then(([b]) => b.block_id as string);
  const lift = (q: Sql, blockId: string): Promise<number> =>
    asNamedOperator(q, ONCALL, (tx) => tx`select * from reserve.unblock_unit_dates(${blockId}::uuid, 'done')`).then(([r]) => r.nights_reopened as number);
  const openNights = async (unitId: string) =>
    (await sql`select date from reserve.availability_calendar where unit_id = ${unitId} and not is_blocked and date < ${f.isoDate(7)} order by date`)
      .map((o) => (o.date as Date).toISOString().slice(0, 10));
  const firstSix = () => [1, 2, 3, 4, 5, 6].map((d) => f.isoDate(d));

  it("lifting one does not reopen nights another open block still asks to keep closed", async () => {
    const u = await f.unit(sql, { nights: 10 });
    const a = await block(sql, u.unitId, 1, 5, "A");
    await block(sql, u.unitId, 3, 7, "B");
    expect(await lift(sql, a)).toBe(2);
    expect(await openNights(u.unitId)).toEqual([f.isoDate(1), f.isoDate(2)]);
  });

  it("the last block lifted over a night reopens it, whichever closed it, in either order", async () => {
    for (const order of [["A", "B"], ["B", "A"]]) {
      const u = await f.unit(sql, { nights: 10 });
      // B closes only 5-6: 3-4 are A's already
      const ids: Record<string, string> = { A: await block(sql, u.unitId, 1, 5, "A"), B: await block(sql, u.unitId, 3, 7, "B") };
      for (const name of order) await lift(sql, ids[name]);
      expect(await openNights(u.unitId)).toEqual(firstSix());
      const [kept] = await sql`select nights from reserve.ops_blocks where id = ${ids.B}`;
      // lifted first, A handed 3-4 to B, which kept them closed; lifted first, B had nothing to hand
      expect((kept.nights as Date[]).length).toBe(order[0] === "A" ? 4 : 2);
    }
  });

  it("a night the host closed before the blocks stays closed after them", async () => {
    const u = await f.unit(sql, { nights: 10 });
    await sql`update reserve.availability_calendar set is_blocked = true where unit_id = ${u.unitId} and date = ${f.isoDate(4)}`;
    const a = await block(sql, u.unitId, 1, 5, "A");
    const b = await block(sql, u.unitId, 3, 7, "B");
    await lift(sql, a);
    await lift(sql, b);
    expect(await openNights(u.unitId)).toEqual(firstSix().filter((d) => d !== f.isoDate(4)));
  });

  it("two overlapping blocks lifted at the same moment reopen every night they closed", async () => {
    // the operator's role has two connections: the lifts run side by side
    for (let round = 0; round < 5; round++) {
      const u = await f.unit(sql, { nights: 10 });
      const a = await block(sql, u.unitId, 1, 5, "A");
      const b = await block(sql, u.unitId, 3, 7, "B");
      const reopened = await Promise.all([lift(sql, a), lift(sql, b)]);
      expect(reopened.reduce((x, y) => x + y, 0)).toBe(6);
      expect(await openNights(u.unitId)).toEqual(firstSix());
    }
  });

  it("a lift whose connection dies in the middle writes nothing, and lifting again hands over and reopens", async () => {
    const u = await f.unit(sql, { nights: 10 });
    const a = await block(sql, u.unitId, 1, 5, "A");
    const b = await block(sql, u.unitId, 3, 7, "B");
    const [holder, lifter] = [postgres(db.url, { max: 1, onnotice: () => {} }), postgres(await personalRoleUrl(sql, ONCALL), { max: 1, onnotice: () => {} })];
    let release!: () => void;
    try {
      let locked!: () => void;
      const isLocked = new Promise<void>((r) => (locked = r));
      const released = new Promise<void>((r) => (release = r));
      // B's row is held elsewhere: the lift of A has taken the unit, A and its nights, and waits to hand 3-4 to B
      const holding = holder.begin(async (tx) => {
        await tx`select 1 from reserve.ops_blocks where id = ${b} for update`;
        locked();
        await released;
      });
      await isLocked;
      // the operator's own login, outside a transaction: a transaction's ROLLBACK cannot be sent on a killed connection
      const [{ pid }] = await lifter`select pg_backend_pid() as pid`;
      const lifting = lifter`select * from reserve.unblock_unit_dates(${a}::uuid, 'done')`
        .then(() => "lifted", (e: { code?: string }) => e.code ?? String(e));
      for (let i = 0; i < 400; i++) {
        const [{ waiting }] = await sql`select exists (select 1 from pg_locks where pid = ${pid} and not granted) as waiting`;
        if (waiting) break;
        await new Promise((r) => setTimeout(r, 25));
      }
      await sql`select pg_terminate_backend(${pid})`;
      // the server's 57P01, or the closed connection, whichever the client sees first
      expect(["57P01", "CONNECTION_CLOSED"]).toContain(await lifting);
      release();
      await holding;
    } finally {
      release?.();
      await Promise.all([holder.end({ timeout: 5 }), lifter.end({ timeout: 1 }).catch(() => {})]);
    }
    // nothing of the lift is left: A is open, its nights closed, B's nights what B closed
    const [left] = await sql`select unblocked_at from reserve.ops_blocks where id = ${a}`;
    expect(left.unblocked_at).toBeNull();
    expect(await openNights(u.unitId)).toEqual([]);
    const [kept] = await sql`select nights from reserve.ops_blocks where id = ${b}`;
    expect((kept.nights as Date[]).length).toBe(2);
    expect(await lift(sql, a)).toBe(2);
    expect(await lift(sql, b)).toBe(4);
    expect(await openNights(u.unitId)).toEqual(firstSix());
  });
});
