// P2: REFUND STUCK. A cancelled stay's refund is refused by Stripe (the platform balance is short): the
// poller records it failed and the P2 alert fires. The runbook's retry_refund_request queues it again
// as a new request with its own idempotency key; the poller sends it, Stripe's charge.refunded confirms
// it and posts the ledger refund, and the alert resolves.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startE2E, until, type E2E } from "../helpers/e2e.ts";
import { isoDate, unit } from "../helpers/fixtures.ts";
import { asOperator, expectFires, expectResolved } from "../helpers/runbook.ts";

let e: E2E;
beforeAll(async () => {
  e = await startE2E();
});
afterAll(async () => {
  await e?.stop();
});

// the runbook's check, as written there
const stuckQuery = `
  SELECT rr.id, rr.payment_id, p.provider, p.gateway_payment_id, rr.amount, rr.currency, rr.reason, rr.status,
         rr.attempts, rr.lookups, rr.last_lookup_at, rr.provider_refund_status, rr.provider_refund_id,
         rr.error_message, rr.created_at, rr.sent_at, rr.next_attempt_at
  FROM reserve.refund_requests rr JOIN reserve.payments p ON p.id = rr.payment_id
  WHERE rr.status NOT IN ('confirmed', 'closed')
  ORDER BY rr.created_at;`;

describe("P2: refund stuck", () => {
  it("fires when the provider refuses a refund, and the runbook's retry gets it through", async () => {
    const { unitId } = await unit(e.db.sql);
    const c = await e.checkout({ unit_id: unitId, check_in: isoDate(2), check_out: isoDate(4), guests: 2, method: "card" });
    expect(c.status, JSON.stringify(c.body)).toBe(201);
    e.sandbox.control.stripeConfirm(c.body.gateway_payment_id, "succeeded");
    const r = await until(async () => (await e.db.sql`select id from reserve.reservations where booking_intent_id = ${c.body.booking_intent_id}`)[0], "reservation");
    const [cancel] = await asOperator(e.db.sql, "oncall@reserve", (tx) =>
      tx`select * from reserve.cancel_reservation_with_refund(${r.id as string}, 'INC-9: host cannot receive the guest')`);
    expect(cancel.refund_status).toBe("requested");

    // Stripe refuses the refund: the poller records it failed
    e.sandbox.control.failApi("stripe", { status: 400, code: "balance_insufficient", times: 1 });
    const first = await e.poll({}, []);
    expect(first.body.refunds_failed).toBe(1);
    await expectFires(e.db.sql, "refunds_stuck", "P2", "P2: REFUND STUCK");
    const [stuck] = (await e.db.sql.unsafe(stuckQuery)).filter((x) => x.id === cancel.refund_request_id);
    expect(stuck).toMatchObject({ status: "failed", provider: "stripe", gateway_payment_id: c.body.gateway_payment_id });
    expect(stuck.error_message).toEqual(expect.any(String));

    // the runbook's step A: the balance is topped up, the request retried
    const [retried] = await asOperator(e.db.sql, "oncall@reserve", (tx) =>
      tx`select * from reserve.retry_refund_request(${cancel.refund_request_id as string}, 'INC-9: Stripe balance topped up')`);
    expect(retried).toMatchObject({ status: "requested", retry_of: cancel.refund_request_id });
    const second = await e.poll({}, []);
    expect(second.body.refunds_sent).toBe(1);
    await until(async () => (await e.db.sql`select 1 from reserve.payments where id = ${c.body.payment_id} and status = 'refunded'`)[0], "refunded");
    const [done] = await e.db.sql`select status, provider_refund_id from reserve.refund_requests where id = ${retried.id}`;
    expect(done.status).toBe("confirmed");
    expect(done.provider_refund_id).toMatch(/^re_/);
    // one refund at Stripe: the refused one never existed, the retry's key was its own
    const refunds = e.sandbox.control.events("stripe").filter((ev) => ev.type === "charge.refunded"
      && (ev.body as { data: { object: { payment_intent: string } } }).data.object.payment_intent === c.body.gateway_payment_id);
    expect(refunds).toHaveLength(1);
    const [{ owed }] = await e.db.sql`select reserve.payment_ledger_balance(${c.body.payment_id}, array['refunds_payable']) as owed`;
    expect(Number(owed)).toBe(0);
    expect((await e.db.sql.unsafe(stuckQuery)).filter((x) => x.payment_id === c.body.payment_id)).toEqual([]);
    await expectResolved(e.db.sql, "refunds_stuck");
    expect(await e.db.sql`select * from reserve.find_ledger_imbalances()`).toEqual([]);
  });
});
