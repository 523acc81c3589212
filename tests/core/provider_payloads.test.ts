// The payloads that cross into SQL (reserve.provider_update, webhook_event, provider_refund): what the
// constructors refuse (RC001, naming the key, writing nothing), what process_webhook_event does with an
// update that cannot be applied (the event is recorded dead, nothing moves), and the checkout's attach,
// which takes a provider payment only when it names our payment and asks our price.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, sqlState, type Sql, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";
import { applyStatus, attachGateway, processEvent } from "../helpers/money.ts";
import { asOperator, operatorName } from "../helpers/runbook.ts";

let db: TestDatabase;
let sql: Sql;
beforeAll(async () => {
  db = await createTestDatabase();
  sql = db.sql;
});
afterAll(async () => await db?.drop());

async function counts() {
  const [c] = await sql`
    select (select count(*)::int from reserve.processed_webhooks) as webhooks,
           (select count(*)::int from reserve.ledger_transactions) as ledger,
           (select count(*)::int from reserve.audit_logs) as audits,
           (select count(*)::int from reserve.money_discrepancies) as discrepancies,
           (select count(*)::int from reserve.refund_requests) as refunds`;
  return c;
}

describe("reserve.as_provider_update refuses what no provider update can hold (RC001), writing nothing", () => {
  it.each([
    ["an unknown key (a misspelt amount_recieved)", { status: "succeeded", amount_recieved: 100 }],
    ["an amount as a string", { status: "succeeded", amount_received: "64000" }],
    ["a negative amount", { status: "refunded", refunded_amount: -1 }],
    ["an amount beyond 2^53", { status: "succeeded", amount_received: 9007199254740993 }],
    ["a fractional amount", { status: "succeeded", amount_received: 100.5 }],
    ["a lower-case or unknown currency", { status: "succeeded", amount_received: 1, currency: "brl" }],
    ["a currency that is no ISO code", { status: "succeeded", amount_received: 1, currency: "BITCOIN" }],
    ["a status that is not one", { status: "paid" }],
    ["a payment reference that is not a uuid", { status: "pending", payment_reference: "' or 1=1 --" }],
    ["an event time that is not a time", { status: "pending", event_at: "yesterday-ish" }],
    ["an event time out of range", { status: "pending", event_at: "294277-01-02T00:00:00Z" }],
    ["a gateway id over 255 characters", { status: "pending", gateway_payment_id: "p".repeat(256) }],
    ["an error message over 2000 characters", { status: "failed", error_message: "e".repeat(2001) }],
    ["a provider object that is a number", { status: "pending", provider_object: 42 }],
    ["refunds that are not a list", { status: "refunded", refunds: { id: 1 } }],
    ["a JSON array instead of an object", [1, 2]],
  ])("%s", async (_what, value) => {
    const before = await counts();
    expect(await sqlState(sql`select reserve.as_provider_update(${sql.json(value as never)})`)).toBe("RC001");
    expect(await counts()).toEqual(before);
  });

  it("null is null (an event that carries no update)", async () => {
    const [r] = await sql`select reserve.as_provider_update(null) is null as n`;
    expect(r.n).toBe(true);
  });

  it.each([
    ["an unknown key", { provider: "stripe", event_id: "e", event_type: "t", id: "smuggled" }],
    ["an event time that is not a time", { provider: "stripe", event_id: "e", event_type: "t", event_at: "soon" }],
    ["an event time out of range", { provider: "stripe", event_id: "e", event_type: "t", event_at: "294277-01-02T00:00:00Z" }],
    ["a lookup that is not an object", { provider: "stripe", event_id: "e", event_type: "t", lookup: "x" }],
  ])("as_webhook_event refuses %s (RC001)", async (_what, value) => {
    const before = await counts();
    expect(await sqlState(sql`select reserve.as_webhook_event(${sql.json(value as never)})`)).toBe("RC001");
    expect(await counts()).toEqual(before);
  });

  it.each([
    ["a status that is not pending, succeeded or failed", { refund_id: "re_1", status: "done" }],
    ["an amount as a string", { refund_id: "re_1", status: "succeeded", amount: "1" }],
    ["a refund id over 255 characters", { refund_id: "r".repeat(256), status: "pending" }],
  ])("as_provider_refund refuses %s (RC001)", async (_what, value) => {
    expect(await sqlState(sql`select reserve.as_provider_refund(${sql.json(value as never)})`)).toBe("RC001");
  });
});

describe("process_webhook_event records every verified event", () => {
  it("an update built by hand that no payment can hold (a negative amount, row()) makes the event dead, nothing moves", async () => {
    const c = await f.checkoutAttempt(sql);
    const before = await counts();
    const [r] = await sql`
      select * from reserve.process_webhook_event(
        reserve.as_webhook_event(${sql.json({ provider: "stripe", event_id: `evt_${crypto.randomUUID()}`, event_type: "payment_intent.succeeded" })}),
        row('succeeded', ${c.payment.gateway_payment_id as string}, ${c.paymentId}::uuid, null, 100000, 'BRL', -5,
            null, null, null, null, null, null, null, null, null, null)::reserve.provider_update)`;
    expect(r).toMatchObject({ webhook_status: "dead", duplicate: false });
    expect(r.error_message).toContain("amounts are whole minor units");
    const after = await counts();
    expect({ ...after, audits: 0 }).toEqual({ ...before, webhooks: before.webhooks + 1, audits: 0 });
    const [p] = await sql`select status from reserve.payments where id = ${c.paymentId}`;
    expect(p.status).toBe("pending");
  });

  it("an event id over 255 characters is kept as a bounded, stable hash of it", async () => {
    const id = `evt_${"é".repeat(300)}`;
    const a = await processEvent(sql, { event_id: id, event_type: "customer.created" }, null);
    const b = await processEvent(sql, { event_id: id, event_type: "customer.created" }, null);
    expect(a.event_id.length).toBeLessThanOrEqual(255);
    expect(b).toMatchObject({ webhook_id: a.webhook_id, duplicate: true });
  });

  it("a success that does not say what arrived is dead at once (RC001 cannot be retried), nothing moves", async () => {
    const c = await f.checkoutAttempt(sql);
    const r = await processEvent(sql, {}, { status: "succeeded", payment_reference: c.paymentId, gateway_payment_id: c.payment.gateway_payment_id as string,
                                            amount_received: null });
    expect(r).toMatchObject({ webhook_status: "dead" });
    expect(r.error_message).toContain("RC001");
    const [p] = await sql`select status from reserve.payments where id = ${c.paymentId}`;
    expect(p.status).toBe("pending");
  });
});

describe("apply_payment_status: the provider's money first", () => {
  it("a success without the amount and currency received is RC001 and writes nothing", async () => {
    const c = await f.checkoutAttempt(sql);
    const before = await counts();
    expect(await sqlState(applyStatus(sql, c.paymentId, "succeeded", { amount_received: null }))).toBe("RC001");
    expect(await sqlState(applyStatus(sql, c.paymentId, "succeeded", { amount_received: 100000, currency: null }))).toBe("RC001");
    expect(await counts()).toEqual(before);
  });

  it("a path that is not one is RC001", async () => {
    const c = await f.checkoutAttempt(sql);
    expect(await sqlState(applyStatus(sql, c.paymentId, "processing", { source: "telepathy" }))).toBe("RC001");
  });

  it("a success in our amount and currency sells the stay, and the money received is recorded", async () => {
    const c = await f.checkoutAttempt(sql);
    const r = await applyStatus(sql, c.paymentId, "succeeded", { fee_amount: 399, end_to_end_id: "E123" });
    expect(r.finalize_outcome).toBe("created");
    const [p] = await sql`select received_amount::int, received_currency, fee_amount::int, pix_end_to_end_id, refund_reason
                          from reserve.payments where id = ${c.paymentId}`;
    expect(p).toEqual({ received_amount: 100000, received_currency: "BRL", fee_amount: 399, pix_end_to_end_id: "E123", refund_reason: null });
  });

  it("overpaid: more than our price arrived, the stay is not sold and all of it is owed back", async () => {
    const c = await f.checkoutAttempt(sql);
    const r = await applyStatus(sql, c.paymentId, "succeeded", { amount_received: 150000 });
    expect(r.finalize_outcome).toBe("amount_mismatch");
    const [rr] = await sql`select amount::int from reserve.refund_requests where payment_id = ${c.paymentId}`;
    expect(rr.amount).toBe(150000);
    // its refund in full ends it: refunded, the set-aside gone
    await applyStatus(sql, c.paymentId, "refunded", { refunded_amount: 150000, currency: "BRL" });
    const [p] = await sql`select status, refunded_amount::int from reserve.payments where id = ${c.paymentId}`;
    expect(p).toEqual({ status: "refunded", refunded_amount: 150000 });
    expect(await sql`select * from reserve.find_ledger_imbalances(current_date - 1)`).toEqual([]);
  });

  it("nothing arrived (a success of 0): flagged and not sold, nothing to book or refund", async () => {
    const c = await f.checkoutAttempt(sql);
    const r = await applyStatus(sql, c.paymentId, "succeeded", { amount_received: 0 });
    expect(r.finalize_outcome).toBe("amount_mismatch");
    expect(await sql`select * from reserve.ledger_transactions where payment_id = ${c.paymentId}`).toEqual([]);
    expect(await sql`select * from reserve.refund_requests where payment_id = ${c.paymentId}`).toEqual([]);
    const [d] = await sql`select kind from reserve.money_discrepancies where payment_id = ${c.paymentId}`;
    expect(d.kind).toBe("amount_mismatch");
  });
});

describe("attach_gateway_payment: the checkout takes the provider's payment only at our price and reference", () => {
  it.each([
    ["another amount", { amount: 100 }],
    ["another currency", { currency: "USD" }],
    ["another payment's reference", { payment_reference: "00000000-0000-4000-8000-000000000000" }],
    ["no reference at all", { payment_reference: null }],
    ["no amount at all", { amount: null }],
  ])("%s: not attached, the attempt fails (provider_mismatch), its nights go back, a discrepancy opens", async (_what, extra) => {
    const c = await f.checkoutAttempt(sql, { gatewayId: null });
    const gw = `pi_${crypto.randomUUID()}`;
    const p = await attachGateway(sql, c.paymentId, gw, extra);
    expect(p).toMatchObject({ status: "failed", error_code: "provider_mismatch", gateway_payment_id: null });
    const [bi] = await sql`select status from reserve.booking_intents where id = ${c.intentId}`;
    expect(bi.status).not.toBe("pending");
    const [d] = await sql`select kind, source, gateway_payment_id from reserve.money_discrepancies where payment_id = ${c.paymentId}`;
    expect(d).toEqual({ kind: "attach_mismatch", source: "checkout", gateway_payment_id: gw });
  });

  it("refuses an update without a provider id (RC001) and an unknown payment (RC201), writing nothing", async () => {
    const before = await counts();
    expect(await sqlState(sql`select reserve.attach_gateway_payment(${crypto.randomUUID()}::uuid, reserve.as_provider_update('{"status": "pending"}'))`)).toBe("RC001");
    expect(await sqlState(attachGateway(sql, crypto.randomUUID(), "pi_nobody"))).toBe("RC201");
    expect(await counts()).toEqual(before);
  });
});

describe("resolve_money_discrepancy", () => {
  it("closes one with who and why; RC213 for an unknown id, RC604 on a login that proves nobody", async () => {
    const c = await f.checkoutAttempt(sql);
    await applyStatus(sql, c.paymentId, "succeeded", { amount_received: 1 });
    const [d] = await sql`select id from reserve.money_discrepancies where payment_id = ${c.paymentId}`;
    expect(await sqlState(sql`select reserve.resolve_money_discrepancy(${d.id}::uuid, 'refunded')`)).toBe("RC604");
    const [r] = await asOperator(sql, "ops@reserve.test", (tx) => tx`select * from reserve.resolve_money_discrepancy(${d.id}::uuid, 'refund confirmed')`);
    expect(r).toMatchObject({ resolved_by: operatorName(sql, "ops@reserve.test"), resolution: "refund confirmed" });
    expect(await sqlState(asOperator(sql, "ops@reserve.test", (tx) =>
      tx`select reserve.resolve_money_discrepancy(${crypto.randomUUID()}::uuid, 'x')`))).toBe("RC213");
  });
});
