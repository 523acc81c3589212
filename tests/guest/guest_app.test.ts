// A guest's app as it is used: supabase-js in Node against the stack `npm start` runs, through the typed
// client (client/reserve_client.ts). Card and PIX checkouts, paid through the sandbox's HTTP control
// API, read back until confirmed; another guest gets 404 for the same ids; bad input is a typed error
// naming the field, before or after the round trip.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CheckoutResponse, GuestBooking } from "../../client/reserve_client.ts";
import { guestToken, startGuestStack, type GuestStack } from "../helpers/guest_app.ts";

let g: GuestStack;
beforeAll(async () => {
  g = await startGuestStack();
}, 120_000);
afterAll(async () => await g?.stop());

const confirmed = (b: GuestBooking) => b.state === "confirmed";

describe("a guest books and reads the booking back with supabase-js", () => {
  it("card: checkout, pay (sandbox control API), read until confirmed with a confirmation code", async () => {
    const reserve = g.guest(guestToken(randomUUID(), { email: "ana@example.com" }));
    const stay = await g.freeStay();
    const [unit] = await g.sql`select u.name, p.city_code, c.name as city_name from reserve.unit_map u
      join reserve.properties_map p on p.id = u.property_id join reserve.cities c on c.code = p.city_code where u.id = ${stay.unit_id}`;
    const out = await reserve.checkout({ ...stay, guests: 2, method: "card" });
    expect(out.error).toBeNull();
    const c = out.data as CheckoutResponse;
    expect(c.client_secret).toMatch(/^pi_.+_secret_/);

    const pending = await reserve.booking(c.booking_intent_id);
    expect(pending.error).toBeNull();
    expect(pending.data).toMatchObject({
      state: "awaiting_payment", check_in: stay.check_in, check_out: stay.check_out, nights: 2, guests: 2,
      unit: { id: stay.unit_id, name: unit!.name }, city: { code: unit!.city_code, name: unit!.city_name }, amount: c.amount, currency: "BRL",
      confirmation_code: null,
      next_step: { method: "card", provider: "stripe", payment_id: c.payment_id, pay: {},
                   resume: { booking_intent_id: c.booking_intent_id, method: "card" } },
    });
    expect(Date.parse(pending.data!.held_until!)).toBe(Date.parse(c.hold_expires_at));
    // the client secret is never stored, so never read back: resume hands the same attempt out again
    expect(JSON.stringify(pending.data)).not.toContain("secret");
    const resumed = await reserve.checkout(pending.data!.next_step!.resume);
    expect(resumed.data).toMatchObject({ payment_id: c.payment_id, client_secret: c.client_secret });

    await g.sandbox("stripeConfirm", c.gateway_payment_id, "succeeded");
    const done = await reserve.waitForBooking(c.booking_intent_id, { done: confirmed, intervalMs: 100, timeoutMs: 20_000 });
    expect(done.error).toBeNull();
    expect(done.data).toMatchObject({ state: "confirmed", reservation_status: "host_commit_pending", held_until: null,
                                      next_step: null, payment: { id: c.payment_id, status: "succeeded" } });
    expect(done.data!.confirmation_code).toMatch(/^RES-\d{4}-[A-Z0-9]{6}$/);
    const [r] = await g.sql`select confirmation_code from reserve.reservations where booking_intent_id = ${c.booking_intent_id}`;
    expect(done.data!.confirmation_code).toBe(r!.confirmation_code);
  });

  it("PIX: the booking shows the copy-paste code and ticket while pending, confirmed once the bank pays", async () => {
    const sub = randomUUID();
    const reserve = g.guest(guestToken(sub, { email: "bia@example.com" }));
    const stay = await g.freeStay();
    const { data: c, error } = await reserve.checkout({ ...stay, guests: 2, method: "pix", provider: "mercadopago" });
    expect(error).toBeNull();
    const pending = await reserve.booking(c!.booking_intent_id);
    expect(pending.data).toMatchObject({ state: "awaiting_payment", next_step: { method: "pix", provider: "mercadopago",
      pay: { qr_code: c!.qr_code, qr_code_base64: c!.qr_code_base64, ticket_url: c!.ticket_url } } });
    expect(c!.qr_code).toMatch(/^000201/);

    await g.sandbox("mercadopagoPay", c!.gateway_payment_id);
    const done = await reserve.waitForBooking(c!.booking_intent_id, { done: confirmed, intervalMs: 100, timeoutMs: 20_000 });
    expect(done.data).toMatchObject({ state: "confirmed", next_step: null });

    // the list: newest first, a page at a time
    const second = await reserve.checkout({ ...(await g.freeStay()), guests: 1, method: "pix", provider: "openpix" });
    expect(second.error).toBeNull();
    const page1 = await reserve.bookings({ limit: 1 });
    expect(page1.data!.bookings.map((b) => b.booking_intent_id)).toEqual([second.data!.booking_intent_id]);
    expect(page1.data!.bookings[0]!.next_step).toMatchObject({ provider: "openpix", pay: { qr_code: second.data!.qr_code,
      payment_link_url: second.data!.payment_link_url } });
    const page2 = await reserve.bookings({ limit: 1, cursor: page1.data!.next_cursor! });
    expect(page2.data!.bookings.map((b) => b.booking_intent_id)).toEqual([c!.booking_intent_id]);
    const page3 = await reserve.bookings({ limit: 1, cursor: page2.data!.next_cursor! });
    expect(page3.data).toEqual({ bookings: [], next_cursor: null });
    const all = await reserve.bookings();
    expect(all.data!.bookings).toHaveLength(2);
    expect(all.data!.next_cursor).toBeNull();
  });

  it("another guest gets booking_not_found (404) for the same id, like an unknown one, and an empty list", async () => {
    const owner = g.guest();
    const { data: c } = await owner.checkout({ ...(await g.freeStay()), guests: 2, method: "card" });
    const other = g.guest();
    const theirs = await other.booking(c!.booking_intent_id);
    const unknown = await other.booking(randomUUID());
    expect(theirs).toMatchObject({ data: null, error: { code: "booking_not_found", status: 404 } });
    expect(unknown.error).toMatchObject({ code: "booking_not_found", status: 404 });
    expect((await other.bookings()).data).toEqual({ bookings: [], next_cursor: null });
    // nor can they resume it
    expect((await other.checkout({ booking_intent_id: c!.booking_intent_id, method: "card" })).error).toMatchObject({ status: 404 });
  });
});

describe("errors are typed values naming the field", () => {
  it("the client refuses a bad request before sending it, in the function's own shape", async () => {
    const r = await g.guest().checkout({ unit_id: "not-a-uuid", check_in: "2026-13-01", check_out: "2026-12-10", guests: 2, method: "card" });
    expect(r.data).toBeNull();
    expect(r.error).toMatchObject({ code: "invalid_request", field: "unit_id", status: 400 });
    expect(r.error!.issues!.map((i) => i.path)).toEqual(["unit_id", "check_in"]);
    expect((await g.guest().bookings({ limit: 51 })).error).toMatchObject({ code: "invalid_request", field: "limit" });
    // the function's own fields, not the union's lone "Invalid input" for the whole body
    const stay = { unit_id: randomUUID(), check_in: "2027-01-10", check_out: "2027-01-12" };
    for (const [body, field] of [[{ ...stay, guests: 2, method: "card", coupon: "x" }, "coupon"],
                                 [{ booking_intent_id: randomUUID(), method: "bitcoin" }, "method"], [{}, "unit_id"]] as const) {
      const sent = await fetch(`${g.url}/functions/v1/checkout`, { method: "POST", body: JSON.stringify(body),
        headers: { authorization: `Bearer ${guestToken()}`, apikey: g.anonKey, "content-type": "application/json" } }).then((r) => r.json());
      const local = await g.guest().checkout(body as never);
      expect(local.error, JSON.stringify(body)).toMatchObject({ code: "invalid_request", field });
      expect(local.error!.issues!.map((i) => i.path), JSON.stringify(body)).toEqual(sent.issues.map((i: { path: string }) => i.path));
    }
    // an empty id would have called the listing and read its page as a booking
    for (const id of ["", "not-a-uuid", "../bookings"]) {
      expect((await g.guest().booking(id)).error, id).toMatchObject({ code: "invalid_request", field: "booking_intent_id", status: 400 });
    }
  });

  it("the function's 4xx arrive as the same values: bad limit, bad cursor, bad id, unavailable dates, no token", async () => {
    const reserve = g.guest();
    const invoke = (name: string) => fetch(`${g.url}/functions/v1/${name}`, { headers: { authorization: `Bearer ${guestToken()}`, apikey: g.anonKey } });
    // a forged cursor whose time Date.parse takes and PostgreSQL does not ("2024", "0", a 30th of February) was a 500
    const forgedCursor = (at: string) => `cursor=${Buffer.from(`${at}|${crypto.randomUUID()}`).toString("base64url")}`;
    for (const [q, field] of [["limit=0", "limit"], ["limit=x", "limit"], ["limit=0x10", "limit"], ["limit=1e1", "limit"], ["limit=%205", "limit"], ["cursor=%%%", "cursor"], ["cursor=abc", "cursor"], ["order=asc", ""],
                              [forgedCursor("2024"), "cursor"], [forgedCursor("0"), "cursor"], [forgedCursor("2026-02-30T00:00:00.000000+00:00"), "cursor"],
                              [forgedCursor("+275760-09-13T00:00:00.000Z"), "cursor"], [forgedCursor("0000-01-01T00:00:00+00:00"), "cursor"]]) {
      const res = await invoke(`bookings?${q}`);
      expect(res.status, q).toBe(400);
      const body = await res.json();
      expect(body.error, q).toBe("invalid_request");
      if (field) expect(body.issues[0].path, q).toBe(field);
    }
    const badId = await reserve.booking("123");
    expect(badId.error).toMatchObject({ code: "invalid_request", field: "booking_intent_id", status: 400 });

    const stay = await g.freeStay();
    const first = await reserve.checkout({ ...stay, guests: 2, method: "card" });
    expect(first.error).toBeNull();
    const taken = await g.guest().checkout({ ...stay, guests: 2, method: "card" });
    expect(taken.error).toMatchObject({ code: "unavailable", status: 409 });

    const expired = await g.guest(guestToken(randomUUID(), { expiresInS: -60 })).bookings();
    expect(expired.error).toMatchObject({ status: 401 });
    const forged = await g.guest(guestToken(randomUUID(), { secret: "another-secret-that-is-at-least-32-chars" })).bookings();
    expect(forged.error).toMatchObject({ status: 401 });
    // an API key is nobody's booking list
    const anon = await fetch(`${g.url}/functions/v1/bookings`, { headers: { authorization: `Bearer ${g.anonKey}`, apikey: g.anonKey } });
    expect(anon.status).toBe(401);
    expect((await fetch(`${g.url}/functions/v1/bookings`, { method: "POST", headers: { authorization: `Bearer ${guestToken()}` } })).status).toBe(405);
  });

  it("an app pinned to a region (supabase-js's x-region and ?forceFunctionRegion) books and lists as any other", async () => {
    const reserve = g.guest(guestToken(randomUUID(), { email: "bia@example.com" }), { region: "sa-east-1" });
    const stay = await g.freeStay();
    const out = await reserve.checkout({ ...stay, guests: 2, method: "card" });
    expect(out.error).toBeNull();
    const list = await reserve.bookings({ limit: 5 });
    expect(list.error).toBeNull();
    expect(list.data!.bookings.map((b) => b.booking_intent_id)).toEqual([out.data!.booking_intent_id]);
    expect((await reserve.booking(out.data!.booking_intent_id)).error).toBeNull();
  });
});
