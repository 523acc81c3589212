// Shared builders for the runbook-machinery tests: paid reservations through the real
// functions, webhook deliveries, a typed operator name, and a second connection for concurrency cases.
import postgres from "postgres";
import * as f from "../helpers/fixtures.ts";
import { applyStatus, processEvent } from "../helpers/money.ts";

export type Q = postgres.Sql | postgres.TransactionSql;
export type Row = Record<string, unknown>;

/** A checkout through begin_checkout: an intent holding nights +1..+3 and its pending attempt. */
export const checkout = f.checkoutAttempt;

export interface Delivery {
  provider?: string;
  eventId?: string;
  eventType?: string;
  paymentId?: string | null;
  gatewayId?: string | null;
  status?: string | null;
  refundedAmount?: number | null;
  processingError?: string | null;
}

export async function deliver(q: Q, d: Delivery): Promise<Row> {
  const status = d.status === undefined ? "succeeded" : d.status;
  return processEvent(q, {
    provider: d.provider ?? "stripe", event_id: d.eventId ?? `evt_${crypto.randomUUID()}`,
    event_type: d.eventType ?? "payment_intent.succeeded", payload: { id: d.eventId ?? "evt" },
    processing_error: d.processingError ?? null,
  }, status === null ? null : {
    status, payment_reference: d.paymentId ?? null, gateway_payment_id: d.gatewayId ?? null, refunded_amount: d.refundedAmount ?? null,
  });
}

/** create_booking_intent -> create_payment -> apply_payment_status(succeeded), which finalizes. */
export async function paidReservation(q: Q, opts: { unitId?: string; from?: number; to?: number; guests?: number; maxOccupancy?: number } = {}) {
  const unitId = opts.unitId ?? (await f.unit(q, { nights: 20, maxOccupancy: opts.maxOccupancy })).unitId;
  const [bi] = await q`select * from reserve.create_booking_intent(${unitId}, ${f.isoDate(opts.from ?? 1)}::date,
                                                                    ${f.isoDate(opts.to ?? 3)}::date, ${opts.guests ?? 2})`;
  const [p] = await q`select * from reserve.create_payment(${bi.id}, 'stripe', 'card', ${bi.amount})`;
  const paid = await applyStatus(q, p.id as string, "succeeded");
  if (paid.finalize_outcome !== "created") throw new Error(`finalize said ${String(paid.finalize_outcome)}`);
  return { unitId, intentId: bi.id as string, paymentId: p.id as string, reservationId: paid.reservation_id as string,
           amount: Number(bi.amount) };
}

/** A second succeeded charge of an already paid intent (finalize flags it duplicate_of the first). */
export async function duplicateCharge(q: Q) {
  const { unitId } = await f.unit(q, { nights: 6 });
  const [bi] = await q`select * from reserve.create_booking_intent(${unitId}, ${f.isoDate(1)}::date, ${f.isoDate(3)}::date, 2)`;
  const [first] = await q`select * from reserve.create_payment(${bi.id}, 'stripe', 'card', ${bi.amount})`;
  await applyStatus(q, first.id as string, "failed");
  const [second] = await q`select * from reserve.create_payment(${bi.id}, 'stripe', 'card', ${bi.amount})`;
  const sold = await applyStatus(q, second.id as string, "succeeded");
  const dup = await applyStatus(q, first.id as string, "succeeded", { event_at: new Date(Date.now() - 3600_000) });
  if (dup.finalize_outcome !== "duplicate_charge") throw new Error(`expected a duplicate, got ${String(dup.finalize_outcome)}`);
  return { unitId, intentId: bi.id as string, duplicateId: first.id as string, paidId: second.id as string,
           reservationId: sold.reservation_id as string, amount: Number(bi.amount) };
}

/** A name typed into reserve.actor, as someone on a shared login would: it proves nobody (RC604). */
export async function typeActorName(tx: Q, actor = "ops@reserve.test"): Promise<void> {
  await tx`select set_config('reserve.actor', ${actor}, true)`;
}

export async function replica(tx: Q, on = true): Promise<void> {
  await tx.unsafe(`set local session_replication_role = ${on ? "replica" : "origin"}`);
}

export async function row(q: Q, table: string, id: string): Promise<Row> {
  const [r] = await q`select * from ${q(`reserve.${table}`)} where id = ${id}`;
  return r;
}

export async function backendPid(conn: postgres.Sql): Promise<number> {
  const [r] = await conn`select pg_backend_pid() as pid`;
  return r.pid as number;
}

/** Resolves once `pid` waits on a heavyweight lock (or throws after `tries` polls). */
export async function waitUntilLockWait(observer: postgres.Sql, pid: number, tries = 400): Promise<void> {
  for (let i = 0; i < tries; i++) {
    const [a] = await observer`select wait_event_type from pg_stat_activity where pid = ${pid}`;
    if (a?.wait_event_type === "Lock") return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`backend ${pid} never waited on a lock`);
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
