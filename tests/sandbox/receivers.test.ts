// The alert receivers: PagerDuty's Events API v2 and a Slack incoming webhook, with their real
// validation and answers, alert state per dedup_key, switchable failures, and control calls that list
// what each received, in-process and over /_sandbox.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startProviderSandbox, type ProviderSandbox } from "../../local/sandbox/index.ts";

type Json = Record<string, any>;
let sb: ProviderSandbox;

beforeAll(async () => {
  sb = await startProviderSandbox();
});
afterAll(async () => await sb.stop());

async function pd(body: unknown, raw?: string) {
  const res = await fetch(sb.pagerduty.eventsUrl, { method: "POST", headers: { "content-type": "application/json" },
    body: raw ?? JSON.stringify(body) });
  return { status: res.status, headers: res.headers, body: (await res.json()) as Json };
}

async function slack(body: string, url = sb.slack.webhookUrl, type = "application/json") {
  const res = await fetch(url, { method: "POST", headers: { "content-type": type }, body });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

const trigger = (extra: Json = {}, payload: Json = {}) => ({
  routing_key: sb.pagerduty.routingKey, event_action: "trigger", dedup_key: "reserve:webhooks_failing",
  payload: { summary: "P1 webhooks failing: 12 in 5 min", source: "reserve-connect", severity: "critical",
    timestamp: new Date().toISOString(), custom_details: { observed: 12, threshold: 5 }, ...payload },
  links: [{ href: "https://example.com/runbook#p1-webhook-down", text: "Runbook" }], ...extra,
});

describe("PagerDuty Events API v2", () => {
  it("answers 202 with the dedup_key and keeps the alert's state through trigger, acknowledge and resolve", async () => {
    const r1 = await pd(trigger());
    expect(r1).toMatchObject({ status: 202, body: { status: "success", message: "Event processed", dedup_key: "reserve:webhooks_failing" } });
    expect(sb.control.pagerdutyAlert("reserve:webhooks_failing")).toMatchObject({ status: "triggered", severity: "critical" });
    await pd(trigger({}, { summary: "P1 webhooks failing: 20 in 5 min" })); // the same alert, a second trigger
    expect(sb.control.pagerdutyAlerts().filter((a) => a.dedup_key === "reserve:webhooks_failing")).toHaveLength(1);
    const ack = await pd({ routing_key: sb.pagerduty.routingKey, event_action: "acknowledge", dedup_key: "reserve:webhooks_failing" });
    expect(ack.status).toBe(202);
    expect(sb.control.pagerdutyAlert("reserve:webhooks_failing")!.status).toBe("acknowledged");
    await pd({ routing_key: sb.pagerduty.routingKey, event_action: "resolve", dedup_key: "reserve:webhooks_failing" });
    const resolved = sb.control.pagerdutyAlert("reserve:webhooks_failing")!;
    expect(resolved.status).toBe("resolved");
    expect(resolved.log.map((l) => l.event_action)).toEqual(["trigger", "trigger", "acknowledge", "resolve"]);
    expect(resolved.summary).toBe("P1 webhooks failing: 20 in 5 min");
    // after a resolve a trigger opens a new alert; a resolve with nothing open is accepted and dropped
    await pd(trigger());
    expect(sb.control.pagerdutyAlerts().filter((a) => a.dedup_key === "reserve:webhooks_failing").map((a) => a.status)).toEqual(["resolved", "triggered"]);
    expect((await pd({ routing_key: sb.pagerduty.routingKey, event_action: "resolve", dedup_key: "never-opened" })).status).toBe(202);
    expect(sb.control.pagerdutyAlert("never-opened")).toBeUndefined();
    const generated = await pd(trigger({ dedup_key: undefined }));
    expect(generated.body.dedup_key).toMatch(/^[0-9a-f]{32}$/);
  });

  it("refuses invalid events with 400 {status: invalid event, message, errors}", async () => {
    const cases: [unknown, string][] = [
      [{ ...trigger(), routing_key: "short" }, "Length of 'routing_key' is incorrect (should be 32 characters)"],
      [{ ...trigger(), routing_key: "0".repeat(32) }, "Invalid routing key"],
      [{ ...trigger(), event_action: "page" }, "'event_action' is invalid (must be one of: trigger, acknowledge, resolve)"],
      [trigger({}, { summary: "" }), "'payload.summary' is missing or blank"],
      [trigger({}, { summary: "x".repeat(1025) }), "'payload.summary' is too long (maximum is 1024 characters)"],
      [trigger({}, { severity: "P1" }), "'payload.severity' is invalid (must be one of: critical, error, warning, info)"],
      [trigger({}, { source: undefined }), "'payload.source' is missing or blank"],
      [trigger({}, { timestamp: "yesterday" }), "'payload.timestamp' is invalid (must be an ISO 8601 timestamp)"],
      [trigger({ dedup_key: "k".repeat(256) }), "'dedup_key' must be a string of at most 255 characters"],
      [{ routing_key: sb.pagerduty.routingKey, event_action: "resolve" }, "'dedup_key' is missing or blank"],
      [{ routing_key: sb.pagerduty.routingKey, event_action: "trigger" }, "'payload' is missing or blank"],
    ];
    for (const [body, error] of cases) {
      const r = await pd(body);
      expect(r, error).toMatchObject({ status: 400, body: { status: "invalid event", message: "Event object is invalid" } });
      expect(r.body.errors).toContain(error);
    }
    expect((await pd(undefined, "{not json")).status).toBe(400);
    const seen = sb.control.pagerdutyEvents();
    expect(seen.at(-1)).toMatchObject({ status: 400, raw: "{not json", body: null });
  });

  it("fails as told: 5xx, 429 with Retry-After, a timeout; then works again", async () => {
    sb.control.setReceiverFault("pagerduty", { status: 503, times: 2 });
    sb.control.setReceiverFault("pagerduty", { status: 429, retryAfter: 30, times: 1 });
    expect((await pd(trigger())).status).toBe(503);
    expect((await pd(trigger())).status).toBe(503);
    const throttled = await pd(trigger());
    expect(throttled.status).toBe(429);
    expect(throttled.headers.get("retry-after")).toBe("30");
    expect(throttled.body.status).toBe("throttle event");
    sb.control.setReceiverFault("pagerduty", { timeoutMs: 1_500, times: 1 });
    const gaveUp = await fetch(sb.pagerduty.eventsUrl, { method: "POST", body: JSON.stringify(trigger()),
      signal: AbortSignal.timeout(300) }).then(() => "answered", (e: Error) => e.name);
    expect(gaveUp).toBe("TimeoutError");
    expect((await pd(trigger())).status).toBe(202);
  });
});

describe("Slack incoming webhook", () => {
  it("answers ok to {text, blocks?} and Slack's error words otherwise", async () => {
    const msg = { text: "P1 webhooks failing", blocks: [{ type: "section", text: { type: "mrkdwn", text: "*P1* webhooks failing" } }] };
    const ok = await slack(JSON.stringify(msg));
    expect(ok).toMatchObject({ status: 200, text: "ok" });
    expect(sb.control.slackMessages().at(-1)).toMatchObject({ status: 200, body: msg, answer: "ok" });
    expect(await slack(`payload=${encodeURIComponent(JSON.stringify({ text: "as a form" }))}`, sb.slack.webhookUrl,
      "application/x-www-form-urlencoded")).toMatchObject({ status: 200, text: "ok" });
    expect(await slack("{nope")).toMatchObject({ status: 400, text: "invalid_payload" });
    expect(await slack(JSON.stringify({ username: "bot" }))).toMatchObject({ status: 400, text: "no_text" });
    expect(await slack(JSON.stringify({ text: "x", blocks: [{ text: "no type" }] }))).toMatchObject({ status: 400, text: "invalid_blocks" });
    expect(await slack(JSON.stringify({ text: "x".repeat(40_001) }))).toMatchObject({ status: 400, text: "msg_too_long" });
    const wrongToken = sb.slack.webhookUrl.replace(/\/[A-Za-z0-9]+$/, "/wrongtoken");
    expect(await slack(JSON.stringify({ text: "x" }), wrongToken)).toMatchObject({ status: 403, text: "invalid_token" });
    expect(await slack(JSON.stringify({ text: "x" }), `${sb.url}/slack/services/TNOPE/BNOPE/x`)).toMatchObject({ status: 404, text: "no_service" });
  });

  it("fails as told (429 with Retry-After, 500, a timeout) and lists everything over /_sandbox", async () => {
    const post = (method: string, args: unknown[]) => fetch(`${sb.url}/_sandbox/${method}`, { method: "POST", body: JSON.stringify(args) });
    expect((await post("setReceiverFault", ["slack", { status: 429, retryAfter: 7, times: 1 }])).status).toBe(200);
    expect((await post("setReceiverFault", ["slack", { status: 500, times: 1 }])).status).toBe(200);
    const limited = await slack(JSON.stringify({ text: "x" }));
    expect(limited).toMatchObject({ status: 429, text: "rate_limited" });
    expect(limited.headers.get("retry-after")).toBe("7");
    expect(await slack(JSON.stringify({ text: "x" }))).toMatchObject({ status: 500 });
    expect(await slack(JSON.stringify({ text: "after" }))).toMatchObject({ status: 200, text: "ok" });
    expect((await post("setReceiverFault", ["slack", { times: 1 }])).status).toBe(400);
    const messages = (await (await fetch(`${sb.url}/_sandbox/slackMessages`)).json()) as Json[];
    expect(messages.at(-1)).toMatchObject({ body: { text: "after" }, status: 200 });
    const alerts = (await (await fetch(`${sb.url}/_sandbox/pagerdutyAlerts`)).json()) as Json[];
    expect(alerts.length).toBeGreaterThan(0);
    const one = (await (await fetch(`${sb.url}/_sandbox/pagerdutyAlert/${encodeURIComponent("reserve:webhooks_failing")}`)).json()) as Json;
    expect(one.dedup_key).toBe("reserve:webhooks_failing");
    const info = (await (await fetch(`${sb.url}/_sandbox`)).json()) as Json;
    expect(info.pagerduty).toMatchObject({ eventsUrl: sb.pagerduty.eventsUrl, routingKey: sb.pagerduty.routingKey });
    expect(info.slack.webhookUrl).toBe(sb.slack.webhookUrl);
  });
});
