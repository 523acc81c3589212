// create_booking_intent validates, prices and holds a stay all or nothing; release_expired_holds gives
// back exactly the nights whose hold lapsed; an intent paid after its hold lapsed is re-held or refused.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
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

type Intent = { id: string; amount: string; expires_at: Date; status: string; currency: string };

async function book(unitId: string, from: number, to: number, opts: { guests?: number; method?: string; holdMinutes?: number } = {}) {
  const [bi] = await sql<Intent[]>`
    select * from reserve.create_booking_intent(${unitId}, ${f.isoDate(from)}, ${f.isoDate(to)}, ${opts.guests ?? 2},
      ${opts.method ?? "card"}, p_hold_minutes => ${opts.holdMinutes ?? null})`;
  return bi;
}

async function nights(unitId: string, from: number, to: number) {
  return (await sql`select bookings_count, temp_holds, is_available from reserve.availability_calendar
                    where unit_id = ${unitId} and date >= ${f.isoDate(from)} and date < ${f.isoDate(to)} order by date`)
    .map((n) => [n.bookings_count, n.temp_holds, n.is_available]);
}

/** Makes the intent's holds (and the intent) look as if they lapsed a minute ago. */
async function lapse(intentId: string) {
  await sql`update reserve.booking_locks set expires_at = now() - interval '1 minute' where booking_intent_id = ${intentId} and status = 'held'`;
  await sql`update reserve.booking_intents set expires_at = now() - interval '1 minute' where id = ${intentId}`;
}

async function pay(intent: Intent) {
  const [p] = await sql`select * from reserve.create_payment(${intent.id}, 'stripe', 'card', ${intent.amount})`;
  return p.id as string;
}

async function succeedLate(paymentId: string) {
  // the charge was made while the hold was live; the success arrives after it lapsed
  const r = await applyStatus(sql, paymentId as string, "succeeded", { event_at: new Date() });
  return r;
}

async function invariantsHold() {
  expect(await sql`select * from reserve.availability_counter_drift`).toEqual([]);
  expect(await sql`select * from reserve.overbooking_check`).toEqual([]);
  expect(await sql`select * from reserve.find_ledger_imbalances(current_date - 1)`).toEqual([]);
}

describe("create_booking_intent validates", () => {
  let unitId: string;
  beforeAll(async () => ({ unitId } = await f.unit(sql, { nights: 40, maxOccupancy: 3 })));
  const attempt = (u: string, from: number, to: number, guests = 2, method = "card") =>
    sqlState(sql`select reserve.create_booking_intent(${u}, ${f.isoDate(from)}, ${f.isoDate(to)}, ${guests}, ${method})`);

  it("an unknown unit -> RC101", async () => expect(await attempt("00000000-0000-4000-8000-000000000000", 1, 2)).toBe("RC101"));
  it("an inactive unit or property -> RC102", async () => {
    const other = await f.unit(sql, { nights: 5 });
    await sql`update reserve.properties_map set is_active = false where id = ${other.propertyId}`;
    expect(await attempt(other.unitId, 1, 2)).toBe("RC102");
  });
  // two days back: yesterday in UTC can still be today in the city (São Paulo is UTC-3)
  it("check-in in the past -> RC103", async () => expect(await attempt(unitId, -2, 2)).toBe("RC103"));
  it("check-out not after check-in -> RC103", async () => expect(await attempt(unitId, 3, 3)).toBe("RC103"));
  it("more nights than max_nights -> RC104", async () => expect(await attempt(unitId, 1, 33)).toBe("RC104"));
  it("fewer nights than min_nights -> RC104", async () => {
    await sql`update reserve.unit_map set min_nights = 3 where id = ${unitId}`;
    try {
      expect(await attempt(unitId, 1, 3)).toBe("RC104");
    } finally {
      await sql`update reserve.unit_map set min_nights = 1 where id = ${unitId}`;
    }
  });
  it("more guests than max_occupancy -> RC105", async () => expect(await attempt(unitId, 1, 2, 4)).toBe("RC105"));
  it("zero guests or an unknown method -> RC001", async () => {
    expect(await attempt(unitId, 1, 2, 0)).toBe("RC001");
    expect(await attempt(unitId, 1, 2, 2, "boleto")).toBe("RC001");
    expect(await sqlState(sql`select reserve.create_booking_intent(null, null, null, null)`)).toBe("RC001");
  });
  it("a night without a calendar row -> RC106", async () => expect(await attempt(unitId, 39, 42)).toBe("RC106"));
  it("a blocked night -> RC106, naming the unit", async () => {
    await sql`update reserve.availability_calendar set is_blocked = true where unit_id = ${unitId} and date = ${f.isoDate(20)}`;
    const err = await sql`select reserve.create_booking_intent(${unitId}, ${f.isoDate(19)}, ${f.isoDate(21)}, 2)`.catch((e) => e);
    expect(err.code).toBe("RC106");
    expect(err.message).toContain(unitId);
    expect(err.message).toContain(f.isoDate(20));
  });
  it("writes nothing when it refuses", async () => {
    const before = await sql`select (select count(*) from reserve.booking_intents) i, (select count(*) from reserve.booking_locks) l`;
    await attempt(unitId, 19, 21);
    expect(await sql`select (select count(*) from reserve.booking_intents) i, (select count(*) from reserve.booking_locks) l`).toEqual(before);
  });
});

describe("create_booking_intent prices and holds", () => {
  it("prices each night from the calendar, else the unit's base price", async () => {
    const { unitId } = await f.unit(sql, { nights: 5 });
    await sql`update reserve.availability_calendar set price = 70000 where unit_id = ${unitId} and date = ${f.isoDate(2)}`;
    const bi = await book(unitId, 1, 4);
    expect(bi.amount).toBe(String(50000 + 70000 + 50000));
    expect(bi.currency).toBe("BRL");
  });

  it("holds every night until the method's hold expiry, and says so in active_booking_locks", async () => {
    const { unitId } = await f.unit(sql, { nights: 5 });
    const card = await book(unitId, 1, 3);
    const minutes = (d: Date) => Math.round((d.getTime() - Date.now()) / 60_000);
    expect(minutes(card.expires_at)).toBe(15);
    expect(await nights(unitId, 1, 4)).toEqual([[0, 1, false], [0, 1, false], [0, 0, true]]);
    const locks = await sql`select lock_date, is_expired, intent_status from reserve.active_booking_locks
                            where booking_intent_id = ${card.id} order by lock_date`;
    expect(locks.map((l) => [l.lock_date.toISOString().slice(0, 10), l.is_expired, l.intent_status]))
      .toEqual([[f.isoDate(1), false, "pending"], [f.isoDate(2), false, "pending"]]);
    const pix = await book(unitId, 3, 4, { method: "pix" });
    expect(minutes(pix.expires_at)).toBe(30);
    await sql`update reserve.settings set value = '45' where key = 'hold_minutes_pix'`;
    const pix2 = await book(unitId, 4, 5, { method: "pix" });
    expect(minutes(pix2.expires_at)).toBe(45);
    await sql`update reserve.settings set value = '30' where key = 'hold_minutes_pix'`;
  });

  it("is all or nothing: a stay whose last night is taken holds none of its nights", async () => {
    const { unitId } = await f.unit(sql, { nights: 6 });
    await book(unitId, 4, 5);
    expect(await sqlState(sql`select reserve.create_booking_intent(${unitId}, ${f.isoDate(1)}, ${f.isoDate(5)}, 2)`)).toBe("RC106");
    expect(await nights(unitId, 1, 5)).toEqual([[0, 0, true], [0, 0, true], [0, 0, true], [0, 1, false]]);
  });

  it("acquire_booking_lock is idempotent: holding again adds nothing and can extend the expiry", async () => {
    const { unitId } = await f.unit(sql, { nights: 3 });
    const bi = await book(unitId, 1, 3);
    const later = new Date(Date.now() + 60 * 60_000);
    const locks = await sql`select * from reserve.acquire_booking_lock(${bi.id}, ${later})`;
    expect(locks).toHaveLength(2);
    expect(locks.every((l) => l.expires_at.getTime() === later.getTime())).toBe(true);
    expect(await nights(unitId, 1, 3)).toEqual([[0, 1, false], [0, 1, false]]);
  });

  it("release_booking_intent gives the nights back, once, and refuses while a payment is in flight", async () => {
    const { unitId } = await f.unit(sql, { nights: 3 });
    const bi = await book(unitId, 1, 3);
    const paymentId = await pay(bi);
    expect(await sqlState(sql`select reserve.release_booking_intent(${bi.id}, 'abandoned')`)).toBe("RC204");
    await applyStatus(sql, paymentId as string, "failed", { error_code: "card_declined" });
    const [released] = await sql`select * from reserve.release_booking_intent(${bi.id}, 'abandoned')`;
    expect(released.status).toBe("cancelled");
    const [again] = await sql`select * from reserve.release_booking_intent(${bi.id}, 'abandoned')`;
    expect(again.status).toBe("cancelled");
    expect(await nights(unitId, 1, 3)).toEqual([[0, 0, true], [0, 0, true]]);
    expect(await sqlState(sql`select reserve.release_booking_intent(gen_random_uuid())`)).toBe("RC107");
    await invariantsHold();
  });
});

describe("hold expiry", () => {
  it("release_expired_holds releases exactly the expired nights and expires their intents, idempotently", async () => {
    const { unitId } = await f.unit(sql, { nights: 6 });
    const lapsed = await book(unitId, 1, 3);
    const live = await book(unitId, 3, 5);
    await lapse(lapsed.id);
    await sql`select reserve.release_expired_holds()`; // earlier tests may have left lapsed holds too
    expect(await nights(unitId, 1, 6)).toEqual([[0, 0, true], [0, 0, true], [0, 1, false], [0, 1, false], [0, 0, true]]);
    const statuses = await sql`select id, status from reserve.booking_intents where id in ${sql([lapsed.id, live.id])}`;
    expect(Object.fromEntries(statuses.map((s) => [s.id, s.status]))).toEqual({ [lapsed.id]: "expired", [live.id]: "pending" });
    const locks = await sql`select status, released_at is not null as released from reserve.booking_locks where booking_intent_id = ${lapsed.id}`;
    expect(locks).toEqual([{ status: "expired", released: true }, { status: "expired", released: true }]);
    const [second] = await sql`select * from reserve.release_expired_holds()`;
    expect(second).toEqual({ released_locks: 0, expired_intents: 0 });
    await invariantsHold();
  });

  it("an intent paid after its hold lapsed re-holds its nights if they are still free", async () => {
    const { unitId } = await f.unit(sql, { nights: 4 });
    const bi = await book(unitId, 1, 3);
    const paymentId = await pay(bi);
    await lapse(bi.id);
    await sql`select reserve.release_expired_holds()`;
    const r = await succeedLate(paymentId);
    expect(r).toMatchObject({ status: "succeeded", finalize_outcome: "created" });
    expect(r.confirmation_code).toMatch(/^RES-\d{4}-[A-Z0-9]{6}$/);
    expect(await nights(unitId, 1, 3)).toEqual([[1, 0, false], [1, 0, false]]);
    await invariantsHold();
  });

  it("an intent paid after its nights were sold meanwhile is refused and flagged for refund", async () => {
    const { unitId } = await f.unit(sql, { nights: 4 });
    const slow = await book(unitId, 1, 3);
    const paymentId = await pay(slow);
    await lapse(slow.id);
    await sql`select reserve.release_expired_holds()`;
    const fast = await book(unitId, 2, 4);
    await applyStatus(sql, await pay(fast) as string, "succeeded");

    const r = await succeedLate(paymentId);
    expect(r).toMatchObject({ status: "succeeded", finalize_outcome: "nights_unavailable", reservation_id: null });
    expect(r.finalize_error).toContain(f.isoDate(2));
    const [p] = await sql`select refund_reason from reserve.payments where id = ${paymentId}`;
    expect(p.refund_reason).toBe("nights_unavailable");
    // the money is recorded as owed back to the guest, not as the host's
    const legs = await sql`select e.account, e.direction, e.amount::int from reserve.ledger_entries e
                           join reserve.ledger_transactions t on t.id = e.transaction_id
                           where t.payment_id = ${paymentId} order by e.direction`;
    expect(legs).toEqual([
      { account: "refunds_payable", direction: "credit", amount: Number(slow.amount) },
      { account: "receivable_stripe", direction: "debit", amount: Number(slow.amount) },
    ]);
    expect(await nights(unitId, 1, 4)).toEqual([[0, 0, true], [1, 0, false], [1, 0, false]]);
    // asking again gives the same answer and writes nothing more
    const [again] = await sql`select * from reserve.finalize_reservation(${paymentId})`;
    expect(again).toMatchObject({ success: false, outcome: "nights_unavailable" });
    const [n] = await sql`select count(*)::int from reserve.ledger_transactions where payment_id = ${paymentId}`;
    expect(n.count).toBe(1);
    // and what was paid is asked back at once, once (the poller sends it): it used to wait for an operator nobody paged
    const refunds = await sql`select amount::int, reason, request_key, status from reserve.refund_requests where payment_id = ${paymentId}`;
    expect(refunds).toEqual([{ amount: Number(slow.amount), reason: "nights_unavailable", request_key: `unsellable:${paymentId}`, status: "requested" }]);
    await invariantsHold();
  });

  it("a payment whose intent was cancelled meanwhile is refused and its refund requested", async () => {
    const { unitId } = await f.unit(sql, { nights: 4 });
    const bi = await book(unitId, 1, 3);
    const paymentId = await pay(bi);
    // as an operator cancels a stay by hand while its card payment is still being confirmed
    await sql`update reserve.booking_intents set status = 'cancelled' where id = ${bi.id}`;
    const r = await succeedLate(paymentId);
    expect(r).toMatchObject({ status: "succeeded", finalize_outcome: "intent_cancelled", reservation_id: null });
    await sql`select * from reserve.finalize_reservation(${paymentId})`;
    const refunds = await sql`select amount::int, reason from reserve.refund_requests where payment_id = ${paymentId}`;
    expect(refunds).toEqual([{ amount: Number(bi.amount), reason: "intent_cancelled" }]);
    await invariantsHold();
  });

  it("a hold that lapsed but was not yet swept still counts: the stay is sold to its payer", async () => {
    const { unitId } = await f.unit(sql, { nights: 3 });
    const bi = await book(unitId, 1, 3);
    const paymentId = await pay(bi);
    await lapse(bi.id);
    // nobody else can take the nights while the lapsed hold still counts in temp_holds
    expect(await sqlState(sql`select reserve.create_booking_intent(${unitId}, ${f.isoDate(1)}, ${f.isoDate(2)}, 1)`)).toBe("RC106");
    expect((await succeedLate(paymentId)).finalize_outcome).toBe("created");
    await invariantsHold();
  });
});

describe("inputs refused with our codes, not PostgreSQL's", () => {
  it("a malformed guest email -> RC001", async () => {
    const { unitId } = await f.unit(sql, { nights: 2 });
    expect(await sqlState(sql`select reserve.create_booking_intent(${unitId}, ${f.isoDate(1)}, ${f.isoDate(2)}, 1,
                                p_guest_email => 'not-an-email')`)).toBe("RC001");
  });

  it("a hold expiry in the past or more than a day away -> RC001", async () => {
    const { unitId } = await f.unit(sql, { nights: 2 });
    const bi = await book(unitId, 1, 2);
    for (const at of ["infinity", new Date(Date.now() - 60_000).toISOString(), new Date(Date.now() + 2 * 86_400_000).toISOString()]) {
      expect(await sqlState(sql`select reserve.acquire_booking_lock(${bi.id}, ${at}::text::timestamptz)`)).toBe("RC001");
    }
  });

  it("a setting that would stop every checkout or finalize is refused when written", async () => {
    for (const [key, value] of [["commission_bps", "10000"], ["commission_bps", "-1"], ["hold_minutes_card", "0"],
                                ["hold_minutes_pix", '"thirty"'], ["hold_minutes_card", "1.5"]]) {
      expect(await sqlState(sql`update reserve.settings set value = ${value}::jsonb where key = ${key}`), `${key}=${value}`).toBe("23514");
    }
  });
});
