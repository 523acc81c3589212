// The refund queue: request_refund (idempotent by key, RC208 over-refund counting open
// requests), claim_refund_requests (leased), record_refund_result, and the provider's confirmation
// (apply_payment_status refunded / partially_refunded) confirming requests and posting the ledger refund;
// an operator's retry_refund_request and close_refund_request for what the queue cannot finish.
import postgres from "postgres";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, sqlState, type Sql, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";
import { applyStatus } from "../helpers/money.ts";
import { until } from "../helpers/e2e.ts";
import { asOperator, operatorName } from "../helpers/runbook.ts";
import { paidReservation, type Row } from "./ops_helpers.ts";

let db: TestDatabase;
let sql: Sql;
beforeAll(async () => {
  db = await createTestDatabase();
  sql = db.sql;
});
afterAll(async () => await db?.drop());
afterEach(async () => {
  expect(await sql`select * from reserve.find_ledger_imbalances(current_date - 7)`).toEqual([]);
});

const request = async (paymentId: string, amount: number, key: string): Promise<Row> =>
  (await sql`select * from reserve.request_refund(${paymentId}, ${amount}, 'goodwill', ${key}, 'a note')`)[0];
/** The poller's report on a refund it claimed: the provider's refund (its id) when sent. */
const report = (id: string, outcome: string, refundId: string | null = null, error: string | null = null) =>
  sql`select * from reserve.record_refund_result(${id}::uuid, ${outcome},
        reserve.as_provider_refund(${refundId ? sql.json({ refund_id: refundId, status: "pending" }) : null}::jsonb), ${error})`
    .then((r) => r[0]);
const requests = async (paymentId: string) =>
  sql`select * from reserve.refund_requests where payment_id = ${paymentId} order by created_at, id`;

describe("request_refund", () => {
  it("is idempotent by key and refuses over-refunds counting open requests (RC208)", async () => {
    const p = await paidReservation(sql);
    const a = await request(p.paymentId, 30000, `k:${p.paymentId}:a`);
    expect(a).toMatchObject({ payment_id: p.paymentId, amount: "30000", status: "requested", reason: "goodwill", attempts: 0 });
    const again = await request(p.paymentId, 99999, `k:${p.paymentId}:a`);
    expect(again.id).toBe(a.id);
    expect(again.amount).toBe("30000");
    expect(await requests(p.paymentId)).toHaveLength(1);

    const left = p.amount - 30000;
    expect(await sqlState(request(p.paymentId, left + 1, `k:${p.paymentId}:b`))).toBe("RC208");
    expect(await sqlState(request(p.paymentId, 0, `k:${p.paymentId}:zero`))).toBe("RC208");
    const b = await request(p.paymentId, left, `k:${p.paymentId}:b`);
    expect(b.status).toBe("requested");
    expect(await sqlState(request(p.paymentId, 1, `k:${p.paymentId}:c`))).toBe("RC208");
    // a failed request does not count (results are reported by the poller that claimed the request)
    await sql`select * from reserve.claim_refund_requests(20)`;
    await report(b.id as string, "failed", null, "card closed");
    expect((await request(p.paymentId, 1, `k:${p.paymentId}:c`)).status).toBe("requested");
  });

  it("refuses a payment that holds no money (RC208) and missing arguments (RC001)", async () => {
    const { unitId } = await f.unit(sql, { nights: 5 });
    const [bi] = await sql`select * from reserve.create_booking_intent(${unitId}, ${f.isoDate(1)}::date, ${f.isoDate(2)}::date, 2)`;
    const [pending] = await sql`select * from reserve.create_payment(${bi.id}, 'stripe', 'card', ${bi.amount})`;
    expect(await sqlState(request(pending.id as string, 100, `k:${pending.id}`))).toBe("RC208");
    expect(await sqlState(sql`select reserve.request_refund(${pending.id as string}, 100, 'goodwill', null)`)).toBe("RC001");
  });
});

describe("claim_refund_requests and record_refund_result", () => {
  it("leases due requests with an idempotency key, and records sent, retry (backoff) and failed", async () => {
    const p = await paidReservation(sql);
    const r1 = await request(p.paymentId, 10000, `claim:${p.paymentId}:1`);
    const r2 = await request(p.paymentId, 20000, `claim:${p.paymentId}:2`);
    const r3 = await request(p.paymentId, 5000, `claim:${p.paymentId}:3`);
    const claimed = await sql`select * from reserve.claim_refund_requests(1000, interval '2 minutes')`;
    const mine = claimed.filter((c) => c.payment_id === p.paymentId);
    expect(mine.map((c) => c.refund_request_id).sort()).toEqual([r1.id, r2.id, r3.id].sort());
    expect(mine.find((c) => c.refund_request_id === r1.id)).toMatchObject({
      provider: "stripe", method: "card", amount: "10000", currency: "BRL", idempotency_key: `refund:${r1.id}`, attempts: 1,
    });
    const [lease] = await sql`select status, next_attempt_at > now() + interval '1 minute' as leased
                              from reserve.refund_requests where id = ${r1.id as string}`;
    expect(lease).toEqual({ status: "sending", leased: true });
    // leased: a concurrent poller does not send it again
    expect((await sql`select * from reserve.claim_refund_requests(1000)`).filter((c) => c.payment_id === p.paymentId)).toEqual([]);

    const sent = (await report(r1.id as string, "sent", "re_123"));
    expect(sent).toMatchObject({ status: "sent", provider_refund_id: "re_123", error_message: null });
    expect(sent.sent_at).not.toBeNull();
    const retry = (await report(r2.id as string, "retry", null, "timeout"));
    expect(retry).toMatchObject({ status: "requested", error_message: "timeout" });
    const [w] = await sql`select next_attempt_at - updated_at = interval '2 minutes' as backoff from reserve.refund_requests where id = ${r2.id as string}`;
    expect(w.backoff).toBe(true);
    const failed = (await report(r3.id as string, "failed", null, "refused"));
    expect(failed).toMatchObject({ status: "failed", error_message: "refused" });

    // due again once the backoff passed
    await sql`update reserve.refund_requests set next_attempt_at = now() - interval '1 second' where id = ${r2.id as string}`;
    const again = (await sql`select * from reserve.claim_refund_requests(1000)`).filter((c) => c.payment_id === p.paymentId);
    expect(again).toMatchObject([{ refund_request_id: r2.id, attempts: 2 }]);

    expect(await sqlState(report(r1.id as string, "maybe"))).toBe("RC001");
    expect(await sqlState(report(crypto.randomUUID(), "sent", "re_x"))).toBe("RC001");
    // a sent refund names the provider's refund
    expect(await sqlState(report(r1.id as string, "sent"))).toBe("RC001");
  });
});

describe("the provider's confirmation", () => {
  it("partially_refunded then refunded confirm the requests they cover and post the ledger refund", async () => {
    const p = await paidReservation(sql);
    const [res] = await sql`select id from reserve.reservations where payment_id = ${p.paymentId}`;
    await sql`select reserve.cancel_reservation(${res.id as string}, 'guest cancelled', 0)`; // nights back, no refund set aside
    const r1 = await request(p.paymentId, 30000, `conf:${p.paymentId}:1`);
    const r2 = await request(p.paymentId, p.amount - 30000, `conf:${p.paymentId}:2`);
    await sql`select * from reserve.claim_refund_requests(20)`;
    await report(r1.id as string, "sent", "re_1");
    const [ledgerBefore] = await sql`select count(*)::int as n from reserve.ledger_transactions where payment_id = ${p.paymentId}`;

    await applyStatus(sql, p.paymentId, "partially_refunded", { gateway_status: "refund", refunded_amount: 30000 });
    let rs = await requests(p.paymentId);
    // r2 was claimed but not reported sent yet: it is never confirmed by someone else's refund
    expect(rs.map((r) => [r.id, r.status])).toEqual([[r1.id, "confirmed"], [r2.id, "sending"]]);
    expect(rs[0].confirmed_at).not.toBeNull();
    const [ledgerMid] = await sql`select count(*)::int as n from reserve.ledger_transactions where payment_id = ${p.paymentId}`;
    expect(ledgerMid.n).toBe(ledgerBefore.n + 1);

    await report(r2.id as string, "sent", "re_2");
    await applyStatus(sql, p.paymentId, "refunded");
    rs = await requests(p.paymentId);
    expect(rs.map((r) => r.status)).toEqual(["confirmed", "confirmed"]);
    const [pay] = await sql`select status, refunded_amount from reserve.payments where id = ${p.paymentId}`;
    expect(pay).toEqual({ status: "refunded", refunded_amount: String(p.amount) });
    // a confirmed request stays confirmed whatever the poller reports late
    expect((await report(r2.id as string, "failed", null, "late")).status).toBe("confirmed");
    // nothing is left to refund
    expect(await sqlState(request(p.paymentId, 1, `conf:${p.paymentId}:3`))).toBe("RC208");
  });
});

describe("a confirmation that overtakes the poller's record of sending", () => {
  it("stays confirmed and still keeps the provider's refund id", async () => {
    const p = await paidReservation(sql);
    const r = await request(p.paymentId, p.amount, `k:${p.paymentId}:race`);
    await sql`select * from reserve.claim_refund_requests(10)`;
    // the provider's webhook lands before the poller writes down that it sent the refund
    await applyStatus(sql, p.paymentId, "refunded", { refunded_amount: p.amount });
    const after = await report(r.id as string, "sent", "re_race");
    expect(after).toMatchObject({ status: "confirmed", provider_refund_id: "re_race" });
    expect(after.sent_at).not.toBeNull();
  });
});

describe("a confirmation committed while the poller records the send", () => {
  it("is seen: the report waits for the payment the webhook holds, then confirms", async () => {
    const p = await paidReservation(sql);
    const r = await request(p.paymentId, p.amount, `k:${p.paymentId}:side-by-side`);
    await sql`select * from reserve.claim_refund_requests(10)`;
    const webhook = await sql.reserve();
    try {
      await webhook`begin`;
      // charge.refunded applied but not yet committed: it sees the request still 'sending'
      await applyStatus(webhook, p.paymentId, "refunded", { refunded_amount: p.amount });
      const reported = report(r.id as string, "sent", "re_side");
      const [{ waiting }] = await until(async () => {
        const rows = await sql`select count(*)::int as waiting from pg_stat_activity
                               where wait_event_type = 'Lock' and query like '%record_refund_result%'`;
        return rows[0].waiting > 0 ? rows : undefined;
      }, "the report waiting on the payment's lock");
      expect(waiting).toBe(1);
      await webhook`commit`;
      expect(await reported).toMatchObject({ status: "confirmed", provider_refund_id: "re_side" });
    } finally {
      webhook.release();
    }
  });
});

describe("refund requests: what cannot confirm or undo them", () => {
  it("a request still to send is never confirmed by another refund's confirmation", async () => {
    const p = await paidReservation(sql);
    const [a] = await sql`select * from reserve.request_refund(${p.paymentId}, 10000, 'goodwill', ${`a:${p.paymentId}`})`;
    const [b] = await sql`select * from reserve.request_refund(${p.paymentId}, 20000, 'goodwill', ${`b:${p.paymentId}`})`;
    await sql`select * from reserve.claim_refund_requests(20)`;
    await report(a.id as string, "retry", null, "timeout");
    await report(b.id as string, "sent", "re_b");
    await applyStatus(sql, p.paymentId, "partially_refunded", { gateway_status: "refund", refunded_amount: 20000 });
    const rows = await sql`select id, status from reserve.refund_requests where payment_id = ${p.paymentId} order by created_at`;
    expect(rows.map((r) => r.status)).toEqual(["requested", "confirmed"]);
  });

  it("a late report from a poller whose lease ran out does not undo a later send", async () => {
    const p = await paidReservation(sql);
    const [r] = await sql`select * from reserve.request_refund(${p.paymentId}, 5000, 'goodwill', ${`late:${p.paymentId}`})`;
    await sql`select * from reserve.claim_refund_requests(20)`;
    await report(r.id as string, "sent", "re_1");
    const after = await report(r.id as string, "failed", null, "stale report");
    expect(after).toMatchObject({ status: "sent", provider_refund_id: "re_1" });
  });

  it("a refund the provider never answers fails after 10 attempts and shows in refunds_stuck", async () => {
    const p = await paidReservation(sql);
    const [r] = await sql`select * from reserve.request_refund(${p.paymentId}, 5000, 'goodwill', ${`cap:${p.paymentId}`})`;
    for (let i = 0; i < 10; i++) {
      await sql`update reserve.refund_requests set next_attempt_at = now() - interval '1 second' where id = ${r.id}`;
      await sql`select * from reserve.claim_refund_requests(20)`;
      await report(r.id as string, "retry", null, "timeout");
    }
    const [row] = await sql`select status, attempts from reserve.refund_requests where id = ${r.id}`;
    expect(row).toMatchObject({ status: "failed", attempts: 10 });
    const [h] = await sql`select status from reserve.system_health_check() where check_name = 'refunds_stuck'`;
    expect(h.status).toBe("WARNING");
  });
});

describe("a sent refund whose confirmation never comes", () => {
  const lookup = (id: string, refund: Record<string, unknown> | null, update: Record<string, unknown> | null = null, error: string | null = null) =>
    sql`select * from reserve.record_refund_lookup(${id}::uuid, reserve.as_provider_refund(${refund ? sql.json(refund as never) : null}::jsonb),
          reserve.as_provider_update(${update ? sql.json(update as never) : null}::jsonb), ${error})`.then((r) => r[0]);

  async function sentRefund(amount = 20000) {
    const p = await paidReservation(sql);
    const r = await request(p.paymentId, amount, `lookup:${p.paymentId}:${crypto.randomUUID()}`);
    await sql`select * from reserve.claim_refund_requests(1000)`;
    const sent = await report(r.id as string, "sent", `re_${crypto.randomUUID().slice(0, 8)}`);
    return { p, r: sent };
  }

  it("is claimed for a lookup two minutes after it was sent, then with backoff while the provider says pending", async () => {
    const { r } = await sentRefund();
    const [due] = await sql`select next_attempt_at - sent_at between interval '119 seconds' and interval '121 seconds' as two_minutes
                            from reserve.refund_requests where id = ${r.id as string}`;
    expect(due.two_minutes).toBe(true);
    expect((await sql`select * from reserve.claim_refunds_to_confirm(1000)`).filter((x) => x.refund_request_id === r.id)).toEqual([]);
    await sql`update reserve.refund_requests set next_attempt_at = now() - interval '1 second' where id = ${r.id as string}`;
    const [claimed] = (await sql`select * from reserve.claim_refunds_to_confirm(1000)`).filter((x) => x.refund_request_id === r.id);
    expect(claimed).toMatchObject({ provider: "stripe", provider_refund_id: r.provider_refund_id, amount: "20000", currency: "BRL", lookups: 0 });
    const first = await lookup(r.id as string, { refund_id: r.provider_refund_id, status: "pending" });
    expect(first).toMatchObject({ status: "sent", lookups: 1, provider_refund_status: "pending" });
    const second = await lookup(r.id as string, null, null, "stripe: HTTP 503");
    expect(second).toMatchObject({ status: "sent", lookups: 2, error_message: "stripe: HTTP 503" });
    const [b] = await sql`select next_attempt_at - last_lookup_at as wait from reserve.refund_requests where id = ${r.id as string}`;
    expect(b.wait).toBe("00:02:00");
  });

  it("the provider saying the refund succeeded applies its payment: the ledger refund is posted and the request confirmed", async () => {
    const { p, r } = await sentRefund();
    const after = await lookup(r.id as string, { refund_id: r.provider_refund_id, status: "succeeded", amount: 20000, currency: "BRL" },
                               { status: "partially_refunded", refunded_amount: 20000, currency: "BRL", gateway_status: "succeeded" });
    expect(after).toMatchObject({ status: "confirmed", lookups: 1 });
    const [pay] = await sql`select status, refunded_amount::int from reserve.payments where id = ${p.paymentId}`;
    expect(pay).toEqual({ status: "partially_refunded", refunded_amount: 20000 });
    // a later lookup of a confirmed request changes nothing
    expect(await lookup(r.id as string, { refund_id: "x", status: "failed" })).toMatchObject({ status: "confirmed", lookups: 1 });
  });

  it("the provider saying the refund failed fails the request, and refunds_stuck fires at once", async () => {
    const { r } = await sentRefund(5000);
    const failed = await lookup(r.id as string, { refund_id: r.provider_refund_id, status: "failed" });
    expect(failed.status).toBe("failed");
    expect(failed.error_message).toContain("failed");
    const [h] = await sql`select status from reserve.system_health_check() where check_name = 'refunds_stuck'`;
    expect(h.status).toBe("WARNING");
    // a failed request is left as it is by an operator's look_up_refund (nothing to ask)
    const left = await asOperator(sql, "ops@reserve.test", (tx) => tx`select * from reserve.look_up_refund(${r.id as string}::uuid, 'ask again')`);
    expect(left[0].status).toBe("failed");
  });

  it("refunds_stuck fires hours after a refund was asked for, not two days", async () => {
    const { r } = await sentRefund(1000);
    const stuck = async () => {
      const [h] = await sql`select observed_value::int as n from reserve.system_health_check() where check_name = 'refunds_stuck'`;
      return h.n as number;
    };
    const before = await stuck();
    await sql`update reserve.refund_requests set created_at = now() - interval '3 hours 1 minute' where id = ${r.id as string}`;
    expect(await stuck()).toBe(before + 1);
    const [rule] = await sql`select runbook_section from reserve.alert_rules where alert_name = 'refunds_stuck'`;
    expect(rule.runbook_section).toBe("P2: REFUND STUCK");
  });

  it("an operator asks the provider now instead of after the backoff (look_up_refund); RC604 on a login that proves nobody", async () => {
    const { r } = await sentRefund(1000);
    expect(await sqlState(sql`select reserve.look_up_refund(${r.id as string}::uuid, 'now')`)).toBe("RC604");
    const [due] = await asOperator(sql, "ops@reserve.test", (tx) => tx`select * from reserve.look_up_refund(${r.id as string}::uuid, 'Stripe shows it done')`);
    expect(due.status).toBe("sent");
    expect((await sql`select * from reserve.claim_refunds_to_confirm(1000)`).map((x) => x.refund_request_id)).toContain(r.id);
  });

  it("refuses a lookup with no refund and no error, or a status that is not one (RC001), writing nothing", async () => {
    const { r } = await sentRefund(1000);
    expect(await sqlState(lookup(r.id as string, null))).toBe("RC001");
    expect(await sqlState(lookup(r.id as string, { refund_id: "x", status: "maybe" }))).toBe("RC001");
    expect(await sqlState(lookup(r.id as string, { refund_id: "x", status: "succeeded", extra: 1 }))).toBe("RC001");
    const [row] = await sql`select lookups, status from reserve.refund_requests where id = ${r.id as string}`;
    expect(row).toEqual({ lookups: 0, status: "sent" });
  });
});

describe("an operator's retry and close of a refund request (the refunds_stuck step)", () => {
  const ONCALL = "oncall@reserve.test";
  let OP: string;
  beforeAll(() => {
    OP = operatorName(sql, ONCALL);
  });
  const asOp = <T>(fn: (tx: postgres.TransactionSql) => Promise<T>): Promise<T> => asOperator(sql, ONCALL, fn);
  const stuck = async () =>
    Number((await sql`select observed_value from reserve.system_health_check() where check_name = 'refunds_stuck'`)[0].observed_value);

  /** A refund request the provider refused: claimed, then reported failed. */
  async function refused(paymentId: string, amount: number): Promise<Row> {
    const r = await request(paymentId, amount, `refused:${crypto.randomUUID()}`);
    await sql`update reserve.refund_requests set next_attempt_at = now() - interval '1 second' where id = ${r.id as string}`;
    await sql`select * from reserve.claim_refund_requests(1000)`;
    const failed = await report(r.id as string, "failed", null, "insufficient balance");
    expect(failed.status).toBe("failed");
    return failed;
  }

  it("retry queues a failed request again as a new request with its own key; the old one is closed; a repeat returns the same", async () => {
    const p = await paidReservation(sql);
    const old = await refused(p.paymentId, 15000);
    const before = await stuck();
    const { r: retried, xact } = await asOp(async (tx) => {
      const [r] = await tx`select * from reserve.retry_refund_request(${old.id as string}, 'INC-1: provider balance topped up')`;
      return { r, xact: (await tx`select pg_current_xact_id()::text as x`)[0].x as string };
    });
    const audits = await sql`select actor, reason, table_name from reserve.audit_trail where xact_id = ${xact}::bigint`;
    expect(audits.length).toBeGreaterThan(0);
    for (const a of audits) expect(a).toMatchObject({ actor: OP, reason: expect.stringContaining(`retry_refund_request by ${OP}: INC-1`) });
    expect(retried).toMatchObject({
      payment_id: p.paymentId, amount: "15000", reason: "goodwill", status: "requested", attempts: 0,
      retry_of: old.id, request_key: `retry:${old.id}`, requested_by: OP,
    });
    expect(retried.id).not.toBe(old.id);
    const [closed] = await sql`select * from reserve.refund_requests where id = ${old.id as string}`;
    expect(closed).toMatchObject({ status: "closed", closed_by: OP, close_reason: "retried: INC-1: provider balance topped up" });
    expect(await stuck()).toBe(before - 1);

    const again = await asOp(async (tx) => (await tx`select * from reserve.retry_refund_request(${old.id as string}, 'again')`)[0]);
    expect(again.id).toBe(retried.id);
    expect(await requests(p.paymentId)).toHaveLength(2);

    // the new request goes the usual way: claimed with its own key, sent, confirmed by the provider's refund
    const claimed = (await sql`select * from reserve.claim_refund_requests(1000)`).filter((c) => c.payment_id === p.paymentId);
    expect(claimed).toMatchObject([{ refund_request_id: retried.id, idempotency_key: `refund:${retried.id}` }]);
    await report(retried.id as string, "sent", "re_retry");
    await applyStatus(sql, p.paymentId, "partially_refunded", { gateway_status: "refund", refunded_amount: 15000 });
    const [done] = await sql`select status from reserve.refund_requests where id = ${retried.id as string}`;
    expect(done.status).toBe("confirmed");
  });

  it("two operators retrying the same request at once make one new request", async () => {
    const p = await paidReservation(sql);
    const old = await refused(p.paymentId, 7000);
    // each on their own role's connection
    const retry = (who: string) =>
      asOperator(sql, who, async (tx) => (await tx`select * from reserve.retry_refund_request(${old.id as string}, 'INC-2')`)[0]);
    const [a, b] = await Promise.all([retry("ana@reserve.test"), retry("bea@reserve.test")]);
    expect(a.id).toBe(b.id);
    const rows = await requests(p.paymentId);
    expect(rows.map((r) => r.status).sort()).toEqual(["closed", "requested"]);
  });

  it("refuses what cannot be retried: not failed (RC212), unknown (RC211), no proven operator (RC604) or reason (RC501), the money gone since (RC208, nothing written)", async () => {
    const p = await paidReservation(sql);
    const open = await request(p.paymentId, 1000, `open:${p.paymentId}`);
    expect(await sqlState(asOp((tx) => tx`select reserve.retry_refund_request(${open.id as string}, 'why')`))).toBe("RC212");
    expect(await sqlState(asOp((tx) => tx`select reserve.retry_refund_request(${crypto.randomUUID()}, 'why')`))).toBe("RC211");
    const old = await refused(p.paymentId, 2000);
    expect(await sqlState(sql`select reserve.retry_refund_request(${old.id as string}, 'no one')`)).toBe("RC604");
    expect(await sqlState(asOp((tx) => tx`select reserve.retry_refund_request(${old.id as string}, '  ')`))).toBe("RC501");
    // the guest was refunded in full by other means meanwhile: nothing left to retry
    await applyStatus(sql, p.paymentId, "refunded", { refunded_amount: p.amount });
    expect(await sqlState(asOp((tx) => tx`select reserve.retry_refund_request(${old.id as string}, 'INC-3')`))).toBe("RC208");
    const [still] = await sql`select status from reserve.refund_requests where id = ${old.id as string}`;
    expect(still.status).toBe("failed");
    // and closing is the way out
    const [closed] = await asOp((tx) => tx`select * from reserve.close_refund_request(${old.id as string}, 'INC-3: refunded by recover_payment')`);
    expect(closed).toMatchObject({ status: "closed", closed_by: OP, close_reason: "INC-3: refunded by recover_payment" });
  });

  it("close ends a failed, requested or sent request (idempotent) and refuses a confirmed or sending one (RC212)", async () => {
    const p = await paidReservation(sql);
    const failed = await refused(p.paymentId, 1000);
    const before = await stuck();
    const close = (id: unknown, why = "INC-4: refunded by bank transfer") =>
      asOp(async (tx) => (await tx`select * from reserve.close_refund_request(${id as string}, ${why})`)[0]);
    const c1 = await close(failed.id);
    expect(c1).toMatchObject({ status: "closed", closed_by: OP, close_reason: "INC-4: refunded by bank transfer" });
    expect(await stuck()).toBe(before - 1);
    const again = await close(failed.id, "a second time");
    expect(again.close_reason).toBe("INC-4: refunded by bank transfer");

    const queued = await request(p.paymentId, 1000, `queued:${p.paymentId}`);
    const sending = await request(p.paymentId, 1000, `sending:${p.paymentId}`);
    await sql`update reserve.refund_requests set next_attempt_at = now() + interval '1 hour' where id = ${queued.id as string}`;
    await sql`select * from reserve.claim_refund_requests(1000)`;
    expect((await close(queued.id)).status).toBe("closed");
    expect(await sqlState(close(sending.id))).toBe("RC212");
    // closed requests are never claimed, and do not count against what is left to refund
    expect((await sql`select * from reserve.claim_refund_requests(1000)`).map((c) => c.refund_request_id)).not.toContain(queued.id);
    await report(sending.id as string, "sent", "re_s");
    expect((await close(sending.id, "INC-5: provider shows the refund failed")).status).toBe("closed");

    const confirmed = await request(p.paymentId, 500, `confirmed:${p.paymentId}`);
    await sql`update reserve.refund_requests set next_attempt_at = now() - interval '1 second' where id = ${confirmed.id as string}`;
    await sql`select * from reserve.claim_refund_requests(1000)`;
    await report(confirmed.id as string, "sent", "re_c");
    await applyStatus(sql, p.paymentId, "partially_refunded", { gateway_status: "refund", refunded_amount: 500 });
    expect((await sql`select status from reserve.refund_requests where id = ${confirmed.id as string}`)[0].status).toBe("confirmed");
    expect(await sqlState(close(confirmed.id))).toBe("RC212");
  });

  it("a sent request unconfirmed past refund_stuck_hours counts as stuck until closed", async () => {
    const p = await paidReservation(sql);
    const r = await request(p.paymentId, 800, `old:${p.paymentId}`);
    await sql`update reserve.refund_requests set next_attempt_at = now() - interval '1 second' where id = ${r.id as string}`;
    await sql`select * from reserve.claim_refund_requests(1000)`;
    await report(r.id as string, "sent", "re_old");
    const before = await stuck();
    await sql`update reserve.refund_requests set created_at = now() - interval '3 hours 1 minute' where id = ${r.id as string}`;
    expect(await stuck()).toBe(before + 1);
    await asOp((tx) => tx`select reserve.close_refund_request(${r.id as string}, 'INC-6: provider refund re_old failed')`);
    expect(await stuck()).toBe(before);
  });
});

describe("two refunds in flight that the provider finishes out of order", () => {
  const lookup = (id: string, refund: Record<string, unknown>, update: Record<string, unknown> | null = null) =>
    sql`select * from reserve.record_refund_lookup(${id}::uuid, reserve.as_provider_refund(${sql.json(refund as never)}::jsonb),
          reserve.as_provider_update(${update ? sql.json(update as never) : null}::jsonb), null)`.then((r) => r[0]);

  /** Ra (20,000, re_A) asked for first, Rb (30,000, re_B) second, both sent and pending at the provider. */
  async function twoSent() {
    const p = await paidReservation(sql);
    const ra = await request(p.paymentId, 20000, `order:${p.paymentId}:a`);
    const rb = await request(p.paymentId, 30000, `order:${p.paymentId}:b`);
    await sql`select * from reserve.claim_refund_requests(1000)`;
    await report(ra.id as string, "sent", `re_A_${p.paymentId}`);
    await report(rb.id as string, "sent", `re_B_${p.paymentId}`);
    const statuses = async () => Object.fromEntries((await requests(p.paymentId)).map((r) => [r.id === ra.id ? "a" : "b", r.status]));
    return { p, ra, rb, reA: `re_A_${p.paymentId}`, reB: `re_B_${p.paymentId}`, statuses };
  }

  it("a provider that lists its refunds (MercadoPago, OpenPIX): the one that went back is the one confirmed", async () => {
    const { p, reA, reB, statuses } = await twoSent();
    await applyStatus(sql, p.paymentId, "partially_refunded", { refunded_amount: 30000, currency: "BRL",
      refunds: [{ refund_id: reB, amount: 30000, status: "succeeded" }, { refund_id: reA, amount: 20000, status: "pending" }] });
    expect(await statuses()).toEqual({ a: "sent", b: "confirmed" });
    // re_A then fails at the provider: its request fails (refunds_stuck), nothing was confirmed for it
    await applyStatus(sql, p.paymentId, "partially_refunded", { refunded_amount: 30000, currency: "BRL",
      refunds: [{ refund_id: reB, amount: 30000, status: "succeeded" }, { refund_id: reA, amount: 20000, status: "failed" }] });
    const [ra] = (await requests(p.paymentId)).filter((r) => r.provider_refund_id === reA);
    expect(ra).toMatchObject({ status: "sent", provider_refund_status: "failed" });
  });

  it("a provider that only says the total (Stripe): a lookup that finds the second succeeded confirms it and looks the first up again", async () => {
    const { p, ra, rb, reA, reB, statuses } = await twoSent();
    await applyStatus(sql, p.paymentId, "partially_refunded", { refunded_amount: 30000, currency: "BRL" });
    // by amount alone the older one fits the total
    expect(await statuses()).toEqual({ a: "confirmed", b: "sent" });
    const total = { status: "partially_refunded", refunded_amount: 30000, currency: "BRL", gateway_status: "succeeded" };
    expect(await lookup(rb.id as string, { refund_id: reB, status: "succeeded", amount: 30000, currency: "BRL" }, total))
      .toMatchObject({ status: "confirmed" });
    expect(await statuses()).toEqual({ a: "sent", b: "confirmed" });
    const [again] = (await sql`select * from reserve.claim_refunds_to_confirm(1000)`).filter((x) => x.refund_request_id === ra.id);
    expect(again).toMatchObject({ provider_refund_id: reA });
    expect(await lookup(ra.id as string, { refund_id: reA, status: "failed" })).toMatchObject({ status: "failed" });
    const [{ stuck }] = await sql`select observed_value::int as stuck from reserve.system_health_check() where check_name = 'refunds_stuck'`;
    expect(stuck).toBeGreaterThan(0);
  });

  it("both going back confirm both, whatever order the provider says it in", async () => {
    const { p, reA, reB, statuses } = await twoSent();
    await applyStatus(sql, p.paymentId, "partially_refunded", { refunded_amount: 30000, currency: "BRL",
      refunds: [{ refund_id: reB, amount: 30000, status: "succeeded" }] });
    await applyStatus(sql, p.paymentId, "partially_refunded", { refunded_amount: 50000, currency: "BRL",
      refunds: [{ refund_id: reB, amount: 30000, status: "succeeded" }, { refund_id: reA, amount: 20000, status: "succeeded" }] });
    expect(await statuses()).toEqual({ a: "confirmed", b: "confirmed" });
  });
});

describe("a refund queued before the money went back by another way", () => {
  it("is not sent after a lost chargeback took it all back: failed with the figures, for an operator", async () => {
    const p = await paidReservation(sql);
    const r = await request(p.paymentId, p.amount, `chargeback:${p.paymentId}`);
    await applyStatus(sql, p.paymentId, "disputed", { dispute_amount: p.amount, currency: "BRL" });
    await applyStatus(sql, p.paymentId, "refunded", { dispute_amount: p.amount, currency: "BRL", gateway_status: "dispute_lost" });
    const claimed = (await sql`select * from reserve.claim_refund_requests(1000)`).filter((x) => x.payment_id === p.paymentId);
    expect(claimed).toEqual([]);
    const [rr] = await requests(p.paymentId);
    expect(rr).toMatchObject({ id: r.id, status: "failed", attempts: 0 });
    expect(rr.error_message).toMatch(new RegExp(`^not sent: payment ${p.paymentId} received ${p.amount} BRL, of which ${p.amount} went back already`));
  });

  it("holds back a request that no longer fits beside another in flight once a refund made elsewhere reached us", async () => {
    const p = await paidReservation(sql);
    const first = await request(p.paymentId, p.amount - 10000, `fit:${p.paymentId}:1`);
    await sql`select * from reserve.claim_refund_requests(1000)`;
    await report(first.id as string, "sent", `re_fit_${p.paymentId}`);
    const second = await request(p.paymentId, 10000, `fit:${p.paymentId}:2`);
    // a refund of 5,000 made at the provider's dashboard reaches us meanwhile
    await applyStatus(sql, p.paymentId, "partially_refunded", { refunded_amount: 5000, currency: "BRL" });
    // the first is in flight: the second waits for it rather than fail on a count that may hold it twice
    expect((await sql`select * from reserve.claim_refund_requests(1000)`).filter((x) => x.payment_id === p.paymentId)).toEqual([]);
    expect((await requests(p.paymentId)).find((x) => x.id === second.id)!.status).toBe("requested");
    // the first goes back: what is left (5,000) is less than the second
    await applyStatus(sql, p.paymentId, "partially_refunded", { refunded_amount: p.amount - 5000, currency: "BRL" });
    expect((await requests(p.paymentId)).find((x) => x.id === first.id)!.status).toBe("confirmed");
    await sql`update reserve.refund_requests set next_attempt_at = now() - interval '1 second' where id = ${second.id as string}`;
    expect((await sql`select * from reserve.claim_refund_requests(1000)`).filter((x) => x.payment_id === p.paymentId)).toEqual([]);
    const rr = (await requests(p.paymentId)).find((x) => x.id === second.id)!;
    expect(rr.status).toBe("failed");
    expect(rr.error_message).toContain(`of which ${p.amount - 5000} went back already (partially_refunded) and 0 is in flight`);
  });
});

describe("a refund whose money went back while we were not sure we had sent it", () => {
  const due = (id: string) => sql`update reserve.refund_requests set next_attempt_at = now() - interval '1 second' where id = ${id}`;

  it("a send that timed out (retry) is sent again under its key when the provider's refund reaches us, and confirmed", async () => {
    const p = await paidReservation(sql);
    const r = await request(p.paymentId, p.amount, `timeout:${p.paymentId}`);
    await sql`select * from reserve.claim_refund_requests(1000)`;
    await report(r.id as string, "retry", null, "stripe: timeout");
    // the provider did take it: its refund event raises the total
    await applyStatus(sql, p.paymentId, "refunded", { refunded_amount: p.amount, currency: "BRL" });
    await due(r.id as string);
    const claimed = (await sql`select * from reserve.claim_refund_requests(1000)`).filter((x) => x.refund_request_id === r.id);
    expect(claimed).toMatchObject([{ idempotency_key: `refund:${r.id}`, attempts: 2 }]);
    expect(await report(r.id as string, "sent", `re_${r.id}`)).toMatchObject({ status: "confirmed" });
  });

  it("a second request waits while the first is in flight with its money already counted, then is sent", async () => {
    const p = await paidReservation(sql);
    const a = await request(p.paymentId, 30000, `inflight:${p.paymentId}:a`);
    await sql`select * from reserve.claim_refund_requests(1000)`; // a: sending, its report not in yet
    const b = await request(p.paymentId, p.amount - 30000, `inflight:${p.paymentId}:b`);
    await applyStatus(sql, p.paymentId, "partially_refunded", { refunded_amount: 30000, currency: "BRL" });
    expect((await sql`select * from reserve.claim_refund_requests(1000)`).filter((x) => x.payment_id === p.paymentId)).toEqual([]);
    let [rb] = (await requests(p.paymentId)).filter((x) => x.id === b.id);
    expect(rb.status).toBe("requested");
    await report(a.id as string, "sent", `re_${a.id}`);
    await due(b.id as string);
    expect((await sql`select * from reserve.claim_refund_requests(1000)`).map((x) => x.refund_request_id)).toContain(b.id);
    [rb] = (await requests(p.paymentId)).filter((x) => x.id === b.id);
    expect(rb.status).toBe("sending");
  });

  it("a payment another transaction holds is skipped by the claim, not waited on", async () => {
    const p = await paidReservation(sql);
    const r = await request(p.paymentId, 1000, `busy:${p.paymentId}`);
    const holder = postgres(db.url, { max: 1, onnotice: () => {} });
    let release!: () => void;
    try {
      let locked!: () => void;
      const isLocked = new Promise<void>((x) => (locked = x));
      const released = new Promise<void>((x) => (release = x));
      const held = holder.begin(async (tx) => {
        await tx`select 1 from reserve.payments where id = ${p.paymentId} for update`;
        locked();
        await released;
      });
      await isLocked;
      const claimed = await sql.begin(async (tx) => {
        await tx`set local lock_timeout = '2s'`;
        return tx`select * from reserve.claim_refund_requests(1000)`;
      });
      expect(claimed.map((x) => x.refund_request_id)).not.toContain(r.id);
      release();
      await held;
    } finally {
      release?.();
      await holder.end();
    }
    expect((await sql`select * from reserve.claim_refund_requests(1000)`).map((x) => x.refund_request_id)).toContain(r.id);
  });
});
