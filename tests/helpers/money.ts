// The provider's news as the SQL functions take it (reserve.provider_update, built with
// reserve.as_provider_update from JSON, as the edge functions build it), and the calls tests make most:
// apply a status, attach a provider payment, deliver a webhook event.
import type postgres from "postgres";

type Q = postgres.Sql | postgres.TransactionSql;
type Row = Record<string, any>;

/** The fields of reserve.provider_update, in JSON (snake_case, minor units, ISO currency). */
export interface UpdateFields {
  status?: string | null;
  gateway_payment_id?: string | null;
  payment_reference?: string | null;
  end_to_end_id?: string | null;
  amount?: number | null;
  currency?: string | null;
  amount_received?: number | null;
  refunded_amount?: number | null;
  dispute_amount?: number | null;
  fee_amount?: number | null;
  refunds?: unknown[] | null;
  event_at?: Date | string | null;
  gateway_status?: string | null;
  error_code?: string | null;
  error_message?: string | null;
  provider_object?: unknown;
}

/** SQL of a reserve.provider_update with these fields (null stays null). */
export const providerUpdate = (q: Q, u: UpdateFields | null) =>
  q`reserve.as_provider_update(${u ? q.json(u as never) : null}::jsonb)`;

/**
 * What a provider says about one of our payments: a success says our price arrived (amount_received and
 * currency of the payment) unless the test says otherwise.
 */
export async function newsFor(q: Q, paymentId: string, status: string, extra: UpdateFields = {}): Promise<UpdateFields> {
  const u: UpdateFields = { status, ...extra };
  if (status === "succeeded" && (!("amount_received" in extra) || !("currency" in extra))) {
    const [p] = await q`select amount, currency from reserve.payments where id = ${paymentId}`;
    if (p) {
      if (!("amount_received" in extra)) u.amount_received = Number(p.amount);
      if (!("currency" in extra)) u.currency = p.currency as string;
    }
  }
  return u;
}

/** reserve.apply_payment_status with the provider's update; returns its payment_status_change. */
export async function applyStatus(
  q: Q, paymentId: string, status: string,
  extra: UpdateFields & { on_illegal?: "raise" | "ignore"; source?: string; webhook_id?: string } = {},
): Promise<Row> {
  const { on_illegal, source, webhook_id, ...fields } = extra;
  const u = await newsFor(q, paymentId, status, fields);
  const [r] = await q`
    select * from reserve.apply_payment_status(${paymentId}::uuid, ${providerUpdate(q, u)}, ${webhook_id ?? null}::uuid,
                                               ${on_illegal ?? "raise"}, ${source ?? "api"})`;
  return r;
}

/** The checkout's attach: the provider payment names our payment and asks our price, unless told otherwise. */
export async function attachGateway(q: Q, paymentId: string, gatewayId: string, extra: UpdateFields = {}): Promise<Row> {
  const [p] = await q`select amount, currency from reserve.payments where id = ${paymentId}`;
  const u: UpdateFields = {
    status: "pending", gateway_payment_id: gatewayId, payment_reference: paymentId,
    amount: p ? Number(p.amount) : undefined, currency: p?.currency as string | undefined, ...extra,
  };
  const [r] = await q`select * from reserve.attach_gateway_payment(${paymentId}::uuid, ${providerUpdate(q, u)})`;
  return r;
}

/** The fields of reserve.webhook_event. */
export interface EventFields {
  provider?: string;
  event_id?: string;
  event_type?: string;
  event_at?: Date | string | null;
  payload?: unknown;
  lookup?: unknown;
  processing_error?: string | null;
  poison?: string | null;
  note?: string | null;
}

/**
 * A provider's event about one of our payments, as the provider would say it: unless the test says
 * otherwise, it names our amount and currency, and a success says that much arrived.
 */
export async function eventUpdate(q: Q, provider: string, u: UpdateFields | null): Promise<UpdateFields | null> {
  if (!u?.status) return u;
  const [p] = u.payment_reference
    ? await q`select amount, currency from reserve.payments where id = ${u.payment_reference}`
    : await q`select amount, currency from reserve.payments where provider = ${provider} and gateway_payment_id = ${u.gateway_payment_id ?? null}`;
  if (!p) return u;
  const out: UpdateFields = { amount: Number(p.amount), currency: p.currency as string, ...u };
  if (u.status === "succeeded" && !("amount_received" in u)) out.amount_received = Number(p.amount);
  return out;
}

/** reserve.process_webhook_event of one event (see eventUpdate for what the update says by default). */
export async function processEvent(q: Q, e: EventFields, u: UpdateFields | null): Promise<Row> {
  const event = { provider: "stripe", event_id: `evt_${crypto.randomUUID()}`, event_type: "payment_intent.succeeded",
                  payload: { id: "evt" }, ...e };
  const update = await eventUpdate(q, event.provider, u);
  const [r] = await q`
    select * from reserve.process_webhook_event(reserve.as_webhook_event(${q.json(event as never)}), ${providerUpdate(q, update)})`;
  return r;
}

/** reserve.recover_payment as an operator calls it: what the dashboard shows, as a provider update (a query, not run yet). */
export function recoverPayment(q: Q, paymentId: string, u: UpdateFields, reason: string | null) {
  return q`select * from reserve.recover_payment(${paymentId}::uuid, ${providerUpdate(q, u)}, ${reason})`;
}

/** What a dashboard shows for a payment paid in full: its price arrived. */
export const paidInFull = (amount = 100000, currency = "BRL"): UpdateFields => ({ status: "succeeded", amount_received: amount, currency });

/**
 * Runs fn while every INSERT of a reservation fails (ZZ001 injected failure): a failure inside a webhook's
 * apply. The trigger is dropped again whatever fn does.
 */
export async function refusingReservations<T>(sql: postgres.Sql, fn: () => Promise<T>): Promise<T> {
  await sql.unsafe(`
    create function public.test_refuse_reservation() returns trigger language plpgsql as $$
    begin
      raise exception using errcode = 'ZZ001', message = 'injected failure';
    end $$;
    create trigger test_refuse_reservation before insert on reserve.reservations
      for each row execute function public.test_refuse_reservation();`);
  try {
    return await fn();
  } finally {
    await sql.unsafe(`drop trigger test_refuse_reservation on reserve.reservations;
                      drop function public.test_refuse_reservation();`);
  }
}
