// The providers' read APIs, answering from objects a test puts in them, built from the recorded shapes
// in tests/fixtures/providers/ (their real field names and types), with the test's ids and amounts.
// For what the sandbox cannot be made to say (a provider reporting another amount or currency than
// ours, an object that is not ours): the edge functions read these through their real clients.
import { createHmac, generateKeyPairSync, sign } from "node:crypto";
import { readFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import Stripe from "stripe";

type Obj = Record<string, any>;

const FIXTURES = path.resolve(import.meta.dirname, "../fixtures/providers");

/** A recorded provider object (tests/fixtures/providers/<provider>/<name>.json), a fresh copy each time. */
export function fixture(name: string): Obj {
  return JSON.parse(readFileSync(path.join(FIXTURES, `${name}.json`), "utf8"));
}

export interface FakeProviders {
  /** env for the functions: every provider's API here, and secrets the test signs with */
  env: Record<string, string>;
  stripe: {
    intents: Map<string, Obj>; charges: Map<string, Obj>; refunds: Map<string, Obj>; webhookSecret: string;
    /** what the next payment creations (POST /v1/payment_intents) are answered, given the form sent; the fake creates none otherwise */
    createAnswers: ((form: URLSearchParams) => Obj)[];
  };
  mercadopago: { payments: Map<string, Obj>; webhookSecret: string };
  openpix: { charges: Map<string, Obj>; refunds: Map<string, Obj[]>; sign(body: string): string };
  /** the requests the functions made, "GET /v1/payment_intents/pi_1" */
  requests: string[];
  stop(): Promise<void>;
}

export async function startFakeProviders(): Promise<FakeProviders> {
  const stripe = { intents: new Map<string, Obj>(), charges: new Map<string, Obj>(), refunds: new Map<string, Obj>(), webhookSecret: "whsec_fake_test",
                   createAnswers: [] as ((form: URLSearchParams) => Obj)[] };
  const mercadopago = { payments: new Map<string, Obj>(), webhookSecret: "mp-fake-secret" };
  const keys = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const openpix = {
    charges: new Map<string, Obj>(), refunds: new Map<string, Obj[]>(),
    sign: (body: string) => sign("sha256", Buffer.from(body), keys.privateKey).toString("base64"),
  };
  const requests: string[] = [];
  const send = (res: http.ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify(body));
  };
  const stripeMissing = (res: http.ServerResponse, what: string, id: string) =>
    send(res, 404, { error: { type: "invalid_request_error", code: "resource_missing", message: `No such ${what}: '${id}'` } });

  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url ?? "/", "http://fake");
    requests.push(`${req.method} ${url.pathname}`);
    const seg = url.pathname.split("/").filter(Boolean).map(decodeURIComponent);
    let raw = "";
    for await (const chunk of req) raw += chunk;
    if (req.method === "POST") {
      const answerCreation = seg[0] === "v1" && seg[1] === "payment_intents" && seg.length === 2 ? stripe.createAnswers.shift() : undefined;
      if (answerCreation) return send(res, 200, answerCreation(new URLSearchParams(raw)));
      // refunds, answered as each provider answers a refund it took
      if (seg[0] === "v1" && seg[1] === "refunds") {
        const form = new URLSearchParams(raw);
        const pi = stripe.intents.get(form.get("payment_intent") ?? "");
        if (!pi) return stripeMissing(res, "payment_intent", form.get("payment_intent") ?? "");
        const refund = { ...fixture("stripe/refund"), id: `re_${crypto.randomUUID().replace(/-/g, "").slice(0, 24)}`, amount: Number(form.get("amount")),
                         currency: pi.currency, payment_intent: pi.id, status: "succeeded" };
        stripe.refunds.set(refund.id, refund);
        return send(res, 200, refund);
      }
      if (seg[0] === "mp" && seg[4] === "refunds" && mercadopago.payments.has(seg[3] ?? "")) {
        const refund = { ...fixture("mercadopago/refund"), id: 1_500_000_000 + Math.floor(Math.random() * 1e6), payment_id: Number(seg[3]),
                         amount: JSON.parse(raw || "{}").amount, status: "approved" };
        const p = mercadopago.payments.get(seg[3]!)!;
        p.refunds = [...(p.refunds ?? []), refund];
        return send(res, 201, refund);
      }
      if (seg[0] === "openpix" && seg[5] === "refund" && openpix.charges.has(seg[4] ?? "")) {
        const b = JSON.parse(raw || "{}");
        const refund = { status: "IN_PROCESSING", value: b.value, correlationID: b.correlationID, endToEndId: `D${crypto.randomUUID().replace(/-/g, "")}` };
        openpix.refunds.set(seg[4]!, [...(openpix.refunds.get(seg[4]!) ?? []), refund]);
        return send(res, 200, { refund });
      }
    }
    // Stripe at the root
    if (seg[0] === "v1" && req.method === "GET") {
      const id = seg[2] ?? "";
      if (seg[1] === "payment_intents") {
        const pi = stripe.intents.get(id);
        if (!pi) return stripeMissing(res, "payment_intent", id);
        const charge = typeof pi.latest_charge === "string" ? stripe.charges.get(pi.latest_charge) : null;
        return send(res, 200, url.search.includes("latest_charge") && charge ? { ...pi, latest_charge: charge } : pi);
      }
      if (seg[1] === "charges") return stripe.charges.has(id) ? send(res, 200, stripe.charges.get(id)) : stripeMissing(res, "charge", id);
      if (seg[1] === "refunds") return stripe.refunds.has(id) ? send(res, 200, stripe.refunds.get(id)) : stripeMissing(res, "refund", id);
    }
    if (seg[0] === "mp" && seg[1] === "v1" && seg[2] === "payments" && req.method === "GET") {
      const p = mercadopago.payments.get(seg[3] ?? "");
      if (!p) return send(res, 404, { message: "Payment not found", error: "not_found", status: 404, cause: [{ code: 2000, description: "Payment not found" }] });
      return send(res, 200, seg[4] === "refunds" ? p.refunds ?? [] : p);
    }
    if (seg[0] === "openpix" && req.method === "GET") {
      if (seg[3] === "webhook") return send(res, 200, { public_keys: [] });
      const c = openpix.charges.get(seg[4] ?? "");
      if (!c) return send(res, 404, { error: "Cobrança não encontrada" });
      return send(res, 200, seg[5] === "refund" ? { refunds: openpix.refunds.get(seg[4]!) ?? [] } : { charge: c });
    }
    return send(res, 404, { error: `the fake has no ${req.method} ${url.pathname}` });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    env: {
      STRIPE_SECRET_KEY: "sk_test_fake", STRIPE_API_BASE: base, STRIPE_WEBHOOK_SECRET: stripe.webhookSecret,
      MERCADOPAGO_ACCESS_TOKEN: "APP_USR-fake", MERCADOPAGO_API_BASE: `${base}/mp`, MERCADOPAGO_WEBHOOK_SECRET: mercadopago.webhookSecret,
      OPENPIX_APP_ID: "fake-app-id", OPENPIX_API_BASE: `${base}/openpix`,
      OPENPIX_WEBHOOK_PUBLIC_KEY: keys.publicKey.export({ type: "spki", format: "pem" }).toString(),
    },
    stripe, mercadopago, openpix, requests,
    async stop() {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

/** Stripe's recorded PaymentIntent (stripe/openapi fixtures3.json) as one of ours. */
export function stripeIntent(o: { id: string; paymentId: string; amount: number; received?: number; currency?: string; status?: string; charge?: string }): Obj {
  const pi = fixture("stripe/payment_intent");
  const status = o.status ?? "succeeded";
  return {
    ...pi, id: o.id, amount: o.amount, amount_received: status === "succeeded" ? o.received ?? o.amount : 0,
    currency: o.currency ?? "brl", status, metadata: { payment_id: o.paymentId }, latest_charge: o.charge ?? null,
  };
}

/** A Stripe event (the recorded event's envelope) and its Stripe-Signature, signed with the fake's secret. */
export async function stripeEvent(secret: string, type: string, object: Obj, id = `evt_${crypto.randomUUID().replace(/-/g, "")}`) {
  const ev = fixture("stripe/event");
  const payload = JSON.stringify({ ...ev, id, type, created: Math.floor(Date.now() / 1000), data: { object } });
  return { payload, header: await Stripe.webhooks.generateTestHeaderStringAsync({ payload, secret }) };
}

/** MercadoPago's recorded approved payment (sdk-php payment_base.json) as one of ours: reais, as MercadoPago writes them. */
export function mercadoPagoPayment(o: { id: string; paymentId: string | null; reais: number; paidReais?: number; currency?: string; status?: string }): Obj {
  const p = fixture("mercadopago/payment_approved_with_fees");
  return {
    ...p, id: Number(o.id), status: o.status ?? "approved", status_detail: o.status === "pending" ? "pending_waiting_transfer" : "accredited",
    transaction_amount: o.reais, currency_id: o.currency ?? "BRL", external_reference: o.paymentId, payment_method_id: "pix",
    payment_type_id: "bank_transfer", date_last_updated: new Date().toISOString(),
    transaction_details: { ...p.transaction_details, total_paid_amount: o.paidReais ?? o.reais },
  };
}

/** A MercadoPago webhook notification (the recorded one) for data.id, signed as MercadoPago signs it. */
export function mercadoPagoNotification(secret: string, dataId: string, opts: { ts?: string; requestId?: string; body?: Obj } = {}) {
  const requestId = opts.requestId ?? crypto.randomUUID();
  const ts = opts.ts ?? String(Math.floor(Date.now() / 1000));
  const v1 = createHmac("sha256", secret).update(`id:${dataId};request-id:${requestId};ts:${ts};`).digest("hex");
  const body = JSON.stringify(opts.body ?? { ...fixture("mercadopago/webhook_payment"), action: "payment.updated", data: { id: dataId } });
  return { path: `webhook_pix/mercadopago?data.id=${encodeURIComponent(dataId)}&type=payment`, body,
           headers: { "x-signature": `ts=${ts},v1=${v1}`, "x-request-id": requestId } };
}

/** OpenPIX's recorded CHARGE_COMPLETED (woovi docs) for our charge, paid `paid` centavos. */
export function openPixCompleted(o: { correlationID: string; value: number; paid?: number; event?: string }): Obj {
  const e = fixture("openpix/webhook_charge_completed");
  const charge = { ...e.charge, correlationID: o.correlationID, value: o.value, valueWithDiscount: o.value };
  return { ...e, event: o.event ?? e.event, charge, pix: { ...e.pix, charge, value: o.paid ?? o.value, endToEndId: `E${crypto.randomUUID().replace(/-/g, "")}` } };
}
