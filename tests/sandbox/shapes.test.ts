// The sandbox's objects against the providers' recorded payloads (tests/fixtures/providers, sources in its
// README), field for field: same keys, same kinds of value, recursively. Differences are allowed only where
// listed here with their reason (a field the installed stripe-node's API version added or removed, a
// newer field the recording predates).
import Stripe from "stripe";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startProviderSandbox, type ProviderSandbox } from "../../local/sandbox/index.ts";
import { recorded, shapeDiff, stripeTypeFields, type ShapeRules } from "../helpers/shape.ts";

type Json = Record<string, any>;
let sb: ProviderSandbox;
let stripe: Stripe;

beforeAll(async () => {
  sb = await startProviderSandbox({ stripeWebhookUrl: "http://127.0.0.1:9/unused", openpixWebhookUrl: "http://127.0.0.1:9/unused" });
  sb.control.setWebhookMode("all", "drop");
  stripe = new Stripe(sb.stripe.secretKey, { host: sb.stripe.host, port: sb.stripe.port, protocol: "http", maxNetworkRetries: 0 });
});
afterAll(async () => await sb.stop());

/**
 * Stripe: the recordings are of API version 2022-11-15; the sandbox speaks the installed stripe-node's. A
 * top-level field may be missing when that version's types drop it or mark it optional (expand-only, like
 * Charge.refunds), and extra when the types have it. Nested additions are listed by path.
 */
function stripeRules(resourceFile: string, iface: string, nestedExtra: string[] = []): ShapeRules {
  const fields = stripeTypeFields(resourceFile, iface);
  return {
    missingOk: (p) => !p.includes(".") && (!fields.has(p) || fields.get(p) === true),
    extraOk: (p) => (!p.includes(".") && fields.has(p)) || nestedExtra.some((x) => p === x || p.startsWith(`${x}.`)),
  };
}

const expectSameShape = (recordedObj: unknown, actual: unknown, rules?: ShapeRules) =>
  expect(shapeDiff(recordedObj, actual, rules)).toEqual([]);

const stripeEvent = (type: string, id: string) => sb.control.events("stripe").map((e) => e.body as Json)
  .filter((e) => e.type === type && (e.data.object.id === id || e.data.object.payment_intent === id)).at(-1)!;

describe("Stripe objects match stripe/openapi's fixtures and the API reference", () => {
  it("PaymentIntent, Charge, balance transaction, Event", async () => {
    const pi = await stripe.paymentIntents.create({ amount: 64_000, currency: "brl", allowed_payment_method_types: ["card"],
      metadata: { payment_id: "p-1" } });
    expectSameShape(recorded("stripe", "payment_intent"), pi, stripeRules("PaymentIntents", "PaymentIntent"));
    sb.control.stripeConfirm(pi.id, "succeeded");
    const paid = await stripe.paymentIntents.retrieve(pi.id, { expand: ["latest_charge.balance_transaction"] });
    expect(paid).toMatchObject({ status: "succeeded", amount_received: 64_000 });
    const charge = paid.latest_charge as Stripe.Charge;
    const txn = charge.balance_transaction as Stripe.BalanceTransaction;
    expectSameShape(recorded("stripe", "charge"), { ...charge, balance_transaction: txn.id }, stripeRules("Charges", "Charge", [
      "billing_details.tax_id", // added after 2022-11-15 (stripe-node: Charge.BillingDetails.tax_id)
      "payment_method_details.card.amount_authorized", // likewise (PaymentMethodDetails.Card.amount_authorized)
    ]));
    expectSameShape(recorded("stripe", "balance_transaction"), txn, stripeRules("BalanceTransactions", "BalanceTransaction"));
    expect(txn).toMatchObject({ type: "charge", amount: 64_000, source: charge.id, fee: Math.round(64_000 * 0.0399) + 39 });
    expect(txn.net).toBe(txn.amount - txn.fee);
    expect(txn.fee_details).toEqual([{ amount: txn.fee, application: null, currency: "brl", description: "Stripe processing fees", type: "stripe_fee" }]);
    const event = stripeEvent("payment_intent.succeeded", pi.id);
    const { data, ...envelope } = event;
    const { data: recordedData, ...recordedEnvelope } = recorded("stripe", "event");
    expectSameShape(recordedEnvelope, envelope, stripeRules("Events", "EventBase", ["data"]));
    expectSameShape(recordedData.object, data.object, stripeRules("PaymentIntents", "PaymentIntent"));
    expect(data.object).toMatchObject({ amount_received: 64_000, latest_charge: charge.id });
  });

  it("Refund, Dispute (du_ ids with Stripe's evidence), Payout", async () => {
    const pi = await stripe.paymentIntents.create({ amount: 50_000, currency: "brl", allowed_payment_method_types: ["card"] });
    sb.control.stripeConfirm(pi.id, "succeeded");
    const refund = await stripe.refunds.create({ payment_intent: pi.id, amount: 10_000 });
    expectSameShape(recorded("stripe", "refund"), refund, stripeRules("Refunds", "Refund"));
    const other = await stripe.paymentIntents.create({ amount: 30_000, currency: "brl", allowed_payment_method_types: ["card"] });
    sb.control.stripeConfirm(other.id, "succeeded");
    const dispute = sb.control.stripeDispute(other.id) as Json;
    expect(dispute.id).toMatch(/^du_/);
    expectSameShape(recorded("stripe", "dispute"), dispute, stripeRules("Disputes", "Dispute", [
      "evidence.enhanced_evidence", // added after the recording (stripe-node: Dispute.Evidence.enhanced_evidence)
      "evidence_details.enhanced_eligibility", "evidence_details.submission_method", // likewise
    ]));
    expect(await stripe.disputes.retrieve(dispute.id)).toEqual(dispute);
    const payout = sb.control.stripePayout() as Json;
    expectSameShape(recorded("stripe", "payout"), payout, stripeRules("Payouts", "Payout"));
    expect(payout.id).toMatch(/^po_/);
  });
});

/** The pending PIX as sdk-java records it; extras that newer responses carry (sdk-nodejs PaymentsResponse). */
const mpRules: ShapeRules = {
  extraOk: (p) => ["payment_method", "money_release_status", "point_of_interaction.transaction_data.e2e_id"].includes(p),
};

async function mp(method: string, path: string, body?: unknown, key = crypto.randomUUID()) {
  const res = await fetch(`${sb.mercadopago.apiBase}${path}`, { method, body: body === undefined ? undefined : JSON.stringify(body),
    headers: { authorization: `Bearer ${sb.mercadopago.accessToken}`, "content-type": "application/json", "x-idempotency-key": key } });
  return (await res.json()) as Json;
}

describe("MercadoPago payments match the SDKs' recorded payments", () => {
  it("a PIX: OPENPLATFORM, charges_details, transaction_details; approved: fee_details and net_received_amount", async () => {
    const created = await mp("POST", "/v1/payments", { transaction_amount: 640, payment_method_id: "pix", description: "3 nights",
      payer: { email: "guest@example.com" }, external_reference: "p-2", notification_url: "http://127.0.0.1:9/mp" });
    expect(created.point_of_interaction.type).toBe("OPENPLATFORM");
    expectSameShape(recorded("mercadopago", "payment_pix_pending"), created, mpRules);
    expectSameShape(recorded("mercadopago", "charges_detail"), created.charges_details[0]);
    sb.control.mercadopagoPay(created.id);
    const paid = await mp("GET", `/v1/payments/${created.id}`);
    expectSameShape(recorded("mercadopago", "payment_pix_pending"), paid, mpRules);
    const withFees = recorded("mercadopago", "payment_approved_with_fees");
    expectSameShape(withFees.fee_details, paid.fee_details);
    expectSameShape(withFees.transaction_details, paid.transaction_details, {
      extraOk: (p) => p === "bank_transfer_id" || p === "transaction_id" }); // the PIX ones (payment_pix_pending has them)
    expect(paid.fee_details).toEqual([{ type: "mercadopago_fee", amount: 6.34, fee_payer: "collector" }]);
    expect(paid.transaction_details).toMatchObject({ total_paid_amount: 640, net_received_amount: 633.66 });
    expect(paid.charges_details[0].amounts).toEqual({ original: 6.34, refunded: 0 });
    const refund = await mp("POST", `/v1/payments/${created.id}/refunds`, { amount: 100 });
    // labels, amount_refunded_to_payer, partition_details: in today's refund answers (sdk-nodejs RefundResponse)
    expectSameShape(recorded("mercadopago", "refund"), refund, { extraOk: (p) => ["labels", "amount_refunded_to_payer", "partition_details"].includes(p) });
  });

  it("search answers {paging, results} like the recorded search", async () => {
    const found = await mp("GET", "/v1/payments/search?sort=date_created&criteria=desc&range=date_created&begin_date=NOW-1DAYS&end_date=NOW&limit=5");
    const rec = recorded("mercadopago", "payment_search");
    expectSameShape({ paging: rec.paging }, { paging: found.paging });
    expect(found.results.length).toBeGreaterThan(0);
    expectSameShape(rec.results[0], found.results[0], { ...mpRules, extraOk: (p) => mpRules.extraOk!(p) ||
      // the recorded search result is a trimmed payment; these are in every payment the API returns (payment_pix_pending)
      ["point_of_interaction.linked_to", "point_of_interaction.business_info", "point_of_interaction.location",
        "point_of_interaction.transaction_data.bank_info.origin_bank_id", "point_of_interaction.transaction_data.bank_info.origin_wallet_id",
        "point_of_interaction.transaction_data.bank_info.payer.external_account_id", "payer.operator_id"].some((x) => p === x || p.startsWith(`${x}.`)) });
  });
});

async function op(method: string, path: string, body?: unknown) {
  const res = await fetch(`${sb.openpix.apiBase}${path}`, { method, body: body === undefined ? undefined : JSON.stringify(body),
    headers: { authorization: sb.openpix.appId, "content-type": "application/json" } });
  return (await res.json()) as Json;
}
const openpixEvent = (pred: (b: Json) => boolean) => sb.control.events("openpix").map((e) => e.body as Json).filter(pred).at(-1)!;
const customer = { name: "Cliente Teste", taxID: { taxID: "44720743000101", type: "BR:CNPJ" }, correlationID: "ecd41c3b-487c-4719-b9f7-53b6dd6759cb" };
const superset: ShapeRules = { extraOk: () => true };

describe("OpenPIX events match Woovi's documented payloads", () => {
  it("CHARGE_COMPLETED with charge.fee, payer, pix.status; woovi: naming on the switch; without event on the other", async () => {
    await op("POST", "/api/v1/charge", { correlationID: "shape-1", value: 64_000, customer });
    sb.control.openpixPay("shape-1");
    const completed = openpixEvent((b) => b.charge?.correlationID === "shape-1" && b.event === "OPENPIX:CHARGE_COMPLETED");
    expectSameShape(recorded("openpix", "webhook_charge_completed"), completed);
    expect(completed.charge).toMatchObject({ fee: 512, status: "COMPLETED", payer: { taxID: { type: "BR:CPF" } } });
    expect(completed.pix.status).toBe("CONFIRMED");
    expectSameShape(recorded("openpix", "webhook_charge_completed").charge, (await op("GET", "/api/v1/charge/shape-1")).charge);

    sb.control.setOpenPixEventNaming("woovi");
    await op("POST", "/api/v1/charge", { correlationID: "shape-2", value: 10_000, customer });
    sb.control.openpixPay("shape-2");
    const woovi = openpixEvent((b) => b.charge?.correlationID === "shape-2");
    expect(woovi.event).toBe("woovi:CHARGE_COMPLETED");
    // the woovi: page predates charge.fee and paymentMethods: everything it has, the sandbox has
    expectSameShape(recorded("openpix", "webhook_charge_completed_woovi"), woovi, superset);
    sb.control.setOpenPixEventNaming("openpix");

    sb.control.setOpenPixDeliveriesWithoutEvent(true);
    await op("POST", "/api/v1/charge", { correlationID: "shape-3", value: 10_000, customer });
    sb.control.openpixPay("shape-3");
    sb.control.setOpenPixDeliveriesWithoutEvent(false);
    const bare = openpixEvent((b) => b.charge?.correlationID === "shape-3");
    expect("event" in bare).toBe(false);
    const { event: _event, ...withoutEvent } = recorded("openpix", "webhook_charge_completed");
    expectSameShape(withoutEvent, bare);
  });

  it("CHARGE_EXPIRED and the refund confirmation named by endToEndId only", async () => {
    await op("POST", "/api/v1/charge", { correlationID: "shape-4", value: 20_000, customer });
    sb.control.expire("openpix", "shape-4");
    expectSameShape(recorded("openpix", "webhook_charge_expired"), openpixEvent((b) => b.charge?.correlationID === "shape-4"), superset);
    await op("POST", "/api/v1/charge", { correlationID: "shape-5", value: 20_000, customer });
    sb.control.openpixPay("shape-5");
    const { refund } = await op("POST", "/api/v1/charge/shape-5/refund", { correlationID: "shape-5-r1", value: 5_000 });
    const confirmed = openpixEvent((b) => b.event === "PIX_TRANSACTION_REFUND_SENT_CONFIRMED" && b.refundTransaction.endToEndId === refund.endToEndId);
    expectSameShape(recorded("openpix", "webhook_refund_sent_confirmed"), confirmed);
    expect(JSON.stringify(confirmed)).not.toContain("shape-5");
    const paidWith = openpixEvent((b) => b.charge?.correlationID === "shape-5" && b.event === "OPENPIX:CHARGE_COMPLETED");
    expect(confirmed.originalTransaction.endToEndId).toBe(paidWith.pix.endToEndId);
    expect(confirmed.refundTransaction).toMatchObject({ value: 5_000, partial: true });
  });

  it("the charge list answers {pageInfo, charges} like the SDK's recorded list", async () => {
    const list = await op("GET", `/api/v1/charge?start=${encodeURIComponent(new Date(Date.now() - 3600_000).toISOString())}&limit=2`);
    const rec = recorded("openpix", "charge_list");
    expectSameShape(rec.pageInfo, list.pageInfo);
    expect(list.pageInfo).toMatchObject({ skip: 0, limit: 2, hasNextPage: true, hasPreviousPage: false });
    expectSameShape(rec.charges[0], list.charges[0], superset);
  });
});
