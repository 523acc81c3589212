// Where alerts go: PagerDuty's Events API v2 (`POST /pagerduty/v2/enqueue`) and a Slack
// incoming webhook (`POST /slack/services/T…/B…/<token>`), with their real request validation and
// answers, an alert's state per dedup_key, switchable failures (5xx, 429 with Retry-After, timeouts, for
// the next N calls), and the record of everything each received, so tests see exactly what was sent.
import { randomUUID } from "node:crypto";
import { SandboxError } from "./types.ts";
import type { ApiRequest, ApiResponse } from "./util.ts";
import { header, parseJson, sleep } from "./util.ts";

type Obj = Record<string, unknown>;

export type ReceiverName = "pagerduty" | "slack";

/** A failure the next `times` calls get: an HTTP status (with Retry-After for 429) or a hang of `timeoutMs`. */
export interface ReceiverFault {
  status?: number;
  retryAfter?: number;
  timeoutMs?: number;
  times: number;
}

export interface Received {
  at: string;
  status: number;
  body: unknown;
  raw: string;
  /** what the receiver answered (PagerDuty's JSON, Slack's text) */
  answer: unknown;
}

export interface PagerDutyAlert {
  dedup_key: string;
  routing_key: string;
  status: "triggered" | "acknowledged" | "resolved";
  summary: string;
  severity: string;
  source: string;
  created_at: string;
  updated_at: string;
  /** every event applied to this alert, oldest first */
  log: { at: string; event_action: string; payload?: Obj }[];
}

export interface ReceiversSnapshot {
  pagerduty: Received[];
  slack: Received[];
  alerts: PagerDutyAlert[];
}

const SEVERITIES = ["critical", "error", "warning", "info"];
const ACTIONS = ["trigger", "acknowledge", "resolve"];
const KEPT = 5_000;
/** PagerDuty's Events API v2 limit: about 120 events a minute per routing key */
const PD_RATE_PER_MINUTE = 120;

const pdInvalid = (errors: string[]): ApiResponse =>
  ({ status: 400, body: { status: "invalid event", message: "Event object is invalid", errors } });
const pdThrottled = (retryAfter?: number): ApiResponse => ({ status: 429,
  body: { status: "throttle event", message: "Requests for this service are arriving too quickly.  Please retry later." },
  ...(retryAfter !== undefined && { headers: { "retry-after": String(retryAfter) } }) });
const slackText = (status: number, text: string, headers: Record<string, string> = {}): ApiResponse =>
  ({ status, body: text, raw: text, headers: { "content-type": "text/html", ...headers } });

export class Receivers {
  readonly pagerdutyReceived: Received[] = [];
  readonly slackReceived: Received[] = [];
  /** open and past alerts; a trigger after a resolve opens a new one under the same dedup_key */
  readonly alerts: PagerDutyAlert[] = [];
  private faults: Record<ReceiverName, ReceiverFault[]> = { pagerduty: [], slack: [] };
  private pdCalls = new Map<string, number[]>();

  constructor(readonly routingKeys: Set<string>, readonly slackPath: string, private changed: () => void = () => {}) {}

  snapshot(): ReceiversSnapshot {
    return { pagerduty: this.pagerdutyReceived.slice(-KEPT), slack: this.slackReceived.slice(-KEPT), alerts: this.alerts.slice(-KEPT) };
  }

  restore(s: ReceiversSnapshot): void {
    this.pagerdutyReceived.push(...s.pagerduty);
    this.slackReceived.push(...s.slack);
    this.alerts.push(...s.alerts);
  }

  setFault(name: ReceiverName, f: ReceiverFault | null): void {
    if (name !== "pagerduty" && name !== "slack") throw new SandboxError(400, "receiver is pagerduty or slack");
    if (f === null) {
      this.faults[name] = [];
      return;
    }
    if (!(Number.isInteger(f.times) && f.times >= 1)) throw new SandboxError(400, "times must be at least 1");
    if (f.status === undefined && f.timeoutMs === undefined) throw new SandboxError(400, "a fault needs a status or a timeoutMs");
    if (f.status !== undefined && !(f.status >= 400 && f.status <= 599)) throw new SandboxError(400, "status must be 4xx or 5xx");
    this.faults[name].push({ ...f });
  }

  private takeFault(name: ReceiverName): ReceiverFault | undefined {
    const head = this.faults[name][0];
    if (!head) return undefined;
    head.times -= 1;
    if (head.times <= 0) this.faults[name].shift();
    return head;
  }

  /** An alert's current state: the latest one under that dedup_key. */
  alert(dedupKey: string): PagerDutyAlert | undefined {
    for (let i = this.alerts.length - 1; i >= 0; i--) if (this.alerts[i]!.dedup_key === dedupKey) return this.alerts[i];
    return undefined;
  }

  async handle(name: ReceiverName, req: ApiRequest): Promise<ApiResponse> {
    const fault = this.takeFault(name);
    if (fault?.timeoutMs) await sleep(fault.timeoutMs);
    let answer: ApiResponse;
    if (fault?.status !== undefined) {
      answer = name === "pagerduty"
        ? (fault.status === 429 ? pdThrottled(fault.retryAfter) : { status: fault.status, body: { status: "error", message: "Internal Server Error" } })
        : slackText(fault.status, fault.status === 429 ? "rate_limited" : "internal_error",
          fault.retryAfter !== undefined ? { "retry-after": String(fault.retryAfter) } : {});
    } else {
      answer = name === "pagerduty" ? this.enqueue(req) : this.slack(req);
    }
    const parsed = parseJson(req.rawBody);
    const record: Received = { at: new Date().toISOString(), status: answer.status, body: parsed.ok ? parsed.value : null,
      raw: req.rawBody, answer: answer.body };
    (name === "pagerduty" ? this.pagerdutyReceived : this.slackReceived).push(record);
    this.changed();
    return answer;
  }

  /**
   * POST /v2/enqueue as PagerDuty validates it: a known 32-character routing_key, event_action
   * trigger | acknowledge | resolve, dedup_key ≤ 255 (required to acknowledge or resolve), and for a
   * trigger a payload with summary (≤ 1024), source and severity (critical | error | warning | info).
   */
  private enqueue(req: ApiRequest): ApiResponse {
    if (req.method !== "POST" || req.path !== "/v2/enqueue") return { status: 404, body: { status: "error", message: "Not Found" } };
    const parsed = parseJson(req.rawBody);
    if (!parsed.ok || typeof parsed.value !== "object" || parsed.value === null || Array.isArray(parsed.value)) {
      return pdInvalid(["Event object is not valid JSON"]);
    }
    const e = parsed.value as Obj;
    const errors: string[] = [];
    const str = (v: unknown) => typeof v === "string" && v.trim() !== "";
    if (!str(e.routing_key)) errors.push("'routing_key' is missing or blank");
    else if ((e.routing_key as string).length !== 32) errors.push("Length of 'routing_key' is incorrect (should be 32 characters)");
    if (!str(e.event_action)) errors.push("'event_action' is missing or blank");
    else if (!ACTIONS.includes(e.event_action as string)) errors.push("'event_action' is invalid (must be one of: trigger, acknowledge, resolve)");
    if (e.dedup_key !== undefined && (typeof e.dedup_key !== "string" || e.dedup_key.length > 255)) {
      errors.push("'dedup_key' must be a string of at most 255 characters");
    }
    if ((e.event_action === "acknowledge" || e.event_action === "resolve") && !str(e.dedup_key)) errors.push("'dedup_key' is missing or blank");
    if (e.event_action === "trigger") {
      const p = e.payload as Obj | undefined;
      if (typeof p !== "object" || p === null || Array.isArray(p)) errors.push("'payload' is missing or blank");
      else {
        if (!str(p.summary)) errors.push("'payload.summary' is missing or blank");
        else if ((p.summary as string).length > 1024) errors.push("'payload.summary' is too long (maximum is 1024 characters)");
        if (!str(p.source)) errors.push("'payload.source' is missing or blank");
        if (!str(p.severity)) errors.push("'payload.severity' is missing or blank");
        else if (!SEVERITIES.includes(p.severity as string)) errors.push("'payload.severity' is invalid (must be one of: critical, error, warning, info)");
        if (p.timestamp !== undefined && (typeof p.timestamp !== "string" || Number.isNaN(Date.parse(p.timestamp)))) {
          errors.push("'payload.timestamp' is invalid (must be an ISO 8601 timestamp)");
        }
        if (p.custom_details !== undefined && (typeof p.custom_details !== "object" || p.custom_details === null)) {
          errors.push("'payload.custom_details' must be an object");
        }
      }
      for (const k of ["links", "images"] as const) {
        if (e[k] !== undefined && (!Array.isArray(e[k]) || !(e[k] as Obj[]).every((x) => typeof x === "object" && x !== null
          && str(k === "links" ? x.href : x.src)))) errors.push(`'${k}' is invalid`);
      }
    }
    if (errors.length) return pdInvalid(errors);
    const key = e.routing_key as string;
    if (!this.routingKeys.has(key)) return pdInvalid(["Invalid routing key"]);
    const now = Date.now();
    const recent = (this.pdCalls.get(key) ?? []).filter((t) => t > now - 60_000);
    if (recent.length >= PD_RATE_PER_MINUTE) return pdThrottled();
    recent.push(now);
    this.pdCalls.set(key, recent);

    const at = new Date(now).toISOString();
    const dedupKey = (e.dedup_key as string | undefined) ?? randomUUID().replace(/-/g, "");
    const current = this.alert(dedupKey);
    const open = current && current.status !== "resolved" && current.routing_key === key ? current : undefined;
    const action = e.event_action as string;
    if (action === "trigger") {
      const p = e.payload as Obj;
      if (open) {
        Object.assign(open, { summary: p.summary, severity: p.severity, source: p.source, updated_at: at });
        open.log.push({ at, event_action: action, payload: p });
      } else {
        this.alerts.push({ dedup_key: dedupKey, routing_key: key, status: "triggered", summary: p.summary as string,
          severity: p.severity as string, source: p.source as string, created_at: at, updated_at: at,
          log: [{ at, event_action: action, payload: p }] });
      }
    } else if (open) {
      // acknowledge and resolve apply to the open alert; with none open PagerDuty drops them (still 202)
      open.status = action === "acknowledge" ? (open.status === "triggered" || open.status === "acknowledged" ? "acknowledged" : open.status) : "resolved";
      open.updated_at = at;
      open.log.push({ at, event_action: action });
    }
    return { status: 202, body: { status: "success", message: "Event processed", dedup_key: dedupKey } };
  }

  /**
   * An incoming webhook as Slack answers it: 200 `ok`; 400 `invalid_payload` (not JSON, or not an object),
   * `no_text` (neither text nor blocks nor attachments), `invalid_blocks`, `msg_too_long`; 403 `invalid_token`
   * (right workspace and channel, wrong secret); 404 `no_service` (no such webhook).
   */
  private slack(req: ApiRequest): ApiResponse {
    const m = /^\/services\/(T[A-Z0-9]+)\/(B[A-Z0-9]+)\/([A-Za-z0-9]+)$/.exec(req.path);
    const [, team, hook] = /^\/services\/(T[A-Z0-9]+)\/(B[A-Z0-9]+)\//.exec(this.slackPath) ?? [];
    if (req.method !== "POST" || !m || m[1] !== team || m[2] !== hook) return slackText(404, "no_service");
    if (`/services/${m[1]}/${m[2]}/${m[3]}` !== this.slackPath) return slackText(403, "invalid_token");
    const type = header(req.headers, "content-type") ?? "";
    const raw = type.startsWith("application/x-www-form-urlencoded") ? new URLSearchParams(req.rawBody).get("payload") ?? "" : req.rawBody;
    const parsed = parseJson(raw);
    if (!parsed.ok || raw.trim() === "" || typeof parsed.value !== "object" || parsed.value === null || Array.isArray(parsed.value)) {
      return slackText(400, "invalid_payload");
    }
    const msg = parsed.value as Obj;
    const hasText = typeof msg.text === "string" && msg.text.trim() !== "";
    if (msg.blocks !== undefined && (!Array.isArray(msg.blocks) || msg.blocks.length > 50
      || !msg.blocks.every((b) => typeof b === "object" && b !== null && typeof (b as Obj).type === "string"))) {
      return slackText(400, "invalid_blocks");
    }
    if (!hasText && !(Array.isArray(msg.blocks) && msg.blocks.length) && !(Array.isArray(msg.attachments) && msg.attachments.length)) {
      return slackText(400, "no_text");
    }
    if (hasText && (msg.text as string).length > 40_000) return slackText(400, "msg_too_long");
    return slackText(200, "ok");
  }
}
