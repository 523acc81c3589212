// docs/RUNBOOK.md, checked against the database it documents. Every ```sql block runs:
// - a block without a placeholder runs as written, inside a transaction that is rolled back (its own
//   `begin;` / `commit;` lines are left out, `set local reserve.actor = 'runbook-test'` comes first; a
//   ledger correction step runs as an operator's own login role, as the runbook tells them to sign in);
//   maintenance that cannot run in a transaction (VACUUM, CALL of a committing procedure, CREATE INDEX
//   CONCURRENTLY) runs statement by statement outside one;
// - a template runs the same way once its placeholders are replaced by ids of rows this file makes: a
//   stuck payment, a paid payment without reservation, a PIX payment, a duplicate charge, a failed
//   webhook, an imbalanced ledger transaction with a proposed correction, an overbooked unit, a refund
//   request the provider refused.
// A placeholder is a quoted lower-case kebab-case string ('payment-uuid', 'pix-id-from-customer'), an
// angle-bracket word (<slow_query>, <imbalance_amount>) or one of a few bare identifiers
// (affected_check_in, affected_check_out, required_occupancy). A placeholder this file cannot fill fails
// the test, so a new template needs a value here.
// Beside running them: every reserve.<name> and every `name(...)` the document mentions must exist, the
// alert rules' runbook_section values must be its section titles, its error code table must equal
// reserve.error_codes, and the log lines it tells operators to grep must exist in the functions.
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import type postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type Sql, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";
import { operatorRoles, type OperatorRoles } from "../helpers/operator_roles.ts";
import { applyStatus, attachGateway, processEvent } from "../helpers/money.ts";

const ROOT = path.resolve(import.meta.dirname, "../..");
const DOC_PATH = path.join(ROOT, "docs/RUNBOOK.md");
const DOC = readFileSync(DOC_PATH, "utf8");

// ---------------------------------------------------------------------------------------------------
// The document's code blocks

interface Block {
  lang: string;
  text: string;
  /** 1-based line of the opening fence */
  line: number;
  /** the `## ` section it is in */
  section: string;
}

function codeBlocks(md: string): Block[] {
  const blocks: Block[] = [];
  const lines = md.split("\n");
  let section = "";
  let open: { lang: string; line: number; body: string[] } | null = null;
  lines.forEach((l, i) => {
    const fence = l.match(/^\s*```(\w*)\s*$/);
    if (open) {
      if (fence && fence[1] === "") {
        blocks.push({ lang: open.lang, text: open.body.join("\n"), line: open.line, section });
        open = null;
      } else {
        open.body.push(l);
      }
      return;
    }
    if (fence) {
      open = { lang: fence[1], line: i + 1, body: [] };
      return;
    }
    const h = l.match(/^## (.+?)\s*$/);
    if (h) section = h[1];
  });
  if (open) throw new Error(`docs/RUNBOOK.md: unclosed code fence at line ${(open as { line: number }).line}`);
  return blocks;
}

const BLOCKS = codeBlocks(DOC);
const SQL_BLOCKS = BLOCKS.filter((b) => b.lang === "sql");
const label = (b: Block) => `${b.section} (docs/RUNBOOK.md:${b.line})`;

/** SQL with the comments taken out (placeholder and name checks look at code, not prose). */
function stripComments(text: string): string {
  return text.replace(/--[^\n]*/g, "");
}

const QUOTED_PLACEHOLDER = /'([a-z][a-z0-9]*(?:-[a-z0-9]+)+)'/g;
const ANGLE_PLACEHOLDER = /<([a-z_]+)>/g;
const BARE_PLACEHOLDER = /\b(affected_check_in|affected_check_out|required_occupancy)\b/g;

function placeholders(text: string): string[] {
  const code = stripComments(text);
  const found = new Set<string>();
  for (const m of code.matchAll(QUOTED_PLACEHOLDER)) found.add(`'${m[1]}'`);
  for (const m of code.matchAll(ANGLE_PLACEHOLDER)) found.add(`<${m[1]}>`);
  for (const m of code.matchAll(BARE_PLACEHOLDER)) found.add(m[1]);
  return [...found];
}

/** Statements that cannot run inside a transaction block. */
const OUTSIDE_TRANSACTION = /^\s*(vacuum|call\s+reserve\.retention_cleanup_job|create\s+index\s+concurrently)\b/im;

/** Blocks that are not run, with the reason (none today; their names would still be checked). */
const EXEMPT: { match: RegExp; reason: string }[] = [];

/** Blocks that need an extension: skipped, saying so, on a cluster without it (npm start's and the
 *  test cluster's bootstrap install pg_stat_statements in schema extensions, as Supabase has it). */
const NEEDS_RELATION: { match: RegExp; relation: string }[] = [
  { match: /\bpg_stat_statements\b/, relation: "pg_stat_statements" },
];

/** Writes by hand the runbook must no longer tell anyone to run. */
const UNSAFE = [
  /insert\s+into\s+reserve\.ledger_(entries|transactions)/i,
  /delete\s+from\s+reserve\.ledger_(entries|transactions)/i,
  /insert\s+into\s+reserve\.processed_webhooks/i,
  /insert\s+into\s+reserve\.reservations/i,
  /update\s+reserve\.(payments|reservations|availability_calendar|ledger_entries)\b/i,
];

/** The recovery functions that write: each call must sit in begin; set local reserve.actor ...; commit;. */
const OPERATOR_FUNCTIONS = [
  "recover_payment", "mark_payment_failed", "block_unit_dates", "unblock_unit_dates", "move_reservation", "cancel_reservation_with_refund",
  "refund_duplicate_charge", "refund_payment", "rebuild_unit_availability", "replay_webhook", "retry_failed_webhooks",
  "resolve_webhook", "resolve_money_discrepancy", "look_up_refund", "retry_refund_request", "close_refund_request",
];

/** The 4-eyes steps: each person signs in as their own role, so a block names nobody in reserve.actor. */
const CORRECTION_FUNCTIONS = ["propose_ledger_correction", "approve_ledger_correction", "reject_ledger_correction"];
const callsCorrection = (text: string) => CORRECTION_FUNCTIONS.some((fn) => new RegExp(`reserve\\.${fn}\\(`).test(stripComments(text)));

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

type Q = postgres.Sql | postgres.TransactionSql;

let db: TestDatabase;
let sql: Sql;
/** the proposer of the world's correction, and the operator who runs the runbook's correction steps */
let ops: OperatorRoles;
let values: Record<string, string>;
let ids: {
  block: string; stuckPayment: string; paidPayment: string; paidIntent: string; pixPayment: string; pixGatewayId: string;
  duplicatePayment: string; webhook: string; imbalancedTx: string; correction: string; overbookedUnit: string;
  alternativeUnit: string; reservationToMove: string; reservationToCancel: string; cityCode: string;
  refundPayment: string; refundRequest: string; discrepancy: string; mismatchRefund: string; reconciliationItem: string;
};

async function checkout(q: Q, unitId: string, method: "card" | "pix", provider: string, gatewayId: string) {
  const [c] = await q`
    select * from reserve.begin_checkout(
      p_client_id => ${`runbook-${crypto.randomUUID()}`}, p_method => ${method}, p_provider => ${provider},
      p_unit_id => ${unitId}, p_check_in => ${f.isoDate(1)}, p_check_out => ${f.isoDate(3)}, p_guests => 2)`;
  await attachGateway(q, c.payment_id as string, gatewayId);
  return { paymentId: c.payment_id as string, intentId: c.booking_intent_id as string };
}

/** An intent with a payment that succeeded through the state machine (finalized: reservation and receipt). */
async function paidReservation(q: Q, unitId: string) {
  const [bi] = await q`select * from reserve.create_booking_intent(${unitId}, ${f.isoDate(1)}, ${f.isoDate(3)}, 2)`;
  const [p] = await q`select * from reserve.create_payment(${bi.id}, 'stripe', 'card', ${bi.amount})`;
  const r = await applyStatus(q, p.id as string, "succeeded");
  return { intentId: bi.id as string, paymentId: p.id as string, reservationId: r.reservation_id as string };
}

async function buildWorld() {
  // P1 webhook down / P2 stuck: a card payment in flight at Stripe
  const stuck = await checkout(sql, (await f.unit(sql, { nights: 10 })).unitId, "card", "stripe", `pi_stuck_${crypto.randomUUID().slice(0, 8)}`);

  // P1 paid without reservation: succeeded by a hand-written UPDATE (what version 2.0's Option 2 did)
  const paidUnit = await f.unit(sql, { nights: 10 });
  const [bi] = await sql`select * from reserve.create_booking_intent(${paidUnit.unitId}, ${f.isoDate(2)}, ${f.isoDate(4)}, 2)`;
  const [pp] = await sql`select * from reserve.create_payment(${bi.id}, 'stripe', 'card', ${bi.amount})`;
  await sql`update reserve.payments set status = 'succeeded', succeeded_at = now() where id = ${pp.id}`;

  // P2 PIX paid but not confirmed: a MercadoPago PIX charge still pending
  const pixGatewayId = String(1_300_000_000 + Math.floor(Math.random() * 1_000_000));
  const pix = await checkout(sql, (await f.unit(sql, { nights: 10 })).unitId, "pix", "mercadopago", pixGatewayId);

  // P2 double charge: the first attempt failed, the retry paid, then the bank let the first one through
  const dupUnit = await f.unit(sql, { nights: 10 });
  const [di] = await sql`select * from reserve.create_booking_intent(${dupUnit.unitId}, ${f.isoDate(1)}, ${f.isoDate(3)}, 2)`;
  const [first] = await sql`select * from reserve.create_payment(${di.id}, 'stripe', 'card', ${di.amount})`;
  await applyStatus(sql, first.id as string, "failed", { error_code: "card_declined" });
  const [second] = await sql`select * from reserve.create_payment(${di.id}, 'stripe', 'card', ${di.amount})`;
  await applyStatus(sql, second.id as string, "succeeded");
  await applyStatus(sql, first.id as string, "succeeded");
  const [dup] = await sql`select id from reserve.payments where booking_intent_id = ${di.id} and duplicate_of is not null`;

  // P1 webhook down, recovery: an event that failed inside the apply (the fault is gone now)
  const wh = await checkout(sql, (await f.unit(sql, { nights: 10 })).unitId, "card", "stripe", `pi_wh_${crypto.randomUUID().slice(0, 8)}`);
  await sql.unsafe(`
    create function public.runbook_refuse_reservation() returns trigger language plpgsql as $$
    begin
      raise exception using errcode = 'ZZ001', message = 'injected failure';
    end $$;
    create trigger runbook_refuse_reservation before insert on reserve.reservations
      for each row execute function public.runbook_refuse_reservation();`);
  let webhookId: string;
  try {
    const w = await processEvent(sql, { event_id: `evt_${crypto.randomUUID()}`, payload: { id: "evt" } },
                                 { status: "succeeded", payment_reference: wh.paymentId });
    webhookId = w.webhook_id as string;
    expect(w.webhook_status).toBe("failed");
  } finally {
    await sql.unsafe(`drop trigger runbook_refuse_reservation on reserve.reservations;
                      drop function public.runbook_refuse_reservation();`);
  }

  // P1 ledger imbalance: a one-sided transaction committed with the balance trigger off, and a
  // correction proposed by someone else than the runbook's approver
  const imbalancedTx = crypto.randomUUID();
  await sql`alter table reserve.ledger_entries disable trigger trg_ledger_balance`;
  try {
    await sql.begin(async (tx) => {
      await tx`select set_config('reserve.ledger_writer', 'on', true)`;
      await tx`insert into reserve.ledger_transactions (id, kind, description) values (${imbalancedTx}, 'payment', 'one leg only')`;
      await tx`insert into reserve.ledger_entries (transaction_id, entry_type, account, direction, amount)
               values (${imbalancedTx}, 'guest_payment', 'receivable_stripe', 'debit', 12345)`;
    });
  } finally {
    await sql`alter table reserve.ledger_entries enable trigger trg_ledger_balance`;
  }
  const correction = await ops.as("proposer", async (tx) => {
    const [c] = await tx`select * from reserve.propose_ledger_correction('balancing leg',
      ${tx.json([{ account: "corrections", direction: "credit", amount: 12345 }])}, ${imbalancedTx})`;
    return c;
  });

  // P1 overbooking: a unit selling two stays a night with three on it (the third written around the
  // counting triggers), and a free unit in the same city
  const ob = await f.unit(sql, { nights: 10, allotment: 2 });
  const alt = await f.unit(sql, { nights: 10, allotment: 1, cityCode: ob.cityCode });
  await paidReservation(sql, ob.unitId);
  const toCancel = await paidReservation(sql, ob.unitId);
  const toMove = await sql.begin(async (tx) => {
    await tx`set local session_replication_role = replica`;
    const i = await f.intent(tx, ob.unitId, { property_id: ob.propertyId, city_code: ob.cityCode });
    return f.reservation(tx, i, { property_id: ob.propertyId, city_code: ob.cityCode, sole_occupancy: false, status: "confirmed", payment_status: "paid" });
  });
  expect((await sql`select * from reserve.overbooking_check where unit_id = ${ob.unitId}`).length).toBe(2);

  // P2 refund stuck: a refund request the provider refused (claimed before
  // the money mismatch below queues its refund, which stays requested for look_up_refund)
  const refundUnit = await f.unit(sql, { nights: 10 });
  const refunded = await paidReservation(sql, refundUnit.unitId);
  const [rr] = await sql`select * from reserve.request_refund(${refunded.paymentId}, 5000, 'operator_refund', ${`runbook:${refunded.paymentId}`})`;
  await sql`select * from reserve.claim_refund_requests(1000)`;
  const [failedRefund] = await sql`select * from reserve.record_refund_result(${rr.id}, 'failed', null, 'insufficient balance')`;
  expect(failedRefund.status).toBe("failed");

  // P1 provider money differs: Stripe says 1.00 BRL arrived for a 1000.00 BRL stay (booked as owed back,
  // refund queued, a discrepancy open)
  const mm = await checkout(sql, (await f.unit(sql, { nights: 10 })).unitId, "card", "stripe", `pi_mm_${crypto.randomUUID().slice(0, 8)}`);
  const mismatch = await applyStatus(sql, mm.paymentId, "succeeded", { amount_received: 100, currency: "BRL" });
  expect(mismatch.finalize_outcome).toBe("amount_mismatch");
  const [disc] = await sql`select id from reserve.money_discrepancies where payment_id = ${mm.paymentId}`;
  const [mmRefund] = await sql`select id from reserve.refund_requests where payment_id = ${mm.paymentId}`;

  // an ops block on a unit of its own, for unblock_unit_dates
  const blocked = await f.unit(sql, { nights: 10 });
  const [blk] = await sql.begin(async (tx) => {
    await tx`set local reserve.actor = 'runbook-test'`;
    return tx`select * from reserve.block_unit_dates(${blocked.unitId}, current_date, current_date + 5, 'test world')`;
  });

  // P2 reconciliation differences: a paid Stripe payment that names none of ours, left open
  const [recon] = await sql`select * from reserve.begin_reconciliation_run('stripe', now() - interval '1 hour', now() + interval '1 hour')`;
  await sql`select * from reserve.reconcile_provider_objects(${recon.id}, ${sql.json([{ status: "succeeded",
    gateway_payment_id: `pi_unknown_${crypto.randomUUID().slice(0, 8)}`, amount: 5000, currency: "BRL", amount_received: 5000 }] as never)})`;
  await sql`select * from reserve.finish_reconciliation_run(${recon.id})`;
  const [reconItem] = await sql`select id from reserve.open_reconciliation_items where kind = 'paid_unknown'`;

  ids = {
    reconciliationItem: reconItem.id as string,
    block: blk.block_id as string,
    stuckPayment: stuck.paymentId, paidPayment: pp.id as string, paidIntent: bi.id as string, pixPayment: pix.paymentId,
    pixGatewayId, duplicatePayment: dup.id as string, webhook: webhookId, imbalancedTx, correction: correction.id as string,
    overbookedUnit: ob.unitId, alternativeUnit: alt.unitId, reservationToMove: toMove.id as string,
    reservationToCancel: toCancel.reservationId, cityCode: ob.cityCode,
    refundPayment: refunded.paymentId, refundRequest: rr.id as string,
    discrepancy: disc.id as string, mismatchRefund: mmRefund.id as string,
  };
  values = {
    "'stuck-payment-uuid'": `'${ids.stuckPayment}'`,
    "'payment-uuid'": `'${ids.paidPayment}'`,
    "'intent-uuid'": `'${ids.paidIntent}'`,
    "'pix-payment-uuid'": `'${ids.pixPayment}'`,
    "'pix-id-from-customer'": `'${ids.pixGatewayId}'`,
    "'duplicate-payment-uuid'": `'${ids.duplicatePayment}'`,
    "'webhook-uuid'": `'${ids.webhook}'`,
    "'block-uuid'": `'${ids.block}'`,
    "'discrepancy-uuid'": `'${ids.discrepancy}'`,
    "'refund-request-uuid'": `'${ids.mismatchRefund}'`,
    "'reconciliation-item-uuid'": `'${ids.reconciliationItem}'`,
    "<amount_received>": "100000",
    "'imbalanced-tx-id'": `'${ids.imbalancedTx}'`,
    "'correction-uuid'": `'${ids.correction}'`,
    "'overbooked-unit-uuid'": `'${ids.overbookedUnit}'`,
    "'alternative-unit-uuid'": `'${ids.alternativeUnit}'`,
    "'reservation-to-move'": `'${ids.reservationToMove}'`,
    "'reservation-to-cancel'": `'${ids.reservationToCancel}'`,
    "'affected-city'": `'${ids.cityCode}'`,
    "'refund-payment-uuid'": `'${ids.refundPayment}'`,
    "'failed-refund-request-uuid'": `'${ids.refundRequest}'`,
    "<refunded_total>": "5000",
    affected_check_in: `'${f.isoDate(1)}'::date`,
    affected_check_out: `'${f.isoDate(3)}'::date`,
    required_occupancy: "2",
    "<needed_direction>": "credit",
    "<imbalance_amount>": "12345",
    "<duplicated_account>": "receivable_stripe",
    "<opposite_direction>": "credit",
    "<duplicate_amount>": "12345",
    "<pid>": "2147483647",
    "<slow_query>": "select * from reserve.payments where status = 'pending'",
    "<table>": "payments",
    "<column>": "status_changed_at",
  };
}

beforeAll(async () => {
  db = await createTestDatabase();
  sql = db.sql;
  ops = await operatorRoles(sql, db.url, ["proposer", "approver"]);
  await buildWorld();
});
afterAll(async () => {
  await ops?.drop();
  await db?.drop();
});

function fill(text: string): string {
  const missing = placeholders(text).filter((p) => !(p in values));
  if (missing.length) throw new Error(`no test value for placeholder(s) ${missing.join(", ")}: add them to values`);
  let out = text;
  for (const [p, v] of Object.entries(values).sort((a, b) => b[0].length - a[0].length)) {
    out = p.startsWith("'") || p.startsWith("<")
      ? out.split(p).join(v)
      : out.replace(new RegExp(`\\b${p}\\b`, "g"), v);
  }
  return out;
}

/** Steps a template needs done first in its transaction, because the runbook puts it after them. */
const PRELUDES: { match: RegExp; why: string; run(tx: postgres.TransactionSql): Promise<unknown> }[] = [
  {
    match: /rebuild_unit_availability\(/,
    why: "Step 4 follows Step 3: the oversold night is resolved (a reservation moved) before the recount",
    run: (tx) => tx`select reserve.move_reservation(${ids.reservationToMove}, ${ids.alternativeUnit}, 'runbook test: Step 3')`,
  },
];

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

const TX_CONTROL = /^\s*(begin|commit|rollback)\s*;\s*$/gim;

function statements(text: string): string[] {
  return stripComments(text).split(/;\s*(?:\n|$)/).map((s) => s.trim()).filter(Boolean);
}

async function runBlock(b: Block): Promise<void> {
  const text = fill(b.text);
  try {
    if (OUTSIDE_TRANSACTION.test(text)) {
      for (const s of statements(text)) await sql.unsafe(s);
      return;
    }
    const rollback = new Error("rollback");
    const correction = callsCorrection(b.text);
    await (correction ? ops.sql("approver") : sql).begin(async (tx) => {
      if (!correction) await tx`set local reserve.actor = 'runbook-test'`;
      for (const p of PRELUDES.filter((x) => x.match.test(b.text))) await p.run(tx);
      await tx.unsafe(text.replace(TX_CONTROL, ""));
      for (const a of AFTER.filter((x) => x.match.test(b.text))) await a.check(tx);
      throw rollback;
    }).catch((err) => {
      if (err !== rollback) throw err;
    });
  } catch (err) {
    const e = err as { code?: string; message?: string };
    throw new Error(`${label(b)} failed${e.code ? ` (${e.code})` : ""}: ${e.message}\n--- as run:\n${text}`);
  }
}

// ---------------------------------------------------------------------------------------------------

describe("docs/RUNBOOK.md: the SQL blocks", () => {
  it("has SQL blocks, templates among them, and every placeholder has a test value", () => {
    expect(SQL_BLOCKS.length).toBeGreaterThan(40);
    const templates = SQL_BLOCKS.filter((b) => placeholders(b.text).length > 0);
    expect(templates.length).toBeGreaterThan(15);
    for (const b of templates) expect(() => fill(b.text), label(b)).not.toThrow();
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
      for (const n of NEEDS_RELATION.filter((x) => x.match.test(b.text))) {
        const [r] = await sql`select to_regclass(${n.relation}) is not null as present`;
        if (!r.present) ctx.skip(`${n.relation} is not installed on this cluster`);
      }
      await runBlock(b);
    });
  }

  it("writes nothing by hand that a function now does", () => {
    for (const b of SQL_BLOCKS) {
      for (const u of UNSAFE) expect(stripComments(b.text), `${label(b)} matches ${u}`).not.toMatch(u);
    }
  });

  it("calls every operator function inside begin; set local reserve.actor ...; commit;", () => {
    for (const b of SQL_BLOCKS) {
      const code = stripComments(b.text);
      const called = OPERATOR_FUNCTIONS.filter((fn) => new RegExp(`reserve\\.${fn}\\(`).test(code));
      if (!called.length) continue;
      expect(code, `${label(b)} calls ${called.join(", ")}`).toMatch(/^\s*begin\s*;/im);
      expect(code, `${label(b)} calls ${called.join(", ")}`).toMatch(/set local reserve\.actor = '[^']+'/i);
      expect(code, `${label(b)} calls ${called.join(", ")}`).toMatch(/^\s*commit\s*;/im);
    }
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
