// Called by cron (pg_cron + pg_net on Supabase, `npm start` locally) with the shared secret: asks the
// providers about payments in flight whose poll is due, applies their answers through the same state
// machine as webhooks, expires PIX charges and card attempts left unpaid, releases lapsed holds, retries
// failed webhook events (webhooks.ts), sends the refunds we owe (refunds.ts), and leaves a heartbeat.
// Bounded by a batch size and a time budget; what is left is due next run.
import { z } from "zod";
import { cronRequest } from "../_shared/cron_secret.ts";
import { dbUntil, isDatabaseUnavailable, type Sql } from "../_shared/db.ts";
import { DATABASE_RETRY_AFTER_S } from "../_shared/db_response.ts";
import { json } from "../_shared/http.ts";
import { providerNamed } from "../_shared/providers/registry.ts";
import { ProviderError, UnusableAnswer, type ProviderUpdate } from "../_shared/providers/types.ts";
import { unusableUpdate, updateJson } from "../_shared/webhook.ts";
import { sendRefunds, type RefundTally } from "./refunds.ts";
import { retryWebhooks, type WebhookTally } from "./webhooks.ts";

const Options = z.strictObject({
  batch_size: z.int().min(1).max(1000).default(100),
  concurrency: z.int().min(1).max(32).default(8),
  budget_ms: z.int().min(100).max(120_000).default(25_000),
  // an operator asking about these payments now, whenever their next poll was due
  payment_ids: z.array(z.uuid()).min(1).max(1000).optional(),
  scheduled_at: z.string().optional(),
});

interface Due {
  payment_id: string;
  provider: string;
  method: string;
  gateway_payment_id: string | null;
}

/** What the payment's provider says about it now; null when it cannot say (record_poll_result decides). */
async function askProvider(p: Due): Promise<ProviderUpdate | null> {
  const provider = providerNamed(p.provider);
  if (!provider) throw new ProviderError(p.provider, "not_configured", `no payment provider ${p.provider}`);
  if (p.gateway_payment_id) return provider.readPayment(p.gateway_payment_id);
  // never recorded at the provider by the checkout: a provider that finds payments by our id may know it
  return provider.findPayment ? provider.findPayment(p.payment_id) : null;
}

interface Tally extends WebhookTally, RefundTally {
  claimed: number;
  unchanged: number;
  applied: number;
  expired: number;
  errors: number;
  refused: number;
  finalized: number;
  by_status: Record<string, number>;
}

/**
 * The database as this run's statements found it. One terminated connection is reconnected at once, so
 * polling goes on; a database that stays away for DATABASE_LOST_MS (no statement succeeding since the
 * first lost one) ends the polling: asking providers about payments whose answers cannot be recorded
 * would only spend their rate limits.
 */
interface Run { lostSince?: number; lastLoss?: unknown }
const DATABASE_LOST_MS = 1_000;
const databaseGone = (run: Run) => run.lostSince !== undefined && Date.now() - run.lostSince >= DATABASE_LOST_MS;

async function pollOne(sql: Sql, p: Due, t: Tally, run: Run): Promise<void> {
  let u: ProviderUpdate | null = null;
  let pollError: string | null = null;
  try {
    u = await askProvider(p);
    const unusable = u && unusableUpdate(u);
    if (unusable) throw new UnusableAnswer(unusable);
  } catch (err) {
    // whatever went wrong asking the provider is this payment's poll error, not the run's
    u = null;
    pollError = err instanceof ProviderError || err instanceof UnusableAnswer ? err.message : `${p.provider}: ${(err as Error)?.message ?? err}`;
  }
  let r: { outcome: string; status: string; finalize_outcome: string | null };
  try {
    const update = u ? updateJson(u) : null;
    [r] = await sql<{ outcome: string; status: string; finalize_outcome: string | null }[]>`
      select outcome, status, finalize_outcome from reserve.record_poll_result(
        ${p.payment_id}::uuid, reserve.as_provider_update(${update ? sql.json(update as never) : null}), ${pollError})`;
  } catch (err) {
    // one payment the database refuses must not stop the others; its lease runs out and it comes due again
    console.error(`poll_payment_status: payment ${p.payment_id}: database error ${(err as { code?: string })?.code ?? "unknown"}`);
    t.errors++;
    if (isDatabaseUnavailable(err)) {
      run.lostSince ??= Date.now();
      run.lastLoss = err;
    }
    return;
  }
  run.lostSince = undefined;
  if (pollError) t.errors++;
  if (r.outcome === "applied") t.applied++;
  else if (r.outcome === "expired") t.expired++;
  else if (r.outcome === "refused") t.refused++;
  else if (!pollError) t.unchanged++;
  if (r.finalize_outcome === "created") t.finalized++;
  t.by_status[r.status] = (t.by_status[r.status] ?? 0) + 1;
}

/**
 * Runs fn over items with at most n at once, starting none after `deadline` or once `stop()` says so
 * (what is not started keeps its lease, which runs out: it is due again next run).
 */
async function pool<T>(items: T[], n: number, deadline: number, stop: () => boolean, fn: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, async () => {
    while (next < items.length && Date.now() < deadline && !stop()) await fn(items[next++]);
  }));
}

// Polling stops at this share of the budget, so the rest (holds, failed webhooks, refunds) always gets
// a turn; past the budget nothing new starts, and a statement still running gets the grace to end.
const POLLING_SHARE = 0.8;
const BUDGET_GRACE_MS = 2_000;
// The heartbeat is written even after a run that used its whole budget, within this much more.
const HEARTBEAT_TIMEOUT_MS = 2_000;

export async function handler(req: Request): Promise<Response> {
  const opts = await cronRequest(req, "poll_payment_status", Options);
  if (opts instanceof Response) return opts;
  const { batch_size, concurrency, budget_ms, payment_ids } = opts;

  const startedAt = new Date();
  const deadline = Date.now() + budget_ms;
  const pollingDeadline = Date.now() + budget_ms * POLLING_SHARE;
  // every statement of the run ends by the budget (and its grace), however the connections behave
  const sql = dbUntil(deadline + BUDGET_GRACE_MS);
  const t: Tally = {
    claimed: 0, unchanged: 0, applied: 0, expired: 0, errors: 0, refused: 0, finalized: 0, by_status: {},
    webhooks_retried: 0, webhooks_completed: 0, webhooks_dead: 0, refunds_sent: 0, refunds_failed: 0, refunds_retrying: 0,
    refunds_looked_up: 0, refunds_confirmed: 0,
  };
  let released = { released_locks: 0, expired_intents: 0 };
  let failure: string | undefined;
  let unavailable = false;
  const run: Run = {};
  try {
    while (Date.now() < pollingDeadline) {
      const due = await sql<Due[]>`
        select payment_id, provider, method, gateway_payment_id
        from reserve.claim_payments_to_poll(${batch_size}, ${`${Math.ceil(budget_ms / 1000) + 60} seconds`}::interval,
                                            ${payment_ids ?? null}::uuid[])`;
      if (due.length === 0) break;
      t.claimed += due.length;
      // asking providers about payments whose answers cannot be recorded would only spend their rate limits
      await pool(due, concurrency, pollingDeadline, () => databaseGone(run), (p) => pollOne(sql, p, t, run));
      if (databaseGone(run)) throw run.lastLoss;
      if (due.length < batch_size || payment_ids) break;
    }
    [released] = await sql<{ released_locks: number; expired_intents: number }[]>`
      select released_locks, expired_intents from reserve.release_expired_holds()`;
    await retryWebhooks(sql, t, deadline);
    await sendRefunds(sql, t, deadline);
  } catch (err) {
    const code = (err as { code?: unknown })?.code;
    unavailable = isDatabaseUnavailable(err);
    // a lost connection's message names the host: the code is enough
    failure = unavailable ? `database unavailable (${typeof code === "string" ? code : "timeout"})`
      : typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) ? `database error ${code}` : `failed: ${(err as Error)?.message ?? err}`;
    console.error(`poll_payment_status: ${failure}`);
  }
  const summary = { ...t, ...released, duration_ms: Date.now() - startedAt.getTime(), ...(failure && { error: failure }) };
  try {
    await dbUntil(Date.now() + HEARTBEAT_TIMEOUT_MS)`select reserve.record_job_heartbeat('poll_payment_status', ${startedAt.toISOString()}, ${!failure}, ${sql.json(summary)})`;
  } catch {
    // a heartbeat we cannot write is exactly what the staleness alert is for
  }
  if (unavailable) {
    return json({ ok: false, ...summary, error: "database_unavailable", message: failure }, 503, { "retry-after": String(DATABASE_RETRY_AFTER_S) });
  }
  return json({ ok: !failure, ...summary }, failure ? 500 : 200);
}
