// PagerDuty Events API v2 (POST https://events.pagerduty.com/v2/enqueue): trigger and resolve per
// dedup_key, severity from P1..P4, the runbook section as a link, the observed value and threshold in
// custom_details. 202 {status: "success", dedup_key} is a delivery; 400 (an event PagerDuty refuses),
// 429 (throttled, with Retry-After when given), 5xx and timeouts are failed attempts, retried by the outbox.
import { failure, postJson, type Delivery, type OutboxRow, type ReceiverContext } from "./types.ts";

export const PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue";

const SEVERITY: Record<OutboxRow["severity"], "critical" | "error" | "warning" | "info"> = {
  P1: "critical", P2: "error", P3: "warning", P4: "info",
};

export interface PagerDutyConfig {
  routingKey: string;
  eventsUrl: string;
}

export function pagerDutyConfig(env: (k: string) => string | undefined): PagerDutyConfig | undefined {
  const routingKey = env("PAGERDUTY_ROUTING_KEY");
  if (!routingKey) return undefined;
  return { routingKey, eventsUrl: env("PAGERDUTY_EVENTS_URL") || PAGERDUTY_EVENTS_URL };
}

const str = (v: unknown) => (v === null || v === undefined ? undefined : String(v));

/** The Events API v2 event of an outbox row. */
export function pagerDutyEvent(row: OutboxRow, cfg: PagerDutyConfig, ctx: ReceiverContext): Record<string, unknown> {
  const p = row.payload;
  const base = { routing_key: cfg.routingKey, event_action: row.event_action, dedup_key: row.dedup_key };
  if (row.event_action !== "trigger") return base;
  const section = str(p.runbook_section);
  const links = [
    ...(section ? [{ href: ctx.runbookLink(section), text: `Runbook: ${section}` }] : []),
    ...(ctx.consoleUrl ? [{ href: ctx.consoleUrl, text: "Ops console" }] : []),
  ];
  return {
    ...base,
    payload: {
      summary: `[${row.severity}] ${str(p.summary) ?? row.dedup_key}`.slice(0, 1024),
      source: "reserve-connect",
      severity: SEVERITY[row.severity],
      timestamp: new Date(str(p.fired_at) ?? str(p.at) ?? row.created_at).toISOString(),
      component: str(p.check_name) ?? "incidents",
      group: "reserve",
      class: row.kind === "alert" ? str(p.alert_name) ?? "alert" : row.kind,
      custom_details: {
        alert: p.alert_name, severity: row.severity, observed_value: p.observed_value ?? null, threshold: p.threshold ?? null,
        details: p.details ?? null, first_seen: p.first_seen ?? null, runbook_section: section ?? null,
        incident: p.incident_reference ?? null, fingerprint: p.fingerprint ?? null,
      },
    },
    links,
    client: "Reserve Connect",
    ...(ctx.consoleUrl && { client_url: ctx.consoleUrl }),
  };
}

export async function sendPagerDuty(row: OutboxRow, cfg: PagerDutyConfig | undefined, ctx: ReceiverContext): Promise<Delivery> {
  if (!cfg) return { delivered: false, status: null, error: "not_configured: PAGERDUTY_ROUTING_KEY is not set" };
  const { res, text, error } = await postJson(ctx, cfg.eventsUrl, pagerDutyEvent(row, cfg, ctx));
  if (res?.status === 202) {
    let body: { status?: string } = {};
    try {
      body = JSON.parse(text);
    } catch { /* a 202 is PagerDuty's acceptance whatever the body */ }
    return { delivered: true, status: 202, ...(body.status && body.status !== "success" && { error: body.status }) };
  }
  return failure(res, text, error);
}
