// Where on-call notifications go. One module per receiver (pagerduty.ts, slack.ts) behind this interface;
// the deliverer (notify/) never branches on a receiver's name beyond picking the module of a row's channel.

/** A notification_outbox row as the deliverer claims it. */
export interface OutboxRow {
  id: number;
  idempotency_key: string;
  channel: "pagerduty" | "slack" | "digest";
  event_action: "trigger" | "acknowledge" | "resolve" | "post";
  kind: "alert" | "escalation" | "reminder" | "incident";
  dedup_key: string;
  severity: "P1" | "P2" | "P3" | "P4";
  alert_name: string | null;
  incident_id: string | null;
  payload: Record<string, unknown>;
  attempts: number;
  created_at: string | Date;
}

/** What a receiver answered: delivered, or not with the status, an error to keep and the Retry-After it asked for. */
export interface Delivery {
  delivered: boolean;
  status: number | null;
  error?: string;
  retryAfterSeconds?: number;
}

export interface ReceiverContext {
  /** a link to the runbook section (docs/RUNBOOK.md#anchor under RESERVE_RUNBOOK_URL) */
  runbookLink(section: string): string;
  /** where operators act: the ops console */
  consoleUrl?: string;
  timeoutMs: number;
  fetch: typeof fetch;
}

/** The anchor GitHub (and most Markdown renderers) give a heading: lowercase, punctuation dropped, spaces to '-'. */
export function headingAnchor(title: string): string {
  return title.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, "").replace(/\s/g, "-");
}

/**
 * The longest Retry-After taken from a receiver: an hour. record_notification_result caps it again at the
 * backoff's max (setting notification_backoff_seconds, 10 minutes); this cap keeps what crosses into SQL an
 * integer (a Retry-After of 3000000000 was a 22003 on every run).
 */
export const MAX_RETRY_AFTER_SECONDS = 3600;

/** Seconds from a Retry-After header (delta-seconds or an HTTP date), at most MAX_RETRY_AFTER_SECONDS; undefined when absent or unreadable. */
export function retryAfterSeconds(value: string | null, now = Date.now()): number | undefined {
  if (!value) return undefined;
  const seconds = /^\d+$/.test(value.trim()) ? Number(value.trim()) : Math.ceil((Date.parse(value) - now) / 1000);
  return Number.isNaN(seconds) ? undefined : Math.min(MAX_RETRY_AFTER_SECONDS, Math.max(0, seconds));
}

/** POST JSON with a deadline: a receiver that hangs is a failed attempt, retried later. */
export async function postJson(ctx: ReceiverContext, url: string, body: unknown): Promise<{ res?: Response; text: string; error?: string }> {
  try {
    const res = await ctx.fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(ctx.timeoutMs),
    });
    return { res, text: await res.text() };
  } catch (err) {
    const e = err as Error;
    const timedOut = e?.name === "TimeoutError" || e?.name === "AbortError";
    return { text: "", error: timedOut ? `no answer within ${ctx.timeoutMs} ms` : `unreachable: ${e?.message ?? err}` };
  }
}

/** An answer that is not a delivery: what to keep of it (never more than a line). */
export function failure(res: Response | undefined, text: string, error?: string): Delivery {
  if (!res) return { delivered: false, status: null, error: error ?? "no answer" };
  return {
    delivered: false,
    status: res.status,
    error: `${res.status} ${text.replace(/\s+/g, " ").slice(0, 300)}`.trim(),
    retryAfterSeconds: retryAfterSeconds(res.headers.get("retry-after")),
  };
}
