// GET /functions/v1/metrics under real Deno: bearer-protected, Prometheus text format that a parser
// accepts (and a line-by-line check of the grammar: HELP and TYPE once per metric before its samples,
// reserve_ names, escaped labels, no duplicate series), with the values the database holds: health checks,
// alert states, payments by status and provider, webhooks and lag, heartbeats, outbox depth, incidents.
// @ts-expect-error the package ships no types
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { FunctionsServer } from "../../local/functions.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";
import { applyStatus } from "../helpers/money.ts";
import { startTestFunctions } from "../helpers/functions.ts";

const TOKEN = "metrics-token-for-tests";
let db: TestDatabase;
let fns: FunctionsServer;
beforeAll(async () => {
  db = await createTestDatabase();
  fns = await startTestFunctions(db.url, { RESERVE_METRICS_TOKEN: TOKEN, RESERVE_CRON_SECRET: "cron-secret-not-for-metrics" });
});
afterAll(async () => {
  await fns?.stop();
  await db?.drop();
});

const scrape = (token: string | null = TOKEN) =>
  fetch(fns.functionUrl("metrics"), { headers: token ? { authorization: `Bearer ${token}` } : {} });

interface Series { name: string; labels: Record<string, string>; value: number }

/** The exposition format's grammar, strictly: what Prometheus itself would refuse fails here. */
function checkGrammar(text: string): Series[] {
  const series: Series[] = [];
  const seen = new Set<string>();
  const declared = new Map<string, { help: boolean; type: boolean; samples: boolean }>();
  expect(text.endsWith("\n")).toBe(true);
  for (const line of text.slice(0, -1).split("\n")) {
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (meta) {
      const d = declared.get(meta[2]) ?? { help: false, type: false, samples: false };
      expect(d.samples, `${meta[1]} of ${meta[2]} after its samples`).toBe(false);
      if (meta[1] === "HELP") {
        expect(d.help, `second HELP for ${meta[2]}`).toBe(false);
        d.help = true;
      } else {
        expect(d.type, `second TYPE for ${meta[2]}`).toBe(false);
        expect(["counter", "gauge", "histogram", "summary", "untyped"]).toContain(meta[3]);
        d.type = true;
      }
      declared.set(meta[2], d);
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (NaN|[+-]Inf|-?\d+(\.\d+)?([eE][+-]?\d+)?)$/.exec(line);
    expect(m, `not a sample line: ${line}`).not.toBeNull();
    const name = m![1];
    expect(name).toMatch(/^reserve_[a-z0-9_]+$/);
    const d = declared.get(name);
    expect(d?.help && d?.type, `${name} has samples before HELP and TYPE`).toBe(true);
    d!.samples = true;
    const labels: Record<string, string> = {};
    if (m![3]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"(,|$)/gy;
      let rest = m![3];
      let lm: RegExpExecArray | null;
      let consumed = 0;
      while ((lm = re.exec(rest))) {
        labels[lm[1]] = lm[2].replace(/\\n/g, "\n").replace(/\\"/g, '"').replace(/\\\\/g, "\\");
        consumed = re.lastIndex;
      }
      expect(consumed, `bad labels: ${m![3]}`).toBe(rest.length);
      rest = "";
    }
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    expect(seen.has(key), `duplicate series ${key}`).toBe(false);
    seen.add(key);
    series.push({ name, labels, value: Number(m![4].replace("+Inf", "Infinity").replace("-Inf", "-Infinity")) });
  }
  return series;
}

const one = (series: Series[], name: string, labels: Record<string, string>) =>
  series.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));

describe("GET /functions/v1/metrics", () => {
  it("refuses a missing or wrong token (not the cron secret when a metrics token is set) and other methods", async () => {
    for (const t of [null, "wrong", "cron-secret-not-for-metrics"]) {
      const res = await scrape(t);
      expect(res.status).toBe(401);
      expect(res.headers.get("www-authenticate")).toMatch(/^Bearer/);
      expect((await res.json()).error).toBe("unauthorized");
    }
    const post = await fetch(fns.functionUrl("metrics"), { method: "POST", headers: { authorization: `Bearer ${TOKEN}` } });
    expect(post.status).toBe(405);
  });

  it("exposes what the database holds in a format Prometheus parses", async () => {
    const { unitId } = await f.unit(db.sql, { nights: 10 });
    for (const [n, status] of [[1, "succeeded"], [3, "failed"], [5, "processing"]] as const) {
      const [bi] = await db.sql`select * from reserve.create_booking_intent(${unitId}, ${f.isoDate(n)}::date, ${f.isoDate(n + 2)}::date, 2)`;
      const [p] = await db.sql`select * from reserve.create_payment(${bi.id}, 'stripe', 'card', ${bi.amount})`;
      if (status !== "processing") await applyStatus(db.sql, p.id as string, status);
      else await applyStatus(db.sql, p.id as string, "processing");
    }
    await db.sql`insert into reserve.processed_webhooks (provider, event_id, event_type, status, event_created_at, processed_at)
                 values ('stripe', 'evt_lag_1', 'payment_intent.succeeded', 'completed', now() - interval '40 seconds', now()),
                        ('stripe', 'evt_failed_1', 'payment_intent.succeeded', 'failed', null, null)`;
    await db.sql`alter table reserve.ledger_entries disable trigger trg_ledger_balance`;
    try {
      await db.sql`select reserve.evaluate_alerts()`;
    } finally {
      await db.sql`alter table reserve.ledger_entries enable trigger trg_ledger_balance`;
    }

    const res = await scrape();
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    const text = await res.text();
    const series = checkGrammar(text);
    const parsed = parsePrometheusTextFormat(text) as { name: string; type: string; help: string; metrics: unknown[] }[];
    expect(parsed.map((p) => p.name)).toEqual([...new Set(series.map((s) => s.name))]);
    expect(parsed.every((p) => p.type === "GAUGE" && p.help.length > 10)).toBe(true);

    expect(one(series, "reserve_health_check_status", { check: "ledger_trigger_enabled", status: "OK" })).toHaveLength(1);
    expect(one(series, "reserve_health_check_value", { check: "notification_outbox" })[0].value).toBe(0);
    expect(one(series, "reserve_alert_state", { alert: "ledger_trigger_disabled", state: "firing" })[0]).toMatchObject({ value: 1, labels: { severity: "P1" } });
    expect(one(series, "reserve_alert_state", { alert: "ledger_trigger_disabled", state: "resolved" })[0].value).toBe(0);
    for (const status of ["succeeded", "failed", "processing"]) {
      expect(one(series, "reserve_payments_24h", { provider: "stripe", status })[0].value).toBe(1);
    }
    expect(one(series, "reserve_payments_in_flight", { provider: "stripe", status: "processing" })[0].value).toBe(1);
    expect(one(series, "reserve_webhooks_1h", { provider: "stripe", status: "completed" })[0].value).toBe(1);
    expect(one(series, "reserve_webhook_failures", { provider: "stripe", status: "failed" })[0].value).toBe(1);
    const lag = one(series, "reserve_webhook_lag_seconds", { provider: "stripe", stat: "max" })[0].value;
    expect(lag).toBeGreaterThanOrEqual(39);
    expect(lag).toBeLessThan(120);
    expect(one(series, "reserve_job_last_run_ok", { job: "evaluate_alerts" })[0].value).toBe(1);
    const ran = one(series, "reserve_job_last_run_timestamp_seconds", { job: "evaluate_alerts" })[0].value;
    expect(Math.abs(ran - Date.now() / 1000)).toBeLessThan(60);
    // the firing P1 left a page and a post waiting (no deliverer ran), and an incident
    expect(one(series, "reserve_notification_outbox_depth", { channel: "pagerduty", silenced: "false" })[0].value).toBe(1);
    expect(one(series, "reserve_notification_outbox_depth", { channel: "slack", silenced: "false" })[0].value).toBe(1);
    expect(one(series, "reserve_incidents_open", { severity: "P1", status: "open" })[0].value).toBe(1);
    expect(one(series, "reserve_metrics_read_seconds", {})[0].value).toBeGreaterThan(0);
  });
});
