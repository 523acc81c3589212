// A Slack incoming webhook (POST https://hooks.slack.com/services/T…/B…/…): a message with text (the
// notification fallback) and blocks. Slack answers 200 `ok`; 400 invalid_payload / no_text / ...,
// 403 invalid_token, 404 no_service, 429 with Retry-After, 5xx: failed attempts, retried by the outbox.
import { failure, postJson, type Delivery, type OutboxRow, type ReceiverContext } from "./types.ts";

const EMOJI: Record<string, string> = { P1: ":rotating_light:", P2: ":warning:", P3: ":large_yellow_circle:", P4: ":information_source:" };

export function slackWebhookUrl(env: (k: string) => string | undefined): string | undefined {
  return env("SLACK_WEBHOOK_URL") || undefined;
}

const s = (v: unknown) => (v === null || v === undefined ? "" : String(v));
// Slack mrkdwn: &, < and > are the three characters to escape
const esc = (v: unknown) => s(v).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

function headline(row: OutboxRow): string {
  const p = row.payload;
  if (row.kind === "alert") {
    return row.event_action === "resolve" || p.state === "resolved"
      ? `:white_check_mark: RESOLVED [${row.severity}] ${s(p.alert_name)}`
      : `${EMOJI[row.severity]} FIRING [${row.severity}] ${s(p.alert_name)}`;
  }
  if (row.kind === "escalation") return `${EMOJI.P1} ${s(p.summary)}`;
  return `${row.kind === "reminder" ? ":alarm_clock:" : ":memo:"} ${s(p.summary)}`;
}

/** The message of one outbox row. */
export function slackMessage(row: OutboxRow, ctx: ReceiverContext): { text: string; blocks: unknown[] } {
  const p = row.payload;
  const text = row.kind === "alert" ? `${headline(row)}: ${s(p.summary)}` : headline(row);
  const fields = row.kind === "alert"
    ? [
      `*Observed:* ${esc(p.observed_value ?? "-")}`, `*Threshold:* ${esc(p.threshold ?? "-")}`,
      `*Since:* ${esc(p.first_seen ?? p.at)}`, ...(p.incident_reference ? [`*Incident:* ${esc(p.incident_reference)}`] : []),
    ]
    : [`*Incident:* ${esc(p.incident_reference)}`, `*Status:* ${esc(p.incident_status)}`, `*Severity:* ${esc(row.severity)}`];
  const section = s(p.runbook_section);
  const links = [
    ...(section ? [`<${ctx.runbookLink(section)}|Runbook: ${esc(section)}>`] : []),
    ...(ctx.consoleUrl ? [`<${ctx.consoleUrl}|Ops console>`] : []),
  ];
  return {
    text: text.slice(0, 3000),
    blocks: [
      { type: "section", text: { type: "mrkdwn", text: `*${esc(headline(row))}*${row.kind === "alert" ? `\n${esc(p.summary)}` : ""}`.slice(0, 3000) } },
      { type: "section", fields: fields.map((f) => ({ type: "mrkdwn", text: f.slice(0, 2000) })) },
      ...(links.length ? [{ type: "context", elements: [{ type: "mrkdwn", text: links.join(" · ") }] }] : []),
    ],
  };
}

/** The daily digest: one message listing the P4 (digest-routed) rows. */
export function slackDigest(rows: OutboxRow[], ctx: ReceiverContext): { text: string; blocks: unknown[] } {
  const lines = rows.map((r) => {
    const p = r.payload;
    const what = r.event_action === "resolve" || p.state === "resolved" ? "resolved" : "fired";
    return `• [${r.severity}] *${esc(p.alert_name ?? p.incident_reference)}* ${what} ${esc(p.at ?? r.created_at)}: ${esc(p.summary)}`;
  });
  const text = `:newspaper: Reserve Connect daily alert digest: ${rows.length} ${rows.length === 1 ? "notification" : "notifications"}`;
  const chunks: string[] = [];
  for (const l of lines) {
    if (chunks.length && (chunks[chunks.length - 1] + "\n" + l).length <= 2900) chunks[chunks.length - 1] += "\n" + l;
    else chunks.push(l.slice(0, 2900));
  }
  return {
    text,
    blocks: [
      { type: "section", text: { type: "mrkdwn", text: `*${text}*` } },
      ...chunks.slice(0, 45).map((c) => ({ type: "section", text: { type: "mrkdwn", text: c } })),
      ...(ctx.consoleUrl ? [{ type: "context", elements: [{ type: "mrkdwn", text: `<${ctx.consoleUrl}|Ops console>` }] }] : []),
    ],
  };
}

export async function sendSlack(message: { text: string; blocks: unknown[] }, url: string | undefined, ctx: ReceiverContext): Promise<Delivery> {
  if (!url) return { delivered: false, status: null, error: "not_configured: SLACK_WEBHOOK_URL is not set" };
  const { res, text, error } = await postJson(ctx, url, message);
  if (res?.status === 200 && text.trim() === "ok") return { delivered: true, status: 200 };
  return failure(res, text, error);
}
