// The reconcile function under real Deno against the provider sandbox: payments the providers hold and
// we were never told of are repaired (a reservation, the fee from Stripe's balance transaction), one the
// provider knows and we do not is an item and an alert, payouts move the receivable to the bank (and
// back when one bounces) so that it equals Stripe's balance, a refund confirmed while a page waits between
// Stripe's listing and the comparison is no item, a payment changed meanwhile is read again and judged in
// the same run, an item the next listing finds agreeing is cleared, a run out of budget resumes from its
// cursor, and bad calls get a clear 4xx.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startE2E, until, type E2E } from "../helpers/e2e.ts";
import { isoDate, unit } from "../helpers/fixtures.ts";
import { applyStatus } from "../helpers/money.ts";
import { alerts } from "../helpers/runbook.ts";

let e: E2E;
beforeAll(async () => {
  e = await startE2E();
});
afterAll(async () => {
  await e?.stop();
});

async function checkout(method: "card" | "pix", provider?: string) {
  const { unitId } = await unit(e.db.sql);
  const res = await e.checkout({
    unit_id: unitId, check_in: isoDate(2), check_out: isoDate(4), guests: 2, method, provider, guest_email: "g@example.com",
  });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body as { payment_id: string; booking_intent_id: string; gateway_payment_id: string };
}

const window = () => ({ from: new Date(Date.now() - 3_600_000).toISOString(), to: new Date(Date.now() + 3_600_000).toISOString() });
const reconcile = (body: Record<string, unknown>, secret = e.cronSecret) =>
  e.post("reconcile", body, { authorization: `Bearer ${secret}` });
const balance = async (account: string) => Number((await e.db.sql`select reserve.ledger_account_balance(${account}) as b`)[0]!.b);
const stripeBalance = () =>
  fetch(`http://${e.sandbox.stripe.host}:${e.sandbox.stripe.port}/v1/balance`, { headers: { authorization: `Bearer ${e.sandbox.stripe.secretKey}` } })
    .then((r) => r.json() as Promise<{ available: { amount: number; currency: string }[]; pending: { amount: number; currency: string }[] }>)
    .then((x) => [...x.available, ...x.pending].filter((p) => p.currency === "brl").reduce((s, p) => s + p.amount, 0));
const itemsOf = (where: { payment?: string; object?: string }) => e.db.sql`
  select kind::text, repaired_at is not null as repaired from reserve.reconciliation_items
  where ${where.payment ? e.db.sql`payment_id = ${where.payment}` : e.db.sql`object_id = ${where.object!}`} order by kind`;

/** A refund made at Stripe through its API, as from its dashboard (its webhook as the sandbox's mode says). */
async function refundAtStripe(paymentIntent: string, amount: number) {
  const res = await fetch(`http://${e.sandbox.stripe.host}:${e.sandbox.stripe.port}/v1/refunds`, {
    method: "POST", body: new URLSearchParams({ payment_intent: paymentIntent, amount: String(amount) }),
    headers: { authorization: `Bearer ${e.sandbox.stripe.secretKey}`, "content-type": "application/x-www-form-urlencoded" } });
  expect(res.status).toBe(200);
}

/**
 * A Stripe run of the window whose first page, once read from Stripe, waits at its first lock (every
 * balance bucket held) while `meanwhile` runs: what changes between the provider's read and the comparison.
 */
async function reconcileWhilePageWaits(meanwhile: () => Promise<void>) {
  const holder = await e.db.sql.reserve();
  const [{ buckets }] = await holder`select min(balance_buckets)::int as buckets from reserve.ledger_accounts`;
  const release = (except?: number) => holder`select pg_advisory_unlock(hashtext('reserve.balance_bucket'), b)
    from generate_series(0, ${buckets - 1}) b where b is distinct from ${except ?? null}::int`;
  await holder`select pg_advisory_lock(hashtext('reserve.balance_bucket'), b) from generate_series(0, ${buckets - 1}) b`;
  let released = false;
  try {
    const running = reconcile({ ...window(), provider: "stripe" });
    const waitingOn = await until(async () => {
      const [w] = await holder`select l.objid::int as bucket from pg_locks l join pg_stat_activity a on a.pid = l.pid
                               where l.locktype = 'advisory' and not l.granted and a.query like '%reconcile_provider_objects%'`;
      return w ? { bucket: w.bucket as number } : undefined;
    }, "the run's page waiting for a balance bucket");
    // the others go on (a webhook posting meanwhile takes a bucket); the page keeps waiting
    await release(waitingOn.bucket);
    await meanwhile();
    await release();
    released = true;
    return await running;
  } finally {
    if (!released) await release();
    holder.release();
  }
}

describe("reconcile", () => {
  it("repairs card and PIX payments paid while the webhooks were down, books Stripe's fee, and agrees with Stripe's balance", async () => {
    const card = await checkout("card");
    const mp = await checkout("pix", "mercadopago");
    const op = await checkout("pix", "openpix");
    await e.sandbox.control.flush();
    e.sandbox.control.setWebhookMode("all", "drop");
    try {
      e.sandbox.control.stripeConfirm(card.gateway_payment_id, "succeeded");
      e.sandbox.control.mercadopagoPay(mp.gateway_payment_id);
      e.sandbox.control.openpixPay(op.gateway_payment_id);
    } finally {
      e.sandbox.control.setWebhookMode("all", "deliver");
    }
    const res = await reconcile(window());
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toMatchObject({ ok: true, done: true });
    expect(res.body.runs.map((r: { provider: string; status: string }) => [r.provider, r.status]).sort()).toEqual(
      [["mercadopago", "done"], ["openpix", "done"], ["stripe", "done"]]);
    for (const p of [card, mp, op]) {
      const [row] = await e.db.sql`select p.status, r.confirmation_code from reserve.payments p
                                   left join reserve.reservations r on r.payment_id = p.id where p.id = ${p.payment_id}`;
      expect(row, p.payment_id).toMatchObject({ status: "succeeded", confirmation_code: expect.stringMatching(/^RES-/) });
      expect((await itemsOf({ payment: p.payment_id })).map((i) => i.kind)).toContain("paid_not_recorded");
    }
    const pi = e.sandbox.control.payment("stripe", card.gateway_payment_id) as { latest_charge: string };
    const charge = e.sandbox.control.payment("stripe", pi.latest_charge) as { balance_transaction: string };
    const txn = e.sandbox.control.payment("stripe", charge.balance_transaction) as { fee: number };
    const [fee] = await e.db.sql`select e.amount::int from reserve.ledger_entries e join reserve.ledger_transactions t on t.id = e.transaction_id
                                 where t.idempotency_key = ${"fee:" + card.payment_id} and e.account = 'provider_fees'`;
    expect(fee!.amount).toBe(txn.fee);
    // what Stripe holds for us is what our books say it holds
    expect(await balance("receivable_stripe")).toBe(await stripeBalance());
    const stripeRun = res.body.runs.find((r: { provider: string }) => r.provider === "stripe");
    expect(stripeRun.unrepaired).toBe(0);

    // again: nothing new, the same items
    const again = await reconcile({ ...window(), provider: "stripe" });
    expect(again.body.runs[0]).toMatchObject({ status: "done", repaired: 0 });
  });

  it("payouts move the receivable to the bank when paid, back when one bounces; the balance agrees throughout", async () => {
    const card = await checkout("card");
    e.sandbox.control.stripeConfirm(card.gateway_payment_id, "succeeded");
    await e.sandbox.control.flush();
    await reconcile({ ...window(), provider: "stripe" });
    const payout = e.sandbox.control.stripePayout({ status: "in_transit" }) as { id: string; amount: number };
    const bank0 = await balance("bank_brl");

    const transit = await reconcile({ ...window(), provider: "stripe" });
    expect(transit.body.runs[0]).toMatchObject({ status: "done", unrepaired: 0 });
    const [row] = await e.db.sql`select status, amount::int from reserve.provider_payouts where provider_payout_id = ${payout.id}`;
    expect(row).toEqual({ status: "in_transit", amount: payout.amount });
    expect(await balance("bank_brl")).toBe(bank0);

    e.sandbox.control.stripePayoutOutcome(payout.id, "paid");
    const paid = await reconcile({ ...window(), provider: "stripe" });
    expect(paid.body.runs[0]).toMatchObject({ status: "done", unrepaired: 0 });
    expect(await balance("bank_brl") - bank0).toBe(payout.amount);
    expect(await balance("receivable_stripe")).toBe(await stripeBalance());

    e.sandbox.control.stripePayoutOutcome(payout.id, "failed");
    const bounced = await reconcile({ ...window(), provider: "stripe" });
    expect(bounced.body.runs[0]).toMatchObject({ status: "done", unrepaired: 0 });
    expect(await balance("bank_brl")).toBe(bank0);
    expect(await balance("receivable_stripe")).toBe(await stripeBalance());
  });

  it("sees refunds and disputes made today on older payments, and counts an open dispute's money as the dispute's", async () => {
    // two card payments made and confirmed before the window
    const refunded = await checkout("card");
    const disputed = await checkout("card");
    for (const p of [refunded, disputed]) e.sandbox.control.stripeConfirm(p.gateway_payment_id, "succeeded");
    await e.sandbox.control.flush();
    await new Promise((r) => setTimeout(r, 1_100)); // Stripe's `created` is in seconds
    const since = () => ({ from: new Date(Date.now() - 500).toISOString(), to: new Date(Date.now() + 3_600_000).toISOString() });
    const win = since();
    await new Promise((r) => setTimeout(r, 1_000));

    // at Stripe, with no webhook reaching us: a partial refund from the dashboard, and a dispute
    e.sandbox.control.setWebhookMode("stripe", "drop");
    try {
      await refundAtStripe(refunded.gateway_payment_id, 5000);
      e.sandbox.control.stripeDispute(disputed.gateway_payment_id);
    } finally {
      e.sandbox.control.setWebhookMode("stripe", "deliver");
    }
    const run = await reconcile({ ...win, provider: "stripe" });
    expect(run.status, JSON.stringify(run.body)).toBe(200);
    expect(run.body.runs[0]).toMatchObject({ status: "done" });

    // the refund was news: applied as the webhook would have, the item kept as evidence
    const [r] = await e.db.sql`select status, refunded_amount::int from reserve.payments where id = ${refunded.payment_id}`;
    expect(r).toEqual({ status: "partially_refunded", refunded_amount: 5000 });
    // (its fee, never booked while the webhooks carried none, is booked on the way: fee_missing, repaired)
    expect((await itemsOf({ payment: refunded.payment_id })).map((i) => [i.kind, i.repaired])).toContainEqual(["refund_mismatch", true]);

    // the dispute is a dispute: our payment disputed, an open item someone must answer, its fee booked
    const [d] = await e.db.sql`select status from reserve.payments where id = ${disputed.payment_id}`;
    expect(d!.status).toBe("disputed");
    const [item] = await e.db.sql`select kind::text, repaired_at, theirs from reserve.reconciliation_items
                                  where payment_id = ${disputed.payment_id} and kind = 'dispute_open'`;
    expect(item).toMatchObject({ repaired_at: null, theirs: { status: "open", withheld: expect.any(Number), fee: 1500, currency: "BRL" } });
    const fee = async () => Number((await e.db.sql`select coalesce(sum(e.amount) filter (where e.account = 'provider_fees' and e.direction = 'debit'), 0)
                                                    - coalesce(sum(e.amount) filter (where e.account = 'provider_fees' and e.direction = 'credit'), 0) as n
                                                  from reserve.ledger_entries e join reserve.ledger_transactions t on t.id = e.transaction_id
                                                  where t.idempotency_key like 'dispute_fee%'`)[0]!.n);
    expect(await fee()).toBe(1500);
    // Stripe's balance is our receivable less the money the open dispute holds back: no payout_mismatch
    expect(await stripeBalance()).toBe(await balance("receivable_stripe") - item!.theirs.withheld);
    const mismatches = () => e.db.sql`select details from reserve.reconciliation_items where kind = 'payout_mismatch' and resolved_at is null and repaired_at is null`;
    expect(await mismatches()).toEqual([]);
    expect((await alerts(e.db.sql)).get("reconciliation_unrepaired")).toMatchObject({ state: "firing" });

    // lost, still unseen by webhooks: the next run books the chargeback and closes the item
    e.sandbox.control.setWebhookMode("stripe", "drop");
    try {
      e.sandbox.control.stripeCloseDispute(disputed.gateway_payment_id, "lost");
    } finally {
      e.sandbox.control.setWebhookMode("stripe", "deliver");
    }
    const later = await reconcile({ ...since(), provider: "stripe" });
    expect(later.body.runs[0]).toMatchObject({ status: "done" });
    const [lost] = await e.db.sql`select status from reserve.payments where id = ${disputed.payment_id}`;
    expect(lost!.status).toBe("refunded");
    expect((await itemsOf({ payment: disputed.payment_id })).map((i) => [i.kind, i.repaired])).toContainEqual(["dispute_open", true]);
    expect(await fee()).toBe(1500);
    expect(await balance("receivable_stripe")).toBe(await stripeBalance());
    expect(await mismatches()).toEqual([]);
    await e.db.sql`update reserve.reconciliation_items set resolved_at = now() where kind = 'refund_mismatch' and repaired_at is null`;
  });

  it("sees a MercadoPago refund made today on an older PIX payment (searched by date_last_updated)", async () => {
    const mp = await checkout("pix", "mercadopago");
    e.sandbox.control.mercadopagoPay(mp.gateway_payment_id);
    await e.sandbox.control.flush();
    const [paid] = await e.db.sql`select status from reserve.payments where id = ${mp.payment_id}`;
    expect(paid!.status).toBe("succeeded");
    await new Promise((r) => setTimeout(r, 1_100));
    const win = { from: new Date().toISOString(), to: new Date(Date.now() + 3_600_000).toISOString() };
    await new Promise((r) => setTimeout(r, 1_100));
    e.sandbox.control.setWebhookMode("all", "drop");
    try {
      const res = await fetch(`${e.sandbox.mercadopago.apiBase}/v1/payments/${mp.gateway_payment_id}/refunds`, { method: "POST",
        headers: { authorization: `Bearer ${e.sandbox.mercadopago.accessToken}`, "content-type": "application/json", "x-idempotency-key": `dash-${mp.payment_id}` },
        body: JSON.stringify({ amount: 100 }) });
      expect(res.status).toBe(201);
    } finally {
      e.sandbox.control.setWebhookMode("all", "deliver");
    }
    const run = await reconcile({ ...win, provider: "mercadopago" });
    expect(run.body.runs[0], JSON.stringify(run.body)).toMatchObject({ status: "done" });
    const [r] = await e.db.sql`select status, refunded_amount::int from reserve.payments where id = ${mp.payment_id}`;
    expect(r).toEqual({ status: "partially_refunded", refunded_amount: 10000 });
    expect((await itemsOf({ payment: mp.payment_id })).map((i) => [i.kind, i.repaired])).toContainEqual(["refund_mismatch", true]);
  });

  it("reads the refunds of each completed OpenPIX charge it lists: one made at OpenPIX is applied, one we booked is no mismatch", async () => {
    const pay = async () => {
      const op = await checkout("pix", "openpix");
      e.sandbox.control.openpixPay(op.gateway_payment_id);
      await e.sandbox.control.flush();
      return op;
    };
    const refund = (id: string, value: number, correlationID: string) =>
      fetch(`${e.sandbox.openpix.apiBase}/api/v1/charge/${id}/refund`, { method: "POST",
        headers: { authorization: e.sandbox.openpix.appId, "content-type": "application/json" },
        body: JSON.stringify({ correlationID, value }) });
    const theirs = await pay();
    const ours = await pay();
    // ours: refunded at OpenPIX with its webhook delivered, so our books already say so
    expect((await refund(ours.gateway_payment_id, 5_000, `ours-${ours.payment_id}`)).status).toBeLessThan(300);
    await e.sandbox.control.flush();
    await expect.poll(async () => (await e.db.sql`select refunded_amount::int as r from reserve.payments where id = ${ours.payment_id}`)[0]!.r,
      { timeout: 10_000 }).toBe(5_000);
    // theirs: refunded from OpenPIX's dashboard while its webhooks were lost
    e.sandbox.control.setWebhookMode("all", "drop");
    try {
      expect((await refund(theirs.gateway_payment_id, 7_000, `dash-${theirs.payment_id}`)).status).toBeLessThan(300);
    } finally {
      e.sandbox.control.setWebhookMode("all", "deliver");
    }
    const run = await reconcile({ ...window(), provider: "openpix" });
    expect(run.body.runs[0], JSON.stringify(run.body)).toMatchObject({ status: "done" });
    const [t] = await e.db.sql`select status, refunded_amount::int from reserve.payments where id = ${theirs.payment_id}`;
    expect(t).toEqual({ status: "partially_refunded", refunded_amount: 7_000 });
    expect((await itemsOf({ payment: theirs.payment_id })).map((i) => [i.kind, i.repaired])).toContainEqual(["refund_mismatch", true]);
    expect((await itemsOf({ payment: ours.payment_id })).map((i) => i.kind)).not.toContain("refund_mismatch");
  });

  it("a refund confirmed between Stripe's listing and the comparison is no refund_mismatch", async () => {
    const card = await checkout("card");
    e.sandbox.control.stripeConfirm(card.gateway_payment_id, "succeeded");
    await e.sandbox.control.flush();
    const run = await reconcileWhilePageWaits(async () => {
      // Stripe refunds 5,000 after its listing was read; its webhook confirms the refund here meanwhile
      await refundAtStripe(card.gateway_payment_id, 5000);
      await e.sandbox.control.flush();
      await until(async () => (await e.db.sql`select refunded_amount::int as r from reserve.payments where id = ${card.payment_id}`)[0]!.r === 5000,
        "the refund's webhook applied");
    });
    expect(run.body.runs[0], JSON.stringify(run.body)).toMatchObject({ status: "done" });
    const mismatch = () => e.db.sql`select details from reserve.reconciliation_items where payment_id = ${card.payment_id} and kind = 'refund_mismatch'`;
    expect(await mismatch()).toEqual([]);
    // the next run reads Stripe after the refund: they agree
    const next = await reconcile({ ...window(), provider: "stripe" });
    expect(next.body.runs[0]).toMatchObject({ status: "done" });
    expect(await mismatch()).toEqual([]);
  });

  it("a payment that changed while its page waited is read again and judged in the same run: a refund we missed is applied", async () => {
    const card = await checkout("card");
    e.sandbox.control.stripeConfirm(card.gateway_payment_id, "succeeded");
    await e.sandbox.control.flush();
    // Stripe refunds 5,000 and its webhook is lost: only reconciliation can tell us
    e.sandbox.control.setWebhookMode("stripe", "drop");
    try {
      await refundAtStripe(card.gateway_payment_id, 5000);
      await e.sandbox.control.flush();
      // while the page that shows the refund waits, an operator's note changes our payment
      const run = await reconcileWhilePageWaits(async () => {
        await e.db.sql`update reserve.payments set metadata = metadata || '{"operator_note": "guest called"}' where id = ${card.payment_id}`;
      });
      expect(run.body.runs[0], JSON.stringify(run.body)).toMatchObject({ status: "done" });
      // the page judged nothing of a payment changed after it was read; the read after the change did,
      // in this run (a scheduled window is never listed again)
      const [p] = await e.db.sql`select refunded_amount::int as refunded, status from reserve.payments where id = ${card.payment_id}`;
      expect(p).toEqual({ refunded: 5000, status: "partially_refunded" });
      const items = await e.db.sql`select kind, repaired_at is not null as repaired from reserve.reconciliation_items where payment_id = ${card.payment_id}`;
      expect(items).toContainEqual({ kind: "refund_mismatch", repaired: true });
    } finally {
      e.sandbox.control.setWebhookMode("stripe", "deliver");
    }
  });

  it("an item whose difference Stripe's next listing no longer shows is cleared by that run; one that remains stays open, once", async () => {
    const healed = await checkout("card");
    const persists = await checkout("card");
    for (const p of [healed, persists]) e.sandbox.control.stripeConfirm(p.gateway_payment_id, "succeeded");
    await e.sandbox.control.flush();
    // our books say 5,000 of each went back; Stripe shows neither refund
    for (const p of [healed, persists]) {
      await applyStatus(e.db.sql, p.payment_id, "partially_refunded", { gateway_payment_id: p.gateway_payment_id, refunded_amount: 5000 });
    }
    const items = (p: { payment_id: string }) => e.db.sql`
      select kind::text, last_run_id, repaired_at is not null as repaired, repair_note from reserve.reconciliation_items
      where payment_id = ${p.payment_id} and kind = 'refund_mismatch'`;
    const first = await reconcile({ ...window(), provider: "stripe" });
    expect(first.body.runs[0], JSON.stringify(first.body)).toMatchObject({ status: "done" });
    for (const p of [healed, persists]) expect((await items(p)).map((i) => i.repaired)).toEqual([false]);

    // the refund of one is made at Stripe (its webhook lost): the next run finds the two agreeing
    e.sandbox.control.setWebhookMode("stripe", "drop");
    try {
      await refundAtStripe(healed.gateway_payment_id, 5000);
    } finally {
      e.sandbox.control.setWebhookMode("stripe", "deliver");
    }
    const second = await reconcile({ ...window(), provider: "stripe" });
    const runId = second.body.runs[0].run_id;
    expect(second.body.runs[0], JSON.stringify(second.body)).toMatchObject({ status: "done" });
    expect(await items(healed)).toEqual([expect.objectContaining({ repaired: true, repair_note: expect.stringContaining(`run ${runId}: `) })]);
    expect(await items(persists)).toEqual([expect.objectContaining({ repaired: false, last_run_id: runId })]);
    await e.db.sql`update reserve.reconciliation_items set resolved_at = now(), resolved_by = 'test', resolution = 'refunded at Stripe'
                   where payment_id = ${persists.payment_id} and kind = 'refund_mismatch'`;
  });

  it("a payment Stripe holds that is none of ours is an item the alert pages for", async () => {
    const stranger = e.sandbox.control.stripeCreateUnnotifiedPayment({ amount: 12_345 }) as { id: string };
    const res = await reconcile({ ...window(), provider: "stripe" });
    expect(res.body.runs[0].unrepaired).toBeGreaterThanOrEqual(1);
    expect((await itemsOf({ object: stranger.id })).map((i) => [i.kind, i.repaired])).toEqual([["paid_unknown", false]]);
    expect((await alerts(e.db.sql)).get("reconciliation_unrepaired")).toMatchObject({ state: "firing", severity: "P2" });
    const [hb] = await e.db.sql`select ok, summary from reserve.job_heartbeats where job = 'reconcile' order by id desc limit 1`;
    expect(hb!.summary.runs[0].provider).toBe("stripe");
  });

  it("an object it cannot read is set aside as an item for a person; the rest of the listing is reconciled and the run ends", async () => {
    // two OpenPIX charges paid while the webhooks were lost, one of them then answered with a value no charge holds;
    // a Stripe payout of a status no docs name
    const good = await checkout("pix", "openpix");
    const odd = await checkout("pix", "openpix");
    const card = await checkout("card");
    e.sandbox.control.stripeConfirm(card.gateway_payment_id, "succeeded");
    await e.sandbox.control.flush();
    e.sandbox.control.setWebhookMode("all", "drop");
    try {
      for (const p of [good, odd]) e.sandbox.control.openpixPay(p.gateway_payment_id);
    } finally {
      e.sandbox.control.setWebhookMode("all", "deliver");
    }
    const { value } = e.sandbox.control.payment("openpix", odd.gateway_payment_id) as { value: number };
    e.sandbox.control.garbleObject("openpix", odd.gateway_payment_id, { value: "1000.50" });
    const payout = e.sandbox.control.stripePayout({ status: "in_transit" }) as { id: string };
    e.sandbox.control.garbleObject("stripe", payout.id, { status: "exploded" });
    const unreadable = () => e.db.sql`
      select object_id, payment_id, theirs ->> 'kind' as kind, theirs ->> 'reason' as reason, repaired_at, resolved_at
      from reserve.reconciliation_items where kind = 'unreadable_object' and object_id = any(${[odd.gateway_payment_id, payout.id]}) order by object_id`;
    try {
      for (const pass of [1, 2]) {
        const res = await reconcile(window());
        expect(res.status, JSON.stringify(res.body)).toBe(200);
        expect(res.body, `pass ${pass}`).toMatchObject({ ok: true, done: true });
        const run = (name: string) => res.body.runs.find((r: { provider: string }) => r.provider === name);
        expect(run("openpix")).toMatchObject({ status: "done", unusable: 1 });
        expect(run("stripe")).toMatchObject({ status: "done", unusable: 1 });
        // set aside, once each however often it is listed
        const items = await unreadable();
        expect(items.map((i) => [i.object_id, i.kind])).toEqual([[odd.gateway_payment_id, "payment"], [payout.id, "payout"]].sort((a, b) => a[0]! < b[0]! ? -1 : 1));
        expect(items.find((i) => i.kind === "payment")).toMatchObject({ payment_id: odd.payment_id, reason: expect.stringContaining("1000.50"), repaired_at: null });
        expect(items.find((i) => i.kind === "payout")!.reason).toContain("exploded");
      }
      // the rest was reconciled: the good charge sold its stay, the odd one was applied to nothing
      const status = async (id: string) => (await e.db.sql`select status from reserve.payments where id = ${id}`)[0]!.status;
      expect(await status(good.payment_id)).toBe("succeeded");
      expect(await status(odd.payment_id)).toBe("pending");
      expect((await itemsOf({ payment: odd.payment_id })).map((i) => i.kind)).not.toContain("ours_missing_there");
      expect((await alerts(e.db.sql)).get("reconciliation_unrepaired")).toMatchObject({ state: "firing" });
    } finally {
      e.sandbox.control.garbleObject("openpix", odd.gateway_payment_id, { value });
      e.sandbox.control.garbleObject("stripe", payout.id, { status: "in_transit" });
    }
    // once the provider answers it right, the next run reconciles it like any other
    const fixed = await reconcile({ ...window(), provider: "openpix" });
    expect(fixed.body.runs[0]).toMatchObject({ status: "done" });
    expect(fixed.body.runs[0].unusable).toBeUndefined();
    expect((await e.db.sql`select status from reserve.payments where id = ${odd.payment_id}`)[0]!.status).toBe("succeeded");
    await e.db.sql`update reserve.reconciliation_items set resolved_at = now(), resolved_by = 'test', resolution = 'read at the provider'
                   where resolved_at is null and repaired_at is null and kind in ('unreadable_object', 'payout_mismatch')`;
  });

  it("an older payment whose refund it lists but which the provider then refuses to read is set aside too", async () => {
    const card = await checkout("card");
    e.sandbox.control.stripeConfirm(card.gateway_payment_id, "succeeded");
    await e.sandbox.control.flush();
    // Stripe's `created` is in seconds: the window opens a whole second after the payment was made
    await new Promise((r) => setTimeout(r, 2_100));
    const win = { from: new Date(Date.now() - 500).toISOString(), to: new Date(Date.now() + 3_600_000).toISOString() };
    await new Promise((r) => setTimeout(r, 1_000));
    e.sandbox.control.setWebhookMode("stripe", "drop");
    try {
      await refundAtStripe(card.gateway_payment_id, 1000);
    } finally {
      e.sandbox.control.setWebhookMode("stripe", "deliver");
    }
    // a PaymentIntent that is no longer one: Stripe refuses its read (400, what reconcile expands cannot be)
    e.sandbox.control.garbleObject("stripe", card.gateway_payment_id, { object: "gone" });
    try {
      for (const pass of [1, 2]) {
        const run = await reconcile({ ...win, provider: "stripe" });
        expect(run.body.runs[0], `pass ${pass}: ${JSON.stringify(run.body)}`).toMatchObject({ status: "done", unusable: 1 });
      }
      const [item] = await e.db.sql`select payment_id, theirs ->> 'reason' as reason from reserve.reconciliation_items
                                    where kind = 'unreadable_object' and object_id = ${card.gateway_payment_id}`;
      expect(item).toMatchObject({ payment_id: card.payment_id, reason: expect.stringContaining("cannot be expanded") });
    } finally {
      e.sandbox.control.garbleObject("stripe", card.gateway_payment_id, { object: "payment_intent" });
    }
    const again = await reconcile({ ...win, provider: "stripe" });
    expect(again.body.runs[0]).toMatchObject({ status: "done" });
    expect((await e.db.sql`select refunded_amount::int as r from reserve.payments where id = ${card.payment_id}`)[0]!.r).toBe(1000);
    await e.db.sql`update reserve.reconciliation_items set resolved_at = now(), resolved_by = 'test', resolution = 'read at the provider'
                   where resolved_at is null and repaired_at is null and kind = 'unreadable_object'`;
  });

  it("a dispute lost with its webhooks delivered is no refund mismatch: the chargeback is no refund Stripe shows", async () => {
    const card = await checkout("card");
    e.sandbox.control.stripeConfirm(card.gateway_payment_id, "succeeded");
    await e.sandbox.control.flush();
    e.sandbox.control.stripeDispute(card.gateway_payment_id);
    await e.sandbox.control.flush();
    e.sandbox.control.stripeCloseDispute(card.gateway_payment_id, "lost");
    await e.sandbox.control.flush();
    await expect.poll(async () => (await e.db.sql`select status from reserve.payments where id = ${card.payment_id}`)[0]!.status,
      { timeout: 10_000 }).toBe("refunded");
    for (const pass of [1, 2]) {
      const run = await reconcile({ ...window(), provider: "stripe" });
      expect(run.body.runs[0], `pass ${pass}`).toMatchObject({ status: "done" });
      const open = (await itemsOf({ payment: card.payment_id })).filter((i) => !i.repaired).map((i) => i.kind);
      expect(open, `pass ${pass}`).not.toContain("refund_mismatch");
    }
  });

  it("a run out of budget keeps its cursor and the next call resumes it", async () => {
    const from = new Date(Date.now() - 3 * 86_400_000);
    const created = Math.floor(from.getTime() / 1000) + 60;
    // more pages than a 100 ms budget can walk one object at a time, even on an idle machine
    e.sandbox.control.seedStripePaymentIntents(300, { status: "canceled", amount: 5000, created });
    const body = { provider: "stripe", from: from.toISOString(), to: new Date(from.getTime() + 3_600_000).toISOString(), page_size: 1, budget_ms: 100 };
    const first = await reconcile(body);
    expect(first.status).toBe(200);
    expect(first.body, JSON.stringify(first.body)).toMatchObject({ ok: true, done: false });
    const runId = first.body.runs[0].run_id;
    expect(first.body.runs[0].objects).toBeLessThan(300);
    let last = first;
    for (let i = 0; i < 100 && !last.body.done; i++) last = await reconcile({ ...body, page_size: 10, budget_ms: 5_000 });
    expect(last.body.runs[0]).toMatchObject({ run_id: runId, status: "done", objects: 300 });
  });

  it("the schedule's call reconciles yesterday once, then finds it done", async () => {
    const first = await reconcile({ scheduled_at: new Date().toISOString() });
    expect(first.body).toMatchObject({ ok: true, done: true });
    const day = new Date(Math.floor(Date.now() / 86_400_000) * 86_400_000 - 86_400_000).toISOString();
    expect(first.body.window.from).toBe(day);
    const second = await reconcile({});
    expect(second.body.runs.map((r: { already_done?: boolean }) => r.already_done)).toEqual([true, true, true]);
    expect(second.body.runs.map((r: { run_id: string }) => r.run_id)).toEqual(first.body.runs.map((r: { run_id: string }) => r.run_id));
  });

  it("refuses a wrong secret, unknown options and windows that are not windows", async () => {
    expect((await reconcile({}, "nope")).status).toBe(401);
    const bad = [{ provider: "paypal" }, { from: new Date().toISOString() }, { bogus: 1 },
                 { from: "2026-12-02T00:00:00Z", to: "2026-12-01T00:00:00Z" }, { from: "2026-10-01T00:00:00Z", to: "2026-12-01T00:00:00Z" },
                 // zod's ISO check takes the year 0000, which PostgreSQL refuses (it was a 500)
                 { from: "0000-01-01T00:00:00Z", to: "0000-01-02T00:00:00Z" }];
    for (const b of bad) {
      const r = await reconcile(b);
      expect(r.status, JSON.stringify(b)).toBe(400);
      expect(r.body.error).toBe("invalid_request");
    }
    expect((await e.post("reconcile", "{not json", { authorization: `Bearer ${e.cronSecret}` })).status).toBe(400);
  });
});
