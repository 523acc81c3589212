// The runbook's repairs take their operator from the login, as ledger corrections and on-call actions do
// (require_operator -> correction_actor): a personal role in reserve_operator is the role; the ops
// console's own login is the name it set from the token it verified, with the token's subject beside it;
// a shared login (postgres, the SQL editor's; service_role, as PostgREST signs in) proves nobody, whatever
// reserve.actor or request.jwt.claims say: RC604, and the repair writes nothing. A refund moves money on
// that name, so a typed one must not pass.
import { randomUUID } from "node:crypto";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, sqlState, type Sql, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";
import { operatorRoles, opsConsoleLogin, type OperatorRoles } from "../helpers/operator_roles.ts";
import { refusingReservations } from "../helpers/money.ts";
import { buildWorld, type WorldIds } from "../helpers/runbook_doc.ts";
import { checkout, deliver } from "./ops_helpers.ts";

let db: TestDatabase;
let sql: Sql;
let ops: OperatorRoles;
let ids: WorldIds;
let freshUnit: string;
/** a unit whose counters say a night is booked that no stay has */
let driftedUnit: string;
/** PostgREST's way in: the authenticator login, then SET ROLE service_role */
let authenticator: Sql;

beforeAll(async () => {
  db = await createTestDatabase();
  sql = db.sql;
  ops = await operatorRoles(sql, db.url, ["proposer", "approver", "alice"]);
  ids = (await buildWorld(sql, ops)).ids;
  freshUnit = (await f.unit(sql, { nights: 10 })).unitId;
  driftedUnit = (await f.unit(sql, { nights: 10 })).unitId;
  await sql.begin(async (tx) => {
    await tx`set local session_replication_role = replica`;
    await tx`update reserve.availability_calendar set bookings_count = 1 where unit_id = ${driftedUnit} and date = ${f.isoDate(1)}`;
  });
  const u = new URL(db.url);
  u.username = "authenticator";
  u.password = "postgres";
  authenticator = postgres(u.toString(), { max: 1, onnotice: () => {} });
});
afterAll(async () => {
  await authenticator?.end({ timeout: 5 });
  await ops?.drop();
  await db?.drop();
});

type Call = (q: postgres.TransactionSql) => Promise<unknown>;

/** Every repair, on a row of the world it would change. In this order a person's calls all succeed and write. */
const REPAIRS = (): [string, Call][] => [
  ["block_unit_dates", (q) => q`select * from reserve.block_unit_dates(${freshUnit}, current_date, current_date + 3, 'INC-1: hold')`],
  ["unblock_unit_dates", (q) => q`select * from reserve.unblock_unit_dates(${ids.block}, 'INC-1: lift')`],
  ["recover_payment", (q) => q`select * from reserve.recover_payment(${ids.stuckPayment},
    reserve.as_provider_update(${q.json({ status: "succeeded", amount_received: 100000, currency: "BRL" })}), 'INC-1: dashboard shows paid')`],
  ["mark_payment_failed", (q) => q`select * from reserve.mark_payment_failed(${ids.pixPayment}, 'INC-1: the bank says failed')`],
  ["refund_payment", (q) => q`select * from reserve.refund_payment(${ids.paidPayment}, 1000, 'INC-1: goodwill')`],
  ["refund_duplicate_charge", (q) => q`select * from reserve.refund_duplicate_charge(${ids.duplicatePayment}, 'INC-1: charged twice')`],
  ["rebuild_unit_availability", (q) => q`select * from reserve.rebuild_unit_availability(${driftedUnit}, current_date, 'INC-1: recount')`],
  ["move_reservation", (q) => q`select * from reserve.move_reservation(${ids.reservationToMove}, ${ids.alternativeUnit}, 'INC-1: overbooked')`],
  ["cancel_reservation_with_refund", (q) => q`select * from reserve.cancel_reservation_with_refund(${ids.reservationToCancel}, 'INC-1: overbooked')`],
  ["look_up_refund", (q) => q`select * from reserve.look_up_refund(${ids.mismatchRefund}, 'INC-1: ask Stripe now')`],
  ["close_refund_request", (q) => q`select * from reserve.close_refund_request(${ids.mismatchRefund}, 'INC-1: refunded by bank transfer')`],
  ["retry_refund_request", (q) => q`select * from reserve.retry_refund_request(${ids.refundRequest}, 'INC-1: balance topped up')`],
  ["resolve_money_discrepancy", (q) => q`select * from reserve.resolve_money_discrepancy(${ids.discrepancy}, 'INC-1: refund confirmed')`],
  ["resolve_reconciliation_item", (q) => q`select * from reserve.resolve_reconciliation_item(${ids.reconciliationItem}, 'INC-1: refunded at Stripe')`],
  ["resolve_webhook", (q) => q`select * from reserve.resolve_webhook(${ids.webhook}, 'INC-1: settled by polling')`],
];

/** Everything a repair writes, as one fingerprint per table. */
async function written(): Promise<Record<string, string>> {
  const tables = ["audit_logs", "payments", "reservations", "refund_requests", "ops_blocks", "availability_calendar",
                  "money_discrepancies", "reconciliation_items", "processed_webhooks", "ledger_entries", "booking_intents"];
  const out: Record<string, string> = {};
  for (const t of tables) {
    const [r] = await sql.unsafe(`select count(*)::int || ':' || coalesce(md5(string_agg(x::text, ',' order by x::text)), '') as v from reserve.${t} x`);
    out[t] = r.v as string;
  }
  return out;
}

/** The audit actors of the transaction fn ran in (fn returns that transaction's id). */
async function auditActors(xact: string): Promise<string[]> {
  return (await sql`select distinct actor from reserve.audit_logs where xact_id = ${xact}::bigint order by actor`).map((r) => r.actor as string);
}
const xactId = async (tx: postgres.TransactionSql) => (await tx`select pg_current_xact_id()::text as x`)[0].x as string;

describe("a repair on a login that proves nobody", () => {
  /** What a person on a shared login may type to name someone. */
  const claims: [string, (tx: postgres.TransactionSql) => Promise<unknown>][] = [
    ["a typed reserve.actor", (tx) => tx`select set_config('reserve.actor', 'alice@company', true)`],
    ["a typed request.jwt.claims sub", (tx) => tx`select set_config('request.jwt.claims', ${JSON.stringify({ sub: randomUUID(), role: "service_role" })}, true)`],
    ["both", async (tx) => {
      await tx`select set_config('reserve.actor', 'alice@company', true)`;
      await tx`select set_config('request.jwt.claims', ${JSON.stringify({ sub: "alice@company" })}, true)`;
    }],
  ];
  const logins: [string, <T>(fn: (tx: postgres.TransactionSql) => Promise<T>) => Promise<T>][] = [
    ["postgres", (fn) => sql.begin(fn) as never],
    ["service_role", (fn) => authenticator.begin(async (tx) => {
      await tx`set local role service_role`;
      return fn(tx);
    }) as never],
  ];

  it("is refused (RC604) for each repair on postgres and service_role, whatever name is typed, and writes nothing", async () => {
    const before = await written();
    for (const [login, on] of logins) {
      for (const [typed, name] of claims) {
        for (const [repair, call] of REPAIRS()) {
          expect(await sqlState(on(async (tx) => {
            await name(tx);
            return call(tx);
          })), `${repair} on ${login} with ${typed}`).toBe("RC604");
        }
      }
    }
    expect(await written()).toEqual(before);
  });

  it("named_actor, the ledger corrections' old way to name a person, takes no typed name either (RC604)", async () => {
    for (const [typed, name] of claims) {
      expect(await sqlState(sql.begin(async (tx) => {
        await name(tx);
        return tx`select reserve.named_actor()`;
      })), typed).toBe("RC604");
    }
  });

  it("is refused (RC604) on the console's login without the token's subject, or without the name", async () => {
    const login = opsConsoleLogin(db.url);
    try {
      const before = await written();
      for (const [repair, call] of REPAIRS()) {
        expect(await sqlState(login.as(null, async (tx) => {
          await tx`select set_config('reserve.actor', 'dana@reserve.test', true)`;
          return call(tx);
        })), `${repair} without a subject`).toBe("RC604");
        expect(await sqlState(login.as(randomUUID(), call)), `${repair} without a name`).toBe("RC604");
      }
      expect(await written()).toEqual(before);
    } finally {
      await login.end();
    }
  });

  it("is refused (RC604) on a personal role naming someone else in reserve.actor, and RC501 without a reason", async () => {
    const before = await written();
    expect(await sqlState(ops.as("alice", async (tx) => {
      await tx`select set_config('reserve.actor', ${ops.name("approver")}, true)`;
      return tx`select * from reserve.refund_payment(${ids.paidPayment}, 1000, 'INC-1: goodwill')`;
    }))).toBe("RC604");
    expect(await sqlState(ops.as("alice", (tx) => tx`select * from reserve.refund_payment(${ids.paidPayment}, 1000, '  ')`))).toBe("RC501");
    expect(await written()).toEqual(before);
  });
});

describe("a repair by a proven operator", () => {
  const UNAUDITED = ["resolve_reconciliation_item", "resolve_webhook"];
  it("runs on a personal role in reserve_operator, and audit_logs names the role", async () => {
    const alice = ops.name("alice");
    for (const [repair, call] of REPAIRS()) {
      const xact = await ops.as("alice", async (tx) => {
        // a name beside the login changes nothing: the login is who acts
        await tx`select set_config('request.jwt.claims', ${JSON.stringify({ sub: "mallory@company" })}, true)`;
        await call(tx);
        return xactId(tx);
      });
      // reconciliation items and webhooks are not audited tables: their rows name the operator (below)
      expect(await auditActors(xact), repair).toEqual(UNAUDITED.includes(repair) ? [] : [alice]);
      for (const a of await sql`select reason from reserve.audit_logs where xact_id = ${xact}::bigint`) {
        expect(a.reason, repair).toMatch(new RegExp(`^${repair} by ${alice.replace(/\./g, "\\.")}: INC-1`));
      }
    }
    const [item] = await sql`select resolved_by from reserve.reconciliation_items where id = ${ids.reconciliationItem}`;
    expect(item.resolved_by).toBe(alice);
    const [w] = await sql`select status, error_message from reserve.processed_webhooks where id = ${ids.webhook}`;
    expect(w).toMatchObject({ status: "ignored", error_message: expect.stringContaining(`resolved by ${alice}: INC-1`) });
    // the rows the repairs change carry the name too
    const [refund] = await sql`select requested_by from reserve.refund_requests where payment_id = ${ids.paidPayment} and reason = 'operator_refund'
                               order by created_at desc limit 1`;
    expect(refund.requested_by).toBe(alice);
    const [closed] = await sql`select closed_by from reserve.refund_requests where id = ${ids.mismatchRefund}`;
    expect(closed.closed_by).toBe(alice);
    const [d] = await sql`select resolved_by from reserve.money_discrepancies where id = ${ids.discrepancy}`;
    expect(d.resolved_by).toBe(alice);
    const [b] = await sql`select unblocked_by from reserve.ops_blocks where id = ${ids.block}`;
    expect(b.unblocked_by).toBe(alice);
  });

  it("runs on the console's login with the token's subject, and audit_logs names the token's operator", async () => {
    const login = opsConsoleLogin(db.url);
    try {
      const unit = (await f.unit(sql, { nights: 10 })).unitId;
      const xact = await login.as(randomUUID(), async (tx) => {
        await tx`select set_config('reserve.actor', 'dana@reserve.test', true)`;
        await tx`select * from reserve.block_unit_dates(${unit}, current_date, current_date + 2, 'INC-2: hold')`;
        return xactId(tx);
      });
      expect(await auditActors(xact)).toEqual(["dana@reserve.test"]);
      const [b] = await sql`select blocked_by from reserve.ops_blocks where unit_id = ${unit}`;
      expect(b.blocked_by).toBe("dana@reserve.test");
    } finally {
      await login.end();
    }
  });
});

describe("what a personal role does without a repair's proof", () => {
  it("is audited as the login: a reserve.actor it types names nobody (a replayed webhook)", async () => {
    const c = await checkout(sql);
    const failed = await refusingReservations(sql, () => deliver(sql, { paymentId: c.paymentId }));
    expect(failed).toMatchObject({ webhook_status: "failed" });
    const xact = await ops.as("alice", async (tx) => {
      await tx`select set_config('reserve.actor', 'mallory@reserve.test', true)`;
      const [r] = await tx`select * from reserve.replay_webhook(${failed.webhook_id as string})`;
      expect(r).toMatchObject({ webhook_status: "completed", outcome: "applied" });
      return xactId(tx);
    });
    // the payment, the reservation, the intent: every row the replay changed names the person signed in
    expect(await auditActors(xact)).toEqual([ops.name("alice")]);
  });
});
