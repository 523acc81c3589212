// notify under a database that drops its connections: the functions' backends are terminated in a
// loop while notify evaluates the alerts and delivers the outbox to the sandbox's PagerDuty and Slack
// (one receiver answering slowly, so kills also land between a send and its record). The gateway
// never exits, every answer is JSON (200, or 503 database_unavailable), and once the connections hold
// again the next runs deliver everything: one open incident, one outbox row per transition and channel,
// PagerDuty showing the alert triggered. A send whose record was lost is sent again; PagerDuty folds a
// repeated trigger into the same alert by its dedup_key, which is why at-least-once is safe there.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startE2E, type E2E } from "../helpers/e2e.ts";

type Answer = { status: number | "no answer"; error?: string; json: boolean; ms: number };
type Json = Record<string, any>;
const KEY = "reserve/ledger_trigger_disabled";
const HANG_MS = 12_000;

let e: E2E;
const answers: Answer[] = [];
let kills = 0;

const sql = () => e.db.sql;
const notifyOnce = async (body: Json = {}): Promise<Answer & { body?: any }> => {
  const t0 = Date.now();
  try {
    const r = await e.post("notify", body, { authorization: `Bearer ${e.cronSecret}` });
    const json = typeof r.body === "object" && r.body !== null;
    return { status: r.status, error: json ? r.body.error : undefined, json, ms: Date.now() - t0, body: r.body };
  } catch {
    return { status: "no answer", json: false, ms: Date.now() - t0 };
  }
};

beforeAll(async () => {
  e = await startE2E({ env: { RESERVE_NOTIFY_TIMEOUT_MS: "1500" } });
  await sql()`update reserve.alert_rules set severity = 'P1' where alert_name = 'ledger_trigger_disabled'`;
  await sql()`alter table reserve.ledger_entries disable trigger trg_ledger_balance`;
  // Slack answers slowly on each call, so a kill can land while a send is on the wire
  e.sandbox.control.setReceiverFault("slack", { timeoutMs: 300, times: 1_000 });

  // Kills come in bursts (every 150 ms for 1.2 s) with quiet spells of 1.5 s between them, as a
  // failing-over database does: a run that starts in a burst loses its connection, one that starts in a
  // spell gets through, however slow a loaded machine makes a run (Slack alone takes 300 ms).
  let stop = false;
  const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));
  const killer = (async () => {
    while (!stop) {
      const burstEnds = Date.now() + 1_200;
      while (!stop && Date.now() < burstEnds) {
        const [r] = await sql()`select count(pg_terminate_backend(pid))::int as n from pg_stat_activity
                                where application_name = 'reserve-edge' and datname = current_database()`;
        kills += r.n;
        await sleep(150);
      }
      if (!stop) await sleep(1_500);
    }
  })();
  // at least 8 s of runs, and on until both outcomes have been seen (a slow machine may need more
  // spells before a whole run fits in one), within 40 s
  const started = Date.now();
  const seen = (status: number) => answers.some((a) => a.status === status);
  while (Date.now() - started < 8_000 || (!(seen(200) && seen(503)) && Date.now() - started < 40_000)) {
    // due again at once, so every run has something to claim while the kills go on
    await sql()`update reserve.notification_outbox set next_attempt_at = now(), claimed_until = null where delivered_at is null`;
    answers.push(await notifyOnce());
  }
  stop = true;
  await killer;
  e.sandbox.control.setReceiverFault("slack", null);
}, 120_000);

afterAll(async () => {
  if (e) await sql()`alter table reserve.ledger_entries enable trigger trg_ledger_balance`;
  await e?.stop();
});

describe("notify while the database drops its connections", () => {
  it("really terminates its backends during the runs, and some runs get through between the kills", () => {
    expect(kills).toBeGreaterThan(5);
    expect(answers.filter((a) => a.status === 503).length).toBeGreaterThan(0);
    expect(answers.filter((a) => a.status === 200).length).toBeGreaterThan(0);
  });

  it("answers every run with JSON, 200 or 503 database_unavailable, and never ends the gateway", () => {
    const bad = answers.filter((a) => !a.json || a.ms > HANG_MS ||
      !(a.status === 200 || (a.status === 503 && a.error === "database_unavailable")));
    expect(bad).toEqual([]);
    expect(e.functions.process.exitCode).toBeNull();
    expect(e.logs.filter((l) => /Uncaught|process kept running/.test(l))).toEqual([]);
  });

  it("delivers everything once the connections hold, with one incident and one row per transition and channel", async () => {
    // a pooled connection killed while idle may cost the first run after the kills its answer (a 503):
    // at most one per connection of the pool, never a run once they are all fresh
    const after: Answer[] = [];
    for (let i = 0; i < 8; i++) {
      await sql()`update reserve.notification_outbox set next_attempt_at = now(), claimed_until = null where delivered_at is null`;
      const r = await notifyOnce();
      after.push(r);
      if (r.status === 200 && r.body.claimed === 0) break;
    }
    expect(after.filter((a) => a.status !== 200).length, JSON.stringify(after)).toBeLessThanOrEqual(4);
    expect(after.at(-1)).toMatchObject({ status: 200 });
    expect(await sql()`select count(*)::int as n from reserve.notification_outbox where delivered_at is null`).toEqual([{ n: 0 }]);
    const rows = await sql()`select channel, count(*)::int as n from reserve.notification_outbox
                             where dedup_key = ${KEY} group by channel order by channel`;
    expect(rows).toEqual([{ channel: "pagerduty", n: 1 }, { channel: "slack", n: 1 }]);
    expect(await sql()`select count(*)::int as n from reserve.incidents
                       where alert_name = 'ledger_trigger_disabled' and status <> 'closed'`).toEqual([{ n: 1 }]);
    expect(await sql()`select state from reserve.alert_states where alert_name = 'ledger_trigger_disabled'`)
      .toEqual([{ state: "firing" }]);
    expect(e.sandbox.control.pagerdutyAlert(KEY)).toMatchObject({ status: "triggered" });
  });
});
