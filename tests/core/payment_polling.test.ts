// Polling: every payment in flight has a payment_polls row (written by triggers on payments) that the
// poller claims with a lease (SKIP LOCKED, so concurrent pollers split the work) and reschedules with
// backoff through record_poll_result, which also applies the provider's answer, expires an unpaid
// attempt past its deadline and gives up a checkout that never heard from its provider. Runs leave
// heartbeats; on a Supabase project pg_cron + pg_net + Vault call the poller (schedule_edge_function).
import type postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, rolledBack, sqlState, type Sql, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";
import { applyStatus, attachGateway, newsFor, providerUpdate } from "../helpers/money.ts";

type Q = postgres.Sql | postgres.TransactionSql;
type Row = Record<string, unknown>;

let db: TestDatabase;
let sql: Sql;
beforeAll(async () => {
  db = await createTestDatabase();
  sql = db.sql;
});
afterAll(async () => await db?.drop());

const checkout = f.checkoutAttempt;

async function pollRow(q: Q, paymentId: string): Promise<Row | undefined> {
  const [r] = await q`select *, extract(epoch from next_poll_at - now())::float8 as due_in
                      from reserve.payment_polls where payment_id = ${paymentId}`;
  return r;
}

/** Nothing else is due: every other payment's poll is pushed a day ahead. */
async function onlyThese(q: Q, paymentIds: string[]) {
  await q`update reserve.payment_polls set next_poll_at = now() + interval '1 day'`;
  await q`update reserve.payment_polls set next_poll_at = now() - interval '1 minute' where payment_id = any(${paymentIds}::uuid[])`;
}

async function claim(q: Q, limit = 100, lease = "2 minutes"): Promise<Row[]> {
  return q`select * from reserve.claim_payments_to_poll(${limit}, ${lease}::interval)`;
}

interface Poll {
  status?: string | null;
  gatewayStatus?: string | null;
  pollError?: string | null;
}

async function record(q: Q, paymentId: string, r: Poll = {}): Promise<Row> {
  const u = r.status ? await newsFor(q, paymentId, r.status, { gateway_status: r.gatewayStatus ?? null }) : null;
  const [out] = await q`
    select *, extract(epoch from next_poll_at - now())::float8 as due_in
    from reserve.record_poll_result(${paymentId}::uuid, ${providerUpdate(q, u)}, ${r.pollError ?? null})`;
  return out;
}

describe("payment_polls: the schedule follows the payment", () => {
  it.each([
    ["stripe", "card", 120],
    ["stripe", "pix", 60],
    ["mercadopago", "pix", 60],
    ["openpix", "pix", 60],
  ])("a new %s %s payment is first polled at now() + first_poll_after", async (provider, method, seconds) => {
    await rolledBack(sql, async (tx) => {
      const [pol] = await tx`select extract(epoch from first_poll_after)::int as s from reserve.poll_policies
                             where provider = ${provider} and method = ${method}`;
      expect(pol.s).toBe(seconds);
      const c = await checkout(tx, { provider, method });
      expect(await pollRow(tx, c.paymentId)).toMatchObject({ attempts: 0, last_polled_at: null, last_result: null, due_in: seconds });
    });
  });

  it("keeps the row while the payment is in flight and removes it when the payment leaves flight", async () => {
    await rolledBack(sql, async (tx) => {
      const c = await checkout(tx);
      await applyStatus(tx, c.paymentId as string, "processing");
      expect(await pollRow(tx, c.paymentId)).toMatchObject({ due_in: 120 });
      await applyStatus(tx, c.paymentId as string, "failed", { error_code: "card_declined" });
      expect(await pollRow(tx, c.paymentId)).toBeUndefined();

      const s = await checkout(tx);
      await applyStatus(tx, s.paymentId as string, "succeeded");
      expect(await pollRow(tx, s.paymentId)).toBeUndefined();
    });
  });
});

describe("claim_payments_to_poll", () => {
  it("leases what is due (next_poll_at moves ahead, attempts + 1) and honours p_limit", async () => {
    await rolledBack(sql, async (tx) => {
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) ids.push((await checkout(tx)).paymentId);
      await onlyThese(tx, ids);
      // the longest overdue first
      await tx`update reserve.payment_polls set next_poll_at = now() - interval '1 hour' where payment_id = ${ids[2]}`;

      const first = await claim(tx, 2, "3 minutes");
      expect(first).toHaveLength(2);
      expect(first.map((r) => r.payment_id)).toContain(ids[2]);
      for (const r of first) {
        expect(r).toMatchObject({ attempts: 1, status: "pending", provider: "stripe", method: "card" });
        expect(await pollRow(tx, r.payment_id as string)).toMatchObject({ attempts: 1, due_in: 180 });
        expect((await pollRow(tx, r.payment_id as string))!.last_polled_at).not.toBeNull();
      }
      const rest = await claim(tx, 2);
      expect(rest.map((r) => r.payment_id)).toEqual(ids.filter((id) => !first.some((r) => r.payment_id === id)));
      expect(await claim(tx)).toEqual([]); // all leased
    });
  });

  it("gives two concurrent claimers on two connections disjoint sets (SKIP LOCKED)", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) ids.push((await checkout(sql)).paymentId);
    await onlyThese(sql, ids);
    const a = await sql.reserve();
    let mine: Row[];
    let theirs: Row[];
    try {
      await a`begin`;
      mine = await claim(a, 3);
      // A still holds its rows: B skips them instead of waiting or claiming them twice
      theirs = await claim(sql, 100);
      await a`commit`;
    } finally {
      a.release();
    }
    expect(mine).toHaveLength(3);
    expect(theirs).toHaveLength(3);
    const all = [...mine, ...theirs].map((r) => r.payment_id as string);
    expect(new Set(all).size).toBe(6);
    expect(new Set(all)).toEqual(new Set(ids));
    expect(await claim(sql)).toEqual([]);
  });

  it("splits 20 due payments between two claimers racing on two connections", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) ids.push((await checkout(sql)).paymentId);
    await onlyThese(sql, ids);
    const [x, y] = await Promise.all([sql.reserve(), sql.reserve()]);
    let got: Row[][];
    try {
      got = await Promise.all([claim(x, 12), claim(y, 12)]);
    } finally {
      x.release();
      y.release();
    }
    const all = got.flat().map((r) => r.payment_id as string);
    expect(all).toHaveLength(new Set(all).size); // no payment claimed twice
    expect(new Set(all)).toEqual(new Set(ids));
    const polls = await sql`select attempts from reserve.payment_polls where payment_id = any(${ids}::uuid[])`;
    expect(polls.map((p) => p.attempts)).toEqual(Array(20).fill(1));
  });

  it("refuses bad arguments (RC001)", async () => {
    expect(await sqlState(sql`select * from reserve.claim_payments_to_poll(0)`)).toBe("RC001");
    expect(await sqlState(sql`select * from reserve.claim_payments_to_poll(10001)`)).toBe("RC001");
    expect(await sqlState(sql`select * from reserve.claim_payments_to_poll(${null}::integer)`)).toBe("RC001");
    expect(await sqlState(sql`select * from reserve.claim_payments_to_poll(10, interval '0')`)).toBe("RC001");
    expect(await sqlState(sql`select * from reserve.claim_payments_to_poll(10, ${null}::interval)`)).toBe("RC001");
  });
});

describe("record_poll_result", () => {
  it("applies the provider's status: a success is finalized and leaves the schedule", async () => {
    await rolledBack(sql, async (tx) => {
      const c = await checkout(tx);
      const r = await record(tx, c.paymentId, { status: "succeeded", gatewayStatus: "succeeded" });
      expect(r).toMatchObject({ payment_id: c.paymentId, outcome: "applied", status: "succeeded", finalize_outcome: "created", next_poll_at: null });
      expect(r.reservation_id).not.toBeNull();
      expect(r.confirmation_code).not.toBeNull();
      expect(await pollRow(tx, c.paymentId)).toBeUndefined();
      const [p] = await tx`select status, gateway_status from reserve.payments where id = ${c.paymentId}`;
      expect(p).toEqual({ status: "succeeded", gateway_status: "succeeded" });
    });
  });

  it.each([
    ["another provider id", (c: { gatewayId: string; other: string }) => ({ gateway_payment_id: `${c.gatewayId}_someone_else` })],
    ["another of our payments", (c: { gatewayId: string; other: string }) => ({ gateway_payment_id: c.gatewayId, payment_reference: c.other })],
  ])("refuses an answer about %s: nothing is sold on it, a money discrepancy is open", async (_what, about) => {
    await rolledBack(sql, async (tx) => {
      const c = await checkout(tx, { gatewayId: `pi_${crypto.randomUUID().replace(/-/g, "")}` });
      const other = await checkout(tx);
      const gatewayId = c.payment.gateway_payment_id as string;
      const u = await newsFor(tx, c.paymentId, "succeeded", about({ gatewayId, other: other.paymentId }));
      const [r] = await tx`select * from reserve.record_poll_result(${c.paymentId}::uuid, ${providerUpdate(tx, u)}, null)`;
      expect(r).toMatchObject({ payment_id: c.paymentId, outcome: "refused", reservation_id: null });
      const [p] = await tx`select status from reserve.payments where id = ${c.paymentId}`;
      expect(p.status).toBe("pending");
      const [o] = await tx`select status from reserve.payments where id = ${other.paymentId}`;
      expect(o.status).toBe("pending");
      const [d] = await tx`select kind, source from reserve.money_discrepancies where payment_id = ${c.paymentId}`;
      expect(d).toEqual({ kind: "attach_mismatch", source: "poll" });
      expect(await tx`select 1 from reserve.reservations where payment_id = ${c.paymentId}`).toEqual([]);
    });
  });

  it.each([
    ["stripe", "card", [300, 600, 1200, 2400, 3600, 3600]],
    ["mercadopago", "pix", [300, 300, 300, 300]],
    ["openpix", "pix", [300, 300, 300]],
  ])("reschedules a %s %s payment still pending with backoff %j seconds", async (provider, method, expected) => {
    await rolledBack(sql, async (tx) => {
      const c = await checkout(tx, { provider, method });
      const waits: number[] = [];
      for (let poll = 1; poll <= expected.length; poll++) {
        await onlyThese(tx, [c.paymentId]);
        const [claimed] = await claim(tx);
        expect(claimed).toMatchObject({ payment_id: c.paymentId, attempts: poll });
        const r = await record(tx, c.paymentId, { status: "pending", gatewayStatus: "requires_payment_method" });
        expect(r).toMatchObject({ outcome: "unchanged", status: "pending" });
        waits.push(r.due_in as number);
        expect(await pollRow(tx, c.paymentId)).toMatchObject({ attempts: poll, last_result: "requires_payment_method", due_in: r.due_in });
      }
      expect(waits).toEqual(expected);
    });
  });

  it("keeps a payment in flight on a poll error, with last_result 'error: ...'", async () => {
    await rolledBack(sql, async (tx) => {
      const c = await checkout(tx);
      await onlyThese(tx, [c.paymentId]);
      await claim(tx);
      const r = await record(tx, c.paymentId, { pollError: "Stripe answered 503", status: "succeeded" });
      expect(r).toMatchObject({ outcome: "unchanged", status: "pending", due_in: 300 });
      expect(await pollRow(tx, c.paymentId)).toMatchObject({ last_result: "error: Stripe answered 503", attempts: 1 });
      const [p] = await tx`select status from reserve.payments where id = ${c.paymentId}`;
      expect(p.status).toBe("pending");
    });
  });

  it.each([
    ["a success that does not say what arrived", { status: "succeeded", gateway_status: "succeeded" }],
    ["a partial refund of no amount", { status: "partially_refunded", gateway_status: "partially_refunded" }],
  ])("records %s as the poll's error, with backoff, instead of failing the poll (due again each lease, forever)", async (_what, u) => {
    await rolledBack(sql, async (tx) => {
      const c = await checkout(tx, { gatewayId: `pi_${crypto.randomUUID().replace(/-/g, "")}` });
      if (u.status === "partially_refunded") await applyStatus(tx, c.paymentId, "succeeded");
      await onlyThese(tx, [c.paymentId]);
      await claim(tx);
      const [r] = await tx`select * from reserve.record_poll_result(${c.paymentId}::uuid, ${providerUpdate(tx, u)}, null)`;
      expect(r).toMatchObject({ payment_id: c.paymentId, outcome: "unchanged", reservation_id: null });
      const poll = await pollRow(tx, c.paymentId);
      if (u.status === "succeeded") {
        expect(poll).toMatchObject({ attempts: 1, due_in: 300 });
        expect(poll!.last_result).toMatch(/^error: the provider's answer cannot be applied: payment .* a success needs the amount and currency/);
        const [p] = await tx`select status from reserve.payments where id = ${c.paymentId}`;
        expect(p.status).toBe("pending");
      } else {
        const [p] = await tx`select status, refunded_amount::int from reserve.payments where id = ${c.paymentId}`;
        expect(p).toEqual({ status: "succeeded", refunded_amount: 0 });
      }
    });
  });

  it("expires a PIX still pending past expires_at + grace and ends the hold; release_expired_holds frees the nights", async () => {
    const c = await checkout(sql, { provider: "mercadopago", method: "pix", gatewayId: null });
    // the provider's charge expired 6 minutes ago; the grace is 5
    await attachGateway(sql, c.paymentId, `mp_${crypto.randomUUID()}`, { gateway_status: "pending" });
    await sql`update reserve.payments set expires_at = now() - interval '6 minutes' where id = ${c.paymentId}`;
    const r = await record(sql, c.paymentId, { status: "pending", gatewayStatus: "pending" });
    expect(r).toMatchObject({ outcome: "expired", status: "expired", next_poll_at: null });
    expect(await pollRow(sql, c.paymentId)).toBeUndefined();

    const [bi] = await sql`select status, expires_at <= now() as lapsed from reserve.booking_intents where id = ${c.intentId}`;
    expect(bi).toEqual({ status: "pending", lapsed: true });
    const locks = await sql`select status, expires_at <= now() as lapsed from reserve.booking_locks where booking_intent_id = ${c.intentId}`;
    expect(locks).toEqual([{ status: "held", lapsed: true }, { status: "held", lapsed: true }]);

    await sql`select * from reserve.release_expired_holds()`;
    const [after] = await sql`select status from reserve.booking_intents where id = ${c.intentId}`;
    expect(after.status).toBe("expired");
    const released = await sql`select status from reserve.booking_locks where booking_intent_id = ${c.intentId}`;
    expect(released.map((l) => l.status)).toEqual(["expired", "expired"]);
    const [{ holds }] = await sql`select sum(temp_holds)::int as holds from reserve.availability_calendar where unit_id = ${c.unitId}`;
    expect(holds).toBe(0);
  });

  it("still polls a PIX inside its grace", async () => {
    await rolledBack(sql, async (tx) => {
      const c = await checkout(tx, { provider: "openpix", method: "pix", gatewayId: null });
      await attachGateway(tx, c.paymentId, `op_${crypto.randomUUID()}`);
      await tx`update reserve.payments set expires_at = now() - interval '4 minutes' where id = ${c.paymentId}`;
      const r = await record(tx, c.paymentId, { status: "pending" });
      expect(r).toMatchObject({ outcome: "unchanged", status: "pending", due_in: 300 });
    });
  });

  it("aborts a payment that never got a gateway id after 10 minutes (checkout_incomplete) and releases its holds", async () => {
    const young = await checkout(sql, { gatewayId: null });
    expect(await record(sql, young.paymentId)).toMatchObject({ outcome: "unchanged", status: "pending" });

    const c = await checkout(sql, { gatewayId: null });
    await sql`update reserve.payments set created_at = now() - interval '11 minutes' where id = ${c.paymentId}`;
    const r = await record(sql, c.paymentId);
    expect(r).toMatchObject({ outcome: "expired", status: "failed", next_poll_at: null });
    const [p] = await sql`select status, error_code from reserve.payments where id = ${c.paymentId}`;
    expect(p).toEqual({ status: "failed", error_code: "checkout_incomplete" });
    expect(await pollRow(sql, c.paymentId)).toBeUndefined();
    const [bi] = await sql`select status from reserve.booking_intents where id = ${c.intentId}`;
    expect(bi.status).toBe("cancelled");
    const [{ holds }] = await sql`select sum(temp_holds)::int as holds from reserve.availability_calendar where unit_id = ${c.unitId}`;
    expect(holds).toBe(0);
  });

  it("refuses an unknown payment (RC201)", async () => {
    expect(await sqlState(record(sql, crypto.randomUUID()))).toBe("RC201");
  });
});

describe("record_job_heartbeat and job_last_runs", () => {
  it("shows the last run of each job with its age", async () => {
    await rolledBack(sql, async (tx) => {
      const poll = `test_poll_${crypto.randomUUID().slice(0, 8)}`;
      const sweep = `test_sweep_${crypto.randomUUID().slice(0, 8)}`;
      await tx`insert into reserve.job_heartbeats (job, started_at, finished_at, ok)
               values (${poll}, now() - interval '20 minutes', now() - interval '19 minutes', true),
                      (${sweep}, now() - interval '11 minutes', now() - interval '10 minutes', false),
                      (${sweep}, now() - interval '31 minutes', now() - interval '30 minutes', true)`;
      const [h] = await tx`select * from reserve.record_job_heartbeat(${poll}, now() - interval '3 seconds', true,
                                                                      ${tx.json({ claimed: 3, applied: 1 })})`;
      expect(h).toMatchObject({ job: poll, ok: true, summary: { claimed: 3, applied: 1 } });

      const runs = await tx`select job, ok, summary, extract(epoch from age)::int as age_s
                            from reserve.job_last_runs where job in (${poll}, ${sweep}) order by job`;
      expect(runs).toEqual([
        { job: poll, ok: true, summary: { claimed: 3, applied: 1 }, age_s: 0 },
        { job: sweep, ok: false, summary: {}, age_s: 600 },
      ]);
    });
  });

  it("refuses missing arguments (RC001) and a malformed job name", async () => {
    expect(await sqlState(sql`select reserve.record_job_heartbeat(${null}, now(), true)`)).toBe("RC001");
    expect(await sqlState(sql`select reserve.record_job_heartbeat('poll', ${null}, true)`)).toBe("RC001");
    expect(await sqlState(sql`select reserve.record_job_heartbeat('poll', now(), ${null})`)).toBe("RC001");
    expect(await sqlState(sql`select reserve.record_job_heartbeat('Poll-Job', now(), true)`)).toBe("23514");
  });
});

// pg_cron, pg_net and Vault are Supabase extensions the embedded PostgreSQL of the tests does not have.
// The schemas below are FAKES standing in for them, with the signatures schedule_edge_function uses,
// recording their arguments; they are created inside a rolled-back transaction.
const FAKE_SUPABASE = `
  create schema cron;
  create table cron.calls (id bigint generated always as identity, jobname text, schedule text, command text);
  create function cron.schedule(job_name text, schedule text, command text) returns bigint
    language sql as $f$ insert into cron.calls (jobname, schedule, command) values (job_name, schedule, command) returning id $f$;
  create schema net;
  create table net.calls (id bigint generated always as identity, url text, body jsonb, params jsonb, headers jsonb,
                          timeout_milliseconds int);
  create function net.http_post(url text, body jsonb default '{}', params jsonb default '{}',
                                headers jsonb default '{}', timeout_milliseconds int default 5000) returns bigint
    language sql as $f$ insert into net.calls (url, body, params, headers, timeout_milliseconds)
                        values (url, body, params, headers, timeout_milliseconds) returning id $f$;
  create schema vault;
  create view vault.decrypted_secrets (name, decrypted_secret) as values
    ('reserve_functions_url', 'https://ref.supabase.co/functions/v1'),
    ('reserve_cron_secret', 'cron-secret-123');`;

describe("schedule_edge_function", () => {
  it("raises RC001 where pg_cron, pg_net or Vault is missing (the embedded PostgreSQL), so nothing was scheduled", async () => {
    const [{ cron, net, vault }] = await sql`select to_regnamespace('cron') as cron, to_regnamespace('net') as net,
                                                    to_regnamespace('vault') as vault`;
    expect([cron, net, vault]).toEqual([null, null, null]);
    expect(await sqlState(sql`select reserve.schedule_edge_function('reserve_poll_payment_status', '*/5 * * * *', 'poll_payment_status')`)).toBe("RC001");
    expect(await sqlState(sql`select reserve.schedule_edge_function(${null}, '*/5 * * * *', 'poll_payment_status')`)).toBe("RC001");
    expect(await sqlState(sql`select reserve.schedule_edge_function('job', '*/5 * * * *', 'Bad-Name')`)).toBe("RC001");
  });

  it("schedules with (fake) pg_cron; the recorded command posts to <url>/poll_payment_status with the cron secret", async () => {
    await rolledBack(sql, async (tx) => {
      await tx.unsafe(FAKE_SUPABASE);
      const [{ id }] = await tx`select reserve.schedule_edge_function('reserve_poll_payment_status', '*/5 * * * *',
                                                                       'poll_payment_status') as id`;
      const calls = await tx`select * from cron.calls`;
      expect(calls).toHaveLength(1);
      expect(calls[0]).toMatchObject({ id, jobname: "reserve_poll_payment_status", schedule: "*/5 * * * *" });

      // what pg_cron would run every 5 minutes
      const [ran] = await tx.unsafe(calls[0].command as string);
      const posts = await tx`select * from net.calls`;
      expect(posts).toHaveLength(1);
      expect(ran.request_id).toBe(posts[0].id);
      expect(posts[0]).toMatchObject({
        url: "https://ref.supabase.co/functions/v1/poll_payment_status",
        headers: { "Content-Type": "application/json", Authorization: "Bearer cron-secret-123" },
        timeout_milliseconds: 60000,
      });
      expect(posts[0].body).toEqual({ scheduled_at: expect.any(String) });

      // the secrets are read at run time: a rotated secret needs no new schedule
      await tx.unsafe(`create or replace view vault.decrypted_secrets (name, decrypted_secret) as values
                         ('reserve_functions_url', 'https://ref.supabase.co/functions/v1'),
                         ('reserve_cron_secret', 'rotated-456')`);
      await tx.unsafe(calls[0].command as string);
      const [latest] = await tx`select headers from net.calls order by id desc limit 1`;
      expect(latest.headers).toMatchObject({ Authorization: "Bearer rotated-456" });
    });
  });

  it("refuses a missing function name (RC001) even when the extensions exist", async () => {
    await rolledBack(sql, async (tx) => {
      await tx.unsafe(FAKE_SUPABASE);
      expect(await sqlState(tx.savepoint((sp) => sp`select reserve.schedule_edge_function('job', '* * * * *', 'Bad-Name')`))).toBe("RC001");
      expect(await sqlState(tx.savepoint((sp) => sp`select reserve.schedule_edge_function('job', '* * * * *', ${null})`))).toBe("RC001");
    });
  });
});
