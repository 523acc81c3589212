// P1: LEDGER IMBALANCE DETECTED. The fault as it happens: someone disables trg_ledger_balance and an
// unbalanced pair is written. Both P1 alerts fire at once; the trigger is re-enabled as the runbook says,
// and the missing leg is added by a 4-eyes correction (the runbook's direct INSERT is refused now).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, sqlState, type TestDatabase } from "../helpers/db.ts";
import { operatorRoles, type OperatorRoles } from "../helpers/operator_roles.ts";
import { expectFires, expectResolved } from "../helpers/runbook.ts";

let db: TestDatabase;
let ops: OperatorRoles;
beforeAll(async () => {
  db = await createTestDatabase();
  ops = await operatorRoles(db.sql, db.url, ["oncall", "cfo"]);
});
afterAll(async () => {
  await ops?.drop();
  await db?.drop();
});

describe("P1: ledger imbalance", () => {
  it("fires at P1 with no delay, and a correction approved by a second person balances it", async () => {
    await db.sql`alter table reserve.ledger_entries disable trigger trg_ledger_balance`;
    const txId = await db.sql.begin(async (tx) => {
      await tx`set local reserve.ledger_writer = 'on'`;
      const [t] = await tx`insert into reserve.ledger_transactions (kind, description) values ('payment', 'hand-written, half of it') returning id`;
      await tx`insert into reserve.ledger_entries (transaction_id, entry_type, account, direction, amount)
               values (${t.id}, 'correction', 'host_payable', 'debit', 12345)`;
      return t.id as string;
    });

    const a = await expectFires(db.sql, "ledger_imbalance", "P1", "P1: LEDGER IMBALANCE DETECTED");
    expect(a.first_seen).not.toBeNull();
    await expectFires(db.sql, "ledger_trigger_disabled", "P1", "P1: LEDGER IMBALANCE DETECTED");

    // Immediate checks and root cause, as written
    const imbalances = await db.sql.unsafe(`SELECT * FROM reserve.find_ledger_imbalances(NOW()::date - 7);`);
    expect(imbalances.map((i) => i.transaction_id)).toContain(txId);
    const [{ tgenabled }] = await db.sql.unsafe(`SELECT tgenabled FROM pg_trigger WHERE tgname = 'trg_ledger_balance';`);
    expect(tgenabled).toBe("D");

    // Resolution: re-enable, as written
    await db.sql.unsafe(`ALTER TABLE reserve.ledger_entries ENABLE TRIGGER trg_ledger_balance;`);
    // the runbook's balancing INSERT is refused now: the ledger is written only by its functions
    expect(await sqlState(db.sql.unsafe(`INSERT INTO reserve.ledger_entries (transaction_id, entry_type, account, direction, amount, description)
      VALUES ('${txId}', 'correction', 'corrections', 'credit', 12345, 'Manual correction for imbalance');`))).toBe("RC403");
    const [missing] = await db.sql.unsafe(`
      WITH tx_entries AS (
        SELECT transaction_id,
          SUM(CASE WHEN direction = 'debit' THEN amount ELSE 0 END) as debits,
          SUM(CASE WHEN direction = 'credit' THEN amount ELSE 0 END) as credits
        FROM reserve.ledger_entries WHERE transaction_id = '${txId}' GROUP BY transaction_id)
      SELECT transaction_id, debits - credits as imbalance_amount,
        CASE WHEN debits > credits THEN 'credit' ELSE 'debit' END as needed_direction
      FROM tx_entries WHERE debits != credits;`);
    expect(missing).toMatchObject({ imbalance_amount: "12345", needed_direction: "credit" });
    // 4 eyes: one person proposes the missing leg, another approves it, each signed in as their own role
    const correction = await ops.as("oncall", async (tx) => {
      const [c] = await tx`select * from reserve.propose_ledger_correction('half a transaction written by hand',
        ${tx.json([{ account: "corrections", direction: "credit", amount: 12345, entry_type: "correction" }])}, ${txId}::uuid)`;
      return c.id as string;
    });
    expect(await sqlState(ops.as("oncall", (tx) => tx`select reserve.approve_ledger_correction(${correction}::uuid, 'my own')`))).toBe("RC407");
    await ops.as("cfo", (tx) => tx`select reserve.approve_ledger_correction(${correction}::uuid, 'checked against the bank statement')`);

    // Verification, as written
    expect(await db.sql.unsafe(`SELECT * FROM reserve.find_ledger_imbalances(NOW()::date);`)).toHaveLength(0);
    const checks = await db.sql.unsafe(`SELECT * FROM reserve.ledger_balance_check LIMIT 5;`);
    expect(checks.every((c) => c.status === "OK")).toBe(true);
    await expectResolved(db.sql, "ledger_imbalance");
    await expectResolved(db.sql, "ledger_trigger_disabled");
  });
});
