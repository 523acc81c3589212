// Every invariant of the data model, proven by inserting the row that breaks it.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, rolledBack, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";
import type postgres from "postgres";

let db: TestDatabase;
let base: { cityCode: string; propertyId: string; unitId: string };

beforeAll(async () => {
  db = await createTestDatabase();
  base = await f.unit(db.sql, { nights: 30 });
});
afterAll(async () => await db?.drop());

type Tx = postgres.TransactionSql;
const CHECK = "23514", UNIQUE = "23505", FK = "23503", NOT_NULL = "23502";

/**
 * The bad write runs inside a rolled-back transaction and must fail with this SQLSTATE and this
 * constraint (for NOT NULL: this column), so a test cannot pass on some other check.
 */
function violates(name: string, code: string, constraint: string, bad: (tx: Tx) => Promise<unknown>) {
  it(`${name} -> ${code} ${constraint}`, async () => {
    const err = await rolledBack(db.sql, async (tx) => {
      try {
        await bad(tx);
      } catch (e) {
        return e as { code?: string; constraint_name?: string; column_name?: string };
      }
      return undefined;
    });
    expect(err, "the statement succeeded").toBeDefined();
    expect({ code: err!.code, constraint: code === NOT_NULL ? err!.column_name : err!.constraint_name })
      .toEqual({ code, constraint });
  });
}

describe("cities, properties, units", () => {
  violates("city code not three capitals", CHECK, "cities_code_check", (tx) => f.insert(tx, "cities", { code: "rio", name: "Rio", state: "RJ" }));
  violates("state not two capitals", CHECK, "cities_state_check", (tx) => f.insert(tx, "cities", { code: "ZZZ", name: "Z", state: "rj" }));
  violates("property in an unknown city", FK, "properties_map_city_code_fkey", (tx) => f.insert(tx, "properties_map", { city_code: "XXX", name: "P" }));
  violates("property with a blank name", CHECK, "properties_map_name_check", (tx) => f.insert(tx, "properties_map", { city_code: base.cityCode, name: "  " }));
  violates("same external id twice from one source", UNIQUE, "properties_map_source_external_id_key", async (tx) => {
    await f.insert(tx, "properties_map", { city_code: base.cityCode, name: "A", source: "pms", external_id: "x1" });
    await f.insert(tx, "properties_map", { city_code: base.cityCode, name: "B", source: "pms", external_id: "x1" });
  });
  const unitRow = (over: Record<string, unknown>) => ({
    property_id: base.propertyId, name: "U", unit_type: "studio", max_occupancy: 2, base_price: 1000, ...over,
  });
  violates("unit with max_occupancy 0", CHECK, "unit_map_max_occupancy_check", (tx) => f.insert(tx, "unit_map", unitRow({ max_occupancy: 0 })));
  violates("unit with a zero price", CHECK, "unit_map_base_price_check", (tx) => f.insert(tx, "unit_map", unitRow({ base_price: 0 })));
  violates("unit of an unknown type", CHECK, "unit_map_unit_type_check", (tx) => f.insert(tx, "unit_map", unitRow({ unit_type: "castle" })));
  violates("unit with min_nights above max_nights", CHECK, "unit_map_nights_bounds_check", (tx) => f.insert(tx, "unit_map", unitRow({ min_nights: 10, max_nights: 5 })));
  violates("unit with max_nights above a year", CHECK, "unit_map_max_nights_check", (tx) => f.insert(tx, "unit_map", unitRow({ max_nights: 366 })));
  violates("unit without a name", NOT_NULL, "name", (tx) => f.insert(tx, "unit_map", unitRow({ name: null })));
  violates("two units of one property with one name", UNIQUE, "unit_map_property_id_name_key", async (tx) => {
    await f.insert(tx, "unit_map", unitRow({ name: "Twin" }));
    await f.insert(tx, "unit_map", unitRow({ name: "Twin" }));
  });
  violates("unit of an unknown property", FK, "unit_map_property_id_fkey", (tx) =>
    f.insert(tx, "unit_map", unitRow({ property_id: "00000000-0000-4000-8000-000000000000" })));
});

describe("availability_calendar", () => {
  const night = (over: Record<string, unknown>) => ({ unit_id: base.unitId, date: f.isoDate(200), ...over });
  violates("negative bookings_count", CHECK, "availability_calendar_bookings_count_check", (tx) => f.insert(tx, "availability_calendar", night({ bookings_count: -1 })));
  violates("negative temp_holds", CHECK, "availability_calendar_temp_holds_check", (tx) => f.insert(tx, "availability_calendar", night({ temp_holds: -1 })));
  violates("negative allotment", CHECK, "availability_calendar_allotment_check", (tx) => f.insert(tx, "availability_calendar", night({ allotment: -1 })));
  violates("zero price", CHECK, "availability_calendar_price_check", (tx) => f.insert(tx, "availability_calendar", night({ price: 0 })));
  violates("a night twice", UNIQUE, "availability_calendar_pkey", (tx) => f.insert(tx, "availability_calendar", night({ date: f.isoDate(1) })));
  violates("a night of an unknown unit", FK, "availability_calendar_unit_id_fkey", (tx) =>
    f.insert(tx, "availability_calendar", night({ unit_id: "00000000-0000-4000-8000-000000000000" })));
  violates("counters driven below zero by an update", CHECK, "availability_calendar_temp_holds_check", (tx) =>
    tx`update reserve.availability_calendar set temp_holds = temp_holds - 1 where unit_id = ${base.unitId}`);
});

describe("booking_intents and booking_locks", () => {
  violates("check_out equal to check_in", CHECK, "booking_intents_dates_check", (tx) => f.intent(tx, base.unitId, { check_out: f.isoDate(1) }));
  violates("check_out before check_in", CHECK, "booking_intents_dates_check", (tx) => f.intent(tx, base.unitId, { check_in: f.isoDate(5), check_out: f.isoDate(2) }));
  violates("zero guests", CHECK, "booking_intents_guests_check", (tx) => f.intent(tx, base.unitId, { guests: 0 }));
  violates("zero amount", CHECK, "booking_intents_amount_check", (tx) => f.intent(tx, base.unitId, { amount: 0 }));
  violates("negative amount", CHECK, "booking_intents_amount_check", (tx) => f.intent(tx, base.unitId, { amount: -5 }));
  violates("unknown status", CHECK, "booking_intents_status_check", (tx) => f.intent(tx, base.unitId, { status: "paid" }));
  violates("converted without converted_at", CHECK, "booking_intents_converted_at_check", (tx) => f.intent(tx, base.unitId, { status: "converted" }));
  violates("no expiry", NOT_NULL, "expires_at", (tx) => f.intent(tx, base.unitId, { expires_at: null }));
  violates("malformed guest email", CHECK, "booking_intents_guest_email_check", (tx) => f.intent(tx, base.unitId, { guest_email: "not-an-email" }));
  violates("a stay over a year", CHECK, "booking_intents_stay_length_check", (tx) =>
    f.intent(tx, base.unitId, { check_out: f.isoDate(1 + 366) }));
  violates("metadata that is not an object", CHECK, "booking_intents_metadata_check", (tx) =>
    f.intent(tx, base.unitId, { metadata: tx.json("text") }));
  violates("unknown unit", FK, "booking_intents_unit_id_fkey", (tx) => f.intent(tx, "00000000-0000-4000-8000-000000000000"));
  violates("lowercase currency", CHECK, "booking_intents_currency_check", (tx) => f.intent(tx, base.unitId, { currency: "brl" }));

  const lock = async (tx: Tx, over: Record<string, unknown>) => {
    const i = await f.intent(tx, base.unitId);
    return f.insert(tx, "booking_locks", {
      booking_intent_id: i.id as string, unit_id: base.unitId, lock_date: f.isoDate(1),
      expires_at: new Date(Date.now() + 60_000), ...over,
    });
  };
  violates("lock on a night without a calendar row", FK, "booking_locks_night_fkey", (tx) => lock(tx, { lock_date: f.isoDate(300) }));
  violates("lock on a night of another unit than its intent's", FK, "booking_locks_intent_unit_fkey", async (tx) => {
    const other = await f.unit(tx, { nights: 3 });
    await lock(tx, { unit_id: other.unitId });
  });
  violates("lock of an unknown intent", FK, "booking_locks_intent_unit_fkey", (tx) =>
    f.insert(tx, "booking_locks", {
      booking_intent_id: "00000000-0000-4000-8000-000000000000", unit_id: base.unitId, lock_date: f.isoDate(1),
      expires_at: new Date(),
    }));
  violates("released lock without released_at", CHECK, "booking_locks_released_at_check", (tx) => lock(tx, { status: "released" }));
  violates("unknown lock status", CHECK, "booking_locks_status_check", (tx) => lock(tx, { status: "stolen" }));
  violates("one intent locking a night twice", UNIQUE, "booking_locks_one_live_per_night", async (tx) => {
    const l = await lock(tx, {});
    await f.insert(tx, "booking_locks", {
      booking_intent_id: l.booking_intent_id as string, unit_id: base.unitId, lock_date: f.isoDate(1),
      expires_at: new Date(Date.now() + 60_000),
    });
  });
});

describe("payments", () => {
  const withIntent = async (tx: Tx, over: Record<string, unknown>) => f.payment(tx, (await f.intent(tx, base.unitId)).id as string, over);
  violates("zero amount", CHECK, "payments_amount_check", (tx) => withIntent(tx, { amount: 0 }));
  violates("negative amount", CHECK, "payments_amount_check", (tx) => withIntent(tx, { amount: -100 }));
  violates("unknown provider", CHECK, "payments_provider_check", (tx) =>
    withIntent(tx, { provider: "paypal", method: "pix", expires_at: new Date() }));
  violates("unknown method", CHECK, "payments_method_check", (tx) => withIntent(tx, { method: "boleto" }));
  violates("card through a PIX provider", CHECK, "payments_method_provider_check", (tx) => withIntent(tx, { provider: "mercadopago", method: "card" }));
  violates("unknown status", CHECK, "payments_status_check", (tx) => withIntent(tx, { status: "paid" }));
  violates("succeeded without succeeded_at", CHECK, "payments_succeeded_at_check", (tx) => withIntent(tx, { status: "succeeded" }));
  violates("refunded more than charged", CHECK, "payments_refunded_amount_check", (tx) =>
    withIntent(tx, { status: "disputed", refunded_amount: 100001, refunded_at: new Date() }));
  violates("refunded but not in full", CHECK, "payments_refunded_in_full_check", (tx) =>
    withIntent(tx, { status: "refunded", refunded_amount: 10, refunded_at: new Date() }));
  violates("refunded without refunded_at", CHECK, "payments_refunded_check", (tx) =>
    withIntent(tx, { status: "refunded", refunded_amount: 100000 }));
  violates("a refund recorded on a failed payment", CHECK, "payments_refund_status_check", (tx) =>
    withIntent(tx, { status: "failed", refunded_amount: 100, refunded_at: new Date() }));
  violates("partially refunded in full", CHECK, "payments_partially_refunded_check", (tx) =>
    withIntent(tx, { status: "partially_refunded", refunded_amount: 100000, refunded_at: new Date() }));
  violates("PIX charge without an expiry", CHECK, "payments_pix_expiry_check", (tx) =>
    withIntent(tx, { provider: "openpix", method: "pix" }));
  violates("a payment that duplicates itself", CHECK, "payments_duplicate_of_check", async (tx) => {
    const p = await withIntent(tx, {});
    await tx`update reserve.payments set duplicate_of = id where id = ${p.id as string}`;
  });
  violates("payment of an unknown intent", FK, "payments_booking_intent_id_fkey", (tx) => f.payment(tx, "00000000-0000-4000-8000-000000000000"));
  violates("two payments in flight for one intent", UNIQUE, "payments_one_active_per_intent", async (tx) => {
    const i = await f.intent(tx, base.unitId);
    await f.payment(tx, i.id as string, { status: "pending" });
    await f.payment(tx, i.id as string, { status: "processing", attempt: 2 });
  });
  violates("one idempotency key twice", UNIQUE, "payments_idempotency_key_key", async (tx) => {
    const i = await f.intent(tx, base.unitId);
    await f.payment(tx, i.id as string, { idempotency_key: "k1", status: "failed" });
    await f.payment(tx, i.id as string, { idempotency_key: "k1", attempt: 2 });
  });
  violates("one provider payment id twice", UNIQUE, "payments_provider_gateway_payment_id_key", async (tx) => {
    await withIntent(tx, { gateway_payment_id: "pi_123" });
    await withIntent(tx, { gateway_payment_id: "pi_123" });
  });
  violates("one attempt number twice", UNIQUE, "payments_booking_intent_id_attempt_key", async (tx) => {
    const i = await f.intent(tx, base.unitId);
    await f.payment(tx, i.id as string, { status: "failed" });
    await f.payment(tx, i.id as string, { status: "failed" });
  });
  violates("metadata that is not an object", CHECK, "payments_metadata_check", (tx) => withIntent(tx, { metadata: tx.json([1, 2]) }));

  it("keeps one active payment per intent but allows retries after a failure", async () => {
    await rolledBack(db.sql, async (tx) => {
      const i = await f.intent(tx, base.unitId);
      await f.payment(tx, i.id as string, { status: "failed" });
      const retry = await f.payment(tx, i.id as string, { attempt: 2 });
      expect(retry.status).toBe("pending");
    });
  });
});

describe("reservations", () => {
  const withIntent = async (tx: Tx, over: Record<string, unknown> = {}) => f.reservation(tx, await f.intent(tx, base.unitId), over);
  violates("malformed confirmation code", CHECK, "reservations_confirmation_code_check", (tx) => withIntent(tx, { confirmation_code: "ABC-123" }));
  violates("lowercase confirmation code", CHECK, "reservations_confirmation_code_check", (tx) => withIntent(tx, { confirmation_code: "RES-2026-abc123" }));
  violates("one confirmation code twice", UNIQUE, "reservations_confirmation_code_key", async (tx) => {
    await withIntent(tx, { confirmation_code: "RES-2026-AAAAAA" });
    await withIntent(tx, { confirmation_code: "RES-2026-AAAAAA" });
  });
  violates("two live reservations for one intent", UNIQUE, "reservations_one_live_per_intent", async (tx) => {
    const i = await f.intent(tx, base.unitId);
    await f.reservation(tx, i);
    await f.reservation(tx, i);
  });
  violates("check_out not after check_in", CHECK, "reservations_dates_check", (tx) => withIntent(tx, { check_out: f.isoDate(1) }));
  violates("unknown status", CHECK, "reservations_status_check", (tx) => withIntent(tx, { status: "booked" }));
  violates("unknown payment_status", CHECK, "reservations_payment_status_check", (tx) => withIntent(tx, { payment_status: "free" }));
  violates("cancelled without a reason", CHECK, "reservations_cancellation_reason_check", (tx) => withIntent(tx, { status: "cancelled" }));
  violates("reservation of an unknown intent", FK, "reservations_booking_intent_id_fkey", (tx) =>
    f.insert(tx, "reservations", {
      booking_intent_id: "00000000-0000-4000-8000-000000000000", confirmation_code: f.confirmationCode(),
      unit_id: base.unitId, check_in: f.isoDate(1), check_out: f.isoDate(2), guests: 1, total_amount: 1,
    }));
  violates("paid by another intent's payment", FK, "reservations_payment_fkey", async (tx) => {
    const other = await f.payment(tx, (await f.intent(tx, base.unitId)).id as string);
    await withIntent(tx, { payment_id: other.id });
  });
  violates("metadata that is not an object", CHECK, "reservations_metadata_check", (tx) => withIntent(tx, { metadata: tx.json(["x"]) }));
  violates("zero total", CHECK, "reservations_total_amount_check", (tx) => withIntent(tx, { total_amount: 0 }));

  it("allows a new reservation for an intent whose earlier one was cancelled", async () => {
    await rolledBack(db.sql, async (tx) => {
      const i = await f.intent(tx, base.unitId);
      await f.reservation(tx, i, { status: "cancelled", cancellation_reason: "guest" });
      const again = await f.reservation(tx, i);
      expect(again.status).toBe("host_commit_pending");
    });
  });

  it("derives property and city from the unit, whatever the writer says", async () => {
    await rolledBack(db.sql, async (tx) => {
      const other = await f.unit(tx, { cityCode: "SSA" });
      const r = await withIntent(tx, { property_id: other.propertyId, city_code: "SSA" });
      expect(r.property_id).toBe(base.propertyId);
      expect(r.city_code).toBe(base.cityCode);
      const [moved] = await tx`update reserve.reservations set unit_id = ${other.unitId}
                               where id = ${r.id as string} returning property_id, city_code`;
      expect(moved).toEqual({ property_id: other.propertyId, city_code: "SSA" });
    });
  });
});

describe("processed_webhooks", () => {
  const hook = (over: Record<string, unknown>) => ({ provider: "stripe", event_id: "evt_1", event_type: "payment_intent.succeeded", ...over });
  violates("one provider event twice (the key table holds the unique key the partitioned table cannot)", UNIQUE, "processed_webhook_keys_pkey", async (tx) => {
    await f.insert(tx, "processed_webhooks", hook({}));
    await f.insert(tx, "processed_webhooks", hook({}));
  });
  violates("unknown status", CHECK, "processed_webhooks_status_check", (tx) => f.insert(tx, "processed_webhooks", hook({ status: "done" })));
  violates("unknown provider", CHECK, "processed_webhooks_provider_check", (tx) => f.insert(tx, "processed_webhooks", hook({ provider: "paypal" })));
  violates("empty event id", CHECK, "processed_webhooks_event_id_check", (tx) => f.insert(tx, "processed_webhooks", hook({ event_id: "" })));
  violates("a webhook about an unknown payment", FK, "processed_webhooks_payment_id_fkey", (tx) =>
    f.insert(tx, "processed_webhooks", hook({ payment_id: "00000000-0000-4000-8000-000000000000" })));
  violates("zero attempts", CHECK, "processed_webhooks_attempts_check", (tx) => f.insert(tx, "processed_webhooks", hook({ attempts: 0 })));

  it("lets the same event id arrive from two providers", async () => {
    await rolledBack(db.sql, async (tx) => {
      await f.insert(tx, "processed_webhooks", hook({ provider: "stripe" }));
      await f.insert(tx, "processed_webhooks", hook({ provider: "openpix" }));
    });
  });
});

describe("ledger", () => {
  // the table constraints are the last word even for our own posting functions, so these writes
  // go in as those functions do (reserve.ledger_writer on); writes without it are refused in ledger.test.ts
  const asPoster = (tx: Tx) => tx`select set_config('reserve.ledger_writer', 'on', true)`;
  const tx1 = async (tx: Tx, over: Record<string, unknown> = {}) => {
    await asPoster(tx);
    return f.insert(tx, "ledger_transactions", { kind: "payment", description: "test", ...over });
  };
  const leg = async (tx: Tx, over: Record<string, unknown>) =>
    f.insert(tx, "ledger_entries", {
      transaction_id: (await tx1(tx)).id as string, entry_type: "guest_payment", account: "receivable_stripe",
      direction: "debit", amount: 100, ...over,
    });
  violates("zero amount", CHECK, "ledger_entries_amount_check", (tx) => leg(tx, { amount: 0 }));
  violates("negative amount", CHECK, "ledger_entries_amount_check", (tx) => leg(tx, { amount: -1 }));
  violates("direction neither debit nor credit", CHECK, "ledger_entries_direction_check", (tx) => leg(tx, { direction: "up" }));
  violates("unknown account", FK, "ledger_entries_account_fkey", (tx) => leg(tx, { account: "petty_cash" }));
  violates("unknown entry type", CHECK, "ledger_entries_entry_type_check", (tx) => leg(tx, { entry_type: "gift" }));
  violates("entry of an unknown transaction", FK, "ledger_entries_transaction_id_fkey", async (tx) => {
    await asPoster(tx);
    await f.insert(tx, "ledger_entries", {
      transaction_id: "00000000-0000-4000-8000-000000000000", entry_type: "guest_payment",
      account: "receivable_stripe", direction: "debit", amount: 1,
    });
  });
  violates("a transaction reversed twice", UNIQUE, "ledger_transactions_reverses_key", async (tx) => {
    const t = await tx1(tx);
    await tx1(tx, { kind: "reversal", reverses: t.id });
    await tx1(tx, { kind: "reversal", reverses: t.id });
  });
  violates("one idempotency key twice", UNIQUE, "ledger_transactions_idempotency_key_key", async (tx) => {
    await tx1(tx, { idempotency_key: "pay:1" });
    await tx1(tx, { idempotency_key: "pay:1" });
  });
  violates("a transaction reversing itself", CHECK, "ledger_transactions_reverses_check", async (tx) => {
    const id = randomUUID();
    await tx1(tx, { id, reverses: id });
  });
  violates("a transaction about an unknown payment", FK, "ledger_transactions_payment_id_fkey", (tx) =>
    tx1(tx, { payment_id: "00000000-0000-4000-8000-000000000000" }));
  violates("unknown transaction kind", CHECK, "ledger_transactions_kind_check", (tx) => tx1(tx, { kind: "gift" }));
});

describe("retention_policies and audit_logs", () => {
  violates("zero retention days", CHECK, "retention_policies_retention_days_check", (tx) =>
    f.insert(tx, "retention_policies", { table_name: "x", retention_days: 0, retention_type: "delete", date_column: "created_at" }));
  violates("unknown retention type", CHECK, "retention_policies_retention_type_check", (tx) =>
    f.insert(tx, "retention_policies", { table_name: "x", retention_days: 1, retention_type: "shred", date_column: "created_at" }));
  violates("batch size over 100,000", CHECK, "retention_policies_batch_size_check", (tx) =>
    f.insert(tx, "retention_policies", { table_name: "x", retention_days: 1, retention_type: "delete", date_column: "created_at", batch_size: 1_000_000 }));
  violates("date column that is not an identifier", CHECK, "retention_policies_date_column_check", (tx) =>
    f.insert(tx, "retention_policies", { table_name: "x", retention_days: 1, retention_type: "delete", date_column: "now(); drop table x" }));
  violates("audit row without an actor", CHECK, "audit_logs_actor_check", (tx) =>
    f.insert(tx, "audit_logs", { actor: "", action: "INSERT", table_name: "payments" }));

  it("ships the runbook's audit_logs policy: 365 days, archive", async () => {
    const [p] = await db.sql`select retention_days, retention_type from reserve.retention_policies where table_name = 'audit_logs'`;
    expect(p).toEqual({ retention_days: 365, retention_type: "archive" });
  });
});
