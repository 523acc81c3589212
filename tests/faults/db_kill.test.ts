// No database fault ends a process: the functions' backends are terminated in a loop while signed
// webhooks of the three providers and the poller run through real Deno (fault_loop.ts). The gateway
// never exits, every answer is JSON within a deadline, nothing is half written, and every event is
// completed once the provider has redelivered what got a 5xx. The figures come from `npm run
// bench:faults`; the bounds here only catch a hang.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startE2E, type E2E } from "../helpers/e2e.ts";
import { runFaultLoop, startWebhookRecorder, summarize, type FaultReport, type WebhookRecorder } from "./fault_loop.ts";

// a statement's deadline is 4 s (db.ts); anything near this is a hang, not a slow answer
const HANG_MS = 12_000;
const BUDGET_MS = 3_000;

let e: E2E;
let recorder: WebhookRecorder;
let report: FaultReport;
let figures: ReturnType<typeof summarize>;

beforeAll(async () => {
  recorder = await startWebhookRecorder();
  // MercadoPago posts to the notification_url checkout gives it: the recorder's
  e = await startE2E({ pixProvider: "mercadopago", env: { RESERVE_FUNCTIONS_URL: recorder.base } });
  recorder.target = e.url("").replace(/\/$/, "");
  report = await runFaultLoop({
    functionsBase: recorder.target, gateway: e.functions.process, sandbox: e.sandbox, sql: e.db.sql,
    cronSecret: e.cronSecret, recorder, userToken: () => e.userToken(),
  }, { durationMs: 15_000, killEveryMs: 150, cards: 12, pix: 8, pollBudgetMs: BUDGET_MS });
  figures = summarize(report, BUDGET_MS);
  console.log(`fault loop: ${JSON.stringify(figures)}`);
}, 120_000);

afterAll(async () => {
  await e?.stop();
  await recorder?.close();
});

describe("terminating the functions' backends in a loop", () => {
  it("really terminates them, many times, while the traffic runs", () => {
    expect(report.killRounds).toBeGreaterThan(20);
    expect(report.kills, JSON.stringify(figures)).toBeGreaterThan(20);
    expect(report.answers.filter((a) => a.what.includes("/webhook_")).length).toBeGreaterThanOrEqual(report.payments);
  });

  it("never ends the gateway, and nothing reaches the process as uncaught", () => {
    expect(report.gatewayExit).toBeUndefined();
    expect(e.functions.process.exitCode).toBeNull();
    expect(e.logs.filter((l) => /Uncaught|error: Uncaught/.test(l))).toEqual([]);
    // the cause is gone, not only caught: no promise was dropped for the guard (serve.ts) to keep
    expect(e.logs.filter((l) => /process kept running/.test(l))).toEqual([]);
  });

  it("answers every request with JSON: 2xx, a 4xx of ours, or a 5xx, within the deadline", () => {
    const bad = report.answers.filter((a) => a.status === "no answer" || !a.json || a.ms > HANG_MS);
    expect(bad, JSON.stringify(figures)).toEqual([]);
    for (const a of report.answers.filter((x) => typeof x.status === "number" && x.status >= 500)) {
      expect(["database_unavailable", "processing_failed", "internal_error", "provider_unavailable", undefined]).toContain(a.error);
    }
    // the lost connections are named as such, at least some of the time
    expect(report.answers.some((a) => a.status === 503 && a.error === "database_unavailable")).toBe(true);
  });

  it("keeps the poller within its budget while the connections flap", () => {
    expect(report.polls.length).toBeGreaterThan(2);
    for (const p of report.polls) {
      expect(p.json).toBe(true);
      // budget + the 2 s grace of a statement in flight + the heartbeat's 2 s, on a loaded machine
      expect(p.ms).toBeLessThan(BUDGET_MS + HANG_MS);
    }
  });

  it("completes every event once what got a 5xx is redelivered, and leaves no partial rows", () => {
    expect(report.undelivered).toEqual([]);
    expect(report.problems).toEqual([]);
  });
});
