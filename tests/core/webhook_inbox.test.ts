// Webhook deliveries in one round trip: process_webhook_event records the event (dedupe on provider +
// event_id) and applies it through the payment state machine in the same transaction. A duplicate
// changes nothing; a failure inside the apply is kept as failed (the apply undone) and processed again
// on redelivery; concurrent deliveries of one event make one reservation and one receipt.
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, sqlState, type Sql, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";
import { attachGateway, processEvent, refusingReservations, type UpdateFields } from "../helpers/money.ts";

type Q = postgres.Sql | postgres.TransactionSql;
type Row = Record<string, unknown>;

let db: TestDatabase;
let sql: Sql;
beforeAll(async () => {
  db = await createTestDatabase();
  sql = db.sql;
});
afterAll(async () => await db?.drop());

const checkout = f.checkoutAttempt;

interface Delivery {
  provider?: string;
  eventId?: string;
  eventType?: string;
  at?: Date | null;
  payload?: Row | null;
  paymentId?: string | null;
  gatewayId?: string | null;
  status?: string | null;
  processingError?: string | null;
  /** more of the provider's update (amounts, dispute, gateway status) */
  update?: UpdateFields;
}

async function deliver(q: Q, d: Delivery): Promise<Row> {
  const status = d.status === undefined ? "succeeded" : d.status;
  return processEvent(q, {
    provider: d.provider ?? "stripe", event_id: d.eventId ?? `evt_${crypto.randomUUID()}`,
    event_type: d.eventType ?? "payment_intent.succeeded", event_at: d.at ?? null,
    payload: d.payload === undefined ? { id: "evt" } : d.payload, processing_error: d.processingError ?? null,
  }, status === null ? null : {
    status, payment_reference: d.paymentId ?? null, gateway_payment_id: d.gatewayId ?? null, event_at: d.at ?? null, ...d.update,
  });
}

async function inbox(q: Q, provider: string, eventId: string): Promise<Row> {
  const [w] = await q`select * from reserve.processed_webhooks where provider = ${provider} and event_id = ${eventId}`;
  return w;
}

async function paymentRow(q: Q, id: string): Promise<Row> {
  const [p] = await q`select * from reserve.payments where id = ${id}`;
  return p;
}

/** Counts of everything a delivery could write for a payment and its intent. */
async function effects(q: Q, paymentId: string, intentId: string) {
  const [r] = await q`
    select (select count(*)::int from reserve.reservations where booking_intent_id = ${intentId}) as reservations,
           (select count(*)::int from reserve.ledger_transactions where payment_id = ${paymentId}) as ledger,
           (select count(*)::int from reserve.audit_logs) as audits,
           (select count(*)::int from reserve.processed_webhooks) as webhooks`;
  return r;
}

describe("process_webhook_event: first delivery and duplicates", () => {
  it("completes a success on first delivery: applied, finalized, reservation and receipt written", async () => {
    const c = await checkout(sql, { gatewayId: "pi_first" });
    const eventId = `evt_${crypto.randomUUID()}`;
    const at = new Date(Date.now() - 1000);
    const r = await deliver(sql, { eventId, gatewayId: "pi_first", at, payload: { id: eventId, type: "payment_intent.succeeded" } });
    expect(r).toMatchObject({
      webhook_status: "completed", duplicate: false, attempts: 1, payment_id: c.paymentId, outcome: "applied",
      payment_status: "succeeded", finalize_outcome: "created", error_message: null,
    });
    expect(r.reservation_id).not.toBeNull();
    expect(r.confirmation_code).toMatch(/^RES-\d{4}-[0-9A-Z]{6}$/);

    const w = await inbox(sql, "stripe", eventId);
    expect(w).toMatchObject({
      id: r.webhook_id, status: "completed", attempts: 1, payment_id: c.paymentId, gateway_payment_id: "pi_first",
      event_type: "payment_intent.succeeded", payload: { id: eventId, type: "payment_intent.succeeded" },
    });
    expect(w.processed_at).not.toBeNull();
    expect((w.event_created_at as Date).getTime()).toBe(at.getTime());

    const p = await paymentRow(sql, c.paymentId);
    expect(p).toMatchObject({ status: "succeeded" });
    expect((p.last_event_at as Date).getTime()).toBe(at.getTime());
    const [res] = await sql`select * from reserve.reservations where booking_intent_id = ${c.intentId}`;
    expect(res).toMatchObject({ id: r.reservation_id, confirmation_code: r.confirmation_code, status: "host_commit_pending" });
    const ledger = await sql`select idempotency_key from reserve.ledger_transactions where payment_id = ${c.paymentId}`;
    expect(ledger.map((l) => l.idempotency_key)).toEqual([`receipt:${c.paymentId}`]);
  });

  it("writes a new event's row once, with its outcome: a success completed, a failure failed with its retry time", async () => {
    // what one delivery wrote to processed_webhooks (its partitions), counted inside its own transaction
    // (before and after: the backend's counts not yet reported from earlier transactions show here too)
    const counts = async (q: Q) => {
      const [n] = await q`
        select coalesce(sum(n_tup_ins), 0)::int as inserted, coalesce(sum(n_tup_upd), 0)::int as updated
        from pg_stat_xact_user_tables where relid in (select relid from pg_partition_tree('reserve.processed_webhooks'))`;
      return n as { inserted: number; updated: number };
    };
    const delivered = async (q: Q, d: Delivery) => {
      const before = await counts(q);
      const r = await deliver(q, d);
      const after = await counts(q);
      return { r, n: { inserted: after.inserted - before.inserted, updated: after.updated - before.updated } };
    };
    const c = await checkout(sql, { gatewayId: `pi_${crypto.randomUUID()}` });
    const eventId = `evt_${crypto.randomUUID()}`;
    const ok = await sql.begin((tx) => delivered(tx, { eventId, paymentId: c.paymentId }));
    expect(ok.r).toMatchObject({ webhook_status: "completed", finalize_outcome: "created", attempts: 1 });
    expect(ok.n).toEqual({ inserted: 1, updated: 0 });
    const w = await inbox(sql, "stripe", eventId);
    expect(w).toMatchObject({ id: ok.r.webhook_id, status: "completed", attempts: 1, error_message: null, next_retry_at: null });
    expect(w.processed_at).not.toBeNull();
    expect(w.apply_args).toMatchObject({ status: "succeeded", payment_id: c.paymentId });
    const [k] = await sql`select webhook_id, received_at from reserve.processed_webhook_keys
                          where provider = 'stripe' and event_id = ${eventId}`;
    expect(k).toEqual({ webhook_id: w.id, received_at: w.received_at });

    const c2 = await checkout(sql, { gatewayId: `pi_${crypto.randomUUID()}` });
    const failingId = `evt_${crypto.randomUUID()}`;
    const bad = await refusingReservations(sql, () => sql.begin((tx) => delivered(tx, { eventId: failingId, paymentId: c2.paymentId })));
    expect(bad.r).toMatchObject({ webhook_status: "failed", outcome: "failed", attempts: 1, payment_status: "pending" });
    expect(bad.n).toEqual({ inserted: 1, updated: 0 });
    const f2 = await inbox(sql, "stripe", failingId);
    expect(f2).toMatchObject({ status: "failed", attempts: 1, payment_id: c2.paymentId });
    expect(f2.error_message).toEqual(expect.stringContaining("ZZ001: injected failure"));
    expect(f2.next_retry_at).not.toBeNull();
    expect(f2.apply_args).toMatchObject({ status: "succeeded", payment_id: c2.paymentId });
    const [{ retry_ok }] = await sql`select next_retry_at = processed_at + interval '1 minute' as retry_ok
                                     from reserve.processed_webhooks where id = ${f2.id as string}`;
    expect(retry_ok).toBe(true);

    // its redelivery takes the row up (processing) and settles it: two updates of the one row, no insert
    const again = await sql.begin((tx) => delivered(tx, { eventId: failingId, paymentId: c2.paymentId }));
    expect(again.r).toMatchObject({ webhook_id: bad.r.webhook_id, webhook_status: "completed", attempts: 2,
                                    finalize_outcome: "created" });
    expect(again.n).toEqual({ inserted: 0, updated: 2 });

    // an event we do not act on and one naming a second provider payment for ours are written once too,
    // ignored and dead
    const ignored = await sql.begin((tx) => delivered(tx, { eventType: "customer.created", status: null }));
    expect(ignored.r).toMatchObject({ webhook_status: "ignored", attempts: 1 });
    expect(ignored.n).toEqual({ inserted: 1, updated: 0 });
    const poisonId = `evt_${crypto.randomUUID()}`;
    const dead = await sql.begin((tx) => delivered(tx, { eventId: poisonId, paymentId: c2.paymentId,
                                                         gatewayId: `pi_${crypto.randomUUID()}` }));
    expect(dead.r).toMatchObject({ webhook_status: "dead", attempts: 1 });
    expect(dead.n).toEqual({ inserted: 1, updated: 0 });
    expect(await inbox(sql, "stripe", poisonId)).toMatchObject({ status: "dead", next_retry_at: null });
  });

  it("answers a second delivery duplicate = true and writes nothing else", async () => {
    const c = await checkout(sql, { gatewayId: "pi_dup" });
    const eventId = `evt_${crypto.randomUUID()}`;
    const first = await deliver(sql, { eventId, gatewayId: "pi_dup" });
    expect(first.duplicate).toBe(false);
    const before = await effects(sql, c.paymentId, c.intentId);
    const inboxBefore = await inbox(sql, "stripe", eventId);
    const paymentBefore = await paymentRow(sql, c.paymentId);

    const again = await deliver(sql, { eventId, gatewayId: "pi_dup", payload: { changed: true } });
    expect(again).toMatchObject({
      webhook_id: first.webhook_id, webhook_status: "completed", duplicate: true, attempts: 1,
      payment_id: c.paymentId, outcome: "duplicate", payment_status: "succeeded", reservation_id: null,
    });
    expect(await effects(sql, c.paymentId, c.intentId)).toEqual(before);
    expect(await inbox(sql, "stripe", eventId)).toEqual(inboxBefore);
    expect(await paymentRow(sql, c.paymentId)).toEqual(paymentBefore);
  });

  it("records an event it does not act on (no update) as ignored, and its redelivery as a duplicate", async () => {
    const c = await checkout(sql, { gatewayId: "pi_ignored" });
    const eventId = `evt_${crypto.randomUUID()}`;
    const r = await deliver(sql, { eventId, eventType: "charge.updated", gatewayId: "pi_ignored", status: null });
    // an event that says nothing about a payment is not tied to one
    expect(r).toMatchObject({ webhook_status: "ignored", duplicate: false, outcome: "ignored", payment_id: null,
                              payment_status: null, reservation_id: null });
    expect(r.error_message).not.toBeNull();
    expect((await paymentRow(sql, c.paymentId)).status).toBe("pending");
    expect((await deliver(sql, { eventId, eventType: "charge.updated", status: null })).duplicate).toBe(true);
  });

  it("ignores an event for a payment we never made, with a message", async () => {
    const eventId = `evt_${crypto.randomUUID()}`;
    const r = await deliver(sql, { eventId, gatewayId: "pi_not_ours" });
    expect(r).toMatchObject({ webhook_status: "ignored", duplicate: false, outcome: "ignored", payment_id: null,
                              payment_status: null, reservation_id: null });
    expect(r.error_message).toEqual(expect.any(String));
    const byOurId = await deliver(sql, { paymentId: crypto.randomUUID() });
    expect(byOurId).toMatchObject({ webhook_status: "ignored", payment_id: null });
    expect(byOurId.error_message).toEqual(expect.any(String));
    const w = await inbox(sql, "stripe", eventId);
    expect(w).toMatchObject({ status: "ignored", gateway_payment_id: "pi_not_ours", payment_id: null });
    expect(w.error_message).toBe(r.error_message);
  });

  it("ignores an event whose provider is not the payment's", async () => {
    const c = await checkout(sql, { provider: "mercadopago", method: "pix", gatewayId: "mp_mismatch" });
    const r = await deliver(sql, { provider: "openpix", paymentId: c.paymentId });
    expect(r).toMatchObject({ webhook_status: "ignored", duplicate: false, outcome: "ignored", payment_status: "pending" });
    expect(r.error_message).not.toBeNull();
    // the gateway id of another provider does not find it either
    const byGateway = await deliver(sql, { provider: "stripe", gatewayId: "mp_mismatch" });
    expect(byGateway).toMatchObject({ webhook_status: "ignored", payment_id: null });
    expect((await paymentRow(sql, c.paymentId)).status).toBe("pending");
    const [{ n }] = await sql`select count(*)::int as n from reserve.reservations where booking_intent_id = ${c.intentId}`;
    expect(n).toBe(0);
  });

  it("refuses an unknown provider (RC206) and a missing event id or type (RC001), recording nothing", async () => {
    const [{ n: before }] = await sql`select count(*)::int as n from reserve.processed_webhooks`;
    expect(await sqlState(deliver(sql, { provider: "paypal" }))).toBe("RC206");
    expect(await sqlState(deliver(sql, { eventId: "" }))).toBe("RC001");
    expect(await sqlState(deliver(sql, { eventType: "" }))).toBe("RC001");
    const [{ n: after }] = await sql`select count(*)::int as n from reserve.processed_webhooks`;
    expect(after).toBe(before);
  });
});

describe("handled_webhook_event: a redelivery answered from its key", () => {
  const handled = async (provider: string, eventId: string) =>
    sql`select * from reserve.handled_webhook_event(${provider}, ${eventId})`;

  it("answers a completed or ignored event as process_webhook_event answers its duplicate, with no xid or lock", async () => {
    const c = await checkout(sql, { gatewayId: `pi_${crypto.randomUUID()}` });
    const eventId = `evt_${crypto.randomUUID()}`;
    expect(await handled("stripe", eventId)).toEqual([]);
    await deliver(sql, { eventId, gatewayId: c.payment.gateway_payment_id as string });
    const viaRecord = await deliver(sql, { eventId, gatewayId: c.payment.gateway_payment_id as string });
    const facts = await sql.begin(async (tx) => {
      const rows = await tx`select * from reserve.handled_webhook_event('stripe', ${eventId})`;
      const [x] = await tx`select pg_current_xact_id_if_assigned()::text as xid,
                                  (select count(*)::int from pg_locks where pid = pg_backend_pid() and locktype in ('tuple', 'transactionid')) as locks`;
      return { rows, ...x };
    });
    expect(facts.rows).toEqual([viaRecord]);
    expect(facts.rows[0]).toMatchObject({ webhook_status: "completed", duplicate: true, outcome: "duplicate", payment_status: "succeeded" });
    expect(facts).toMatchObject({ xid: null, locks: 0 });

    const ignoredId = `evt_${crypto.randomUUID()}`;
    await deliver(sql, { eventId: ignoredId, eventType: "charge.updated", status: null });
    expect(await handled("stripe", ignoredId)).toMatchObject([{ webhook_status: "ignored", duplicate: true, outcome: "duplicate" }]);
    // the same id at another provider is another event
    expect(await handled("mercadopago", eventId)).toEqual([]);
  });

  it("has no answer for a failed or dead event, which is processed again", async () => {
    const c = await checkout(sql, { provider: "openpix", method: "pix", gatewayId: `op_${crypto.randomUUID()}` });
    const eventId = `evt_${crypto.randomUUID()}`;
    await deliver(sql, { provider: "openpix", eventId, eventType: "OPENPIX:CHARGE_COMPLETED", paymentId: c.paymentId, status: null,
                         processingError: "OpenPIX API answered 502" });
    expect(await handled("openpix", eventId)).toEqual([]);
    await deliver(sql, { provider: "openpix", eventId, eventType: "OPENPIX:CHARGE_COMPLETED", paymentId: c.paymentId, status: "succeeded" });
    expect(await handled("openpix", eventId)).toMatchObject([{ webhook_status: "completed", duplicate: true, attempts: 2 }]);

    const card = await checkout(sql);
    const deadId = `evt_${crypto.randomUUID()}`;
    const dead = await deliver(sql, { eventId: deadId, paymentId: card.paymentId, gatewayId: "pi_someone_else" });
    expect(dead.webhook_status).toBe("dead");
    expect(await handled("stripe", deadId)).toEqual([]);
    const redelivered = await deliver(sql, { eventId: deadId, paymentId: card.paymentId, gatewayId: "pi_someone_else" });
    expect(redelivered).toMatchObject({ webhook_id: dead.webhook_id, webhook_status: "dead", duplicate: false, attempts: 2 });
  });

  it("reads no partition of processed_webhooks for a new event, and the one its key names for a known one", async () => {
    const eventId = `evt_${crypto.randomUUID()}`;
    // what the call locked in its own transaction: a relation is locked when a statement opens it
    const touched = async () => sql.begin(async (tx) => {
      const rows = await tx`select * from reserve.handled_webhook_event('stripe', ${eventId})`;
      const [x] = await tx<{ tables: number; indexes: number }[]>`
        select count(*) filter (where c.oid in (select relid from pg_partition_tree('reserve.processed_webhooks')))::int as tables,
               count(*) filter (where i.indrelid in (select relid from pg_partition_tree('reserve.processed_webhooks')))::int as indexes
        from pg_locks l join pg_class c on c.oid = l.relation left join pg_index i on i.indexrelid = c.oid
        where l.pid = pg_backend_pid() and l.locktype = 'relation'`;
      return { rows, ...x };
    });
    // more calls than PL/pgSQL's five custom plans, so that the cached plan is what is measured
    for (let i = 0; i < 7; i++) expect(await touched()).toEqual({ rows: [], tables: 0, indexes: 0 });

    const first = await deliver(sql, { eventId, eventType: "charge.updated", status: null });
    for (let i = 0; i < 7; i++) {
      const known = await touched();
      expect(known.rows).toMatchObject([{ webhook_id: first.webhook_id, webhook_status: "ignored", duplicate: true }]);
      // one month's index read, not one per month (PostgreSQL 17 still locks each month's table)
      expect(known.indexes).toBe(1);
    }
  });

  it("finds an event by an id over 255 characters, bounded as it was stored", async () => {
    const eventId = `evt_${"x".repeat(600)}_${crypto.randomUUID()}`;
    const first = await deliver(sql, { eventId, eventType: "charge.updated", status: null });
    expect(await handled("stripe", eventId)).toMatchObject([{ webhook_id: first.webhook_id, duplicate: true }]);
  });

  it("answers a key whose row is past retention as completed, and nothing for a missing provider or id", async () => {
    const eventId = `evt_${crypto.randomUUID()}`;
    const first = await deliver(sql, { eventId, eventType: "charge.updated", status: null });
    await sql.begin(async (tx) => {
      await tx`set local session_replication_role = replica`;
      await tx`delete from reserve.processed_webhooks where id = ${first.webhook_id as string}`;
    });
    expect(await handled("stripe", eventId)).toMatchObject([{ webhook_id: first.webhook_id, webhook_status: "completed", duplicate: true,
                                                              error_message: "the record of this event is past retention" }]);
    expect(await sql`select * from reserve.handled_webhook_event(null, 'x')`).toEqual([]);
    expect(await sql`select * from reserve.handled_webhook_event('stripe', '')`).toEqual([]);
  });
});

describe("process_webhook_event: the payment found by our id", () => {
  it("attaches the provider's id when the webhook overtakes the checkout", async () => {
    const c = await checkout(sql, { gatewayId: null });
    expect(c.payment.gateway_payment_id).toBeNull();
    const gatewayId = `pi_${crypto.randomUUID()}`;
    const r = await deliver(sql, { paymentId: c.paymentId, gatewayId, status: "processing", eventType: "payment_intent.processing" });
    expect(r).toMatchObject({ webhook_status: "completed", outcome: "applied", payment_status: "processing", payment_id: c.paymentId });
    expect(await paymentRow(sql, c.paymentId)).toMatchObject({ gateway_payment_id: gatewayId, status: "processing" });
    // the checkout's own (late) attach of the same id is still accepted
    await attachGateway(sql, c.paymentId, gatewayId);
    // and later events find it by the provider's id alone
    const later = await deliver(sql, { gatewayId });
    expect(later).toMatchObject({ webhook_status: "completed", payment_id: c.paymentId, payment_status: "succeeded" });
  });
});

describe("process_webhook_event: failures", () => {
  it("keeps a failure inside the apply as failed, undoes the apply, and processes a redelivery again", async () => {
    const c = await checkout(sql, { gatewayId: `pi_${crypto.randomUUID()}` });
    const eventId = `evt_${crypto.randomUUID()}`;
    const before = await paymentRow(sql, c.paymentId);
    const failed = await refusingReservations(sql, () => deliver(sql, { eventId, paymentId: c.paymentId, status: "succeeded" }));
    expect(failed).toMatchObject({ webhook_status: "failed", duplicate: false, attempts: 1, outcome: "failed", reservation_id: null });
    expect(failed.error_message).toEqual(expect.stringContaining("ZZ001"));
    expect(await inbox(sql, "stripe", eventId)).toMatchObject({ status: "failed", attempts: 1, payment_id: c.paymentId });
    // the subtransaction is undone: the payment did not move, no reservation, no receipt, nights still held
    expect(await paymentRow(sql, c.paymentId)).toEqual(before);
    expect(await effects(sql, c.paymentId, c.intentId)).toMatchObject({ reservations: 0, ledger: 0 });
    const [bi] = await sql`select status from reserve.booking_intents where id = ${c.intentId}`;
    expect(bi.status).toBe("pending");

    const retried = await deliver(sql, { eventId, paymentId: c.paymentId, status: "succeeded" });
    expect(retried).toMatchObject({
      webhook_id: failed.webhook_id, webhook_status: "completed", duplicate: false, attempts: 2, outcome: "applied",
      payment_status: "succeeded", finalize_outcome: "created", error_message: null,
    });
    expect(await inbox(sql, "stripe", eventId)).toMatchObject({ status: "completed", attempts: 2, error_message: null });
    expect(await effects(sql, c.paymentId, c.intentId)).toMatchObject({ reservations: 1, ledger: 1 });
  });

  it("records a processing_error as failed without touching the payment, and takes the event up again", async () => {
    const c = await checkout(sql, { provider: "openpix", method: "pix", gatewayId: `op_${crypto.randomUUID()}` });
    const eventId = `evt_${crypto.randomUUID()}`;
    const before = await paymentRow(sql, c.paymentId);
    const r = await deliver(sql, { provider: "openpix", eventId, eventType: "OPENPIX:CHARGE_COMPLETED",
                                   paymentId: c.paymentId, status: null, processingError: "OpenPIX API answered 502" });
    expect(r).toMatchObject({ webhook_status: "failed", duplicate: false, attempts: 1, outcome: "failed", payment_status: null });
    expect(r.error_message).toEqual(expect.any(String));
    expect(await paymentRow(sql, c.paymentId)).toEqual(before);

    const again = await deliver(sql, { provider: "openpix", eventId, eventType: "OPENPIX:CHARGE_COMPLETED",
                                       paymentId: c.paymentId, status: "succeeded" });
    expect(again).toMatchObject({ webhook_status: "completed", duplicate: false, attempts: 2, payment_status: "succeeded" });
    expect(again.reservation_id).not.toBeNull();
  });

  it("does not let the runbook's synthetic 'processing' row block a real delivery of the same event", async () => {
    const c = await checkout(sql, { provider: "mercadopago", method: "pix", gatewayId: `mp_${crypto.randomUUID()}` });
    // INCIDENT_RESPONSE_RUNBOOK.md, "P2: PIX PAID BUT NOT CONFIRMED", verbatim
    const [{ event_id: eventId }] = await sql`
      INSERT INTO reserve.processed_webhooks (
        provider, event_id, event_type, status
      ) VALUES (
        'mercadopago',
        'manual_' || gen_random_uuid(),
        'payment.approved',
        'processing'
      ) returning event_id`;
    const r = await deliver(sql, { provider: "mercadopago", eventId: eventId as string, eventType: "payment.approved",
                                   gatewayId: c.payment.gateway_payment_id as string, status: "succeeded" });
    expect(r).toMatchObject({ webhook_status: "completed", duplicate: false, attempts: 2, payment_id: c.paymentId,
                              outcome: "applied", payment_status: "succeeded", finalize_outcome: "created" });
    expect(await inbox(sql, "mercadopago", eventId as string)).toMatchObject({ status: "completed", payment_id: c.paymentId });
  });
});

describe("process_webhook_event: ordering and races", () => {
  it("answers an older event after a newer one as stale, leaving the status", async () => {
    const c = await checkout(sql, { gatewayId: `pi_${crypto.randomUUID()}` });
    const gatewayId = c.payment.gateway_payment_id as string;
    const t = Date.now();
    const newer = await deliver(sql, { gatewayId, status: "processing", eventType: "payment_intent.processing", at: new Date(t - 1000) });
    expect(newer).toMatchObject({ outcome: "applied", payment_status: "processing" });
    const older = await deliver(sql, { gatewayId, status: "failed", eventType: "payment_intent.payment_failed", at: new Date(t - 60_000) });
    expect(older).toMatchObject({ webhook_status: "completed", duplicate: false, outcome: "stale", payment_status: "processing" });
    expect(older.error_message).not.toBeNull();
    const p = await paymentRow(sql, c.paymentId);
    expect(p).toMatchObject({ status: "processing", failed_at: null });
    expect((p.last_event_at as Date).getTime()).toBe(t - 1000);
  });

  it.each([
    ["charge.refunded", "refunded", (amount: number) => ({ refunded_amount: amount }), "refunded"],
    ["charge.refunded", "partially_refunded", (amount: number) => ({ refunded_amount: Math.floor(amount / 4) }), "partially_refunded"],
    ["charge.dispute.created", "disputed", (amount: number) => ({ dispute_amount: amount }), "disputed"],
  ])("a %s (%s) that overtakes the payment's success waits for it: failed, then applied by its retry", async (eventType, status, money, after) => {
    const c = await checkout(sql, { gatewayId: `pi_${crypto.randomUUID()}` });
    const gatewayId = c.payment.gateway_payment_id as string;
    const amount = Number(c.payment.amount);
    const t = Date.now();
    const eventId = `evt_${crypto.randomUUID()}`;
    const early = await deliver(sql, { eventId, gatewayId, status, eventType, at: new Date(t), update: money(amount) });
    expect(early).toMatchObject({ webhook_status: "failed", duplicate: false, payment_status: "pending" });
    expect(early.error_message).toMatch(/waits until its success is recorded/);
    // its redelivery is not a duplicate: still failed while the payment is pending
    const again = await deliver(sql, { eventId, gatewayId, status, eventType, at: new Date(t), update: money(amount) });
    expect(again).toMatchObject({ webhook_status: "failed", duplicate: false, attempts: 2 });
    const paid = await deliver(sql, { gatewayId, at: new Date(t - 60_000) });
    expect(paid).toMatchObject({ webhook_status: "completed", finalize_outcome: "created" });
    await sql`update reserve.processed_webhooks set next_retry_at = now() - interval '1 second' where id = ${early.webhook_id as string}`;
    await sql`select * from reserve.retry_failed_webhooks()`;
    const w = await sql`select status from reserve.processed_webhooks where id = ${early.webhook_id as string}`;
    expect(w[0].status).toBe("completed");
    expect(await paymentRow(sql, c.paymentId)).toMatchObject({ status: after });
    expect(await sql`select * from reserve.find_ledger_imbalances(current_date - 1)`).toEqual([]);
  });

  it("money news about a payment that never succeeds here is dead after max_webhook_attempts (an alert), not completed", async () => {
    const c = await checkout(sql, { gatewayId: `pi_${crypto.randomUUID()}` });
    const gatewayId = c.payment.gateway_payment_id as string;
    const eventId = `evt_${crypto.randomUUID()}`;
    const [{ max }] = await sql`select reserve.setting_int('max_webhook_attempts') as max`;
    let last: Row = {};
    for (let i = 0; i < Number(max); i++) {
      last = await deliver(sql, { eventId, gatewayId, status: "refunded", eventType: "charge.refunded", update: { refunded_amount: Number(c.payment.amount) } });
    }
    expect(last).toMatchObject({ webhook_status: "dead", attempts: Number(max) });
    expect(await paymentRow(sql, c.paymentId)).toMatchObject({ status: "pending", refunded_amount: "0" });
  });

  it("20 concurrent deliveries of one event on 20 connections: one applies, one reservation, one receipt", async () => {
    const c = await checkout(sql, { gatewayId: `pi_${crypto.randomUUID()}` });
    const gatewayId = c.payment.gateway_payment_id as string;
    const eventId = `evt_${crypto.randomUUID()}`;
    const racers = postgres(db.url, { max: 20, onnotice: () => {} });
    let rows: Row[];
    try {
      await Promise.all(Array.from({ length: 20 }, () => racers.reserve().then((r) => r.release())));
      const results = await Promise.allSettled(Array.from({ length: 20 }, () => deliver(racers, { eventId, gatewayId })));
      const errors = results.filter((r) => r.status === "rejected").map((r) => (r as PromiseRejectedResult).reason);
      expect(errors).toEqual([]);
      rows = results.map((r) => (r as PromiseFulfilledResult<Row>).value);
    } finally {
      await racers.end();
    }
    expect(rows.filter((r) => r.duplicate === false)).toHaveLength(1);
    expect(rows.filter((r) => r.duplicate === true)).toHaveLength(19);
    expect(rows.find((r) => r.duplicate === false)).toMatchObject({ webhook_status: "completed", outcome: "applied", finalize_outcome: "created" });
    expect(new Set(rows.map((r) => r.webhook_id)).size).toBe(1);
    expect(await inbox(sql, "stripe", eventId)).toMatchObject({ status: "completed", attempts: 1 });
    expect(await effects(sql, c.paymentId, c.intentId)).toMatchObject({ reservations: 1, ledger: 1 });
    const [{ n }] = await sql`select count(*)::int as n from reserve.ledger_transactions where idempotency_key = ${`receipt:${c.paymentId}`}`;
    expect(n).toBe(1);
    expect(await sql`select * from reserve.overbooking_check`).toEqual([]);
    expect(await sql`select * from reserve.find_ledger_imbalances(current_date - 1)`).toEqual([]);
  });
});

describe("process_webhook_event: found in review", () => {
  it("a webhook and the checkout's attach of the same payment do not deadlock (the payment is locked first)", async () => {
    const { paymentId } = await checkout(sql, { gatewayId: null });
    // widens the window between recording the event and applying it, where the deadlock was
    await sql.unsafe(`
      create function public.slow_inbox() returns trigger language plpgsql as $$ begin perform pg_sleep(0.3); return null; end $$;
      create trigger _000_slow after insert on reserve.processed_webhooks for each row execute function public.slow_inbox();`);
    const a = postgres(db.url, { max: 1, onnotice: () => {} });
    const b = postgres(db.url, { max: 1, onnotice: () => {} });
    try {
      const webhook = deliver(a, { paymentId, gatewayId: "pi_race", status: "processing", eventType: "payment_intent.processing" });
      await new Promise((r) => setTimeout(r, 100));
      const attach = attachGateway(b, paymentId, "pi_race").then((r) => [r]);
      const [w, at] = await Promise.all([webhook, attach]);
      expect(w.webhook_status).toBe("completed");
      expect(at[0].gateway_payment_id).toBe("pi_race");
    } finally {
      await a.end();
      await b.end();
      await sql.unsafe(`drop trigger _000_slow on reserve.processed_webhooks; drop function public.slow_inbox();`);
    }
  });

  it("an event naming our payment but another provider payment is dead at once and changes nothing", async () => {
    const { paymentId, payment } = await checkout(sql);
    const r = await deliver(sql, { paymentId, gatewayId: "pi_someone_else" });
    expect(r.webhook_status).toBe("dead");
    const [p] = await sql`select status from reserve.payments where id = ${paymentId}`;
    expect(p.status).toBe("pending");
    expect(payment.gateway_payment_id).not.toBe("pi_someone_else");
  });

  it("an event that would attach to our payment a provider id another of ours holds is dead at once (RC405 never changes)", async () => {
    const a = await checkout(sql);
    const b = await checkout(sql, { gatewayId: null });
    const r = await deliver(sql, { paymentId: b.paymentId, gatewayId: a.payment.gateway_payment_id as string, status: "processing",
                                   eventType: "payment_intent.processing" });
    expect(r).toMatchObject({ webhook_status: "dead", error_message: expect.stringContaining("RC405") });
    expect(await paymentRow(sql, b.paymentId)).toMatchObject({ gateway_payment_id: null, status: "pending" });
    expect(await paymentRow(sql, a.paymentId)).toMatchObject({ status: "pending" });
  });

  it("a lost partial dispute takes the disputed amount, not the whole payment", async () => {
    const { paymentId, payment } = await checkout(sql);
    const gw = payment.gateway_payment_id as string;
    await deliver(sql, { paymentId, gatewayId: gw, status: "succeeded" });
    await deliver(sql, { paymentId, gatewayId: gw, status: "disputed", eventType: "charge.dispute.created" });
    const r = await deliver(sql, { paymentId, gatewayId: gw, status: "refunded", eventType: "charge.dispute.closed",
                                   update: { gateway_status: "dispute_lost", dispute_amount: 3000 } });
    expect(r.webhook_status).toBe("completed");
    const [p] = await sql`select status, refunded_amount, amount from reserve.payments where id = ${paymentId}`;
    expect(p).toMatchObject({ status: "partially_refunded", refunded_amount: "3000" });
    const [{ n }] = await sql`select count(*)::int as n from reserve.find_ledger_imbalances(current_date - 1)`;
    expect(n).toBe(0);
  });
  it("a first delivery applies the update its row stores, as a replay would: a lost dispute named by refunded_amount alone is a chargeback on top of an earlier refund", async () => {
    const { paymentId, payment } = await checkout(sql);
    const gw = payment.gateway_payment_id as string;
    await deliver(sql, { paymentId, gatewayId: gw, status: "succeeded" });
    await deliver(sql, { paymentId, gatewayId: gw, status: "partially_refunded", eventType: "charge.refunded",
                         update: { refunded_amount: 2000 } });
    await deliver(sql, { paymentId, gatewayId: gw, status: "disputed", eventType: "charge.dispute.created" });
    const r = await deliver(sql, { paymentId, gatewayId: gw, status: "refunded", eventType: "charge.dispute.closed",
                                   update: { gateway_status: "dispute_lost", refunded_amount: 3000 } });
    expect(r.webhook_status).toBe("completed");
    // webhook_update_of reads refunded_amount as the disputed amount: 2000 refunded + 3000 charged back
    const [p] = await sql`select status, refunded_amount from reserve.payments where id = ${paymentId}`;
    expect(p).toMatchObject({ status: "partially_refunded", refunded_amount: "5000" });
  });
});
