// docs/RUNBOOK.md, checked against the database it documents. Every ```sql block runs, as
// tests/helpers/runbook_doc.ts's runBlock runs it (in a rolled-back transaction, or statement by statement
// for maintenance that cannot run in one), a template once its placeholders are filled with ids of the
// rows buildWorld makes; what a repair must have done is checked before the rollback (AFTER below). A
// placeholder this file cannot fill fails the test, so a new template needs a value in buildWorld.
// Beside running them: every reserve.<name> and every `name(...)` the document mentions must exist, the
// alert rules' runbook_section values must be its section titles, its error code table must equal
// reserve.error_codes, and the log lines it tells operators to grep must exist in the functions.
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import type postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type Sql, type TestDatabase } from "../helpers/db.ts";
import { operatorRoles, type OperatorRoles } from "../helpers/operator_roles.ts";
import {
  type Block, buildWorld, callsCorrection, codeBlocks, CORRECTION_FUNCTIONS, fill, label, missingRelations, OPERATOR_FUNCTIONS,
  placeholders, RUNBOOK_PATH, runBlock, stripComments, type World, type WorldIds,
} from "../helpers/runbook_doc.ts";

const ROOT = path.resolve(import.meta.dirname, "../..");
const DOC = readFileSync(RUNBOOK_PATH, "utf8");

const BLOCKS = codeBlocks(DOC);
const SQL_BLOCKS = BLOCKS.filter((b) => b.lang === "sql");

/** Blocks that are not run, with the reason (none today; their names would still be checked). */
const EXEMPT: { match: RegExp; reason: string }[] = [];

/** Writes by hand the runbook must no longer tell anyone to run. */
const UNSAFE = [
  /insert\s+into\s+reserve\.ledger_(entries|transactions)/i,
  /delete\s+from\s+reserve\.ledger_(entries|transactions)/i,
  /insert\s+into\s+reserve\.processed_webhooks/i,
  /insert\s+into\s+reserve\.reservations/i,
  /update\s+reserve\.(payments|reservations|availability_calendar|ledger_entries)\b/i,
];


/** What the runbook must name (and what must exist). */
const REQUIRED_NAMES = [
  ...OPERATOR_FUNCTIONS, ...CORRECTION_FUNCTIONS, "check_all_alerts", "system_health_check", "ops_dashboard_summary", "stuck_payments",
  "webhook_status", "webhook_failure_analysis", "failed_payments_analysis", "retention_statistics",
  "run_retention_cleanup", "retention_cleanup_job", "alert_events", "error_codes", "refund_requests",
  "open_money_discrepancies", "money_discrepancies", "as_provider_update",
];

/** The seed runbook's section titles, kept verbatim. */
const SEED_SECTIONS = [
  "SEVERITY LEVELS", "INCIDENT RESPONSE PROCESS", "SPECIFIC RUNBOOKS", "P1: WEBHOOK DOWN (Stripe/PIX)",
  "P1: PAYMENT SUCCEEDED BUT NO RESERVATION", "P1: LEDGER IMBALANCE DETECTED", "P1: OVERBOOKING DETECTED",
  "P2: PIX PAID BUT NOT CONFIRMED", "P2: PAYMENT STUCK IN PROCESSING", "P2: DOUBLE CHARGE",
  "P2: HIGH RATE OF FAILED PAYMENTS", "P3: SLOW QUERY PERFORMANCE", "P3: AUDIT LOG GROWTH", "EMERGENCY CONTACTS",
  "POST-INCIDENT REVIEW TEMPLATE",
];

/** reserve.<x> names that are settings (GUCs), not objects. */
const GUCS = new Set(["actor", "reason"]);

// ---------------------------------------------------------------------------------------------------
// The world the templates run against

let db: TestDatabase;
let sql: Sql;
/** the proposer of the world's correction, and the operator who runs the runbook's correction steps */
let ops: OperatorRoles;
let world: World;
let ids: WorldIds;

beforeAll(async () => {
  db = await createTestDatabase();
  sql = db.sql;
  ops = await operatorRoles(sql, db.url, ["proposer", "approver"]);
  world = await buildWorld(sql, ops);
  ids = world.ids;
});
afterAll(async () => {
  await ops?.drop();
  await db?.drop();
});

/** What a repair must have done, checked in its transaction before the rollback. */
const AFTER: { match: RegExp; check(tx: postgres.TransactionSql): Promise<void> }[] = [
  {
    match: /recover_payment\([\s\S]*'stuck-payment-uuid'/,
    async check(tx) {
      const [p] = await tx`select status from reserve.payments where id = ${ids.stuckPayment}`;
      expect(p.status).toBe("succeeded");
      expect(await tx`select 1 from reserve.reservations where payment_id = ${ids.stuckPayment}`).toHaveLength(1);
    },
  },
  {
    match: /mark_payment_failed\([\s\S]*'stuck-payment-uuid'/,
    async check(tx) {
      const [p] = await tx`select status from reserve.payments where id = ${ids.stuckPayment}`;
      expect(p.status).toBe("failed");
    },
  },
  {
    match: /recover_payment\([\s\S]*'pix-payment-uuid'/,
    async check(tx) {
      expect(await tx`select 1 from reserve.reservations where payment_id = ${ids.pixPayment}`).toHaveLength(1);
    },
  },
  {
    match: /finalize_reservation\([\s\S]*'payment-uuid'/,
    async check(tx) {
      const [i] = await tx`select status from reserve.booking_intents where id = ${ids.paidIntent}`;
      expect(i.status).toBe("converted");
    },
  },
  {
    match: /replay_webhook\('webhook-uuid'\)/,
    async check(tx) {
      const [w] = await tx`select status from reserve.processed_webhooks where id = ${ids.webhook}`;
      expect(w.status).toBe("completed");
    },
  },
  {
    match: /refund_duplicate_charge\(/,
    async check(tx) {
      const [r] = await tx`select status, amount from reserve.refund_requests where request_key = ${`duplicate:${ids.duplicatePayment}`}`;
      expect(r.status).toBe("requested");
    },
  },
  {
    match: /approve_ledger_correction\(/,
    async check(tx) {
      expect(await tx`select * from reserve.find_ledger_imbalances(current_date - 7) where transaction_id = ${ids.imbalancedTx}`).toEqual([]);
    },
  },
  {
    match: /resolve_money_discrepancy\(/,
    async check(tx) {
      expect(await tx`select * from reserve.open_money_discrepancies where discrepancy_id = ${ids.discrepancy}`).toEqual([]);
    },
  },
  {
    match: /look_up_refund\(/,
    async check(tx) {
      const [r] = await tx`select status, next_attempt_at <= now() as due from reserve.refund_requests where id = ${ids.mismatchRefund}`;
      expect(r).toEqual({ status: "requested", due: true });
    },
  },
  {
    match: /\bblock_unit_dates\(/,
    async check(tx) {
      const [n] = await tx`select count(*)::int as n from reserve.availability_calendar where unit_id = ${ids.overbookedUnit} and not is_blocked`;
      expect(n.n).toBe(0);
    },
  },
  {
    match: /\bunblock_unit_dates\(/,
    async check(tx) {
      const [b] = await tx`select unblocked_at, unit_id from reserve.ops_blocks where id = ${ids.block}`;
      expect(b.unblocked_at).not.toBeNull();
      const [n] = await tx`select count(*)::int as n from reserve.availability_calendar where unit_id = ${b.unit_id} and is_blocked`;
      expect(n.n).toBe(0);
    },
  },
  {
    match: /move_reservation\(/,
    async check(tx) {
      expect(await tx`select * from reserve.overbooking_check where unit_id = ${ids.overbookedUnit}`).toEqual([]);
    },
  },
  {
    match: /cancel_reservation_with_refund\(/,
    async check(tx) {
      const [r] = await tx`select status from reserve.reservations where id = ${ids.reservationToCancel}`;
      expect(r.status).toBe("cancelled");
      expect(await tx`select 1 from reserve.refund_requests where request_key = ${`cancel:${ids.reservationToCancel}`}`).toHaveLength(1);
    },
  },
  {
    match: /retry_refund_request\(/,
    async check(tx) {
      const [old] = await tx`select status from reserve.refund_requests where id = ${ids.refundRequest}`;
      expect(old.status).toBe("closed");
      const [next] = await tx`select status, amount from reserve.refund_requests where retry_of = ${ids.refundRequest}`;
      expect(next).toEqual({ status: "requested", amount: "5000" });
    },
  },
  {
    match: /recover_payment\([\s\S]*'refund-payment-uuid'[\s\S]*close_refund_request\(/,
    async check(tx) {
      const [p] = await tx`select status, refunded_amount from reserve.payments where id = ${ids.refundPayment}`;
      expect(p).toEqual({ status: "partially_refunded", refunded_amount: "5000" });
      const [r] = await tx`select status from reserve.refund_requests where id = ${ids.refundRequest}`;
      expect(r.status).toBe("closed");
      const [h] = await tx`select observed_value from reserve.system_health_check() where check_name = 'refunds_stuck'`;
      expect(h.observed_value).toBe("0");
      const [refund] = await tx`select count(*)::int as n from reserve.ledger_transactions where payment_id = ${ids.refundPayment} and kind = 'refund'`;
      expect(refund.n).toBe(1);
      expect(await tx`select * from reserve.find_ledger_imbalances() i join reserve.ledger_transactions t on t.id = i.transaction_id
                      where t.payment_id = ${ids.refundPayment}`).toEqual([]);
    },
  },
  {
    match: /^(?![\s\S]*recover_payment)[\s\S]*close_refund_request\(/,
    async check(tx) {
      const [r] = await tx`select status, close_reason from reserve.refund_requests where id = ${ids.refundRequest}`;
      expect(r.status).toBe("closed");
      expect(r.close_reason).toMatch(/^INC-/);
    },
  },
  {
    match: /rebuild_unit_availability\(/,
    async check(tx) {
      expect(await tx`select * from reserve.availability_counter_drift where unit_id = ${ids.overbookedUnit}`).toEqual([]);
    },
  },
];

const after = async (b: Block, tx: postgres.TransactionSql) => {
  for (const a of AFTER.filter((x) => x.match.test(b.text))) await a.check(tx);
};

// ---------------------------------------------------------------------------------------------------

describe("docs/RUNBOOK.md: the SQL blocks", () => {
  it("has SQL blocks, templates among them, and every placeholder has a test value", () => {
    expect(SQL_BLOCKS.length).toBeGreaterThan(40);
    const templates = SQL_BLOCKS.filter((b) => placeholders(b.text).length > 0);
    expect(templates.length).toBeGreaterThan(15);
    for (const b of templates) expect(() => fill(b.text, world.values), label(b)).not.toThrow();
  });

  const exemptReason = (b: Block) => EXEMPT.find((e) => e.match.test(b.text))?.reason;

  for (const b of SQL_BLOCKS) {
    const kind = placeholders(b.text).length ? "template" : "as written";
    const reason = exemptReason(b);
    if (reason) {
      it.skip(`${label(b)}: exempt, ${reason}`, () => {});
      continue;
    }
    it(`${label(b)} runs (${kind})`, async (ctx) => {
      const missing = await missingRelations(sql, b);
      if (missing.length) ctx.skip(`${missing.join(", ")} is not installed on this cluster`);
      await runBlock(b, { sql, ops, world, after });
    });
  }

  it("writes nothing by hand that a function now does", () => {
    for (const b of SQL_BLOCKS) {
      for (const u of UNSAFE) expect(stripComments(b.text), `${label(b)} matches ${u}`).not.toMatch(u);
    }
  });

  it("calls every operator function inside begin; commit; as the operator's own role, naming nobody in reserve.actor", () => {
    let repairs = 0;
    for (const b of SQL_BLOCKS) {
      const code = stripComments(b.text);
      const called = OPERATOR_FUNCTIONS.filter((fn) => new RegExp(`reserve\\.${fn}\\(`, "i").test(code));
      if (!called.length) continue;
      repairs++;
      expect(code, `${label(b)} calls ${called.join(", ")}`).toMatch(/^\s*begin\s*;/im);
      expect(code, `${label(b)} calls ${called.join(", ")}`).toMatch(/^\s*commit\s*;/im);
      expect(code, `${label(b)} calls ${called.join(", ")}`).not.toMatch(/reserve\.actor/i);
    }
    expect(repairs).toBeGreaterThan(15);
  });

  it("tells nobody to type a name: no block sets reserve.actor (a typed name proves nobody, RC604)", () => {
    for (const b of SQL_BLOCKS) expect(stripComments(b.text), label(b)).not.toMatch(/reserve\.actor/i);
  });

  it("runs every 4-eyes step inside begin; commit; as the operator's own role, naming nobody in reserve.actor", () => {
    const steps = SQL_BLOCKS.filter((b) => callsCorrection(b.text));
    expect(steps.length).toBeGreaterThanOrEqual(3);
    for (const b of steps) {
      const code = stripComments(b.text);
      expect(code, label(b)).toMatch(/^\s*begin\s*;/im);
      expect(code, label(b)).toMatch(/^\s*commit\s*;/im);
      expect(code, label(b)).not.toMatch(/reserve\.actor/i);
    }
  });
});

describe("docs/RUNBOOK.md: names, sections, error codes, logs", () => {
  async function objectExists(name: string): Promise<boolean> {
    const [r] = await sql`
      select exists (select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace
                     where n.nspname = 'reserve' and c.relname = ${name})
          or exists (select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace
                     where n.nspname = 'reserve' and p.proname = ${name}) as ok`;
    return r.ok as boolean;
  }

  it("names only reserve tables, views, functions and procedures that exist", async () => {
    const names = new Set([...DOC.matchAll(/\breserve\.([a-z_][a-z0-9_]*)/g)].map((m) => m[1]).filter((n) => !GUCS.has(n)));
    expect(names.size).toBeGreaterThan(30);
    const missing = [];
    for (const n of names) if (!(await objectExists(n))) missing.push(`reserve.${n}`);
    expect(missing).toEqual([]);
  });

  it("calls only functions that exist, wherever it writes name(...) in code", async () => {
    const names = new Set<string>();
    const code = [...BLOCKS.filter((b) => b.lang === "sql").map((b) => stripComments(b.text)),
                  ...[...DOC.matchAll(/`([^`\n]+)`/g)].map((m) => m[1])];
    for (const c of code) for (const m of c.matchAll(/(?<![.\w])([a-z_][a-z0-9_]*)\(/g)) names.add(m[1]);
    const missing = [];
    for (const n of names) {
      const [r] = await sql`
        select exists (select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace
                       where p.proname = ${n} and n.nspname in ('reserve', 'pg_catalog')) as ok`;
      // syntax that takes parentheses and is not a function
      if (!r.ok && !["coalesce", "exists", "in", "filter", "over", "values", "using"].includes(n)) missing.push(n);
    }
    expect(missing).toEqual([]);
  });

  it("names every recovery function, view and table the runbook relies on", async () => {
    for (const n of REQUIRED_NAMES) {
      expect(DOC, n).toMatch(new RegExp(`\\b${n}\\b`));
      expect(await objectExists(n), n).toBe(true);
    }
  });

  it("keeps the seed's section titles, and every alert's runbook_section is one of them", async () => {
    const headings = new Set([...DOC.matchAll(/^## (.+?)\s*$/gm)].map((m) => m[1]));
    for (const s of SEED_SECTIONS) expect(headings.has(s), s).toBe(true);
    const rules = await sql`select alert_name, runbook_section from reserve.alert_rules`;
    expect(rules.length).toBeGreaterThan(0);
    for (const r of rules) expect(headings.has(r.runbook_section as string), `${r.alert_name}: ${r.runbook_section}`).toBe(true);
  });

  it("lists every alert rule with its severity and for duration", async () => {
    const rules = await sql`select alert_name, severity, for_duration::text as for_duration from reserve.alert_rules order by alert_name`;
    for (const r of rules) {
      const row = DOC.split("\n").find((l) => l.startsWith(`| \`${r.alert_name}\` |`));
      expect(row, r.alert_name as string).toBeDefined();
      expect(row!.split("|").map((c) => c.trim())[2], `${r.alert_name} severity`).toBe(r.severity);
    }
  });

  it("has the error code table of reserve.error_codes, code, name and HTTP status", async () => {
    const fromDoc = [...DOC.matchAll(/^\| `(RC\d{3})` \| `([a-z0-9_]+)` \| (\d{3}) \|/gm)].map((m) => [m[1], m[2], Number(m[3])]);
    const fromDb = (await sql`select sqlstate, name, http_status from reserve.error_codes order by sqlstate`)
      .map((r) => [r.sqlstate, r.name, r.http_status]);
    expect(fromDoc).toEqual(fromDb);
  });

  it("tells operators to grep log lines the functions really write, in functions that exist", () => {
    const sources = [
      ...["checkout", "webhook_stripe", "webhook_pix", "poll_payment_status"].map((fn) => {
        const file = path.join(ROOT, "supabase/functions", fn, "handler.ts");
        expect(existsSync(file), file).toBe(true);
        return readFileSync(file, "utf8");
      }),
      readFileSync(path.join(ROOT, "supabase/functions/_shared/webhook.ts"), "utf8"),
      readFileSync(path.join(ROOT, "supabase/functions/_shared/cron_secret.ts"), "utf8"),
    ].join("\n");
    // the scheduled functions log "<fn>: RESERVE_CRON_SECRET is not configured" through cronRequest
    for (const fn of ["poll_payment_status", "notify", "reconcile"]) {
      expect(readFileSync(path.join(ROOT, "supabase/functions", fn, "handler.ts"), "utf8"), fn).toContain(`cronRequest(req, "${fn}",`);
    }
    for (const line of ["Webhook secret not configured", "Invalid signature", "Processing failed", "RESERVE_CRON_SECRET is not configured"]) {
      expect(DOC, line).toContain(line);
      expect(sources, line).toContain(line);
    }
    expect(existsSync(path.join(ROOT, "supabase/functions/finalize_reservation_after_payment"))).toBe(false);
  });
});
