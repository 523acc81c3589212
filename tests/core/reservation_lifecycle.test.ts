// After a payment is finalized: host commit, host decline, cancellation, check-in and check-out keep
// the calendar counters exact (bookings_count follows live reservations and nothing else) and the
// money right (a refund moves the host's share and our commission to refunds_payable in the receipt's
// proportions; the provider's refund then settles refunds_payable against the receivable).
// Every reservation here is built through the real API: intent, payment, apply_payment_status.
import { randomUUID } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, sqlState, type Sql, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";
import { applyStatus } from "../helpers/money.ts";

let db: TestDatabase;
let sql: Sql;
beforeAll(async () => {
  db = await createTestDatabase();
  sql = db.sql;
});
afterAll(async () => await db?.drop());

// whatever a scenario did, the counters agree with their sources and the ledger balances
afterEach(async () => {
  expect(await sql`select * from reserve.availability_counter_drift`).toEqual([]);
  expect(await sql`select * from reserve.overbooking_check`).toEqual([]);
  expect(await sql`select * from reserve.find_ledger_imbalances(current_date - 7)`).toEqual([]);
});

/** The database's date `days` after today, as text (the fixture calendar starts at current_date + 1). */
async function day(days: number): Promise<string> {
  const [r] = await sql`select (current_date + ${days}::int)::text as d`;
  return r.d as string;
}

async function createIntent(unitId: string, checkIn: string, checkOut: string) {
  const [bi] = await sql`select * from reserve.create_booking_intent(${unitId}, ${checkIn}::date, ${checkOut}::date, 2)`;
  return bi;
}

/** create_booking_intent -> create_payment -> apply_payment_status(succeeded), which finalizes. */
async function paidReservation(unitId: string, checkIn: string, checkOut: string) {
  const bi = await createIntent(unitId, checkIn, checkOut);
  const [p] = await sql`select * from reserve.create_payment(${bi.id}, 'stripe', 'card', ${bi.amount})`;
  const paid = await applyStatus(sql, p.id as string, "succeeded");
  expect(paid).toMatchObject({ outcome: "applied", finalize_outcome: "created" });
  const r = await reservation(paid.reservation_id as string);
  return { r, id: r.id as string, paymentId: p.id as string, amount: Number(bi.amount) };
}

async function reservation(id: string) {
  const [r] = await sql`select * from reserve.reservations where id = ${id}`;
  return r;
}

async function counters(unitId: string) {
  return sql`select date::text as date, bookings_count, temp_holds from reserve.availability_calendar
             where unit_id = ${unitId} order by date`;
}

/** bookings_count of each night in [checkIn, checkOut). */
async function booked(unitId: string, checkIn: string, checkOut: string): Promise<number[]> {
  const rows = await sql`select bookings_count from reserve.availability_calendar
                         where unit_id = ${unitId} and date >= ${checkIn}::date and date < ${checkOut}::date order by date`;
  return rows.map((r) => r.bookings_count as number);
}

async function legs(idempotencyKey: string) {
  return sql`select t.kind, e.account, e.direction, e.amount::int as amount
             from reserve.ledger_transactions t join reserve.ledger_entries e on e.transaction_id = t.id
             where t.idempotency_key = ${idempotencyKey} order by e.direction desc, e.account`;
}

/** Net debit (positive) or credit (negative) per account over every transaction of a payment. */
async function netByAccount(paymentId: string): Promise<Record<string, number>> {
  const rows = await sql`select e.account, sum(case e.direction when 'debit' then e.amount else -e.amount end)::int as net
                         from reserve.ledger_transactions t join reserve.ledger_entries e on e.transaction_id = t.id
                         where t.payment_id = ${paymentId} group by e.account order by e.account`;
  return Object.fromEntries(rows.map((r) => [r.account, r.net]));
}

async function transactionsOf(reservationId: string, paymentId: string): Promise<number> {
  const [r] = await sql`select count(*)::int as n from reserve.ledger_transactions
                        where reservation_id = ${reservationId} or payment_id = ${paymentId}`;
  return r.n as number;
}

const commit = async (id: string) => (await sql`select * from reserve.host_commit_reservation(${id})`)[0];
const decline = async (id: string, reason: string | null = null) =>
  (await sql`select * from reserve.host_decline_reservation(${id}, ${reason})`)[0];
const cancel = async (id: string, reason: string | null, refund: number | null = null) =>
  (await sql`select * from reserve.cancel_reservation(${id}, ${reason}, ${refund})`)[0];
const checkIn = async (id: string) => (await sql`select * from reserve.check_in_reservation(${id})`)[0];
const checkOut = async (id: string) => (await sql`select * from reserve.check_out_reservation(${id})`)[0];

describe("host_commit_reservation", () => {
  it("confirms a host_commit_pending reservation once, without counting its nights again", async () => {
    const { unitId } = await f.unit(sql, { nights: 10 });
    const [from, to] = [await day(1), await day(3)];
    const { id, r } = await paidReservation(unitId, from, to);
    expect(r).toMatchObject({ status: "host_commit_pending", payment_status: "paid", confirmed_at: null });
    expect(await booked(unitId, from, to)).toEqual([1, 1]);
    const before = await counters(unitId);

    const confirmed = await commit(id);
    expect(confirmed.status).toBe("confirmed");
    expect(confirmed.confirmed_at).toBeInstanceOf(Date);
    expect(await counters(unitId)).toEqual(before);

    const again = await commit(id);
    expect(again).toMatchObject({ status: "confirmed", confirmed_at: confirmed.confirmed_at });
    expect(await counters(unitId)).toEqual(before);
  });

  it("answers RC301 for an unknown reservation", async () => {
    expect(await sqlState(commit(randomUUID()))).toBe("RC301");
  });

  it("refuses a cancelled reservation (RC302)", async () => {
    const { unitId } = await f.unit(sql, { nights: 10 });
    const { id } = await paidReservation(unitId, await day(1), await day(2));
    await cancel(id, "guest changed plans", 0);
    expect(await sqlState(commit(id))).toBe("RC302");
    expect((await reservation(id)).status).toBe("cancelled");
  });
});

describe("a live reservation holds its nights", () => {
  it("refuses a second intent for the same nights (RC106) before and after the host commits", async () => {
    const { unitId } = await f.unit(sql, { nights: 10 });
    const [from, to] = [await day(2), await day(4)];
    const { id } = await paidReservation(unitId, from, to);
    expect(await sqlState(createIntent(unitId, from, to))).toBe("RC106");
    expect(await sqlState(createIntent(unitId, await day(3), await day(5)))).toBe("RC106");
    await commit(id);
    expect(await sqlState(createIntent(unitId, from, to))).toBe("RC106");
    expect(await booked(unitId, from, to)).toEqual([1, 1]);
  });
});

describe("host_decline_reservation", () => {
  it("cancels with a full refund, frees the nights, and the provider's refund settles the ledger", async () => {
    const { unitId } = await f.unit(sql, { nights: 10 });
    const [from, to] = [await day(1), await day(3)];
    const { id, paymentId, amount } = await paidReservation(unitId, from, to);
    expect(amount).toBe(100000);

    const declined = await decline(id, "calendar mix-up");
    expect(declined).toMatchObject({ status: "cancelled", payment_status: "refund_pending" });
    expect(declined.cancellation_reason).toMatch(/^host_declined/);
    const [p] = await sql`select refund_reason, refunded_amount::int from reserve.payments where id = ${paymentId}`;
    expect(p).toEqual({ refund_reason: "host_declined", refunded_amount: 0 });

    // the nights are free again
    expect(await booked(unitId, from, to)).toEqual([0, 0]);
    const next = await createIntent(unitId, from, to);
    expect(next.status).toBe("pending");
    await sql`select reserve.release_booking_intent(${next.id}, 'test done')`;

    // host share and commission become the guest's money, owed back
    expect(await legs(`cancel:${id}`)).toEqual([
      { kind: "refund", account: "commission_revenue", direction: "debit", amount: 15000 },
      { kind: "refund", account: "host_payable", direction: "debit", amount: 85000 },
      { kind: "refund", account: "refunds_payable", direction: "credit", amount: 100000 },
    ]);

    const refunded = await applyStatus(sql, paymentId as string, "refunded");
    expect(refunded).toMatchObject({ outcome: "applied", status: "refunded" });
    expect(await legs(`refund:${paymentId}:100000`)).toEqual([
      { kind: "refund", account: "refunds_payable", direction: "debit", amount: 100000 },
      { kind: "refund", account: "receivable_stripe", direction: "credit", amount: 100000 },
    ]);
    expect((await reservation(id)).payment_status).toBe("refunded");
    // received, split, owed back and paid back: nothing is left anywhere, refunds_payable included
    expect(await netByAccount(paymentId)).toEqual({
      commission_revenue: 0, host_payable: 0, receivable_stripe: 0, refunds_payable: 0,
    });
  });

  it("is idempotent and refuses a confirmed reservation (RC302)", async () => {
    const { unitId } = await f.unit(sql, { nights: 10 });
    const pending = await paidReservation(unitId, await day(1), await day(2));
    const first = await decline(pending.id);
    expect(first.cancellation_reason).toBe("host_declined");
    const txs = await transactionsOf(pending.id, pending.paymentId);
    expect(await decline(pending.id, "again")).toMatchObject({ status: "cancelled", cancelled_at: first.cancelled_at });
    expect(await transactionsOf(pending.id, pending.paymentId)).toBe(txs);

    const confirmed = await paidReservation(unitId, await day(3), await day(4));
    await commit(confirmed.id);
    expect(await sqlState(decline(confirmed.id))).toBe("RC302");
    expect((await reservation(confirmed.id)).status).toBe("confirmed");
  });
});

describe("cancel_reservation", () => {
  it("refunds part of the total, split in the receipt's proportions, and frees the nights", async () => {
    const { unitId } = await f.unit(sql, { nights: 10 });
    const [from, to] = [await day(1), await day(4)];
    const { id, paymentId, amount } = await paidReservation(unitId, from, to);
    await commit(id);
    expect(amount).toBe(150000);
    expect(await legs(`receipt:${paymentId}`)).toEqual([
      { kind: "payment", account: "receivable_stripe", direction: "debit", amount: 150000 },
      { kind: "payment", account: "commission_revenue", direction: "credit", amount: 22500 },
      { kind: "payment", account: "host_payable", direction: "credit", amount: 127500 },
    ]);

    const refund = (amount * 4) / 10;
    const cancelled = await cancel(id, "guest cancelled 10 days ahead", refund);
    expect(cancelled).toMatchObject({ status: "cancelled", payment_status: "refund_pending",
                                      cancellation_reason: "guest cancelled 10 days ahead" });
    expect(await booked(unitId, from, to)).toEqual([0, 0, 0]);
    // 60000 refunded: 15% of it (the receipt's commission share) comes out of commission
    expect(await legs(`cancel:${id}`)).toEqual([
      { kind: "refund", account: "commission_revenue", direction: "debit", amount: 9000 },
      { kind: "refund", account: "host_payable", direction: "debit", amount: 51000 },
      { kind: "refund", account: "refunds_payable", direction: "credit", amount: 60000 },
    ]);
    const [p] = await sql`select refund_reason, metadata ->> 'refund_requested_amount' as requested
                          from reserve.payments where id = ${paymentId}`;
    expect(p).toEqual({ refund_reason: "reservation_cancelled", requested: "60000" });

    await applyStatus(sql, paymentId as string, "partially_refunded", { refunded_amount: refund });
    expect((await reservation(id)).payment_status).toBe("partially_refunded");
    expect(await netByAccount(paymentId)).toEqual({
      commission_revenue: -13500, host_payable: -76500, receivable_stripe: 90000, refunds_payable: 0,
    });
  });

  it("refuses a refund outside 0..total and an empty reason (RC001), changing nothing", async () => {
    const { unitId } = await f.unit(sql, { nights: 10 });
    const [from, to] = [await day(1), await day(3)];
    const { id, paymentId, amount } = await paidReservation(unitId, from, to);
    const txs = await transactionsOf(id, paymentId);
    expect(await sqlState(cancel(id, "too generous", amount + 1))).toBe("RC001");
    expect(await sqlState(cancel(id, "negative", -1))).toBe("RC001");
    expect(await sqlState(cancel(id, ""))).toBe("RC001");
    expect(await sqlState(cancel(id, "   "))).toBe("RC001");
    expect(await sqlState(cancel(id, null))).toBe("RC001");
    expect(await reservation(id)).toMatchObject({ status: "host_commit_pending", payment_status: "paid" });
    expect(await booked(unitId, from, to)).toEqual([1, 1]);
    expect(await transactionsOf(id, paymentId)).toBe(txs);
  });

  it("is idempotent: cancelling again returns the cancelled reservation and posts nothing", async () => {
    const { unitId } = await f.unit(sql, { nights: 10 });
    const { id, paymentId } = await paidReservation(unitId, await day(1), await day(3));
    const first = await cancel(id, "guest cancelled");
    const txs = await transactionsOf(id, paymentId);
    const again = await cancel(id, "guest cancelled", 5000);
    expect(again).toMatchObject({ status: "cancelled", cancelled_at: first.cancelled_at, cancellation_reason: "guest cancelled" });
    expect(await transactionsOf(id, paymentId)).toBe(txs);
  });

  it("does not owe the guest again what the provider already refunded", async () => {
    // ops refunded part of the stay in the provider's dashboard first (webhook applied), then cancel it
    const { unitId } = await f.unit(sql, { nights: 10 });
    const { id, paymentId, amount } = await paidReservation(unitId, await day(1), await day(3));
    await commit(id);
    await applyStatus(sql, paymentId as string, "partially_refunded", { refunded_amount: 30000 });
    expect(await sqlState(cancel(id, "refund beyond what is left", amount - 30000 + 1))).toBe("RC001");

    await cancel(id, "guest cancelled after the partial refund");  // default: all that is left
    expect(await legs(`cancel:${id}`)).toEqual([
      { kind: "refund", account: "commission_revenue", direction: "debit", amount: 10500 },
      { kind: "refund", account: "host_payable", direction: "debit", amount: 59500 },
      { kind: "refund", account: "refunds_payable", direction: "credit", amount: 70000 },
    ]);
    await applyStatus(sql, paymentId as string, "refunded");
    expect((await reservation(id)).payment_status).toBe("refunded");
    expect(await netByAccount(paymentId)).toEqual({
      commission_revenue: 0, host_payable: 0, receivable_stripe: 0, refunds_payable: 0,
    });
  });

  it("after a full refund at the provider, cancelling owes nothing more and keeps the payment refunded", async () => {
    const { unitId } = await f.unit(sql, { nights: 10 });
    const { id, paymentId } = await paidReservation(unitId, await day(1), await day(3));
    await applyStatus(sql, paymentId as string, "refunded");
    expect(await sqlState(cancel(id, "refund on top of a refund", 1))).toBe("RC001");
    expect(await cancel(id, "stay refunded in the dashboard")).toMatchObject({ status: "cancelled", payment_status: "refunded" });
    expect(await legs(`cancel:${id}`)).toEqual([]);
    expect(await netByAccount(paymentId)).toEqual({ commission_revenue: 0, host_payable: 0, receivable_stripe: 0 });
  });

  it("with no refund keeps the payment paid and posts nothing", async () => {
    const { unitId } = await f.unit(sql, { nights: 10 });
    const { id, paymentId } = await paidReservation(unitId, await day(1), await day(3));
    const txs = await transactionsOf(id, paymentId);
    expect(await cancel(id, "no-refund rate", 0)).toMatchObject({ status: "cancelled", payment_status: "paid" });
    expect(await transactionsOf(id, paymentId)).toBe(txs);
  });
});

describe("check_in_reservation and check_out_reservation", () => {
  it("refuses to check in before the stay starts (RC303)", async () => {
    const { unitId } = await f.unit(sql, { nights: 10 });
    const { id } = await paidReservation(unitId, await day(2), await day(4));
    await commit(id);
    expect(await sqlState(checkIn(id))).toBe("RC303");
    expect((await reservation(id)).status).toBe("confirmed");
  });

  it("checks in a confirmed stay starting today, refuses to cancel it, and checking out frees its nights", async () => {
    const { unitId, cityCode } = await f.unit(sql, { nights: 10 });
    // today in the city (the fixture calendar starts tomorrow): give the unit tonight and the next night
    const [{ today, tomorrow }] = await sql`
      select t::text as today, (t + 1)::text as tomorrow
      from (select (now() at time zone timezone)::date as t from reserve.cities where code = ${cityCode}) c`;
    await sql`insert into reserve.availability_calendar (unit_id, date, allotment)
              values (${unitId}, ${today}::date, 1), (${unitId}, ${tomorrow}::date, 1) on conflict do nothing`;
    const end = (await sql`select (${tomorrow}::date + 1)::text as d`)[0].d as string;

    const { id } = await paidReservation(unitId, today, end);
    expect(await sqlState(checkIn(id))).toBe("RC302");  // the host has not committed yet
    await commit(id);

    const arrived = await checkIn(id);
    expect(arrived.status).toBe("checked_in");
    expect(arrived.checked_in_at).toBeInstanceOf(Date);
    expect(await checkIn(id)).toMatchObject({ status: "checked_in", checked_in_at: arrived.checked_in_at });
    expect(await booked(unitId, today, end)).toEqual([1, 1]);

    expect(await sqlState(cancel(id, "too late"))).toBe("RC302");
    expect(await sqlState(decline(id))).toBe("RC302");

    expect((await checkOut(id)).status).toBe("checked_out");
    expect(await checkOut(id)).toMatchObject({ status: "checked_out" });
    expect(await booked(unitId, today, end)).toEqual([0, 0]);
    expect(await sqlState(checkIn(id))).toBe("RC302");
  });

  it("refuses to check out a stay that has not checked in (RC302)", async () => {
    const { unitId } = await f.unit(sql, { nights: 10 });
    const { id } = await paidReservation(unitId, await day(1), await day(2));
    expect(await sqlState(checkOut(id))).toBe("RC302");
  });
});
