// The double-entry ledger's rules: post_ledger_transaction is the only way in (legs validated,
// balanced, idempotent by key), rows are append-only, an unbalanced transaction cannot commit while
// trg_ledger_balance is on, and what slips past a disabled trigger is found by find_ledger_imbalances
// and fixed by a 4-eyes correction (two proven people: their own login roles, or the operators of
// verified tokens), never by editing rows.
import { randomUUID } from "node:crypto";
import type postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, rolledBack, sqlState, type Sql, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";
import { operatorRoles, opsConsoleLogin, type OperatorRoles } from "../helpers/operator_roles.ts";

type Q = Sql | postgres.TransactionSql;
type Leg = Record<string, postgres.JSONValue>;

let db: TestDatabase;
let ops: OperatorRoles;
let cityCode: string;
beforeAll(async () => {
  db = await createTestDatabase();
  ops = await operatorRoles(db.sql, db.url, ["alice", "bob", "carol", "dave", "alice@ops", "bob@finance"]);
  cityCode = await f.city(db.sql);
});
afterAll(async () => {
  await ops?.drop();
  await db?.drop();
});

/** A balanced pair of legs: `amount` from `debit` to `credit`. */
function pair(amount: number, debit = "receivable_stripe", credit = "host_payable"): Leg[] {
  return [
    { account: debit, direction: "debit", amount },
    { account: credit, direction: "credit", amount },
  ];
}

interface PostOptions { kind?: string; description?: string; key?: string | null; city?: string | null }

async function post(q: Q, entries: unknown, o: PostOptions = {}) {
  const [tx] = await q`
    select * from reserve.post_ledger_transaction(
      ${o.kind ?? "payout"}, ${o.description ?? "test posting"}, ${q.json(entries as postgres.JSONValue)},
      ${o.key ?? null}, null, null, ${o.city ?? null})`;
  return tx;
}

async function legsOf(q: Q, transactionId: string) {
  return q`select account, direction, amount::int as amount, entry_type
           from reserve.ledger_entries where transaction_id = ${transactionId} order by direction, account`;
}

async function countLedgerRows(q: Q) {
  const [n] = await q`select (select count(*)::int from reserve.ledger_transactions) as transactions,
                             (select count(*)::int from reserve.ledger_entries) as entries`;
  return n;
}

/** Runs fn in a committed transaction as the person's own login role (in reserve_operator), on `url`. */
function asActor<T>(who: string, fn: (tx: postgres.TransactionSql) => Promise<T>, url = db.url): Promise<T> {
  return ops.as(who, fn, url);
}
const name = (who: string) => ops.name(who);

async function propose(tx: Q, reason: string, entries: Leg[], target: string | null = null) {
  const [c] = await tx`select * from reserve.propose_ledger_correction(${reason}, ${tx.json(entries)}, ${target})`;
  return c;
}

const approve = async (tx: Q, id: string, note = "checked the statement") =>
  (await tx`select * from reserve.approve_ledger_correction(${id}, ${note})`)[0];
const reject = async (tx: Q, id: string, note = "not ours to fix") =>
  (await tx`select * from reserve.reject_ledger_correction(${id}, ${note})`)[0];

/** A database of its own for a test that disables trg_ledger_balance, so no other test sees it off. */
async function withScratchDatabase(fn: (sql: Sql, url: string) => Promise<void>) {
  const scratch = await createTestDatabase();
  try {
    await fn(scratch.sql, scratch.url);
  } finally {
    await scratch.drop();
  }
}

/** Header plus one debit leg, written the way the runbook's manual SQL would (writer flag set by hand). */
async function insertOneSided(tx: postgres.TransactionSql, id: string, amount: number) {
  await tx`select set_config('reserve.ledger_writer', 'on', true)`;
  await tx`insert into reserve.ledger_transactions (id, kind, description)
           values (${id}, 'payment', 'written by hand, one leg only')`;
  await tx`insert into reserve.ledger_entries (transaction_id, entry_type, account, direction, amount)
           values (${id}, 'guest_payment', 'receivable_stripe', 'debit', ${amount})`;
}

async function triggerState(sql: Sql): Promise<string> {
  const [row] = await sql.unsafe(`SELECT tgenabled FROM pg_trigger WHERE tgname = 'trg_ledger_balance';`);
  return row.tgenabled as string;
}

/** Commits an imbalanced transaction with the balance trigger off, then turns it back on. */
async function postImbalanced(sql: Sql, amount: number): Promise<string> {
  const id = randomUUID();
  await sql`alter table reserve.ledger_entries disable trigger trg_ledger_balance`;
  try {
    await sql.begin((tx) => insertOneSided(tx, id, amount));
  } finally {
    await sql.unsafe(`ALTER TABLE reserve.ledger_entries ENABLE TRIGGER trg_ledger_balance;`);
  }
  return id;
}

describe("post_ledger_transaction", () => {
  it("posts a balanced transaction and returns its header", async () => {
    await rolledBack(db.sql, async (tx) => {
      const legs = [
        { account: "receivable_stripe", direction: "debit", amount: 100000 },
        { account: "host_payable", direction: "credit", amount: 85000, entry_type: "host_share" },
        { account: "commission_revenue", direction: "credit", amount: 15000, entry_type: "commission" },
      ];
      const t = await post(tx, legs, { kind: "payment", description: "stay sold", key: "t:balanced", city: cityCode });
      expect(t).toMatchObject({ kind: "payment", description: "stay sold", idempotency_key: "t:balanced", city_code: cityCode });
      expect(t.id).toMatch(/^[0-9a-f-]{36}$/);
      expect(await legsOf(tx, t.id)).toEqual([
        { account: "commission_revenue", direction: "credit", amount: 15000, entry_type: "commission" },
        { account: "host_payable", direction: "credit", amount: 85000, entry_type: "host_share" },
        { account: "receivable_stripe", direction: "debit", amount: 100000, entry_type: "guest_payment" },
      ]);
    });
  });

  it.each([
    ["a zero amount", [{ account: "receivable_stripe", direction: "debit", amount: 0 }, { account: "host_payable", direction: "credit", amount: 0 }]],
    ["a negative amount", [{ account: "receivable_stripe", direction: "debit", amount: -5 }, { account: "host_payable", direction: "credit", amount: -5 }]],
    ["a fractional amount", [{ account: "receivable_stripe", direction: "debit", amount: 10.5 }, { account: "host_payable", direction: "credit", amount: 10.5 }]],
    ["an amount given as text", [{ account: "receivable_stripe", direction: "debit", amount: "100" }, { account: "host_payable", direction: "credit", amount: "100" }]],
    ["a bad direction", [{ account: "receivable_stripe", direction: "left", amount: 100 }, { account: "host_payable", direction: "credit", amount: 100 }]],
    ["a single leg", [{ account: "receivable_stripe", direction: "debit", amount: 100 }]],
    ["no legs", []],
  ])("refuses %s with RC001", async (_what, legs) => {
    expect(await rolledBack(db.sql, (tx) => sqlState(post(tx, legs)))).toBe("RC001");
  });

  it.each([[""], ["   "], [null]])("refuses the description %j with RC001", async (description) => {
    const state = await rolledBack(db.sql, (tx) => sqlState(tx`
      select reserve.post_ledger_transaction('payout', ${description}, ${tx.json(pair(100))})`));
    expect(state).toBe("RC001");
  });

  it("refuses an unknown account with RC404", async () => {
    expect(await rolledBack(db.sql, (tx) => sqlState(post(tx, pair(100, "receivable_stripe", "petty_cash"))))).toBe("RC404");
  });

  it("refuses an unbalanced transaction at the call itself, not only at commit (RC401)", async () => {
    const legs = [{ account: "receivable_stripe", direction: "debit", amount: 100 }, { account: "host_payable", direction: "credit", amount: 99 }];
    const state = await rolledBack(db.sql, (tx) => sqlState(post(tx, legs, { key: "t:unbalanced" })));
    expect(state).toBe("RC401");
  });

  it("refuses legs that balance in total but not per currency (RC401)", async () => {
    const legs = [
      { account: "receivable_stripe", direction: "debit", amount: 100, currency: "BRL" },
      { account: "host_payable", direction: "credit", amount: 100, currency: "USD" },
    ];
    expect(await rolledBack(db.sql, (tx) => sqlState(post(tx, legs)))).toBe("RC401");
  });

  it("is idempotent by key: the same request returns the same transaction and writes nothing new", async () => {
    const first = await post(db.sql, pair(2500), { key: "t:idem", city: cityCode });
    const before = await countLedgerRows(db.sql);
    const again = await post(db.sql, pair(2500), { key: "t:idem", city: cityCode });
    expect(again.id).toBe(first.id);
    expect(await countLedgerRows(db.sql)).toEqual(before);
  });

  it("refuses the same key with other arguments (RC405), naming the transaction", async () => {
    const first = await post(db.sql, pair(3000), { key: "t:conflict" });
    const before = await countLedgerRows(db.sql);
    const err = await post(db.sql, pair(3001), { key: "t:conflict" }).catch((e: { code?: string; message?: string }) => e);
    expect(err.code).toBe("RC405");
    expect(err.message).toContain(first.id);
    expect(await sqlState(post(db.sql, pair(3000), { key: "t:conflict", description: "other words" }))).toBe("RC405");
    expect(await countLedgerRows(db.sql)).toEqual(before);
  });

  it("refuses kind 'correction' when called directly (RC407): corrections need two people", async () => {
    expect(await rolledBack(db.sql, (tx) => sqlState(post(tx, pair(100, "corrections", "host_payable"), { kind: "correction" })))).toBe("RC407");
  });
});

describe("append-only ledger tables", () => {
  let txId: string;
  beforeAll(async () => {
    txId = (await post(db.sql, pair(4200), { key: "t:append-only", city: cityCode })).id;
  });

  it("refuses a direct INSERT into ledger_entries or ledger_transactions (RC403)", async () => {
    const entry = await rolledBack(db.sql, (tx) => sqlState(tx`
      insert into reserve.ledger_entries (transaction_id, entry_type, account, direction, amount)
      values (${txId}, 'correction', 'corrections', 'credit', 1)`));
    const header = await rolledBack(db.sql, (tx) => sqlState(tx`
      insert into reserve.ledger_transactions (kind, description) values ('payout', 'by hand')`));
    expect([entry, header]).toEqual(["RC403", "RC403"]);
  });

  it.each(["ledger_entries", "ledger_transactions"])("refuses UPDATE, DELETE and TRUNCATE of %s (RC402)", async (table) => {
    const key = table === "ledger_entries" ? "transaction_id" : "id";
    const statements = [
      `update reserve.${table} set description = 'edited' where ${key} = '${txId}'`,
      `update reserve.${table} set description = 'edited' where false`,
      `delete from reserve.${table} where ${key} = '${txId}'`,
      // cascade: the foreign keys would refuse a plain TRUNCATE of the headers before our trigger runs
      `truncate reserve.${table} cascade`,
    ];
    for (const text of statements) {
      expect([text, await rolledBack(db.sql, (tx) => sqlState(tx.unsafe(text)))]).toEqual([text, "RC402"]);
    }
    const [still] = await db.sql`select count(*)::int as n from reserve.ledger_entries where transaction_id = ${txId}`;
    expect(still.n).toBe(2);
  });

  it("refuses the runbook's duplicate-removal DELETE (RC402)", async () => {
    const state = await rolledBack(db.sql, (tx) => sqlState(tx.unsafe(`
      WITH duplicates AS (
        SELECT id,
               ROW_NUMBER() OVER (
                 PARTITION BY transaction_id, account, direction
                 ORDER BY created_at
               ) as rn
        FROM reserve.ledger_entries
        WHERE transaction_id = '${txId}'
      )
      DELETE FROM reserve.ledger_entries
      WHERE id IN (SELECT id FROM duplicates WHERE rn > 1);`)));
    expect(state).toBe("RC402");
  });
});

describe("trg_ledger_balance", () => {
  it("An unbalanced ledger transaction cannot commit", async () => {
    const id = randomUUID();
    let legsBeforeCommit = 0;
    const state = await sqlState(db.sql.begin(async (tx) => {
      await insertOneSided(tx, id, 777);
      legsBeforeCommit = (await legsOf(tx, id)).length;  // the check is deferred: the INSERT itself went through
    }));
    expect([legsBeforeCommit, state]).toEqual([1, "RC401"]);
    const [left] = await db.sql`select (select count(*)::int from reserve.ledger_transactions where id = ${id}) as headers,
                                       (select count(*)::int from reserve.ledger_entries where transaction_id = ${id}) as legs`;
    expect(left).toEqual({ headers: 0, legs: 0 });
  });

  it("With the trigger disabled it can, and the runbook's checks find it", async () => {
    await withScratchDatabase(async (sql) => {
      const id = randomUUID();
      await sql`ALTER TABLE reserve.ledger_entries DISABLE TRIGGER trg_ledger_balance`;
      try {
        expect(await triggerState(sql)).toBe("D");
        await sql.begin((tx) => insertOneSided(tx, id, 777));
      } finally {
        await sql.unsafe(`ALTER TABLE reserve.ledger_entries
                          ENABLE TRIGGER trg_ledger_balance;`);
      }
      expect(await triggerState(sql)).toBe("O");

      const found = await sql`select transaction_id, kind, currency, debits::int, credits::int, imbalance::int, entry_count::int
                              from reserve.find_ledger_imbalances(now()::date - 7)`;
      expect(found).toEqual([
        { transaction_id: id, kind: "payment", currency: "BRL", debits: 777, credits: 0, imbalance: 777, entry_count: 1 },
      ]);
      const [today] = await sql`select status, imbalanced_transactions::int, difference::int from reserve.ledger_balance_check
                                where day = (now() at time zone 'UTC')::date and currency = 'BRL'`;
      expect(today).toEqual({ status: "IMBALANCED", imbalanced_transactions: 1, difference: 777 });
    });
  });
});

describe("4-eyes corrections", () => {
  const legs = pair(700, "corrections", "host_payable");

  it("needs a proven proposer: a shared login naming nobody, or naming someone in reserve.actor, is refused (RC604)", async () => {
    expect(await sqlState(db.sql`select reserve.propose_ledger_correction('fix', ${db.sql.json(legs)})`)).toBe("RC604");
    expect(await sqlState(db.sql.begin(async (tx) => {
      await tx`set local reserve.actor = 'alice'`;
      await tx`select reserve.propose_ledger_correction('fix', ${tx.json(legs)})`;
    }))).toBe("RC604");
    expect(await db.sql`select count(*)::int as n from reserve.ledger_corrections where reason = 'fix'`).toEqual([{ n: 0 }]);
  });

  it("cannot be proposed under one name and approved under another by one session, whatever it sets", async () => {
    const c = await asActor("alice", (tx) => propose(tx, "one session, two names", legs));
    // alice's own session: reserve.actor, request.jwt.claims, SET ROLE and p_operator change nothing
    const tries = [
      (tx: postgres.TransactionSql) => tx`select set_config('reserve.actor', ${name("bob")}, true)`,
      (tx: postgres.TransactionSql) => tx`select set_config('request.jwt.claims', ${JSON.stringify({ sub: name("bob") })}, true)`,
      (tx: postgres.TransactionSql) => tx`set local role reserve_operator`,
    ];
    for (const before of tries) {
      expect(await sqlState(asActor("alice", async (tx) => { await before(tx); return approve(tx, c.id); }))).toBe("RC407");
    }
    expect(await sqlState(asActor("alice", (tx) => tx`select reserve.approve_ledger_correction(${c.id}, 'ok', ${name("bob")})`))).toBe("RC604");
    expect(await sqlState(asActor("alice", (tx) => tx`select reserve.propose_ledger_correction('as bob', ${tx.json(legs)}, null, ${name("bob")})`))).toBe("RC604");
    // a decision needs a note
    expect(await sqlState(asActor("bob", (tx) => tx`select reserve.approve_ledger_correction(${c.id}, '')`))).toBe("RC604");
    const [row] = await db.sql`select status from reserve.ledger_corrections where id = ${c.id}`;
    expect(row.status).toBe("proposed");
    expect(await asActor("bob", (tx) => approve(tx, c.id))).toMatchObject({ status: "approved", proposed_by: name("alice"), decided_by: name("bob") });
  });

  it("refuses a login role that is not in reserve_operator (RC604)", async () => {
    const outsider = await operatorRoles(db.sql, db.url, ["eve"], { member: false });
    try {
      await db.sql.unsafe(`grant usage on schema reserve to "${outsider.name("eve")}"`);
      await db.sql.unsafe(`grant execute on function reserve.propose_ledger_correction(text, jsonb, uuid, text) to "${outsider.name("eve")}"`);
      expect(await sqlState(outsider.as("eve", (tx) => propose(tx, "not an operator", legs)))).toBe("RC604");
    } finally {
      await db.sql.unsafe(`revoke all on schema reserve from "${outsider.name("eve")}"`);
      await db.sql.unsafe(`revoke all on function reserve.propose_ledger_correction(text, jsonb, uuid, text) from "${outsider.name("eve")}"`);
      await outsider.drop();
    }
  });

  it("takes no name from a shared login (the SQL editor's postgres): p_operator there proves nobody (RC604)", async () => {
    expect(await sqlState(db.sql`select reserve.propose_ledger_correction('typed names', ${db.sql.json(legs)}, null, 'alice@company')`)).toBe("RC604");
    const c = await asActor("alice", (tx) => propose(tx, "approved by a typed name", legs));
    for (const typed of ["bob@company", "Alice@company", name("bob")]) {
      expect(await sqlState(db.sql`select reserve.approve_ledger_correction(${c.id}, 'ok', ${typed})`)).toBe("RC604");
      expect(await sqlState(db.sql`select reserve.reject_ledger_correction(${c.id}, 'no', ${typed})`)).toBe("RC604");
    }
    const [row] = await db.sql`select status from reserve.ledger_corrections where id = ${c.id}`;
    expect(row.status).toBe("proposed");
  });

  it("on the ops console's own login, the person is the verified token's sub: a new email or none is the same person (RC407)", async () => {
    const opsLogin = opsConsoleLogin(db.url);
    try {
      const ana = randomUUID();
      const bruno = randomUUID();
      const [c] = await opsLogin.as(ana, (tx) => tx`select * from reserve.propose_ledger_correction('from the console', ${tx.json(legs)}, null, 'ana@reserve.test')`);
      expect(c).toMatchObject({ proposed_by: "ana@reserve.test", proposed_by_subject: `auth:${ana}` });
      for (const [sub, shown] of [[ana, "ana@reserve.test"], [ana, "ana.new@reserve.test"], [ana, ana], [bruno, " ANA@reserve.test"]]) {
        expect(await sqlState(opsLogin.as(sub, (tx) => tx`select reserve.approve_ledger_correction(${c.id}, 'mine', ${shown})`))).toBe("RC407");
        expect(await sqlState(opsLogin.as(sub, (tx) => tx`select reserve.reject_ledger_correction(${c.id}, 'mine', ${shown})`))).toBe("RC407");
      }
      // the console's login without the token's sub, or without a name, proves nobody
      expect(await sqlState(opsLogin.as(null, (tx) => tx`select reserve.approve_ledger_correction(${c.id}, 'ok', 'bruno@reserve.test')`))).toBe("RC604");
      expect(await sqlState(opsLogin.as(bruno, (tx) => tx`select reserve.approve_ledger_correction(${c.id}, 'ok')`))).toBe("RC604");
      const [done] = await opsLogin.as(bruno, (tx) => tx`select * from reserve.approve_ledger_correction(${c.id}, 'checked', 'bruno@reserve.test')`);
      expect(done).toMatchObject({ status: "approved", proposed_by: "ana@reserve.test", decided_by: "bruno@reserve.test", decided_by_subject: `auth:${bruno}` });
    } finally {
      await opsLogin.end();
    }
  });

  it("a personal role mapped to its person's auth user (operator_logins) is that person's token too (RC407)", async () => {
    const opsLogin = opsConsoleLogin(db.url);
    const carol = randomUUID();
    try {
      await db.sql`insert into reserve.operator_logins (role_name, auth_user_id) values (${name("carol")}, ${carol})`;
      const c = await asActor("carol", (tx) => propose(tx, "proposed in psql", legs));
      expect(c.proposed_by_subject).toBe(`auth:${carol}`);
      expect(await sqlState(opsLogin.as(carol, (tx) => tx`select reserve.approve_ledger_correction(${c.id}, 'mine', 'carol@reserve.test')`))).toBe("RC407");
      // a personal role may name itself, in any case, and no one else
      expect(await sqlState(asActor("dave", (tx) => tx`select reserve.approve_ledger_correction(${c.id}, 'ok', ${name("carol")})`))).toBe("RC604");
      expect(await asActor("dave", (tx) => tx`select * from reserve.approve_ledger_correction(${c.id}, 'ok', ${name("dave").toUpperCase()})`))
        .toMatchObject([{ status: "approved", decided_by: name("dave"), decided_by_subject: `role:${name("dave")}` }]);
    } finally {
      await db.sql`delete from reserve.operator_logins where role_name = ${name("carol")}`;
      await opsLogin.end();
    }
  });

  it("refuses an unbalanced stand-alone correction at propose time (RC401)", async () => {
    const state = await sqlState(asActor("alice", (tx) => propose(tx, "half a fix", [legs[0]])));
    expect(state).toBe("RC401");
  });

  it("refuses approval by the proposer (RC407) and posts a balanced correction when someone else approves", async () => {
    const c = await asActor("alice", (tx) => propose(tx, "host share booked short", legs));
    expect(c).toMatchObject({ status: "proposed", proposed_by: name("alice"), transaction_id: null });
    expect(await sqlState(asActor("alice", (tx) => approve(tx, c.id)))).toBe("RC407");

    const done = await asActor("bob", (tx) => approve(tx, c.id));
    expect(done).toMatchObject({ status: "approved", proposed_by: name("alice"), decided_by: name("bob") });
    const [t] = await db.sql`select * from reserve.ledger_transactions where id = ${done.transaction_id}`;
    expect(t).toMatchObject({ kind: "correction", idempotency_key: `correction:${c.id}`, created_by: name("bob") });
    expect(await legsOf(db.sql, t.id)).toEqual([
      { account: "host_payable", direction: "credit", amount: 700, entry_type: "correction" },
      { account: "corrections", direction: "debit", amount: 700, entry_type: "correction" },
    ]);

    const twice = await asActor("bob", (tx) => approve(tx, c.id));
    expect(twice).toMatchObject({ status: "approved", transaction_id: done.transaction_id, decided_at: done.decided_at });
    const [n] = await db.sql`select count(*)::int as n from reserve.ledger_transactions where idempotency_key = ${`correction:${c.id}`}`;
    expect(n.n).toBe(1);
  });

  it("records propose and approve in audit_logs under the two people", async () => {
    const c = await asActor("alice@ops", (tx) => propose(tx, "audited fix", legs));
    await asActor("bob@finance", (tx) => approve(tx, c.id));
    const trail = await db.sql`select action, actor, new_values ->> 'status' as status from reserve.audit_trail
                               where table_name = 'ledger_corrections' and row_id = ${c.id} order by audit_id, change_no`;
    expect(trail).toEqual([
      { action: "INSERT", actor: name("alice@ops"), status: "proposed" },
      { action: "UPDATE", actor: name("bob@finance"), status: "approved" },
    ]);
  });

  it("cannot approve a rejected correction (RC408), and the rejecter must be someone else too", async () => {
    const c = await asActor("alice", (tx) => propose(tx, "maybe a fix", legs));
    expect(await sqlState(asActor("alice", (tx) => reject(tx, c.id)))).toBe("RC407");
    expect(await asActor("carol", (tx) => reject(tx, c.id))).toMatchObject({ status: "rejected", decided_by: name("carol") });
    expect(await sqlState(asActor("bob", (tx) => approve(tx, c.id)))).toBe("RC408");
    expect(await sqlState(asActor("bob", (tx) => reject(tx, c.id)))).toBe("RC408");
    const [row] = await db.sql`select status, transaction_id from reserve.ledger_corrections where id = ${c.id}`;
    expect(row).toEqual({ status: "rejected", transaction_id: null });
  });

  it("answers RC406 for an unknown correction or target transaction", async () => {
    expect(await sqlState(asActor("bob", (tx) => approve(tx, randomUUID())))).toBe("RC406");
    expect(await sqlState(asActor("bob", (tx) => reject(tx, randomUUID())))).toBe("RC406");
    expect(await sqlState(asActor("alice", (tx) => propose(tx, "fix", [legs[1]], randomUUID())))).toBe("RC406");
  });

  it("refuses a correction that would not balance its target at propose time (RC401)", async () => {
    const balanced = await post(db.sql, pair(900), { key: "t:target" });
    const one = { account: "corrections", direction: "credit", amount: 900 };
    expect(await sqlState(asActor("alice", (tx) => propose(tx, "unneeded", [one], balanced.id)))).toBe("RC401");
  });
});

describe("runbook P1 ledger imbalance, fixed the safe way", () => {
  it("balances the transaction with an approved correction leg, and the verification query is empty", async () => {
    await withScratchDatabase(async (sql, url) => {
      const id = await postImbalanced(sql, 12345);
      // the runbook's query for the amount and direction of the balancing entry
      const [need] = await sql.unsafe(`
        WITH tx_entries AS (
          SELECT
            transaction_id,
            SUM(CASE WHEN direction = 'debit' THEN amount ELSE 0 END) as debits,
            SUM(CASE WHEN direction = 'credit' THEN amount ELSE 0 END) as credits
          FROM reserve.ledger_entries
          WHERE transaction_id = '${id}'
          GROUP BY transaction_id
        )
        SELECT
          transaction_id,
          debits - credits as imbalance_amount,
          CASE WHEN debits > credits THEN 'credit' ELSE 'debit' END as needed_direction
        FROM tx_entries
        WHERE debits != credits;`);
      expect(need).toMatchObject({ transaction_id: id, imbalance_amount: "12345", needed_direction: "credit" });
      const leg = (amount: number) => ({ account: "corrections", direction: need.needed_direction as string, amount,
                                         entry_type: "correction", description: "Manual correction for imbalance" });

      expect(await sqlState(asActor("alice", (tx) => propose(tx, "wrong amount", [leg(12344)], id), url))).toBe("RC401");
      const fix = await asActor("alice", (tx) => propose(tx, "one-sided manual insert", [leg(12345)], id), url);
      const rival = await asActor("dave", (tx) => propose(tx, "same fix, proposed twice", [leg(12345)], id), url);
      expect((await sql`select * from reserve.find_ledger_imbalances(now()::date - 7)`).length).toBe(1);

      const done = await asActor("bob", (tx) => approve(tx, fix.id), url);
      expect(done).toMatchObject({ status: "approved", transaction_id: id, decided_by: name("bob") });
      expect(await legsOf(sql, id)).toEqual([
        { account: "corrections", direction: "credit", amount: 12345, entry_type: "correction" },
        { account: "receivable_stripe", direction: "debit", amount: 12345, entry_type: "guest_payment" },
      ]);
      // the second proposal was right when made, but approving it now would unbalance the target again
      expect(await sqlState(asActor("bob", (tx) => approve(tx, rival.id), url))).toBe("RC401");

      expect(await sql`select * from reserve.find_ledger_imbalances(now()::date - 7) where transaction_id = ${id}`).toEqual([]);
      expect(await sql.unsafe(`SELECT * FROM reserve.find_ledger_imbalances(NOW()::date);`)).toEqual([]);
      const status = await sql.unsafe(`SELECT * FROM reserve.ledger_balance_check LIMIT 5;`);
      expect(status.map((r) => r.status)).toEqual(["OK"]);
    });
  });
});

describe("legs with an unknown entry type or a malformed currency", () => {
  it("are refused with RC001 when posted and when a correction is proposed", async () => {
    for (const bad of [{ entry_type: "gift" }, { currency: "brl" }]) {
      const legs = pair(100).map((l) => ({ ...l, ...bad }));
      expect(await sqlState(post(db.sql, legs)), JSON.stringify(bad)).toBe("RC001");
      const code = await sqlState(asActor("alice", (tx) => tx`select reserve.propose_ledger_correction('typo', ${tx.json(legs)})`));
      expect(code, JSON.stringify(bad)).toBe("RC001");
    }
  });
});

describe("legs with a key a leg does not have", () => {
  it("are refused with RC001 naming the entry and the key, posted or proposed: a misspelt currency never becomes BRL", async () => {
    for (const [bad, key] of [[{ acount: "bank_brl" }, "acount"], [{ curency: "USD" }, "curency"], [{ memo: "x" }, "memo"]] as const) {
      const legs = [pair(100, "corrections", "bank_brl")[0], { ...pair(100, "corrections", "bank_brl")[1], ...bad }];
      const posted = await rolledBack(db.sql, (tx) => post(tx, legs).then(() => null, (e) => e));
      expect([posted?.code, posted?.message]).toEqual(["RC001", expect.stringMatching(new RegExp(`^entry 2: unknown key ${key}`))]);
      const proposed = await asActor("alice", (tx) => tx`select reserve.propose_ledger_correction('typo', ${tx.json(legs)})`).then(() => null, (e) => e);
      expect([proposed?.code, proposed?.message]).toEqual(["RC001", expect.stringMatching(new RegExp(`^entry 2: unknown key ${key}`))]);
    }
  });
});

describe("correction legs in a currency that is not their account's or their target's", () => {
  it("are refused with RC001 naming the entry: a made-up code, USD on bank_brl, USD on a BRL transaction", async () => {
    const usd = (legs: Leg[], currency = "USD") => legs.map((l) => ({ ...l, currency }));
    for (const legs of [usd(pair(100, "corrections", "bank_brl"), "ZZZ"), usd(pair(100, "corrections", "bank_brl"))]) {
      const e = await asActor("alice", (tx) => propose(tx, "in another currency", legs)).then(() => null, (err) => err);
      expect([e?.code, e?.message]).toEqual(["RC001", expect.stringMatching(/^entry 1: ledger account corrections holds no (ZZZ|USD)/)]);
    }
    await withScratchDatabase(async (sql, url) => {
      const target = await postImbalanced(sql, 321);
      const e = await asActor("alice", (tx) => propose(tx, "balance it in dollars", usd([{ account: "corrections", direction: "credit", amount: 321 }]), target), url)
        .then(() => null, (err) => err);
      expect([e?.code, e?.message]).toEqual(["RC001", `entry 1: ledger transaction ${target} is in BRL, not USD`]);
      // in the target's currency it is proposed
      expect(await asActor("alice", (tx) => propose(tx, "balance it", [{ account: "corrections", direction: "credit", amount: 321 }], target), url))
        .toMatchObject({ status: "proposed" });
    });
  });
});
