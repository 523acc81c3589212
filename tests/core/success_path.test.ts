// The success path's shape, as the bench measures it and the guarantees demand: a duplicate delivery is
// answered from a read (no transaction id, no WAL, no lock, and it never waits for a lock someone else
// holds), and a delivery that is not yet visible as completed still queues on the event row.
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type Sql, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";
import { processEvent, refusingReservations } from "../helpers/money.ts";

type Q = postgres.Sql | postgres.TransactionSql;

let db: TestDatabase;
let sql: Sql;
beforeAll(async () => {
  db = await createTestDatabase();
  sql = db.sql;
});
afterAll(async () => await db?.drop());

const succeeded = (q: Q, eventId: string, gatewayId: string, payload: unknown = { id: eventId }) =>
  processEvent(q, { event_id: eventId, payload }, { status: "succeeded", gateway_payment_id: gatewayId });

describe("a duplicate delivery is answered from a read", () => {
  it("takes no transaction id, writes no WAL and holds no lock", async () => {
    const c = await f.checkoutAttempt(sql, { gatewayId: "pi_dup_read" });
    const eventId = `evt_${crypto.randomUUID()}`;
    const first = await succeeded(sql, eventId, "pi_dup_read");
    expect(first).toMatchObject({ webhook_status: "completed", duplicate: false, finalize_outcome: "created" });

    const facts = await sql.begin(async (tx) => {
      const again = await succeeded(tx, eventId, "pi_dup_read", { changed: true });
      // the same delivery again under EXPLAIN: its WAL counts every statement inside the function (the
      // cluster's LSN moves with the other test files, this backend's WAL usage does not)
      const event = { provider: "stripe", event_id: eventId, event_type: "payment_intent.succeeded", payload: { id: eventId } };
      const [plan] = await tx`
        explain (analyze, wal, format json)
        select * from reserve.process_webhook_event(reserve.as_webhook_event(${tx.json(event)}),
          reserve.as_provider_update(${tx.json({ status: "succeeded", gateway_payment_id: "pi_dup_read", amount_received: 1, currency: "BRL" })}))`;
      const top = (plan["QUERY PLAN"] as { Plan: Record<string, number> }[])[0].Plan;
      const [x] = await tx`
        select txid_current_if_assigned()::text as xid,
               (select count(*)::int from pg_locks
                where pid = pg_backend_pid() and (locktype in ('transactionid', 'tuple')
                                                  or (locktype = 'relation' and mode <> 'AccessShareLock'))) as write_locks`;
      return { again, xid: x.xid, writeLocks: x.write_locks, walRecords: top["WAL Records"], walBytes: top["WAL Bytes"] };
    });
    expect(facts.again).toMatchObject({
      webhook_id: first.webhook_id, webhook_status: "completed", duplicate: true, attempts: 1, outcome: "duplicate",
      payment_id: c.paymentId, payment_status: "succeeded",
    });
    expect(facts.xid).toBeNull();
    expect(facts.writeLocks).toBe(0);
    expect(facts.walRecords).toBe(0);
    expect(facts.walBytes).toBe(0);
    // ...and EXPLAIN does count what a function writes inside: a new event, recorded as ignored
    const [written] = await sql`
      explain (analyze, wal, format json)
      select * from reserve.process_webhook_event(reserve.as_webhook_event(${sql.json({
        provider: "stripe", event_id: `${eventId}_other`, event_type: "charge.updated", payload: { id: eventId } })}))`;
    expect((written["QUERY PLAN"] as { Plan: Record<string, number> }[])[0].Plan["WAL Records"]).toBeGreaterThan(0);
    // what the first delivery recorded is kept: the duplicate's different payload is not written
    const [w] = await sql`select payload, attempts from reserve.processed_webhooks where id = ${first.webhook_id as string}`;
    expect(w).toEqual({ payload: { id: eventId }, attempts: 1 });
  });

  it("answers while another transaction holds the payment and the event row", async () => {
    await f.checkoutAttempt(sql, { gatewayId: "pi_dup_busy" });
    const eventId = `evt_${crypto.randomUUID()}`;
    const first = await succeeded(sql, eventId, "pi_dup_busy");
    const other = postgres(db.url, { max: 1, onnotice: () => {} });
    try {
      await other.begin(async (tx) => {
        await tx`select 1 from reserve.payments where id = ${first.payment_id as string} for update`;
        await tx`select 1 from reserve.processed_webhooks where id = ${first.webhook_id as string} for update`;
        // a lock wait would fail the statement instead of hanging the test
        const again = await sql.begin(async (q) => {
          await q`set local lock_timeout = '500ms'`;
          return succeeded(q, eventId, "pi_dup_busy");
        });
        expect(again).toMatchObject({ duplicate: true, webhook_status: "completed", outcome: "duplicate" });
      });
    } finally {
      await other.end();
    }
  });

  it("a failed event is not a duplicate: its redelivery is processed again", async () => {
    await f.checkoutAttempt(sql, { gatewayId: "pi_dup_failed" });
    const eventId = `evt_${crypto.randomUUID()}`;
    const failed = await processEvent(sql, { event_id: eventId, processing_error: "provider timed out" },
                                      { status: "succeeded", gateway_payment_id: "pi_dup_failed" });
    expect(failed).toMatchObject({ webhook_status: "failed", duplicate: false });
    const again = await succeeded(sql, eventId, "pi_dup_failed");
    expect(again).toMatchObject({ webhook_status: "completed", duplicate: false, attempts: 2, finalize_outcome: "created" });
  });
});

describe("the audit trail: one row per business transaction", () => {
  it("a finalize writes one audit row naming who, why and every row it changed with before and after", async () => {
    const c = await f.checkoutAttempt(sql, { gatewayId: "pi_audit_one" });
    const eventId = `evt_${crypto.randomUUID()}`;
    const r = await succeeded(sql, eventId, "pi_audit_one");
    expect(r).toMatchObject({ webhook_status: "completed", finalize_outcome: "created" });
    const [{ xact }] = await sql`select xact_id::text as xact from reserve.audit_trail
                                 where table_name = 'reservations' and row_id = ${r.reservation_id as string}`;
    const rows = await sql`select * from reserve.audit_logs where xact_id = ${xact}::bigint`;
    expect(rows).toHaveLength(1);
    const [a] = rows;
    expect(a).toMatchObject({ actor: "postgres", action: "UPDATE", table_name: "payments", row_id: c.paymentId });
    expect(a.reason).toContain(`webhook ${r.webhook_id}`);
    const changes = a.changes as { op: string; table: string; row_id: string; old: Record<string, unknown> | null; new: Record<string, unknown> | null }[];
    const touched = changes.map((x) => `${x.op} ${x.table}`);
    expect(touched).toEqual(expect.arrayContaining(["UPDATE payments", "INSERT reservations", "UPDATE booking_intents"]));
    // the ledger keeps its own record: not copied into the audit
    expect(touched.filter((t) => t.includes("ledger"))).toEqual([]);
    const pay = changes.find((x) => x.table === "payments" && x.op === "UPDATE")!;
    expect(pay.old).toMatchObject({ status: "pending" });
    expect(pay.new).toMatchObject({ id: c.paymentId, status: "succeeded" });
    // old holds only what changed; the row-level view gives the whole row before
    expect(pay.old).not.toHaveProperty("amount");
    const [before] = await sql`select old_values, new_values from reserve.audit_trail
                               where audit_id = ${a.id as string} and table_name = 'payments' and action = 'UPDATE'`;
    expect(before.old_values).toMatchObject({ id: c.paymentId, status: "pending", amount: Number(c.payment.amount) });
    expect(before.new_values).toMatchObject({ status: "succeeded" });
  });

  it("a webhook's apply writes its audit row once, whole (no empty row rewritten at commit); a change after it in the transaction joins that row", async () => {
    await f.checkoutAttempt(sql, { gatewayId: "pi_audit_held" });
    const audit = (q: Q) => q<{ ins: number; upd: number }[]>`
      select coalesce(sum(n_tup_ins), 0)::int as ins, coalesce(sum(n_tup_upd), 0)::int as upd from pg_stat_xact_user_tables
      where schemaname = 'reserve' and relname like 'audit\\_logs\\_p%'`;
    const { counts, id, changes, after } = await sql.begin(async (tx) => {
      const [before] = await audit(tx);
      const r = await succeeded(tx, `evt_${crypto.randomUUID()}`, "pi_audit_held");
      expect(r).toMatchObject({ webhook_status: "completed", finalize_outcome: "created" });
      const [now] = await audit(tx);
      const [row] = await tx`select id::text, changes from reserve.audit_logs where xact_id = pg_current_xact_id()::text::bigint`;
      // the hold has ended: an operator's statement in the same transaction is audited, into the same row
      await tx`set local reserve.reason = 'INC-11: note on the stay'`;
      await tx`update reserve.reservations set metadata = metadata || '{"note": "late arrival"}' where id = ${r.reservation_id as string}`;
      const after = await tx`select table_name, reason from reserve.audit_trail where audit_id = ${row.id as string} order by change_no`;
      return { counts: { ins: now.ins - before.ins, upd: now.upd - before.upd }, id: row.id as string,
               changes: row.changes as { op: string; table: string }[], after };
    });
    expect(counts).toEqual({ ins: 1, upd: 0 });
    expect(changes.map((x) => `${x.op} ${x.table}`)).toEqual(["UPDATE payments", "UPDATE booking_intents", "INSERT reservations"]);
    expect(after.map((x) => x.table_name)).toEqual(["payments", "booking_intents", "reservations", "reservations"]);
    expect(after[3].reason).toBe("INC-11: note on the stay");
    expect(await sql`select count(*)::int as n from reserve.audit_logs where id = ${id}`).toEqual([{ n: 1 }]);
  });

  it("a held audit is written 100 changes to a row, and what is still held when its hold ends unwritten is written before the next change", async () => {
    const { unitId } = await f.unit(sql, { nights: 150 });
    const xact = await sql.begin(async (tx) => {
      await tx`set local reserve.reason = 'INC-12: reprice'`;
      await tx`select set_config('reserve.audit_held', pg_current_xact_id()::text, true)`;
      await tx`update reserve.availability_calendar set price = 321 where unit_id = ${unitId}`;
      // the hold ends without write_held_audit: the next change writes the held chunk first
      await tx`select set_config('reserve.audit_held', '', true)`;
      await tx`update reserve.availability_calendar set price = 323 where unit_id = ${unitId}
               and date = (select max(date) from reserve.availability_calendar where unit_id = ${unitId})`;
      const [{ x }] = await tx`select pg_current_xact_id()::text as x`;
      return x as string;
    });
    const rows = await sql`select jsonb_array_length(changes) as n, reason from reserve.audit_logs where xact_id = ${xact}::bigint order by id`;
    expect(rows.map((r) => r.n)).toEqual([100, 50, 1]);
    expect(rows.every((r) => r.reason === "INC-12: reprice")).toBe(true);
    const [t] = await sql`select count(*)::int as n, count(*) filter (where new_values ->> 'price' = '321')::int as first,
                                 count(distinct row_id)::int as nights
                          from reserve.audit_trail where xact_id = ${xact}::bigint`;
    expect(t).toEqual({ n: 151, first: 150, nights: 150 });
  });

  it("a webhook whose apply fails keeps no audit of what it rolled back, and the next statement is audited as usual", async () => {
    const c = await f.checkoutAttempt(sql, { gatewayId: "pi_audit_fail" });
    const { r, xact } = await refusingReservations(sql, () => sql.begin(async (tx) => {
      const r = await succeeded(tx, `evt_${crypto.randomUUID()}`, "pi_audit_fail");
      await tx`update reserve.payments set metadata = metadata || '{"seen": true}' where id = ${c.paymentId}`;
      const [{ x }] = await tx`select pg_current_xact_id()::text as x`;
      return { r, xact: x as string };
    }));
    expect(r).toMatchObject({ webhook_status: "failed" });
    // what was rolled back (the payment's success, the intent) is not there; the manual change is
    expect(await sql`select count(*)::int as n from reserve.audit_logs where xact_id = ${xact}::bigint`).toEqual([{ n: 1 }]);
    const trail = await sql`select table_name, new_values -> 'metadata' ->> 'seen' as seen, new_values ->> 'status' as status
                            from reserve.audit_trail where xact_id = ${xact}::bigint`;
    expect(trail).toEqual([{ table_name: "payments", seen: "true", status: "pending" }]);
  });

  it("manual SQL over several statements is one row too; what a rolled-back savepoint changed is not in it", async () => {
    const { unitId } = await f.unit(sql, { nights: 3 });
    const nights = await sql`select date::text as d from reserve.availability_calendar where unit_id = ${unitId} order by date`;
    const auditId = await sql.begin(async (tx) => {
      await tx`set local reserve.actor = 'ops:ana'`;
      await tx`set local reserve.reason = 'INC-7: close the unit'`;
      await tx`update reserve.availability_calendar set is_blocked = true where unit_id = ${unitId} and date = ${nights[0].d}`;
      await tx.savepoint(async (sp) => {
        await sp`update reserve.availability_calendar set price = 1 where unit_id = ${unitId} and date = ${nights[1].d}`;
        throw new Error("changed my mind");
      }).catch(() => {});
      await tx`set local reserve.reason = 'INC-7: and the last night'`;
      await tx`update reserve.availability_calendar set is_blocked = true where unit_id = ${unitId} and date = ${nights[2].d}`;
      // before commit the trail already reads this transaction's changes
      const mine = await tx`select row_id, reason from reserve.audit_trail where xact_id = pg_current_xact_id()::text::bigint order by change_no`;
      expect(mine.map((m) => m.row_id)).toEqual([`${unitId}:${nights[0].d}`, `${unitId}:${nights[2].d}`]);
      const [{ id }] = await tx`select id::text from reserve.audit_logs where xact_id = pg_current_xact_id()::text::bigint`;
      return id as string;
    });
    const rows = await sql`select * from reserve.audit_logs where id = ${auditId}`;
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ actor: "ops:ana", reason: "INC-7: close the unit" });
    const trail = await sql`select actor, action, row_id, reason, old_values ->> 'is_blocked' as was, new_values ->> 'is_blocked' as now
                            from reserve.audit_trail where audit_id = ${auditId} order by change_no`;
    expect(trail).toEqual([
      { actor: "ops:ana", action: "UPDATE", row_id: `${unitId}:${nights[0].d}`, reason: "INC-7: close the unit", was: "false", now: "true" },
      { actor: "ops:ana", action: "UPDATE", row_id: `${unitId}:${nights[2].d}`, reason: "INC-7: and the last night", was: "false", now: "true" },
    ]);
  });

  it("a transaction that changes nothing audited writes no audit row, and a buffer forged before the first change is not kept", async () => {
    const { unitId } = await f.unit(sql, { nights: 1 });
    const [{ n: before }] = await sql`select count(*)::int as n from reserve.audit_logs`;
    await sql`select count(*) from reserve.availability_calendar where unit_id = ${unitId}`;
    expect((await sql`select count(*)::int as n from reserve.audit_logs`)[0].n).toBe(before);
    const id = await sql.begin(async (tx) => {
      await tx`select set_config('reserve.audit_changes', '[{"op":"DELETE","table":"payments","row_id":"forged"}]', true)`;
      await tx`update reserve.availability_calendar set price = 7 where unit_id = ${unitId}`;
      const [{ id }] = await tx`select id::text from reserve.audit_logs where xact_id = pg_current_xact_id()::text::bigint`;
      return id as string;
    });
    const trail = await sql`select table_name, row_id from reserve.audit_trail where audit_id = ${id}`;
    expect(trail).toEqual([{ table_name: "availability_calendar", row_id: expect.stringContaining(unitId) }]);
  });

  it("a bulk change is written 100 changes to a row, every row in the trail once", async () => {
    const { unitId } = await f.unit(sql, { nights: 250 });
    const xact = await sql.begin(async (tx) => {
      await tx`set local reserve.reason = 'INC-9: reprice the year'`;
      await tx`update reserve.availability_calendar set price = 12345 where unit_id = ${unitId}`;
      const [{ x }] = await tx`select pg_current_xact_id()::text as x`;
      return x as string;
    });
    const rows = await sql`select jsonb_array_length(changes) as n, reason from reserve.audit_logs where xact_id = ${xact}::bigint order by id`;
    expect(rows.map((r) => r.n)).toEqual([100, 100, 50]);
    expect(rows.every((r) => r.reason === "INC-9: reprice the year")).toBe(true);
    const [t] = await sql`select count(*)::int as n, count(distinct row_id)::int as distinct_rows,
                                 bool_and(new_values ->> 'price' = '12345') as all_new, bool_and(old_values ->> 'price' is distinct from '12345') as all_old
                          from reserve.audit_trail where xact_id = ${xact}::bigint`;
    expect(t).toEqual({ n: 250, distinct_rows: 250, all_new: true, all_old: true });
  });
});

describe("finalize converts the holds itself; manual SQL still goes through the counting triggers", () => {
  const nightsOf = (q: Q, unitId: string) => q`
    select date::text as d, temp_holds, bookings_count, is_available from reserve.availability_calendar
    where unit_id = ${unitId} order by date`;

  it("the fast path leaves exact counters, converted holds, a balanced receipt, and the stand-aside cleared", async () => {
    const { unitId } = await f.unit(sql, { nights: 5, allotment: 2 });
    const c = await f.checkoutAttempt(sql, { gatewayId: "pi_fast_counts", unitId });
    const other = await f.checkoutAttempt(sql, { gatewayId: "pi_fast_other", unitId });
    expect((await nightsOf(sql, unitId)).slice(0, 2).map((n) => n.temp_holds)).toEqual([2, 2]);
    const after = await sql.begin(async (tx) => {
      const r = await succeeded(tx, `evt_${crypto.randomUUID()}`, "pi_fast_counts");
      expect(r).toMatchObject({ webhook_status: "completed", finalize_outcome: "created" });
      const [{ flag }] = await tx`select coalesce(current_setting('reserve.counted_by', true), '') as flag`;
      expect(flag).toBe("");
      // with the stand-aside cleared, a manual change later in the same transaction is counted by the triggers
      await tx`update reserve.booking_locks set status = 'released', released_at = now()
               where booking_intent_id = ${other.intentId} and status = 'held'`;
      return r;
    });
    const nights = await nightsOf(sql, unitId);
    expect(nights.slice(0, 2)).toEqual([
      { d: f.isoDate(1), temp_holds: 0, bookings_count: 1, is_available: true },
      { d: f.isoDate(2), temp_holds: 0, bookings_count: 1, is_available: true },
    ]);
    const locks = await sql`select status, count(*)::int as n from reserve.booking_locks where booking_intent_id = ${c.intentId} group by status`;
    expect(locks).toEqual([{ status: "converted", n: 2 }]);
    const [res] = await sql`select status, check_in::text, check_out::text from reserve.reservations where id = ${after.reservation_id as string}`;
    expect(res).toEqual({ status: "host_commit_pending", check_in: f.isoDate(1), check_out: f.isoDate(3) });
    expect(await sql`select * from reserve.units_with_counter_drift()`).toEqual([]);
    expect(await sql`select * from reserve.find_ledger_imbalances(current_date - 1)`).toEqual([]);
    const [bi] = await sql`select status from reserve.booking_intents where id = ${c.intentId}`;
    expect(bi.status).toBe("converted");
  });

  it("the fast path writes the reservation whole (property, city, sole occupancy), converts the intent and posts the receipt, with the fill and settle triggers standing aside; a manual INSERT still gets them from the triggers", async () => {
    const standAside = ["fill_reservation_from_intent", "fill_sole_occupancy", "fill_unit_location", "settle_reservation_intent"];
    const calls = async (q: Q) => Object.fromEntries((await q`
      select p.proname, coalesce(s.calls, 0)::int as calls
      from pg_proc p left join pg_stat_xact_user_functions s on s.funcid = p.oid
      where p.pronamespace = 'reserve'::regnamespace and p.proname = any(${standAside})`).map((r) => [r.proname, r.calls]));
    for (const allotment of [1, 3]) {
      const { unitId } = await f.unit(sql, { nights: 5, allotment });
      const gatewayId = `pi_whole_${allotment}_${crypto.randomUUID().slice(0, 8)}`;
      const c = await f.checkoutAttempt(sql, { gatewayId, unitId });
      const { r, before, after } = await sql.begin(async (tx) => {
        await tx`set local track_functions = 'all'`;
        const before = await calls(tx);
        const r = await succeeded(tx, `evt_${crypto.randomUUID()}`, gatewayId);
        return { r, before, after: await calls(tx) };
      });
      expect(r).toMatchObject({ webhook_status: "completed", finalize_outcome: "created" });
      expect(after).toEqual(before);
      const [res] = await sql`
        select r.property_id, r.city_code, r.sole_occupancy, r.payment_id, u.property_id as unit_property, pm.city_code as unit_city
        from reserve.reservations r join reserve.unit_map u on u.id = r.unit_id join reserve.properties_map pm on pm.id = u.property_id
        where r.id = ${r.reservation_id as string}`;
      expect(res).toEqual({ property_id: res.unit_property, city_code: res.unit_city, sole_occupancy: allotment === 1,
                            payment_id: c.paymentId, unit_property: res.unit_property, unit_city: res.unit_city });
      const [bi] = await sql`select status, converted_at from reserve.booking_intents where id = ${c.intentId}`;
      expect(bi.status).toBe("converted");
      expect(bi.converted_at).not.toBeNull();
      const ledger = await sql`select t.idempotency_key, t.reservation_id, t.city_code, count(e.*)::int as legs
                               from reserve.ledger_transactions t join reserve.ledger_entries e on e.transaction_id = t.id
                               where t.payment_id = ${c.paymentId} group by t.id`;
      expect(ledger).toEqual([{ idempotency_key: `receipt:${c.paymentId}`, reservation_id: r.reservation_id,
                                city_code: res.unit_city, legs: 3 }]);
      // the transaction's one audit row lists the payment, then the intent, then the reservation, as before
      const [a] = await sql`select a.changes from reserve.audit_logs a
                            where a.xact_id = (select xact_id from reserve.audit_trail where table_name = 'reservations'
                                               and row_id = ${r.reservation_id as string})`;
      expect((a.changes as { op: string; table: string }[]).map((x) => `${x.op} ${x.table}`))
        .toEqual(["UPDATE payments", "UPDATE booking_intents", "INSERT reservations"]);
    }
    expect(await sql`select * from reserve.units_with_counter_drift()`).toEqual([]);
    expect(await sql`select * from reserve.find_ledger_imbalances(current_date - 1)`).toEqual([]);

    // the runbook's manual INSERT names none of those columns: the triggers fill them
    const { unitId } = await f.unit(sql, { nights: 5, allotment: 2 });
    const i = await f.intent(sql, unitId, { check_in: f.isoDate(1), check_out: f.isoDate(3) });
    const manual = await sql.begin(async (tx) => {
      await tx`set local track_functions = 'all'`;
      const before = await calls(tx);
      const row = await f.reservation(tx, i, { status: "confirmed" });
      return { row, before, after: await calls(tx) };
    });
    for (const fn of standAside) expect(manual.after[fn] - manual.before[fn]).toBe(1);
    const [m] = await sql`select r.property_id, r.city_code, r.sole_occupancy, u.property_id as unit_property
                          from reserve.reservations r join reserve.unit_map u on u.id = r.unit_id where r.id = ${manual.row.id as string}`;
    expect(m).toMatchObject({ property_id: m.unit_property, city_code: "RIO", sole_occupancy: false });

    // a move of a reservation is filled again, even with a stand-aside set for its intent
    const { unitId: other } = await f.unit(sql, { nights: 5, allotment: 1, cityCode: "SAO" });
    const moved = await sql.begin(async (tx) => {
      await tx`select set_config('reserve.counted_by', ${i.id as string}, true)`;
      const [x] = await tx`update reserve.reservations set unit_id = ${other} where id = ${manual.row.id as string}
                           returning city_code, sole_occupancy, property_id`;
      return x;
    });
    const [op] = await sql`select property_id from reserve.unit_map where id = ${other}`;
    expect(moved).toEqual({ city_code: "SAO", sole_occupancy: true, property_id: op.property_id });
    const [mi] = await sql`select status from reserve.booking_intents where id = ${i.id as string}`;
    expect(mi.status).toBe("converted");
  });

  it("a manual INSERT of a reservation and a manual release of a hold still move the counters (and refuse a full night)", async () => {
    const { unitId } = await f.unit(sql, { nights: 5 });
    const held = await f.checkoutAttempt(sql, { gatewayId: "pi_manual_hold", unitId });
    // a stand-aside set by hand for another intent does not switch the counting off for this one
    await sql.begin(async (tx) => {
      await tx`select set_config('reserve.counted_by', ${crypto.randomUUID()}, true)`;
      await tx`update reserve.booking_locks set status = 'released', released_at = now()
               where booking_intent_id = ${held.intentId} and status = 'held'`;
    });
    expect((await nightsOf(sql, unitId)).slice(0, 2).map((n) => n.temp_holds)).toEqual([0, 0]);
    const i = await f.intent(sql, unitId, { check_in: f.isoDate(1), check_out: f.isoDate(3) });
    await f.reservation(sql, i, { check_in: f.isoDate(1), check_out: f.isoDate(3), status: "confirmed" });
    expect((await nightsOf(sql, unitId)).slice(0, 2).map((n) => n.bookings_count)).toEqual([1, 1]);
    const j = await f.intent(sql, unitId, { check_in: f.isoDate(2), check_out: f.isoDate(4) });
    await expect(f.reservation(sql, j, { check_in: f.isoDate(2), check_out: f.isoDate(4), status: "confirmed" }))
      .rejects.toMatchObject({ code: expect.stringMatching(/^(RC106|23P01)$/) });
    expect(await sql`select * from reserve.units_with_counter_drift()`).toEqual([]);
  });

  it("a hold that lapsed and is free again takes the old way: held anew, then converted by the triggers", async () => {
    const { unitId } = await f.unit(sql, { nights: 5 });
    const c = await f.checkoutAttempt(sql, { gatewayId: "pi_lapsed", unitId });
    await sql`update reserve.booking_locks set status = 'expired', released_at = now()
              where booking_intent_id = ${c.intentId} and lock_date = ${f.isoDate(2)}`;
    const r = await succeeded(sql, `evt_${crypto.randomUUID()}`, "pi_lapsed");
    expect(r).toMatchObject({ webhook_status: "completed", finalize_outcome: "created" });
    expect((await nightsOf(sql, unitId)).slice(0, 2).map((n) => [n.temp_holds, n.bookings_count])).toEqual([[0, 1], [0, 1]]);
    expect(await sql`select * from reserve.units_with_counter_drift()`).toEqual([]);
    // the triggers filled and settled it: property and city of its unit, the intent converted, one receipt
    const [res] = await sql`select r.property_id = u.property_id as same_property, r.city_code, r.sole_occupancy
                            from reserve.reservations r join reserve.unit_map u on u.id = r.unit_id
                            where r.id = ${r.reservation_id as string}`;
    expect(res).toEqual({ same_property: true, city_code: "RIO", sole_occupancy: true });
    const [bi] = await sql`select status from reserve.booking_intents where id = ${c.intentId}`;
    expect(bi.status).toBe("converted");
    const receipts = await sql`select idempotency_key from reserve.ledger_transactions where payment_id = ${c.paymentId}`;
    expect(receipts.map((x) => x.idempotency_key)).toEqual([`receipt:${c.paymentId}`]);
  });
});

describe("a receipt is posted from the legs our function built, not parsed from JSON", () => {
  it("writes the same legs and request hash as post_ledger_transaction would: replaying it there returns the receipt and writes nothing", async () => {
    const c = await f.checkoutAttempt(sql, { gatewayId: "pi_receipt_rows" });
    const r = await succeeded(sql, `evt_${crypto.randomUUID()}`, "pi_receipt_rows");
    expect(r).toMatchObject({ finalize_outcome: "created" });
    const [tx] = await sql`select * from reserve.ledger_transactions where idempotency_key = ${"receipt:" + c.paymentId}`;
    const legs = await sql`select account, direction, amount::int, entry_type, currency from reserve.ledger_entries
                           where transaction_id = ${tx.id as string} order by direction desc, account`;
    const [{ commission }] = await sql`select round(${Number(c.payment.amount)} * reserve.setting_int('commission_bps') / 10000.0)::int as commission`;
    const amount = Number(c.payment.amount);
    expect(legs).toEqual([
      { account: "receivable_stripe", direction: "debit", amount, entry_type: "guest_payment", currency: "BRL" },
      { account: "commission_revenue", direction: "credit", amount: commission, entry_type: "commission", currency: "BRL" },
      { account: "host_payable", direction: "credit", amount: amount - commission, entry_type: "host_share", currency: "BRL" },
    ]);
    const [{ n: before }] = await sql`select count(*)::int as n from reserve.ledger_entries`;
    const [again] = await sql`select (x).id::text as id from reserve.post_ledger_transaction(${tx.kind as string}, ${tx.description as string},
      jsonb_build_array(reserve.ledger_leg('receivable_stripe', 'debit', ${amount}, 'guest_payment', 'BRL'))
        || reserve.earned_legs(${amount}, 'BRL'),
      ${tx.idempotency_key as string}, ${c.paymentId}::uuid, ${r.reservation_id as string}::uuid, ${tx.city_code as string}) x`;
    expect(again.id).toBe(tx.id);
    expect((await sql`select count(*)::int as n from reserve.ledger_entries`)[0].n).toBe(before);
  });
});

describe("a confirmation code that clashes is drawn again", () => {
  it("the reservation gets a fresh code, in one transaction id with no subtransaction", async () => {
    const c = await f.checkoutAttempt(sql, { gatewayId: "pi_code_clash" });
    const taken = await f.checkoutAttempt(sql, { gatewayId: "pi_code_taken" });
    const first = await succeeded(sql, `evt_${crypto.randomUUID()}`, "pi_code_taken");
    expect(first).toMatchObject({ finalize_outcome: "created" });
    expect(taken.paymentId).toBeTruthy();
    const out = await sql.begin(async (tx) => {
      // the generator answers the code already taken once, then draws at random again
      await tx`alter function reserve.new_confirmation_code() rename to new_confirmation_code_random`;
      await tx.unsafe(`
        create function reserve.new_confirmation_code() returns text language plpgsql set search_path = '' as $$
        begin
          if current_setting('test.clashed', true) is distinct from 'yes' then
            perform set_config('test.clashed', 'yes', true);
            return '${first.confirmation_code}';
          end if;
          return reserve.new_confirmation_code_random();
        end $$`);
      const r = await succeeded(tx, `evt_${crypto.randomUUID()}`, "pi_code_clash");
      const [x] = await tx`select current_setting('test.clashed', true) as clashed,
                                  (select count(*)::int from pg_locks where pid = pg_backend_pid() and locktype = 'transactionid') as xids`;
      throw Object.assign(new Error("rollback"), { result: { r, x } });
    }).catch((e: { result?: unknown }) => e.result as { r: Record<string, unknown>; x: Record<string, unknown> });
    expect(out.r).toMatchObject({ webhook_status: "completed", finalize_outcome: "created" });
    expect(out.r.confirmation_code).toMatch(/^RES-\d{4}-[A-Z0-9]{6}$/);
    expect(out.r.confirmation_code).not.toBe(first.confirmation_code);
    expect(out.x.clashed).toBe("yes");
    // apply_webhook_event's guard is the one subtransaction left: its own id and the top one
    expect(out.x.xids).toBeLessThanOrEqual(2);
  });
});
