// PIX through MercadoPago and OpenPIX: creation rules, expiry (lazy and by timer), payment after expiry,
// refunds, and the HTTP control routes that `npm start` users drive with curl.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startProviderSandbox, type ProviderSandbox } from "../../local/sandbox/index.ts";
import { startReceiver, type Receiver } from "./receiver.ts";

let sb: ProviderSandbox;
let rx: Receiver;

beforeAll(async () => {
  rx = await startReceiver(() => sb);
  sb = await startProviderSandbox({ openpixWebhookUrl: `${rx.url}/openpix` });
});
afterAll(async () => {
  await sb.stop();
  await rx.close();
});

type Json = Record<string, any>;

async function mp(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${sb.mercadopago.apiBase}${path}`, {
    method, body: body === undefined ? undefined : JSON.stringify(body),
    headers: { authorization: `Bearer ${sb.mercadopago.accessToken}`, "content-type": "application/json", ...headers },
  });
  return { status: res.status, body: (await res.json()) as Json };
}

async function op(method: string, path: string, body?: unknown, auth = sb.openpix.appId) {
  const res = await fetch(`${sb.openpix.apiBase}${path}`, {
    method, body: body === undefined ? undefined : JSON.stringify(body),
    headers: { authorization: auth, "content-type": "application/json" },
  });
  return { status: res.status, body: (await res.json()) as Json };
}

const pixBody = (extra: Json = {}) => ({ transaction_amount: 320.9, description: "2 nights, Copacabana", payment_method_id: "pix",
  payer: { email: "guest@example.com", first_name: "Ana" }, external_reference: "booking-1",
  notification_url: `${rx.url}/mp`, metadata: { bookingId: "booking-1" }, ...extra });

describe("MercadoPago", () => {
  it("creates a pending PIX payment in MercadoPago's shape", async () => {
    const { status, body } = await mp("POST", "/v1/payments", pixBody(), { "x-idempotency-key": "k-1" });
    expect(status).toBe(201);
    expect(body).toMatchObject({ status: "pending", status_detail: "pending_waiting_transfer", transaction_amount: 320.9,
      transaction_amount_refunded: 0, currency_id: "BRL", date_approved: null, external_reference: "booking-1",
      payment_method_id: "pix", payment_type_id: "bank_transfer", metadata: { booking_id: "booking-1" },
      point_of_interaction: { type: "OPENPLATFORM", transaction_data: { qr_code: expect.stringMatching(/^000201/), qr_code_base64: expect.any(String) } } });
    expect(body.id).toBeTypeOf("number");
    expect(body.date_of_expiration).toMatch(/-03:00$/);
    const read = await mp("GET", `/v1/payments/${body.id}`);
    expect(read.body.id).toBe(body.id);
  });

  it("requires X-Idempotency-Key, replays the same key, rejects a wrong token", async () => {
    expect((await mp("POST", "/v1/payments", pixBody())).status).toBe(400);
    const a = await mp("POST", "/v1/payments", pixBody(), { "x-idempotency-key": "k-2" });
    const b = await mp("POST", "/v1/payments", pixBody(), { "x-idempotency-key": "k-2" });
    expect(b.body.id).toBe(a.body.id);
    const conflict = await mp("POST", "/v1/payments", pixBody({ transaction_amount: 1 }), { "x-idempotency-key": "k-2" });
    expect(conflict.status).toBe(409);
    const res = await fetch(`${sb.mercadopago.apiBase}/v1/payments/${a.body.id}`, { headers: { authorization: "Bearer nope" } });
    expect(res.status).toBe(401);
    expect((await mp("GET", "/v1/payments/1")).body).toMatchObject({ status: 404, error: "not_found" });
  });

  it("expires lazily on read, refuses payment after expiry unless told, then notifies the approval", async () => {
    const soon = new Date(Date.now() + 150).toISOString();
    const { body } = await mp("POST", "/v1/payments", pixBody({ date_of_expiration: soon }), { "x-idempotency-key": "k-3" });
    await new Promise((r) => setTimeout(r, 200));
    expect((await mp("GET", `/v1/payments/${body.id}`)).body).toMatchObject({ status: "cancelled", status_detail: "expired" });
    expect(() => sb.control.mercadopagoPay(body.id)).toThrow(/expired/);
    expect(sb.control.mercadopagoPay(body.id, { afterExpiry: true })).toMatchObject({ status: "approved", status_detail: "accredited" });
    const actions = sb.control.events("mercadopago").filter((e) => (e.body as Json).data.id === String(body.id)).map((e) => e.type);
    expect(actions).toEqual(["payment.created", "payment.updated", "payment.updated"]);
  });

  it("expires by timer even if nobody reads the payment", async () => {
    const soon = new Date(Date.now() + 100).toISOString();
    const { body } = await mp("POST", "/v1/payments", pixBody({ date_of_expiration: soon }), { "x-idempotency-key": "k-4" });
    const deadline = Date.now() + 3_000;
    const updated = () => sb.control.events("mercadopago").some((e) => (e.body as Json).data.id === String(body.id) && e.type === "payment.updated");
    while (!updated() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(updated()).toBe(true);
    expect(sb.control.payment("mercadopago", body.id)).toMatchObject({ status: "cancelled", status_detail: "expired" });
    const { body: other } = await mp("POST", "/v1/payments", pixBody(), { "x-idempotency-key": "k-4b" });
    expect(sb.control.expire("mercadopago", other.id)).toMatchObject({ status: "cancelled", status_detail: "expired" });
  });

  it("refunds partially then fully", async () => {
    const { body } = await mp("POST", "/v1/payments", pixBody({ transaction_amount: 100 }), { "x-idempotency-key": "k-5" });
    expect((await mp("POST", `/v1/payments/${body.id}/refunds`, {})).status).toBe(400); // not paid yet
    sb.control.mercadopagoPay(body.id);
    const part = await mp("POST", `/v1/payments/${body.id}/refunds`, { amount: 30 }, { "x-idempotency-key": "r-1" });
    expect(part).toMatchObject({ status: 201, body: { payment_id: body.id, amount: 30, status: "approved" } });
    expect((await mp("GET", `/v1/payments/${body.id}`)).body).toMatchObject({ status: "approved", status_detail: "partially_refunded", transaction_amount_refunded: 30 });
    const rest = await mp("POST", `/v1/payments/${body.id}/refunds`, {});
    expect(rest.body.amount).toBe(70);
    expect((await mp("GET", `/v1/payments/${body.id}`)).body).toMatchObject({ status: "refunded", transaction_amount_refunded: 100 });
  });

  it("seeds 10,000 payments", () => {
    const ids = sb.control.seedMercadoPagoPayments(10_000, { status: "approved", transaction_amount: 250 });
    expect(new Set(ids).size).toBe(10_000);
    expect(sb.control.payment("mercadopago", ids[42]!)).toMatchObject({ status: "approved", transaction_amount: 250 });
  });
});

describe("OpenPIX", () => {
  it("creates a charge, refuses a repeated correlationID unless return_existing, reads by globalID", async () => {
    const created = await op("POST", "/api/v1/charge", { correlationID: "c-1", value: 32_090, comment: "Copacabana", expiresIn: 3600 });
    expect(created.status).toBe(200);
    expect(created.body).toMatchObject({ correlationID: "c-1", brCode: expect.stringMatching(/^000201/),
      charge: { status: "ACTIVE", value: 32_090, correlationID: "c-1", expiresIn: 3600, transactionID: expect.any(String) } });
    expect((await op("POST", "/api/v1/charge", { correlationID: "c-1", value: 32_090 })).status).toBe(400);
    const existing = await op("POST", "/api/v1/charge?return_existing=true", { correlationID: "c-1", value: 32_090 });
    expect(existing.body.charge.globalID).toBe(created.body.charge.globalID);
    const byGlobal = await op("GET", `/api/v1/charge/${encodeURIComponent(created.body.charge.globalID)}`);
    expect(byGlobal.body.charge.correlationID).toBe("c-1");
    expect((await op("GET", "/api/v1/charge/c-1", undefined, "wrong")).status).toBe(401);
  });

  it("expires, sends CHARGE_EXPIRED, and takes a payment after expiry only when told", async () => {
    await op("POST", "/api/v1/charge", { correlationID: "c-2", value: 10_000, expiresIn: 3600 });
    const before = sb.control.deliveries().length;
    sb.control.expire("openpix", "c-2");
    expect((await op("GET", "/api/v1/charge/c-2")).body.charge.status).toBe("EXPIRED");
    expect(() => sb.control.openpixPay("c-2")).toThrow(/expired/);
    expect(sb.control.openpixPay("c-2", { afterExpiry: true })).toMatchObject({ status: "COMPLETED" });
    const got = await sb.control.waitForDeliveries(before + 2, 5_000);
    expect(got.slice(before).map((d) => [d.type, d.status])).toEqual(expect.arrayContaining([
      ["OPENPIX:CHARGE_EXPIRED", 200], ["OPENPIX:CHARGE_COMPLETED", 200]]));
    expect(rx.received.filter((r) => (r.body.charge as Json | undefined)?.correlationID === "c-2").every((r) => r.verified)).toBe(true);
  });

  it("refunds through /charge/:id/refund with its own correlationID and emits the refund events", async () => {
    await op("POST", "/api/v1/charge", { correlationID: "c-3", value: 20_000 });
    sb.control.openpixPay("c-3");
    const r1 = await op("POST", "/api/v1/charge/c-3/refund", { correlationID: "refund-1", value: 5_000, comment: "1 night" });
    expect(r1.body.refund).toMatchObject({ status: "IN_PROCESSING", value: 5_000, correlationID: "refund-1" });
    expect((await op("POST", "/api/v1/charge/c-3/refund", { correlationID: "refund-1", value: 5_000 })).body.refund.endToEndId)
      .toBe(r1.body.refund.endToEndId);
    expect((await op("POST", "/api/v1/charge/c-3/refund", { correlationID: "refund-2", value: 15_001 })).status).toBe(400);
    const list = await op("GET", "/api/v1/charge/c-3/refund");
    expect(list.body.refunds).toEqual([expect.objectContaining({ correlationID: "refund-1", status: "CONFIRMED" })]);
    const types = sb.control.events("openpix").map((e) => e.type);
    expect(types).toEqual(expect.arrayContaining(["PIX_TRANSACTION_REFUND_SENT_CONFIRMED", "OPENPIX:TRANSACTION_REFUND_RECEIVED"]));
    const keys = await fetch(`${sb.openpix.apiBase}/api/v1/webhook/public-keys`).then((r) => r.json()) as Json;
    expect(Buffer.from(keys.public_keys[0].key).toString("base64")).toBe(sb.openpix.webhookPublicKey);
  });
});

describe("HTTP control", () => {
  it("drives the same levers over /_sandbox", async () => {
    const info = await fetch(`${sb.url}/_sandbox`).then((r) => r.json()) as Json;
    expect(info.stripe.secretKey).toBe(sb.stripe.secretKey);
    expect(info.methods).toContain("stripeConfirm");
    const pi = await fetch(`${sb.url}/v1/payment_intents`, {
      method: "POST", body: "amount=9000&currency=brl&metadata[booking_id]=b-http",
      headers: { authorization: `Bearer ${sb.stripe.secretKey}`, "content-type": "application/x-www-form-urlencoded" },
    }).then((r) => r.json()) as Json;
    expect(pi.metadata).toEqual({ booking_id: "b-http" });
    const post = (method: string, args: unknown[]) => fetch(`${sb.url}/_sandbox/${method}`, { method: "POST", body: JSON.stringify(args) });
    const confirmed = await post("stripeConfirm", [pi.id, "succeeded"]);
    expect(await confirmed.json()).toMatchObject({ status: "succeeded" });
    const again = await post("stripeConfirm", [pi.id, "succeeded"]);
    expect(again.status).toBe(409);
    expect((await post("setWebhookMode", ["all", { duplicate: 2 }])).status).toBe(200);
    expect((await post("setWebhookMode", ["all", "deliver"])).status).toBe(200);
    const payment = await fetch(`${sb.url}/_sandbox/payment/stripe/${pi.id}`).then((r) => r.json()) as Json;
    expect(payment.amount_received).toBe(9000);
    expect((await fetch(`${sb.url}/_sandbox/nope`, { method: "POST", body: "[]" })).status).toBe(404);
  });
});
