// The sandbox keeps its state across restarts: a restarted sandbox with the same
// stateDir is the same provider: the same secrets (signatures the functions verify still verify), the same
// payments (refunds of payments made before the restart work through stripe-node and the PIX HTTP APIs),
// the same idempotency keys, events and deliveries. A crash mid-write loses at most the last moments.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import Stripe from "stripe";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startProviderSandbox, type ProviderSandbox } from "../../local/sandbox/index.ts";
import { startReceiver, type Receiver } from "./receiver.ts";

type Json = Record<string, any>;
const dirs: string[] = [];
const tempDir = () => {
  const d = mkdtempSync(path.join(tmpdir(), "sandbox-state-"));
  dirs.push(d);
  return d;
};
let rx: Receiver;
let current: ProviderSandbox | undefined;

beforeAll(async () => {
  rx = await startReceiver(() => current!);
});
afterAll(async () => {
  await current?.stop();
  await rx.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const stripeOf = (sb: ProviderSandbox) =>
  new Stripe(sb.stripe.secretKey, { host: sb.stripe.host, port: sb.stripe.port, protocol: "http", maxNetworkRetries: 0 });

async function http(sb: ProviderSandbox, provider: "mercadopago" | "openpix", method: string, p: string, body?: unknown, key?: string) {
  const base = provider === "mercadopago" ? sb.mercadopago.apiBase : sb.openpix.apiBase;
  const auth = provider === "mercadopago" ? `Bearer ${sb.mercadopago.accessToken}` : sb.openpix.appId;
  const res = await fetch(`${base}${p}`, { method, body: body === undefined ? undefined : JSON.stringify(body),
    headers: { authorization: auth, "content-type": "application/json", ...(key && { "x-idempotency-key": key }) } });
  return { status: res.status, body: (await res.json()) as Json };
}

describe("a restarted sandbox is the same provider", () => {
  it("keeps secrets, payments, idempotency keys, events and deliveries; refunds of old payments work", async () => {
    const dir = tempDir();
    const first = await startProviderSandbox({ stateDir: dir, stripeWebhookUrl: `${rx.url}/stripe`, openpixWebhookUrl: `${rx.url}/openpix` });
    current = first;
    const port = first.stripe.port;
    const s1 = stripeOf(first);
    const pi = await s1.paymentIntents.create({ amount: 64_000, currency: "brl", allowed_payment_method_types: ["card"],
      metadata: { payment_id: "p-old" } }, { idempotencyKey: "create-p-old" });
    first.control.stripeConfirm(pi.id, "succeeded");
    const mp = await http(first, "mercadopago", "POST", "/v1/payments", { transaction_amount: 320, payment_method_id: "pix",
      payer: { email: "guest@example.com" }, external_reference: "p-mp", notification_url: `${rx.url}/mp` }, "mp-key-1");
    first.control.mercadopagoPay(mp.body.id);
    await http(first, "openpix", "POST", "/api/v1/charge", { correlationID: "p-opx", value: 20_000 });
    first.control.openpixPay("p-opx");
    await first.control.waitForDeliveries(5, 10_000);
    await first.control.flush();
    const paged = await fetch(first.pagerduty.eventsUrl, { method: "POST", body: JSON.stringify({ routing_key: first.pagerduty.routingKey,
      event_action: "trigger", dedup_key: "before-restart", payload: { summary: "s", source: "t", severity: "error" } }) });
    expect(paged.status).toBe(202);
    const before = { secrets: [first.stripe, first.mercadopago, first.openpix, first.pagerduty, first.slack], events: first.control.events().length,
      deliveries: first.control.deliveries().length };
    await first.stop();
    expect(JSON.parse(readFileSync(path.join(dir, "secrets.json"), "utf8")).stripeSecretKey).toBe(first.stripe.secretKey);
    expect(statSync(path.join(dir, "secrets.json")).mode & 0o777).toBe(0o600);

    const second = await startProviderSandbox({ stateDir: dir, port, stripeWebhookUrl: `${rx.url}/stripe`, openpixWebhookUrl: `${rx.url}/openpix` });
    current = second;
    expect([second.stripe, second.mercadopago, second.openpix, second.pagerduty, second.slack]).toEqual(before.secrets);
    expect(second.control.pagerdutyAlert("before-restart")).toMatchObject({ status: "triggered" });
    expect((await fetch(second.pagerduty.eventsUrl, { method: "POST", body: JSON.stringify({ routing_key: second.pagerduty.routingKey,
      event_action: "resolve", dedup_key: "before-restart" }) })).status).toBe(202);
    expect(second.control.pagerdutyAlert("before-restart")!.status).toBe("resolved");
    expect(second.control.events().length).toBe(before.events);
    expect(second.control.deliveries().length).toBe(before.deliveries);
    const seen = rx.received.length;
    const s2 = stripeOf(second);
    // the same key and body replay the answer from before the restart
    const replay = await s2.paymentIntents.create({ amount: 64_000, currency: "brl", allowed_payment_method_types: ["card"],
      metadata: { payment_id: "p-old" } }, { idempotencyKey: "create-p-old" });
    expect(replay.id).toBe(pi.id);
    const refund = await s2.refunds.create({ payment_intent: pi.id, amount: 14_000 });
    expect(refund).toMatchObject({ status: "succeeded", amount: 14_000, payment_intent: pi.id });
    expect((await s2.paymentIntents.retrieve(pi.id, { expand: ["latest_charge"] })).latest_charge).toMatchObject({ amount_refunded: 14_000 });
    const mpRefund = await http(second, "mercadopago", "POST", `/v1/payments/${mp.body.id}/refunds`, { amount: 20 }, "mp-refund-1");
    expect(mpRefund).toMatchObject({ status: 201, body: { payment_id: mp.body.id, amount: 20, status: "approved" } });
    expect((await http(second, "mercadopago", "POST", "/v1/payments", { transaction_amount: 320, payment_method_id: "pix",
      payer: { email: "guest@example.com" }, external_reference: "p-mp", notification_url: `${rx.url}/mp` }, "mp-key-1")).body.id).toBe(mp.body.id);
    const opxRefund = await http(second, "openpix", "POST", "/api/v1/charge/p-opx/refund", { correlationID: "r-opx", value: 5_000 });
    expect(opxRefund).toMatchObject({ status: 200, body: { refund: { value: 5_000, correlationID: "r-opx" } } });
    // webhooks after the restart are signed with the secrets the receiver (our functions) was given before it
    await second.control.waitForDeliveries(before.deliveries + 4, 10_000);
    await second.control.flush();
    const after = rx.received.slice(seen);
    expect(after.map((r) => r.path)).toEqual(expect.arrayContaining(["/stripe", "/mp", "/openpix"]));
    expect(after.every((r) => r.verified)).toBe(true);
    // and an event from before the restart can be redelivered
    const old = second.control.events("stripe").find((e) => e.type === "payment_intent.succeeded")!;
    expect((await second.control.redeliver(old.id)).status).toBe(200);
    await second.stop();
    current = undefined;
  });

  it("survives a crash mid-write: the last whole snapshot loads, a half-written temp file is ignored", async () => {
    const dir = tempDir();
    const child = spawn(process.execPath, ["--import", "tsx", path.resolve(import.meta.dirname, "state_writer.ts"), dir],
      { stdio: ["ignore", "pipe", "inherit"] });
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on("data", (d: Buffer) => d.toString().includes("ready") && resolve());
      child.once("exit", (code) => reject(new Error(`writer exited ${code}`)));
    });
    const file = path.join(dir, "state.json");
    const deadline = Date.now() + 20_000;
    // let it write several snapshots, then kill it without warning, while it is writing
    let sizes = new Set<number>();
    while (sizes.size < 4 && Date.now() < deadline) {
      if (existsSync(file)) sizes.add(statSync(file).size);
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(sizes.size).toBeGreaterThanOrEqual(4);
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));
    writeFileSync(path.join(dir, "state.json.99999.tmp"), '{"version":1,"state":{"stripe":'); // a torn write
    const sb = await startProviderSandbox({ stateDir: dir });
    current = sb;
    expect(readdirSync(dir).filter((f) => f.endsWith(".tmp"))).toEqual([]);
    const stripe = stripeOf(sb);
    const list = await stripe.paymentIntents.list({ limit: 100 });
    expect(list.data.length).toBeGreaterThan(0);
    // every restored PaymentIntent is whole: its charge and balance transaction came back with it
    for (const pi of list.data) {
      expect(pi.status).toBe("succeeded");
      const charge = await stripe.charges.retrieve(pi.latest_charge as string, { expand: ["balance_transaction"] });
      expect((charge.balance_transaction as Stripe.BalanceTransaction).amount).toBe(pi.amount);
    }
    await sb.stop();
    current = undefined;
  });
});
