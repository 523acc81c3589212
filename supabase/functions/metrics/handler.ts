// GET /functions/v1/metrics: the Prometheus text exposition format (version 0.0.4) of
// reserve.prometheus_samples(): health checks, alert states, payments, webhooks and their lag, job
// heartbeats, the notification outbox, open incidents; plus how long the read took.
//
// Bearer-protected with its own secret, RESERVE_METRICS_TOKEN (a scraper's config is read by more people
// than the cron's, so it gets a key that can only read metrics). Unset, the cron secret is accepted, so a
// fresh project can be scraped at once; set a dedicated one in production.
import { timingSafeEqual } from "../_shared/crypto.ts";
import { db, isDatabaseUnavailable } from "../_shared/db.ts";
import { DATABASE_RETRY_AFTER_S } from "../_shared/db_response.ts";
import { errorJson, methodNotAllowed } from "../_shared/http.ts";

export interface Sample {
  metric: string;
  kind: string;
  help: string;
  labels: Record<string, string>;
  value: number;
}

const escapeLabel = (v: string) => v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
const escapeHelp = (v: string) => v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");

function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

/** The text format: one HELP and TYPE per metric, then its samples. */
export function renderPrometheus(samples: Sample[]): string {
  const byMetric = new Map<string, Sample[]>();
  for (const s of samples) (byMetric.get(s.metric) ?? byMetric.set(s.metric, []).get(s.metric)!).push(s);
  const out: string[] = [];
  for (const [metric, rows] of byMetric) {
    out.push(`# HELP ${metric} ${escapeHelp(rows[0]!.help)}`, `# TYPE ${metric} ${rows[0]!.kind}`);
    for (const r of rows) {
      const labels = Object.entries(r.labels ?? {}).map(([k, v]) => `${k}="${escapeLabel(String(v))}"`).join(",");
      out.push(`${metric}${labels ? `{${labels}}` : ""} ${formatValue(Number(r.value))}`);
    }
  }
  return out.join("\n") + "\n";
}

function authorized(req: Request): boolean | undefined {
  const secret = Deno.env.get("RESERVE_METRICS_TOKEN") || Deno.env.get("RESERVE_CRON_SECRET");
  if (!secret) return undefined;
  const given = req.headers.get("authorization")?.match(/^Bearer\s+(.+)$/i)?.[1] ?? "";
  return timingSafeEqual(given, secret);
}

export async function handler(req: Request): Promise<Response> {
  if (req.method !== "GET" && req.method !== "HEAD") return methodNotAllowed(["GET", "HEAD"]);
  const auth = authorized(req);
  if (auth === undefined) {
    console.error("metrics: neither RESERVE_METRICS_TOKEN nor RESERVE_CRON_SECRET is configured");
    return errorJson(500, "not_configured", "RESERVE_METRICS_TOKEN is not configured");
  }
  if (!auth) {
    return new Response(JSON.stringify({ error: "unauthorized", message: "a valid metrics token is required" }), {
      status: 401, headers: { "content-type": "application/json; charset=utf-8", "www-authenticate": 'Bearer realm="metrics"' },
    });
  }
  const started = performance.now();
  let samples: Sample[];
  try {
    samples = await db()<Sample[]>`select metric, kind, help, labels, value from reserve.prometheus_samples()`;
  } catch (err) {
    if (isDatabaseUnavailable(err)) {
      return new Response(JSON.stringify({ error: "database_unavailable", message: "the database did not answer" }), {
        status: 503, headers: { "content-type": "application/json; charset=utf-8", "retry-after": String(DATABASE_RETRY_AFTER_S) },
      });
    }
    throw err;
  }
  const body = renderPrometheus([
    ...samples,
    { metric: "reserve_metrics_read_seconds", kind: "gauge", help: "Seconds the database took to read these metrics.",
      labels: {}, value: Math.round(performance.now() - started) / 1000 },
  ]);
  return new Response(req.method === "HEAD" ? null : body, {
    status: 200, headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8", "cache-control": "no-store" },
  });
}
