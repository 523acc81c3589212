// An ops console action whose database connection dies mid-transaction, as it really happens: the
// console's backend (its own login, reserve_ops_console) is terminated (pg_terminate_backend) while it
// waits on a table a second, real connection holds, after the action has written its first rows: a
// runbook repair (cancel with refund), the second operator's approval of a ledger correction, and an
// on-call action (an incident's action item). The operator gets a 503 JSON, nothing of the action is
// left (its rows and its audit row all absent), and sending the same action again does it once: one
// refund, one correction posting, one action item, however often it is sent.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type postgres from "postgres";
import { localIssuer, signWithKey, userClaims } from "../../local/auth_keys.ts";
import { testSigningKey } from "../helpers/auth.ts";
import { startE2E, until, type E2E } from "../helpers/e2e.ts";
import { paidReservation } from "../ops/ops_helpers.ts";
import { partialRows } from "./fault_loop.ts";

let e: E2E;
beforeAll(async () => {
  e = await startE2E();
}, 60_000);
afterAll(async () => {
  await e?.stop();
});

const operatorToken = (email: string) => signWithKey({
  ...userClaims({ email, operator: true, issuer: localIssuer(Number(new URL(e.url("ops")).port)) }), sub: crypto.randomUUID(),
}, testSigningKey);
const ALICE = () => operatorToken("alice@reserve.test");
const BOB = () => operatorToken("bob@reserve.test");

interface Answer { status: number; contentType: string | null; body: Record<string, any> }

async function act(token: string, body: Record<string, unknown>): Promise<Answer> {
  const r = await fetch(`${e.url("ops")}/api/action`, {
    method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: JSON.stringify(body),
  });
  return { status: r.status, contentType: r.headers.get("content-type"), body: await r.json() };
}

/**
 * The same action sent again, as the console's operator does on 503 database_unavailable: the console's
 * pool may refuse the first statement on a connection the kill left behind with the old backend's error
 * (postgres.js #1223), unsent, nothing of it run.
 */
async function actAgain(token: string, body: Record<string, unknown>): Promise<Answer> {
  let answer = await act(token, body);
  for (let tries = 1; tries < 4 && answer.status === 503 && answer.body.error === "database_unavailable"; tries++) {
    answer = await act(token, body);
  }
  expect(answer.status, JSON.stringify(answer.body)).toBe(200);
  return answer;
}

/**
 * Sends `body` while a transaction of the test's own holds `table` in share mode (the action's insert
 * into it waits), terminates the console's backend waiting there, and answers what the operator got.
 */
async function killedWhileWriting(table: string, token: string, body: Record<string, unknown>): Promise<Answer> {
  const conn: postgres.ReservedSql = await e.db.sql.reserve();
  try {
    await conn`begin`;
    await conn.unsafe(`lock table reserve.${table} in share mode`);
    const answer = act(token, body);
    const [waiting] = await until(async () => {
      const rows = await e.db.sql<{ pid: number }[]>`
        select pid from pg_stat_activity
        where usename = 'reserve_ops_console' and datname = current_database()
          and wait_event_type = 'Lock' and query ilike ${`%${String(body.action)}%`}`;
      return rows.length ? rows : undefined;
    }, `the console's backend waiting on ${table} in ${String(body.action)}`, 5_000);
    const [killed] = await e.db.sql<{ ok: boolean }[]>`select pg_terminate_backend(${waiting.pid}) as ok`;
    expect(killed.ok).toBe(true);
    return await answer;
  } finally {
    await conn`rollback`.catch(() => {});
    conn.release();
  }
}

function expectUnavailable(answer: Answer) {
  expect(answer.status, JSON.stringify(answer.body)).toBe(503);
  expect(answer.contentType).toMatch(/^application\/json/);
  expect(answer.body).toMatchObject({ error: "database_unavailable" });
  expect(JSON.stringify(answer.body)).not.toMatch(/postgres:\/\/|at .*\.ts:\d+|reserve_ops_console/);
}

/**
 * What reached the gateway as uncaught: postgres.js writing a ROLLBACK to the killed connection's closed
 * socket threw in a timer, and that connection's every reconnect timed out after it.
 */
const uncaught = () => e.logs.filter((l) => /Uncaught|process kept running/.test(l));

/** The audit rows whose reason is this action's, by this operator. */
const auditOf = async (action: string, operator: string, reason: string) =>
  (await e.db.sql`select actor from reserve.audit_logs where reason = ${`${action} by ${operator}: ${reason}`}`).map((a) => a.actor);

describe("the ops console's connection dies mid-action", () => {
  it("cancel with refund: 503 JSON, the reservation, its ledger and the audit untouched; sent again, one refund", async () => {
    const paid = await paidReservation(e.db.sql);
    const reason = "the host cannot receive the guest";
    const body = { action: "cancel_reservation_with_refund", reservation_id: paid.reservationId, reason };
    const written = async () => (await e.db.sql`select
        (select status from reserve.reservations where id = ${paid.reservationId}) as reservation,
        (select coalesce(jsonb_agg(x.amount::text order by x.id), '[]') from reserve.refund_requests x where x.payment_id = ${paid.paymentId}) as refunds,
        (select count(*)::int from reserve.ledger_entries) as ledger,
        (select count(*)::int from reserve.audit_logs) as audit`)[0];
    const before = await written();

    // cancel_reservation has cancelled the reservation and booked the refund owed; request_refund waits
    expectUnavailable(await killedWhileWriting("refund_requests", ALICE(), body));
    expect(await written()).toEqual(before);
    expect(await partialRows(e.db.sql)).toEqual([]);

    const retry = await actAgain(ALICE(), body);
    expect(retry.body.result).toMatchObject({ reservation_id: paid.reservationId, status: "cancelled", refund_status: "requested" });
    const done = await written();
    expect(done).toMatchObject({ reservation: "cancelled", refunds: [String(paid.amount)] });
    expect(await auditOf("cancel_reservation_with_refund", "alice@reserve.test", reason)).toEqual(["alice@reserve.test"]);

    // and once more, as an operator unsure the retry went through: the same refund, nothing booked twice
    const third = await actAgain(ALICE(), body);
    expect(third.body.result.refund_request_id).toBe(retry.body.result.refund_request_id);
    expect(await written()).toMatchObject({ reservation: "cancelled", refunds: [String(paid.amount)], ledger: done.ledger });
    expect(uncaught()).toEqual([]);
  }, 30_000);

  it("approving a ledger correction: 503 JSON, the correction still proposed, nothing posted; sent again, posted once", async () => {
    const entries = [{ account: "corrections", direction: "debit", amount: 777 }, { account: "bank_brl", direction: "credit", amount: 777 }];
    const proposed = await actAgain(ALICE(), { action: "propose_ledger_correction", entries, reason: "bank fee booked twice" });
    const id = proposed.body.result.id as string;
    const reason = "checked against the bank statement";
    const body = { action: "approve_ledger_correction", correction_id: id, reason };
    const written = async () => (await e.db.sql`select
        (select status from reserve.ledger_corrections where id = ${id}) as correction,
        (select count(*)::int from reserve.ledger_transactions where idempotency_key = ${`correction:${id}`}) as postings,
        (select count(*)::int from reserve.ledger_transactions) as transactions,
        (select count(*)::int from reserve.ledger_entries) as ledger,
        (select count(*)::int from reserve.audit_logs) as audit`)[0];
    const before = await written();
    expect(before).toMatchObject({ correction: "proposed", postings: 0 });

    // the correction's transaction is written; its legs wait
    const bob = BOB();
    expectUnavailable(await killedWhileWriting("ledger_entries", bob, body));
    expect(await written()).toEqual(before);
    expect(await partialRows(e.db.sql)).toEqual([]);

    const retry = await actAgain(bob, body);
    expect(retry.body.result).toMatchObject({ id, status: "approved", decided_by: "bob@reserve.test" });
    const done = await written();
    expect(done).toMatchObject({ correction: "approved", postings: 1, transactions: before.transactions + 1, ledger: before.ledger + 2 });
    expect(await auditOf("approve_ledger_correction", "bob@reserve.test", reason)).toEqual(["bob@reserve.test"]);

    const third = await actAgain(bob, body);
    expect(third.body.result).toMatchObject({ id, status: "approved", transaction_id: retry.body.result.transaction_id });
    expect(await written()).toMatchObject({ postings: 1, transactions: done.transactions, ledger: done.ledger });
    expect(await partialRows(e.db.sql)).toEqual([]);
    expect(uncaught()).toEqual([]);
  }, 30_000);

  it("adding an incident's action item: 503 JSON, no item, event or audit; sent again, one item", async () => {
    await e.db.sql`alter table reserve.ledger_entries disable trigger trg_ledger_balance`;
    await e.db.sql`select * from reserve.evaluate_alerts()`;
    await e.db.sql`alter table reserve.ledger_entries enable trigger trg_ledger_balance`;
    const [inc] = await e.db.sql`select id, reference from reserve.incidents where alert_name = 'ledger_trigger_disabled'`;
    const reason = "from the review of the disabled trigger";
    const body = { action: "add_incident_action_item", incident: inc.reference, item: "Alert on ALTER TABLE of ledger tables",
                   owner: "carol@reserve.test", due_date: "2027-01-15", reason };
    const written = async () => (await e.db.sql`select
        (select coalesce(jsonb_agg(jsonb_build_object('action', x.action, 'owner', x.owner) order by x.created_at), '[]')
           from reserve.incident_action_items x where x.incident_id = ${inc.id}) as items,
        (select count(*)::int from reserve.incident_events where incident_id = ${inc.id} and kind = 'action_item') as events,
        (select count(*)::int from reserve.audit_logs) as audit`)[0];
    const before = await written();
    expect(before).toMatchObject({ items: [], events: 0 });

    // the item is written; the incident's event waits
    expectUnavailable(await killedWhileWriting("incident_events", ALICE(), body));
    expect(await written()).toEqual(before);

    const retry = await actAgain(ALICE(), body);
    expect(retry.body.result).toMatchObject({ action: body.item, owner: body.owner, created_by: "alice@reserve.test" });
    const one = { items: [{ action: body.item, owner: body.owner }], events: 1 };
    expect(await written()).toMatchObject(one);
    expect(await auditOf("add_incident_action_item", "alice@reserve.test", reason)).toEqual(["alice@reserve.test"]);

    // once more, as an operator whose answer was lost after the commit: the same item, not a second
    const third = await actAgain(ALICE(), body);
    expect(third.body.result.id).toBe(retry.body.result.id);
    expect(await written()).toMatchObject(one);
    expect(uncaught()).toEqual([]);
  }, 30_000);
});
