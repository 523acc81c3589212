// Money paths off the happy road: refunds recorded by a bare manual UPDATE, a refund that arrives
// after a later dispute event, a stay an operator sells to a payment finalize had refused, and a
// redelivered success after the host declined. Each must leave the ledger saying where the money is.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type Sql, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";
import { applyStatus } from "../helpers/money.ts";

let db: TestDatabase;
let sql: Sql;
beforeAll(async () => {
  db = await createTestDatabase();
  sql = db.sql;
});
afterAll(async () => await db?.drop());

async function paidStay(from = 1, to = 3) {
  const { unitId } = await f.unit(sql, { nights: 6 });
  const [bi] = await sql`select * from reserve.create_booking_intent(${unitId}, ${f.isoDate(from)}, ${f.isoDate(to)}, 2)`;
  const [p] = await sql`select * from reserve.create_payment(${bi.id}, 'stripe', 'card', ${bi.amount})`;
  const done = await applyStatus(sql, p.id as string, "succeeded");
  return { unitId, intentId: bi.id as string, paymentId: p.id as string, amount: Number(bi.amount), reservationId: done.reservation_id as string };
}

/** Balance per account of one payment's ledger transactions (credit positive). */
async function balances(paymentId: string): Promise<Record<string, number>> {
  const rows = await sql`
    select e.account, sum(case e.direction when 'credit' then e.amount else -e.amount end)::int as balance
    from reserve.ledger_transactions t join reserve.ledger_entries e on e.transaction_id = t.id
    where t.payment_id = ${paymentId} group by 1`;
  return Object.fromEntries(rows.map((r) => [r.account, r.balance]));
}

async function ledgerBalances() {
  expect(await sql`select * from reserve.find_ledger_imbalances(current_date - 1)`).toEqual([]);
  expect(await sql`select * from reserve.availability_counter_drift`).toEqual([]);
}

describe("a refund recorded by a manual UPDATE that names only the status", () => {
  it("still posts the refund and marks the reservation refunded", async () => {
    const stay = await paidStay();
    await sql.unsafe(`UPDATE reserve.payments SET status = 'refunded' WHERE id = '${stay.paymentId}';`);
    expect(await balances(stay.paymentId)).toEqual({ receivable_stripe: 0, host_payable: 0, commission_revenue: 0 });
    const [r] = await sql`select payment_status from reserve.reservations where id = ${stay.reservationId}`;
    expect(r.payment_status).toBe("refunded");
    await ledgerBalances();
  });
});

describe("a refund event older than a dispute event already applied", () => {
  it("is not dropped as stale: the money left, the dispute stays open", async () => {
    const stay = await paidStay();
    const t = (min: number) => new Date(Date.now() - min * 60_000);
    await applyStatus(sql, stay.paymentId as string, "disputed", { event_at: t(10) });
    const late = await applyStatus(sql, stay.paymentId as string, "partially_refunded", { event_at: t(30), refunded_amount: 20000 });
    expect(late).toMatchObject({ outcome: "applied", status: "disputed" });
    const won = await applyStatus(sql, stay.paymentId as string, "succeeded", { event_at: t(1) });
    expect(won.status).toBe("partially_refunded");
    const [p] = await sql`select refunded_amount::int from reserve.payments where id = ${stay.paymentId}`;
    expect(p.refunded_amount).toBe(20000);
    const kinds = await sql`select kind from reserve.ledger_transactions where payment_id = ${stay.paymentId} order by posted_at`;
    expect(kinds.map((k) => k.kind)).toEqual(["payment", "refund"]);
    expect((await balances(stay.paymentId)).receivable_stripe).toBe(-(stay.amount - 20000));
    await ledgerBalances();
  });

  it("a lost dispute is posted as a chargeback", async () => {
    const stay = await paidStay();
    await applyStatus(sql, stay.paymentId as string, "disputed");
    await applyStatus(sql, stay.paymentId as string, "refunded");
    const kinds = await sql`select kind from reserve.ledger_transactions where payment_id = ${stay.paymentId} order by posted_at`;
    expect(kinds.map((k) => k.kind)).toEqual(["payment", "chargeback"]);
    await ledgerBalances();
  });
});

describe("an operator sells the stay to a payment finalize refused (the runbook's manual INSERT)", () => {
  it("turns the money set aside for refund into the host's share and commission, and cancelling refunds it once", async () => {
    const { unitId } = await f.unit(sql, { nights: 4 });
    const [bi] = await sql`select * from reserve.create_booking_intent(${unitId}, ${f.isoDate(1)}, ${f.isoDate(3)}, 2)`;
    const [p] = await sql`select * from reserve.create_payment(${bi.id}, 'stripe', 'card', ${bi.amount})`;
    await applyStatus(sql, p.id as string, "failed");
    await sql`select reserve.release_booking_intent(${bi.id}, 'guest left')`;
    const late = await applyStatus(sql, p.id as string, "succeeded");
    expect(late.finalize_outcome).toBe("intent_cancelled");
    expect(await balances(p.id)).toEqual({ receivable_stripe: -Number(bi.amount), refunds_payable: Number(bi.amount) });

    const [r] = await sql.unsafe(`
      INSERT INTO reserve.reservations (booking_intent_id, confirmation_code, city_code, property_id, unit_id, status, payment_status)
      SELECT bi.id, 'RES-' || TO_CHAR(NOW(), 'YYYY') || '-' || UPPER(SUBSTRING(MD5(RANDOM()::text), 1, 6)),
             bi.city_code, bi.property_id, bi.unit_id, 'host_commit_pending', 'paid'
      FROM reserve.booking_intents bi WHERE bi.id = '${bi.id}' RETURNING *;`);
    expect(r.payment_id).toBe(p.id);
    const amount = Number(bi.amount);
    const commission = Math.round(amount * 0.15);
    expect(await balances(p.id)).toEqual({
      receivable_stripe: -amount, refunds_payable: 0, host_payable: amount - commission, commission_revenue: commission,
    });
    const [flag] = await sql`select refund_reason from reserve.payments where id = ${p.id}`;
    expect(flag.refund_reason).toBeNull();

    await sql`select reserve.cancel_reservation(${r.id}, 'guest cancelled')`;
    expect(await balances(p.id)).toEqual({ receivable_stripe: -amount, refunds_payable: amount, host_payable: 0, commission_revenue: 0 });
    await ledgerBalances();
  });

  it("never lets a manual reservation claim a duplicate charge, even one that succeeded earlier", async () => {
    const { unitId } = await f.unit(sql, { nights: 4 });
    const [bi] = await sql`select * from reserve.create_booking_intent(${unitId}, ${f.isoDate(1)}, ${f.isoDate(3)}, 2)`;
    const [first] = await sql`select * from reserve.create_payment(${bi.id}, 'stripe', 'card', ${bi.amount})`;
    await applyStatus(sql, first.id as string, "failed");
    const [second] = await sql`select * from reserve.create_payment(${bi.id}, 'stripe', 'card', ${bi.amount})`;
    const sold = await applyStatus(sql, second.id as string, "succeeded");
    // the bank let the first attempt through too, dated an hour before the second
    const dup = await applyStatus(sql, first.id as string, "succeeded", { event_at: new Date(Date.now() - 3600000) });
    expect(dup.finalize_outcome).toBe("duplicate_charge");
    await sql`select reserve.cancel_reservation(${sold.reservation_id}, 'guest cancelled', 0)`;
    const [r] = await sql.unsafe(`
      INSERT INTO reserve.reservations (booking_intent_id, confirmation_code, status, payment_status)
      VALUES ('${bi.id}', 'RES-2026-ZZZZZ9', 'host_commit_pending', 'paid') RETURNING payment_id;`);
    expect(r.payment_id).toBe(second.id);
    await ledgerBalances();
  });
});

describe("a success redelivered after the host declined", () => {
  it("does not report the cancelled stay as a success", async () => {
    const stay = await paidStay();
    await sql`select reserve.host_decline_reservation(${stay.reservationId}, 'maintenance')`;
    const [again] = await sql`select * from reserve.finalize_reservation(${stay.paymentId})`;
    expect(again).toMatchObject({ success: false, outcome: "reservation_cancelled", reservation_id: stay.reservationId });
    expect(again.error_message).toContain(stay.paymentId);
  });
});

describe("refund events around a dispute, out of order", () => {
  it("never record more or less refunded than went back, and end refunded when all of it did", async () => {
    const stay = await paidStay();
    const t = (min: number) => new Date(Date.now() + min * 60_000);
    await applyStatus(sql, stay.paymentId as string, "disputed", { event_at: t(10) });
    // the whole amount was refunded before the dispute opened; the news arrives late
    const late = await applyStatus(sql, stay.paymentId as string, "refunded", { event_at: t(5) });
    expect(late).toMatchObject({ outcome: "applied", status: "disputed" });
    // then a partial refund report, and the dispute is won
    await applyStatus(sql, stay.paymentId as string, "partially_refunded", { event_at: t(20), refunded_amount: 1000 });
    const won = await applyStatus(sql, stay.paymentId as string, "succeeded", { event_at: t(30) });
    expect(won.status).toBe("refunded");
    const [p] = await sql`select refunded_amount::int from reserve.payments where id = ${stay.paymentId}`;
    expect(p.refunded_amount).toBe(stay.amount);
    expect((await balances(stay.paymentId)).receivable_stripe).toBe(0);
    await ledgerBalances();
  });

  it("a dispute won after a full refund ends refunded, not succeeded", async () => {
    const stay = await paidStay();
    const t = (min: number) => new Date(Date.now() + min * 60_000);
    await applyStatus(sql, stay.paymentId as string, "disputed", { event_at: t(10) });
    await applyStatus(sql, stay.paymentId as string, "refunded", { event_at: t(5) });
    const won = await applyStatus(sql, stay.paymentId as string, "succeeded", { event_at: t(30) });
    expect(won.status).toBe("refunded");
    await ledgerBalances();
  });
});
