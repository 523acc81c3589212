// Called by cron every minute (pg_cron + pg_net on Supabase, `npm start` locally) with the shared
// secret: evaluate_alerts() moves the alerts and incident clocks and writes what is to be told into the
// outbox in one transaction; then the outbox is delivered: claimed in batches (SKIP LOCKED, so two runs
// never send one row twice), sent to PagerDuty or Slack, each answer recorded (delivered, or retried
// with backoff). Digest rows due together go out as one Slack message. Bounded by a time budget.
import { z } from "zod";
import { cronRequest } from "../_shared/cron_secret.ts";
import { dbUntil, isDatabaseUnavailable, type Sql } from "../_shared/db.ts";
import { DATABASE_RETRY_AFTER_S } from "../_shared/db_response.ts";
import { json } from "../_shared/http.ts";
import { pagerDutyConfig, sendPagerDuty } from "../_shared/receivers/pagerduty.ts";
import { sendSlack, slackDigest, slackMessage, slackWebhookUrl } from "../_shared/receivers/slack.ts";
import { headingAnchor, type Delivery, type OutboxRow, type ReceiverContext } from "../_shared/receivers/types.ts";

const Options = z.strictObject({
  evaluate: z.boolean().default(true),
  deliver: z.boolean().default(true),
  batch_size: z.int().min(1).max(500).default(50),
  concurrency: z.int().min(1).max(16).default(4),
  budget_ms: z.int().min(100).max(120_000).default(20_000),
  scheduled_at: z.string().optional(),
});

const env = (k: string) => Deno.env.get(k);

export function receiverContext(): ReceiverContext {
  const base = env("RESERVE_RUNBOOK_URL") || "docs/RUNBOOK.md";
  const functions = env("RESERVE_PUBLIC_FUNCTIONS_URL") || (env("SUPABASE_URL") ? `${env("SUPABASE_URL")}/functions/v1` : undefined);
  const timeout = Number(env("RESERVE_NOTIFY_TIMEOUT_MS"));
  return {
    runbookLink: (section) => `${base}#${headingAnchor(section)}`,
    consoleUrl: functions ? `${functions}/ops/` : undefined,
    timeoutMs: Number.isFinite(timeout) && timeout > 0 ? timeout : 5_000,
    fetch: (input, init) => fetch(input, init),
  };
}

interface Tally {
  claimed: number;
  delivered: number;
  failed: number;
  by_channel: Record<string, { delivered: number; failed: number }>;
  errors: string[];
}

async function record(sql: Sql, row: OutboxRow, d: Delivery, t: Tally): Promise<void> {
  await sql`select 1 from reserve.record_notification_result(${row.id}, ${d.delivered}, ${d.status}, ${d.error ?? null},
                                                              ${d.retryAfterSeconds ?? null})`;
  const c = (t.by_channel[row.channel] ??= { delivered: 0, failed: 0 });
  if (d.delivered) {
    t.delivered++;
    c.delivered++;
  } else {
    t.failed++;
    c.failed++;
    if (t.errors.length < 10) t.errors.push(`${row.channel} ${row.dedup_key}: ${d.error ?? d.status}`);
  }
}

async function deliverBatch(sql: Sql, rows: OutboxRow[], ctx: ReceiverContext, concurrency: number, t: Tally): Promise<void> {
  const pd = pagerDutyConfig(env);
  const slack = slackWebhookUrl(env);
  const digest = rows.filter((r) => r.channel === "digest");
  const single = rows.filter((r) => r.channel !== "digest");
  let next = 0;
  const worker = async () => {
    while (next < single.length) {
      const row = single[next++]!;
      const d = row.channel === "pagerduty" ? await sendPagerDuty(row, pd, ctx) : await sendSlack(slackMessage(row, ctx), slack, ctx);
      await record(sql, row, d, t);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, single.length) }, worker));
  if (digest.length) {
    const d = await sendSlack(slackDigest(digest, ctx), slack, ctx);
    for (const row of digest) await record(sql, row, d, t);
  }
}

export async function handler(req: Request): Promise<Response> {
  const o = await cronRequest(req, "notify", Options);
  if (o instanceof Response) return o;

  const started = Date.now();
  const deadline = started + o.budget_ms;
  const sql = dbUntil(deadline + 2_000);
  const ctx = receiverContext();
  const t: Tally = { claimed: 0, delivered: 0, failed: 0, by_channel: {}, errors: [] };
  let evaluation: Record<string, unknown> | null = null;
  try {
    if (o.evaluate) evaluation = (await sql<Record<string, unknown>[]>`select * from reserve.evaluate_alerts()`)[0] ?? null;
    // a receiver's attempt may take timeoutMs: a batch is claimed only while one fits in the budget
    while (o.deliver && deadline - Date.now() > ctx.timeoutMs) {
      // the lease covers the whole batch (each worker sends its share one after another, each up to the
      // timeout) with room to record the answers: a row is never claimed again while its first send runs
      const lease = Math.min(3600, Math.ceil((Math.ceil(o.batch_size / o.concurrency) * ctx.timeoutMs + 10_000) / 1000));
      const rows = await sql<OutboxRow[]>`select * from reserve.claim_notifications(${o.batch_size}, ${lease})`;
      if (rows.length === 0) break;
      t.claimed += rows.length;
      await deliverBatch(sql, rows, ctx, o.concurrency, t);
      if (rows.length < o.batch_size) break;
    }
  } catch (err) {
    const code = (err as { code?: unknown })?.code;
    if (isDatabaseUnavailable(err)) {
      console.error(`notify: database unavailable (${typeof code === "string" ? code : "timeout"})`);
      return json({ ok: false, error: "database_unavailable", evaluation, ...t }, 503, { "retry-after": String(DATABASE_RETRY_AFTER_S) });
    }
    const failure = typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) ? `database error ${code}` : `failed: ${(err as Error)?.message ?? err}`;
    console.error(`notify: ${failure}`);
    return json({ ok: false, error: "notify_failed", message: failure, evaluation, ...t }, 500);
  }
  if (t.failed) console.error(`notify: ${t.failed} undelivered, retried later: ${t.errors.join("; ")}`);
  return json({ ok: true, evaluation, ...t, duration_ms: Date.now() - started });
}
