// docs/RUNBOOK.md's ```sql blocks as something to run: the blocks, their placeholders, the rows the
// templates' placeholders name (buildWorld) and the runner of one block. tests/runbook/docs_runbook.test.ts
// runs every block once on a small test database; scripts/bench/runbook_doc.ts runs every block on the
// year dataset and times each statement. No vitest here, so the bench can import it.
//
// How a block runs (runBlock):
// - a block without a placeholder runs as written, statement by statement, inside a transaction that is
//   rolled back (its own `begin;` / `commit;` lines are left out); a repair or a ledger correction step
//   runs as an operator's own login role in reserve_operator, as the runbook tells them to sign in (a
//   repair's transaction is the owner's, which becomes the role with SET LOCAL SESSION AUTHORIZATION and
//   back for the checks after it: session_user is the role, as on its login), any other block as the
//   database's owner (the SQL editor's login); maintenance that cannot run in a transaction (VACUUM, CALL
//   of a committing procedure, CREATE INDEX CONCURRENTLY) runs statement by statement outside one;
// - a template runs the same way once its placeholders are replaced by ids of rows buildWorld makes: a
//   stuck payment, a paid payment without reservation, a PIX payment, a duplicate charge, a failed
//   webhook, an imbalanced ledger transaction with a proposed correction, an overbooked unit, a refund
//   request the provider refused.
// A placeholder is a quoted lower-case kebab-case string ('payment-uuid', 'pix-id-from-customer'), an
// angle-bracket word (<slow_query>, <imbalance_amount>) or one of a few bare identifiers
// (affected_check_in, affected_check_out, required_occupancy). A placeholder with no value in the world
// makes fill() throw, so a new template needs a value here.
import assert from "node:assert/strict";
import path from "node:path";
import type postgres from "postgres";
import * as f from "./fixtures.ts";
import { applyStatus, attachGateway, processEvent, refusingReservations } from "./money.ts";
import type { OperatorRoles } from "./operator_roles.ts";

export const RUNBOOK_PATH = path.resolve(import.meta.dirname, "../../docs/RUNBOOK.md");

type Sql = postgres.Sql;
type Q = postgres.Sql | postgres.TransactionSql;

// ---------------------------------------------------------------------------------------------------
// The document's code blocks

export interface Block {
  lang: string;
  text: string;
  /** 1-based line of the opening fence */
  line: number;
  /** the `## ` section it is in */
  section: string;
}

export function codeBlocks(md: string): Block[] {
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

export const label = (b: Block) => `${b.section} (docs/RUNBOOK.md:${b.line})`;

/** SQL with the comments taken out (placeholder and name checks look at code, not prose). */
export function stripComments(text: string): string {
  return text.replace(/--[^\n]*/g, "");
}

const QUOTED_PLACEHOLDER = /'([a-z][a-z0-9]*(?:-[a-z0-9]+)+)'/g;
const ANGLE_PLACEHOLDER = /<([a-z_]+)>/g;
const BARE_PLACEHOLDER = /\b(affected_check_in|affected_check_out|required_occupancy)\b/g;

export function placeholders(text: string): string[] {
  const code = stripComments(text);
  const found = new Set<string>();
  for (const m of code.matchAll(QUOTED_PLACEHOLDER)) found.add(`'${m[1]}'`);
  for (const m of code.matchAll(ANGLE_PLACEHOLDER)) found.add(`<${m[1]}>`);
  for (const m of code.matchAll(BARE_PLACEHOLDER)) found.add(m[1]);
  return [...found];
}

/** Statements that cannot run inside a transaction block. */
export const OUTSIDE_TRANSACTION = /^\s*(vacuum|call\s+reserve\.retention_cleanup_job|create\s+index\s+concurrently)\b/im;

/** Blocks that need an extension: skipped, saying so, on a cluster without it (npm start's and the
 *  test cluster's bootstrap install pg_stat_statements in schema extensions, as Supabase has it). */
export const NEEDS_RELATION: { match: RegExp; relation: string }[] = [
  { match: /\bpg_stat_statements\b/, relation: "pg_stat_statements" },
];

/** The relations of NEEDS_RELATION the block needs and this database lacks (none: it can run). */
export async function missingRelations(q: Q, b: Block): Promise<string[]> {
  const missing: string[] = [];
  for (const n of NEEDS_RELATION.filter((x) => x.match.test(b.text))) {
    const [r] = await q`select to_regclass(${n.relation}) is not null as present`;
    if (!r.present) missing.push(n.relation);
  }
  return missing;
}

/**
 * The repairs the runbook has an operator run signed in as their own role (require_operator proves them
 * from the login, RC604 on the shared one), and the replays and rebuilds it has them run the same way:
 * a block calling one names nobody in reserve.actor.
 */
export const OPERATOR_FUNCTIONS = [
  "recover_payment", "mark_payment_failed", "block_unit_dates", "unblock_unit_dates", "move_reservation", "cancel_reservation_with_refund",
  "refund_duplicate_charge", "refund_payment", "rebuild_unit_availability", "replay_webhook", "retry_failed_webhooks",
  "resolve_webhook", "resolve_money_discrepancy", "resolve_reconciliation_item", "look_up_refund", "retry_refund_request",
  "close_refund_request", "finalize_reservation", "rebuild_ledger_balances",
];
export const callsOperatorFunction = (text: string) =>
  OPERATOR_FUNCTIONS.some((fn) => new RegExp(`reserve\\.${fn}\\(`, "i").test(stripComments(text)));

/** The 4-eyes steps: each person signs in as their own role, so a block names nobody in reserve.actor. */
export const CORRECTION_FUNCTIONS = ["propose_ledger_correction", "approve_ledger_correction", "reject_ledger_correction"];
export const callsCorrection = (text: string) =>
  CORRECTION_FUNCTIONS.some((fn) => new RegExp(`reserve\\.${fn}\\(`).test(stripComments(text)));

/** The statements of a block, comments out, in order (a statement ends with `;` at the end of a line). */
export function statements(text: string): string[] {
  return stripComments(text).split(/;\s*(?:\n|$)/).map((s) => s.trim()).filter(Boolean);
}

/** The block's own transaction control, left out: the runner owns the transaction. */
const TX_CONTROL = /^(begin|commit|rollback)$/i;

// ---------------------------------------------------------------------------------------------------
// The world the templates run against

export interface WorldIds {
  block: string; stuckPayment: string; paidPayment: string; paidIntent: string; pixPayment: string; pixGatewayId: string;
  duplicatePayment: string; webhook: string; imbalancedTx: string; correction: string; overbookedUnit: string;
  alternativeUnit: string; reservationToMove: string; reservationToCancel: string; cityCode: string;
  refundPayment: string; refundRequest: string; discrepancy: string; mismatchRefund: string; reconciliationItem: string;
}

export interface World {
  ids: WorldIds;
  /** placeholder as the runbook writes it → the SQL that replaces it */
  values: Record<string, string>;
}

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

/** The first row of a query the world needs, or an error saying what is missing. */
function one<T>(rows: readonly T[], what: string): T {
  if (!rows.length) throw new Error(`runbook world: no ${what}`);
  return rows[0];
}

/**
 * Commits the rows the templates' placeholders name into the database of `sql` (its owner), and
 * returns their ids and the placeholder values. `ops` must have a "proposer": the person who proposes
 * the world's ledger correction (the runbook's approver must be someone else).
 */
export async function buildWorld(sql: Sql, ops: OperatorRoles): Promise<World> {
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
  const dup = one(await sql`select id from reserve.payments where booking_intent_id = ${di.id} and duplicate_of is not null`,
                  `payment marked duplicate_of for intent ${di.id} after its second success`);

  // P1 webhook down, recovery: an event that failed inside the apply (the fault is gone now)
  const wh = await checkout(sql, (await f.unit(sql, { nights: 10 })).unitId, "card", "stripe", `pi_wh_${crypto.randomUUID().slice(0, 8)}`);
  const webhookId = await refusingReservations(sql, async () => {
    const w = await processEvent(sql, { event_id: `evt_${crypto.randomUUID()}`, payload: { id: "evt" } },
                                 { status: "succeeded", payment_reference: wh.paymentId });
    assert.equal(w.webhook_status, "failed", `runbook world: webhook ${w.webhook_id} for payment ${wh.paymentId} should have failed on the injected fault`);
    return w.webhook_id as string;
  });

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
  const oversold = (await sql`select * from reserve.overbooking_check where unit_id = ${ob.unitId}`).length;
  assert.equal(oversold, 2, `runbook world: overbooking_check should list 2 oversold nights of unit ${ob.unitId}`);

  // P2 refund stuck: a refund request the provider refused (claimed before
  // the money mismatch below queues its refund, which stays requested for look_up_refund)
  const refundUnit = await f.unit(sql, { nights: 10 });
  const refunded = await paidReservation(sql, refundUnit.unitId);
  const [rr] = await sql`select * from reserve.request_refund(${refunded.paymentId}, 5000, 'operator_refund', ${`runbook:${refunded.paymentId}`})`;
  await sql`select * from reserve.claim_refund_requests(1000)`;
  const [failedRefund] = await sql`select * from reserve.record_refund_result(${rr.id}, 'failed', null, 'insufficient balance')`;
  assert.equal(failedRefund.status, "failed", `runbook world: refund request ${rr.id} should be failed after the provider's refusal`);

  // P1 provider money differs: Stripe says 1.00 BRL arrived for a 1000.00 BRL stay (booked as owed back,
  // refund queued, a discrepancy open)
  const mm = await checkout(sql, (await f.unit(sql, { nights: 10 })).unitId, "card", "stripe", `pi_mm_${crypto.randomUUID().slice(0, 8)}`);
  const mismatch = await applyStatus(sql, mm.paymentId, "succeeded", { amount_received: 100, currency: "BRL" });
  assert.equal(mismatch.finalize_outcome, "amount_mismatch", `runbook world: payment ${mm.paymentId} paid 1.00 of 1000.00 should finalize as amount_mismatch`);
  const disc = one(await sql`select id from reserve.money_discrepancies where payment_id = ${mm.paymentId}`, `money discrepancy of payment ${mm.paymentId}`);
  const mmRefund = one(await sql`select id from reserve.refund_requests where payment_id = ${mm.paymentId}`, `refund request of payment ${mm.paymentId}`);

  // an ops block on a unit of its own, for unblock_unit_dates
  const blocked = await f.unit(sql, { nights: 10 });
  const [blk] = await ops.as("proposer", (tx) =>
    tx`select * from reserve.block_unit_dates(${blocked.unitId}, current_date, current_date + 5, 'test world')`);

  // P2 reconciliation differences: a paid Stripe payment that names none of ours, left open
  const unknownGatewayId = `pi_unknown_${crypto.randomUUID().slice(0, 8)}`;
  const [recon] = await sql`select * from reserve.begin_reconciliation_run('stripe', now() - interval '1 hour', now() + interval '1 hour')`;
  await sql`select * from reserve.reconcile_provider_objects(${recon.id}, ${sql.json([{ status: "succeeded",
    gateway_payment_id: unknownGatewayId, amount: 5000, currency: "BRL", amount_received: 5000 }] as never)})`;
  await sql`select * from reserve.finish_reconciliation_run(${recon.id})`;
  const reconItem = one(await sql`select id from reserve.open_reconciliation_items where kind = 'paid_unknown' and object_id = ${unknownGatewayId}`,
                        `open paid_unknown reconciliation item for ${unknownGatewayId}`);

  const ids: WorldIds = {
    reconciliationItem: reconItem.id as string,
    block: blk.block_id as string,
    stuckPayment: stuck.paymentId, paidPayment: pp.id as string, paidIntent: bi.id as string, pixPayment: pix.paymentId,
    pixGatewayId, duplicatePayment: dup.id as string, webhook: webhookId, imbalancedTx, correction: correction.id as string,
    overbookedUnit: ob.unitId, alternativeUnit: alt.unitId, reservationToMove: toMove.id as string,
    reservationToCancel: toCancel.reservationId, cityCode: ob.cityCode,
    refundPayment: refunded.paymentId, refundRequest: rr.id as string,
    discrepancy: disc.id as string, mismatchRefund: mmRefund.id as string,
  };
  const values: Record<string, string> = {
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
    "<left_to_refund>": String(bi.amount),
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
  return { ids, values };
}

/** The block's text with every placeholder replaced by its value; throws naming those without one. */
export function fill(text: string, values: Record<string, string>): string {
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
export const PRELUDES: { match: RegExp; why: string; run(tx: postgres.TransactionSql, ids: WorldIds): Promise<unknown> }[] = [
  {
    match: /rebuild_unit_availability\(/,
    why: "Step 4 follows Step 3: the oversold night is resolved (a reservation moved) before the recount",
    run: (tx, ids) => tx`select reserve.move_reservation(${ids.reservationToMove}, ${ids.alternativeUnit}, 'runbook test: Step 3')`,
  },
];

// ---------------------------------------------------------------------------------------------------
// Running one block

export interface RunContext {
  /** the database's owner */
  sql: Sql;
  /** an "approver" role (not the world's proposer) runs the 4-eyes steps and the repairs */
  ops: OperatorRoles;
  world: World;
  /** runs one statement of the block (n: 1-based among the block's statements run); default q.unsafe(statement) */
  exec?: (q: Q, statement: string, n: number) => Promise<unknown>;
  /** checks what the block did, in its transaction before the rollback */
  after?: (b: Block, tx: postgres.TransactionSql) => Promise<void>;
}

/** The statements of the block as the runner runs them, placeholders filled and transaction control left out. */
export function runnableStatements(b: Block, values: Record<string, string>): string[] {
  return statements(fill(b.text, values)).filter((s) => !TX_CONTROL.test(s));
}

/** Runs a block (see the top of this file); throws naming the block, the SQLSTATE and the SQL as run. */
export async function runBlock(b: Block, ctx: RunContext): Promise<void> {
  const exec = ctx.exec ?? ((q: Q, s: string) => q.unsafe(s));
  const text = fill(b.text, ctx.world.values);
  const stmts = runnableStatements(b, ctx.world.values);
  try {
    if (OUTSIDE_TRANSACTION.test(text)) {
      for (const [i, s] of stmts.entries()) await exec(ctx.sql, s, i + 1);
      return;
    }
    const rollback = new Error("rollback");
    const correction = callsCorrection(b.text);
    const repair = !correction && callsOperatorFunction(b.text);
    await (correction ? ctx.ops.sql("approver") : ctx.sql).begin(async (tx) => {
      if (repair) await tx.unsafe(`set local session authorization "${ctx.ops.name("approver")}"`);
      for (const p of PRELUDES.filter((x) => x.match.test(b.text))) await p.run(tx, ctx.world.ids);
      for (const [i, s] of stmts.entries()) await exec(tx, s, i + 1);
      // the checks read what the role may not
      if (repair) await tx`reset session authorization`;
      if (ctx.after) await ctx.after(b, tx);
      throw rollback;
    }).catch((err) => {
      if (err !== rollback) throw err;
    });
  } catch (err) {
    const e = err as { code?: string; message?: string };
    throw Object.assign(new Error(`${label(b)} failed${e.code ? ` (${e.code})` : ""}: ${e.message}\n--- as run:\n${text}`), { code: e.code, cause: err });
  }
}
