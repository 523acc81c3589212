// The success path's shape, as the bench measures it and the guarantees demand: a duplicate delivery is
// answered from a read (no transaction id, no WAL, no lock, and it never waits for a lock someone else
// holds), and a delivery that is not yet visible as completed still queues on the event row.
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type Sql, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";
import { processEvent } from "../helpers/money.ts";

type Q = postgres.Sql | postgres.TransactionSql;

let db: TestDatabase;
let sql: Sql;
beforeAll(async () => {
  db = await createTestDatabase();
  sql = db.sql;
});
afterAll(async () => await db?.drop());

const succeeded = (q: Q, eventId: string, gatewayId: string, payload: unknown = { id: eventId }) =>
  processEvent(q, { event_id: eventId, payload }, { status: "succeeded", gateway_payment_id: gatewayId });

describe("a duplicate delivery is answered from a read", () => {
  it("takes no transaction id, writes no WAL and holds no lock", async () => {
    const c = await f.checkoutAttempt(sql, { gatewayId: "pi_dup_read" });
    const eventId = `evt_${crypto.randomUUID()}`;
    const first = await succeeded(sql, eventId, "pi_dup_read");
    expect(first).toMatchObject({ webhook_status: "completed", duplicate: false, finalize_outcome: "created" });

    const facts = await sql.begin(async (tx) => {
      const [{ lsn: before }] = await tx`select pg_current_wal_lsn()::text as lsn`;
      const again = await succeeded(tx, eventId, "pi_dup_read", { changed: true });
      const [x] = await tx`
        select txid_current_if_assigned()::text as xid,
               (select count(*)::int from pg_locks
                where pid = pg_backend_pid() and (locktype in ('transactionid', 'tuple')
                                                  or (locktype = 'relation' and mode <> 'AccessShareLock'))) as write_locks`;
      const [{ lsn: after }] = await tx`select pg_current_wal_lsn()::text as lsn`;
      return { again, xid: x.xid, writeLocks: x.write_locks, before, after };
    });
    expect(facts.again).toMatchObject({
      webhook_id: first.webhook_id, webhook_status: "completed", duplicate: true, attempts: 1, outcome: "duplicate",
      payment_id: c.paymentId, payment_status: "succeeded",
    });
    expect(facts.xid).toBeNull();
    expect(facts.writeLocks).toBe(0);
    expect(facts.after).toBe(facts.before);
    // what the first delivery recorded is kept: the duplicate's different payload is not written
    const [w] = await sql`select payload, attempts from reserve.processed_webhooks where id = ${first.webhook_id as string}`;
    expect(w).toEqual({ payload: { id: eventId }, attempts: 1 });
  });

  it("answers while another transaction holds the payment and the event row", async () => {
    await f.checkoutAttempt(sql, { gatewayId: "pi_dup_busy" });
    const eventId = `evt_${crypto.randomUUID()}`;
    const first = await succeeded(sql, eventId, "pi_dup_busy");
    const other = postgres(db.url, { max: 1, onnotice: () => {} });
    try {
      await other.begin(async (tx) => {
        await tx`select 1 from reserve.payments where id = ${first.payment_id as string} for update`;
        await tx`select 1 from reserve.processed_webhooks where id = ${first.webhook_id as string} for update`;
        // a lock wait would fail the statement instead of hanging the test
        const again = await sql.begin(async (q) => {
          await q`set local lock_timeout = '500ms'`;
          return succeeded(q, eventId, "pi_dup_busy");
        });
        expect(again).toMatchObject({ duplicate: true, webhook_status: "completed", outcome: "duplicate" });
      });
    } finally {
      await other.end();
    }
  });

  it("a failed event is not a duplicate: its redelivery is processed again", async () => {
    await f.checkoutAttempt(sql, { gatewayId: "pi_dup_failed" });
    const eventId = `evt_${crypto.randomUUID()}`;
    const failed = await processEvent(sql, { event_id: eventId, processing_error: "provider timed out" },
                                      { status: "succeeded", gateway_payment_id: "pi_dup_failed" });
    expect(failed).toMatchObject({ webhook_status: "failed", duplicate: false });
    const again = await succeeded(sql, eventId, "pi_dup_failed");
    expect(again).toMatchObject({ webhook_status: "completed", duplicate: false, attempts: 2, finalize_outcome: "created" });
  });
});
