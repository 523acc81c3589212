// The replayable webhook inbox: a failed event keeps what applying it needs (apply_args), is
// retried with backoff by retry_failed_webhooks, is dead after max_webhook_attempts, and replay_webhook
// re-applies it through the same path. Events failed before their status was known are refetched.
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, sqlState, type Sql, type TestDatabase } from "../helpers/db.ts";
import { processEvent, refusingReservations } from "../helpers/money.ts";
import { asOperator, operatorName } from "../helpers/runbook.ts";
import { backendPid, checkout, deliver, waitUntilLockWait, type Q, type Row } from "./ops_helpers.ts";

let db: TestDatabase;
let sql: Sql;
beforeAll(async () => {
  db = await createTestDatabase();
  sql = db.sql;
});
afterAll(async () => await db?.drop());

async function inbox(q: Q, id: string): Promise<Row> {
  const [w] = await q`select * from reserve.processed_webhooks where id = ${id}`;
  return w;
}

/** Makes a failed event due for retry now. */
async function due(id: string): Promise<void> {
  await sql`update reserve.processed_webhooks set next_retry_at = now() - interval '1 second' where id = ${id}`;
}

async function retryOne(id: string): Promise<Row | undefined> {
  const rows = await sql`select * from reserve.retry_failed_webhooks(100)`;
  return rows.find((r) => r.webhook_id === id);
}

async function effects(paymentId: string, intentId: string) {
  const [r] = await sql`
    select (select count(*)::int from reserve.reservations where booking_intent_id = ${intentId}) as reservations,
           (select count(*)::int from reserve.ledger_transactions where payment_id = ${paymentId}) as ledger,
           (select status from reserve.payments where id = ${paymentId}) as payment_status`;
  return r;
}

/** A success whose apply fails (injected trigger): a failed event that carries its apply_args. */
async function failedEvent() {
  const c = await checkout(sql);
  const r = await refusingReservations(sql, () => deliver(sql, { paymentId: c.paymentId }));
  expect(r).toMatchObject({ webhook_status: "failed", attempts: 1, outcome: "failed" });
  return { ...c, webhookId: r.webhook_id as string };
}

describe("retry_failed_webhooks", () => {
  it("gives a failed event next_retry_at with backoff, retries it while it fails, completes it once the fault is gone", async () => {
    const c = await checkout(sql);
    await refusingReservations(sql, async () => {
      const first = await deliver(sql, { paymentId: c.paymentId });
      const id = first.webhook_id as string;
      let w = await inbox(sql, id);
      expect(w).toMatchObject({ status: "failed", attempts: 1 });
      expect(w.apply_args).toMatchObject({ payment_id: c.paymentId, status: "succeeded" });
      expect(w.error_message).toEqual(expect.stringContaining("ZZ001"));
      // backoff: 1 minute after the first attempt
      expect((w.next_retry_at as Date).getTime() - (w.processed_at as Date).getTime()).toBe(60_000);
      // not due yet: nothing is retried
      expect(await retryOne(id)).toBeUndefined();

      await due(id);
      const second = await retryOne(id);
      expect(second).toMatchObject({ webhook_status: "failed", attempts: 2, provider: "stripe" });
      w = await inbox(sql, id);
      expect((w.next_retry_at as Date).getTime() - (w.processed_at as Date).getTime()).toBe(120_000);
      await due(id);
      await retryOne(id);
      w = await inbox(sql, id);
      expect(w.attempts).toBe(3);
      expect((w.next_retry_at as Date).getTime() - (w.processed_at as Date).getTime()).toBe(240_000);
      expect(await effects(c.paymentId, c.intentId)).toMatchObject({ reservations: 0, ledger: 0, payment_status: "pending" });
    });
    const [w0] = await sql`select id from reserve.processed_webhooks where payment_id = ${c.paymentId}`;
    await due(w0.id as string);
    const done = await retryOne(w0.id as string);
    expect(done).toMatchObject({ webhook_status: "completed", attempts: 4, error_message: null });
    const w = await inbox(sql, w0.id as string);
    expect(w).toMatchObject({ status: "completed", next_retry_at: null });
    expect(await effects(c.paymentId, c.intentId)).toMatchObject({ reservations: 1, ledger: 1, payment_status: "succeeded" });
  });

  it("makes an event dead after max_webhook_attempts, and replay_webhook then re-applies it", async () => {
    const [max] = await sql`select reserve.setting_int('max_webhook_attempts') as n`;
    expect(max.n).toBe(5);
    const c = await checkout(sql);
    const id = await refusingReservations(sql, async () => {
      const id = (await deliver(sql, { paymentId: c.paymentId })).webhook_id as string;
      for (let attempt = 2; attempt <= 5; attempt++) {
        await due(id);
        const r = await retryOne(id);
        expect(r).toMatchObject({ attempts: attempt, webhook_status: attempt < 5 ? "failed" : "dead" });
      }
      const w = await inbox(sql, id);
      expect(w).toMatchObject({ status: "dead", attempts: 5, next_retry_at: null });
      // dead is never retried automatically
      await sql`update reserve.processed_webhooks set next_retry_at = now() - interval '1 minute' where id = ${id}`;
      expect(await retryOne(id)).toBeUndefined();
      return id;
    });
    const replayed = await sql`select * from reserve.replay_webhook(${id})`;
    expect(replayed[0]).toMatchObject({ webhook_id: id, webhook_status: "completed", duplicate: false, attempts: 6,
                                        outcome: "applied", payment_status: "succeeded", finalize_outcome: "created" });
    expect(await effects(c.paymentId, c.intentId)).toMatchObject({ reservations: 1, ledger: 1, payment_status: "succeeded" });
  });
});

describe("replay_webhook", () => {
  it("re-applies a failed event (completed), and answers a completed one as a duplicate that changes nothing", async () => {
    const e = await failedEvent();
    const [r] = await sql`select * from reserve.replay_webhook(${e.webhookId})`;
    expect(r).toMatchObject({ webhook_status: "completed", duplicate: false, attempts: 2, outcome: "applied",
                              payment_status: "succeeded" });
    expect(r.reservation_id).not.toBeNull();
    const before = await inbox(sql, e.webhookId);
    const effectsBefore = await effects(e.paymentId, e.intentId);
    const [audits] = await sql`select count(*)::int as n from reserve.audit_logs`;

    const [again] = await sql`select * from reserve.replay_webhook(${e.webhookId})`;
    expect(again).toMatchObject({ webhook_id: e.webhookId, webhook_status: "completed", duplicate: true,
                                  outcome: "duplicate", payment_status: "succeeded", reservation_id: null });
    expect(await inbox(sql, e.webhookId)).toEqual(before);
    expect(await effects(e.paymentId, e.intentId)).toEqual(effectsBefore);
    expect((await sql`select count(*)::int as n from reserve.audit_logs`)[0].n).toBe(audits.n);
  });

  it("answers RC209 for an unknown id and RC001 for null", async () => {
    expect(await sqlState(sql`select * from reserve.replay_webhook(${crypto.randomUUID()})`)).toBe("RC209");
    expect(await sqlState(sql`select * from reserve.replay_webhook(null)`)).toBe("RC001");
  });

  it("answers RC210 for an event recorded without apply_args (p_processing_error) and leaves it as it was", async () => {
    const c = await checkout(sql, { provider: "openpix", method: "pix" });
    const r = await deliver(sql, { provider: "openpix", eventType: "OPENPIX:CHARGE_COMPLETED", paymentId: c.paymentId,
                                   status: null, processingError: "OpenPIX API answered 502" });
    expect(r).toMatchObject({ webhook_status: "failed" });
    const before = await inbox(sql, r.webhook_id as string);
    expect(before.apply_args).toBeNull();
    expect(await sqlState(sql`select * from reserve.replay_webhook(${r.webhook_id as string})`)).toBe("RC210");
    expect(await inbox(sql, r.webhook_id as string)).toEqual(before);
  });
});

describe("claim_webhooks_to_refetch", () => {
  it("returns only failed events without apply_args, and leases them so a second claim skips them", async () => {
    const replayable = await failedEvent();
    const c = await checkout(sql, { provider: "mercadopago", method: "pix" });
    const eventId = `mp_${crypto.randomUUID()}`;
    const needs = await deliver(sql, { provider: "mercadopago", eventId, eventType: "payment", paymentId: c.paymentId,
                                       status: null, processingError: "MercadoPago lookup answered 500" });
    const needsId = needs.webhook_id as string;
    await due(replayable.webhookId);
    await due(needsId);

    const claimed = await sql`select * from reserve.claim_webhooks_to_refetch(1000)`;
    const ids = claimed.map((x) => x.webhook_id);
    expect(ids).toContain(needsId);
    expect(ids).not.toContain(replayable.webhookId);
    expect(claimed.find((x) => x.webhook_id === needsId)).toMatchObject({ provider: "mercadopago", event_id: eventId,
                                                                           event_type: "payment", attempts: 1 });
    const [w] = await sql`select next_retry_at > now() + interval '4 minutes' as leased, status
                          from reserve.processed_webhooks where id = ${needsId}`;
    expect(w).toEqual({ leased: true, status: "failed" });
    const again = await sql`select * from reserve.claim_webhooks_to_refetch(1000)`;
    expect(again.map((x) => x.webhook_id)).not.toContain(needsId);
    // every row claimed has no apply_args
    const [bad] = await sql`select count(*)::int as n from reserve.processed_webhooks
                            where id = any(${ids}::uuid[]) and apply_args is not null`;
    expect(bad.n).toBe(0);

    // the poller fetched the status and records it again under the same event id
    const refetched = await deliver(sql, { provider: "mercadopago", eventId, eventType: "payment", paymentId: c.paymentId,
                                           status: "succeeded" });
    expect(refetched).toMatchObject({ webhook_id: needsId, webhook_status: "completed", attempts: 2 });
  });

  it("refuses a p_limit out of range with RC001", async () => {
    expect(await sqlState(sql`select * from reserve.claim_webhooks_to_refetch(0)`)).toBe("RC001");
    expect(await sqlState(sql`select * from reserve.retry_failed_webhooks(0)`)).toBe("RC001");
  });
});

describe("concurrency", () => {
  async function twoConnections<T>(fn: (a: postgres.Sql, b: postgres.Sql) => Promise<T>): Promise<T> {
    const a = postgres(db.url, { max: 1, onnotice: () => {} });
    const b = postgres(db.url, { max: 1, onnotice: () => {} });
    try {
      return await fn(a, b);
    } finally {
      await a.end({ timeout: 5 });
      await b.end({ timeout: 5 });
    }
  }

  it("a replay holding the event and a delivery of the same event do not deadlock: one applies, the other is a duplicate", async () => {
    const e = await failedEvent();
    const [w] = await sql`select event_id from reserve.processed_webhooks where id = ${e.webhookId}`;
    await twoConnections(async (a, b) => {
      const pidB = await backendPid(b);
      let delivery: Promise<Row> | undefined;
      await a.begin(async (tx) => {
        const [r] = await tx`select * from reserve.replay_webhook(${e.webhookId})`;
        expect(r).toMatchObject({ webhook_status: "completed", duplicate: false });
        delivery = deliver(b, { eventId: w.event_id as string, paymentId: e.paymentId });
        await waitUntilLockWait(sql, pidB);
      });
      const d = await delivery!;
      expect(d).toMatchObject({ webhook_id: e.webhookId, duplicate: true, outcome: "duplicate", webhook_status: "completed" });
    });
    expect(await effects(e.paymentId, e.intentId)).toMatchObject({ reservations: 1, ledger: 1, payment_status: "succeeded" });
  });

  it("a delivery holding the event and a replay of it do not deadlock: the replay answers duplicate", async () => {
    const e = await failedEvent();
    const [w] = await sql`select event_id from reserve.processed_webhooks where id = ${e.webhookId}`;
    await twoConnections(async (a, b) => {
      const pidB = await backendPid(b);
      let replay: Promise<postgres.RowList<Row[]>> | undefined;
      await a.begin(async (tx) => {
        const r = await deliver(tx, { eventId: w.event_id as string, paymentId: e.paymentId });
        expect(r).toMatchObject({ webhook_status: "completed", duplicate: false });
        replay = b`select * from reserve.replay_webhook(${e.webhookId})`.execute(); // queries are lazy until executed
        await waitUntilLockWait(sql, pidB);
      });
      const [r] = await replay!;
      expect(r).toMatchObject({ webhook_id: e.webhookId, duplicate: true, outcome: "duplicate", webhook_status: "completed" });
    });
    expect(await effects(e.paymentId, e.intentId)).toMatchObject({ reservations: 1, ledger: 1, payment_status: "succeeded" });
  });
});

describe("resolve_webhook", () => {
  it("closes a dead event nothing can apply, with who and why, and the alert goes", async () => {
    const w = await processEvent(sql, { provider: "mercadopago", event_id: `mp_${crypto.randomUUID()}`, event_type: "payment.updated",
                                        payload: {}, lookup: { gatewayPaymentId: "123" }, processing_error: "lookup failed" }, null);
    await sql`update reserve.processed_webhooks set status = 'dead' where id = ${w.webhook_id}`;
    expect(await sqlState(sql`select reserve.resolve_webhook(${w.webhook_id}::uuid, 'settled by polling')`)).toBe("RC604");
    const [r] = await asOperator(sql, "ops@reserve", (tx) => tx`select * from reserve.resolve_webhook(${w.webhook_id}::uuid, 'settled by polling')`);
    expect(r.status).toBe("ignored");
    expect(r.error_message).toContain(`resolved by ${operatorName(sql, "ops@reserve")}:`);
    const [h] = await sql`select observed_value from reserve.system_health_check() where check_name = 'webhooks_dead'`;
    expect(Number(h.observed_value)).toBe(0);
  });
});
