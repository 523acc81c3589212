// The books close in SQL: a provider's fee is booked once against the receivable from its own figure;
// payouts move the receivable to the bank (and back when a paid payout fails); reconciliation compares a
// provider's payments with ours, repairs through the state machine what it can (the item kept as
// evidence), records the rest once however often it runs, and alerts on what no repair fixed.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, sqlState, type Sql, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";
import { applyStatus, type UpdateFields } from "../helpers/money.ts";
import { alerts, asOperator, paidStay } from "../helpers/runbook.ts";

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => await db?.drop());

const balance = async (q: Sql, account: string) =>
  Number((await q`select reserve.ledger_account_balance(${account}, 'BRL') as b`)[0]!.b);

const hour = 3_600_000;
async function run(q: Sql, provider: string, from = new Date(Date.now() - hour), to = new Date(Date.now() + hour)) {
  const [r] = await q`select * from reserve.begin_reconciliation_run(${provider}, ${from}, ${to})`;
  return r!;
}
const page = (q: Sql, runId: string, updates: UpdateFields[], cursor: unknown = null) =>
  q`select * from reserve.reconcile_provider_objects(${runId}::uuid, ${q.json(updates as never)}, ${cursor ? q.json(cursor as never) : null}, 1)`;
const finish = (q: Sql, runId: string, balances: unknown = null) =>
  q`select * from reserve.finish_reconciliation_run(${runId}::uuid, ${balances ? q.json(balances as never) : null})`;
const items = async (q: Sql, where: { payment?: string; object?: string }) =>
  q`select kind::text, repaired_at is not null as repaired, repair_note, details from reserve.reconciliation_items
    where ${where.payment ? q`payment_id = ${where.payment}` : q`object_id = ${where.object!}`} order by kind`;

/** A card checkout the provider knows as `pi`, which nobody told us was paid. */
async function unnotified(q: Sql, pi = `pi_${randomUUID().replace(/-/g, "")}`, attach = true) {
  const c = await f.checkoutAttempt(q, { gatewayId: attach ? pi : null });
  return { ...c, pi };
}
const paidThere = (c: { paymentId: string; pi: string }, extra: UpdateFields = {}): UpdateFields => ({
  status: "succeeded", gateway_payment_id: c.pi, payment_reference: c.paymentId, amount: 100000, currency: "BRL",
  amount_received: 100000, gateway_status: "succeeded", ...extra,
});

describe("provider fees", () => {
  it("are booked once from the provider's figure when the success brings it, against the receivable", async () => {
    const c = await unnotified(db.sql);
    const before = { fees: await balance(db.sql, "provider_fees"), stripe: await balance(db.sql, "receivable_stripe") };
    await applyStatus(db.sql, c.paymentId, "succeeded", { gateway_payment_id: c.pi, fee_amount: 4029 });
    await applyStatus(db.sql, c.paymentId, "succeeded", { gateway_payment_id: c.pi, fee_amount: 4029 });
    const [fee] = await db.sql`select kind, payment_id from reserve.ledger_transactions where idempotency_key = ${"fee:" + c.paymentId}`;
    expect(fee).toEqual({ kind: "provider_fee", payment_id: c.paymentId });
    expect(await balance(db.sql, "provider_fees") - before.fees).toBe(4029);
    expect(await balance(db.sql, "receivable_stripe") - before.stripe).toBe(100000 - 4029);
    expect(await sqlState(db.sql`select reserve.post_provider_fee(${c.paymentId}::uuid, 0)`)).toBe("RC001");
    const pending = await unnotified(db.sql);
    expect(await sqlState(db.sql`select reserve.post_provider_fee(${pending.paymentId}::uuid, 100)`)).toBe("RC205");
  });
});

describe("provider payouts", () => {
  const payout = (q: Sql, o: Record<string, unknown>) =>
    q`select * from reserve.record_provider_payout('stripe', reserve.as_provider_payout(${q.json(o as never)}))`;

  it("move the receivable to the bank when paid, once, and back when a paid payout fails", async () => {
    const id = `po_${randomUUID().slice(0, 8)}`;
    const start = { stripe: await balance(db.sql, "receivable_stripe"), bank: await balance(db.sql, "bank_brl") };
    const [transit] = await payout(db.sql, { payout_id: id, amount: 50000, currency: "BRL", status: "in_transit" });
    expect(transit).toMatchObject({ status: "in_transit", paid_transaction_id: null });
    expect(await balance(db.sql, "bank_brl")).toBe(start.bank);
    await payout(db.sql, { payout_id: id, amount: 50000, currency: "BRL", status: "paid" });
    const [paid] = await payout(db.sql, { payout_id: id, amount: 50000, currency: "BRL", status: "paid" });
    expect(paid!.paid_transaction_id).not.toBeNull();
    expect(await balance(db.sql, "bank_brl") - start.bank).toBe(50000);
    expect(start.stripe - await balance(db.sql, "receivable_stripe")).toBe(50000);
    const [failed] = await payout(db.sql, { payout_id: id, amount: 50000, currency: "BRL", status: "failed" });
    await payout(db.sql, { payout_id: id, amount: 50000, currency: "BRL", status: "failed" });
    expect(failed!.reversal_transaction_id).not.toBeNull();
    expect(await balance(db.sql, "bank_brl")).toBe(start.bank);
    expect(await balance(db.sql, "receivable_stripe")).toBe(start.stripe);
    const [rev] = await db.sql`select reverses from reserve.ledger_transactions where id = ${failed!.reversal_transaction_id as string}`;
    expect(rev!.reverses).toBe(paid!.paid_transaction_id);
  });

  it("only move on: a stale paid or in_transit read after a failure leaves it failed, booked once each way", async () => {
    const id = `po_${randomUUID().slice(0, 8)}`;
    const start = { stripe: await balance(db.sql, "receivable_stripe"), bank: await balance(db.sql, "bank_brl") };
    for (const status of ["paid", "failed", "paid", "in_transit", "pending"]) {
      await payout(db.sql, { payout_id: id, amount: 700, currency: "BRL", status });
    }
    const [row] = await db.sql`select status, paid_transaction_id is not null as paid, reversal_transaction_id is not null as reversed
                               from reserve.provider_payouts where provider_payout_id = ${id}`;
    expect(row).toEqual({ status: "failed", paid: true, reversed: true });
    expect(await balance(db.sql, "bank_brl")).toBe(start.bank);
    expect(await balance(db.sql, "receivable_stripe")).toBe(start.stripe);
  });

  it("refuse a payout without what it needs, or whose amount changed (RC801)", async () => {
    expect(await sqlState(payout(db.sql, { payout_id: "po_x", amount: 0, currency: "BRL", status: "paid" }))).toBe("RC801");
    expect(await sqlState(payout(db.sql, { payout_id: "po_x", amount: 10, currency: "BRL", status: "sent" }))).toBe("RC801");
    expect(await sqlState(payout(db.sql, { payout_id: "po_x", amount: 10, currency: "BRL", status: "paid", bogus: 1 }))).toBe("RC001");
    await payout(db.sql, { payout_id: "po_same", amount: 10, currency: "BRL", status: "pending" });
    expect(await sqlState(payout(db.sql, { payout_id: "po_same", amount: 11, currency: "BRL", status: "paid" }))).toBe("RC801");
  });
});

describe("reconciliation", () => {
  it("repairs paid there / unpaid here through the state machine, books the fee, and keeps the items as evidence", async () => {
    const c = await unnotified(db.sql);
    const never = await unnotified(db.sql, undefined, false);
    // a day of its own, so that no other test's payments are in the window
    const from = new Date(Date.now() - 10 * 24 * hour);
    await db.sql`update reserve.payments set created_at = ${new Date(from.getTime() + hour)} where id in (${c.paymentId}, ${never.paymentId})`;
    const r = await run(db.sql, "stripe", from, new Date(from.getTime() + 24 * hour));
    const [after] = await page(db.sql, r.id, [paidThere(c, { fee_amount: 4029 }), paidThere(never)], { starting_after: c.pi });
    expect(after).toMatchObject({ objects: 2, provider_calls: 1, cursor: { starting_after: c.pi } });
    for (const x of [c, never]) {
      const [p] = await db.sql`select status, gateway_payment_id from reserve.payments where id = ${x.paymentId}`;
      expect(p).toEqual({ status: "succeeded", gateway_payment_id: x.pi });
      const [res] = await db.sql`select count(*)::int as n from reserve.reservations where payment_id = ${x.paymentId}`;
      expect(res!.n).toBe(1);
    }
    // the repair's success carried the provider's fee, booked once
    expect(await items(db.sql, { payment: c.paymentId })).toMatchObject([
      { kind: "fee_missing", repaired: true, repair_note: `posted fee:${c.paymentId}` }, { kind: "paid_not_recorded", repaired: true },
    ]);
    expect(await db.sql`select 1 from reserve.ledger_transactions where idempotency_key = ${"fee:" + c.paymentId}`).toHaveLength(1);
    expect((await items(db.sql, { payment: never.paymentId }))[0]).toMatchObject({ kind: "paid_not_recorded", repaired: true });
    const [fin] = await finish(db.sql, r.id);
    expect(fin).toMatchObject({ status: "done", unrepaired: 0 });
    // a rerun of the window finds nothing new, and the items are the same rows
    const r2 = await run(db.sql, "stripe", new Date(r.window_from), new Date(r.window_to));
    expect(r2.id).not.toBe(r.id);
    await page(db.sql, r2.id, [paidThere(c, { fee_amount: 4029 }), paidThere(never)]);
    const [fin2] = await finish(db.sql, r2.id);
    expect(fin2).toMatchObject({ items: 0, repaired: 0 });
    expect(await items(db.sql, { payment: c.paymentId })).toHaveLength(2);
    expect(await sqlState(page(db.sql, r.id, []))).toBe("RC803");
    expect(await sqlState(page(db.sql, randomUUID(), []))).toBe("RC802");
  });

  it("leaves for a person a paid payment listed without what arrived, and reconciles the rest of its page (not a page failed on every resume)", async () => {
    const odd = await unnotified(db.sql);
    const fine = await unnotified(db.sql);
    const from = new Date(Date.now() - 20 * 24 * hour);
    await db.sql`update reserve.payments set created_at = ${new Date(from.getTime() + hour)} where id in (${odd.paymentId}, ${fine.paymentId})`;
    const r = await run(db.sql, "stripe", from, new Date(from.getTime() + 24 * hour));
    const { amount_received: _, ...unsaid } = paidThere(odd);
    const [after] = await page(db.sql, r.id, [unsaid, paidThere(fine)], { starting_after: fine.pi });
    expect(after).toMatchObject({ objects: 2, cursor: { starting_after: fine.pi } });
    const [p] = await db.sql`select status from reserve.payments where id = ${odd.paymentId}`;
    expect(p!.status).toBe("pending");
    const [item] = await db.sql`select kind::text, repaired_at, details::text from reserve.reconciliation_items where payment_id = ${odd.paymentId}`;
    expect(item).toMatchObject({ kind: "paid_not_recorded", repaired_at: null });
    expect(item!.details).toContain("cannot be applied");
    const [q] = await db.sql`select status from reserve.payments where id = ${fine.paymentId}`;
    expect(q!.status).toBe("succeeded");
  });

  it("records what it cannot repair once, and the alert fires until a person closes it", async () => {
    const unknownPi = `pi_${randomUUID().replace(/-/g, "")}`;
    const mismatch = await unnotified(db.sql);
    const gone = await unnotified(db.sql);
    await applyStatus(db.sql, gone.paymentId, "succeeded", { gateway_payment_id: gone.pi });
    const failedThere = await unnotified(db.sql);
    await applyStatus(db.sql, failedThere.paymentId, "succeeded", { gateway_payment_id: failedThere.pi });
    const twice = await unnotified(db.sql);
    await applyStatus(db.sql, twice.paymentId, "succeeded", { gateway_payment_id: twice.pi });
    const secondCharge = `pi_${randomUUID().replace(/-/g, "")}`;

    const r = await run(db.sql, "stripe");
    const listed: UpdateFields[] = [
      { status: "succeeded", gateway_payment_id: unknownPi, amount: 5000, currency: "BRL", amount_received: 5000 },
      paidThere(mismatch, { amount: 90000, amount_received: 90000 }),
      { status: "failed", gateway_payment_id: failedThere.pi, payment_reference: failedThere.paymentId, amount: 100000, currency: "BRL", gateway_status: "requires_payment_method" },
      paidThere(twice),
      paidThere({ paymentId: twice.paymentId, pi: secondCharge }),
    ];
    await page(db.sql, r.id, listed);
    const [fin] = await finish(db.sql, r.id);
    expect(fin!.status).toBe("done");
    expect((await items(db.sql, { object: unknownPi })).map((i) => i.kind)).toEqual(["paid_unknown"]);
    // another amount is an item; the payment's success went the normal way (owed back, a discrepancy)
    expect((await items(db.sql, { payment: mismatch.paymentId })).map((i) => i.kind)).toEqual(["amount_mismatch", "paid_not_recorded"]);
    const [mp] = await db.sql`select refund_reason from reserve.payments where id = ${mismatch.paymentId}`;
    expect(mp!.refund_reason).toBe("amount_mismatch");
    expect((await items(db.sql, { payment: failedThere.paymentId })).map((i) => [i.kind, i.repaired])).toEqual([["status_mismatch", false]]);
    expect((await items(db.sql, { object: secondCharge })).map((i) => i.kind)).toEqual(["duplicate_charge"]);
    expect((await items(db.sql, { payment: gone.paymentId })).map((i) => i.kind)).toEqual(["ours_missing_there"]);

    const a = await alerts(db.sql);
    expect(a.get("reconciliation_unrepaired")).toMatchObject({ severity: "P2", state: "firing" });
    const open = await db.sql`select id from reserve.open_reconciliation_items`;
    expect(await sqlState(db.sql`select reserve.resolve_reconciliation_item(${open[0]!.id}::uuid, 'refunded at the provider')`)).toBe("RC604");
    for (const o of open) {
      await asOperator(db.sql, "ops@company", (q) => q`select reserve.resolve_reconciliation_item(${o.id}::uuid, 'looked at it')`);
    }
    expect((await alerts(db.sql)).get("reconciliation_unrepaired")!.state).toBe("resolved");
    // the same differences found again stay closed
    const r2 = await run(db.sql, "stripe", new Date(r.window_from), new Date(r.window_to));
    await page(db.sql, r2.id, listed);
    const [fin2] = await finish(db.sql, r2.id);
    expect(fin2!.unrepaired).toBe(0);
    expect((await alerts(db.sql)).get("reconciliation_unrepaired")!.state).toBe("resolved");
  });

  it("applies refunds we missed, books fees we missed, and reports refunds we booked that the provider does not show", async () => {
    const missed = await unnotified(db.sql);
    await applyStatus(db.sql, missed.paymentId, "succeeded", { gateway_payment_id: missed.pi });
    const overRefunded = await unnotified(db.sql);
    await applyStatus(db.sql, overRefunded.paymentId, "succeeded", { gateway_payment_id: overRefunded.pi });
    await applyStatus(db.sql, overRefunded.paymentId, "partially_refunded", { refunded_amount: 10000 });
    const r = await run(db.sql, "stripe");
    await page(db.sql, r.id, [paidThere(missed, { status: "partially_refunded", refunded_amount: 25000, fee_amount: 4029 }),
                              paidThere(overRefunded)]);
    await finish(db.sql, r.id);
    const [p] = await db.sql`select status, refunded_amount::int from reserve.payments where id = ${missed.paymentId}`;
    expect(p).toEqual({ status: "partially_refunded", refunded_amount: 25000 });
    expect(await items(db.sql, { payment: missed.paymentId })).toMatchObject([
      { kind: "fee_missing", repaired: true, repair_note: `posted fee:${missed.paymentId}` }, { kind: "refund_mismatch", repaired: true },
    ]);
    expect(await items(db.sql, { payment: overRefunded.paymentId })).toMatchObject([{ kind: "refund_mismatch", repaired: false }]);
  });

  it("compares the receivable, less payouts on their way, with the provider's balance", async () => {
    const r = await run(db.sql, "openpix");
    const receivable = await balance(db.sql, "receivable_openpix");
    await db.sql`select * from reserve.reconcile_provider_payouts(${r.id}::uuid, ${db.sql.json([
      { payout_id: "pix_withdraw_1", amount: 700, currency: "BRL", status: "in_transit" }] as never)})`;
    await finish(db.sql, r.id, [{ currency: "BRL", amount: receivable - 700 }]);
    expect(await items(db.sql, { object: `balance:BRL:${new Date(r.window_to).toISOString().slice(0, 10)}` })).toEqual([]);
    const r2 = await run(db.sql, "openpix", new Date(Date.now() - 2 * hour), new Date(Date.now() + 2 * hour));
    await finish(db.sql, r2.id, [{ currency: "BRL", amount: receivable + 1 }]);
    const [it2] = await items(db.sql, { object: `balance:BRL:${new Date(r2.window_to).toISOString().slice(0, 10)}` });
    expect(it2).toMatchObject({ kind: "payout_mismatch", repaired: false });
    // a later run that finds the balance agree repairs it (it stayed open for good)
    const r3 = await run(db.sql, "openpix", new Date(Date.now() - 3 * hour), new Date(Date.now() + 3 * hour));
    await finish(db.sql, r3.id, [{ currency: "BRL", amount: receivable - 700 }]);
    const [again] = await items(db.sql, { object: `balance:BRL:${new Date(r2.window_to).toISOString().slice(0, 10)}` });
    expect(again).toMatchObject({ kind: "payout_mismatch", repaired: true, repair_note: expect.stringContaining("agrees") });
  });

  it("a refund sent whose money left the provider's balance before its confirmation reached ours is no mismatch", async () => {
    const { unitId } = await f.unit(db.sql);
    const { paymentId } = await paidStay(db.sql, unitId, f.isoDate(3), f.isoDate(5));
    await asOperator(db.sql, "ana@company", (q) => q`select reserve.refund_payment(${paymentId}::uuid, 3000, 'goodwill')`);
    await db.sql`update reserve.refund_requests set status = 'sent', attempts = 1, sent_at = now(), provider_refund_id = 're_1' where payment_id = ${paymentId}`;
    const receivable = await balance(db.sql, "receivable_stripe");
    const r = await run(db.sql, "stripe", new Date(Date.now() - 4 * hour), new Date(Date.now() + 4 * hour));
    await finish(db.sql, r.id, [{ currency: "BRL", amount: receivable - 3000 }]);
    const open = await db.sql`select details from reserve.reconciliation_items
                              where kind = 'payout_mismatch' and provider = 'stripe' and repaired_at is null and resolved_at is null`;
    expect(open).toEqual([]);
  });

  it("sets aside unreadable objects once each, and refuses a malformed list (RC001) writing nothing", async () => {
    const r = await run(db.sql, "stripe", new Date(Date.now() - 5 * hour), new Date(Date.now() + 5 * hour));
    const aside = (objects: unknown) => db.sql`select * from reserve.record_unreadable_provider_objects(${r.id}::uuid, ${db.sql.json(objects as never)})`;
    const count = async () => Number((await db.sql`select count(*) as n from reserve.reconciliation_items where run_id = ${r.id}`)[0]!.n);
    for (const bad of [{ kind: "payment" }, [{ kind: "refund", reason: "x" }], [{ kind: "payout" }], [{ kind: "payout", reason: "" }], [1]]) {
      expect(await sqlState(aside(bad)), JSON.stringify(bad)).toBe("RC001");
    }
    expect(await count()).toBe(0);
    const odd = { kind: "payout", reason: "status \"exploded\"", provider_object: { id: "po_odd", status: "exploded" }, object_id: "po_odd" };
    const nameless = { kind: "dispute", reason: "no id", provider_object: { amount: 1 } };
    await aside([odd, nameless]);
    await aside([odd, nameless]);
    const rows = await db.sql`select object_id, kind::text from reserve.reconciliation_items where run_id = ${r.id} order by object_id`;
    expect(rows).toHaveLength(2);
    expect(rows.map((x) => x.object_id)).toEqual(expect.arrayContaining(["po_odd", expect.stringMatching(/^sha256:[0-9a-f]{64}$/)]));
    expect(rows.every((x) => x.kind === "unreadable_object")).toBe(true);
  });

  it("refuses bad windows and pages", async () => {
    expect(await sqlState(db.sql`select reserve.begin_reconciliation_run('paypal', now(), now() + interval '1 day')`)).toBe("RC001");
    expect(await sqlState(db.sql`select reserve.begin_reconciliation_run('stripe', now(), now())`)).toBe("RC001");
    expect(await sqlState(db.sql`select reserve.begin_reconciliation_run('stripe', now() - interval '40 days', now())`)).toBe("RC001");
    const r = await run(db.sql, "mercadopago");
    expect(await sqlState(page(db.sql, r.id, [{ status: "succeeded" }]))).toBe("RC001");
    expect(await sqlState(page(db.sql, r.id, [{ status: "paid", gateway_payment_id: "1" }]))).toBe("RC001");
    // the same window again while it runs is the same run (resumed)
    const again = await run(db.sql, "mercadopago", new Date(r.window_from), new Date(r.window_to));
    expect(again.id).toBe(r.id);
  });

  it("records a dispute as a dispute: the payment disputed, its fee booked once, given back when won, the item repaired", async () => {
    const { unitId } = await f.unit(db.sql, { nights: 20 });
    const s = await paidStay(db.sql, unitId, f.isoDate(6), f.isoDate(8));
    const dispute = (status: string, withheld: number, fee: number) => ({
      dispute_id: `du_${s.gatewayId}`, gateway_payment_id: s.gatewayId, amount: 100000, currency: "BRL", status, withheld, fee,
      due_by: status === "open" ? new Date(Date.now() + 7 * 86_400_000).toISOString() : undefined,
      provider_object: { id: `du_${s.gatewayId}`, status: status === "open" ? "needs_response" : status, reason: "fraudulent" } });
    const disputes = (r: { id?: unknown }, list: unknown[]) =>
      db.sql`select * from reserve.reconcile_provider_disputes(${r.id as string}::uuid, ${db.sql.json(list as never)})`;
    const fees = async () => Number((await db.sql`select coalesce(sum(case e.direction when 'debit' then e.amount else -e.amount end), 0) as n
      from reserve.ledger_entries e join reserve.ledger_transactions t on t.id = e.transaction_id
      where t.idempotency_key like ${`dispute_fee%:du_${s.gatewayId}`} and e.account = 'provider_fees'`)[0]!.n);
    const receivable0 = await balance(db.sql, "receivable_stripe");

    const r = await run(db.sql, "stripe");
    const [afterOpen] = await disputes(r, [dispute("open", 100000, 1500)]);
    expect(afterOpen).toMatchObject({ items: 1, repaired: 0 });
    await disputes(r, [dispute("open", 100000, 1500)]); // seen twice: one item, one fee
    expect((await db.sql`select status from reserve.payments where id = ${s.paymentId}`)[0]!.status).toBe("disputed");
    expect(await fees()).toBe(1500);
    expect(await balance(db.sql, "receivable_stripe")).toBe(receivable0 - 1500);
    expect((await items(db.sql, { object: `du_${s.gatewayId}` })).map((i) => [i.kind, i.repaired])).toEqual([["dispute_open", false]]);
    // the balance Stripe reports (our receivable less the money it holds back) is no payout_mismatch
    const [{ inFlight }] = await db.sql`select coalesce(sum(amount), 0)::bigint as "inFlight" from reserve.provider_payouts
                                          where provider = 'stripe' and currency = 'BRL' and status in ('pending', 'in_transit')`;
    await finish(db.sql, r.id, [{ currency: "BRL", amount: (await balance(db.sql, "receivable_stripe")) - Number(inFlight) - 100000 }]);
    expect(await db.sql`select 1 from reserve.reconciliation_items where kind = 'payout_mismatch' and last_run_id = ${r.id}`).toEqual([]);

    const r2 = await run(db.sql, "stripe", new Date(Date.now() - 2 * hour), new Date(Date.now() + 2 * hour));
    await disputes(r2, [dispute("won", 0, 0)]);
    expect((await db.sql`select status from reserve.payments where id = ${s.paymentId}`)[0]!.status).toBe("succeeded");
    expect(await fees()).toBe(0);
    expect(await balance(db.sql, "receivable_stripe")).toBe(receivable0);
    expect((await items(db.sql, { object: `du_${s.gatewayId}` })).map((i) => [i.kind, i.repaired])).toEqual([["dispute_open", true]]);
    expect(await db.sql`select * from reserve.find_ledger_imbalances(now()::date - 1)`).toEqual([]);
  });

  it("a won dispute it never saw open moves a payment its webhook left disputed back; on any other payment it is no news", async () => {
    const { unitId } = await f.unit(db.sql, { nights: 20 });
    const disputed = await paidStay(db.sql, unitId, f.isoDate(10), f.isoDate(12));
    const quiet = await paidStay(db.sql, unitId, f.isoDate(13), f.isoDate(15));
    await db.sql`select reserve.apply_payment_status(${disputed.paymentId}::uuid, reserve.as_provider_update(${db.sql.json({
      status: "disputed", gateway_payment_id: disputed.gatewayId, dispute_amount: 100000, currency: "BRL", gateway_status: "dispute_needs_response" } as never)}),
      null, 'raise', 'webhook')`;
    const won = (gatewayId: string) => ({ dispute_id: `du_${gatewayId}`, gateway_payment_id: gatewayId, amount: 100000, currency: "BRL", status: "won",
                                          withheld: 0, fee: 0, provider_object: { id: `du_${gatewayId}`, status: "won", reason: "fraudulent" } });
    const r = await run(db.sql, "stripe", new Date(Date.now() - 4 * hour), new Date(Date.now() + 4 * hour));
    await db.sql`select * from reserve.reconcile_provider_disputes(${r.id}::uuid, ${db.sql.json([won(disputed.gatewayId), won(quiet.gatewayId)] as never)})`;
    const statusOf = async (id: string) => (await db.sql`select status, refunded_amount::int from reserve.payments where id = ${id}`)[0];
    expect(await statusOf(disputed.paymentId)).toEqual({ status: "succeeded", refunded_amount: 0 });
    expect((await items(db.sql, { object: `du_${disputed.gatewayId}` })).map((i) => [i.kind, i.repaired])).toEqual([["dispute_open", true]]);
    expect(await statusOf(quiet.paymentId)).toEqual({ status: "succeeded", refunded_amount: 0 });
    expect(await items(db.sql, { object: `du_${quiet.gatewayId}` })).toEqual([]);
  });

  it("a lost dispute of part of a payment is charged back once, whatever its state and however often its news comes", async () => {
    const { unitId } = await f.unit(db.sql, { nights: 20 });
    const s = await paidStay(db.sql, unitId, f.isoDate(10), f.isoDate(12));
    const apply = (u: Record<string, unknown>) => db.sql`select * from reserve.apply_payment_status(${s.paymentId}::uuid,
      reserve.as_provider_update(${db.sql.json({ gateway_payment_id: s.gatewayId, ...u } as never)}), null, 'ignore', 'poll')`;
    const lost = { dispute_id: `du_${s.gatewayId}`, gateway_payment_id: s.gatewayId, amount: 25000, currency: "BRL", status: "lost",
                   withheld: 25000, fee: 0, provider_object: { id: `du_${s.gatewayId}`, status: "lost", reason: "fraudulent" } };
    const stateOf = async () => (await db.sql`select status, refunded_amount::int from reserve.payments where id = ${s.paymentId}`)[0];
    const chargebacks = async () => (await db.sql`select idempotency_key from reserve.ledger_transactions
      where payment_id = ${s.paymentId} and kind = 'chargeback'`).map((t) => t.idempotency_key);
    for (const pass of [1, 2]) {
      // listed lost on a payment never seen disputed: charged back by the listing, the second time no news
      const r = await run(db.sql, "stripe", new Date(Date.now() - 4 * hour), new Date(Date.now() + 4 * hour));
      await db.sql`select * from reserve.reconcile_provider_disputes(${r.id}::uuid, ${db.sql.json([lost] as never)})`;
      expect(await stateOf(), `pass ${pass}`).toEqual({ status: "partially_refunded", refunded_amount: 25000 });
      expect(await chargebacks(), `pass ${pass}`).toEqual([`chargeback:du_${s.gatewayId}`]);
    }
    // its opening news delivered late, and a read saying only that the charge was disputed: nothing moves
    expect((await apply({ status: "disputed", dispute_id: `du_${s.gatewayId}`, dispute_amount: 25000, currency: "BRL" }))[0])
      .toMatchObject({ outcome: "stale", status: "partially_refunded" });
    expect((await apply({ status: "disputed", gateway_status: "succeeded" }))[0]).toMatchObject({ outcome: "unchanged", status: "partially_refunded" });
    // a read saying the charge was disputed and 30000 refunded: a refund on top of the chargeback
    expect((await apply({ status: "disputed", refunded_amount: 30000, gateway_status: "succeeded" }))[0])
      .toMatchObject({ outcome: "applied", status: "partially_refunded" });
    expect(await stateOf()).toEqual({ status: "partially_refunded", refunded_amount: 55000 });
    expect(await chargebacks()).toEqual([`chargeback:du_${s.gatewayId}`]);
    expect(await db.sql`select * from reserve.find_ledger_imbalances(now()::date - 1)`).toEqual([]);
  });

  it("refuses a malformed dispute (RC001) and writes nothing", async () => {
    const r = await run(db.sql, "stripe", new Date(Date.now() - 3 * hour), new Date(Date.now() + 3 * hour));
    for (const bad of [{ dispute_id: "du_x" }, { dispute_id: "du_x", gateway_payment_id: "pi_x", amount: 1, currency: "BRL", status: "pending", withheld: 0, fee: 0 },
                       { dispute_id: "du_x", gateway_payment_id: "pi_x", amount: 1, currency: "brl", status: "open", withheld: 0, fee: 0 },
                       { dispute_id: "du_x", gateway_payment_id: "pi_x", amount: 1, currency: "BRL", status: "open", withheld: -1, fee: 0 }]) {
      expect(await sqlState(db.sql`select reserve.reconcile_provider_disputes(${r.id}::uuid, ${db.sql.json([bad] as never)})`), JSON.stringify(bad)).toBe("RC001");
    }
    expect(await sqlState(db.sql`select reserve.reconcile_provider_disputes(${r.id}::uuid, ${db.sql.json({ not: "an array" } as never)})`)).toBe("RC001");
    expect(await items(db.sql, { object: "du_x" })).toEqual([]);
  });

  it("a paid stay of a known payment seen again is no item", async () => {
    const { unitId } = await f.unit(db.sql, { nights: 20 });
    const s = await paidStay(db.sql, unitId, f.isoDate(2), f.isoDate(4));
    const r = await run(db.sql, "stripe");
    const [res] = await page(db.sql, r.id, [paidThere({ paymentId: s.paymentId, pi: s.gatewayId })]);
    expect(res!.items).toBe(0);
  });
});
