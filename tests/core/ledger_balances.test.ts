// Balances kept as entries are posted: every account's balance (ledger_balances, ledger_account_balance)
// and a host's statement (host_statement, host_statement_days) agree with the sum of the entries after
// concurrent postings, corrections and refunds; what is written around the posting function shows as
// drift, incrementally since the checkpoint and in the daily full check; rebuild_ledger_balances repairs it.
import { randomUUID } from "node:crypto";
import type postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, sqlState, type Sql, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";
import { opsConsoleLogin } from "../helpers/operator_roles.ts";
import { paidStay } from "../helpers/runbook.ts";

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => await db?.drop());

type Leg = Record<string, postgres.JSONValue>;
const pair = (amount: number, debit: string, credit: string, currency = "BRL"): Leg[] => [
  { account: debit, direction: "debit", amount, currency },
  { account: credit, direction: "credit", amount, currency },
];

async function post(q: Sql, entries: Leg[], key: string | null = null, paymentId: string | null = null) {
  const [tx] = await q`select * from reserve.post_ledger_transaction('payout', 'test posting', ${q.json(entries)}, ${key}, ${paymentId}::uuid)`;
  return tx;
}

/** Every account's balance per currency summed from the entries (what the kept balances must equal). */
async function summed(q: Sql) {
  return q`select e.account, e.currency,
                  coalesce(sum(e.amount) filter (where direction = 'debit'), 0)::bigint::text as debits,
                  coalesce(sum(e.amount) filter (where direction = 'credit'), 0)::bigint::text as credits
           from reserve.ledger_entries e group by 1, 2 order by 1, 2`;
}
async function kept(q: Sql) {
  return q`select account, currency, debits::text, credits::text from reserve.ledger_balances order by 1, 2`;
}

/** A property of host `hostId` with one unit and 60 nights. */
async function hostUnit(q: Sql, hostId: string) {
  const u = await f.unit(q, { nights: 60 });
  await q`update reserve.properties_map set host_id = ${hostId} where id = ${u.propertyId}`;
  return u;
}

describe("kept balances", () => {
  it("equal the entries after concurrent postings across buckets, in two currencies, with a replayed key", async () => {
    const accounts = ["receivable_stripe", "receivable_openpix", "host_payable", "commission_revenue", "provider_fees"];
    await Promise.all(Array.from({ length: 60 }, (_, i) => post(db.sql,
      [...pair(100 + i, accounts[i % 5]!, accounts[(i + 2) % 5]!), ...pair(7 + i, accounts[(i + 1) % 5]!, accounts[(i + 3) % 5]!, "USD")],
      `bal:${i}`)));
    // the same key again posts nothing more
    await post(db.sql, [...pair(100, accounts[0]!, accounts[2]!), ...pair(7, accounts[1]!, accounts[3]!, "USD")], "bal:0");
    expect(await kept(db.sql)).toEqual(await summed(db.sql));
    const [buckets] = await db.sql`select count(distinct bucket)::int as n from reserve.ledger_account_balances where account = 'receivable_stripe'`;
    expect(buckets!.n).toBeGreaterThan(1);
    const [one] = await db.sql`select reserve.ledger_account_balance('receivable_stripe', 'BRL')::text as b`;
    const [sum] = await db.sql`select (coalesce(sum(amount) filter (where direction = 'debit'), 0) - coalesce(sum(amount) filter (where direction = 'credit'), 0))::text as b
                               from reserve.ledger_entries where account = 'receivable_stripe' and currency = 'BRL'`;
    expect(one!.b).toBe(sum!.b);
    expect(await sqlState(db.sql`select reserve.ledger_account_balance('no_such_account')`)).toBe("RC404");
    expect(await db.sql`select * from reserve.ledger_balance_drift()`).toEqual([]);
    expect(await db.sql`select * from reserve.ledger_balance_drift(true)`).toEqual([]);
  });

  it("move with an approved correction added to an existing transaction", async () => {
    const tx = await post(db.sql, pair(5000, "receivable_stripe", "host_payable"), `corr:${randomUUID()}`);
    // as the ops console calls them: on its own login, the operators its verified tokens named
    const opsLogin = opsConsoleLogin(db.url);
    try {
      const [c] = await opsLogin.as(randomUUID(), (q) => q`
        select * from reserve.propose_ledger_correction('wrong account', ${q.json([
          { account: "host_payable", direction: "debit", amount: 5000 }, { account: "commission_revenue", direction: "credit", amount: 5000 },
        ])}, ${tx.id as string}, 'ana@reserve.test')`);
      await opsLogin.as(randomUUID(), (q) => q`select * from reserve.approve_ledger_correction(${c!.id as string}, 'moved to the right account', 'bruno@reserve.test')`);
    } finally {
      await opsLogin.end();
    }
    expect(await kept(db.sql)).toEqual(await summed(db.sql));
    expect(await db.sql`select * from reserve.ledger_balance_drift()`).toEqual([]);
  });
});

describe("host statements", () => {
  it("say what the host was owed, earned, had taken back and is owed, from the host's days only", async () => {
    const host = randomUUID();
    const { unitId } = await hostUnit(db.sql, host);
    const a = await paidStay(db.sql, unitId, f.isoDate(1), f.isoDate(3));
    const b = await paidStay(db.sql, unitId, f.isoDate(5), f.isoDate(8));
    // a partial refund of the second stay takes part of the host's share back
    await db.sql`select * from reserve.apply_payment_status(${b.paymentId}::uuid,
                   reserve.as_provider_update('{"status": "partially_refunded", "refunded_amount": 30000}'::jsonb))`;
    const [share] = await db.sql`
      select coalesce(sum(case e.direction when 'credit' then e.amount else -e.amount end), 0)::bigint::text as owed,
             coalesce(sum(e.amount) filter (where e.direction = 'credit'), 0)::bigint::text as credits,
             coalesce(sum(e.amount) filter (where e.direction = 'debit'), 0)::bigint::text as debits
      from reserve.ledger_entries e join reserve.ledger_transactions t on t.id = e.transaction_id
      where e.account = 'host_payable' and t.payment_id in (${a.paymentId}, ${b.paymentId})`;
    const today = f.isoDate(0);
    const [st] = await db.sql`select currency, opening_balance::text, credits::text, debits::text, closing_balance::text, days_with_movement::int
                              from reserve.host_statement(${host}, ${today}, ${today})`;
    expect(st).toEqual({ currency: "BRL", opening_balance: "0", credits: share!.credits, debits: share!.debits,
                         closing_balance: share!.owed, days_with_movement: 1 });
    expect(Number(share!.debits)).toBeGreaterThan(0);
    // a later period opens with what this one closed with, and has no movement
    const [later] = await db.sql`select opening_balance::text, closing_balance::text, credits::text from reserve.host_statement(${host}, ${f.isoDate(1)}, ${f.isoDate(9)})`;
    expect(later).toEqual({ opening_balance: share!.owed, closing_balance: share!.owed, credits: "0" });
    const days = await db.sql`select day::text, opening_balance::text, closing_balance::text from reserve.host_statement_days(${host}, ${f.isoDate(-3)}, ${today})`;
    expect(days).toEqual([{ day: today, opening_balance: "0", closing_balance: share!.owed }]);
    // another host's stays are not in it
    expect(await db.sql`select * from reserve.host_statement(${randomUUID()}, ${today}, ${today})`).toEqual([]);
    expect(await sqlState(db.sql`select * from reserve.host_statement(${host}, ${today}, ${f.isoDate(-1)})`)).toBe("RC001");
    expect(await db.sql`select * from reserve.ledger_host_drift()`).toEqual([]);
  });

  it("of a backdated day: the opening balance is every earlier day, whatever the period", async () => {
    const host = randomUUID();
    const { unitId } = await hostUnit(db.sql, host);
    await paidStay(db.sql, unitId, f.isoDate(10), f.isoDate(12));
    // days as a year of history would have them (written around the posting function, then rebuilt)
    await db.sql`insert into reserve.ledger_host_days (host_id, currency, day, debits, credits, entries)
                 values (${host}, 'BRL', current_date - 40, 0, 50000, 1), (${host}, 'BRL', current_date - 20, 20000, 0, 1)`;
    const [st] = await db.sql`select opening_balance::text, closing_balance::text from reserve.host_statement(${host}, current_date - 30, current_date - 1)`;
    expect(st).toEqual({ opening_balance: "50000", closing_balance: "30000" });
    // and the full check sees those days are not in the ledger
    expect((await db.sql`select host_id from reserve.ledger_host_drift()`).map((r) => r.host_id)).toEqual([host]);
    await db.sql`select reserve.rebuild_ledger_balances()`;
    expect(await db.sql`select * from reserve.ledger_host_drift()`).toEqual([]);
  });
});

describe("drift", () => {
  it("of entries written around the posting function is found since the checkpoint and by the full check, then rebuilt", async () => {
    await db.sql`call reserve.ledger_balance_full_check()`;
    const [hb] = await db.sql`select ok, summary from reserve.job_heartbeats where job = 'ledger_balance_full_check' order by id desc limit 1`;
    expect(hb).toMatchObject({ ok: true, summary: { accounts_drifting: 0, hosts_drifting: 0 } });

    // a balanced transaction inserted with the triggers off: the entries move, the kept balances do not
    await db.sql.begin(async (q) => {
      await q`set local session_replication_role = replica`;
      const [t] = await q`insert into reserve.ledger_transactions (kind, description) values ('payout', 'around the function') returning id`;
      await q`insert into reserve.ledger_entries (transaction_id, entry_type, account, direction, amount)
              values (${t!.id}, 'payout', 'receivable_mercadopago', 'debit', 777), (${t!.id}, 'payout', 'refunds_payable', 'credit', 777)`;
    });
    const drift = await db.sql`select account, drift::int from reserve.ledger_balance_drift() order by account`;
    expect(drift).toEqual([{ account: "receivable_mercadopago", drift: -777 }, { account: "refunds_payable", drift: 777 }]);
    expect(await db.sql`select account from reserve.ledger_balance_drift(true) order by account`).toEqual(
      [{ account: "receivable_mercadopago" }, { account: "refunds_payable" }]);
    await db.sql`call reserve.ledger_balance_full_check()`;
    const [bad] = await db.sql`select ok, summary from reserve.job_heartbeats where job = 'ledger_balance_full_check' order by id desc limit 1`;
    expect(bad).toMatchObject({ ok: false, summary: { accounts_drifting: 2 } });

    await db.sql`select reserve.rebuild_ledger_balances()`;
    expect(await db.sql`select * from reserve.ledger_balance_drift()`).toEqual([]);
    expect(await kept(db.sql)).toEqual(await summed(db.sql));
  });

  it("with a null flag is the default check (not a query built from nothing)", async () => {
    await db.sql.begin(async (q) => {
      await q`set local session_replication_role = replica`;
      const [t] = await q`insert into reserve.ledger_transactions (kind, description) values ('payout', 'around the function') returning id`;
      await q`insert into reserve.ledger_entries (transaction_id, entry_type, account, direction, amount)
              values (${t!.id}, 'payout', 'receivable_stripe', 'debit', 55), (${t!.id}, 'payout', 'refunds_payable', 'credit', 55)`;
    });
    const drift = await db.sql`select account, drift::int from reserve.ledger_balance_drift(null) order by account`;
    expect(drift).toEqual([{ account: "receivable_stripe", drift: -55 }, { account: "refunds_payable", drift: 55 }]);
    await db.sql`select reserve.rebuild_ledger_balances()`;
    expect(await db.sql`select * from reserve.ledger_balance_drift(null)`).toEqual([]);
  });

  it("are not granted to the guest's roles", async () => {
    const [g] = await db.sql`select has_table_privilege('anon', 'reserve.ledger_account_balances', 'select') as a,
                                    has_table_privilege('authenticated', 'reserve.ledger_host_days', 'select') as b,
                                    has_function_privilege('anon', 'reserve.host_statement(uuid, date, date)', 'execute') as c`;
    expect(g).toEqual({ a: false, b: false, c: false });
  });
});
