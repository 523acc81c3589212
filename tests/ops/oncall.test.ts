// On call in SQL: evaluate_alerts() turns every alert transition into outbox rows routed by severity
// (idempotent per transition and channel, a resolve only after a trigger that fired), silences hold
// notifications back and release them, the outbox is claimed with SKIP LOCKED in order per dedup_key and
// retried with backoff, an outbox that cannot deliver fires its own alert; firing P1/P2 alerts open or
// join incidents whose clocks escalate, remind and close; actions need a proven identity (a personal role
// in reserve_operator, or the ops console's login with the token's subject: a name typed on a shared
// login proves nobody); the review is generated from the data.
import { randomUUID } from "node:crypto";
import postgres from "postgres";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createTestDatabase, sqlState, type Sql, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";
import { applyStatus } from "../helpers/money.ts";
import { operatorRoles, opsConsoleLogin, type OperatorRoles } from "../helpers/operator_roles.ts";
import { typeActorName, type Q } from "./ops_helpers.ts";

let db: TestDatabase;
let sql: Sql;
let ops: OperatorRoles;
beforeAll(async () => {
  db = await createTestDatabase();
  sql = db.sql;
  ops = await operatorRoles(sql, db.url, ["alice", "bob", "carol"]);
});
afterAll(async () => {
  await ops?.drop();
  await db?.drop();
});

/** A committed transaction as the person's own login role (in reserve_operator): the database names them. */
const as = <T>(who: string, fn: (tx: postgres.TransactionSql) => Promise<T>): Promise<T> => ops.as(who, fn);
const name = (who: string) => ops.name(who);
const escaped = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

type Row = Record<string, any>;

/** A P1 fault that is one statement to cause and one to fix: the ledger's balance trigger disabled. */
const breakLedgerTrigger = () => sql`alter table reserve.ledger_entries disable trigger trg_ledger_balance`;
const fixLedgerTrigger = () => sql`alter table reserve.ledger_entries enable trigger trg_ledger_balance`;

async function evaluate(): Promise<Row> {
  const [r] = await sql`select * from reserve.evaluate_alerts()`;
  return r;
}
const outbox = async (alert = "ledger_trigger_disabled"): Promise<Row[]> =>
  [...await sql<Row[]>`select * from reserve.notification_outbox where alert_name = ${alert} order by id`];

/** Marks everything claimable as delivered, as a deliverer whose receivers all answer would. */
async function deliverAll(): Promise<Row[]> {
  const done: Row[] = [];
  for (;;) {
    const rows = await sql<Row[]>`select * from reserve.claim_notifications(100, 60)`;
    if (!rows.length) return done;
    for (const r of rows) await sql`select reserve.record_notification_result(${r.id}, true, 202)`;
    done.push(...rows);
  }
}

async function reset() {
  await fixLedgerTrigger();
  await evaluate();
  await sql`update reserve.notification_outbox set delivered_at = coalesce(delivered_at, now()), claimed_until = null`;
  await sql`delete from reserve.incidents`;
  // references restart at -001 once the incidents are gone: their notifications' idempotency keys go with them
  await sql`delete from reserve.notification_outbox where kind <> 'alert'`;
  await sql`delete from reserve.alert_silences`;
  await sql`update reserve.alert_rules set severity = 'P1' where alert_name = 'ledger_trigger_disabled'`;
}
beforeEach(reset);

describe("evaluate_alerts: transitions into the outbox", () => {
  it("enqueues one trigger per routed channel on firing, nothing again while it fires, and a resolve per channel once fixed", async () => {
    await breakLedgerTrigger();
    const first = await evaluate();
    expect(first).toMatchObject({ triggered: 1, notifications: 2, incidents_opened: 1 });
    let rows = await outbox();
    expect(rows.filter((r) => !r.delivered_at).map((r) => [r.channel, r.event_action, r.kind, r.dedup_key]).sort()).toEqual([
      ["pagerduty", "trigger", "alert", "reserve/ledger_trigger_disabled"],
      ["slack", "post", "alert", "reserve/ledger_trigger_disabled"],
    ]);
    const trigger = rows.find((r) => !r.delivered_at && r.channel === "pagerduty")!;
    expect(trigger.payload).toMatchObject({
      alert_name: "ledger_trigger_disabled", severity: "P1", state: "firing", runbook_section: "P1: LEDGER IMBALANCE DETECTED",
      threshold: "tgenabled O or A", incident_reference: expect.stringMatching(/^INC-\d{4}-\d{2}-\d{2}-\d{3}$/),
    });
    expect(trigger.payload.details).toMatch(/tgenabled = D/);

    expect(await evaluate()).toMatchObject({ triggered: 0, notifications: 0, firing: expect.any(Number) });
    expect((await outbox()).length).toBe(rows.length);

    await deliverAll();
    await fixLedgerTrigger();
    expect(await evaluate()).toMatchObject({ resolved: 1, notifications: 2 });
    rows = (await outbox()).filter((r) => !r.delivered_at);
    expect(rows.map((r) => [r.channel, r.event_action]).sort()).toEqual([["pagerduty", "resolve"], ["slack", "post"]]);
    expect(rows[0].payload.state).toBe("resolved");
  });

  it("routes by the severity's channels: P3 posts only, P4 waits for the digest hour", async () => {
    await sql`update reserve.alert_rules set severity = 'P3' where alert_name = 'ledger_trigger_disabled'`;
    await breakLedgerTrigger();
    expect(await evaluate()).toMatchObject({ triggered: 1, notifications: 1, incidents_opened: 0 });
    expect((await outbox()).filter((r) => !r.delivered_at).map((r) => r.channel)).toEqual(["slack"]);
    await fixLedgerTrigger();
    await evaluate();
    await deliverAll();

    await sql`update reserve.alert_rules set severity = 'P4' where alert_name = 'ledger_trigger_disabled'`;
    await breakLedgerTrigger();
    await evaluate();
    const [digest] = (await outbox()).filter((r) => !r.delivered_at);
    expect(digest.channel).toBe("digest");
    const [{ next }] = await sql`select reserve.next_digest_at() as next`;
    expect(new Date(digest.next_attempt_at).getTime()).toBe(new Date(next).getTime());
    expect(new Date(next).getUTCHours()).toBe(8);
    // not due before its hour
    expect((await sql`select * from reserve.claim_notifications(100, 60)`).map((r) => r.channel)).not.toContain("digest");
  });

  it("notifies nobody for an alert that was only pending", async () => {
    await sql`update reserve.alert_rules set for_duration = '1 hour' where alert_name = 'ledger_trigger_disabled'`;
    try {
      await breakLedgerTrigger();
      expect(await evaluate()).toMatchObject({ triggered: 0, notifications: 0 });
      await fixLedgerTrigger();
      expect(await evaluate()).toMatchObject({ resolved: 0, notifications: 0 });
      expect((await outbox()).filter((r) => !r.delivered_at)).toEqual([]);
    } finally {
      await sql`update reserve.alert_rules set for_duration = '0' where alert_name = 'ledger_trigger_disabled'`;
    }
  });

  it("notifies a transition once whoever evaluated it: the runbook's check_all_alerts() before the minute's evaluation", async () => {
    await breakLedgerTrigger();
    // RUNBOOK Step 1: what is firing now (it evaluates, and writes the transition)
    const firing = await sql`select alert_name, state from reserve.check_all_alerts() where state <> 'resolved'`;
    expect(firing).toContainEqual({ alert_name: "ledger_trigger_disabled", state: "firing" });
    // two evaluations at once: the page goes out once, and the incident opens once
    const other = postgres(db.url, { max: 1, onnotice: () => {} });
    try {
      const runs = await Promise.all([evaluate(), other`select * from reserve.evaluate_alerts()`.then((r) => r[0] as Row)]);
      expect(runs.map((r) => r.triggered).sort()).toEqual([0, 1]);
      expect(runs.map((r) => r.incidents_opened).sort()).toEqual([0, 1]);
    } finally {
      await other.end();
    }
    expect((await outbox()).filter((r) => !r.delivered_at).map((r) => `${r.channel}:${r.event_action}`).sort())
      .toEqual(["pagerduty:trigger", "slack:post"]);
    expect(await sql`select count(*)::int as n from reserve.incidents where alert_name = 'ledger_trigger_disabled'`).toEqual([{ n: 1 }]);
    await deliverAll();

    await fixLedgerTrigger();
    // RUNBOOK Verification: the alert reads resolved, and the next evaluation still sends the resolves
    expect(await sql`select state from reserve.check_all_alerts() where alert_name = 'ledger_trigger_disabled'`).toEqual([{ state: "resolved" }]);
    expect(await evaluate()).toMatchObject({ resolved: 1, notifications: 2 });
    expect((await outbox()).filter((r) => !r.delivered_at).map((r) => `${r.channel}:${r.event_action}`).sort())
      .toEqual(["pagerduty:resolve", "slack:post"]);
    expect(await evaluate()).toMatchObject({ triggered: 0, resolved: 0, notifications: 0 });
  });

  it("resolves an alert whose rule is disabled while it fires, and notifies the resolve", async () => {
    await breakLedgerTrigger();
    await evaluate();
    await deliverAll();
    await sql`update reserve.alert_rules set is_enabled = false where alert_name = 'ledger_trigger_disabled'`;
    try {
      expect(await evaluate()).toMatchObject({ resolved: 1, notifications: 2 });
      const [st] = await sql`select state, details from reserve.alert_states where alert_name = 'ledger_trigger_disabled'`;
      expect(st).toEqual({ state: "resolved", details: "rule disabled" });
      expect((await outbox()).filter((r) => !r.delivered_at).map((r) => `${r.channel}:${r.event_action}`).sort())
        .toEqual(["pagerduty:resolve", "slack:post"]);
      expect(await evaluate()).toMatchObject({ resolved: 0, notifications: 0 });
    } finally {
      await sql`update reserve.alert_rules set is_enabled = true where alert_name = 'ledger_trigger_disabled'`;
    }
  });

  it("leaves a heartbeat with the evaluation's summary", async () => {
    const r = await evaluate();
    const [h] = await sql`select * from reserve.job_heartbeats where job = 'evaluate_alerts' order by id desc limit 1`;
    expect(h.ok).toBe(true);
    expect(h.summary).toMatchObject({ evaluated: r.evaluated, firing: r.firing });
  });
});

describe("silences", () => {
  const silence = (q: postgres.Sql | postgres.TransactionSql, req: Row, operator: string | null = null) =>
    q`select * from reserve.create_alert_silence(row(${req.alert_name ?? null}, ${req.severity ?? null}, ${req.starts_at ?? null},
        ${req.ends_at ?? null}, ${req.reason ?? null})::reserve.alert_silence_request, ${operator})`;

  it("holds a matching alert's notifications back with author and reason, and sends them when it ends while the alert fires", async () => {
    const [s] = await as("alice", (tx) => silence(tx, { alert_name: "ledger_trigger_disabled", ends_at: new Date(Date.now() + 3600_000), reason: "migration window" }));
    expect(s).toMatchObject({ author: name("alice"), reason: "migration window" });
    await breakLedgerTrigger();
    expect(await evaluate()).toMatchObject({ triggered: 1, notifications: 0, silenced: 2 });
    expect(await sql`select * from reserve.claim_notifications(100, 60)`).toEqual([]);
    // the state still moved, and the P1 still opened its incident
    const [st] = await sql`select state from reserve.alert_states where alert_name = 'ledger_trigger_disabled'`;
    expect(st.state).toBe("firing");

    await as("alice", (tx) => tx`select reserve.end_alert_silence(${s.id}, 'window over')`);
    expect(await evaluate()).toMatchObject({ released: 2 });
    expect((await deliverAll()).map((r) => r.channel).sort()).toEqual(["pagerduty", "slack"]);
    const [audit] = await sql`select actor, reason from reserve.audit_logs where table_name = 'alert_silences' and action = 'UPDATE'`;
    expect(audit).toMatchObject({ actor: name("alice"), reason: `end_alert_silence by ${name("alice")}: window over` });
  });

  it("never sends a held-back trigger, nor its resolve, when the alert resolves under the silence", async () => {
    await as("alice", (tx) => silence(tx, { severity: "P1", ends_at: new Date(Date.now() + 3600_000), reason: "load test" }));
    await breakLedgerTrigger();
    await evaluate();
    await fixLedgerTrigger();
    expect(await evaluate()).toMatchObject({ resolved: 1, notifications: 0 });
    const rows = (await outbox()).filter((r) => !r.delivered_at);
    expect(rows.map((r) => [r.event_action, !!r.cancelled_at]).sort()).toEqual([["post", true], ["trigger", true]]);
  });

  it("holds back an incident's escalation and reminders too, and sends them when it ends while the incident is open", async () => {
    const [s] = await as("alice", (tx) => silence(tx, { alert_name: "ledger_trigger_disabled", ends_at: new Date(Date.now() + 3600_000), reason: "planned migration" }));
    await breakLedgerTrigger();
    await evaluate();
    const [i] = await sql`select * from reserve.incidents where alert_name = 'ledger_trigger_disabled'`;
    await sql`update reserve.incidents set ack_due_at = now() - interval '1 minute', opened_at = now() - interval '1 hour' where id = ${i.id}`;
    expect(await evaluate()).toMatchObject({ escalated: 1, reminded: 1 });
    const held = await sql`select kind, channel, silenced_by from reserve.notification_outbox where incident_id = ${i.id} and kind <> 'alert' order by id`;
    expect(held.map((r) => `${r.kind}:${r.channel}`).sort()).toEqual(["escalation:pagerduty", "escalation:slack", "reminder:slack"]);
    expect(held.every((r) => r.silenced_by === s.id)).toBe(true);
    expect(await sql`select * from reserve.claim_notifications(100, 60)`).toEqual([]);

    await as("alice", (tx) => tx`select reserve.end_alert_silence(${s.id}, 'window over')`);
    expect(await evaluate()).toMatchObject({ released: 5 });
    expect((await deliverAll()).map((r) => `${r.kind}:${r.channel}`).sort())
      .toEqual(["alert:pagerduty", "alert:slack", "escalation:pagerduty", "escalation:slack", "reminder:slack"]);
  });

  it("never sends a held-back escalation, nor its resolve, when the incident is handled under the silence", async () => {
    await as("alice", (tx) => silence(tx, { severity: "P1", ends_at: new Date(Date.now() + 3600_000), reason: "load test" }));
    await breakLedgerTrigger();
    await evaluate();
    const [i] = await sql`select * from reserve.incidents where alert_name = 'ledger_trigger_disabled'`;
    await sql`update reserve.incidents set ack_due_at = now() - interval '1 minute' where id = ${i.id}`;
    expect(await evaluate()).toMatchObject({ escalated: 1 });
    await as("bob", (tx) => tx`select reserve.acknowledge_incident(${i.reference}, 'on it')`);
    await as("bob", (tx) => tx`select reserve.post_incident_update(${i.reference}, 'looking')`);
    await fixLedgerTrigger();
    await evaluate();
    await as("bob", (tx) => tx`select reserve.resolve_incident(${i.reference}, 'trigger enabled again')`);
    await sql`update reserve.incidents set monitoring_until = now() - interval '1 second' where id = ${i.id}`;
    expect(await evaluate()).toMatchObject({ incidents_closed: 1 });
    const rows = await sql`select kind, event_action, delivered_at, cancelled_at from reserve.notification_outbox where incident_id = ${i.id}`;
    expect(rows.filter((r) => r.kind === "escalation" && r.event_action === "resolve")).toEqual([]);
    expect(rows.every((r) => r.cancelled_at && !r.delivered_at)).toBe(true);
    expect(await sql`select * from reserve.claim_notifications(100, 60)`).toEqual([]);
  });

  it("refuses a silence without a proven author, a reason, a matcher or a future end", async () => {
    const later = new Date(Date.now() + 3600_000);
    expect(await sqlState(silence(sql, { alert_name: "overbooking", ends_at: later, reason: "x" }))).toBe("RC604");
    expect(await sqlState(silence(sql, { alert_name: "overbooking", ends_at: later, reason: "x" }, "alice@reserve.test"))).toBe("RC604");
    const alice = (req: Row) => as("alice", (tx) => silence(tx, req));
    expect(await sqlState(alice({ alert_name: "overbooking", ends_at: later, reason: " " }))).toBe("RC604");
    expect(await sqlState(alice({ ends_at: later, reason: "everything" }))).toBe("RC001");
    expect(await sqlState(alice({ alert_name: "no_such_alert", ends_at: later, reason: "x" }))).toBe("RC001");
    expect(await sqlState(alice({ alert_name: "overbooking", ends_at: new Date(Date.now() - 1000), reason: "x" }))).toBe("RC001");
    expect(await sqlState(alice({ alert_name: "overbooking", ends_at: new Date(Date.now() + 40 * 86400_000), reason: "x" }))).toBe("RC001");
    expect(await sqlState(as("alice", (tx) => tx`select reserve.end_alert_silence(gen_random_uuid(), 'x')`))).toBe("RC603");
  });
});

describe("the outbox", () => {
  it("claims with SKIP LOCKED: two deliverers never get the same row", async () => {
    await breakLedgerTrigger();
    await evaluate();
    const other = postgres(db.url, { max: 1, onnotice: () => {} });
    try {
      const [a, b] = await Promise.all([
        sql.begin((tx) => tx`select id from reserve.claim_notifications(1, 60)`),
        other.begin((tx) => tx`select id from reserve.claim_notifications(1, 60)`),
      ]);
      const ids = [...a, ...b].map((r) => r.id);
      expect(new Set(ids).size).toBe(ids.length);
      expect(ids.length).toBe(2);
    } finally {
      await other.end();
    }
  });

  it("keeps one dedup_key's rows in order: a resolve waits while its trigger is undelivered", async () => {
    await breakLedgerTrigger();
    await evaluate();
    await fixLedgerTrigger();
    await evaluate();
    const first = await sql<Row[]>`select * from reserve.claim_notifications(100, 60)`;
    expect(first.map((r) => r.payload.state)).toEqual(["firing", "firing"]);
    // PagerDuty down: the trigger fails, and the resolve is still not claimable
    const pd = first.find((r) => r.channel === "pagerduty")!;
    const [failed] = await sql`select * from reserve.record_notification_result(${pd.id}, false, 503, '503 upstream', null)`;
    expect(failed.attempts).toBe(1);
    expect(failed.last_error).toBe("503 upstream");
    const slack = first.find((r) => r.channel === "slack")!;
    await sql`select reserve.record_notification_result(${slack.id}, true, 200)`;
    const next = await sql<Row[]>`select * from reserve.claim_notifications(100, 60)`;
    expect(next.map((r) => [r.channel, r.payload.state])).toEqual([["slack", "resolved"]]);
  });

  it("backs off exponentially with jitter, honours Retry-After, and is idempotent once delivered", async () => {
    await breakLedgerTrigger();
    await evaluate();
    const [row] = (await outbox()).filter((r) => r.channel === "pagerduty" && !r.delivered_at);
    const delays: number[] = [];
    for (let i = 0; i < 5; i++) {
      await sql`update reserve.notification_outbox set next_attempt_at = now() where id = ${row.id}`;
      const [c] = await sql`select * from reserve.claim_notifications(100, 60) where id = ${row.id}`;
      expect(c.attempts).toBe(i + 1);
      const [r] = await sql`select extract(epoch from next_attempt_at - now())::float as s
                            from reserve.record_notification_result(${row.id}, false, 500, 'boom', null)`;
      delays.push(r.s);
    }
    // base 5 s: attempt n waits 5 * 2^(n-1) s, jittered in its upper half
    delays.forEach((d, i) => {
      expect(d).toBeGreaterThanOrEqual(5 * 2 ** i * 0.5 - 0.5);
      expect(d).toBeLessThanOrEqual(5 * 2 ** i + 0.5);
    });
    await sql`update reserve.notification_outbox set next_attempt_at = now() where id = ${row.id}`;
    await sql`select * from reserve.claim_notifications(100, 60)`;
    const [ra] = await sql`select extract(epoch from next_attempt_at - now())::float as s
                           from reserve.record_notification_result(${row.id}, false, 429, 'throttled', 120)`;
    expect(ra.s).toBeGreaterThan(119);
    // a Retry-After is a floor up to the backoff's max (10 minutes), never a year
    await sql`update reserve.notification_outbox set next_attempt_at = now() where id = ${row.id}`;
    await sql`select * from reserve.claim_notifications(100, 60)`;
    const [year] = await sql`select extract(epoch from next_attempt_at - now())::float as s
                             from reserve.record_notification_result(${row.id}, false, 429, 'throttled', 31536000)`;
    expect(year.s).toBeLessThanOrEqual(600.5);
    expect(year.s).toBeGreaterThan(599);
    await sql`update reserve.notification_outbox set next_attempt_at = now() where id = ${row.id}`;
    await sql`select * from reserve.claim_notifications(100, 60)`;
    const [ok] = await sql`select * from reserve.record_notification_result(${row.id}, true, 202)`;
    const [again] = await sql`select * from reserve.record_notification_result(${row.id}, false, 500, 'late', null)`;
    expect(again.delivered_at).toEqual(ok.delivered_at);
    expect(again.last_error).toBeNull();
    expect(await sqlState(sql`select reserve.record_notification_result(-1, true, 202)`)).toBe("RC605");
  });

  it("fires notifications_undeliverable (P2) when the oldest undelivered waits past the limit, and resolves once delivered", async () => {
    await breakLedgerTrigger();
    await evaluate();
    await sql`update reserve.notification_outbox set due_at = now() - interval '11 minutes'
              where delivered_at is null and alert_name = 'ledger_trigger_disabled' and channel = 'pagerduty'`;
    const e = await evaluate();
    expect(e.triggered).toBe(1);
    const [st] = await sql`select state, observed_value from reserve.alert_states where alert_name = 'notifications_undeliverable'`;
    expect(st.state).toBe("firing");
    expect(Number(st.observed_value)).toBeGreaterThan(10);
    const own = await outbox("notifications_undeliverable");
    expect(own.map((r) => r.channel).sort()).toEqual(["pagerduty", "slack"]);
    await deliverAll();
    await evaluate();
    const [after] = await sql`select state from reserve.alert_states where alert_name = 'notifications_undeliverable'`;
    expect(after.state).toBe("resolved");
  });
});

describe("incidents", () => {
  const incident = async () => (await sql`select * from reserve.incidents order by opened_at desc limit 1`)[0] as Row;
  const events = async (id: string) => (await sql`select kind, actor from reserve.incident_events where incident_id = ${id} order by id`)
    .map((e) => `${e.kind}:${e.actor}`);

  it("opens one for a firing P1 and joins it when the alert fires again", async () => {
    await breakLedgerTrigger();
    await evaluate();
    const i = await incident();
    expect(i).toMatchObject({ severity: "P1", status: "open", alert_name: "ledger_trigger_disabled" });
    expect(new Date(i.ack_due_at).getTime() - new Date(i.opened_at).getTime()).toBe(15 * 60_000);
    await fixLedgerTrigger();
    await evaluate();
    await breakLedgerTrigger();
    expect(await evaluate()).toMatchObject({ triggered: 1, incidents_opened: 0 });
    expect(await sql`select count(*)::int as n from reserve.incidents`).toEqual([{ n: 1 }]);
    expect(await events(i.id)).toEqual(["opened:system", "alert_resolved:system", "alert_fired:system"]);
  });

  it("escalates once when not acknowledged within the response time; acknowledging resolves the escalation page", async () => {
    await breakLedgerTrigger();
    await evaluate();
    let i = await incident();
    await sql`update reserve.incidents set ack_due_at = now() - interval '1 second' where id = ${i.id}`;
    expect(await evaluate()).toMatchObject({ escalated: 1 });
    expect(await evaluate()).toMatchObject({ escalated: 0 });
    const esc = await sql<Row[]>`select channel, event_action, dedup_key from reserve.notification_outbox
                                 where incident_id = ${i.id} and kind = 'escalation' order by id`;
    expect(esc.map((r) => `${r.channel}:${r.event_action}`).sort()).toEqual(["pagerduty:trigger", "slack:post"]);
    expect(esc[0].dedup_key).toBe(`reserve/${i.reference}/escalation`);

    [i] = await as("bob", (tx) => tx`select * from reserve.acknowledge_incident(${i.reference}, 'on it')`);
    expect(i).toMatchObject({ status: "acknowledged", acknowledged_by: name("bob") });
    const resolves = await sql`select channel from reserve.notification_outbox
                               where incident_id = ${i.id} and kind = 'escalation' and event_action = 'resolve'`;
    expect(resolves.map((r) => r.channel)).toEqual(["pagerduty"]);
    // a second acknowledgement keeps the first name
    const [again] = await as("carol", (tx) => tx`select * from reserve.acknowledge_incident(${i.id}, 'me too')`);
    expect(again.acknowledged_by).toBe(name("bob"));
  });

  it("resolves the escalation page when an escalated incident is resolved without an acknowledgement", async () => {
    await breakLedgerTrigger();
    await evaluate();
    const i = await incident();
    await sql`update reserve.incidents set ack_due_at = now() - interval '1 second' where id = ${i.id}`;
    expect(await evaluate()).toMatchObject({ escalated: 1 });
    await deliverAll();
    await fixLedgerTrigger();
    await evaluate();
    await as("bob", (tx) => tx`select reserve.resolve_incident(${i.reference}, 'trigger enabled again')`);
    const esc = await sql`select channel, event_action, dedup_key from reserve.notification_outbox
                          where incident_id = ${i.id} and kind = 'escalation' and event_action = 'resolve'`;
    expect(esc).toEqual([{ channel: "pagerduty", event_action: "resolve", dedup_key: `reserve/${i.reference}/escalation` }]);
    await sql`update reserve.incidents set monitoring_until = now() - interval '1 second' where id = ${i.id}`;
    expect(await evaluate()).toMatchObject({ incidents_closed: 1 });
    expect((await deliverAll()).filter((r) => r.channel === "pagerduty" && r.kind === "escalation").map((r) => r.event_action))
      .toEqual(["resolve"]);
  });

  it("reminds when no update was posted for 30 minutes, and an update restarts the clock", async () => {
    await breakLedgerTrigger();
    await evaluate();
    const i = await incident();
    await as("bob", (tx) => tx`select reserve.acknowledge_incident(${i.id}, 'looking')`);
    await sql`update reserve.incidents set opened_at = now() - interval '31 minutes', ack_due_at = now() + interval '1 hour' where id = ${i.id}`;
    expect(await evaluate()).toMatchObject({ reminded: 1 });
    expect(await evaluate()).toMatchObject({ reminded: 0 });
    const [rem] = await sql`select channel, payload from reserve.notification_outbox where incident_id = ${i.id} and kind = 'reminder'`;
    expect(rem.channel).toBe("slack");
    expect(rem.payload.summary).toMatch(/no status update for 31 minutes/);

    await sql`update reserve.incidents set reminded_at = now() - interval '31 minutes' where id = ${i.id}`;
    await as("bob", (tx) => tx`select reserve.post_incident_update(${i.reference}, 'trigger re-enabled in staging, rolling out')`);
    expect(await evaluate()).toMatchObject({ reminded: 0 });
    const [clock] = await sql`select * from reserve.incident_clocks where id = ${i.id}`;
    expect(new Date(clock.next_update_due_at).getTime() - Date.now()).toBeGreaterThan(29 * 60_000);
  });

  it("resolves into monitoring (1 h for a P1), reopens if the alert still fires when it ends, closes once it ends quiet", async () => {
    await breakLedgerTrigger();
    await evaluate();
    let i = await incident();
    [i] = await as("bob", (tx) => tx`select * from reserve.resolve_incident(${i.id}, 'trigger enabled again')`);
    expect(i.status).toBe("monitoring");
    expect(new Date(i.monitoring_until).getTime() - new Date(i.resolved_at).getTime()).toBe(60 * 60_000);
    expect(new Date(i.review_due_at).getTime() - new Date(i.resolved_at).getTime()).toBe(48 * 3600_000);
    expect(await sqlState(as("bob", (tx) => tx`select reserve.resolve_incident(${i.id}, 'again')`))).toBe("RC602");

    // the alert still fires when monitoring ends: the fix did not hold, the incident is worked again and Slack is told
    await sql`update reserve.incidents set monitoring_until = now() - interval '1 second' where id = ${i.id}`;
    expect(await evaluate()).toMatchObject({ incidents_closed: 0 });
    expect(await incident()).toMatchObject({ id: i.id, status: "acknowledged", monitoring_until: null });
    const [post] = await sql`select channel, payload from reserve.notification_outbox
                             where incident_id = ${i.id} and kind = 'incident' and idempotency_key like '%:reopened-%'`;
    expect(post.channel).toBe("slack");
    expect(post.payload.summary).toMatch(/reopened: monitoring ended with ledger_trigger_disabled still firing/);
    // no reminder right after the reopen: its clock starts over
    expect(await evaluate()).toMatchObject({ reminded: 0, incidents_closed: 0 });

    await fixLedgerTrigger();
    await evaluate();
    await as("bob", (tx) => tx`select * from reserve.resolve_incident(${i.id}, 'trigger enabled, and the migration that disabled it fixed')`);
    await sql`update reserve.incidents set monitoring_until = now() - interval '1 second' where id = ${i.id}`;
    expect(await evaluate()).toMatchObject({ incidents_closed: 1 });
    const closed = await incident();
    expect(closed.status).toBe("closed");
    expect(await sqlState(as("bob", (tx) => tx`select reserve.acknowledge_incident(${i.id}, 'late')`))).toBe("RC602");
    expect(await events(i.id)).toEqual(["opened:system", `fix_deployed:${name("bob")}`, "reopened:system", "alert_resolved:system",
      `fix_deployed:${name("bob")}`, "closed:system"]);
  });

  it("reopens a monitoring incident when its alert fires again", async () => {
    await breakLedgerTrigger();
    await evaluate();
    const i = await incident();
    await as("bob", (tx) => tx`select reserve.resolve_incident(${i.id}, 'fixed?')`);
    await fixLedgerTrigger();
    await evaluate();
    await breakLedgerTrigger();
    await evaluate();
    const again = await incident();
    expect(again).toMatchObject({ id: i.id, status: "acknowledged", monitoring_until: null });
    expect((await events(i.id)).slice(-2)).toEqual(["alert_fired:system", "reopened:system"]);
  });

  it("needs a proven operator and a reason for every action, and records both in the audit trail", async () => {
    await breakLedgerTrigger();
    await evaluate();
    const i = await incident();
    expect(await sqlState(sql`select reserve.acknowledge_incident(${i.id}, 'on it')`)).toBe("RC604");
    expect(await sqlState(as("bob", (tx) => tx`select reserve.acknowledge_incident(${i.id}, '')`))).toBe("RC604");
    // reserve.actor is what someone types: it proves nothing
    expect(await sqlState(sql.begin(async (tx) => {
      await typeActorName(tx, "mallory@reserve.test");
      await tx`select reserve.acknowledge_incident(${i.id}, 'on it')`;
    }))).toBe("RC604");
    expect(await sqlState(as("bob", (tx) => tx`select reserve.acknowledge_incident('INC-2000-01-01-001', 'x')`))).toBe("RC601");

    // a personal login role is proof by itself, and cannot act as someone else
    const role = `oncall_${Math.random().toString(36).slice(2, 8)}`;
    await sql.unsafe(`create role ${role} login password 'pw'`);
    await sql.unsafe(`grant service_role to ${role}`);
    try {
      const url = new URL(db.url);
      url.username = role;
      url.password = "pw";
      const personal = postgres(url.toString(), { max: 1, onnotice: () => {} });
      try {
        // a login of its own is not enough: it must be an operator's (a member of reserve_operator)
        expect(await sqlState(personal`select reserve.acknowledge_incident(${i.id}, 'on it')`)).toBe("RC604");
        await sql.unsafe(`grant reserve_operator to ${role}`);
        expect(await sqlState(personal`select reserve.acknowledge_incident(${i.id}, 'on it', 'bob@reserve.test')`)).toBe("RC604");
        const [acked] = await personal`select * from reserve.acknowledge_incident(${i.id}, 'on it')`;
        expect(acked.acknowledged_by).toBe(role);
      } finally {
        await personal.end();
      }
      const [audit] = await sql`select actor, reason from reserve.audit_logs
                                where table_name = 'incidents' and row_id = ${i.id} and action = 'UPDATE' order by id desc limit 1`;
      expect(audit).toMatchObject({ actor: role, reason: `acknowledge_incident by ${role}: on it` });
    } finally {
      await sql.unsafe(`drop owned by ${role}`);
      await sql.unsafe(`drop role ${role}`);
    }
  });
});

describe("the operator of each on-call action is proven, never typed", () => {
  interface Targets { incident: string; silence: string; item: string }
  type Call = (q: Q, t: Targets, operator: string | null) => Promise<readonly Row[]>;
  // in an order one person can run them all in; the column naming who acted, where the returned row has one
  const ACTIONS: [string, Call, string | null][] = [
    ["acknowledge_incident", (q, t, op) => q`select * from reserve.acknowledge_incident(${t.incident}, 'on it', ${op})`, "acknowledged_by"],
    ["post_incident_update", (q, t, op) => q`select * from reserve.post_incident_update(${t.incident}, 'looking', ${op})`, "actor"],
    ["add_incident_action_item", (q, t, op) => q`select * from reserve.add_incident_action_item(${t.incident}, 'Alert on it',
      'carol@reserve.test', '2026-12-20', 'from the review', ${op})`, "created_by"],
    ["set_action_item_status", (q, t, op) => q`select * from reserve.set_action_item_status(${t.item}, 'done', 'shipped', ${op})`, null],
    ["create_alert_silence", (q, _t, op) => q`select * from reserve.create_alert_silence(
      row('overbooking', null, null, ${new Date(Date.now() + 3600_000)}, 'maintenance')::reserve.alert_silence_request, ${op})`, "author"],
    ["end_alert_silence", (q, t, op) => q`select * from reserve.end_alert_silence(${t.silence}, 'window over', ${op})`, "ended_by"],
    ["resolve_incident", (q, t, op) => q`select * from reserve.resolve_incident(${t.incident}, 'fixed', ${op})`, "resolved_by"],
  ];

  /** An open incident, a silence in force and an action item, each made by carol. */
  async function targets(): Promise<Targets> {
    await breakLedgerTrigger();
    await evaluate();
    const [i] = await sql`select id from reserve.incidents order by opened_at desc limit 1`;
    const [s] = await as("carol", (tx) => tx`select * from reserve.create_alert_silence(
      row('webhook_noise', null, null, ${new Date(Date.now() + 3600_000)}, 'provider maintenance')::reserve.alert_silence_request)`);
    const [a] = await as("carol", (tx) => tx`select * from reserve.add_incident_action_item(${i.id}, 'Review the trigger', 'carol', '2026-12-20', 'the trigger was off')`);
    return { incident: i.id, silence: s.id, item: a.id };
  }

  /** What an on-call action writes: the incidents, their events and action items, silences, the outbox, the audit trail. */
  const written = async () => (await sql`select
      (select coalesce(jsonb_agg(x order by x.id), '[]') from reserve.incidents x) as incidents,
      (select coalesce(jsonb_agg(x order by x.id), '[]') from reserve.incident_events x) as events,
      (select coalesce(jsonb_agg(x order by x.id), '[]') from reserve.incident_action_items x) as items,
      (select coalesce(jsonb_agg(x order by x.id), '[]') from reserve.alert_silences x) as silences,
      (select count(*)::int from reserve.notification_outbox) as outbox,
      (select count(*)::int from reserve.audit_logs) as audit`)[0];

  /** Runs every action on `run` as `operator` (what the session passes), expecting each recorded as `proven`. */
  async function everyActionRecords(run: <T>(fn: (tx: postgres.TransactionSql) => Promise<T>) => Promise<T>,
                                    operator: string | null, proven: string) {
    const t = await targets();
    for (const [action, call, column] of ACTIONS) {
      const [row] = await run((tx) => call(tx, t, operator));
      if (column) expect(row[column], action).toBe(proven);
      const [audit] = await sql`select actor, reason from reserve.audit_logs order by id desc limit 1`;
      expect(audit, action).toMatchObject({ actor: proven, reason: expect.stringMatching(new RegExp(`^${action} by ${escaped(proven)}: `)) });
    }
  }

  it("records the reason given for an action item as the audit trail's reason, the item's text as the item, and needs one (RC604)", async () => {
    const t = await targets();
    const before = await written();
    for (const reason of [null, "", "  "]) {
      expect(await sqlState(as("bob", (tx) => tx`select reserve.add_incident_action_item(${t.incident}, 'Alert on it', 'carol',
        '2026-12-20', ${reason})`)), String(reason)).toBe("RC604");
    }
    expect(await written()).toEqual(before);
    const [item] = await as("bob", (tx) => tx`select * from reserve.add_incident_action_item(${t.incident}, 'Alert on ALTER TABLE',
      'carol', '2026-12-20', 'the trigger was off for an hour unseen')`);
    expect(item).toMatchObject({ action: "Alert on ALTER TABLE", owner: "carol", created_by: name("bob") });
    const audit = await sql`select distinct reason from reserve.audit_trail where table_name = 'incident_action_items' and row_id = ${item.id}`;
    expect(audit).toEqual([{ reason: `add_incident_action_item by ${name("bob")}: the trigger was off for an hour unseen` }]);
  });

  it("returns the item already there when the same action item is sent again, writing nothing", async () => {
    const t = await targets();
    const add = (action: string, owner: string, due: string) => as("bob", (tx) => tx`select * from reserve.add_incident_action_item(
      ${t.incident}, ${action}, ${owner}, ${due}::date, 'from the review')`);
    const [first] = await add("Alert on ALTER TABLE", "carol", "2026-12-20");
    const before = await written();
    const [again] = await add(" Alert on ALTER TABLE ", "carol ", "2026-12-20");
    expect(again).toEqual(first);
    expect(await written()).toEqual(before);
    // another owner or due date is another item
    const [other] = await add("Alert on ALTER TABLE", "dana", "2026-12-20");
    expect(other.id).not.toBe(first.id);
  });

  it("marks an action item done or dropped for a reason (RC604 without): the audit's reason and an event of the incident, once", async () => {
    const t = await targets();
    const before = await written();
    for (const reason of [null, "", "  "]) {
      expect(await sqlState(as("bob", (tx) => tx`select reserve.set_action_item_status(${t.item}, 'dropped', ${reason})`)), String(reason))
        .toBe("RC604");
    }
    expect(await written()).toEqual(before);
    const drop = () => as("bob", (tx) => tx`select * from reserve.set_action_item_status(${t.item}, 'dropped', 'covered by the alert on ALTER TABLE')`);
    const [dropped] = await drop();
    expect(dropped).toMatchObject({ id: t.item, status: "dropped" });
    const audit = await sql`select distinct reason from reserve.audit_trail where table_name = 'incident_action_items' and row_id = ${t.item}
                            and reason like 'set_action_item_status%'`;
    expect(audit).toEqual([{ reason: `set_action_item_status by ${name("bob")}: covered by the alert on ALTER TABLE` }]);
    const events = await sql`select actor, note from reserve.incident_events where incident_id = ${t.incident} and note like 'Review the trigger:%'`;
    expect(events).toEqual([{ actor: name("bob"), note: "Review the trigger: open -> dropped (covered by the alert on ALTER TABLE)" }]);
    // sent again after a lost answer: the item already has that status, nothing more is written
    const after = await written();
    const [again] = await drop();
    expect(again).toEqual(dropped);
    expect(await written()).toEqual(after);
    expect(await sqlState(as("bob", (tx) => tx`select reserve.set_action_item_status(${t.item}, 'finished', 'x')`))).toBe("RC001");
    expect(await sqlState(as("bob", (tx) => tx`select reserve.set_action_item_status(gen_random_uuid(), 'done', 'x')`))).toBe("RC601");
  });

  it("refuses each action on a shared login (postgres, service_role) whatever operator and token subject it types, and writes nothing (RC604)", async () => {
    const t = await targets();
    const before = await written();
    for (const [action, call] of ACTIONS) {
      for (const login of ["postgres", "service_role"]) {
        for (const subject of [null, randomUUID()]) {
          const state = await sqlState(sql.begin(async (tx) => {
            if (login !== "postgres") await tx.unsafe(`set local session authorization ${login}`);
            // the console's setting, typed: only the console's own login is taken at its word
            if (subject) await tx`select set_config('reserve.operator_subject', ${subject}, true)`;
            await typeActorName(tx, "mallory@reserve.test");
            return call(tx, t, "mallory@reserve.test");
          }));
          expect({ action, login, subject, state }).toEqual({ action, login, subject, state: "RC604" });
        }
      }
    }
    expect(await written()).toEqual(before);
  });

  it("takes each action's operator from a personal role in reserve_operator, which cannot name someone else", async () => {
    const t = await targets();
    const before = await written();
    for (const [action, call] of ACTIONS) {
      expect(await sqlState(as("bob", (tx) => call(tx, t, name("alice")))), action).toBe("RC604");
      expect(await sqlState(as("bob", (tx) => call(tx, t, "bob@reserve.test"))), action).toBe("RC604");
    }
    expect(await written()).toEqual(before);
    await reset();
    await everyActionRecords((fn) => as("bob", fn), null, name("bob"));
  });

  it("takes each action's operator from the ops console's login with the verified token's subject, and needs both", async () => {
    const login = opsConsoleLogin(db.url);
    try {
      const t = await targets();
      const before = await written();
      for (const [action, call] of ACTIONS) {
        expect(await sqlState(login.as(null, (tx) => call(tx, t, "dana@reserve.test"))), action).toBe("RC604");
        expect(await sqlState(login.as(randomUUID(), (tx) => call(tx, t, null))), action).toBe("RC604");
      }
      expect(await written()).toEqual(before);
      await reset();
      await everyActionRecords((fn) => login.as(randomUUID(), fn), "dana@reserve.test", "dana@reserve.test");
    } finally {
      await login.end();
    }
  });
});

describe("incident_review", () => {
  it("writes the runbook's template from the data: timeline, computed impact, action items with owner and due date", async () => {
    const { unitId } = await f.unit(sql, { nights: 10 });
    await breakLedgerTrigger();
    await evaluate();
    const [i] = await sql`select * from reserve.incidents order by opened_at desc limit 1`;
    // two guests' payments during the incident: one failed, one still processing
    for (const [n, status] of [[1, "failed"], [4, "processing"]] as const) {
      const [bi] = await sql`select * from reserve.create_booking_intent(${unitId}, ${f.isoDate(n)}::date, ${f.isoDate(n + 2)}::date, 2)`;
      await sql`update reserve.booking_intents set guest_email = ${`guest${n}@example.com`} where id = ${bi.id}`;
      const [p] = await sql`select * from reserve.create_payment(${bi.id}, 'stripe', 'card', ${bi.amount})`;
      await applyStatus(sql, p.id as string, status);
    }
    const [{ total }] = await sql`select sum(amount)::bigint as total from reserve.payments where created_at >= ${i.detected_at}`;
    await as("bob", (tx) => tx`select reserve.acknowledge_incident(${i.reference}, 'paged, looking')`);
    await as("bob", (tx) => tx`select reserve.block_unit_dates(${unitId}, ${f.isoDate(8)}::date, ${f.isoDate(9)}::date, ${`${i.reference}: hold while the ledger is checked`})`);
    await fixLedgerTrigger();
    await evaluate();
    await as("bob", (tx) => tx`select reserve.resolve_incident(${i.reference}, 'trigger enabled again')`);
    await as("bob", (tx) => tx`select reserve.add_incident_action_item(${i.reference}, 'Alert on ALTER TABLE of ledger tables', 'carol@reserve.test', '2026-12-20', 'review')`);
    expect(await sqlState(as("bob", (tx) => tx`select reserve.add_incident_action_item(${i.reference}, 'No owner', '', '2026-12-20', 'review')`))).toBe("RC001");

    const [{ md }] = await sql`select reserve.incident_review(${i.reference}) as md`;
    expect(md).toContain(`# Post-incident review: ${i.reference}`);
    expect(md).toContain("**Severity:** P1");
    expect(md).toMatch(/\*\*Duration:\*\* \d\d:\d\d/);
    expect(md).toContain(`(acknowledged by ${name("bob")})`);
    expect(md).toMatch(/\[alert\] system: alert ledger_trigger_disabled firing/);
    expect(md).toMatch(/\[alert\] system: alert ledger_trigger_disabled resolved/);
    expect(md).toMatch(new RegExp(`\\[incident\\] ${escaped(name("bob"))}: acknowledged: paged, looking`));
    expect(md).toMatch(new RegExp(`\\[incident\\] ${escaped(name("bob"))}: fix_deployed: trigger enabled again`));
    expect(md).toMatch(new RegExp(`\\[operator\\] ${escaped(name("bob"))}: block_unit_dates by ${escaped(name("bob"))}: ${i.reference}: hold while the ledger is checked`));
    expect(md).toContain("**Customers Affected:** 2 guests (2 of the 2 payments");
    const money = (Number(total) / 100).toLocaleString("en-US", { minimumFractionDigits: 2 });
    expect(md).toContain(`**Financial Impact:** BRL ${money} in affected payments`);
    expect(md).toContain("| Alert on ALTER TABLE of ledger tables | carol@reserve.test | 2026-12-20 | open |");
    for (const h of ["### Root Cause", "### What Went Well", "### What Went Wrong", "### Lessons Learned"]) expect(md).toContain(h);
    expect(await sqlState(sql`select reserve.incident_review('INC-1999-01-01-001')`)).toBe("RC601");
  });
});
