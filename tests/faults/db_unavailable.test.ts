// A database that is not there: stopped (connections refused), or a black hole that accepts the
// connection and never answers (a partition, a pooler stuck). Every function answers JSON 503
// database_unavailable with Retry-After within its deadline, never a hang; a webhook's answer stays a
// 5xx so the provider redelivers; the poller ends within its budget; and once the database is back
// the same gateway serves again.
import net from "node:net";
import Stripe from "stripe";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { FunctionsServer } from "../../local/functions.ts";
import { signUserToken } from "../../local/auth_keys.ts";
import { migrate } from "../../local/migrate.ts";
import { testSigningKey } from "../helpers/auth.ts";
import { privateCluster, type PrivateCluster } from "../helpers/cluster.ts";
import { startTestFunctions } from "../helpers/functions.ts";

// a statement's deadline is 4 s; past this it is a hang
const HANG_MS = 12_000;
const WEBHOOK_SECRET = "whsec_db_unavailable_test";
const CRON_SECRET = "db-unavailable-cron";

let cluster: PrivateCluster;
let fns: FunctionsServer;
let blackHole: net.Server;
let held: net.Socket[] = [];
let fnsInHole: FunctionsServer;

// checkout asks the database before the provider, so the provider is configured but never reached
// (its caller's token first: both gateways trust one key and one issuer)
const ISSUER = "http://db-unavailable.test/auth/v1";
const env = { RESERVE_CRON_SECRET: CRON_SECRET, STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
              STRIPE_SECRET_KEY: "sk_test_never_called", STRIPE_API_BASE: "http://127.0.0.1:9", RESERVE_JWT_ISSUER: ISSUER,
              MERCADOPAGO_ACCESS_TOKEN: "TEST-never-answered", MERCADOPAGO_API_BASE: "http://127.0.0.1:9", MERCADOPAGO_WEBHOOK_SECRET: "mp-secret" };

beforeAll(async () => {
  cluster = await privateCluster();
  await migrate(cluster.url());
  fns = await startTestFunctions(cluster.url(), env);
  blackHole = net.createServer((s) => { held.push(s); s.on("error", () => {}); });
  await new Promise<void>((r) => blackHole.listen(0, "127.0.0.1", () => r()));
  const port = (blackHole.address() as net.AddressInfo).port;
  fnsInHole = await startTestFunctions(`postgresql://postgres:postgres@127.0.0.1:${port}/postgres?sslmode=disable`, env);
}, 120_000);

afterAll(async () => {
  await fns?.stop();
  await fnsInHole?.stop();
  for (const s of held) s.destroy();
  blackHole?.close();
  await cluster?.destroy();
});

async function call(server: FunctionsServer, fn: string, init: RequestInit = {}) {
  const started = performance.now();
  const res = await fetch(server.functionUrl(fn), { ...init, signal: AbortSignal.timeout(60_000) });
  const text = await res.text();
  let body: any;
  try { body = JSON.parse(text); } catch { body = text; }
  return { status: res.status, body, headers: res.headers, ms: performance.now() - started };
}

const token = () => signUserToken(testSigningKey, { email: "g@example.com", issuer: ISSUER });

const requests: Record<string, () => Promise<RequestInit>> = {
  health: async () => ({}),
  checkout: async () => ({
    method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${token()}` },
    body: JSON.stringify({ unit_id: crypto.randomUUID(), check_in: "2027-03-01", check_out: "2027-03-03", guests: 2, method: "card" }),
  }),
  webhook_stripe: async () => {
    const payload = JSON.stringify({
      id: `evt_${crypto.randomUUID().replace(/-/g, "")}`, object: "event", api_version: "2026-07-29.dahlia",
      created: Math.floor(Date.now() / 1000), livemode: false, pending_webhooks: 1, request: { id: null, idempotency_key: null },
      type: "payment_intent.succeeded",
      data: { object: { id: "pi_unavailable", object: "payment_intent", amount: 1000, currency: "brl", status: "succeeded", metadata: {} } },
    });
    const header = await Stripe.webhooks.generateTestHeaderStringAsync({ payload, secret: WEBHOOK_SECRET });
    return { method: "POST", headers: { "content-type": "application/json", "stripe-signature": header }, body: payload };
  },
  poll_payment_status: async () => ({
    method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${CRON_SECRET}` },
    body: JSON.stringify({ budget_ms: 1000 }),
  }),
};

function expectUnavailable(fn: string, r: Awaited<ReturnType<typeof call>>) {
  expect(r.ms, `${fn} answered in ${Math.round(r.ms)} ms`).toBeLessThan(HANG_MS);
  expect(r.status, `${fn}: ${JSON.stringify(r.body)}`).toBe(503);
  expect(typeof r.body).toBe("object");
  if (fn === "health") {
    expect(r.body).toMatchObject({ status: "unavailable", database: "unreachable", error: "database_unavailable" });
  } else {
    expect(r.body).toMatchObject({ error: "database_unavailable" });
    expect(typeof r.body.message).toBe("string");
  }
  expect(Number(r.headers.get("retry-after"))).toBeGreaterThan(0);
  // nothing about where the database is
  expect(JSON.stringify(r.body)).not.toMatch(/127\.0\.0\.1|postgres(ql)?:\/\//);
}

describe("a database that is not there", () => {
  it("serves normally while it is up", async () => {
    expect((await call(fns, "health")).status).toBe(200);
  });

  it("in a black hole that accepts and never answers: every function 503 within the deadline", async () => {
    const answers = await Promise.all(Object.keys(requests).map(async (fn) => [fn, await call(fnsInHole, fn, await requests[fn]())] as const));
    for (const [fn, r] of answers) expectUnavailable(fn, r);
  });

  it("stopped: every function answers 503 database_unavailable at once, concurrently too", async () => {
    await cluster.stop();
    for (const fn of Object.keys(requests)) expectUnavailable(fn, await call(fns, fn, await requests[fn]()));
    const storm = await Promise.all(Array.from({ length: 20 }, async (_, i) => {
      const fn = Object.keys(requests)[i % 4];
      return [fn, await call(fns, fn, await requests[fn]())] as const;
    }));
    for (const [fn, r] of storm) expectUnavailable(fn, r);
    // an unsigned IPN cannot be told ours or not: MercadoPago is asked, as before, and its silence is a
    // 503 MercadoPago retries, never a 200 "none of ours" that would drop a payment's news for good
    const ipn = await call(fns, "webhook_pix/mercadopago?topic=payment&id=123456789", { method: "POST", body: "" });
    expect(ipn.status, JSON.stringify(ipn.body)).toBe(503);
    expect(ipn.body.error).toBe("provider_unavailable");
    expect(fns.process.exitCode).toBeNull();
    expect(fnsInHole.process.exitCode).toBeNull();
  });

  it("back up: the same gateway serves again, without a restart", async () => {
    await cluster.restart();
    const deadline = Date.now() + 20_000;
    let last = await call(fns, "health");
    while (last.status !== 200 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      last = await call(fns, "health");
    }
    expect(last.status).toBe(200);
    const poll = await call(fns, "poll_payment_status", await requests.poll_payment_status());
    expect(poll.status, JSON.stringify(poll.body)).toBe(200);
    expect(poll.body.ok).toBe(true);
  });
});
