// Called by cron (pg_cron + pg_net on Supabase, `npm start` locally; every 15 minutes, for yesterday until
// it is done, then it has nothing to list) with the shared secret, or by an operator for a window: for each provider (or the one named), lists its payments created in the window
// page by page (PaymentProvider.listPayments) and hands each page to reserve.reconcile_provider_objects,
// which records the differences and repairs what the state machine can; then its payouts
// (listPayouts: paid ones move the receivable to the bank), the refunds and disputes created in the window
// (listMoneyMoves: payments made before it are read again, disputes recorded with what they hold back) and,
// where the provider reports one, its balance against the receivable (finish_reconciliation_run). An object
// the module cannot read is set aside as an item (record_unreadable_provider_objects), the rest used. Bounded by a time budget: the run keeps its
// cursor, and the next call for the same window resumes it. A provider that fails leaves its run
// running, to be resumed; reconciliation_stale says when one never finishes.
import { z } from "zod";
import { cronRequest } from "../_shared/cron_secret.ts";
import { dbUntil, isDatabaseUnavailable, type Sql } from "../_shared/db.ts";
import { DATABASE_RETRY_AFTER_S } from "../_shared/db_response.ts";
import { errorJson, json } from "../_shared/http.ts";
import { PROVIDER_NAMES, providerNamed } from "../_shared/providers/registry.ts";
import {
  ProviderError, UnusableAnswer, type ListCursor, type ListWindow, type PaymentProvider, type ProviderUpdate, type UnreadableObject,
} from "../_shared/providers/types.ts";
import { hasUnsafeChars, safeText, sanitizeJson } from "../_shared/sanitize.ts";
import { instant } from "../_shared/text_fields.ts";
import { unusableUpdate, updateJson } from "../_shared/webhook.ts";

const DAY_MS = 86_400_000;
// a payment we made at 23:59:59 may be created at the provider a moment later: listed, never missed
const LIST_SLACK_MS = 10 * 60_000;
// payments of ours changed while a run listed the window, read again one by one before it ends: more
// wait for the next run over the window (a manual one), and the run's budget stays the bound
const MAX_REREAD = 1000;
const BUDGET_GRACE_MS = 2_000;
const HEARTBEAT_TIMEOUT_MS = 2_000;

const Options = z.strictObject({
  provider: z.enum(PROVIDER_NAMES as [string, ...string[]]).optional(),
  from: instant().optional(),
  to: instant().optional(),
  budget_ms: z.int().min(100).max(120_000).default(25_000),
  page_size: z.int().min(1).max(100).default(100),
  scheduled_at: z.string().optional(),
}).refine((o) => (o.from === undefined) === (o.to === undefined), { message: "give both from and to, or neither (yesterday, UTC)", path: ["from"] })
  .refine((o) => o.from === undefined || Date.parse(o.to!) > Date.parse(o.from), { message: "to must be after from", path: ["to"] })
  .refine((o) => o.from === undefined || Date.parse(o.to!) - Date.parse(o.from) <= 31 * DAY_MS, { message: "a window is at most 31 days", path: ["to"] });

interface Run {
  id: string;
  provider: string;
  status: string;
  cursor: { next?: ListCursor | null; listed?: boolean } | null;
  objects: number;
  provider_calls: number;
  items: number;
  repaired: number;
  unrepaired: number;
  /** this database's time at the run's last call: before whatever the provider is read for next */
  heartbeat_at: Date;
}

interface Outcome {
  provider: string;
  run_id?: string;
  status: string;
  objects?: number;
  provider_calls?: number;
  items?: number;
  repaired?: number;
  unrepaired?: number;
  unusable?: number;
  /** the schedule found this window already reconciled */
  already_done?: boolean;
  error?: string;
}

function yesterday(now = Date.now()): ListWindow {
  const to = new Date(Math.floor(now / DAY_MS) * DAY_MS);
  return { from: new Date(to.getTime() - DAY_MS), to };
}

const runColumns = "id, provider, status, cursor, objects, provider_calls, items, repaired, unrepaired, heartbeat_at";

/** One provider's run for the window, from where it stopped to the end or the deadline. */
async function reconcileProvider(sql: Sql, provider: PaymentProvider, window: ListWindow, pageSize: number, deadline: number,
                                 once: boolean): Promise<Outcome> {
  if (once) {
    // the schedule's call for yesterday: a window already reconciled is not listed again
    const [doneRun] = await sql<Run[]>`
      select ${sql.unsafe(runColumns)} from reserve.reconciliation_runs
      where provider = ${provider.name} and window_from = ${window.from.toISOString()} and window_to = ${window.to.toISOString()}
        and status = 'done'
      order by finished_at desc limit 1`;
    if (doneRun) {
      return { provider: provider.name, run_id: doneRun.id, status: doneRun.status, objects: doneRun.objects,
               provider_calls: doneRun.provider_calls, items: doneRun.items, repaired: doneRun.repaired,
               unrepaired: doneRun.unrepaired, already_done: true };
    }
  }
  const [begun] = await sql<Run[]>`
    select ${sql.unsafe(runColumns)} from reserve.begin_reconciliation_run(${provider.name}, ${window.from.toISOString()}, ${window.to.toISOString()})`;
  let run = begun!;
  let unusable = 0;
  const listWindow = { from: window.from, to: new Date(Math.min(window.to.getTime() + LIST_SLACK_MS, Math.max(Date.now(), window.to.getTime()))) };
  const outcome = (r: Run, extra: Partial<Outcome> = {}): Outcome => ({
    provider: provider.name, run_id: r.id, status: r.status, objects: r.objects, provider_calls: r.provider_calls, items: r.items,
    repaired: r.repaired, unrepaired: r.unrepaired, ...(unusable && { unusable }), ...extra,
  });
  // recorded before what came with them, so a run cut short after it still has them (a rerun refreshes them)
  const setAside = async (objects: UnreadableObject[] | undefined) => {
    if (!objects?.length) return;
    unusable += objects.length;
    const rows = objects.map((o) => ({
      kind: o.kind, reason: safeText(o.reason, 2000), provider_object: sanitizeJson(o.object ?? null),
      // an id PostgreSQL cannot store, escaped, would name another object: such an object is named by its hash
      object_id: o.objectId !== undefined && !hasUnsafeChars(o.objectId) ? o.objectId : undefined,
    }));
    [run] = await sql<Run[]>`
      select ${sql.unsafe(runColumns)} from reserve.record_unreadable_provider_objects(${run.id}::uuid, ${sql.json(rows as never)})`;
  };
  // an update no payment can hold is the provider's fault: set aside, never half-applied
  const sortUpdate = (u: ProviderUpdate, updates: Record<string, unknown>[], unreadable: UnreadableObject[], objectId?: string) => {
    const why = unusableUpdate(u);
    if (why) unreadable.push({ kind: "payment", objectId: objectId ?? (typeof u.gatewayPaymentId === "string" ? u.gatewayPaymentId : undefined), reason: why, object: u.object });
    else updates.push(updateJson(u));
  };
  try {
    while (!run.cursor?.listed) {
      if (Date.now() >= deadline) return outcome(run);
      // our payments changed after this are not judged by the page (a refund confirmed while it was read)
      const readAfter = run.heartbeat_at;
      const page = await provider.listPayments(listWindow, run.cursor?.next ?? null, pageSize);
      const updates: Record<string, unknown>[] = [];
      const unreadable = [...page.unreadable ?? []];
      for (const u of page.updates) sortUpdate(u, updates, unreadable);
      await setAside(unreadable);
      const cursor = page.next ? { next: page.next } : { listed: true };
      [run] = await sql<Run[]>`
        select ${sql.unsafe(runColumns)} from reserve.reconcile_provider_objects(
          ${run.id}::uuid, ${sql.json(updates as never)}, ${sql.json(cursor as never)}, ${page.calls}, ${readAfter})`;
    }
    if (Date.now() >= deadline) return outcome(run);
    let calls = 0;
    // payments of ours read again one by one after the listing and compared like the listed ones:
    // - those of the window that changed after their page was read (a refund confirmed, a stay cancelled
    //   meanwhile), which it did not judge; a scheduled window is listed once, so they are judged now;
    // - those whose money the provider's refund and dispute listings say moved in the window: one made
    //   before it was not listed, one listed may have been read before the move
    const changed = await sql<{ gateway_payment_id: string }[]>`
      select x.gateway_payment_id from reserve.payments x join reserve.reconciliation_runs r on r.id = ${run.id}::uuid
      where x.provider = r.provider and x.created_at >= r.window_from and x.created_at < r.window_to
        and x.gateway_payment_id is not null and x.updated_at >= r.started_at
      order by x.updated_at limit ${MAX_REREAD}`;
    const moves = provider.listMoneyMoves ? await provider.listMoneyMoves(window) : null;
    if (moves) {
      calls += moves.calls;
      await setAside(moves.unreadable);
    }
    const moved = new Set(!moves?.gatewayPaymentIds.length ? [] : (await sql<{ gateway_payment_id: string }[]>`
      select gateway_payment_id from reserve.payments
      where provider = ${provider.name} and gateway_payment_id = any(${moves.gatewayPaymentIds}::text[])`).map((x) => x.gateway_payment_id));
    const reread = [...new Set([...moved, ...changed.map((x) => x.gateway_payment_id)])];
    for (let i = 0; i < reread.length; i += pageSize) {
      if (Date.now() >= deadline) return outcome(run);
      const readAfter = run.heartbeat_at;
      const batch = reread.slice(i, i + pageSize);
      const updates: Record<string, unknown>[] = [];
      const unreadable: UnreadableObject[] = [];
      for (const id of batch) {
        try {
          sortUpdate(await provider.readPayment(id), updates, unreadable, id);
        } catch (err) {
          // a payment its own listing of refunds or disputes named, which it then does not know or refuses
          // to read, is as unreadable as one it answers wrong: set aside, or the run would stop on it every
          // time (a provider down or slow is still the run's error, resumed). One of ours it does not know
          // is for finish_reconciliation_run to judge.
          const unknown = err instanceof ProviderError && (err.kind === "not_found" || err.kind === "rejected");
          if (!(err instanceof UnusableAnswer) && !unknown) throw err;
          if (moved.has(id) || !unknown) unreadable.push({ kind: "payment", objectId: id, reason: (err as Error).message, object: null });
        }
      }
      await setAside(unreadable);
      [run] = await sql<Run[]>`
        select ${sql.unsafe(runColumns)} from reserve.reconcile_provider_objects(
          ${run.id}::uuid, ${sql.json(updates as never)}, ${sql.json({ listed: true } as never)}, ${batch.length}, ${readAfter})`;
    }
    if (moves) {
      const disputes = moves.disputes.map((d) => ({
        dispute_id: d.disputeId, gateway_payment_id: d.gatewayPaymentId, amount: d.amount, currency: d.currency, status: d.status,
        withheld: d.withheld, fee: d.fee, due_by: d.dueBy?.toISOString(), provider_object: sanitizeJson(d.object),
      }));
      [run] = await sql<Run[]>`
        select ${sql.unsafe(runColumns)} from reserve.reconcile_provider_disputes(${run.id}::uuid, ${sql.json(disputes as never)})`;
    }
    if (provider.listPayouts) {
      const listed = await provider.listPayouts(window);
      calls += listed.calls;
      await setAside(listed.unreadable);
      const payouts = listed.payouts.map((p) => ({
        payout_id: p.payoutId, amount: p.amount, currency: p.currency, status: p.status,
        created_at: p.createdAt?.toISOString(), arrival_at: p.arrivalAt?.toISOString(),
        provider_object: sanitizeJson(p.object),
      }));
      await sql`select reserve.reconcile_provider_payouts(${run.id}::uuid, ${sql.json(payouts as never)})`;
    }
    let balances: { currency: string; amount: number }[] | null = null;
    if (provider.readBalance) {
      balances = await provider.readBalance();
      calls++;
    }
    [run] = await sql<Run[]>`
      select ${sql.unsafe(runColumns)} from reserve.finish_reconciliation_run(
        ${run.id}::uuid, ${balances ? sql.json(balances as never) : null}, null, ${calls})`;
    return outcome(run);
  } catch (err) {
    if (err instanceof ProviderError || err instanceof UnusableAnswer) {
      // the run keeps its cursor and is resumed by the next call for this window
      return outcome(run, { error: err.message });
    }
    throw err;
  }
}

export async function handler(req: Request): Promise<Response> {
  const o = await cronRequest(req, "reconcile", Options);
  if (o instanceof Response) return o;
  const window = o.from ? { from: new Date(o.from), to: new Date(o.to!) } : yesterday();
  const named = o.provider ? providerNamed(o.provider) : undefined;
  if (named && !named.configured()) return errorJson(409, "provider_not_configured", `${named.name} is not configured: nothing to reconcile with`);
  const providers = named ? [named] : PROVIDER_NAMES.map((n) => providerNamed(n)!).filter((p) => p.configured());

  const startedAt = new Date();
  const deadline = Date.now() + o.budget_ms;
  const sql = dbUntil(deadline + BUDGET_GRACE_MS);
  const runs: Outcome[] = [];
  let failure: string | undefined;
  let unavailable = false;
  try {
    for (const p of providers) runs.push(await reconcileProvider(sql, p, window, o.page_size, deadline, !o.from));
  } catch (err) {
    const code = (err as { code?: unknown })?.code;
    unavailable = isDatabaseUnavailable(err);
    failure = unavailable ? `database unavailable (${typeof code === "string" ? code : "timeout"})`
      : typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) ? `database error ${code}` : `failed: ${(err as Error)?.message ?? err}`;
    console.error(`reconcile: ${failure}`);
  }
  const done = !failure && runs.every((r) => r.status === "done");
  const summary = { window: { from: window.from.toISOString(), to: window.to.toISOString() }, runs,
                    duration_ms: Date.now() - startedAt.getTime(), ...(failure && { error: failure }) };
  try {
    await dbUntil(Date.now() + HEARTBEAT_TIMEOUT_MS)`
      select reserve.record_job_heartbeat('reconcile', ${startedAt.toISOString()}, ${!failure && runs.every((r) => !r.error)}, ${sql.json(summary as never)})`;
  } catch {
    // a heartbeat we cannot write is what reconciliation_stale is for
  }
  if (unavailable) {
    return json({ ok: false, done: false, ...summary, error: "database_unavailable", message: failure }, 503, { "retry-after": String(DATABASE_RETRY_AFTER_S) });
  }
  return json({ ok: !failure && runs.every((r) => !r.error), done, ...summary }, failure ? 500 : 200);
}
