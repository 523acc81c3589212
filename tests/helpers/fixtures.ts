// Rows a test builds for itself: a unit with calendar nights, an intent, a payment, a reservation.
import { randomBytes, randomUUID } from "node:crypto";
import type postgres from "postgres";
import { attachGateway } from "./money.ts";

type Q = postgres.Sql | postgres.TransactionSql;
type Row = Record<string, unknown>;

export function isoDate(daysFromToday: number): string {
  const d = new Date();
  d.setUTCHours(0, 0, 0, 0);
  d.setUTCDate(d.getUTCDate() + daysFromToday);
  return d.toISOString().slice(0, 10);
}

export async function insert(sql: Q, table: string, row: Row): Promise<Row> {
  const [out] = await sql`insert into ${sql(`reserve.${table}`)} ${sql(row as Record<string, postgres.ParameterOrJSON<never>>)} returning *`;
  return out;
}

export async function city(sql: Q, code = "RIO"): Promise<string> {
  await sql`insert into reserve.cities (code, name, state) values (${code}, ${`City ${code}`}, 'RJ')
            on conflict (code) do nothing`;
  return code;
}

/** A unit in a new property of `cityCode`, with calendar rows for `nights` nights from tomorrow. */
export async function unit(sql: Q, opts: { cityCode?: string; nights?: number; maxOccupancy?: number; allotment?: number } = {}) {
  const cityCode = await city(sql, opts.cityCode ?? "RIO");
  const property = await insert(sql, "properties_map", { city_code: cityCode, name: `Property ${randomUUID().slice(0, 8)}` });
  const u = await insert(sql, "unit_map", {
    property_id: property.id as string,
    name: `Unit ${randomUUID().slice(0, 8)}`,
    unit_type: "apartment",
    max_occupancy: opts.maxOccupancy ?? 4,
    base_price: 50000,
  });
  await sql`
    insert into reserve.availability_calendar (unit_id, date, allotment)
    select ${u.id as string}, current_date + g, ${opts.allotment ?? 1}
    from generate_series(1, ${opts.nights ?? 30}) g`;
  return { cityCode, propertyId: property.id as string, unitId: u.id as string };
}

export async function intent(sql: Q, unitId: string, overrides: Row = {}): Promise<Row> {
  return insert(sql, "booking_intents", {
    unit_id: unitId,
    check_in: isoDate(1),
    check_out: isoDate(3),
    guests: 2,
    amount: 100000,
    expires_at: new Date(Date.now() + 15 * 60_000),
    ...overrides,
  });
}

export async function payment(sql: Q, intentId: string, overrides: Row = {}): Promise<Row> {
  return insert(sql, "payments", {
    booking_intent_id: intentId,
    provider: "stripe",
    method: "card",
    amount: 100000,
    idempotency_key: `intent:${intentId}:${randomUUID()}`,
    ...overrides,
  });
}

export function confirmationCode(): string {
  return `RES-${new Date().getUTCFullYear()}-${randomBytes(3).toString("hex").toUpperCase()}`;
}

export async function reservation(sql: Q, intentRow: Row, overrides: Row = {}): Promise<Row> {
  return insert(sql, "reservations", {
    booking_intent_id: intentRow.id as string,
    confirmation_code: confirmationCode(),
    unit_id: intentRow.unit_id as string,
    check_in: intentRow.check_in as string,
    check_out: intentRow.check_out as string,
    guests: intentRow.guests as number,
    total_amount: intentRow.amount as number,
    ...overrides,
  });
}

/** A checkout through begin_checkout: an intent holding nights +1..+3 and its pending attempt (with a gateway id unless null). */
export async function checkoutAttempt(q: Q, opts: { provider?: string; method?: string; gatewayId?: string | null; unitId?: string } = {}) {
  const unitId = opts.unitId ?? (await unit(q, { nights: 10 })).unitId;
  const [c] = await q`
    select * from reserve.begin_checkout(
      p_client_id => ${`client-${randomUUID()}`}, p_method => ${opts.method ?? "card"},
      p_provider => ${opts.provider ?? "stripe"}, p_unit_id => ${unitId}, p_check_in => ${isoDate(1)},
      p_check_out => ${isoDate(3)}, p_guests => 2)`;
  if (opts.gatewayId !== null) {
    await attachGateway(q, c.payment_id as string, opts.gatewayId ?? `gw_${randomUUID()}`);
  }
  const [p] = await q`select * from reserve.payments where id = ${c.payment_id as string}`;
  return { unitId, intentId: c.booking_intent_id as string, paymentId: c.payment_id as string, payment: p };
}
