// The ops console in headless Chromium (Debian's chromium, driven by puppeteer-core) against the real
// stack: the page served by the ops function under Deno, a real database and the sandbox. It signs in
// with an operator token, shows the alerts, incidents with their clocks, stuck payments, webhooks, the
// ledger check, overbooking and the charts; its actions change the database with the operator's identity
// and reason in the audit trail, on the console's own database login (the database takes an on-call
// action's, a repair's or a correction's operator from no other); a ledger correction needs a second operator.
// Screenshots of the main views go to test-output/ops/.
import { mkdir } from "node:fs/promises";
import path from "node:path";
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { localIssuer, signWithKey, userClaims } from "../../local/auth_keys.ts";
import { signJwt } from "../../local/keys.ts";
import { projectRoot } from "../../local/migrate.ts";
import * as f from "../helpers/fixtures.ts";
import { applyStatus } from "../helpers/money.ts";
import { testSigningKey, userTokenFor } from "../helpers/auth.ts";
import { paidReservation } from "../ops/ops_helpers.ts";
import { startE2E, until, type E2E } from "../helpers/e2e.ts";
import { startTestFunctions } from "../helpers/functions.ts";

const SHOTS = path.join(projectRoot, "test-output", "ops");
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

let e: E2E;
let browser: Browser;
let page: Page;
let unitId: string;
let stuckPaymentId: string;
let imbalancedTx: string;

/** An operator's access token as Supabase Auth issues it, signed with the key the functions trust. */
const operatorToken = (email: string, extra: Record<string, unknown> = {}) => signWithKey({
  ...userClaims({ email, operator: true, issuer: localIssuer(Number(new URL(e.url("ops")).port)) }), ...extra,
}, testSigningKey);
let ALICE: string;
let BOB: string;
const consoleUrl = () => `${e.url("ops")}/`;

beforeAll(async () => {
  await mkdir(SHOTS, { recursive: true });
  e = await startE2E();
  ALICE = operatorToken("alice@reserve.test");
  BOB = operatorToken("bob@reserve.test");
  const sql = e.db.sql;
  ({ unitId } = await f.unit(sql, { nights: 20 }));
  // a card payment stuck in processing for an hour
  const [bi] = await sql`select * from reserve.create_booking_intent(${unitId}, ${f.isoDate(1)}::date, ${f.isoDate(3)}::date, 2)`;
  const [p] = await sql`select * from reserve.create_payment(${bi.id}, 'stripe', 'card', ${bi.amount})`;
  await applyStatus(sql, p.id as string, "processing");
  await sql`update reserve.payments set status_changed_at = now() - interval '1 hour' where id = ${p.id}`;
  stuckPaymentId = p.id as string;
  // the hour's success rate: one paid, one declined
  for (const [n, status] of [[5, "succeeded"], [8, "failed"]] as const) {
    const [i] = await sql`select * from reserve.create_booking_intent(${unitId}, ${f.isoDate(n)}::date, ${f.isoDate(n + 2)}::date, 2)`;
    const [q] = await sql`select * from reserve.create_payment(${i.id}, 'stripe', 'card', ${i.amount})`;
    await applyStatus(sql, q.id as string, status);
  }
  // a one-sided ledger transaction, committed with the balance trigger off: the P1 fires, an incident opens
  imbalancedTx = crypto.randomUUID();
  await sql`alter table reserve.ledger_entries disable trigger trg_ledger_balance`;
  await sql.begin(async (tx) => {
    await tx`select set_config('reserve.ledger_writer', 'on', true)`;
    await tx`insert into reserve.ledger_transactions (id, kind, description) values (${imbalancedTx}, 'payment', 'one leg only')`;
    await tx`insert into reserve.ledger_entries (transaction_id, entry_type, account, direction, amount)
             values (${imbalancedTx}, 'guest_payment', 'receivable_stripe', 'debit', 12345)`;
  });
  await sql`alter table reserve.ledger_entries enable trigger trg_ledger_balance`;
  const run = await e.post("notify", {}, { authorization: `Bearer ${e.cronSecret}` });
  expect(run.body.evaluation.incidents_opened).toBeGreaterThanOrEqual(1);

  browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
  page = await browser.newPage();
  await page.setViewport({ width: 1400, height: 1000 });
});
afterAll(async () => {
  await browser?.close();
  await e?.stop();
});

const text = (sel: string) => page.$eval(sel, (n) => (n as HTMLElement).innerText);
const shot = (name: string) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });

async function signIn(token: string) {
  await page.goto(consoleUrl(), { waitUntil: "networkidle0" });
  if (await page.$eval("#sign-out", (b) => !(b as HTMLElement).hidden)) {
    await page.click("#sign-out");
    // nothing the previous operator was shown stays in the page
    expect(await page.$$eval("main table tr, main .chart svg", (rows) => rows.length)).toBe(0);
    expect(await text("#review-md")).toBe("");
  }
  await page.type("#sign-in-form textarea", token);
  await page.click("#sign-in-form button[type=submit]");
  // signed in, and the lists are this operator's: sign-out empties them, and main is busy while they load
  await page.waitForFunction(() => document.querySelector("#who")?.textContent !== ""
    && !document.querySelector("main")?.hasAttribute("aria-busy") && !!document.querySelector("#health tbody tr"));
}

async function tab(view: string) {
  await page.click(`#tabs button[data-view=${view}]`);
  await page.waitForSelector(`#view-${view}:not([hidden])`);
}

/** Opens an action from a button, fills its fields and reason, runs it, and waits for the answer. */
async function runAction(button: string, fields: Record<string, string>, reason: string): Promise<string> {
  // found and clicked in one task of the page: the console re-renders its lists while it refreshes, so a
  // button found by one call (waitForSelector, or $eval's query) can be detached by the next, and a click
  // on a detached button opens nothing
  await page.waitForFunction((sel) => {
    const b = document.querySelector(sel) as HTMLButtonElement | null;
    b?.click();
    return !!b && !!document.querySelector("#action-dialog")?.hasAttribute("open");
  }, {}, button);
  await page.evaluate((values, why) => {
    const form = document.querySelector("#action-form") as HTMLFormElement;
    for (const [k, v] of Object.entries(values)) (form.elements.namedItem(k) as HTMLInputElement).value = v;
    (form.elements.namedItem("reason") as HTMLTextAreaElement).value = why;
    // the previous action's "done by" must not be read as this one's
    const flash = document.querySelector("#flash");
    if (flash) flash.textContent = "";
  }, fields, reason);
  await page.click("#action-submit");
  await page.waitForFunction(() => !document.querySelector("#action-dialog")?.hasAttribute("open")
    || document.querySelector("#action-error")?.textContent !== "");
  const error = await text("#action-error");
  if (error) return error;
  await page.waitForFunction(() => /done by/.test(document.querySelector("#flash")?.textContent ?? ""));
  return text("#flash");
}

describe("the ops console", () => {
  it("serves its page with a strict content security policy, and its API only to operators", async () => {
    const res = await fetch(consoleUrl());
    expect(res.status).toBe(200);
    expect(res.headers.get("content-security-policy")).toMatch(/script-src 'self'/);
    expect(await res.text()).toContain("<title>Reserve Connect ops console</title>");
    const bare = await fetch(e.url("ops"), { redirect: "manual" });
    expect(bare.status).toBe(308);
    expect(bare.headers.get("location")).toBe("ops/");

    expect((await fetch(`${consoleUrl()}api/overview`)).status).toBe(401);
    const guest = e.userToken();
    const refused = await fetch(`${consoleUrl()}api/overview`, { headers: { authorization: `Bearer ${guest}` } });
    expect(refused.status).toBe(403);
    expect((await refused.json()).error).toBe("not_an_operator");
    const forged = signJwt(JSON.parse(Buffer.from(ALICE.split(".")[1], "base64url").toString()), "not-the-secret");
    expect((await fetch(`${consoleUrl()}api/overview`, { headers: { authorization: `Bearer ${forged}` } })).status).toBe(401);
    const expired = operatorToken("alice@reserve.test", { exp: Math.floor(Date.now() / 1000) - 10 });
    expect((await fetch(`${consoleUrl()}api/overview`, { headers: { authorization: `Bearer ${expired}` } })).status).toBe(401);
    // a field the API does not know, or a bad id, is a 400 naming it: never a 500
    const bad = await fetch(`${consoleUrl()}api/action`, { method: "POST", headers: { authorization: `Bearer ${ALICE}`, "content-type": "application/json" },
      body: JSON.stringify({ action: "mark_payment_failed", payment_id: "not-a-uuid", reason: "testing" }) });
    expect(bad.status).toBe(400);
    expect((await bad.json()).issues).toEqual([expect.objectContaining({ path: "payment_id" })]);
  });

  it.each([
    ["a NUL in the reason", { action: "create_alert_silence", alert_name: "x", ends_at: "2027-01-01T00:00:00Z", reason: "abc\u0000def" }, "reason"],
    ["a bidi override in the reason", { action: "mark_payment_failed", payment_id: crypto.randomUUID(), reason: "ok \u202e" }, "reason"],
    ["a silence ending in the year 0000", { action: "create_alert_silence", alert_name: "x", ends_at: "0000-01-01T00:00:00Z", reason: "testing" }, "ends_at"],
    ["dates in the year 0000", { action: "block_unit_dates", unit_id: crypto.randomUUID(), from: "0000-01-01", to: "0000-01-05", reason: "testing" }, "from"],
    ["a NUL in an action item", { action: "add_incident_action_item", incident: "INC-2026-12-07-001", item: "fix\u0000it", owner: "alice",
                                  due_date: "2027-01-01", reason: "testing" }, "item"],
    ["a line break in an action item's owner", { action: "add_incident_action_item", incident: "INC-2026-12-07-001", item: "fix it",
                                                  owner: "alice\nbob", due_date: "2027-01-01", reason: "testing" }, "owner"],
  ])("refuses %s with a 400 naming the field", async (_what, body, field) => {
    const res = await fetch(`${consoleUrl()}api/action`, { method: "POST",
      headers: { authorization: `Bearer ${ALICE}`, "content-type": "application/json" }, body: JSON.stringify(body) });
    const answer = await res.json();
    expect(res.status, JSON.stringify(answer)).toBe(400);
    expect(answer.issues.map((i: { path: string }) => i.path)).toContain(field);
  });

  it("shows the overview: ledger check, health checks, outbox and the hourly charts", async () => {
    await signIn(ALICE);
    expect(await text("#who")).toBe("alice@reserve.test");
    const ledger = await text("#ledger");
    expect(ledger).toMatch(/ledger_balance\s+CRITICAL|ledger_balance\s+WARNING/);
    expect(await text("#overbooking")).toContain("no night sold past its allotment");
    expect(await text("#health")).toContain("stuck_payments");
    expect(await page.$eval("#success-chart svg", (s) => Number(s.getAttribute("data-points")))).toBeGreaterThanOrEqual(1);
    const bars = await page.$$eval("#success-chart rect", (rs) => rs.map((r) => r.querySelector("title")?.textContent));
    expect(bars.at(-1)).toMatch(/1\/2 succeeded$/);
    await page.waitForSelector("#lag-chart svg");
    await shot("overview");
  });

  it("shows the firing alerts and silences one with a reason", async () => {
    await tab("alerts");
    const row = await text("#alerts tr[data-row=ledger_imbalance]");
    expect(row).toMatch(/ledger_imbalance\s+P1\s+firing/);
    await shot("alerts");
    const ends = new Date(Date.now() + 2 * 3600_000);
    const local = new Date(ends.getTime() - ends.getTimezoneOffset() * 60_000).toISOString().slice(0, 16);
    expect(await runAction("#alerts tr[data-row=webhook_noise] button[data-action=create_alert_silence]", { ends_at: local }, "provider maintenance window"))
      .toMatch(/Silence an alert: done by alice@reserve.test/);
    const [s] = await e.db.sql`select * from reserve.alert_silences where alert_name = 'webhook_noise'`;
    expect(s).toMatchObject({ author: "alice@reserve.test", reason: "provider maintenance window" });
    expect(await text("#silences")).toContain("provider maintenance window");
  });

  it("shows the incident with its clocks and acknowledges it as the signed-in operator", async () => {
    await tab("incidents");
    const [inc] = await e.db.sql`select * from reserve.incidents where alert_name = 'ledger_imbalance'`;
    const sel = `#incidents tr[data-row="${inc.reference}"]`;
    await page.waitForSelector(sel);
    expect(await text(sel)).toMatch(/P1\s+open\s+ledger_imbalance \(firing\)/);
    await page.waitForFunction((s) => /ack in 1[0-5]m/.test(document.querySelector(`${s} .clocks`)?.textContent ?? ""), {}, sel);
    expect(await text(`${sel} .clocks`)).toMatch(/triage (in|overdue by) .*· ack in 1\dm \d\ds · update in/);
    await shot("incidents");
    expect(await runAction(`${sel} button[data-action=acknowledge_incident]`, {}, "paged, looking at the ledger"))
      .toMatch(/done by alice@reserve.test/);
    const [after] = await e.db.sql`select * from reserve.incidents where id = ${inc.id}`;
    expect(after).toMatchObject({ status: "acknowledged", acknowledged_by: "alice@reserve.test" });
    const [audit] = await e.db.sql`select actor, reason from reserve.audit_logs where table_name = 'incidents' and row_id = ${inc.id}
                                   and action = 'UPDATE' order by id desc limit 1`;
    expect(audit).toMatchObject({ actor: "alice@reserve.test", reason: "acknowledge_incident by alice@reserve.test: paged, looking at the ledger" });
    await page.waitForFunction((s) => /acknowledged/.test(document.querySelector(s)?.textContent ?? ""), {}, sel);
    expect(await runAction(`${sel} button[data-action=post_incident_update]`, {}, `${inc.reference}: one-sided transaction found, correction proposed`))
      .toMatch(/done by alice/);
  });

  it("lists the stuck payment and the webhooks by status", async () => {
    await tab("payments");
    expect(await text(`#stuck tr[data-row="${stuckPaymentId}"]`)).toMatch(/stripe card\s+processing/);
    await shot("payments");
    await tab("webhooks");
    expect(await text("#webhooks")).toMatch(/stripe/);
    await shot("webhooks");
  });

  it("blocks dates of a unit with a reason, recorded with the operator", async () => {
    await tab("repairs");
    const [inc] = await e.db.sql`select reference from reserve.incidents where alert_name = 'ledger_imbalance'`;
    const out = await runAction("button[data-open=block_unit_dates]", { unit_id: unitId, from: f.isoDate(10), to: f.isoDate(12) },
      `${inc.reference}: hold while the ledger is checked`);
    expect(out).toMatch(/Block dates of a unit: done by alice@reserve.test/);
    const [b] = await e.db.sql`select * from reserve.ops_blocks where unit_id = ${unitId} and unblocked_at is null`;
    expect(b.blocked_by).toBe("alice@reserve.test");
    const [cal] = await e.db.sql`select count(*)::int as n from reserve.availability_calendar
                                 where unit_id = ${unitId} and date between ${f.isoDate(10)}::date and ${f.isoDate(11)}::date and is_blocked`;
    expect(cal.n).toBe(2);
    expect(await text("#blocks")).toContain("hold while the ledger is checked");
  });

  it("needs a second operator to approve a ledger correction (4 eyes)", async () => {
    const out = await runAction("button[data-open=propose_ledger_correction]",
      { target_transaction_id: imbalancedTx, entries: "corrections credit 12345" }, "balancing leg for the one-sided transaction");
    expect(out).toMatch(/done by alice/);
    const [c] = await e.db.sql`select * from reserve.ledger_corrections where target_transaction_id = ${imbalancedTx}`;
    expect(c).toMatchObject({ status: "proposed", proposed_by: "alice@reserve.test" });
    await page.waitForSelector(`#corrections tr[data-row="${c.id}"]`);
    await shot("repairs");
    // the proposer cannot approve her own correction
    const refused = await runAction(`#corrections tr[data-row="${c.id}"] button[data-action=approve_ledger_correction]`, {}, "looks right");
    expect(refused).toMatch(/four_eyes_violation/);
    await page.click("#action-cancel");
    expect((await e.db.sql`select status from reserve.ledger_corrections where id = ${c.id}`)[0].status).toBe("proposed");

    await signIn(BOB);
    await tab("repairs");
    expect(await runAction(`#corrections tr[data-row="${c.id}"] button[data-action=approve_ledger_correction]`, {}, "checked against Stripe"))
      .toMatch(/done by bob@reserve.test/);
    const [approved] = await e.db.sql`select * from reserve.ledger_corrections where id = ${c.id}`;
    expect(approved).toMatchObject({ status: "approved", decided_by: "bob@reserve.test" });
    const [health] = await e.db.sql`select status from reserve.system_health_check() where check_name = 'ledger_balance'`;
    expect(health.status).toBe("OK");
  });

  it("compares the two people of a correction by their token's sub: a changed email or none is the same person (RC407)", async () => {
    const act = async (token: string, body: unknown) => {
      const r = await fetch(`${e.url("ops")}/api/action`, {
        method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: JSON.stringify(body),
      });
      return { status: r.status, body: await r.json() };
    };
    const sub = crypto.randomUUID();
    const before = operatorToken("dana@reserve.test", { sub });
    const renamed = operatorToken("dana.new@reserve.test", { sub });
    const noEmail = operatorToken("dana@reserve.test", { sub, email: undefined });
    const entries = [{ account: "corrections", direction: "debit", amount: 4242 }, { account: "bank_brl", direction: "credit", amount: 4242 }];
    const p = await act(before, { action: "propose_ledger_correction", entries, reason: "balancing the bank" });
    expect(p.status).toBe(200);
    expect(p.body.result).toMatchObject({ proposed_by: "dana@reserve.test", proposed_by_subject: `auth:${sub}` });
    for (const token of [before, renamed, noEmail]) {
      for (const action of ["approve_ledger_correction", "reject_ledger_correction"]) {
        const r = await act(token, { action, correction_id: p.body.result.id, reason: "looks right" });
        expect([r.status, r.body.code]).toEqual([403, "RC407"]);
      }
    }
    expect((await e.db.sql`select status from reserve.ledger_corrections where id = ${p.body.result.id}`)[0].status).toBe("proposed");
    const other = await act(operatorToken("erin@reserve.test"), { action: "reject_ledger_correction", correction_id: p.body.result.id, reason: "not needed" });
    expect(other.status).toBe(200);
    expect(other.body.result).toMatchObject({ status: "rejected", decided_by: "erin@reserve.test" });
  });

  it("resolves the incident and shows its generated review with an action item", async () => {
    await e.post("notify", {}, { authorization: `Bearer ${e.cronSecret}` });
    await page.reload({ waitUntil: "networkidle0" });
    await page.waitForSelector("#health tbody tr");
    await tab("incidents");
    const [inc] = await e.db.sql`select * from reserve.incidents where alert_name = 'ledger_imbalance'`;
    const sel = `#incidents tr[data-row="${inc.reference}"]`;
    expect(await runAction(`${sel} button[data-action=resolve_incident]`, {}, "correction approved; ledger balances")).toMatch(/done by bob/);
    await until(async () => (await e.db.sql`select status from reserve.incidents where id = ${inc.id}`)[0].status === "monitoring", "monitoring");
    expect((await e.db.sql`select resolved_by from reserve.incidents where id = ${inc.id}`)[0].resolved_by).toBe("bob@reserve.test");
    await page.waitForFunction((s) => /monitoring ends in/.test(document.querySelector(`${s} .clocks`)?.textContent ?? ""), {}, sel);
    await page.click(`${sel} button.review`);
    await page.waitForFunction(() => /Post-incident review/.test(document.querySelector("#review-md")?.textContent ?? ""));
    expect(await runAction("#add-item", { item: "Alert when a ledger trigger is disabled", owner: "carol@reserve.test", due_date: "2026-12-31" }, "review"))
      .toMatch(/done by bob/);
    await page.waitForFunction(() => /carol@reserve.test/.test(document.querySelector("#review-md")?.textContent ?? ""));
    const md = await text("#review-md");
    expect(md).toContain(`# Post-incident review: ${inc.reference}`);
    expect(md).toMatch(/\[incident\] alice@reserve.test: acknowledged: paged, looking at the ledger/);
    expect(md).toMatch(/\[operator\] bob@reserve.test: approve_ledger_correction by bob@reserve.test: .*ledger_corrections/);
    expect(md).not.toMatch(/\[operator\] postgres/);
    expect(md).not.toContain("-  - ");
    expect(md).toContain("| Alert when a ledger trigger is disabled | carol@reserve.test | 2026-12-31 | open |");
    await shot("review");
  });
  it("records the token's operator for each on-call action it runs, with the reason in the audit trail", async () => {
    const token = operatorToken("erin@reserve.test", { sub: crypto.randomUUID() });
    const act = async (body: Record<string, unknown>) => {
      const r = await fetch(`${e.url("ops")}/api/action`, {
        method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: JSON.stringify(body),
      });
      const answer = await r.json();
      expect(r.status, JSON.stringify(answer)).toBe(200);
      expect(answer.operator).toBe("erin@reserve.test");
      const audit = await e.db.sql`select actor from reserve.audit_logs where reason = ${`${body.action} by erin@reserve.test: ${body.reason}`}`;
      expect(audit.map((a) => a.actor)).toEqual(["erin@reserve.test"]);
      return answer.result;
    };
    const [inc] = await e.db.sql`select reference from reserve.incidents where alert_name = 'ledger_imbalance'`;
    expect(await act({ action: "post_incident_update", incident: inc.reference, reason: "monitoring: ledger balances" }))
      .toMatchObject({ kind: "update", actor: "erin@reserve.test" });
    expect(await act({ action: "add_incident_action_item", incident: inc.reference, item: "Page on a one-sided transaction", owner: "dana",
                       due_date: "2027-01-15", reason: "from the review" }))
      .toMatchObject({ created_by: "erin@reserve.test", owner: "dana", action: "Page on a one-sided transaction" });
    const silence = await act({ action: "create_alert_silence", alert_name: "overbooking", ends_at: new Date(Date.now() + 3600_000).toISOString(),
                                reason: "inventory import" });
    expect(silence).toMatchObject({ author: "erin@reserve.test", alert_name: "overbooking" });
    expect(await act({ action: "end_alert_silence", silence_id: silence.id, reason: "import done" }))
      .toMatchObject({ id: silence.id, ended_by: "erin@reserve.test" });
  });

  it("records the token's operator for a repair it runs (a refund), with the reason in the audit trail", async () => {
    const token = operatorToken("erin@reserve.test", { sub: crypto.randomUUID() });
    const paid = await paidReservation(e.db.sql);
    const why = "INC-5: the host cannot receive the guest";
    const r = await fetch(`${e.url("ops")}/api/action`, {
      method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ action: "cancel_reservation_with_refund", reservation_id: paid.reservationId, reason: why }),
    });
    const answer = await r.json();
    expect(r.status, JSON.stringify(answer)).toBe(200);
    expect(answer).toMatchObject({ operator: "erin@reserve.test", result: { status: "cancelled", refund_status: "requested" } });
    const [rr] = await e.db.sql`select requested_by, amount from reserve.refund_requests where id = ${answer.result.refund_request_id}`;
    expect(rr).toEqual({ requested_by: "erin@reserve.test", amount: String(paid.amount) });
    const audit = await e.db.sql`select distinct actor, reason from reserve.audit_trail where table_name = 'reservations' and row_id = ${paid.reservationId}
                                 and action = 'UPDATE'`;
    expect(audit).toEqual([{ actor: "erin@reserve.test", reason: `cancel_reservation_with_refund by erin@reserve.test: ${why}` }]);
  });

  it("answers 503 ops_login_missing for each action without the console's login, and changes nothing", async () => {
    const bare = await startTestFunctions(e.db.url, { RESERVE_OPS_DB_URL: "" });
    try {
      const token = userTokenFor(Number(new URL(bare.url).port), crypto.randomUUID(), "erin@reserve.test", true);
      const [inc] = await e.db.sql`select reference from reserve.incidents where alert_name = 'ledger_imbalance'`;
      const [s] = await e.db.sql`select id from reserve.alert_silences where ended_at is null and ends_at > now() order by id limit 1`;
      const written = async () => (await e.db.sql`select (select count(*)::int from reserve.audit_logs) as audit,
        (select count(*)::int from reserve.incident_events) as events, (select count(*)::int from reserve.alert_silences) as silences,
        (select count(*)::int from reserve.incident_action_items) as items, (select count(*)::int from reserve.refund_requests) as refunds,
        (select count(*)::int from reserve.ops_blocks) as blocks`)[0];
      const paid = await paidReservation(e.db.sql);
      const any = crypto.randomUUID();
      const before = await written();
      for (const body of [
        { action: "acknowledge_incident", incident: inc.reference, reason: "on it" },
        { action: "post_incident_update", incident: inc.reference, reason: "looking" },
        { action: "resolve_incident", incident: inc.reference, reason: "fixed" },
        { action: "add_incident_action_item", incident: inc.reference, item: "Fix it", owner: "dana", due_date: "2027-01-15", reason: "review" },
        { action: "create_alert_silence", alert_name: "overbooking", ends_at: new Date(Date.now() + 3600_000).toISOString(), reason: "import" },
        { action: "end_alert_silence", silence_id: s.id, reason: "over" },
        { action: "replay_webhook", webhook_id: any, reason: "replay" },
        { action: "recover_payment", payment_id: stuckPaymentId, status: "succeeded", amount_received: 1, currency: "BRL", reason: "dashboard" },
        { action: "mark_payment_failed", payment_id: stuckPaymentId, reason: "dashboard" },
        { action: "block_unit_dates", unit_id: unitId, from: f.isoDate(15), to: f.isoDate(16), reason: "hold" },
        { action: "unblock_unit_dates", block_id: any, reason: "lift" },
        { action: "move_reservation", reservation_id: paid.reservationId, new_unit_id: unitId, reason: "move" },
        { action: "cancel_reservation_with_refund", reservation_id: paid.reservationId, reason: "cancel" },
        { action: "propose_ledger_correction", reason: "fix", entries: [{ account: "corrections", direction: "credit", amount: 1 }] },
        { action: "approve_ledger_correction", correction_id: any, reason: "looks right" },
        { action: "reject_ledger_correction", correction_id: any, reason: "wrong leg" },
      ]) {
        const r = await fetch(`${bare.functionUrl("ops")}/api/action`, {
          method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: JSON.stringify(body),
        });
        expect([body.action, r.status, (await r.json()).error]).toEqual([body.action, 503, "ops_login_missing"]);
      }
      expect(await written()).toEqual(before);
    } finally {
      await bare.stop();
    }
  });
});
