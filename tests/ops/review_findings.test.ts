// Found by a second reading of the ops change, each with the repro it came with: a refund never sent
// confirmed by another; an overbooking whose counter errors cancel out; a dead event nothing can apply;
// overlapping ops blocks; a stale refund report.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, sqlState, type Sql, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";
import { asOperator } from "../helpers/runbook.ts";
import { paidReservation, replica } from "./ops_helpers.ts";

let db: TestDatabase;
let sql: Sql;
beforeAll(async () => {
  db = await createTestDatabase();
  sql = db.sql;
});
afterAll(async () => await db?.drop());

const OP = "ops@reserve";

describe("refund requests", () => {
  it("a request still to send is never confirmed by another refund's confirmation", async () => {
    const p = await paidReservation(sql);
    const [a] = await sql`select * from reserve.request_refund(${p.paymentId}, 10000, 'goodwill', ${`a:${p.paymentId}`})`;
    const [b] = await sql`select * from reserve.request_refund(${p.paymentId}, 20000, 'goodwill', ${`b:${p.paymentId}`})`;
    await sql`select * from reserve.claim_refund_requests(20)`;
    await sql`select reserve.record_refund_result(${a.id}::uuid, 'retry', null, 'timeout')`;
    await sql`select reserve.record_refund_result(${b.id}::uuid, 'sent', 're_b', null)`;
    await sql`select * from reserve.apply_payment_status(${p.paymentId}, 'partially_refunded', null, 'refund', null, null, 20000)`;
    const rows = await sql`select id, status from reserve.refund_requests where payment_id = ${p.paymentId} order by created_at`;
    expect(rows.map((r) => r.status)).toEqual(["requested", "confirmed"]);
  });

  it("a late report from a poller whose lease ran out does not undo a later send", async () => {
    const p = await paidReservation(sql);
    const [r] = await sql`select * from reserve.request_refund(${p.paymentId}, 5000, 'goodwill', ${`late:${p.paymentId}`})`;
    await sql`select * from reserve.claim_refund_requests(20)`;
    await sql`select reserve.record_refund_result(${r.id}::uuid, 'sent', 're_1', null)`;
    const [after] = await sql`select * from reserve.record_refund_result(${r.id}::uuid, 'failed', null, 'stale report')`;
    expect(after).toMatchObject({ status: "sent", provider_refund_id: "re_1" });
  });

  it("a refund the provider never answers fails after 10 attempts and shows in refunds_stuck", async () => {
    const p = await paidReservation(sql);
    const [r] = await sql`select * from reserve.request_refund(${p.paymentId}, 5000, 'goodwill', ${`cap:${p.paymentId}`})`;
    for (let i = 0; i < 10; i++) {
      await sql`update reserve.refund_requests set next_attempt_at = now() - interval '1 second' where id = ${r.id}`;
      await sql`select * from reserve.claim_refund_requests(20)`;
      await sql`select reserve.record_refund_result(${r.id}::uuid, 'retry', null, 'timeout')`;
    }
    const [row] = await sql`select status, attempts from reserve.refund_requests where id = ${r.id}`;
    expect(row).toMatchObject({ status: "failed", attempts: 10 });
    const [h] = await sql`select status from reserve.system_health_check() where check_name = 'refunds_stuck'`;
    expect(h.status).toBe("WARNING");
  });
});

describe("overbooking written by moving a stay's dates with the guards off", () => {
  it("is seen although the unit's count of nights is unchanged", async () => {
    const u = await f.unit(sql, { nights: 12, allotment: 2 });
    const stay = async (from: number, to: number) => {
      const [c] = await sql`select * from reserve.begin_checkout(${`g-${crypto.randomUUID()}`}, 'card', 'stripe', ${u.unitId},
                              ${f.isoDate(from)}, ${f.isoDate(to)}, 2)`;
      const pi = `pi_${crypto.randomUUID()}`;
      await sql`select reserve.attach_gateway_payment(${c.payment_id}, ${pi})`;
      const [w] = await sql`select * from reserve.process_webhook_event('stripe', ${`evt_${pi}`}, 'payment_intent.succeeded', now(),
                              '{}'::jsonb, ${c.payment_id}::uuid, ${pi}, 'succeeded')`;
      return w.reservation_id as string;
    };
    const r1 = await stay(1, 3);
    await stay(5, 7);
    await stay(5, 7);
    await sql.begin(async (tx) => {
      await replica(tx);
      await tx`update reserve.reservations set check_in = ${f.isoDate(5)}, check_out = ${f.isoDate(7)} where id = ${r1}`;
    });
    const oversold = await sql`select date from reserve.overbooking_check where unit_id = ${u.unitId}`;
    expect(oversold.map((o) => o.date.toISOString().slice(0, 10))).toEqual([f.isoDate(5), f.isoDate(6)]);
    expect((await sql`select * from reserve.availability_counter_drift where unit_id = ${u.unitId}`).length).toBeGreaterThan(0);
  });
});

describe("resolve_webhook", () => {
  it("closes a dead event nothing can apply, with who and why, and the alert goes", async () => {
    const [w] = await sql`select * from reserve.process_webhook_event('mercadopago', ${`mp_${crypto.randomUUID()}`}, 'payment.updated',
                            null, '{}'::jsonb, null, '123', null, null, null, null, null, null, 'lookup failed')`;
    await sql`update reserve.processed_webhooks set status = 'dead' where id = ${w.webhook_id}`;
    expect(await sqlState(sql`select reserve.resolve_webhook(${w.webhook_id}::uuid, 'settled by polling')`)).toBe("RC501");
    const [r] = await asOperator(sql, OP, (tx) => tx`select * from reserve.resolve_webhook(${w.webhook_id}::uuid, 'settled by polling')`);
    expect(r.status).toBe("ignored");
    expect(r.error_message).toContain(OP);
    const [h] = await sql`select observed_value from reserve.system_health_check() where check_name = 'webhooks_dead'`;
    expect(Number(h.observed_value)).toBe(0);
  });
});

describe("ops blocks that overlap", () => {
  it("lifting one does not reopen nights another open block still asks to keep closed", async () => {
    const u = await f.unit(sql, { nights: 10 });
    const [a] = await asOperator(sql, OP, (tx) => tx`select * from reserve.block_unit_dates(${u.unitId}, ${f.isoDate(1)}::date, ${f.isoDate(5)}::date, 'A')`);
    await asOperator(sql, OP, (tx) => tx`select * from reserve.block_unit_dates(${u.unitId}, ${f.isoDate(3)}::date, ${f.isoDate(7)}::date, 'B')`);
    await asOperator(sql, OP, (tx) => tx`select * from reserve.unblock_unit_dates(${a.block_id}::uuid, 'A done')`);
    const open = await sql`select date from reserve.availability_calendar where unit_id = ${u.unitId} and not is_blocked and date < ${f.isoDate(7)} order by date`;
    expect(open.map((o) => o.date.toISOString().slice(0, 10))).toEqual([f.isoDate(1), f.isoDate(2)]);
  });
});
