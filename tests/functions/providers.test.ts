// The provider adapters shared by the functions: each provider's objects and events reduced to our
// status, and the signature checks, against signatures made with Node's own crypto.
import { createHmac, createSign, generateKeyPairSync } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import type Stripe from "stripe";
import { describe, expect, it } from "vitest";
import {
  getMercadoPagoPayment, mercadoPagoProvider, mercadoPagoUpdate, saoPauloTimestamp, signatureTimeMs, verifyMercadoPagoSignature, type MercadoPagoPayment,
} from "../../supabase/functions/_shared/providers/mercadopago.ts";
import {
  getOpenPixCharge, openPixChargeUpdate, openPixProvider, openPixEventName, openPixEventNews, verifyOpenPixSignature, type OpenPixCharge,
} from "../../supabase/functions/_shared/providers/openpix.ts";
import { PROVIDER_NAMES, providerNamed, providersTaking } from "../../supabase/functions/_shared/providers/registry.ts";
import { disputesOutcome, paymentIntentUpdate, stripeEventNews, stripeProvider } from "../../supabase/functions/_shared/providers/stripe.ts";
import { ProviderError, UnusableAnswer, type PaymentProvider } from "../../supabase/functions/_shared/providers/types.ts";
import { safeText, sanitizeJson, textOf } from "../../supabase/functions/_shared/sanitize.ts";

const PAYMENT_ID = "5b0f0c3e-8f0e-4a57-9d43-3c2f4a0b1c2d";
const event = (type: string, object: Record<string, unknown>, created = 1_800_000_000) =>
  ({ id: "evt_1", object: "event", type, created, data: { object } }) as unknown as Stripe.Event;
const stripeEventUpdate = (e: Stripe.Event) => stripeEventNews(e as unknown as Record<string, unknown>).update;

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

  it("disputes: opened is disputed, won is succeeded, lost is a refund of the disputed amount; each names its dispute", () => {
    const dp = (status: string) => ({ id: "dp_1", payment_intent: "pi_1", charge: "ch_1", amount: 1000, status });
    expect(stripeEventUpdate(event("charge.dispute.created", dp("needs_response")))).toMatchObject({ status: "disputed", disputeId: "dp_1" });
    expect(stripeEventUpdate(event("charge.dispute.closed", dp("won")))).toMatchObject({ status: "succeeded", disputeId: "dp_1" });
    expect(stripeEventUpdate(event("charge.dispute.closed", dp("lost")))).toMatchObject({ status: "refunded", disputeAmount: 1000, disputeId: "dp_1" });
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

  it("a charge ever disputed reads as its disputes say: open or lost is disputed (no amount), won gives back its own state", () => {
    const pi = (charge: Record<string, unknown>, disputes?: "open" | "won" | "lost") => paymentIntentUpdate({ id: "pi_1", status: "succeeded",
      amount: 1000, amount_received: 1000, currency: "brl", metadata: {}, last_payment_error: null, latest_charge: { amount: 1000, ...charge } }, disputes);
    // Stripe keeps charge.disputed true after the dispute is won
    const won = pi({ amount_refunded: 0, disputed: true }, "won");
    expect([won.status, won.refundedAmount, won.disputeAmount]).toEqual(["succeeded", undefined, undefined]);
    expect(pi({ amount_refunded: 400, disputed: true }, "won")).toMatchObject({ status: "partially_refunded", refundedAmount: 400 });
    expect(pi({ amount_refunded: 0, disputed: true }, "open").status).toBe("disputed");
    // the chargeback of a lost one is booked once (its webhook or the dispute listing), never by a read
    const lost = pi({ amount_refunded: 0, disputed: true }, "lost");
    expect([lost.status, lost.refundedAmount, lost.disputeAmount]).toEqual(["disputed", undefined, undefined]);
    // disputed with no dispute listed: as before
    expect(pi({ amount_refunded: 0, disputed: true }).status).toBe("disputed");
    // an outcome never makes an undisputed charge disputed
    expect(pi({ amount_refunded: 0, disputed: false }, "open").status).toBe("succeeded");
  });

  it("a charge's disputes all told: any open is open, then any lost is lost, won when each went our way", () => {
    const d = (status: "open" | "won" | "lost") => ({ disputeId: `du_${status}`, gatewayPaymentId: "pi_1", amount: 1000, currency: "BRL", status,
                                                      withheld: 0, fee: 0, object: {} });
    expect(disputesOutcome([])).toBeUndefined();
    expect(disputesOutcome([d("won")])).toBe("won");
    expect(disputesOutcome([d("won"), d("open")])).toBe("open");
    expect(disputesOutcome([d("won"), d("lost")])).toBe("lost");
    expect(disputesOutcome([d("lost"), d("open")])).toBe("open");
  });
});

describe("a Stripe read of a charge ever disputed", () => {
  it("asks Stripe for the PaymentIntent's disputes: won is succeeded, another payment's dispute is an UnusableAnswer, a listing sets that one aside", async () => {
    const dispute = (status: string, pi = "pi_1") => ({ id: `du_${status}`, object: "dispute", amount: 1000, currency: "brl", charge: "ch_1",
                                                        payment_intent: pi, status, balance_transactions: [] });
    const intent = (id: string) => ({ id, object: "payment_intent", status: "succeeded", amount: 1000, amount_received: 1000, currency: "brl",
                                      metadata: {}, last_payment_error: null, created: 1_800_000_000,
                                      latest_charge: { id: `ch_${id}`, object: "charge", amount: 1000, amount_refunded: 0, disputed: true } });
    let disputes: Record<string, unknown[]> = {};
    const asked: string[] = [];
    const server = http.createServer((req, res) => {
      req.resume();
      req.on("end", () => {
        const url = new URL(req.url!, "http://x");
        asked.push(`${url.pathname}${url.pathname === "/v1/disputes" ? `?payment_intent=${url.searchParams.get("payment_intent")}` : ""}`);
        const body = url.pathname === "/v1/disputes"
          ? { object: "list", data: disputes[url.searchParams.get("payment_intent")!] ?? [], has_more: false, url: "/v1/disputes" }
          : url.pathname === "/v1/payment_intents"
            ? { object: "list", data: [intent("pi_1"), intent("pi_2")], has_more: false, url: "/v1/payment_intents" }
            : intent(url.pathname.split("/").at(-1)!);
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify(body));
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const stripe = stripeProvider(() => ({ secretKey: "sk_test_x", apiBase: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }));
    try {
      disputes = { pi_1: [dispute("won")] };
      expect(await stripe.readPayment("pi_1")).toMatchObject({ status: "succeeded", gatewayPaymentId: "pi_1" });
      expect(asked).toEqual(["/v1/payment_intents/pi_1", "/v1/disputes?payment_intent=pi_1"]);
      for (const status of ["warning_closed", "prevented"]) {
        disputes = { pi_1: [dispute(status)] };
        expect((await stripe.readPayment("pi_1")).status, status).toBe("succeeded");
      }
      for (const status of ["needs_response", "under_review", "warning_needs_response", "warning_under_review", "lost"]) {
        disputes = { pi_1: [dispute(status)] };
        const u = await stripe.readPayment("pi_1");
        expect([u.status, u.disputeAmount], status).toEqual(["disputed", undefined]);
      }
      disputes = { pi_1: [dispute("won", "pi_9")] };
      expect(await stripe.readPayment("pi_1").catch((e) => e)).toBeInstanceOf(UnusableAnswer);
      expect(await stripe.lookUp({ gatewayPaymentId: "pi_1" }).catch((e) => e)).toBeInstanceOf(UnusableAnswer);
      disputes = { pi_1: [dispute("won")] };
      expect(await stripe.lookUp({ gatewayPaymentId: "pi_1" })).toMatchObject({ status: "succeeded" });

      // a listing: pi_1 won is succeeded, pi_2's disputes cannot be right (set aside), every call counted
      disputes = { pi_1: [dispute("won")], pi_2: [dispute("won", "pi_9")] };
      const page = await stripe.listPayments!({ from: new Date(1_799_000_000_000), to: new Date(1_801_000_000_000) }, null, 100);
      expect(page.updates.map((u) => [u.gatewayPaymentId, u.status])).toEqual([["pi_1", "succeeded"]]);
      expect(page.unreadable).toMatchObject([{ kind: "payment", objectId: "pi_2" }]);
      expect(page.calls).toBe(3);
    } finally {
      server.closeAllConnections();
      server.close();
    }
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
    expect(mercadoPagoUpdate(payment({ status: "refunded", transaction_amount_refunded: 1234.56 })).refundedAmount).toBe(123456);
    // refunded without a figure: the whole of what arrived (apply_payment_status knows how much that was)
    expect(mercadoPagoUpdate(payment({ status: "refunded" })).refundedAmount).toBeUndefined();
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

  it("a refund listed twice is one refund; a list that cannot be right is an UnusableAnswer; only REJECTED failed", () => {
    const r1 = { status: "CONFIRMED", value: 300, correlationID: "r1" };
    expect(openPixChargeUpdate(charge({ status: "COMPLETED" }), [r1, { ...r1 }])).toMatchObject({ status: "partially_refunded", refundedAmount: 300 });
    expect(openPixChargeUpdate(charge({ status: "COMPLETED" }), [r1, { ...r1 }]).refunds).toHaveLength(1);
    for (const bad of [[r1, { ...r1, value: 500 }], [null], [{ status: "CONFIRMED", value: 1 }], { x: 1 }]) {
      expect(() => openPixChargeUpdate(charge({ status: "COMPLETED" }), bad as never)).toThrow(UnusableAnswer);
    }
    const statuses = (status: string) => openPixChargeUpdate(charge({ status: "COMPLETED" }), [{ status, value: 1, correlationID: "r" }]).refunds![0].status;
    expect([statuses("CONFIRMED"), statuses("REJECTED"), statuses("IN_PROCESSING"), statuses("COMPLETED_PARTIALLY")])
      .toEqual(["succeeded", "failed", "pending", "pending"]);
  });

  it("a 200 without a charge is the provider failing (asked again); one about another charge is an UnusableAnswer", async () => {
    let answer = "";
    const server = http.createServer((_req, res) => { res.writeHead(200, { "content-type": "application/json" }); res.end(answer); });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const cfg = { appId: "a", apiBase: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, timeoutMs: 2000 };
    try {
      answer = JSON.stringify({ error: "internal" });
      const failing = await getOpenPixCharge(cfg, "abc").catch((e) => e);
      expect(failing).toBeInstanceOf(ProviderError);
      expect(failing.kind).toBe("unavailable");
      answer = JSON.stringify({ charge: { status: "COMPLETED", value: 1000, correlationID: "someone-else" } });
      expect(await getOpenPixCharge(cfg, "abc").catch((e) => e)).toBeInstanceOf(UnusableAnswer);
      answer = JSON.stringify({ charge: { status: "COMPLETED", value: 1000, correlationID: "abc" } });
      expect((await getOpenPixCharge(cfg, "abc")).correlationID).toBe("abc");
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });

  it("charge events; others are not acted on here", () => {
    const openPixEventUpdate = (e: Parameters<typeof openPixEventNews>[0]) => openPixEventNews(e).update;
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

describe("the provider's money in the normalized update", () => {
  it("Stripe: amount_received and the currency of a succeeded PaymentIntent, our reference from its metadata", () => {
    const u = stripeEventUpdate(event("payment_intent.succeeded", {
      id: "pi_1", status: "succeeded", amount: 64000, amount_received: 100, currency: "usd", metadata: { payment_id: PAYMENT_ID },
    }));
    expect(u).toMatchObject({ amount: 64000, amountReceived: 100, currency: "USD", paymentId: PAYMENT_ID });
    // not received before it succeeded
    expect(stripeEventUpdate(event("payment_intent.processing", { id: "pi_1", status: "processing", amount: 64000, amount_received: 0, currency: "brl", metadata: {} })))
      .toMatchObject({ amount: 64000, amountReceived: undefined, currency: "BRL" });
  });

  it("Stripe: an amount no payment can hold is an UnusableAnswer (the event is recorded dead), not a number we round", () => {
    for (const bad of [2 ** 53 + 2, -1, 1.5, "100"]) {
      expect(() => stripeEventUpdate(event("payment_intent.succeeded", { id: "pi_1", status: "succeeded", amount: 100, amount_received: bad, currency: "brl", metadata: {} })))
        .toThrow(UnusableAnswer);
    }
  });

  it("Stripe: a dispute that names only its charge is looked up (its PaymentIntent), carrying what the signed event said", () => {
    const news = stripeEventNews({ id: "evt_1", type: "charge.dispute.created", created: 1_800_000_000,
      data: { object: { id: "du_1", object: "dispute", amount: 1000, currency: "brl", charge: "ch_1", payment_intent: null, status: "warning_needs_response" } } });
    expect(news.update).toBeNull();
    expect(news.lookup).toMatchObject({ charge: "ch_1", news: { status: "disputed", disputeAmount: 1000, disputeId: "du_1", currency: "BRL" } });
  });

  it("MercadoPago: transaction_amount and currency_id, total_paid_amount once paid, the collector's fee, the endToEndId", () => {
    const u = mercadoPagoUpdate({
      id: 1, status: "approved", status_detail: "accredited", transaction_amount: 640, currency_id: "BRL", external_reference: PAYMENT_ID,
      transaction_details: { total_paid_amount: 1, net_received_amount: 0.99 },
      fee_details: [{ type: "mercadopago_fee", amount: 0.62, fee_payer: "collector" }, { type: "financing_fee", amount: 5, fee_payer: "payer" }],
      point_of_interaction: { type: "OPENPLATFORM", transaction_data: { e2e_id: "E123" } },
    });
    expect(u).toMatchObject({ status: "succeeded", amount: 64000, amountReceived: 100, currency: "BRL", feeAmount: 62, endToEndId: "E123" });
    // what a pending PIX will cost is not money received
    expect(mercadoPagoUpdate({ id: 1, status: "pending", transaction_amount: 640, currency_id: "BRL", transaction_details: { total_paid_amount: 640 } }).amountReceived)
      .toBeUndefined();
    expect(() => mercadoPagoUpdate({ id: 1, status: "approved", transaction_amount: 0.001 })).toThrow(UnusableAnswer);
  });

  it("OpenPIX: charge.value, what the pix says was paid, charge.fee, the pix endToEndId", () => {
    const c = { status: "COMPLETED", value: 64000, correlationID: PAYMENT_ID, fee: 85 } as OpenPixCharge;
    expect(openPixEventNews({ event: "woovi:CHARGE_COMPLETED", charge: c, pix: { value: 100, endToEndId: "E39f22d047934468f89c8347ed4cd80d0" } }).update)
      .toMatchObject({ status: "succeeded", amount: 64000, amountReceived: 100, currency: "BRL", feeAmount: 85, endToEndId: "E39f22d047934468f89c8347ed4cd80d0" });
    // a charge read by the poller says its value was paid
    expect(openPixChargeUpdate(c)).toMatchObject({ amount: 64000, amountReceived: 64000 });
  });
});

describe("a refund's answer that is not the refund we asked for", () => {
  it("is an UnusableAnswer at each provider (another payment's, another amount, no id); the refund asked is taken", async () => {
    let answer: unknown = null;
    const server = http.createServer((req, res) => {
      req.resume();
      req.on("end", () => { res.writeHead(200, { "content-type": "application/json" }); res.end(JSON.stringify(answer)); });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const request = (gatewayPaymentId: string) => ({ requestId: PAYMENT_ID, gatewayPaymentId, amount: 5000, currency: "BRL",
                                                     reason: "requested_by_customer", idempotencyKey: `refund:${PAYMENT_ID}` });
    const cases: [PaymentProvider, string, unknown, unknown[]][] = [
      [stripeProvider(() => ({ secretKey: "sk_test_x", apiBase: base })), "pi_1",
       { id: "re_1", object: "refund", amount: 5000, currency: "brl", payment_intent: "pi_1", status: "succeeded" },
       [{ id: "re_1", object: "refund", amount: 5000, currency: "brl", payment_intent: "pi_2", status: "succeeded" },
        { id: "re_1", object: "refund", amount: 9000, currency: "brl", payment_intent: "pi_1", status: "succeeded" },
        { object: "refund", amount: 5000, currency: "brl", payment_intent: "pi_1", status: "succeeded" }]],
      [mercadoPagoProvider(() => ({ accessToken: "t", apiBase: base })), "123",
       { id: 77, payment_id: 123, amount: 50, status: "approved" },
       [{ id: 77, payment_id: 124, amount: 50, status: "approved" }, { id: 77, payment_id: 123, amount: 50.5, status: "approved" },
        { payment_id: 123, amount: 50, status: "approved" }]],
      [openPixProvider(() => ({ appId: "a", apiBase: base })), "charge-1",
       { refund: { correlationID: PAYMENT_ID, value: 5000, status: "IN_PROCESSING" } },
       [{ refund: { correlationID: "someone-else", value: 5000, status: "IN_PROCESSING" } },
        { refund: { correlationID: PAYMENT_ID, value: 4000, status: "IN_PROCESSING" } }]],
    ];
    try {
      for (const [provider, payment, good, bad] of cases) {
        for (const b of bad) {
          answer = b;
          expect(await provider.createRefund(request(payment)).catch((e) => e), `${provider.name} ${JSON.stringify(b)}`).toBeInstanceOf(UnusableAnswer);
        }
        answer = good;
        expect(await provider.createRefund(request(payment)), provider.name).toMatchObject({ amount: 5000, refundId: expect.any(String) });
      }
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});

describe("OpenPIX event shapes", () => {
  it("names an event the same with either prefix, and a delivery without `event` by what it carries", () => {
    expect(openPixEventName({ event: "OPENPIX:CHARGE_COMPLETED" })).toBe("CHARGE_COMPLETED");
    expect(openPixEventName({ event: "woovi:CHARGE_COMPLETED" })).toBe("CHARGE_COMPLETED");
    expect(openPixEventName({ charge: { status: "COMPLETED", value: 1, correlationID: "x" } })).toBe("CHARGE_COMPLETED");
    expect(openPixEventName({ charge: null, pix: { value: 1 } })).toBe("PIX_TRANSACTION_RECEIVED");
    expect(openPixEventName({ refundTransaction: { endToEndId: "D1" } })).toBe("PIX_TRANSACTION_REFUND_SENT_CONFIRMED");
  });

  it("a refund event named by endToEndIds only is looked up by them", () => {
    const news = openPixEventNews({ event: "PIX_TRANSACTION_REFUND_SENT_CONFIRMED",
      refundTransaction: { value: 10001, endToEndId: "D548114172025081421318FbVaF2LTWr" },
      originalTransaction: { endToEndId: "E31680151202508141543GVL7OCT44VU" } });
    expect(news).toMatchObject({ update: null, lookup: { endToEndIds: ["D548114172025081421318FbVaF2LTWr", "E31680151202508141543GVL7OCT44VU"] } });
  });
});

describe("MercadoPago's ts", () => {
  it("is read in seconds (its docs and SDKs since 2026) or milliseconds (13 digits and up)", () => {
    expect(signatureTimeMs("1704908010")).toBe(1_704_908_010_000);
    expect(signatureTimeMs("1742505638683")).toBe(1_742_505_638_683);
    expect(signatureTimeMs("12ab")).toBeUndefined();
    expect(signatureTimeMs("")).toBeUndefined();
  });

  it("is enforced within 5 minutes when a clock is given, in either unit", async () => {
    const secret = "mp-secret";
    const now = 1_800_000_000_000;
    const signed = (ts: string) => `ts=${ts},v1=${createHmac("sha256", secret).update(`id:9;request-id:r;ts:${ts};`).digest("hex")}`;
    expect(await verifyMercadoPagoSignature(signed(String(now / 1000 - 60)), "r", "9", secret, now)).toBe(true);
    expect(await verifyMercadoPagoSignature(signed(String(now - 60_000)), "r", "9", secret, now)).toBe(true);
    expect(await verifyMercadoPagoSignature(signed(String(now / 1000 - 301)), "r", "9", secret, now)).toBe(false);
    expect(await verifyMercadoPagoSignature(signed(String(now / 1000 - 30 * 86400)), "r", "9", secret, now)).toBe(false);
    expect(await verifyMercadoPagoSignature(signed(String(now + 10 * 60_000)), "r", "9", secret, now)).toBe(false);
  });
});

describe("the registry", () => {
  it("names every provider once, and says which take a method", () => {
    expect(PROVIDER_NAMES.sort()).toEqual(["mercadopago", "openpix", "stripe"]);
    for (const n of PROVIDER_NAMES) expect(providerNamed(n)?.name).toBe(n);
    expect(providerNamed("toString")).toBeUndefined();
    expect(providersTaking("card").map((p) => p.name)).toEqual(["stripe"]);
    expect(providersTaking("pix").map((p) => p.name).sort()).toEqual(["mercadopago", "openpix"]);
  });
});

describe("what a provider sent, made storable", () => {
  it("escapes NUL, control characters and lone surrogates, keeps pairs, and says what it cut", async () => {
    expect(safeText("a\u0000b\u001bc\td")).toBe("a\\u0000b\\u001bc\td");
    expect(safeText("x\ud800y")).toBe("x\\ud800y");
    expect(safeText("😀")).toBe("😀");
    // what is cut says so within `max`: the columns these go to refuse one character more
    expect(safeText("x".repeat(300), 255)).toBe(`${"x".repeat(234)}…[66 more characters]`);
    expect(safeText("x".repeat(20), 10)).toBe(`${"x".repeat(9)}…`);
    for (const [s, max] of [["y".repeat(100_000), 255], ["😀".repeat(300), 255], ["\u0000".repeat(500), 2000], ["ab", 1]] as const) {
      expect(safeText(s, max).length).toBeLessThanOrEqual(max);
    }
    // a provider's value as text, whatever JSON it is (String() overflows on deep arrays, throws on a toString key)
    expect(textOf(JSON.parse("[".repeat(100_000) + "]".repeat(100_000)))).toContain("left out");
    expect(textOf(JSON.parse('{"toString":1}'))).toBe('{"toString":1}');
    expect(textOf(12)).toBe("12");
    const deep = JSON.parse("[".repeat(100_000) + "]".repeat(100_000));
    const out = JSON.stringify(sanitizeJson({ deep, big: Array.from({ length: 1000 }, (_, i) => i), n: 2 ** 60 }));
    expect(out).toContain("left out");
    expect(out.length).toBeLessThan(10_000);
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
