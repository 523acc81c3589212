// Reconciliation judges a payment of ours only against a provider page read after its last change, and
// clears the items a later run finds agreeing: a refund confirmed while the page was read, or a checkout
// made while the listing went on, is no item for a person; an item whose difference is gone ends repaired
// by the run that saw it gone, one whose difference remains stays open once, and one found again reopens.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type Sql, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";
import { applyStatus, type UpdateFields } from "../helpers/money.ts";

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => await db?.drop());

const hour = 3_600_000;
interface Run { id: string; status: string; heartbeat_at: Date }
async function begin(q: Sql, from: Date, to: Date): Promise<Run> {
  const [r] = await q`select * from reserve.begin_reconciliation_run('stripe', ${from}, ${to})`;
  return r as Run;
}
/** One page as the handler hands it over: read from the provider after `readAfter`, a time of this database. */
async function page(q: Sql, run: Run, updates: UpdateFields[], readAfter: Date): Promise<Run> {
  const [r] = await q`select * from reserve.reconcile_provider_objects(${run.id}::uuid, ${q.json(updates as never)},
                                                                         ${q.json({ listed: true } as never)}, 1, ${readAfter})`;
  return r as Run;
}
async function finish(q: Sql, run: Run): Promise<Run> {
  const [r] = await q`select * from reserve.finish_reconciliation_run(${run.id}::uuid)`;
  return r as Run;
}
const itemsOf = (q: Sql, paymentId: string) => q`
  select kind::text, last_run_id, repaired_at is not null as repaired, repair_note, resolved_at is not null as resolved, details
  from reserve.reconciliation_items where payment_id = ${paymentId} order by kind`;

/** A card payment of ours Stripe knows as `pi`, paid and recorded as paid. */
async function paid(q: Sql) {
  const pi = `pi_${randomUUID().replace(/-/g, "")}`;
  const c = await f.checkoutAttempt(q, { gatewayId: pi });
  await applyStatus(q, c.paymentId, "succeeded", { gateway_payment_id: pi });
  return { ...c, pi };
}
const asListed = (c: { paymentId: string; pi: string }, extra: UpdateFields = {}): UpdateFields => ({
  status: "succeeded", gateway_payment_id: c.pi, payment_reference: c.paymentId, amount: 100000, currency: "BRL",
  amount_received: 100000, gateway_status: "succeeded", ...extra,
});
const refundedThere = (c: { paymentId: string; pi: string }, amount: number) =>
  asListed(c, { status: "partially_refunded", refunded_amount: amount });

describe("reconciliation against a consistent point", () => {
  it("a refund confirmed after the provider's page was read is no refund_mismatch; the next page read judges it", async () => {
    const c = await paid(db.sql);
    const window = { from: new Date(Date.now() - 2 * hour), to: new Date(Date.now() + 2 * hour) };
    const run = await begin(db.sql, window.from, window.to);
    // the page is read (Stripe shows nothing refunded yet), then the refund is made and the poller confirms it
    const readAfter = run.heartbeat_at;
    const listed = [asListed(c)];
    await applyStatus(db.sql, c.paymentId, "partially_refunded", { gateway_payment_id: c.pi, refunded_amount: 50000 });
    await page(db.sql, run, listed, readAfter);
    const done = await finish(db.sql, run);
    expect(done.status).toBe("done");
    expect(await itemsOf(db.sql, c.paymentId)).toEqual([]);

    // a run whose page was read after the refund compares it: they agree, still nothing
    const next = await begin(db.sql, window.from, window.to);
    await page(db.sql, next, [refundedThere(c, 50000)], next.heartbeat_at);
    await finish(db.sql, next);
    expect(await itemsOf(db.sql, c.paymentId)).toEqual([]);
  });

  it("a payment of ours changed before the page was read is judged by it: a refund Stripe does not show is an item", async () => {
    const c = await paid(db.sql);
    await applyStatus(db.sql, c.paymentId, "partially_refunded", { gateway_payment_id: c.pi, refunded_amount: 30000 });
    const run = await begin(db.sql, new Date(Date.now() - 3 * hour), new Date(Date.now() + 3 * hour));
    await page(db.sql, run, [asListed(c)], run.heartbeat_at);
    await finish(db.sql, run);
    expect((await itemsOf(db.sql, c.paymentId)).map((i) => [i.kind, i.repaired])).toEqual([["refund_mismatch", false]]);
  });

  it("a checkout paid while the listing went on is not ours_missing_there; one paid before it is", async () => {
    const before = await paid(db.sql);
    const run = await begin(db.sql, new Date(Date.now() - 4 * hour), new Date(Date.now() + 4 * hour));
    const readAfter = run.heartbeat_at;
    // the listing is read without either; meanwhile a guest checks out and pays
    const during = await paid(db.sql);
    await page(db.sql, run, [], readAfter);
    await finish(db.sql, run);
    expect((await itemsOf(db.sql, during.paymentId)).map((i) => i.kind)).toEqual([]);
    expect((await itemsOf(db.sql, before.paymentId)).map((i) => [i.kind, i.repaired])).toEqual([["ours_missing_there", false]]);
  });
});

describe("reconciliation items a later run finds agreeing", () => {
  it("are cleared by that run, saying so; one whose difference remains stays open, once; one found again reopens", async () => {
    const healed = await paid(db.sql);
    const persists = await paid(db.sql);
    const unlisted = await paid(db.sql);
    for (const c of [healed, persists]) {
      await applyStatus(db.sql, c.paymentId, "partially_refunded", { gateway_payment_id: c.pi, refunded_amount: 50000 });
    }
    const window = { from: new Date(Date.now() - 5 * hour), to: new Date(Date.now() + 5 * hour) };

    // run N: Stripe shows neither refund and does not list `unlisted`
    const n = await begin(db.sql, window.from, window.to);
    await page(db.sql, n, [asListed(healed), asListed(persists)], n.heartbeat_at);
    await finish(db.sql, n);
    for (const c of [healed, persists]) {
      expect((await itemsOf(db.sql, c.paymentId)).map((i) => [i.kind, i.repaired])).toEqual([["refund_mismatch", false]]);
    }
    expect((await itemsOf(db.sql, unlisted.paymentId)).map((i) => [i.kind, i.repaired])).toEqual([["ours_missing_there", false]]);

    // run N+1: Stripe shows `healed`'s refund and lists `unlisted`; `persists` still shows none
    const n1 = await begin(db.sql, window.from, window.to);
    await page(db.sql, n1, [refundedThere(healed, 50000), asListed(persists), asListed(unlisted)], n1.heartbeat_at);
    await finish(db.sql, n1);
    for (const c of [healed, unlisted]) {
      const [item] = await itemsOf(db.sql, c.paymentId);
      expect(item, c.paymentId).toMatchObject({ repaired: true, resolved: false, repair_note: expect.stringContaining(`run ${n1.id}: `) });
      expect(item!.repair_note).toContain("agree now");
    }
    const stillOpen = await itemsOf(db.sql, persists.paymentId);
    expect(stillOpen.map((i) => [i.kind, i.repaired, i.last_run_id])).toEqual([["refund_mismatch", false, n1.id]]);
    const open = await db.sql`select payment_id from reserve.open_reconciliation_items
                              where payment_id = any(${[healed.paymentId, persists.paymentId, unlisted.paymentId]}::uuid[])`;
    expect(open.map((o) => o.payment_id)).toEqual([persists.paymentId]);

    // run N+2: the refund of `healed` is gone at Stripe again: the difference is back, and so is the item
    const n2 = await begin(db.sql, window.from, window.to);
    await page(db.sql, n2, [asListed(healed), asListed(persists), asListed(unlisted)], n2.heartbeat_at);
    await finish(db.sql, n2);
    const [back] = await itemsOf(db.sql, healed.paymentId);
    expect(back).toMatchObject({ kind: "refund_mismatch", repaired: false, repair_note: null, last_run_id: n2.id });
    expect(back!.details).toContain("we booked 50000 refunded");
    expect((await itemsOf(db.sql, persists.paymentId)).length).toBe(1);
  });

  it("an item a person closed stays closed, whatever a later run finds", async () => {
    const c = await paid(db.sql);
    await applyStatus(db.sql, c.paymentId, "partially_refunded", { gateway_payment_id: c.pi, refunded_amount: 20000 });
    const window = { from: new Date(Date.now() - 6 * hour), to: new Date(Date.now() + 6 * hour) };
    const n = await begin(db.sql, window.from, window.to);
    await page(db.sql, n, [asListed(c)], n.heartbeat_at);
    await finish(db.sql, n);
    await db.sql`update reserve.reconciliation_items set resolved_at = now(), resolved_by = 'ops@company', resolution = 'refunded by hand'
                 where payment_id = ${c.paymentId}`;
    for (const listed of [refundedThere(c, 20000), asListed(c)]) {
      const r = await begin(db.sql, window.from, window.to);
      await page(db.sql, r, [listed], r.heartbeat_at);
      await finish(db.sql, r);
      expect((await itemsOf(db.sql, c.paymentId)).map((i) => [i.repaired, i.resolved])).toEqual([[false, true]]);
    }
  });
});
