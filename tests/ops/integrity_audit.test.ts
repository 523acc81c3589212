// The health checks read what changed: run_integrity_audit() scans everything (every ledger transaction
// ever written, every unit's counters from today on) and records its findings with verified_through;
// system_health_check, check_all_alerts, overbooking_check, availability_counter_drift and
// ops_dashboard_summary then read those findings, re-checked, and the rows written since. What goes through
// the normal paths (defaults and triggers set created_at / updated_at / released_at) is caught at once; a
// write that bypassed the triggers and back-dated its row (session_replication_role = replica) only by
// the next audit, whose heartbeat has an alert of its own when it stops.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, rolledBack, type Sql, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";
import { paidReservation, replica, type Q, type Row } from "./ops_helpers.ts";

let db: TestDatabase;
let sql: Sql;
beforeAll(async () => {
  db = await createTestDatabase();
  sql = db.sql;
});
afterAll(async () => await db?.drop());

async function health(q: Q): Promise<Record<string, Row>> {
  const rows = await q`select * from reserve.system_health_check()`;
  return Object.fromEntries(rows.map((r) => [r.check_name as string, r]));
}
async function audit(q: Q): Promise<Row> {
  const [a] = await q`select * from reserve.run_integrity_audit()`;
  return a;
}

/** One leg of a transaction, written with the writer flag as the runbook's manual SQL would. */
async function leg(tx: Q, txId: string, direction: "debit" | "credit", amount: number, header = false) {
  await tx`select set_config('reserve.ledger_writer', 'on', true)`;
  if (header) await tx`insert into reserve.ledger_transactions (id, kind, description) values (${txId}, 'payment', 'by hand')`;
  await tx`insert into reserve.ledger_entries (transaction_id, entry_type, account, direction, amount)
           values (${txId}, 'guest_payment', ${direction === "debit" ? "receivable_stripe" : "host_payable"}, ${direction}, ${amount})`;
  await tx`select set_config('reserve.ledger_writer', '', true)`;
}

/** An unbalanced pair written with the balance trigger off: the normal path, a guard missing. */
async function unbalancedPair(tx: Q): Promise<string> {
  const id = randomUUID();
  await tx`alter table reserve.ledger_entries disable trigger trg_ledger_balance`;
  await leg(tx, id, "debit", 1000, true);
  await leg(tx, id, "credit", 900);
  await tx`alter table reserve.ledger_entries enable trigger trg_ledger_balance`;
  return id;
}

/** Everything so far written an hour ago: before what the next audit verifies, so only a write after it
 *  (or the audit's findings) can bring these rows into the checks. */
async function writtenAnHourAgo(tx: Q) {
  await replica(tx);
  await tx`update reserve.reservations set updated_at = updated_at - interval '1 hour', created_at = created_at - interval '1 hour',
             nights_changed_at = nights_changed_at - interval '1 hour'`;
  await tx`update reserve.availability_calendar set updated_at = updated_at - interval '1 hour'`;
  await tx`update reserve.booking_locks set created_at = created_at - interval '1 hour', released_at = released_at - interval '1 hour'`;
  await tx`update reserve.ledger_entries set created_at = created_at - interval '1 hour'`;
  await replica(tx, false);
}

describe("run_integrity_audit", () => {
  it("records what it scanned, a verified_through before its start, and a heartbeat", async () => {
    await rolledBack(sql, async (tx) => {
      await paidReservation(tx);
      await writtenAnHourAgo(tx);
      const a = await audit(tx);
      // the transactions it summed: those with legs before its watermark (the later ones are the checks')
      expect(Number(a.ledger_transactions)).toBeGreaterThan(0);
      expect(a.ledger_summed_before).toEqual(a.verified_through);
      expect(a.imbalanced_transactions).toEqual([]);
      expect(a.drifted_units).toEqual([]);
      expect((a.verified_through as Date).getTime()).toBeLessThanOrEqual((a.started_at as Date).getTime() - 5 * 60_000);
      const [hb] = await tx`select ok, summary from reserve.job_last_runs where job = 'run_integrity_audit'`;
      expect(hb).toMatchObject({ ok: true, summary: { imbalanced_transactions: 0, drifted_units: 0 } });
      expect((await health(tx)).integrity_audit).toMatchObject({ status: "OK" });
    });
  });

  it("finds imbalances of any age and drifted units, whatever wrote them", async () => {
    await rolledBack(sql, async (tx) => {
      const old = randomUUID();
      await leg(tx, old, "debit", 700, true);
      await leg(tx, old, "credit", 700);
      // a leg back-dated two years with the triggers bypassed: no check reads that far back by time
      await replica(tx);
      await tx`select set_config('reserve.ledger_writer', 'on', true)`;
      await tx`insert into reserve.ledger_entries (transaction_id, entry_type, account, direction, amount, created_at)
               values (${old}, 'guest_payment', 'host_payable', 'credit', 50, now() - interval '2 years')`;
      await replica(tx, false);
      const { unitId } = await f.unit(tx, { nights: 5 });
      await replica(tx);
      await tx`update reserve.availability_calendar set temp_holds = 1 where unit_id = ${unitId} and date = ${f.isoDate(2)}`;
      await replica(tx, false);
      const a = await audit(tx);
      expect(a.imbalanced_transactions).toEqual([old]);
      expect(a.drifted_units).toEqual([unitId]);
      expect((await tx`select summary from reserve.job_last_runs where job = 'run_integrity_audit'`)[0].summary)
        .toMatchObject({ imbalanced_transactions: 1, drifted_units: 1 });
    });
  });
});

describe("after an audit, the checks read what changed since", () => {
  it("catch at once what the normal paths write: an unbalanced pair with the trigger off, a counter set by hand", async () => {
    await rolledBack(sql, async (tx) => {
      const { unitId } = await f.unit(tx, { nights: 5 });
      await writtenAnHourAgo(tx);
      await audit(tx);
      expect(await tx`select * from reserve.units_written_since((select verified_through from reserve.last_integrity_audit()))`).toEqual([]);
      const clean = await health(tx);
      expect([clean.ledger_balance.status, clean.overbooking.status, clean.availability_counter_drift.status]).toEqual(["OK", "OK", "OK"]);

      const txId = await unbalancedPair(tx);
      const h = await health(tx);
      expect(h.ledger_balance).toMatchObject({ status: "CRITICAL", observed_value: "1" });
      expect((await tx`select transaction_id, imbalance from reserve.known_ledger_imbalances()`)).toEqual([{ transaction_id: txId, imbalance: "100" }]);
      const [dash] = await tx`select ledger_imbalances, ledger_imbalances_7d from reserve.ops_dashboard_summary`;
      expect(dash).toEqual({ ledger_imbalances: "1", ledger_imbalances_7d: "1" });

      // the calendar row is written through its trigger (updated_at), the counter by hand
      await tx`update reserve.availability_calendar set bookings_count = 1 where unit_id = ${unitId} and date = ${f.isoDate(3)}`;
      const d = await health(tx);
      expect(d.availability_counter_drift).toMatchObject({ status: "WARNING", observed_value: "1" });
      expect((await tx`select unit_id, date::text from reserve.availability_counter_drift`))
        .toEqual([{ unit_id: unitId, date: f.isoDate(3) }]);

      // fixed: the missing leg, the counter recounted; both OK again without another audit
      await leg(tx, txId, "credit", 100);
      await tx`update reserve.availability_calendar set bookings_count = 0 where unit_id = ${unitId} and date = ${f.isoDate(3)}`;
      const fixed = await health(tx);
      expect([fixed.ledger_balance.status, fixed.availability_counter_drift.status]).toEqual(["OK", "OK"]);
    });
  });

  it("compare the nights of a stay only when they change: a check-in leaves the stamp, a move, a cancellation or a hand-set stamp renews it", async () => {
    await rolledBack(sql, async (tx) => {
      const paid = await paidReservation(tx, { from: 2, to: 5 });
      await replica(tx);
      await tx`update reserve.reservations set nights_changed_at = now() - interval '1 hour', updated_at = now() - interval '1 hour'`;
      await replica(tx, false);
      const stamp = async () => ((await tx`select nights_changed_at from reserve.reservations where id = ${paid.reservationId}`)[0]
        .nights_changed_at as Date).getTime();
      const hourAgo = await stamp();
      await tx`update reserve.reservations set status = 'confirmed' where id = ${paid.reservationId}`;
      await tx`update reserve.reservations set status = 'checked_in', checked_in_at = now(), metadata = '{"note": "early"}' where id = ${paid.reservationId}`;
      expect(await stamp()).toBe(hourAgo);
      await tx`update reserve.reservations set nights_changed_at = '2020-01-01' where id = ${paid.reservationId}`;
      const [{ now }] = await tx`select now()`;
      expect(await stamp()).toBe((now as Date).getTime());
      for (const change of ["check_out = check_out + 1", "status = 'cancelled', cancelled_at = now(), cancellation_reason = 'guest'"]) {
        await replica(tx);
        await tx`update reserve.reservations set nights_changed_at = now() - interval '1 hour' where id = ${paid.reservationId}`;
        await replica(tx, false);
        await tx.unsafe(`update reserve.reservations set ${change} where id = $1`, [paid.reservationId]);
        expect(await stamp(), change).toBe((now as Date).getTime());
      }
    });
  });

  it("catch a stay moved with the counting trigger disabled, on the unit it moved to", async () => {
    await rolledBack(sql, async (tx) => {
      const paid = await paidReservation(tx);
      const other = (await f.unit(tx, { nights: 20 })).unitId;
      await writtenAnHourAgo(tx);
      await audit(tx);
      await tx`alter table reserve.reservations disable trigger _300_count_booked_nights`;
      await tx`update reserve.reservations set unit_id = ${other} where id = ${paid.reservationId}`;
      await tx`alter table reserve.reservations enable trigger _300_count_booked_nights`;
      const h = await health(tx);
      // the unit it moved to has a stay its counters do not show (the unit it left is the audit's to find)
      expect(h.availability_counter_drift.status).toBe("WARNING");
      expect(new Set((await tx`select unit_id from reserve.availability_counter_drift`).map((r) => r.unit_id))).toContain(other);
    });
  });

  it("compare only the nights written: a stay shortened with the counting trigger off leaves its old nights to the next audit", async () => {
    await rolledBack(sql, async (tx) => {
      const paid = await paidReservation(tx, { from: 2, to: 6 });
      await writtenAnHourAgo(tx);
      await audit(tx);
      await tx`alter table reserve.reservations disable trigger _300_count_booked_nights`;
      await tx`update reserve.reservations set check_out = ${f.isoDate(4)}::date where id = ${paid.reservationId}`;
      await tx`alter table reserve.reservations enable trigger _300_count_booked_nights`;
      // nights 2 and 3 are still covered and counted; 4 and 5 are counted too high, and nothing wrote them
      expect(await tx`select * from reserve.drifting_units()`).toEqual([]);
      expect((await health(tx)).availability_counter_drift.status).toBe("OK");
      const found = await audit(tx);
      expect(found.drifted_units).toEqual([paid.unitId]);
      const drift = await tx`select date::text from reserve.availability_counter_drift where unit_id = ${paid.unitId} order by date`;
      expect(drift.map((d) => d.date)).toEqual([f.isoDate(4), f.isoDate(5)]);
    });
  });

  it("miss a back-dated write that bypassed the triggers until the next audit, which finds it; its findings stay until fixed", async () => {
    await rolledBack(sql, async (tx) => {
      // a unit selling two a night with both sold, and a third stay on a twin unit
      const a = await f.unit(tx, { allotment: 2, nights: 20 });
      const b = await f.unit(tx, { allotment: 2, nights: 20 });
      await paidReservation(tx, { unitId: a.unitId, from: 5, to: 8 });
      await paidReservation(tx, { unitId: a.unitId, from: 5, to: 8 });
      const second = await paidReservation(tx, { unitId: b.unitId, from: 5, to: 8 });
      const txId = randomUUID();
      await leg(tx, txId, "debit", 500, true);
      await leg(tx, txId, "credit", 500);
      await writtenAnHourAgo(tx);
      await audit(tx);

      // the runbook's old manual move with the guards off, and a ledger leg back-dated a day
      await replica(tx);
      await tx`update reserve.reservations set unit_id = ${a.unitId} where id = ${second.reservationId}`;
      await tx`select set_config('reserve.ledger_writer', 'on', true)`;
      await tx`insert into reserve.ledger_entries (transaction_id, entry_type, account, direction, amount, created_at)
               values (${txId}, 'guest_payment', 'host_payable', 'credit', 25, now() - interval '1 day')`;
      await replica(tx, false);
      const unseen = await health(tx);
      expect([unseen.overbooking.status, unseen.ledger_balance.status]).toEqual(["OK", "OK"]);

      const found = await audit(tx);
      expect(found.imbalanced_transactions).toEqual([txId]);
      expect(new Set(found.drifted_units as string[])).toEqual(new Set([a.unitId, b.unitId]));
      const h = await health(tx);
      expect(h.overbooking).toMatchObject({ status: "CRITICAL", observed_value: "3" });
      expect(h.availability_counter_drift.status).toBe("WARNING");
      expect(h.ledger_balance).toMatchObject({ status: "CRITICAL", observed_value: "1" });
      const oversold = await tx`select unit_id from reserve.overbooking_check`;
      expect(new Set(oversold.map((o) => o.unit_id))).toEqual(new Set([a.unitId]));
      const alerts = Object.fromEntries((await tx`select * from reserve.check_all_alerts()`).map((r) => [r.alert_name, r.state]));
      expect([alerts.overbooking, alerts.ledger_imbalance]).toEqual(["firing", "firing"]);

      // undone with the guards off again (no timestamp moves): the audit's findings, re-checked, clear
      await replica(tx);
      await tx`update reserve.reservations set unit_id = ${b.unitId} where id = ${second.reservationId}`;
      await tx`select set_config('reserve.ledger_writer', 'on', true)`;
      await tx`insert into reserve.ledger_entries (transaction_id, entry_type, account, direction, amount, created_at)
               values (${txId}, 'guest_payment', 'receivable_stripe', 'debit', 25, now() - interval '1 day')`;
      await replica(tx, false);
      const after = await health(tx);
      expect([after.overbooking.status, after.availability_counter_drift.status, after.ledger_balance.status]).toEqual(["OK", "OK", "OK"]);
    });
  });
});

describe("paid_without_reservation after an audit", () => {
  /** A payment made succeeded by hand (the runbook's old Option 2), never finalized. */
  async function succeededByHand(tx: Q, succeededAgo: string) {
    const { unitId } = await f.unit(tx, { nights: 5 });
    const [bi] = await tx`select * from reserve.create_booking_intent(${unitId}, ${f.isoDate(1)}::date, ${f.isoDate(2)}::date, 2)`;
    const [p] = await tx`select * from reserve.create_payment(${bi.id}, 'stripe', 'card', ${bi.amount})`;
    await tx`update reserve.payments set status = 'succeeded', succeeded_at = now() - ${succeededAgo}::interval where id = ${p.id}`;
    return p.id as string;
  }
  const unreserved = async (tx: Q) => (await tx`select payment_id from reserve.paid_without_reservation()`).map((r) => r.payment_id);

  it("a success written by hand since the audit began is caught at once; one back-dated, or a stay deleted with the guards off, by the next audit", async () => {
    await rolledBack(sql, async (tx) => {
      const kept = await paidReservation(tx);
      const lost = await paidReservation(tx);
      await writtenAnHourAgo(tx);
      await tx`update reserve.payments set succeeded_at = succeeded_at - interval '1 hour'`;
      await audit(tx);
      // the audit began ten minutes ago
      await tx`update reserve.integrity_audits set started_at = started_at - interval '10 minutes',
                 verified_through = verified_through - interval '10 minutes'`;
      expect((await health(tx)).paid_without_reservation.status).toBe("OK");

      const recent = await succeededByHand(tx, "6 minutes");
      const old = await succeededByHand(tx, "2 hours");
      const [saved] = await tx`select to_jsonb(r) as row from reserve.reservations r where id = ${lost.reservationId}`;
      await replica(tx);
      await tx`delete from reserve.reservations where id = ${lost.reservationId}`;
      await replica(tx, false);
      expect(await unreserved(tx)).toEqual([recent]);
      expect((await health(tx)).paid_without_reservation).toMatchObject({ status: "CRITICAL", observed_value: "1" });

      const found = await audit(tx);
      expect(new Set(found.unreserved_payments as string[])).toEqual(new Set([recent, old, lost.paymentId]));
      expect(new Set(await unreserved(tx))).toEqual(new Set([recent, old, lost.paymentId]));
      expect((await health(tx)).paid_without_reservation).toMatchObject({ status: "CRITICAL", observed_value: "3" });
      expect(await unreserved(tx)).not.toContain(kept.paymentId);
      // the whole scan, as before the first audit, agrees
      expect(new Set((await tx`select payment_id from reserve.paid_without_reservation(true)`).map((r) => r.payment_id)))
        .toEqual(new Set([recent, old, lost.paymentId]));

      // fixed (the two finalized, the deleted stay put back as it was): OK without another audit
      for (const id of [recent, old]) {
        const [fin] = await tx`select * from reserve.finalize_reservation(${id})`;
        expect(fin.success).toBe(true);
      }
      await replica(tx);
      const cols = (await tx`select column_name from information_schema.columns
                             where table_schema = 'reserve' and table_name = 'reservations' and is_generated = 'NEVER'`)
        .map((c) => `"${c.column_name as string}"`).join(", ");
      await tx.unsafe(`insert into reserve.reservations (${cols})
                       select ${cols} from jsonb_populate_record(null::reserve.reservations, $1::jsonb)`, [typeof saved.row === "string" ? JSON.parse(saved.row) : saved.row]);
      await replica(tx, false);
      expect(await unreserved(tx)).toEqual([]);
      expect((await health(tx)).paid_without_reservation.status).toBe("OK");
    });
  });
});

describe("integrity_audit heartbeat", () => {
  it("OK before the first run (everything is scanned), WARNING 3 h after the last one, with its P2 alert", async () => {
    await rolledBack(sql, async (tx) => {
      expect((await health(tx)).integrity_audit).toMatchObject({ status: "OK", details: expect.stringMatching(/^never ran/) });
      await audit(tx);
      expect((await health(tx)).integrity_audit).toMatchObject({ status: "OK", details: expect.stringMatching(/^last run /) });
      await tx`update reserve.job_heartbeats set finished_at = now() - interval '4 hours' where job = 'run_integrity_audit'`;
      const stale = (await health(tx)).integrity_audit;
      expect(stale).toMatchObject({ status: "WARNING", observed_value: "4.0" });
      const [alert] = (await tx`select * from reserve.check_all_alerts()`).filter((r) => r.alert_name === "integrity_audit_stale");
      expect(alert).toMatchObject({ state: "firing", severity: "P2", runbook_section: "P2: INTEGRITY AUDIT STALE" });
      const [dash] = await tx`select extract(epoch from integrity_audit_age) / 3600 as hours from reserve.ops_dashboard_summary`;
      expect(Math.round(Number(dash.hours))).toBe(4);
    });
  });
});

describe("verify_recent_writes: the checks' watermark moves every minute", () => {
  const verify = async (q: Q): Promise<Row> => (await q`select * from reserve.verify_recent_writes()`)[0];
  /** The last audit began two hours ago: what was written since is the checks' to read. */
  const auditTwoHoursAgo = async (tx: Q) => {
    await audit(tx);
    await tx`update reserve.integrity_audits set started_at = started_at - interval '2 hours',
               verified_through = verified_through - interval '2 hours', ledger_summed_before = ledger_summed_before - interval '2 hours'`;
  };
  /** Rows written in the last minute, stamped half an hour ago (the triggers round them). */
  const halfAnHourAgo = async (tx: Q) => {
    await replica(tx);
    await tx`update reserve.ledger_entries set created_at = now() - interval '30 minutes' where created_at = now()`;
    await tx`update reserve.availability_calendar set updated_at = now() - interval '30 minutes' where updated_at = now()`;
    await tx`update reserve.payments set succeeded_at = now() - interval '30 minutes' where succeeded_at = now()`;
    await replica(tx, false);
  };

  it("with no audit yet, runs the full one", async () => {
    await rolledBack(sql, async (tx) => {
      const v = await verify(tx);
      expect(v.scope).toBe("everything");
      const [beat] = await tx`select job from reserve.job_last_runs where job = 'run_integrity_audit'`;
      expect(beat).toBeDefined();
    });
  });

  it("records what the checks find with a newer watermark; the checks then read from it, and a finding stays until fixed", async () => {
    await rolledBack(sql, async (tx) => {
      const { unitId } = await f.unit(tx, { nights: 5 });
      const [bi] = await tx`select * from reserve.create_booking_intent(${unitId}, ${f.isoDate(1)}::date, ${f.isoDate(2)}::date, 2)`;
      const [p] = await tx`select * from reserve.create_payment(${bi.id}, 'stripe', 'card', ${bi.amount})`;
      await writtenAnHourAgo(tx);
      await tx`update reserve.payments set created_at = created_at - interval '1 hour'`;
      await auditTwoHoursAgo(tx);
      const [prev] = await tx`select verified_through from reserve.last_integrity_audit()`;

      // a guard missing on each, half an hour ago: seen by the checks through the window
      const txId = await unbalancedPair(tx);
      await tx`update reserve.availability_calendar set bookings_count = 1 where unit_id = ${unitId} and date = ${f.isoDate(3)}`;
      await tx`update reserve.payments set status = 'succeeded', succeeded_at = now() where id = ${p.id}`;
      await halfAnHourAgo(tx);
      const seen = await health(tx);
      expect([seen.ledger_balance.status, seen.availability_counter_drift.status, seen.paid_without_reservation.status])
        .toEqual(["CRITICAL", "WARNING", "CRITICAL"]);

      const v = await verify(tx);
      expect(v).toMatchObject({ scope: "since_previous", imbalanced_transactions: [txId], drifted_units: [unitId], unreserved_payments: [p.id] });
      expect((v.verified_through as Date).getTime()).toBeGreaterThan((prev.verified_through as Date).getTime());
      expect((v.verified_through as Date).getTime()).toBeLessThanOrEqual(Date.now() - 5 * 60_000 + 1000);
      expect(await tx`select * from reserve.job_last_runs where job = 'verify_recent_writes' and ok`).toHaveLength(1);
      // the rows are now older than the watermark: the findings carry them
      expect(await tx`select * from reserve.units_written_since(${v.verified_through as Date})`).toEqual([]);
      const carried = await health(tx);
      expect([carried.ledger_balance.status, carried.availability_counter_drift.status, carried.paid_without_reservation.status])
        .toEqual(["CRITICAL", "WARNING", "CRITICAL"]);
      expect((await tx`select transaction_id from reserve.known_ledger_imbalances()`).map((r) => r.transaction_id)).toEqual([txId]);
      // and the next run carries them again
      expect(await verify(tx)).toMatchObject({ imbalanced_transactions: [txId], drifted_units: [unitId], unreserved_payments: [p.id] });

      // fixed by hand, also stamped half an hour ago: OK at once (findings are re-checked), then dropped
      await leg(tx, txId, "credit", 100);
      await tx`update reserve.availability_calendar set bookings_count = 0 where unit_id = ${unitId} and date = ${f.isoDate(3)}`;
      await tx`update reserve.payments set refund_reason = 'no_stay' where id = ${p.id}`;
      await halfAnHourAgo(tx);
      const fixed = await health(tx);
      expect([fixed.ledger_balance.status, fixed.availability_counter_drift.status, fixed.paid_without_reservation.status])
        .toEqual(["OK", "OK", "OK"]);
      expect(await verify(tx)).toMatchObject({ imbalanced_transactions: [], drifted_units: [], unreserved_payments: [] });
    });
  });

  it("keeps watching a transaction whose legs straddle the watermark: a leg that balances the window's legs is still caught", async () => {
    await rolledBack(sql, async (tx) => {
      await auditTwoHoursAgo(tx);
      // the balance trigger off from the start (it cannot be turned off with its checks pending); what it
      // would refuse is the check's to see
      await tx`alter table reserve.ledger_entries disable trigger trg_ledger_balance`;
      const txId = randomUUID();
      await leg(tx, txId, "debit", 1000, true);
      await halfAnHourAgo(tx);
      await leg(tx, txId, "credit", 1000);
      expect((await health(tx)).ledger_balance.status).toBe("OK");
      // its legs before the new watermark are off by themselves: a finding, not an imbalance
      const v = await verify(tx);
      expect(v.imbalanced_transactions).toEqual([txId]);
      expect((await health(tx)).ledger_balance.status).toBe("OK");
      // a debit: the legs since the watermark balance (1000 / 1000), the whole does not
      await leg(tx, txId, "debit", 1000);
      expect((await health(tx)).ledger_balance).toMatchObject({ status: "CRITICAL", observed_value: "1" });
      expect((await tx`select imbalance from reserve.known_ledger_imbalances()`)).toEqual([{ imbalance: "1000" }]);
    });
  });

  it("never moves the watermark back: a row ahead of the clock stands, and the run says so", async () => {
    await rolledBack(sql, async (tx) => {
      await audit(tx);
      await tx`update reserve.integrity_audits set started_at = now() + interval '1 minute', verified_through = now() + interval '1 minute',
                 ledger_summed_before = now() + interval '1 minute'`;
      const [before] = await tx`select id, verified_through from reserve.last_integrity_audit()`;
      const v = await verify(tx);
      expect([v.id, v.verified_through]).toEqual([before.id, before.verified_through]);
      const [beat] = await tx`select summary from reserve.job_last_runs where job = 'verify_recent_writes'`;
      expect(beat.summary).toHaveProperty("would_move_back_to");
    });
  });

  it("the integrity_watermark check: OK while it moves, WARNING 20 minutes behind, with its P3 alert", async () => {
    await rolledBack(sql, async (tx) => {
      expect((await health(tx)).integrity_watermark).toMatchObject({ status: "OK", details: expect.stringMatching(/^no integrity audit yet/) });
      await audit(tx);
      expect((await health(tx)).integrity_watermark).toMatchObject({ status: "OK", observed_value: "5" });
      await tx`update reserve.integrity_audits set verified_through = now() - interval '30 minutes'`;
      expect((await health(tx)).integrity_watermark).toMatchObject({ status: "WARNING", observed_value: "30" });
      const [alert] = (await tx`select * from reserve.check_all_alerts()`).filter((r) => r.alert_name === "integrity_watermark_behind");
      expect(alert).toMatchObject({ state: "firing", severity: "P3", runbook_section: "P3: INTEGRITY WATERMARK BEHIND" });
    });
  });

  it("runs after a full audit, never beside it: each starts from the row the other left", async () => {
    const a = await sql.reserve();
    const b = await sql.reserve();
    try {
      await a`begin`;
      await a`select reserve.run_integrity_audit()`;
      const verifying = b`select * from reserve.verify_recent_writes()`.then((r) => r[0]);
      await new Promise((r) => setTimeout(r, 300));
      const [waiting] = await sql`select count(*)::int as n from pg_stat_activity where wait_event_type = 'Lock' and wait_event = 'advisory'`;
      expect(waiting.n).toBe(1);
      await a`commit`;
      const v = await verifying;
      const [full] = await sql`select id from reserve.integrity_audits where scope = 'everything' order by id desc limit 1`;
      // the full audit's watermark is now()-5 min of a transaction begun earlier: the verifier's is not older
      expect(Number(v.id)).toBeGreaterThanOrEqual(Number(full.id));
    } finally {
      a.release();
      b.release();
      await sql`delete from reserve.integrity_audits`;
      await sql`delete from reserve.job_heartbeats where job in ('run_integrity_audit', 'verify_recent_writes')`;
    }
  });
});
