// A checkout whose database connection dies mid-flight, as it really happens: the edge's backend is
// terminated (pg_terminate_backend) while it waits on a lock a second, real connection holds: inside
// begin_checkout, between begin_checkout and the provider call (reading the stay for the provider), or
// inside attach_gateway_payment (after the provider made its payment). The guest gets a 503 JSON, nothing
// is half written, and the guest sending the checkout again (the same stay, or its intent found through
// GET /bookings) ends with exactly one provider payment, attached and then paid through the webhook.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { randomUUID } from "node:crypto";
import type postgres from "postgres";
import { startE2E, until, type E2E } from "../helpers/e2e.ts";
import { isoDate, unit } from "../helpers/fixtures.ts";
import { partialRows } from "./fault_loop.ts";

type Provider = "stripe" | "mercadopago" | "openpix";

let e: E2E;
beforeAll(async () => {
  // one connection: the statement after a kill that postgres.js refuses with the old backend's error
  // (#1223, unsent) is then always the next one, which beforeEach spends on a health check
  e = await startE2E({ env: { RESERVE_DB_POOL_SIZE: "1" } });
}, 60_000);
afterAll(async () => {
  await e?.stop();
});

/** A kill may leave its error on the connection: a health check takes it, so the next request meets a fresh one. */
async function spendKilledConnection() {
  for (let tries = 0; tries < 4; tries++) {
    const res = await fetch(e.url("health"));
    await res.arrayBuffer();
    if (res.status === 200) break;
  }
}

beforeEach(spendKilledConnection);

async function stayFor(provider: Provider): Promise<Record<string, unknown>> {
  const { unitId } = await unit(e.db.sql, { nights: 10 });
  const stay = { unit_id: unitId, check_in: isoDate(2), check_out: isoDate(4), guests: 2 };
  return provider === "stripe"
    ? { ...stay, method: "card" }
    : { ...stay, method: "pix", provider, guest_email: "pagador@example.com", guest_name: "Ana" };
}

/** Every payment the provider holds, as its own id and the payment of ours it names: read from its API. */
async function providerPayments(provider: Provider): Promise<{ id: string; ours: string }[]> {
  const sb = e.sandbox;
  if (provider === "stripe") {
    const res = await fetch(`${sb.stripe.protocol}://${sb.stripe.host}:${sb.stripe.port}/v1/payment_intents?limit=100`,
      { headers: { authorization: `Bearer ${sb.stripe.secretKey}` } });
    const page = await res.json() as { data: { id: string; metadata: { payment_id?: string } }[]; has_more: boolean };
    expect(page.has_more).toBe(false);
    return page.data.map((pi) => ({ id: pi.id, ours: String(pi.metadata.payment_id) }));
  }
  if (provider === "mercadopago") {
    const res = await fetch(`${sb.mercadopago.apiBase}/v1/payments/search?limit=1000`,
      { headers: { authorization: `Bearer ${sb.mercadopago.accessToken}` } });
    const page = await res.json() as { paging: { total: number }; results: { id: number; external_reference: string }[] };
    expect(page.paging.total).toBe(page.results.length);
    return page.results.map((p) => ({ id: String(p.id), ours: p.external_reference }));
  }
  const res = await fetch(`${sb.openpix.apiBase}/api/v1/charge?limit=100`, { headers: { authorization: sb.openpix.appId } });
  const page = await res.json() as { pageInfo: { hasNextPage: boolean }; charges: { correlationID: string }[] };
  expect(page.pageInfo.hasNextPage).toBe(false);
  return page.charges.map((c) => ({ id: c.correlationID, ours: c.correlationID }));
}

/**
 * Waits until the edge's backend waits on a lock in a statement calling `fn`, terminates it, and answers
 * its pid; the caller still holds the lock.
 */
async function terminateEdgeWaitingIn(fn: string): Promise<number> {
  const pattern = `%${fn}%`;
  const [waiting] = await until(async () => {
    const rows = await e.db.sql<{ pid: number }[]>`
      select pid from pg_stat_activity
      where application_name = 'reserve-edge' and datname = current_database()
        and wait_event_type = 'Lock' and query ilike ${pattern}`;
    return rows.length ? rows : undefined;
  }, `an edge backend waiting on a lock in ${fn}`, 3_000);
  const [killed] = await e.db.sql<{ ok: boolean }[]>`select pg_terminate_backend(${waiting.pid}) as ok`;
  expect(killed.ok).toBe(true);
  return waiting.pid;
}

/** What the guest's intents and attempts are, and how many nights they hold. */
async function guestRows(clientId: string) {
  const intents = await e.db.sql<{ id: string; status: string }[]>`
    select id, status from reserve.booking_intents where client_id = ${clientId}`;
  const payments = await e.db.sql<{ id: string; intent: string; attempt: number; status: string; gateway_payment_id: string | null }[]>`
    select p.id, p.booking_intent_id as intent, p.attempt, p.status, p.gateway_payment_id from reserve.payments p
    join reserve.booking_intents bi on bi.id = p.booking_intent_id where bi.client_id = ${clientId} order by p.attempt`;
  const [held] = await e.db.sql<{ n: number }[]>`
    select count(*)::int as n from reserve.booking_locks l join reserve.booking_intents bi on bi.id = l.booking_intent_id
    where bi.client_id = ${clientId} and l.status = 'held'`;
  return { intents, payments, held: held.n };
}

/** The guest pays the provider's payment; its webhook completes ours. */
async function payAndComplete(provider: Provider, gatewayId: string, paymentId: string, intentId: string) {
  if (provider === "stripe") e.sandbox.control.stripeConfirm(gatewayId, "succeeded");
  else if (provider === "mercadopago") e.sandbox.control.mercadopagoPay(gatewayId);
  else e.sandbox.control.openpixPay(gatewayId);
  await e.sandbox.control.flush();
  await until(async () => {
    const [p] = await e.db.sql`select status from reserve.payments where id = ${paymentId}`;
    const [r] = await e.db.sql`select payment_status from reserve.reservations where booking_intent_id = ${intentId}`;
    return p?.status === "succeeded" && r?.payment_status === "paid";
  }, `payment ${paymentId} succeeded with its reservation paid`);
}

/** The guest sends the same checkout again; it must continue the one attempt and end with one provider payment. */
async function retryEndsWithOnePayment(provider: Provider, token: string, body: Record<string, unknown>,
                                       before: Set<string>, clientId: string, attempt?: { id: string }) {
  // as a guest's app does on 503 database_unavailable (retry-after): the pool may refuse the first statement on
  // a connection the kill left behind with the old backend's error (postgres.js #1223), unsent, nothing of it run
  let retry = await e.checkout(body, token);
  for (let tries = 1; tries < 4 && retry.status === 503 && retry.body.error === "database_unavailable"; tries++) {
    retry = await e.checkout(body, token);
  }
  expect(retry.status, JSON.stringify(retry.body)).toBe(201);
  const rows = await guestRows(clientId);
  expect(rows.intents).toEqual([{ id: retry.body.booking_intent_id, status: "pending" }]);
  expect(rows.payments).toEqual([{ id: retry.body.payment_id, intent: retry.body.booking_intent_id, attempt: 1, status: "pending",
                                  gateway_payment_id: retry.body.gateway_payment_id }]);
  if (attempt) expect(retry.body.payment_id).toBe(attempt.id);
  const made = (await providerPayments(provider)).filter((p) => !before.has(p.id));
  expect(made).toEqual([{ id: retry.body.gateway_payment_id, ours: retry.body.payment_id }]);
  await payAndComplete(provider, retry.body.gateway_payment_id, retry.body.payment_id, retry.body.booking_intent_id);
  expect(await partialRows(e.db.sql)).toEqual([]);
}

/** Runs `run` while a transaction on a connection of the test's own holds what `lock` took; then lets it go. */
async function holding<T>(lock: (tx: postgres.ReservedSql) => Promise<void>, run: () => Promise<T>): Promise<T> {
  const conn = await e.db.sql.reserve();
  try {
    await conn`begin`;
    await lock(conn);
    return await run();
  } finally {
    await conn`rollback`.catch(() => {});
    conn.release();
  }
}

const PROVIDERS: [string, Provider][] = [["stripe card", "stripe"], ["mercadopago pix", "mercadopago"], ["openpix pix", "openpix"]];

/**
 * The guest's checkout, its connection terminated while attach_gateway_payment waits for the payment row
 * this test holds: the provider has made its payment by then. Returns what the guest was answered, and the attempt.
 */
async function killedInAttach(provider: Provider, token: string, clientId: string, body: Record<string, unknown>) {
  // the provider answers late: long enough for the test to take the payment row before the edge attaches
  e.sandbox.control.timeoutApi(provider, { ms: 2_000, times: 1 });
  const first = e.checkout(body, token);
  const attempt = await until(async () => (await guestRows(clientId)).payments[0], "the attempt recorded by begin_checkout");
  await holding(async (tx) => {
    const [p] = await tx`select gateway_payment_id from reserve.payments where id = ${attempt.id} for update`;
    expect(p.gateway_payment_id).toBeNull();
  }, async () => {
    const pid = await terminateEdgeWaitingIn("attach_gateway_payment");
    await until(async () => (await e.db.sql`select 1 from pg_stat_activity where pid = ${pid}`).length === 0, `backend ${pid} gone`);
  });
  return { answer: await first, attempt };
}

describe("checkout: the connection dies in attach_gateway_payment, after the provider made its payment", () => {
  it.each(PROVIDERS)("%s: 503 JSON, nothing half written, the retry continues the attempt with one provider payment", async (_what, provider) => {
    const clientId = randomUUID();
    const token = e.userToken(clientId);
    const body = await stayFor(provider);
    const before = new Set((await providerPayments(provider)).map((p) => p.id));
    const { answer, attempt } = await killedInAttach(provider, token, clientId, body);
    expect(answer.status, JSON.stringify(answer.body)).toBe(503);
    expect(answer.headers.get("content-type")).toMatch(/^application\/json/);
    expect(answer.body.error).toBe("database_unavailable");
    expect(answer.headers.get("retry-after")).toBeTruthy();

    // the attempt is as begin_checkout left it: open, its nights held, nothing else written
    expect(await partialRows(e.db.sql)).toEqual([]);
    const rows = await guestRows(clientId);
    expect(rows.intents.map((i) => i.status)).toEqual(["pending"]);
    expect(rows.payments.map((p) => [p.id, p.attempt, p.status])).toEqual([[attempt.id, 1, "pending"]]);
    expect(rows.held).toBe(2);
    const made = (await providerPayments(provider)).filter((p) => !before.has(p.id));
    expect(made.map((p) => p.ours)).toEqual([attempt.id]);

    await retryEndsWithOnePayment(provider, token, body, before, clientId, attempt);
  }, 30_000);

  it("mercadopago: the guest's app finds the held booking (GET /bookings) and retries it by its id, without the payer's e-mail", async () => {
    // the PIX was asked for another payer than the token's e-mail: the retry must still send what the first call sent
    const clientId = randomUUID();
    const token = e.userToken(clientId, "guest@example.com");
    const body = await stayFor("mercadopago");
    expect(body.guest_email).not.toBe("guest@example.com");
    const before = new Set((await providerPayments("mercadopago")).map((p) => p.id));
    const { answer, attempt } = await killedInAttach("mercadopago", token, clientId, body);
    expect(answer.status, JSON.stringify(answer.body)).toBe(503);
    // read as the app does, again on a 503 (the request after a kill may meet the old backend's error, unsent)
    let listed = await fetch(e.url("bookings"), { headers: { authorization: `Bearer ${token}` } });
    for (let tries = 1; tries < 4 && listed.status === 503; tries++) {
      await listed.arrayBuffer();
      listed = await fetch(e.url("bookings"), { headers: { authorization: `Bearer ${token}` } });
    }
    expect(listed.status).toBe(200);
    const { bookings } = await listed.json() as { bookings: { booking_intent_id: string; state: string }[] };
    expect(bookings).toHaveLength(1);
    await retryEndsWithOnePayment("mercadopago", token, { booking_intent_id: bookings[0].booking_intent_id, method: "pix" },
      before, clientId, attempt);
  }, 30_000);
});

describe("checkout: the connection dies in begin_checkout, before the provider is asked", () => {
  it("stripe card: the retry's own connection dies after begin_checkout, before the provider is asked: 503, and the next retry still makes one payment", async () => {
    const clientId = randomUUID();
    const token = e.userToken(clientId);
    const body = await stayFor("stripe");
    const before = new Set((await providerPayments("stripe")).map((p) => p.id));
    const { answer, attempt } = await killedInAttach("stripe", token, clientId, body);
    expect(answer.status, JSON.stringify(answer.body)).toBe(503);
    await spendKilledConnection();
    // the retry names its intent, so begin_checkout reads no unit; what the provider is told of the stay does
    const retry = { booking_intent_id: attempt.intent, method: "card" };
    const second = await holding(async (tx) => {
      await tx`lock table reserve.unit_map in access exclusive mode`;
    }, async () => {
      const pending = e.checkout(retry, token);
      await terminateEdgeWaitingIn("from reserve.unit_map");
      return pending;
    });
    expect(second.status, JSON.stringify(second.body)).toBe(503);
    expect(second.body.error).toBe("database_unavailable");
    expect(await partialRows(e.db.sql)).toEqual([]);
    expect((await guestRows(clientId)).payments.map((p) => [p.id, p.status])).toEqual([[attempt.id, "pending"]]);
    await retryEndsWithOnePayment("stripe", token, retry, before, clientId, attempt);
  }, 30_000);

  it.each(PROVIDERS)("%s: 503 JSON, nothing written, the retry makes one provider payment", async (_what, provider) => {
    const clientId = randomUUID();
    const token = e.userToken(clientId);
    const body = await stayFor(provider);
    const before = new Set((await providerPayments(provider)).map((p) => p.id));
    // begin_checkout takes the client's lock first (a client's new checkouts one after another)
    const answer = await holding(async (tx) => {
      await tx`select pg_advisory_xact_lock(hashtextextended(${`reserve.checkout_client:${clientId}`}, 0))`;
    }, async () => {
      const first = e.checkout(body, token);
      await terminateEdgeWaitingIn("begin_checkout");
      return first;
    });
    expect(answer.status, JSON.stringify(answer.body)).toBe(503);
    expect(answer.headers.get("content-type")).toMatch(/^application\/json/);
    expect(answer.body.error).toBe("database_unavailable");
    expect(answer.headers.get("retry-after")).toBeTruthy();

    expect(await partialRows(e.db.sql)).toEqual([]);
    expect(await guestRows(clientId)).toEqual({ intents: [], payments: [], held: 0 });
    expect((await providerPayments(provider)).filter((p) => !before.has(p.id))).toEqual([]);

    // at once, on the connection the pool opens again in place of the terminated one (see db.ts)
    await retryEndsWithOnePayment(provider, token, body, before, clientId);
  }, 30_000);
});
