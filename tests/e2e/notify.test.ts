// The notify function under real Deno, delivering to the sandbox's PagerDuty Events API v2 and Slack
// incoming webhook: a firing alert reaches both with the real shapes (routing key, dedup_key, severity
// mapped from P1..P4, the runbook section as a link, observed value and threshold), a fixed one is
// resolved; a receiver that answers 5xx, 429 with Retry-After or not at all costs a retry, never the
// notification; two runs at once send each event once; the P4 digest goes out as one message.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { startE2E, type E2E } from "../helpers/e2e.ts";

type Json = Record<string, any>;
let e: E2E;
beforeAll(async () => {
  // a loaded machine must not time a run's queries out (that is db_unavailable's subject): the race test
  // counts sends of runs that finished
  e = await startE2E({ env: { RESERVE_NOTIFY_TIMEOUT_MS: "500", RESERVE_DB_QUERY_TIMEOUT_MS: "30000", RESERVE_RUNBOOK_URL: "https://runbook.example/docs/RUNBOOK.md" } });
});
afterAll(async () => await e?.stop());

const sql = () => e.db.sql;
const notify = (body: Json = {}) => e.post("notify", body, { authorization: `Bearer ${e.cronSecret}` });
const breakLedgerTrigger = () => sql()`alter table reserve.ledger_entries disable trigger trg_ledger_balance`;
const fixLedgerTrigger = () => sql()`alter table reserve.ledger_entries enable trigger trg_ledger_balance`;
const pdEvents = () => e.sandbox.control.pagerdutyEvents() as unknown as { status: number; body: Json; answer: Json }[];
const slackPosts = () => e.sandbox.control.slackMessages() as unknown as { status: number; body: Json; answer: string }[];
const KEY = "reserve/ledger_trigger_disabled";
/** makes every undelivered notification due now (the backoff has been tested in SQL) */
const dueNow = () => sql()`update reserve.notification_outbox set next_attempt_at = now() where delivered_at is null`;

beforeEach(async () => {
  e.sandbox.control.setReceiverFault("pagerduty", null);
  e.sandbox.control.setReceiverFault("slack", null);
  await fixLedgerTrigger();
  await notify();
  await sql()`update reserve.notification_outbox set delivered_at = coalesce(delivered_at, now()), claimed_until = null`;
  await sql()`update reserve.alert_rules set severity = 'P1' where alert_name = 'ledger_trigger_disabled'`;
  await sql()`delete from reserve.incidents`;
});

describe("notify", () => {
  it("refuses a missing or wrong cron secret and unknown options", async () => {
    expect((await e.post("notify", {})).status).toBe(401);
    expect((await e.post("notify", {}, { authorization: "Bearer nope" })).status).toBe(401);
    const bad = await notify({ batch_size: 0, extra: 1 });
    expect(bad.status).toBe(400);
    expect(bad.body.error).toBe("invalid_request");
    expect((await e.post("notify", "{", { authorization: `Bearer ${e.cronSecret}` })).body.error).toBe("invalid_json");
  });

  it("pages PagerDuty and posts to Slack when a P1 fires, and resolves both once it is fixed", async () => {
    const pd0 = pdEvents().length;
    const sl0 = slackPosts().length;
    await breakLedgerTrigger();
    const run = await notify();
    expect(run.status).toBe(200);
    expect(run.body).toMatchObject({ ok: true, evaluation: { triggered: 1, incidents_opened: 1 }, delivered: 2, failed: 0 });

    const [trigger] = pdEvents().slice(pd0);
    expect(trigger.status).toBe(202);
    expect(trigger.answer).toEqual({ status: "success", message: "Event processed", dedup_key: KEY });
    expect(trigger.body).toMatchObject({
      routing_key: e.sandbox.pagerduty.routingKey, event_action: "trigger", dedup_key: KEY,
      payload: {
        severity: "critical", source: "reserve-connect", component: "ledger_trigger_enabled",
        summary: expect.stringMatching(/^\[P1\] trg_ledger_balance is disabled/),
        custom_details: { alert: "ledger_trigger_disabled", severity: "P1", threshold: "tgenabled O or A", runbook_section: "P1: LEDGER IMBALANCE DETECTED",
          incident: expect.stringMatching(/^INC-/) },
      },
      links: [{ href: "https://runbook.example/docs/RUNBOOK.md#p1-ledger-imbalance-detected", text: "Runbook: P1: LEDGER IMBALANCE DETECTED" },
        { href: expect.stringMatching(/\/functions\/v1\/ops\/$/), text: "Ops console" }],
    });
    expect(e.sandbox.control.pagerdutyAlert(KEY)).toMatchObject({ status: "triggered", severity: "critical" });
    const [post] = slackPosts().slice(sl0);
    expect(post.answer).toBe("ok");
    expect(post.body.text).toMatch(/FIRING \[P1\] ledger_trigger_disabled/);
    expect(JSON.stringify(post.body.blocks)).toContain("*Threshold:* tgenabled O or A");

    // nothing new while it keeps firing
    expect((await notify()).body).toMatchObject({ claimed: 0, evaluation: { triggered: 0 } });
    expect(pdEvents().length).toBe(pd0 + 1);

    await fixLedgerTrigger();
    expect((await notify()).body).toMatchObject({ evaluation: { resolved: 1 }, delivered: 2 });
    const resolve = pdEvents().at(-1)!;
    expect(resolve.body).toEqual({ routing_key: e.sandbox.pagerduty.routingKey, event_action: "resolve", dedup_key: KEY });
    expect(e.sandbox.control.pagerdutyAlert(KEY)?.status).toBe("resolved");
    expect(slackPosts().at(-1)!.body.text).toMatch(/RESOLVED \[P1\] ledger_trigger_disabled/);
  });

  it("keeps a notification through PagerDuty 5xx, 429 with Retry-After and a hang, and delivers it once the receiver is back", async () => {
    await breakLedgerTrigger();
    e.sandbox.control.setReceiverFault("pagerduty", { status: 503, times: 1 });
    const first = await notify();
    expect(first.body).toMatchObject({ delivered: 1, failed: 1, by_channel: { pagerduty: { failed: 1 }, slack: { delivered: 1 } } });
    const row = async () => (await sql()`select * from reserve.notification_outbox
                                          where dedup_key = ${KEY} and channel = 'pagerduty' and delivered_at is null`)[0];
    let r = await row();
    expect(r).toMatchObject({ attempts: 1, last_status: 503 });
    expect(new Date(r.next_attempt_at).getTime()).toBeGreaterThan(Date.now());
    // not due yet: the next run leaves it alone
    expect((await notify()).body.claimed).toBe(0);

    e.sandbox.control.setReceiverFault("pagerduty", { status: 429, retryAfter: 120, times: 1 });
    await dueNow();
    await notify();
    r = await row();
    expect(r).toMatchObject({ attempts: 2, last_status: 429 });
    expect(new Date(r.next_attempt_at).getTime() - Date.now()).toBeGreaterThan(115_000);

    e.sandbox.control.setReceiverFault("pagerduty", { timeoutMs: 1_500, times: 1 });
    await dueNow();
    await notify();
    r = await row();
    expect(r).toMatchObject({ attempts: 3, last_status: null, last_error: "no answer within 500 ms" });

    await dueNow();
    const back = await notify();
    expect(back.body).toMatchObject({ delivered: 1, failed: 0 });
    expect(await row()).toBeUndefined();
    expect(e.sandbox.control.pagerdutyAlert(KEY)?.status).toBe("triggered");
    expect(e.logs.join("\n")).toMatch(/notify: 1 undelivered, retried later: pagerduty reserve\/ledger_trigger_disabled: 503/);
    // the routing key never reaches the log
    expect(e.logs.join("\n")).not.toContain(e.sandbox.pagerduty.routingKey);
  });

  it("takes a Retry-After as a floor up to the backoff's max: a year, or more than an integer, still retries within 10 minutes", async () => {
    await breakLedgerTrigger();
    const row = async () => (await sql()`select *, extract(epoch from next_attempt_at - now())::float as due_in_s
                                          from reserve.notification_outbox
                                          where dedup_key = ${KEY} and channel = 'pagerduty' and delivered_at is null`)[0];
    for (const [attempt, retryAfter] of [[1, 3_000_000_000], [2, 86_400 * 365]]) {
      e.sandbox.control.setReceiverFault("pagerduty", { status: 429, retryAfter, times: 1 });
      await dueNow();
      const run = await notify();
      expect(run.status).toBe(200);
      expect(run.body).toMatchObject({ ok: true, by_channel: { pagerduty: { failed: 1 } } });
      const r = await row();
      expect(r).toMatchObject({ attempts: attempt, last_status: 429 });
      expect(r.due_in_s).toBeLessThanOrEqual(600);
      expect(r.due_in_s).toBeGreaterThan(590);
    }
    await dueNow();
    expect((await notify()).body).toMatchObject({ delivered: 1, failed: 0 });
    expect(await row()).toBeUndefined();
  });

  it("answers Slack's refusals as failures and retries them", async () => {
    await breakLedgerTrigger();
    e.sandbox.control.setReceiverFault("slack", { status: 500, times: 1 });
    expect((await notify()).body.by_channel).toMatchObject({ slack: { failed: 1 }, pagerduty: { delivered: 1 } });
    const [r] = await sql()`select * from reserve.notification_outbox where channel = 'slack' and delivered_at is null`;
    expect(r.last_error).toBe("500 internal_error");
    await dueNow();
    expect((await notify()).body.by_channel).toMatchObject({ slack: { delivered: 1 } });
  });

  it("sends each event once when two runs deliver at the same time", async () => {
    const pd0 = pdEvents().length;
    await breakLedgerTrigger();
    await notify({ deliver: false });
    const sl0 = slackPosts().length;
    const runs = await Promise.all([notify({ evaluate: false }), notify({ evaluate: false }), notify({ evaluate: false })]);
    // every run must finish for "once" to hold: a run whose record of a send fails (a 503) leaves that row to
    // be sent again when its lease lapses, at least once by design (PagerDuty folds it by dedup_key)
    expect(runs.map((r) => r.status)).toEqual([200, 200, 200]);
    expect(runs.reduce((n, r) => n + r.body.delivered, 0)).toBe(2);
    expect(pdEvents().slice(pd0).filter((x) => x.body.dedup_key === KEY)).toHaveLength(1);
    expect(slackPosts().slice(sl0)).toHaveLength(1);
    expect(await sql()`select count(*)::int as n from reserve.notification_outbox where delivered_at is null`).toEqual([{ n: 0 }]);
  });

  it("posts the P4 digest as one message at its hour", async () => {
    const sl0 = slackPosts().length;
    await sql()`update reserve.alert_rules set severity = 'P4' where alert_name = 'ledger_trigger_disabled'`;
    await breakLedgerTrigger();
    await notify();
    await fixLedgerTrigger();
    await notify();
    expect(slackPosts().length).toBe(sl0); // not its hour yet
    await sql()`update reserve.notification_outbox set next_attempt_at = now() where channel = 'digest' and delivered_at is null`;
    const run = await notify();
    expect(run.body).toMatchObject({ by_channel: { digest: { delivered: 2 } } });
    const posts = slackPosts().slice(sl0);
    expect(posts).toHaveLength(1);
    expect(posts[0].body.text).toBe(":newspaper: Reserve Connect daily alert digest: 2 notifications");
    const lines = JSON.stringify(posts[0].body.blocks);
    expect(lines).toContain("[P4] *ledger_trigger_disabled* fired");
    expect(lines).toContain("[P4] *ledger_trigger_disabled* resolved");
  });
});
