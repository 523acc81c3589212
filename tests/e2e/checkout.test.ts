// The checkout function's answers: validation, limits, provider failures (nights given back), retries
// that never charge twice, and the three providers' payment details.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { localIssuer, signWithKey, userClaims } from "../../local/auth_keys.ts";
import { DEFAULT_LOCAL_JWT_SECRET, localKeys } from "../../local/keys.ts";
import { testSigningKey } from "../helpers/auth.ts";
import { startE2E, type E2E } from "../helpers/e2e.ts";
import { isoDate, unit } from "../helpers/fixtures.ts";

let e: E2E;
beforeAll(async () => {
  e = await startE2E();
});
afterAll(async () => {
  await e?.stop();
});

const stay = async (overrides: Record<string, unknown> = {}) => {
  const { unitId } = await unit(e.db.sql);
  return { unit_id: unitId, check_in: isoDate(2), check_out: isoDate(4), guests: 2, method: "card", ...overrides };
};

const heldNights = async (intentId: string) =>
  (await e.db.sql`select count(*)::int as n from reserve.booking_locks where booking_intent_id = ${intentId} and status = 'held'`)[0].n;

describe("checkout: requests it refuses", () => {
  it.each([
    ["no body fields", {}, 400, "invalid_request"],
    ["a bad date", { check_in: "2026-13-01" }, 400, "invalid_request"],
    ["zero guests", { guests: 0 }, 400, "invalid_request"],
    ["an unknown field", { coupon: "FREE" }, 400, "invalid_request"],
    ["card through MercadoPago", { provider: "mercadopago" }, 400, "invalid_provider"],
    ["PIX through Stripe", { method: "pix", provider: "stripe", guest_email: "a@b.co" }, 400, "invalid_provider"],
    ["too many guests for the unit", { guests: 9 }, 400, "too_many_guests"],
    ["check-out before check-in", { check_in: isoDate(4), check_out: isoDate(2) }, 400, "invalid_dates"],
    ["nights off the calendar", { check_in: isoDate(40), check_out: isoDate(42) }, 409, "unavailable"],
  ])("%s", async (_what, overrides, status, error) => {
    const body = Object.keys(overrides).length === 0 ? {} : await stay(overrides);
    const [before] = await e.db.sql`select count(*)::int as n from reserve.payments`;
    const res = await e.checkout(body);
    expect(res.status, JSON.stringify(res.body)).toBe(status);
    expect(res.body.error).toBe(error);
    const [after] = await e.db.sql`select count(*)::int as n from reserve.payments`;
    expect(after.n).toBe(before.n);
  });

  it.each([
    ["a NUL in the guest's name", { guest_name: "Ana\u0000x" }, "guest_name"],
    ["a right-to-left override in the guest's name", { guest_name: "Ana\u202egnp.exe" }, "guest_name"],
    ["a line break in the guest's name", { guest_name: "Ana\r\nBcc: x@y.z" }, "guest_name"],
    ["a lone surrogate in the guest's name", { guest_name: "Ana\ud800" }, "guest_name"],
    ["a NUL in the guest's e-mail", { guest_email: "ana\u0000@b.co" }, "guest_email"],
    ["a check-in in the year 0000", { check_in: "0000-01-10", check_out: "0000-01-12" }, "check_in"],
  ])("%s is 400 naming the field, and nothing is written", async (_what, overrides, field) => {
    const [before] = await e.db.sql`select (select count(*)::int from reserve.payments) as p, (select count(*)::int from reserve.booking_intents) as bi`;
    const res = await e.checkout(await stay(overrides));
    expect(res.status, JSON.stringify(res.body)).toBe(400);
    expect(res.body.error).toBe("invalid_request");
    expect(res.body.issues.map((i: { path: string }) => i.path)).toContain(field);
    const [after] = await e.db.sql`select (select count(*)::int from reserve.payments) as p, (select count(*)::int from reserve.booking_intents) as bi`;
    expect(after).toEqual(before);
  });

  it("a name of letters from other scripts and an emoji (a surrogate pair) is kept as sent", async () => {
    const res = await e.checkout(await stay({ guest_name: "Zoë Åström 🏖️ 山田" }));
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    const [bi] = await e.db.sql`select guest_name from reserve.booking_intents where id = ${res.body.booking_intent_id}`;
    expect(bi.guest_name).toBe("Zoë Åström 🏖️ 山田");
  });

  it("PIX needs the payer's e-mail, from the body or the user's token", async () => {
    const { email: _email, ...claims } = userClaims({ email: "-", sub: "guest-without-email", issuer: localIssuer(Number(new URL(e.functions.url).port)) });
    const noEmail = signWithKey(claims, testSigningKey);
    const res = await e.checkout(await stay({ method: "pix" }), noEmail);
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ error: "invalid_request", issues: [{ path: "guest_email" }] });
    expect((await e.checkout(await stay({ method: "pix" }))).status).toBe(201); // the token's email claim
  });

  it("an email claim that is no address (a NUL in it was a 500) is no email: PIX asks for guest_email", async () => {
    for (const email of ["a\u0000@b.c", "not an email", "ana\u202e@example.com"]) {
      const claims = userClaims({ email, sub: "guest-with-odd-email", issuer: localIssuer(Number(new URL(e.functions.url).port)) });
      const res = await e.checkout(await stay({ method: "pix" }), signWithKey(claims, testSigningKey));
      expect(res.status, JSON.stringify(res.body)).toBe(400);
      expect(res.body, JSON.stringify(email)).toMatchObject({ error: "invalid_request", issues: [{ path: "guest_email" }] });
    }
  });

  it("a token without a user is 401; no token at all is refused by the function's own JWT check", async () => {
    const anon = localKeys(DEFAULT_LOCAL_JWT_SECRET).anon;
    expect((await e.checkout(await stay(), anon)).status).toBe(401);
    const res = await e.post("checkout", await stay());
    expect(res.status).toBe(401);
    expect(res.body.error).toBe("invalid_jwt");
  });

  it.each([
    ["an empty body", {}, ["check_in", "check_out", "guests", "method", "unit_id"]],
    ["wrong types", { unit_id: "x", check_in: "tomorrow", check_out: 3, guests: "two", method: "cash" }, ["check_in", "check_out", "guests", "method", "unit_id"]],
    ["an unknown field", { unit_id: crypto.randomUUID(), check_in: "2030-01-01", check_out: "2030-01-03", guests: 1, method: "card", price: 1 }, ["price"]],
    ["a retry missing its method", { booking_intent_id: crypto.randomUUID() }, ["method"]],
    ["a retry with a bad id", { booking_intent_id: "nope", method: "card" }, ["booking_intent_id"]],
    ["an array", [], [""]],
    ["null", null, [""]],
  ])("a 400 names every missing or wrong field: %s", async (_what, body, paths) => {
    const res = await e.checkout(body as Record<string, unknown>);
    expect(res.status, JSON.stringify(res.body)).toBe(400);
    expect(res.body.error).toBe("invalid_request");
    expect([...new Set(res.body.issues.map((i: { path: string }) => i.path))].sort()).toEqual(paths);
    for (const issue of res.body.issues) expect(issue.message).not.toBe("Invalid input");
  });

  it("malformed JSON is 400, another content type 415, GET 405", async () => {
    const auth = { authorization: `Bearer ${e.userToken()}` };
    expect((await e.post("checkout", "{", auth)).body.error).toBe("invalid_json");
    expect((await e.post("checkout", "{}", { ...auth, "content-type": "text/plain" })).status).toBe(415);
    expect((await fetch(e.url("checkout"), { headers: auth })).status).toBe(405);
  });

  it("amounts outside the bounds are the runbook's amount_too_small / amount_too_large", async () => {
    await e.db.sql`update reserve.settings set value = '200000' where key = 'min_payment_amount'`;
    try {
      const res = await e.checkout(await stay());
      expect(res.status).toBe(400);
      expect(res.body).toMatchObject({ error: "amount_too_small", code: "RC110" });
    } finally {
      await e.db.sql`update reserve.settings set value = '100' where key = 'min_payment_amount'`;
    }
    await e.db.sql`update reserve.settings set value = '50000' where key = 'max_payment_amount'`;
    try {
      const res = await e.checkout(await stay());
      expect(res.body).toMatchObject({ error: "amount_too_large", code: "RC111" });
      const [held] = await e.db.sql`select count(*)::int as n from reserve.booking_intents where unit_id = ${res.body.message.match(/unit (\S+)/)[1]}`;
      expect(held.n).toBe(0); // nothing half-written: the intent and its holds went with the error
    } finally {
      await e.db.sql`update reserve.settings set value = '5000000' where key = 'max_payment_amount'`;
    }
  });

  it("a client past its hourly checkouts gets 429 rate_limited with Retry-After", async () => {
    await e.db.sql`update reserve.settings set value = '2' where key = 'checkouts_per_client_per_hour'`;
    try {
      const token = e.userToken();
      expect((await e.checkout(await stay(), token)).status).toBe(201);
      expect((await e.checkout(await stay(), token)).status).toBe(201);
      const third = await e.checkout(await stay(), token);
      expect(third.status).toBe(429);
      expect(third.body.error).toBe("rate_limited");
      expect(Number(third.headers.get("retry-after"))).toBeGreaterThan(0);
      expect((await e.checkout(await stay())).status).toBe(201); // another guest is not affected
    } finally {
      await e.db.sql`update reserve.settings set value = '20' where key = 'checkouts_per_client_per_hour'`;
    }
  });

  it("counts refused checkouts too: probing nights that are taken ends in 429 rate_limited", async () => {
    await e.db.sql`update reserve.settings set value = '3' where key = 'checkouts_per_client_per_hour'`;
    try {
      const token = e.userToken();
      const full = await stay();
      // a night nobody sells: each probe is refused (409 unavailable) and still counted
      await e.db.sql`update reserve.availability_calendar set is_blocked = true where unit_id = ${full.unit_id as string}`;
      for (let i = 0; i < 3; i++) {
        const probe = await e.checkout(full, token);
        expect(probe.status, JSON.stringify(probe.body)).toBe(409);
        expect(probe.body.error).toBe("unavailable");
      }
      const fourth = await e.checkout(await stay(), token);
      expect(fourth.status).toBe(429);
      expect(fourth.body).toMatchObject({ error: "rate_limited", code: "RC109" });
      expect(Number(fourth.headers.get("retry-after"))).toBeGreaterThan(0);
      const [{ n }] = await e.db.sql`select count(*)::int as n from reserve.booking_intents where unit_id = ${full.unit_id as string}`;
      expect(n).toBe(0);
    } finally {
      await e.db.sql`update reserve.settings set value = '20' where key = 'checkouts_per_client_per_hour'`;
    }
  });

  it("holds at most max_unpaid_holds_per_client unpaid stays per guest: the next checkouts at once get 429 too_many_holds", async () => {
    const token = e.userToken();
    const bodies = await Promise.all(Array.from({ length: 6 }, () => stay()));
    const answers = await Promise.all(bodies.map((b) => e.checkout(b, token)));
    const statuses = answers.map((a) => a.status).sort();
    expect(statuses).toEqual([201, 201, 201, 429, 429, 429]);
    for (const a of answers.filter((x) => x.status === 429)) {
      expect(a.body).toMatchObject({ error: "too_many_holds", code: "RC112" });
      expect(a.body.message).toMatch(/already holds 3 unpaid stays; the limit is 3/);
      expect(Number(a.headers.get("retry-after"))).toBeGreaterThan(0);
    }
    // the refused ones held nothing
    for (const [i, a] of answers.entries()) {
      if (a.status !== 429) continue;
      const [{ n }] = await e.db.sql`select count(*)::int as n from reserve.booking_intents where unit_id = ${bodies[i].unit_id as string}`;
      expect(n).toBe(0);
    }
    // a retry of a held stay is not a new hold
    const held = answers.find((a) => a.status === 201)!;
    const retry = await e.checkout({ booking_intent_id: held.body.booking_intent_id, method: "card" }, token);
    expect(retry.status, JSON.stringify(retry.body)).toBeLessThan(300);
  });
});

describe("checkout: provider failures give the nights back", () => {
  it.each([
    ["a 500 (after the client's own retry)", () => e.sandbox.control.failApi("stripe", { status: 500, times: 2 }), 503, "provider_unavailable"],
    ["a 429 (not retried)", () => e.sandbox.control.failApi("stripe", { status: 429, times: 1 }), 503, "provider_rate_limited"],
    ["a 400", () => e.sandbox.control.failApi("stripe", { status: 400, code: "parameter_invalid_integer", times: 1 }), 502, "provider_rejected"],
    ["a timeout (10 s, retried once)", () => e.sandbox.control.timeoutApi("stripe", { ms: 25_000, times: 2 }), 503, "provider_timeout"],
  ])("Stripe answering %s", async (_what, inject, status, error) => {
    const body = await stay();
    await e.sandbox.control.flush();
    inject();
    const res = await e.checkout(body);
    expect(res.status, JSON.stringify(res.body)).toBe(status);
    expect(res.body.error).toBe(error);
    const [p] = await e.db.sql`select p.status, p.error_code, p.booking_intent_id from reserve.payments p
                               join reserve.booking_intents bi on bi.id = p.booking_intent_id where bi.unit_id = ${body.unit_id as string}`;
    expect(p.status).toBe("failed");
    expect(p.error_code).toMatch(/^provider_/);
    expect(await heldNights(p.booking_intent_id)).toBe(0);
    // the same stay can be bought again at once
    expect((await e.checkout(body)).status).toBe(201);
  }, 60_000);
});

describe("checkout: retries never charge twice", () => {
  it("a retry while the attempt is in flight returns the same PaymentIntent", async () => {
    const token = e.userToken();
    const first = await e.checkout(await stay(), token);
    const again = await e.post("checkout", { booking_intent_id: first.body.booking_intent_id, method: "card" }, { authorization: `Bearer ${token}` });
    expect(again.status).toBe(201);
    expect(again.body).toMatchObject({ payment_id: first.body.payment_id, gateway_payment_id: first.body.gateway_payment_id, attempt: 1 });
    expect(again.body.client_secret).toBe(first.body.client_secret);
  });

  it("a retry that meets a provider hiccup leaves the live attempt open: the guest can still pay it", async () => {
    const token = e.userToken();
    const first = await e.checkout(await stay({ method: "pix", provider: "mercadopago", guest_email: "a@b.co" }), token);
    expect(first.status).toBe(201);
    await e.sandbox.control.flush();
    e.sandbox.control.failApi("mercadopago", { status: 500, times: 1 });
    const retry = await e.post("checkout", { booking_intent_id: first.body.booking_intent_id, method: "pix" }, { authorization: `Bearer ${token}` });
    expect(retry.status).toBe(503);
    expect(retry.body.error).toBe("provider_unavailable");
    const [p] = await e.db.sql`select status from reserve.payments where id = ${first.body.payment_id}`;
    expect(p.status).toBe("pending");
    expect(await heldNights(first.body.booking_intent_id)).toBe(2);
    e.sandbox.control.mercadopagoPay(first.body.gateway_payment_id);
    await e.sandbox.control.flush();
    const [r] = await e.db.sql`select payment_status from reserve.reservations where booking_intent_id = ${first.body.booking_intent_id}`;
    expect(r.payment_status).toBe("paid");
  });

  it("a retry without a provider continues with the attempt's (OpenPIX while the default is MercadoPago)", async () => {
    const token = e.userToken();
    const first = await e.checkout(await stay({ method: "pix", provider: "openpix", guest_email: "a@b.co" }), token);
    const retry = await e.post("checkout", { booking_intent_id: first.body.booking_intent_id, method: "pix" }, { authorization: `Bearer ${token}` });
    expect(retry.status, JSON.stringify(retry.body)).toBe(201);
    expect(retry.body).toMatchObject({ provider: "openpix", payment_id: first.body.payment_id });
  });

  it("a MercadoPago retry naming the intent, from a token with another e-mail than the payer's, hands out the same payment", async () => {
    // the retry's call carries the attempt's key: it must be the first call's body, payer included
    const token = e.userToken(undefined, "guest@example.com");
    const first = await e.checkout(await stay({ method: "pix", provider: "mercadopago", guest_email: "pagador@example.com" }), token);
    expect(first.status, JSON.stringify(first.body)).toBe(201);
    const retry = await e.post("checkout", { booking_intent_id: first.body.booking_intent_id, method: "pix" }, { authorization: `Bearer ${token}` });
    expect(retry.status, JSON.stringify(retry.body)).toBe(201);
    expect(retry.body).toMatchObject({ payment_id: first.body.payment_id, gateway_payment_id: first.body.gateway_payment_id, attempt: 1,
                                       qr_code: first.body.qr_code });
    const [p] = await e.db.sql`select status from reserve.payments where id = ${first.body.payment_id}`;
    expect(p.status).toBe("pending");
  });

  it("the same stay sent again by the same guest (its first answer lost: a 503, a dead connection) continues that checkout", async () => {
    const token = e.userToken();
    const body = await stay();
    const first = await e.checkout(body, token);
    expect(first.status, JSON.stringify(first.body)).toBe(201);
    const again = await e.checkout(body, token);
    expect(again.status, JSON.stringify(again.body)).toBe(201);
    expect(again.body).toMatchObject({ booking_intent_id: first.body.booking_intent_id, payment_id: first.body.payment_id });
    // someone else still finds the nights taken
    expect((await e.checkout(body)).status).toBe(409);
    const [n] = await e.db.sql`select count(*)::int from reserve.booking_intents where unit_id = ${body.unit_id as string}
                               and check_in = ${body.check_in as string} and status = 'pending'`;
    expect(n!.count).toBe(1);
  });

  it("another guest's intent is not found, in the very words of one that exists nowhere", async () => {
    const first = await e.checkout(await stay());
    const token = e.userToken();
    const res = await e.post("checkout", { booking_intent_id: first.body.booking_intent_id, method: "card" }, { authorization: `Bearer ${token}` });
    expect(res.status).toBe(404);
    expect(res.body.error).toBe("intent_not_found");
    const nowhere = crypto.randomUUID();
    const none = await e.post("checkout", { booking_intent_id: nowhere, method: "card" }, { authorization: `Bearer ${token}` });
    expect(none.status).toBe(404);
    expect({ ...res.body, message: res.body.message.replace(first.body.booking_intent_id, "<id>") })
      .toEqual({ ...none.body, message: none.body.message.replace(nowhere, "<id>") });
  });

  it("an intent stops accepting attempts after max_payment_attempts", async () => {
    await e.db.sql`update reserve.settings set value = '2' where key = 'max_payment_attempts'`;
    try {
      const token = e.userToken();
      const first = await e.checkout(await stay(), token);
      const retry = (id: string) => e.post("checkout", { booking_intent_id: id, method: "card" }, { authorization: `Bearer ${token}` });
      e.sandbox.control.stripeConfirm(first.body.gateway_payment_id, "declined");
      await e.sandbox.control.flush();
      expect((await retry(first.body.booking_intent_id)).body.attempt).toBe(2);
      const second = (await e.db.sql`select gateway_payment_id from reserve.payments where booking_intent_id = ${first.body.booking_intent_id} and attempt = 2`)[0];
      e.sandbox.control.stripeConfirm(second.gateway_payment_id, "declined");
      await e.sandbox.control.flush();
      const third = await retry(first.body.booking_intent_id);
      expect(third.status).toBe(429);
      expect(third.body.error).toBe("rate_limited");
    } finally {
      await e.db.sql`update reserve.settings set value = '5' where key = 'max_payment_attempts'`;
    }
  });

  it("a service-role caller may check out without a user (no per-client limit)", async () => {
    const res = await e.checkout(await stay(), localKeys(DEFAULT_LOCAL_JWT_SECRET).serviceRole);
    expect(res.status).toBe(201);
  });
});

describe("checkout: what the providers are told", () => {
  it.each([
    ["stripe", { method: "card" }],
    ["mercadopago", { method: "pix", provider: "mercadopago", guest_email: "pagador@example.com" }],
    ["openpix", { method: "pix", provider: "openpix", guest_email: "pagador@example.com", guest_name: "Ana" }],
  ])("%s: the unit's name and the stay's dates as ISO dates", async (provider, overrides) => {
    const body = await stay(overrides);
    const [u] = await e.db.sql`select name from reserve.unit_map where id = ${body.unit_id as string}`;
    const res = await e.checkout(body);
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    const p = e.sandbox.control.payment(provider as "stripe", res.body.gateway_payment_id) as Record<string, unknown>;
    const text = String(p.description ?? p.comment);
    expect(text).toBe(`Reserve Connect: ${u.name}, ${isoDate(2)} to ${isoDate(4)} (2 nights)`);
    expect(text).not.toMatch(/GMT|Coordinated/);
  });

  it("mercadopago: notifications come as webhooks only (source_news=webhooks opts the payment out of IPN)", async () => {
    const res = await e.checkout(await stay({ method: "pix", provider: "mercadopago", guest_email: "pagador@example.com" }));
    const p = e.sandbox.control.payment("mercadopago", res.body.gateway_payment_id) as Record<string, unknown>;
    expect(new URL(String(p.notification_url)).searchParams.get("source_news")).toBe("webhooks");
  });
});
