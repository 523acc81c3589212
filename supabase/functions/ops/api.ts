// The console's API under /ops/api/: one read of everything the console shows (overview), the review of
// an incident, and the actions. Every action is validated here (zod: no client input reaches the database
// unchecked), needs a reason, and runs in one transaction whose actor is the operator the token proved,
// on the console's own login (opsConsoleDb) with the token's sub as reserve.operator_subject: the
// database takes an operator's name from no other login (the shared one is the SQL editor's too). The
// on-call functions and the ledger corrections get the name as p_operator, the runbook's repairs as
// reserve.actor (require_operator), so audit_logs names the operator and the reason with every row, and
// 4-eyes compares the sub.
import { z } from "zod";
import { db, OpsConsoleLoginMissing, opsConsoleDb, type Sql } from "../_shared/db.ts";
import { dbErrorResponse } from "../_shared/db_response.ts";
import { errorJson, invalidRequest, json, readJsonBody } from "../_shared/http.ts";
import { calendarDay, instant, noteText, printableText } from "../_shared/text_fields.ts";
import { operatorName, type Operator } from "./operator.ts";

const reason = noteText(3, 1000, "say why (at least 3 characters)");
const uuid = z.uuid();
const incident = z.string().trim().regex(/^(INC-\d{4}-\d{2}-\d{2}-\d{3,}|[0-9a-fA-F-]{36})$/, "an INC- reference or an incident id");
const day = calendarDay();
const severity = z.enum(["P1", "P2", "P3", "P4"]);

const Action = z.discriminatedUnion("action", [
  z.strictObject({ action: z.literal("acknowledge_incident"), incident, reason }),
  z.strictObject({ action: z.literal("post_incident_update"), incident, reason }),
  z.strictObject({ action: z.literal("resolve_incident"), incident, reason }),
  z.strictObject({ action: z.literal("add_incident_action_item"), incident, item: printableText(500).min(3),
    owner: printableText(200), due_date: day, reason }),
  z.strictObject({ action: z.literal("create_alert_silence"), alert_name: z.string().regex(/^[a-z][a-z0-9_]*$/).max(100).optional(),
    severity: severity.optional(), ends_at: instant(), reason }),
  z.strictObject({ action: z.literal("end_alert_silence"), silence_id: uuid, reason }),
  z.strictObject({ action: z.literal("replay_webhook"), webhook_id: uuid, reason }),
  z.strictObject({ action: z.literal("recover_payment"), payment_id: uuid, status: z.enum(["succeeded", "failed", "canceled"]),
    amount_received: z.int().min(0).max(Number.MAX_SAFE_INTEGER).optional(), currency: z.string().regex(/^[A-Z]{3}$/).optional(), reason }),
  z.strictObject({ action: z.literal("mark_payment_failed"), payment_id: uuid, reason }),
  z.strictObject({ action: z.literal("block_unit_dates"), unit_id: uuid, from: day, to: day, reason }),
  z.strictObject({ action: z.literal("unblock_unit_dates"), block_id: uuid, reason }),
  z.strictObject({ action: z.literal("move_reservation"), reservation_id: uuid, new_unit_id: uuid, reason }),
  z.strictObject({ action: z.literal("cancel_reservation_with_refund"), reservation_id: uuid,
    refund_amount: z.int().min(0).max(Number.MAX_SAFE_INTEGER).optional(), reason }),
  z.strictObject({ action: z.literal("propose_ledger_correction"), target_transaction_id: uuid.optional(), reason,
    entries: z.array(z.strictObject({ account: z.string().regex(/^[a-z][a-z0-9_]*$/).max(100), direction: z.enum(["debit", "credit"]),
      amount: z.int().min(1).max(Number.MAX_SAFE_INTEGER) })).min(1).max(20) }),
  z.strictObject({ action: z.literal("approve_ledger_correction"), correction_id: uuid, reason }),
  z.strictObject({ action: z.literal("reject_ledger_correction"), correction_id: uuid, reason }),
]);
export type ActionRequest = z.infer<typeof Action>;

/** The database call of an action, as a fragment of the one statement run() sends. */
function callOf(sql: Sql, a: ActionRequest, who: string) {
  switch (a.action) {
    case "acknowledge_incident":
      return sql`reserve.acknowledge_incident(${a.incident}, ${a.reason}, ${who})`;
    case "post_incident_update":
      return sql`reserve.post_incident_update(${a.incident}, ${a.reason}, ${who})`;
    case "resolve_incident":
      return sql`reserve.resolve_incident(${a.incident}, ${a.reason}, ${who})`;
    case "add_incident_action_item":
      return sql`reserve.add_incident_action_item(${a.incident}, ${a.item}, ${a.owner}, ${a.due_date}::date, ${a.reason}, ${who})`;
    case "create_alert_silence":
      return sql`reserve.create_alert_silence(
        row(${a.alert_name ?? null}, ${a.severity ?? null}, null, ${a.ends_at}::timestamptz, ${a.reason})::reserve.alert_silence_request, ${who})`;
    case "end_alert_silence":
      return sql`reserve.end_alert_silence(${a.silence_id}::uuid, ${a.reason}, ${who})`;
    case "replay_webhook":
      return sql`reserve.replay_webhook(${a.webhook_id}::uuid)`;
    case "recover_payment": {
      const update = { status: a.status, ...(a.amount_received !== undefined && { amount_received: a.amount_received }),
        ...(a.currency && { currency: a.currency }) };
      return sql`reserve.recover_payment(${a.payment_id}::uuid, reserve.as_provider_update(${sql.json(update)}), ${a.reason})`;
    }
    case "mark_payment_failed":
      return sql`reserve.mark_payment_failed(${a.payment_id}::uuid, ${a.reason})`;
    case "block_unit_dates":
      return sql`reserve.block_unit_dates(${a.unit_id}::uuid, ${a.from}::date, ${a.to}::date, ${a.reason})`;
    case "unblock_unit_dates":
      return sql`reserve.unblock_unit_dates(${a.block_id}::uuid, ${a.reason})`;
    case "move_reservation":
      return sql`reserve.move_reservation(${a.reservation_id}::uuid, ${a.new_unit_id}::uuid, ${a.reason})`;
    case "cancel_reservation_with_refund":
      return sql`reserve.cancel_reservation_with_refund(${a.reservation_id}::uuid, ${a.reason}, ${a.refund_amount ?? null})`;
    case "propose_ledger_correction":
      return sql`reserve.propose_ledger_correction(${a.reason}, ${sql.json(a.entries)}, ${a.target_transaction_id ?? null}, ${who})`;
    case "approve_ledger_correction":
      return sql`reserve.approve_ledger_correction(${a.correction_id}::uuid, ${a.reason}, ${who})`;
    case "reject_ledger_correction":
      return sql`reserve.reject_ledger_correction(${a.correction_id}::uuid, ${a.reason}, ${who})`;
  }
}

/**
 * Runs one action as the operator, in one statement (so in one transaction); returns the function's first row.
 *
 * One statement, not begin/commit: when the connection dies inside a transaction, postgres.js writes its
 * ROLLBACK to the socket that is closing, and that write throws in a timer (an uncaught TypeError) and
 * leaves the bytes in the connection's buffer, so every reconnect of it times out: two kills and the
 * console's pool answered nothing but 503. A statement's own transaction needs nothing more written: the
 * server rolls back what a killed backend had begun. The settings come first because the function call
 * is evaluated on the row of the subquery that sets them (offset 0 keeps it a subquery, and postgres
 * keeps a volatile output it does not read).
 */
async function run(operator: Operator, a: ActionRequest): Promise<unknown> {
  const who = operatorName(operator);
  const sql: Sql = opsConsoleDb();
  // the replayed event's audit reason; the other functions prove the operator and set it themselves
  const reason = a.action === "replay_webhook"
    ? sql`, set_config('reserve.reason', ${`replay_webhook by ${who}: ${a.reason}`}, true) as reason`
    : sql``;
  const [row] = await sql`
    select (done.result).* from (
      select ${callOf(sql, a, who)} as result
      from (select
              -- the repairs' name to prove (require_operator): taken by the database from the console's login only
              set_config('reserve.actor', ${who}, true) as actor,
              -- the token's subject: taken by the database from the console's login only (correction_actor), which
              -- proves the on-call, correction and repair functions' operator, and 4-eyes compares
              set_config('reserve.operator_subject', ${operator.sub}, true) as subject
              ${reason}
            offset 0) as proven
      offset 0) as done`;
  return row;
}

export async function action(req: Request, operator: Operator): Promise<Response> {
  const read = await readJsonBody(req, 16_384);
  if (read instanceof Response) return read;
  const raw = read.value;
  const parsed = Action.safeParse(raw);
  if (!parsed.success) return invalidRequest("the action or one of its fields is not valid", parsed.error.issues);
  if (parsed.data.action === "block_unit_dates" && parsed.data.to <= parsed.data.from) {
    return invalidRequest("the block holds no night", [{ path: ["to"], message: "must be after from (to is the first night not blocked)" }]);
  }
  if (parsed.data.action === "create_alert_silence" && !parsed.data.alert_name && !parsed.data.severity) {
    return invalidRequest("a silence needs a matcher", [{ path: ["alert_name"], message: "give an alert_name, a severity, or both" }]);
  }
  try {
    const result = await run(operator, parsed.data);
    return json({ ok: true, action: parsed.data.action, operator: operatorName(operator), result: result ?? null });
  } catch (err) {
    if (err instanceof OpsConsoleLoginMissing) {
      console.error(`ops ${parsed.data.action}: RESERVE_OPS_DB_URL is not set`);
      return errorJson(503, "ops_login_missing", "the console's actions need its own database login (RESERVE_OPS_DB_URL), which is not configured");
    }
    return dbErrorResponse(err, `ops ${parsed.data.action}`);
  }
}

/** Everything the console shows, in one read. */
export async function overview(): Promise<Response> {
  const sql = db();
  try {
    const [alerts, incidents, health, stuck, webhooks, failedWebhooks, overbooking, corrections, successRate, lag, silences, outbox, blocks] =
      await Promise.all([
        sql`select r.alert_name, r.severity, r.runbook_section, r.summary, coalesce(s.state, 'resolved') as state, s.observed_value,
                   s.threshold, s.active_since, s.fired_at, s.resolved_at, s.last_evaluated, s.details,
                   reserve.alert_silence_for(r.alert_name, r.severity) as silenced_by
            from reserve.alert_rules r left join reserve.alert_states s using (alert_name)
            where r.is_enabled
            order by case coalesce(s.state, 'resolved') when 'firing' then 0 when 'pending' then 1 else 2 end, r.severity, r.alert_name`,
        sql`select c.*, extract(epoch from now())::float8 as now_epoch from reserve.incident_clocks c
            where c.status <> 'closed' or c.closed_at > now() - interval '7 days'
            order by c.status = 'closed', c.severity, c.opened_at desc limit 50`,
        sql`select * from reserve.system_health_check()
            order by case status when 'CRITICAL' then 0 when 'WARNING' then 1 else 2 end, check_name`,
        sql`select payment_id, provider, method, status, amount, currency, gateway_payment_id, age_minutes, threshold_minutes,
                   last_polled_at, last_poll_result
            from reserve.stuck_payments order by age_minutes desc limit 100`,
        sql`select * from reserve.webhook_status order by provider`,
        sql`select id, provider, event_id, event_type, status, attempts, error_message, received_at, next_retry_at
            from reserve.processed_webhooks where status in ('failed', 'dead') order by received_at desc limit 50`,
        sql`select unit_id, unit_name, city_code, date, allotment, bookings_count, temp_holds, oversold_by
            from reserve.overbooking_check order by date limit 100`,
        sql`select id, status, target_transaction_id, entries, reason, proposed_by, proposed_at
            from reserve.ledger_corrections where status = 'proposed' order by proposed_at`,
        sql`select date_trunc('hour', created_at) as hour,
                   count(*) filter (where status = 'succeeded')::int as succeeded,
                   count(*) filter (where status not in ('pending', 'processing'))::int as decided,
                   count(*)::int as created
            from reserve.payments where created_at > date_trunc('hour', now()) - interval '23 hours'
            group by 1 order by 1`,
        sql`select date_trunc('hour', received_at) as hour,
                   round(avg(extract(epoch from processed_at - coalesce(event_created_at, received_at)))::numeric, 1)::float8 as avg_s,
                   round(max(extract(epoch from processed_at - coalesce(event_created_at, received_at)))::numeric, 1)::float8 as max_s,
                   count(*)::int as events
            from reserve.processed_webhooks
            where received_at > date_trunc('hour', now()) - interval '23 hours' and processed_at is not null
            group by 1 order by 1`,
        sql`select id, alert_name, severity, starts_at, ends_at, author, reason from reserve.alert_silences
            where ended_at is null and ends_at > now() order by ends_at`,
        sql`select channel, count(*) filter (where delivered_at is null and cancelled_at is null and silenced_by is null)::int as waiting,
                   count(*) filter (where delivered_at is null and cancelled_at is null and attempts > 0)::int as failing,
                   min(due_at) filter (where delivered_at is null and cancelled_at is null and silenced_by is null) as oldest_due,
                   max(delivered_at) as last_delivered
            from reserve.notification_outbox group by channel order by channel`,
        sql`select id, unit_id, from_date, to_date, reason, blocked_by, blocked_at from reserve.ops_blocks
            where unblocked_at is null order by blocked_at desc limit 50`,
      ]);
    const ledger = health.filter((h) => h.check_name === "ledger_balance" || h.check_name === "ledger_trigger_enabled");
    return json({
      generated_at: new Date().toISOString(), alerts, incidents, health, stuck_payments: stuck, webhooks,
      failed_webhooks: failedWebhooks, ledger, overbooking, corrections, success_rate: successRate, webhook_lag: lag,
      silences, outbox, blocks,
    });
  } catch (err) {
    return dbErrorResponse(err, "ops overview");
  }
}

export async function review(ref: string | null): Promise<Response> {
  const parsed = incident.safeParse(ref ?? "");
  if (!parsed.success) return invalidRequest("which incident?", parsed.error.issues.map((i) => ({ ...i, path: ["incident"] })));
  try {
    const [r] = await db()`select reserve.incident_review(${parsed.data}) as markdown`;
    const items = await db()`select i.id, i.action, i.owner, i.due_date::text, i.status from reserve.incident_action_items i
                             join reserve.incidents x on x.id = i.incident_id
                             where x.reference = upper(${parsed.data}) or x.id::text = lower(${parsed.data}) order by i.due_date`;
    return json({ incident: parsed.data, markdown: r.markdown, action_items: items });
  } catch (err) {
    return dbErrorResponse(err, "ops review");
  }
}
