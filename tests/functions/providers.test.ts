// The provider adapters shared by the functions: each provider's objects and events reduced to our
// status, and the signature checks, against signatures made with Node's own crypto.
import { createHmac, createSign, generateKeyPairSync } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import type Stripe from "stripe";
import { describe, expect, it } from "vitest";
import { getMercadoPagoPayment, mercadoPagoUpdate, saoPauloTimestamp, verifyMercadoPagoSignature, type MercadoPagoPayment } from "../../supabase/functions/_shared/providers/mercadopago.ts";
import { getOpenPixCharge, openPixChargeUpdate, openPixEventUpdate, verifyOpenPixSignature, type OpenPixCharge } from "../../supabase/functions/_shared/providers/openpix.ts";
import { paymentIntentUpdate, stripeEventUpdate } from "../../supabase/functions/_shared/providers/stripe.ts";
import { ProviderError } from "../../supabase/functions/_shared/providers/types.ts";

const PAYMENT_ID = "5b0f0c3e-8f0e-4a57-9d43-3c2f4a0b1c2d";
const event = (type: string, object: Record<string, unknown>, created = 1_800_000_000) =>
  ({ id: "evt_1", object: "event", type, created, data: { object } }) as unknown as Stripe.Event;

describe("Stripe", () => {
  it.each([
    ["payment_intent.processing", "processing"],
    ["payment_intent.succeeded", "succeeded"],
    ["payment_intent.canceled", "cancelled"],
  ])("%s is %s, with our payment id and the event time", (type, status) => {
    const u = stripeEventUpdate(event(type, { id: "pi_1", status: "x", metadata: { payment_id: PAYMENT_ID } }));
    expect(u).toMatchObject({ status, gatewayPaymentId: "pi_1", paymentId: PAYMENT_ID, eventAt: new Date(1_800_000_000_000) });
  });

  it("payment_failed carries the decline code", () => {
    const u = stripeEventUpdate(event("payment_intent.payment_failed", {
      id: "pi_1", status: "requires_payment_method", metadata: {},
      last_payment_error: { code: "card_declined", decline_code: "insufficient_funds", message: "no funds" },
    }));
    expect(u).toMatchObject({ status: "failed", errorCode: "insufficient_funds", errorMessage: "no funds", paymentId: undefined });
  });

  it("charge.refunded gives the cumulative amount; full means refunded", () => {
    expect(stripeEventUpdate(event("charge.refunded", { id: "ch_1", payment_intent: "pi_1", amount: 1000, amount_refunded: 300, refunded: false, metadata: {} })))
      .toMatchObject({ status: "partially_refunded", refundedAmount: 300, gatewayPaymentId: "pi_1" });
    expect(stripeEventUpdate(event("charge.refunded", { id: "ch_1", payment_intent: "pi_1", amount: 1000, amount_refunded: 1000, refunded: true, metadata: {} })))
      .toMatchObject({ status: "refunded", refundedAmount: 1000 });
  });

  it("disputes: opened is disputed, won is succeeded, lost is a refund of the disputed amount", () => {
    const dp = (status: string) => ({ id: "dp_1", payment_intent: "pi_1", charge: "ch_1", amount: 1000, status });
    expect(stripeEventUpdate(event("charge.dispute.created", dp("needs_response")))?.status).toBe("disputed");
    expect(stripeEventUpdate(event("charge.dispute.closed", dp("won")))?.status).toBe("succeeded");
    expect(stripeEventUpdate(event("charge.dispute.closed", dp("lost")))).toMatchObject({ status: "refunded", refundedAmount: 1000 });
  });

  it("types we do not act on are null", () => {
    expect(stripeEventUpdate(event("customer.created", { id: "cus_1" }))).toBeNull();
    expect(stripeEventUpdate(event("charge.refunded", { id: "ch_1", payment_intent: null, amount: 1, amount_refunded: 1 }))).toBeNull();
  });

  it("a PaymentIntent read by the poller", () => {
    const pi = (o: Record<string, unknown>) => paymentIntentUpdate({ id: "pi_1", metadata: {}, last_payment_error: null, latest_charge: null, ...o } as unknown as Stripe.PaymentIntent);
    expect(pi({ status: "requires_payment_method" }).status).toBe("pending");
    expect(pi({ status: "requires_payment_method", last_payment_error: { code: "card_declined" } }).status).toBe("failed");
    expect(pi({ status: "processing" }).status).toBe("processing");
    expect(pi({ status: "canceled" }).status).toBe("cancelled");
    expect(pi({ status: "succeeded", latest_charge: { amount: 1000, amount_refunded: 0, disputed: false } }).status).toBe("succeeded");
    expect(pi({ status: "succeeded", latest_charge: { amount: 1000, amount_refunded: 400, disputed: false } })).toMatchObject({ status: "partially_refunded", refundedAmount: 400 });
    expect(pi({ status: "succeeded", latest_charge: { amount: 1000, amount_refunded: 0, disputed: true } }).status).toBe("disputed");
  });
});

describe("MercadoPago", () => {
  const payment = (o: Partial<MercadoPagoPayment>): MercadoPagoPayment =>
    ({ id: 123, status: "pending", transaction_amount: 1234.56, external_reference: PAYMENT_ID, date_last_updated: "2026-11-27T10:00:00.000-03:00", ...o });

  it.each([
    [{ status: "pending" }, "pending"],
    [{ status: "in_process" }, "processing"],
    [{ status: "authorized" }, "processing"],
    [{ status: "approved" }, "succeeded"],
    [{ status: "rejected", status_detail: "cc_rejected_other_reason" }, "failed"],
    [{ status: "cancelled", status_detail: "expired" }, "expired"],
    [{ status: "cancelled", status_detail: "by_collector" }, "cancelled"],
    [{ status: "refunded" }, "refunded"],
    [{ status: "charged_back" }, "refunded"],
    [{ status: "in_mediation" }, "disputed"],
    [{ status: "approved", transaction_amount_refunded: 100 }, "partially_refunded"],
    [{ status: "approved", transaction_amount_refunded: 1234.56 }, "refunded"],
  ] as const)("%o is %s", (o, status) => {
    const u = mercadoPagoUpdate(payment(o));
    expect(u.status).toBe(status);
    expect(u).toMatchObject({ gatewayPaymentId: "123", paymentId: PAYMENT_ID });
  });

  it("converts reais to centavos without float drift", () => {
    expect(mercadoPagoUpdate(payment({ status: "approved", transaction_amount_refunded: 0.29 })).refundedAmount).toBe(29);
    expect(mercadoPagoUpdate(payment({ status: "refunded" })).refundedAmount).toBe(123456);
  });

  it("writes expiry times in São Paulo's offset, as MercadoPago asks", () => {
    expect(saoPauloTimestamp(new Date("2026-11-28T13:00:00.000Z"))).toBe("2026-11-28T10:00:00.000-03:00");
  });

  it("verifies x-signature over id, request-id and ts; anything else fails", async () => {
    const secret = "mp-secret";
    const sign = (m: string) => createHmac("sha256", secret).update(m).digest("hex");
    const good = `ts=1742505638683,v1=${sign("id:123;request-id:req-1;ts:1742505638683;")}`;
    expect(await verifyMercadoPagoSignature(good, "req-1", "123", secret)).toBe(true);
    expect(await verifyMercadoPagoSignature(good, "req-2", "123", secret)).toBe(false);
    expect(await verifyMercadoPagoSignature(good, "req-1", "124", secret)).toBe(false);
    expect(await verifyMercadoPagoSignature(good, "req-1", "123", "other")).toBe(false);
    expect(await verifyMercadoPagoSignature(null, "req-1", "123", secret)).toBe(false);
    expect(await verifyMercadoPagoSignature("v1=abc", "req-1", "123", secret)).toBe(false);
    // absent parts are left out of the manifest
    expect(await verifyMercadoPagoSignature(`ts=5,v1=${sign("id:9;ts:5;")}`, null, "9", secret)).toBe(true);
    // alphanumeric ids: the docs lowercase them, the SDKs keep the case; both are accepted
    expect(await verifyMercadoPagoSignature(`ts=5,v1=${sign("id:ord1;ts:5;")}`, null, "ORD1", secret)).toBe(true);
    expect(await verifyMercadoPagoSignature(`ts=5,v1=${sign("id:ORD1;ts:5;")}`, null, "ORD1", secret)).toBe(true);
  });
});

describe("OpenPIX", () => {
  const charge = (o: Partial<OpenPixCharge>): OpenPixCharge => ({ status: "ACTIVE", value: 1000, correlationID: PAYMENT_ID, ...o });

  it("charges and their confirmed refunds", () => {
    expect(openPixChargeUpdate(charge({})).status).toBe("pending");
    expect(openPixChargeUpdate(charge({ status: "COMPLETED" })).status).toBe("succeeded");
    expect(openPixChargeUpdate(charge({ status: "EXPIRED" })).status).toBe("expired");
    const refunds = [{ status: "CONFIRMED", value: 300, correlationID: "r1" }, { status: "IN_PROCESSING", value: 700, correlationID: "r2" }];
    expect(openPixChargeUpdate(charge({ status: "COMPLETED" }), refunds)).toMatchObject({ status: "partially_refunded", refundedAmount: 300 });
    expect(openPixChargeUpdate(charge({ status: "COMPLETED" }), refunds.map((r) => ({ ...r, status: "CONFIRMED" }))).status).toBe("refunded");
  });

  it("charge events; others are not acted on here", () => {
    expect(openPixEventUpdate({ event: "OPENPIX:CHARGE_COMPLETED", charge: charge({ status: "COMPLETED" }), pix: { time: "2026-11-27T12:00:00Z" } }))
      .toMatchObject({ status: "succeeded", paymentId: PAYMENT_ID, eventAt: new Date("2026-11-27T12:00:00Z") });
    expect(openPixEventUpdate({ event: "OPENPIX:CHARGE_EXPIRED", charge: charge({ status: "EXPIRED" }) })?.status).toBe("expired");
    expect(openPixEventUpdate({ event: "OPENPIX:CHARGE_CREATED", charge: charge({}) })).toBeNull();
  });

  it("verifies the RSA-SHA256 signature with any published key (PEM or base64 of PEM)", async () => {
    const { publicKey, privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const other = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const pem = publicKey.export({ type: "spki", format: "pem" }).toString();
    const body = JSON.stringify({ event: "OPENPIX:CHARGE_COMPLETED" });
    const sig = createSign("sha256").update(body).sign(privateKey, "base64");
    expect(await verifyOpenPixSignature(body, sig, [pem])).toBe(true);
    expect(await verifyOpenPixSignature(body, sig, [Buffer.from(pem).toString("base64")])).toBe(true);
    expect(await verifyOpenPixSignature(body, sig, ["not a key", other.publicKey.export({ type: "spki", format: "pem" }).toString(), pem])).toBe(true);
    expect(await verifyOpenPixSignature(`${body} `, sig, [pem])).toBe(false);
    expect(await verifyOpenPixSignature(body, null, [pem])).toBe(false);
    expect(await verifyOpenPixSignature(body, "%%%", [pem])).toBe(false);
  });
});

describe("a provider that sends its headers and then stalls", () => {
  it("is a timeout (ProviderError), not an error that escapes the function", async () => {
    const server = http.createServer((_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.write('{"id":');
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const mp = await getMercadoPagoPayment({ accessToken: "t", apiBase: base, timeoutMs: 300 }, "123").catch((e) => e);
      expect(mp).toBeInstanceOf(ProviderError);
      expect(mp.kind).toBe("timeout");
      const op = await getOpenPixCharge({ appId: "a", apiBase: base, timeoutMs: 300 }, "abc").catch((e) => e);
      expect(op).toBeInstanceOf(ProviderError);
      expect(op.kind).toBe("timeout");
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});
