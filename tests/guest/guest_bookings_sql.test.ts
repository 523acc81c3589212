// reserve.guest_bookings / reserve.guest_booking: a guest reads only the bookings their client id (the
// token's sub) made, each in the state a guest understands, newest first with a keyset cursor; another
// client's id is RC120 exactly like an unknown one.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, sqlState, type Sql, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";
import { applyStatus, attachGateway } from "../helpers/money.ts";

let db: TestDatabase;
let sql: Sql;
beforeAll(async () => {
  db = await createTestDatabase();
  sql = db.sql;
  // a guest here holds more unpaid stays at once than the cap allows (the cap has its own tests in checkout_sql)
  await sql`update reserve.settings set value = '100' where key = 'max_unpaid_holds_per_client'`;
});
afterAll(async () => await db?.drop());

const pixObject = { id: 123, point_of_interaction: { transaction_data: { qr_code: "00020126pix", ticket_url: "https://pay/x" } } };

/** A checkout of `client` through begin_checkout, attached to its provider payment as checkout does. */
async function checkout(client: string, opts: { unitId?: string; method?: string; provider?: string; from?: number } = {}) {
  const unitId = opts.unitId ?? (await f.unit(sql, { nights: 30 })).unitId;
  const [c] = await sql`
    select * from reserve.begin_checkout(
      p_client_id => ${client}, p_method => ${opts.method ?? "pix"}, p_provider => ${opts.provider ?? "mercadopago"},
      p_unit_id => ${unitId}, p_check_in => ${f.isoDate(opts.from ?? 1)}, p_check_out => ${f.isoDate((opts.from ?? 1) + 2)},
      p_guests => 2, p_guest_email => 'ana@example.com')`;
  await attachGateway(sql, c.payment_id, `gw_${randomUUID()}`, { provider_object: pixObject });
  return { unitId, intentId: c.booking_intent_id as string, paymentId: c.payment_id as string };
}

const booking = async (client: string, id: string) => (await sql`select * from reserve.guest_booking(${client}, ${id}::uuid)`)[0];

describe("guest_booking: the states a guest sees", () => {
  it("awaiting_payment: held until the intent's expiry, with the provider's object of the pending attempt", async () => {
    const who = randomUUID();
    const c = await checkout(who);
    const b = await booking(who, c.intentId);
    const [bi] = await sql`select expires_at, amount from reserve.booking_intents where id = ${c.intentId}`;
    const [u] = await sql`select name from reserve.unit_map where id = ${c.unitId}`;
    expect(b).toMatchObject({
      booking_intent_id: c.intentId, state: "awaiting_payment", payment_id: c.paymentId, payment_status: "pending",
      method: "pix", provider: "mercadopago", unit_name: u.name, city_code: "RIO", city_name: "City RIO",
      check_in: new Date(`${f.isoDate(1)}T00:00:00Z`), check_out: new Date(`${f.isoDate(3)}T00:00:00Z`), nights: 2, guests: 2, currency: "BRL", confirmation_code: null,
      refunded_amount: "0", refund_pending_amount: "0",
    });
    expect(b.amount).toBe(String(bi.amount));
    expect(b.held_until).toEqual(bi.expires_at);
    expect(b.pending_payment_object).toEqual(pixObject);
    expect(b.payment_expires_at).toBeInstanceOf(Date);
  });

  it("confirmed once paid, with its confirmation code; the pending object is gone", async () => {
    const who = randomUUID();
    const c = await checkout(who);
    await applyStatus(sql, c.paymentId, "succeeded");
    const b = await booking(who, c.intentId);
    const [r] = await sql`select confirmation_code from reserve.reservations where booking_intent_id = ${c.intentId}`;
    expect(b).toMatchObject({ state: "confirmed", confirmation_code: r.confirmation_code, reservation_status: "host_commit_pending",
                              held_until: null, pending_payment_object: null, payment_status: "succeeded" });
    expect(b.confirmation_code).toMatch(/^RES-\d{4}-[A-Z0-9]{6}$/);
  });

  it("payment_failed with the provider's error, still held so a new attempt may be made", async () => {
    const who = randomUUID();
    const c = await checkout(who);
    await applyStatus(sql, c.paymentId, "failed", { error_code: "cc_rejected_insufficient_amount" });
    const b = await booking(who, c.intentId);
    expect(b).toMatchObject({ state: "payment_failed", payment_error_code: "cc_rejected_insufficient_amount", pending_payment_object: null });
    expect(b.held_until).toBeInstanceOf(Date);
  });

  it("payment_processing while the provider confirms", async () => {
    const who = randomUUID();
    const c = await checkout(who, { method: "card", provider: "stripe" });
    await applyStatus(sql, c.paymentId, "processing");
    expect((await booking(who, c.intentId)).state).toBe("payment_processing");
  });

  it("expired once the hold lapsed with nothing paid", async () => {
    const who = randomUUID();
    const c = await checkout(who);
    await applyStatus(sql, c.paymentId, "expired");
    await sql`update reserve.booking_intents set expires_at = now() - interval '1 second' where id = ${c.intentId}`;
    await sql`select reserve.release_expired_holds()`;
    const b = await booking(who, c.intentId);
    expect(b).toMatchObject({ state: "expired", held_until: null });
  });

  it("refund_pending after a cancellation, then refunded with the amount the provider returned", async () => {
    const who = randomUUID();
    const c = await checkout(who);
    await applyStatus(sql, c.paymentId, "succeeded");
    const [r] = await sql`select id, total_amount from reserve.reservations where booking_intent_id = ${c.intentId}`;
    await sql`select reserve.cancel_reservation(${r.id}::uuid, 'guest asked')`;
    const pending = await booking(who, c.intentId);
    expect(pending).toMatchObject({ state: "refund_pending", reservation_status: "cancelled", refund_pending_amount: String(r.total_amount) });
    await applyStatus(sql, c.paymentId, "refunded", { refunded_amount: Number(r.total_amount) });
    const done = await booking(who, c.intentId);
    expect(done).toMatchObject({ state: "refunded", refunded_amount: String(r.total_amount), refund_pending_amount: "0" });
  });

  it("cancelled when the reservation is cancelled with nothing refunded", async () => {
    const who = randomUUID();
    const c = await checkout(who);
    await applyStatus(sql, c.paymentId, "succeeded");
    const [r] = await sql`select id from reserve.reservations where booking_intent_id = ${c.intentId}`;
    await sql`select reserve.cancel_reservation(${r.id}::uuid, 'no show policy', 0)`;
    expect((await booking(who, c.intentId)).state).toBe("cancelled");
  });

  it("stays confirmed when a second charge for it is owed back, with the amount pending refund", async () => {
    const who = randomUUID();
    const c = await checkout(who);
    await applyStatus(sql, c.paymentId, "succeeded");
    // the guest paid twice (a second provider payment for the same intent): the second is a duplicate charge
    const second = await f.payment(sql, c.intentId, { provider: "mercadopago", method: "pix", attempt: 2,
      amount: (await sql`select amount from reserve.booking_intents where id = ${c.intentId}`)[0]!.amount,
      expires_at: new Date(Date.now() + 600_000) });
    await applyStatus(sql, second.id as string, "succeeded");
    const b = await booking(who, c.intentId);
    const [bi] = await sql`select amount from reserve.booking_intents where id = ${c.intentId}`;
    expect(b).toMatchObject({ state: "confirmed", payment_id: c.paymentId, refund_pending_amount: String(bi!.amount), refunded_amount: "0" });
  });

  it("RC120 for another client's booking, the same as for an unknown id; RC001 without a client", async () => {
    const who = randomUUID();
    const c = await checkout(who);
    expect(await sqlState(booking(randomUUID(), c.intentId))).toBe("RC120");
    expect(await sqlState(booking(who, randomUUID()))).toBe("RC120");
    expect(await sqlState(booking("", c.intentId))).toBe("RC001");
  });
});

describe("guest_bookings: the client's bookings, newest first, by keyset pages", () => {
  it("pages through exactly the client's bookings with (created_at, id) cursors, none twice", async () => {
    const who = randomUUID();
    const { unitId } = await f.unit(sql, { nights: 30 });
    const mine: string[] = [];
    for (let i = 0; i < 5; i++) mine.push((await checkout(who, { unitId, from: 1 + i * 3 })).intentId);
    await checkout(randomUUID(), { unitId, from: 20 }); // someone else's, same unit
    const seen: string[] = [];
    let before: { created_at: string; id: string } | null = null;
    for (;;) {
      const page: any[] = before
        ? await sql`select *, created_at::text as at from reserve.guest_bookings(${who}, 2, row(${before.created_at}::text::timestamptz, ${before.id}::uuid)::reserve.guest_booking_cursor)`
        : await sql`select *, created_at::text as at from reserve.guest_bookings(${who}, 2)`;
      if (page.length === 0) break;
      expect(page.length).toBeLessThanOrEqual(2);
      seen.push(...page.map((r) => r.booking_intent_id));
      const last = page[page.length - 1];
      before = { created_at: last.at, id: last.booking_intent_id };
    }
    expect(seen).toEqual([...mine].reverse());
  });

  it("orders bookings made in one transaction (one created_at) by id, so pages of one still see each once", async () => {
    const who = randomUUID();
    const { unitId } = await f.unit(sql, { nights: 30 });
    const ids = await sql.begin(async (tx) => {
      const out: string[] = [];
      for (let i = 0; i < 3; i++) {
        const [c] = await tx`select booking_intent_id from reserve.begin_checkout(p_client_id => ${who}, p_method => 'card',
          p_provider => 'stripe', p_unit_id => ${unitId}, p_check_in => ${f.isoDate(1 + i * 3)}, p_check_out => ${f.isoDate(3 + i * 3)}, p_guests => 2)`;
        out.push(c!.booking_intent_id);
      }
      return out;
    });
    const [{ n }] = await sql`select count(distinct created_at)::int as n from reserve.booking_intents where client_id = ${who}`;
    expect(n).toBe(1);
    const seen: string[] = [];
    // created_at as text both ways: a Date (postgres.js reads and sends timestamptz as one) drops the
    // microseconds the cursor needs
    let page = await sql`select booking_intent_id, created_at::text as at from reserve.guest_bookings(${who}, 1)`;
    while (page.length) {
      seen.push(page[0]!.booking_intent_id);
      page = await sql`select booking_intent_id, created_at::text as at from reserve.guest_bookings(${who}, 1,
        row(${page[0]!.at}::text::timestamptz, ${page[0]!.booking_intent_id}::uuid)::reserve.guest_booking_cursor)`;
    }
    expect(seen).toEqual([...ids].sort().reverse());
  });

  it("refuses a limit outside 1..50 and half a cursor with RC001", async () => {
    const who = randomUUID();
    expect(await sqlState(sql`select * from reserve.guest_bookings(${who}, 0)`)).toBe("RC001");
    expect(await sqlState(sql`select * from reserve.guest_bookings(${who}, 51)`)).toBe("RC001");
    expect(await sqlState(sql`select * from reserve.guest_bookings(${who}, 10, row(now(), null)::reserve.guest_booking_cursor)`)).toBe("RC001");
    expect(await sqlState(sql`select * from reserve.guest_bookings(null, 10)`)).toBe("RC001");
  });

  it("is executable by service_role only", async () => {
    const rows = await sql`
      select r.rolname, has_function_privilege(r.rolname, 'reserve.guest_bookings(text, integer, reserve.guest_booking_cursor)', 'execute') as list,
             has_function_privilege(r.rolname, 'reserve.guest_booking(text, uuid)', 'execute') as one
      from pg_roles r where r.rolname in ('anon', 'authenticated', 'service_role') order by r.rolname`;
    expect(rows.map((r) => [r.rolname, r.list, r.one])).toEqual([["anon", false, false], ["authenticated", false, false], ["service_role", true, true]]);
  });
});
