// The database fault loop, as it happens: the functions' backends are terminated over and over
// (pg_terminate_backend on application_name 'reserve-edge': what a failover or a pooler restart does to
// the edge) while guests pay through the provider sandbox, whose signed Stripe, MercadoPago and OpenPIX
// webhooks reach the real gateway, and the poller runs as cron would. Afterwards, what answered 5xx is
// redelivered as a provider would, the poller runs once more, and the database is checked for partial
// rows. Shared by tests/faults/db_kill.test.ts and `npm run bench:faults`; no vitest in here.
import type { ChildProcess } from "node:child_process";
import http from "node:http";
import type { AddressInfo } from "node:net";
import type postgres from "postgres";
import type { ProviderSandbox } from "../../local/sandbox/index.ts";
import { isoDate, unit } from "../helpers/fixtures.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface Answer {
  what: string;
  status: number | "no answer";
  ms: number;
  json: boolean;
  error?: string;
}

/** A pass-through in front of the gateway that records every webhook delivery's answer. */
export interface WebhookRecorder {
  /** the recorder's own /functions/v1 base: give it to the sandbox and as RESERVE_FUNCTIONS_URL */
  base: string;
  /** where the deliveries go: the gateway's /functions/v1 */
  target: string;
  answers: Answer[];
  close(): Promise<void>;
}

export async function startWebhookRecorder(): Promise<WebhookRecorder> {
  const answers: Answer[] = [];
  const rec: WebhookRecorder = { base: "", target: "", answers, close: async () => {} };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", async () => {
      const started = performance.now();
      const headers = Object.fromEntries(Object.entries(req.headers)
        .filter(([k, v]) => typeof v === "string" && !["host", "content-length", "connection"].includes(k))) as Record<string, string>;
      const path = (req.url ?? "/").replace(/^\/functions\/v1/, "");
      const what = `${req.method} ${path.split("?")[0]}`;
      try {
        const answer = await fetch(`${rec.target}${path}`, {
          method: req.method, headers, body: chunks.length ? Buffer.concat(chunks) : undefined,
          signal: AbortSignal.timeout(30_000),
        });
        const text = await answer.text();
        let body: { error?: string } | undefined;
        try { body = JSON.parse(text); } catch { /* recorded as not JSON */ }
        answers.push({ what, status: answer.status, ms: performance.now() - started, json: !!body && typeof body === "object", error: body?.error });
        res.writeHead(answer.status, { "content-type": answer.headers.get("content-type") ?? "text/plain" });
        res.end(text);
      } catch (err) {
        answers.push({ what, status: "no answer", ms: performance.now() - started, json: false, error: (err as Error).message });
        res.writeHead(502).end();
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  rec.base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/functions/v1`;
  rec.close = () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); });
  return rec;
}

export interface FaultTarget {
  /** the gateway's /functions/v1 */
  functionsBase: string;
  gateway: ChildProcess;
  sandbox: ProviderSandbox;
  /** the functions' database, as a superuser (to terminate backends and to check the rows) */
  sql: postgres.Sql;
  cronSecret: string;
  recorder: WebhookRecorder;
  userToken(): string;
}

export interface FaultOptions {
  /** how long backends are terminated */
  durationMs: number;
  /** pause between two rounds of pg_terminate_backend */
  killEveryMs: number;
  cards: number;
  pix: number;
  /** the poller's budget_ms for its runs during the loop */
  pollBudgetMs: number;
}

export interface PollRun { status: number | "no answer"; ms: number; json: boolean; ok?: boolean }

export interface FaultReport {
  kills: number;
  killRounds: number;
  gatewayExit?: string;
  /** every answer the functions gave: webhooks (through the recorder), checkouts, health, the poller */
  answers: Answer[];
  polls: PollRun[];
  payments: number;
  events: number;
  /** events whose delivery during the loop did not end in a 2xx, and so were redelivered */
  redelivered: number;
  redeliveryRounds: number;
  /** events still not answered 2xx after the redeliveries */
  undelivered: string[];
  /** what is wrong in the database afterwards (empty when nothing is) */
  problems: string[];
  crashLines: string[];
}

interface Pay { provider: "stripe" | "mercadopago" | "openpix"; paymentId: string; intentId: string; gatewayId: string }

async function timed(what: string, run: () => Promise<Response>): Promise<Answer & { body?: any }> {
  const started = performance.now();
  try {
    const res = await run();
    const text = await res.text();
    let body: any;
    try { body = JSON.parse(text); } catch { /* not JSON */ }
    return { what, status: res.status, ms: performance.now() - started, json: !!body && typeof body === "object", error: body?.error, body };
  } catch (err) {
    return { what, status: "no answer", ms: performance.now() - started, json: false, error: (err as Error).message };
  }
}

/** Rows that say a fault left something half done. */
export async function partialRows(sql: postgres.Sql): Promise<string[]> {
  const problems: string[] = [];
  const unbalanced = await sql`
    select transaction_id from reserve.ledger_entries group by transaction_id
    having sum(case direction when 'debit' then amount else -amount end) <> 0`;
  if (unbalanced.length) problems.push(`${unbalanced.length} unbalanced ledger transaction(s)`);
  const noReservation = await sql`
    select p.id from reserve.payments p
    where p.status in ('succeeded', 'partially_refunded', 'refunded')
      and not exists (select 1 from reserve.reservations r where r.booking_intent_id = p.booking_intent_id)`;
  if (noReservation.length) problems.push(`${noReservation.length} succeeded payment(s) without a reservation`);
  const noReceipt = await sql`
    select p.id from reserve.payments p
    where p.status in ('succeeded', 'partially_refunded', 'refunded')
      and not exists (select 1 from reserve.ledger_transactions t where t.payment_id = p.id)`;
  if (noReceipt.length) problems.push(`${noReceipt.length} succeeded payment(s) without a ledger transaction`);
  const stuck = await sql`select status, count(*)::int as n from reserve.processed_webhooks
                          where status in ('processing', 'failed', 'dead') group by status`;
  for (const s of stuck) problems.push(`${s.n} webhook(s) left ${s.status}`);
  return problems;
}

/** Runs the loop; the caller owns the stack and stops it. */
export async function runFaultLoop(t: FaultTarget, o: FaultOptions, progress: (line: string) => void = () => {}): Promise<FaultReport> {
  const report: FaultReport = {
    kills: 0, killRounds: 0, answers: [], polls: [], payments: 0, events: 0, redelivered: 0, redeliveryRounds: 0,
    undelivered: [], problems: [], crashLines: [],
  };
  let gatewayExit: string | undefined;
  t.gateway.once("exit", (code, signal) => (gatewayExit = `${code ?? signal}`));
  const post = (fn: string, body: unknown, headers: Record<string, string>) => fetch(`${t.functionsBase}/${fn}`, {
    method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body),
    signal: AbortSignal.timeout(60_000),
  });
  t.sandbox.control.setWebhookUrl("stripe", `${t.recorder.base}/webhook_stripe`);
  t.sandbox.control.setWebhookUrl("openpix", `${t.recorder.base}/webhook_pix/openpix`);

  // the guests' checkouts, before the faults: each on a unit of its own
  const providers: Pay["provider"][] = [
    ...Array(o.cards).fill("stripe"),
    ...Array.from({ length: o.pix }, (_, i) => (i % 2 ? "openpix" : "mercadopago")),
  ];
  const pays: Pay[] = [];
  for (const provider of providers) {
    const { unitId } = await unit(t.sql, { nights: 10 });
    const body = provider === "stripe"
      ? { unit_id: unitId, check_in: isoDate(2), check_out: isoDate(4), guests: 2, method: "card" }
      : { unit_id: unitId, check_in: isoDate(2), check_out: isoDate(4), guests: 2, method: "pix", provider,
          guest_email: "pagador@example.com", guest_name: "Ana" };
    const res = await post("checkout", body, { authorization: `Bearer ${t.userToken()}` });
    const out = await res.json();
    if (res.status !== 201) throw new Error(`checkout before the faults answered ${res.status}: ${JSON.stringify(out)}`);
    pays.push({ provider, paymentId: out.payment_id, intentId: out.booking_intent_id, gatewayId: out.gateway_payment_id });
  }
  report.payments = pays.length;
  await t.sandbox.control.flush();
  const eventsBefore = new Set(t.sandbox.control.events().map((e) => e.id));
  progress(`${pays.length} checkouts made; terminating the functions' backends every ${o.killEveryMs} ms for ${o.durationMs / 1000} s`);

  const end = Date.now() + o.durationMs;
  const kills = (async () => {
    while (Date.now() < end) {
      // this database's only: other test files share the cluster
      const [r] = await t.sql`select count(pg_terminate_backend(pid))::int as n from pg_stat_activity
                              where application_name = 'reserve-edge' and datname = current_database()`;
      report.kills += r.n;
      report.killRounds++;
      await sleep(o.killEveryMs);
    }
  })();
  // the guests pay, spread over the loop; their providers post the signed webhooks
  const paying = (async () => {
    const gap = (o.durationMs * 0.8) / Math.max(1, pays.length);
    for (const p of pays) {
      if (p.provider === "stripe") t.sandbox.control.stripeConfirm(p.gatewayId, "succeeded");
      else if (p.provider === "mercadopago") t.sandbox.control.mercadopagoPay(p.gatewayId);
      else t.sandbox.control.openpixPay(p.gatewayId);
      await sleep(gap);
    }
  })();
  // a guest checking out during the faults, and a monitor asking for health: each answer is recorded
  const others = (async () => {
    while (Date.now() < end) {
      const { unitId } = await unit(t.sql, { nights: 10 });
      report.answers.push(await timed("POST /checkout", () => post("checkout",
        { unit_id: unitId, check_in: isoDate(2), check_out: isoDate(4), guests: 2, method: "card" },
        { authorization: `Bearer ${t.userToken()}` })));
      report.answers.push(await timed("GET /health", () => fetch(`${t.functionsBase}/health`, { signal: AbortSignal.timeout(60_000) })));
      await sleep(100);
    }
  })();
  const poll = async () => {
    await t.sql`update reserve.payment_polls set next_poll_at = now() - interval '1 second'`;
    const a = await timed("POST /poll_payment_status", () => post("poll_payment_status", { budget_ms: o.pollBudgetMs },
      { authorization: `Bearer ${t.cronSecret}` }));
    report.answers.push(a);
    report.polls.push({ status: a.status, ms: a.ms, json: a.json, ok: a.body?.ok });
  };
  const polling = (async () => {
    while (Date.now() < end) {
      await poll();
      await sleep(250);
    }
  })();
  await Promise.all([kills, paying, others, polling]);
  progress(`${report.kills} backends terminated in ${report.killRounds} rounds; redelivering what failed`);

  // the faults stop; the providers redeliver what got no 2xx (Stripe and MercadoPago retry for days)
  await t.sandbox.control.flush();
  const deliveredOk = () => {
    const last = new Map<string, number | string>();
    for (const d of t.sandbox.control.deliveries()) last.set(d.eventId, d.status);
    return last;
  };
  const needed = new Set<string>();
  for (let round = 0; round < 5; round++) {
    const pending = [...deliveredOk()].filter(([, s]) => !(typeof s === "number" && s >= 200 && s < 300)).map(([id]) => id);
    if (!pending.length) break;
    report.redeliveryRounds++;
    for (const id of pending) {
      needed.add(id);
      await t.sandbox.control.redeliver(id);
    }
  }
  report.redelivered = needed.size;
  report.undelivered = [...deliveredOk()].filter(([, s]) => !(typeof s === "number" && s >= 200 && s < 300)).map(([id]) => id);
  report.events = t.sandbox.control.events().filter((e) => !eventsBefore.has(e.id) && e.url).length;
  // and cron runs the poller: failed events are retried, the paid PIX whose notice was lost are asked for
  await t.sql`update reserve.processed_webhooks set next_retry_at = now() - interval '1 second' where status = 'failed'`;
  await poll();
  report.answers.push(...t.recorder.answers);
  report.gatewayExit = gatewayExit;
  report.problems = await partialRows(t.sql);
  const unpaid = await t.sql`select p.id, p.provider, p.status from reserve.payments p where p.id = any(${pays.map((p) => p.paymentId)}::uuid[])
                             and (p.status <> 'succeeded'
                                  or not exists (select 1 from reserve.reservations r where r.booking_intent_id = p.booking_intent_id))`;
  for (const u of unpaid) report.problems.push(`paid ${u.provider} payment ${u.id} is ${u.status} without its reservation`);
  return report;
}

const count = (xs: string[]) => xs.reduce<Record<string, number>>((acc, x) => ((acc[x] = (acc[x] ?? 0) + 1), acc), {});

/** The figures of a report, as the bench prints them and the test shows on failure. */
export function summarize(r: FaultReport, budgetMs: number) {
  const webhooks = r.answers.filter((a) => a.what.includes("/webhook_"));
  const byStatus: Record<string, number> = {};
  for (const a of r.answers) byStatus[String(a.status)] = (byStatus[String(a.status)] ?? 0) + 1;
  return {
    kills: r.kills,
    kill_rounds: r.killRounds,
    gateway_exited: r.gatewayExit ?? null,
    answers: r.answers.length,
    answers_by_status: byStatus,
    not_json: r.answers.filter((a) => !a.json).length,
    webhook_answers: webhooks.length,
    slowest_webhook_ms: Math.round(Math.max(0, ...webhooks.map((a) => a.ms))),
    slowest_answer_ms: Math.round(Math.max(0, ...r.answers.map((a) => a.ms))),
    errors_5xx: count(r.answers.filter((a) => typeof a.status === "number" && a.status >= 500)
      .map((a) => `${a.what} ${a.status} ${a.error ?? ""}`.trim())),
    poll_runs: r.polls.length,
    poll_runs_by_status: count(r.polls.map((p) => String(p.status))),
    longest_completed_poll_ms: Math.round(Math.max(0, ...r.polls.filter((p) => p.status === 200).map((p) => p.ms))),
    poll_budget_ms: budgetMs,
    longest_poll_ms: Math.round(Math.max(0, ...r.polls.map((p) => p.ms))),
    payments: r.payments,
    webhook_events: r.events,
    events_redelivered: r.redelivered,
    redelivery_rounds: r.redeliveryRounds,
    events_undelivered: r.undelivered.length,
    problems: r.problems,
  };
}
