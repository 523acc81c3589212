// One payment state machine: create_payment records attempts, attach_gateway_payment records the
// provider's id once, and apply_payment_status moves a payment only along
// reserve.payment_status_transitions (walked pair by pair here), orders late events by provider time,
// finalizes a success in the same transaction, posts one ledger transaction per refund increase, and
// audits every change. The BEFORE UPDATE trigger refuses illegal moves for every writer, the runbook too.
import type postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, rolledBack, sqlState, type TestDatabase } from "../helpers/db.ts";
import * as f from "../helpers/fixtures.ts";
import { applyStatus, attachGateway } from "../helpers/money.ts";

type Q = postgres.Sql | postgres.TransactionSql;
type Row = Record<string, unknown>;

const STATUSES = [
  "pending", "processing", "succeeded", "failed", "cancelled", "expired",
  "refunded", "partially_refunded", "disputed",
] as const;
type Status = (typeof STATUSES)[number];

const AMOUNT = 100000; // two nights at the fixture's base_price

let db: TestDatabase;
let legal: Set<string>;
const move = (from: string, to: string) => `${from}->${to}`;

beforeAll(async () => {
  db = await createTestDatabase();
  const rows = await db.sql`select from_status, to_status from reserve.payment_status_transitions`;
  legal = new Set(rows.map((r) => move(r.from_status as string, r.to_status as string)));
});
afterAll(async () => await db?.drop());

/** A real checkout: a fresh one-night-at-a-time unit and an intent holding nights +1..+3. */
async function checkout(q: Q, method: "card" | "pix" = "card"): Promise<Row> {
  const { unitId } = await f.unit(q, { nights: 10 });
  const [bi] = await q`
    select * from reserve.create_booking_intent(${unitId}, ${f.isoDate(1)}, ${f.isoDate(3)}, 2, ${method})`;
  return bi;
}

async function createPayment(q: Q, intentId: string, opts: {
  provider?: string; method?: string; amount?: number; gatewayId?: string | null; expiresAt?: Date | null;
} = {}): Promise<Row> {
  const [p] = await q`
    select * from reserve.create_payment(
      p_booking_intent_id => ${intentId}, p_provider => ${opts.provider ?? "stripe"},
      p_method => ${opts.method ?? "card"}, p_amount => ${opts.amount ?? AMOUNT},
      p_gateway_payment_id => ${opts.gatewayId ?? null}, p_expires_at => ${opts.expiresAt ?? null})`;
  return p;
}

interface Event {
  status: string;
  at?: Date | null;
  refunded?: number | null;
  errorCode?: string | null;
  errorMessage?: string | null;
  onIllegal?: "raise" | "ignore";
}

async function apply(q: Q, paymentId: string, e: Event): Promise<Row> {
  return applyStatus(q, paymentId, e.status, {
    event_at: e.at ?? null, error_code: e.errorCode ?? null, error_message: e.errorMessage ?? null,
    refunded_amount: e.refunded ?? null, on_illegal: e.onIllegal ?? "raise",
  });
}

async function paymentRow(q: Q, id: string): Promise<Row> {
  const [p] = await q`select * from reserve.payments where id = ${id}`;
  return p;
}

/** Columns a payment in `status` needs to satisfy the payments CHECK constraints when inserted directly. */
function columnsFor(status: Status): Row {
  const at = new Date(Date.now() - 60_000);
  switch (status) {
    case "succeeded":
    case "disputed":
      return { succeeded_at: at };
    case "partially_refunded":
      return { succeeded_at: at, refunded_amount: AMOUNT / 2, refunded_at: at };
    case "refunded":
      return { succeeded_at: at, refunded_amount: AMOUNT, refunded_at: at };
    case "failed":
      return { failed_at: at, error_code: "card_declined" };
    default:
      return {};
  }
}

/** A payment already in `status`, inserted directly (INSERT is not a transition), on its own intent. */
async function paymentIn(q: Q, status: Status): Promise<Row> {
  const { unitId } = await f.unit(q, { nights: 10 });
  const bi = await f.intent(q, unitId, { amount: AMOUNT });
  return f.payment(q, bi.id as string, { status, amount: AMOUNT, ...columnsFor(status) });
}

/** The event that asks for `to` (a partial refund needs an amount). */
function eventTo(to: Status, onIllegal: "raise" | "ignore" = "raise"): Event {
  return { status: to, refunded: to === "partially_refunded" ? 70000 : null, onIllegal };
}

async function statusChanges(q: Q, paymentId: string): Promise<Array<[string, string]>> {
  const rows = await q`
    select old_values ->> 'status' as old, new_values ->> 'status' as new
    from reserve.audit_trail
    where table_name = 'payments' and action = 'UPDATE' and row_id = ${paymentId}
      and old_values ->> 'status' is distinct from new_values ->> 'status'
    order by audit_id, change_no`;
  return rows.map((r) => [r.old as string, r.new as string]);
}

async function ledgerOf(q: Q, paymentId: string): Promise<Row[]> {
  return q`select * from reserve.ledger_transactions where payment_id = ${paymentId} order by posted_at, idempotency_key`;
}

describe("create_payment", () => {
  it("numbers attempts 1, 2, ... with idempotency_key intent:<id>:attempt:<n>", async () => {
    const bi = await checkout(db.sql);
    const first = await createPayment(db.sql, bi.id as string);
    expect(first).toMatchObject({ attempt: 1, idempotency_key: `intent:${bi.id}:attempt:1`, status: "pending" });
    await apply(db.sql, first.id as string, { status: "failed", errorCode: "card_declined" });
    const second = await createPayment(db.sql, bi.id as string);
    expect(second).toMatchObject({ attempt: 2, idempotency_key: `intent:${bi.id}:attempt:2`, status: "pending" });
    await apply(db.sql, second.id as string, { status: "cancelled" });
    const third = await createPayment(db.sql, bi.id as string, { provider: "openpix", method: "pix" });
    expect(third).toMatchObject({ attempt: 3, idempotency_key: `intent:${bi.id}:attempt:3` });
  });

  it("returns the same row to a retry with the same provider and method while one is pending", async () => {
    const bi = await checkout(db.sql);
    const first = await createPayment(db.sql, bi.id as string, { gatewayId: "pi_retry_1" });
    const retry = await createPayment(db.sql, bi.id as string);
    const retryWithId = await createPayment(db.sql, bi.id as string, { gatewayId: "pi_retry_1" });
    expect(retry.id).toBe(first.id);
    expect(retryWithId.id).toBe(first.id);
    const [{ n }] = await db.sql`select count(*)::int as n from reserve.payments where booking_intent_id = ${bi.id as string}`;
    expect(n).toBe(1);
  });

  it("refuses another provider, method or gateway id while one is in flight (RC204)", async () => {
    const bi = await checkout(db.sql, "pix");
    const first = await createPayment(db.sql, bi.id as string, { provider: "stripe", method: "pix", gatewayId: "pi_a" });
    expect(await sqlState(createPayment(db.sql, bi.id as string, { provider: "mercadopago", method: "pix" }))).toBe("RC204");
    expect(await sqlState(createPayment(db.sql, bi.id as string, { provider: "stripe", method: "card" }))).toBe("RC204");
    expect(await sqlState(createPayment(db.sql, bi.id as string, { provider: "stripe", method: "pix", gatewayId: "pi_b" }))).toBe("RC204");
    await apply(db.sql, first.id as string, { status: "processing" });
    expect(await sqlState(createPayment(db.sql, bi.id as string, { provider: "openpix", method: "pix" }))).toBe("RC204");
  });

  it("refuses an amount that differs from the intent's (RC203)", async () => {
    const bi = await checkout(db.sql);
    expect(await sqlState(createPayment(db.sql, bi.id as string, { amount: AMOUNT - 1 }))).toBe("RC203");
    expect(await sqlState(createPayment(db.sql, bi.id as string, { amount: AMOUNT + 1 }))).toBe("RC203");
  });

  it("refuses card with MercadoPago or OpenPIX (RC206)", async () => {
    const bi = await checkout(db.sql);
    expect(await sqlState(createPayment(db.sql, bi.id as string, { provider: "mercadopago", method: "card" }))).toBe("RC206");
    expect(await sqlState(createPayment(db.sql, bi.id as string, { provider: "openpix", method: "card" }))).toBe("RC206");
    const [{ n }] = await db.sql`select count(*)::int as n from reserve.payments where booking_intent_id = ${bi.id as string}`;
    expect(n).toBe(0);
  });

  it("refuses an unknown intent (RC107)", async () => {
    expect(await sqlState(createPayment(db.sql, crypto.randomUUID()))).toBe("RC107");
  });

  it("refuses an intent past its hold, expired or cancelled (RC108)", async () => {
    const lapsed = await checkout(db.sql);
    await db.sql`update reserve.booking_intents set expires_at = now() - interval '1 minute' where id = ${lapsed.id as string}`;
    expect(await sqlState(createPayment(db.sql, lapsed.id as string))).toBe("RC108");

    const { unitId } = await f.unit(db.sql, { nights: 10 });
    const expired = await f.intent(db.sql, unitId, { status: "expired", amount: AMOUNT });
    expect(await sqlState(createPayment(db.sql, expired.id as string))).toBe("RC108");

    const cancelled = await checkout(db.sql);
    await db.sql`select reserve.release_booking_intent(${cancelled.id as string}, 'guest left')`;
    expect(await sqlState(createPayment(db.sql, cancelled.id as string))).toBe("RC108");
  });

  it("gives a PIX payment the intent's expiry unless told otherwise", async () => {
    const bi = await checkout(db.sql, "pix");
    const pix = await createPayment(db.sql, bi.id as string, { provider: "mercadopago", method: "pix" });
    expect((pix.expires_at as Date).getTime()).toBe((bi.expires_at as Date).getTime());

    const other = await checkout(db.sql, "pix");
    const soon = new Date(Date.now() + 10 * 60_000);
    const explicit = await createPayment(db.sql, other.id as string, { provider: "openpix", method: "pix", expiresAt: soon });
    expect((explicit.expires_at as Date).getTime()).toBe(soon.getTime());

    const card = await checkout(db.sql);
    expect((await createPayment(db.sql, card.id as string)).expires_at).toBeNull();
  });
});

describe("attach_gateway_payment", () => {
  const attach = (q: Q, id: string, gw: string) => attachGateway(q, id, gw, { gateway_status: "requires_payment_method" });

  it("sets the provider's id once, is idempotent with the same id and refuses another (RC405)", async () => {
    const bi = await checkout(db.sql);
    const p = await createPayment(db.sql, bi.id as string);
    expect(p.gateway_payment_id).toBeNull();
    const attached = await attach(db.sql, p.id as string, "pi_attach_1");
    expect(attached).toMatchObject({ id: p.id, gateway_payment_id: "pi_attach_1", gateway_status: "requires_payment_method" });
    expect((await attach(db.sql, p.id as string, "pi_attach_1")).gateway_payment_id).toBe("pi_attach_1");
    expect(await sqlState(attach(db.sql, p.id as string, "pi_attach_2"))).toBe("RC405");
    expect((await paymentRow(db.sql, p.id as string)).gateway_payment_id).toBe("pi_attach_1");
  });
});

describe("payment_status_transitions", () => {
  it("holds the documented moves and never lets a terminal state go backwards", () => {
    for (const m of ["pending->processing", "processing->succeeded", "processing->failed", "processing->expired",
      "succeeded->refunded", "succeeded->partially_refunded", "failed->succeeded", "expired->succeeded"]) {
      expect(legal.has(m), m).toBe(true);
    }
    for (const to of STATUSES) expect(legal.has(move("refunded", to)), `refunded->${to}`).toBe(false);
    for (const to of ["pending", "processing", "failed", "cancelled", "expired"]) {
      for (const from of ["succeeded", "partially_refunded", "disputed"]) {
        expect(legal.has(move(from, to)), `${from}->${to}`).toBe(false);
      }
    }
    for (const m of legal) expect(m.split("->").every((s) => (STATUSES as readonly string[]).includes(s)), m).toBe(true);
  });
});

const offDiagonal = STATUSES.flatMap((from) => STATUSES.filter((to) => to !== from).map((to) => [from, to] as const));

describe("apply_payment_status walks every pair of the 9 statuses", () => {
  it.each(offDiagonal)("%s -> %s", async (from, to) => {
    await rolledBack(db.sql, async (tx) => {
      const p = await paymentIn(tx, from);
      const id = p.id as string;
      if (legal.has(move(from, to))) {
        const r = await apply(tx, id, eventTo(to));
        expect(r).toMatchObject({ payment_id: id, previous_status: from, status: to, outcome: "applied" });
        expect((await paymentRow(tx, id)).status).toBe(to);
        expect(await statusChanges(tx, id)).toEqual([[from, to]]);
        if (to === "succeeded") expect(r.finalize_outcome).not.toBeNull();
      } else {
        // apply_payment_status finalizes any succeeded payment it sees (recovering a hand-marked one),
        // so start from a finalized one: the ignored move must then add nothing
        if (from === "succeeded") await tx`select * from reserve.finalize_reservation(${id})`;
        const before = await paymentRow(tx, id);
        const ledgerBefore = await ledgerOf(tx, id);
        expect(await sqlState(tx.savepoint((sp) => apply(sp, id, eventTo(to, "raise"))))).toBe("RC202");
        const r = await apply(tx, id, eventTo(to, "ignore"));
        expect(r).toMatchObject({ payment_id: id, previous_status: from, status: from, outcome: "ignored" });
        expect(await paymentRow(tx, id)).toEqual(before);
        expect(await ledgerOf(tx, id)).toEqual(ledgerBefore);
        expect(await statusChanges(tx, id)).toEqual([]);
        // the trigger refuses the same move from a direct UPDATE
        expect(await sqlState(tx.savepoint((sp) => sp`update reserve.payments set status = ${to} where id = ${id}`))).toBe("RC202");
      }
    });
  });
});

describe("duplicates and late events", () => {
  it("answers a repeated status with outcome unchanged", async () => {
    const bi = await checkout(db.sql);
    const p = await createPayment(db.sql, bi.id as string);
    const id = p.id as string;
    expect((await apply(db.sql, id, { status: "processing" })).outcome).toBe("applied");
    expect((await apply(db.sql, id, { status: "processing" })).outcome).toBe("unchanged");
    const paid = await apply(db.sql, id, { status: "succeeded" });
    const again = await apply(db.sql, id, { status: "succeeded" });
    expect(again).toMatchObject({ outcome: "unchanged", status: "succeeded", reservation_id: paid.reservation_id,
      confirmation_code: paid.confirmation_code, finalize_outcome: "already_finalized" });
    expect(await statusChanges(db.sql, id)).toEqual([["pending", "processing"], ["processing", "succeeded"]]);
  });

  it("marks an event older than last_event_at stale and changes nothing (dispute at t=5 after dispute won at t=9)", async () => {
    const bi = await checkout(db.sql);
    const id = (await createPayment(db.sql, bi.id as string)).id as string;
    const t = (s: number) => new Date(Date.UTC(2026, 0, 10, 12, 0, s));
    expect((await apply(db.sql, id, { status: "succeeded", at: t(1) })).outcome).toBe("applied");
    expect((await apply(db.sql, id, { status: "succeeded", at: t(9) })).outcome).toBe("unchanged");
    const before = await paymentRow(db.sql, id);
    expect((before.last_event_at as Date).getTime()).toBe(t(9).getTime());
    const late = await apply(db.sql, id, { status: "disputed", at: t(5) });
    expect(late).toMatchObject({ outcome: "stale", status: "succeeded", previous_status: "succeeded" });
    expect(await paymentRow(db.sql, id)).toEqual(before);
  });

  it("keeps a succeeded payment succeeded when failed is delivered after it", async () => {
    const bi = await checkout(db.sql);
    const id = (await createPayment(db.sql, bi.id as string)).id as string;
    const t = (s: number) => new Date(Date.UTC(2026, 0, 10, 12, 0, s));
    await apply(db.sql, id, { status: "succeeded", at: t(10) });
    expect((await apply(db.sql, id, { status: "failed", at: t(5), errorCode: "card_declined" })).outcome).toBe("stale");
    expect(await sqlState(apply(db.sql, id, { status: "failed", at: t(20) }))).toBe("RC202");
    expect((await apply(db.sql, id, { status: "failed", at: t(20), onIllegal: "ignore" })).outcome).toBe("ignored");
    const p = await paymentRow(db.sql, id);
    expect(p).toMatchObject({ status: "succeeded", error_code: null, failed_at: null });
  });

  it("does not let an ignored event move the clock: the success it overtook still applies", async () => {
    // delivery out of order: the dispute (t=20) arrives while the payment is still pending and is
    // ignored; the success (t=10) that came first at the provider must not then be called stale
    const bi = await checkout(db.sql);
    const id = (await createPayment(db.sql, bi.id as string)).id as string;
    const t = (s: number) => new Date(Date.UTC(2026, 0, 10, 12, 0, s));
    const before = await paymentRow(db.sql, id);
    expect((await apply(db.sql, id, { status: "disputed", at: t(20), onIllegal: "ignore" })).outcome).toBe("ignored");
    expect(await paymentRow(db.sql, id)).toEqual(before);
    const paid = await apply(db.sql, id, { status: "succeeded", at: t(10) });
    expect(paid).toMatchObject({ outcome: "applied", status: "succeeded", finalize_outcome: "created" });
    expect((await apply(db.sql, id, { status: "disputed", at: t(20) })).outcome).toBe("applied");
  });
});

describe("failures and successes", () => {
  it("keeps error_code and error_message and sets failed_at", async () => {
    const bi = await checkout(db.sql);
    const id = (await createPayment(db.sql, bi.id as string)).id as string;
    const at = new Date(Date.UTC(2026, 0, 10, 12, 0, 0));
    const r = await apply(db.sql, id, { status: "failed", at, errorCode: "card_declined", errorMessage: "Your card was declined." });
    expect(r).toMatchObject({ outcome: "applied", status: "failed" });
    expect(await paymentRow(db.sql, id)).toMatchObject({
      status: "failed", error_code: "card_declined", error_message: "Your card was declined.", failed_at: at });
  });

  it("finalizes a success in the same transaction", async () => {
    const bi = await checkout(db.sql);
    const id = (await createPayment(db.sql, bi.id as string)).id as string;

    // rolled back: neither the success nor its reservation survive alone
    await rolledBack(db.sql, async (tx) => {
      const r = await apply(tx, id, { status: "succeeded" });
      expect(r.finalize_outcome).toBe("created");
    });
    expect((await paymentRow(db.sql, id)).status).toBe("pending");
    expect(await db.sql`select 1 from reserve.reservations where payment_id = ${id}`).toHaveLength(0);

    const r = await apply(db.sql, id, { status: "succeeded" });
    expect(r).toMatchObject({ outcome: "applied", status: "succeeded", finalize_outcome: "created", finalize_error: null });
    expect(r.confirmation_code).toMatch(/^RES-\d{4}-[A-Z0-9]{6}$/);
    const [res] = await db.sql`select * from reserve.reservations where payment_id = ${id}`;
    expect(res).toMatchObject({ id: r.reservation_id, confirmation_code: r.confirmation_code, status: "host_commit_pending" });
    const [intent] = await db.sql`select status from reserve.booking_intents where id = ${bi.id as string}`;
    expect(intent.status).toBe("converted");
    expect((await ledgerOf(db.sql, id)).map((t) => t.idempotency_key)).toEqual([`receipt:${id}`]);
  });

  it.each(["failed", "expired", "cancelled"] as const)("accepts a late success after %s: the money arrived", async (lost) => {
    const bi = await checkout(db.sql, "pix");
    const id = (await createPayment(db.sql, bi.id as string, { provider: "openpix", method: "pix" })).id as string;
    const t = (s: number) => new Date(Date.UTC(2026, 0, 10, 12, 0, s));
    await apply(db.sql, id, { status: lost, at: t(10) });
    // paid a second before the provider gave up: older by the clock, and still money that arrived
    const r = await apply(db.sql, id, { status: "succeeded", at: t(9) });
    expect(r).toMatchObject({ previous_status: lost, status: "succeeded", outcome: "applied", finalize_outcome: "created" });
    expect(await db.sql`select 1 from reserve.reservations where payment_id = ${id}`).toHaveLength(1);
  });
});

describe("refunds", () => {
  async function paid(): Promise<string> {
    const bi = await checkout(db.sql);
    const id = (await createPayment(db.sql, bi.id as string)).id as string;
    await apply(db.sql, id, { status: "succeeded" });
    return id;
  }

  it.each([
    ["refunded in full", "refunded", { refunded_amount: AMOUNT }, "refunded", 2],
    ["partly refunded", "partially_refunded", { refunded_amount: 30000 }, "partially_refunded", 2],
    ["disputed", "disputed", { dispute_amount: AMOUNT }, "disputed", 1],
  ])("a poll that reads a pending payment paid and %s since books the money that came, then what went back", async (_what, status, money, after, postings) => {
    const bi = await checkout(db.sql);
    const id = (await createPayment(db.sql, bi.id as string)).id as string;
    const r = await applyStatus(db.sql, id, status, { amount_received: AMOUNT, currency: "BRL", ...money, on_illegal: "ignore", source: "poll" });
    expect(r).toMatchObject({ previous_status: "pending", status: after, outcome: "applied", finalize_outcome: "created" });
    expect(await paymentRow(db.sql, id)).toMatchObject({ status: after, received_amount: String(AMOUNT) });
    expect(await statusChanges(db.sql, id)).toEqual([["pending", "succeeded"], ["succeeded", after]]);
    const [{ n }] = await db.sql`select count(*)::int as n from reserve.ledger_transactions where payment_id = ${id}`;
    expect(n).toBe(postings);
    expect(await db.sql`select * from reserve.find_ledger_imbalances(current_date - 1)`).toEqual([]);
  });

  it("needs a refunded amount above 0 for a partial refund (RC001); all of it is a full refund; more is refused", async () => {
    const id = await paid();
    for (const amount of [null, 0, -1]) {
      expect(await sqlState(apply(db.sql, id, { status: "partially_refunded", refunded: amount })), String(amount)).toBe("RC001");
    }
    await rolledBack(db.sql, async (tx) => {
      expect(await apply(tx, id, { status: "partially_refunded", refunded: AMOUNT })).toMatchObject({ outcome: "applied", status: "refunded" });
    });
    const over = await apply(db.sql, id, { status: "partially_refunded", refunded: AMOUNT + 1 });
    expect(over).toMatchObject({ outcome: "refused", status: "succeeded" });
    const [d] = await db.sql`select kind, provider_amount, expected_amount from reserve.money_discrepancies where payment_id = ${id}`;
    expect(d).toMatchObject({ kind: "refund_exceeds_received", provider_amount: String(AMOUNT + 1), expected_amount: String(AMOUNT) });
    expect(await paymentRow(db.sql, id)).toMatchObject({ status: "succeeded", refunded_amount: "0" });
  });

  it("never decreases the refunded amount and posts one ledger transaction per increase", async () => {
    const id = await paid();
    expect((await apply(db.sql, id, { status: "partially_refunded", refunded: 30000 })).outcome).toBe("applied");
    expect((await apply(db.sql, id, { status: "partially_refunded", refunded: 20000 })).outcome).toBe("unchanged");
    expect((await paymentRow(db.sql, id)).refunded_amount).toBe("30000");
    expect((await apply(db.sql, id, { status: "partially_refunded", refunded: 30000 })).outcome).toBe("unchanged");
    expect((await apply(db.sql, id, { status: "partially_refunded", refunded: 55000 })).outcome).toBe("applied");
    expect((await paymentRow(db.sql, id)).refunded_amount).toBe("55000");
    expect((await apply(db.sql, id, { status: "refunded" })).outcome).toBe("applied");
    expect((await apply(db.sql, id, { status: "refunded" })).outcome).toBe("unchanged");
    expect(await sqlState(apply(db.sql, id, { status: "partially_refunded", refunded: 10000 }))).toBe("RC202");
    expect(await paymentRow(db.sql, id)).toMatchObject({ status: "refunded", refunded_amount: String(AMOUNT) });

    const refunds = (await ledgerOf(db.sql, id)).filter((t) => t.kind === "refund").map((t) => t.idempotency_key).sort();
    expect(refunds).toEqual([`refund:${id}:100000`, `refund:${id}:30000`, `refund:${id}:55000`]);
    const [bal] = await db.sql`
      select coalesce(sum(e.amount) filter (where e.direction = 'debit'), 0)::bigint as debits,
             coalesce(sum(e.amount) filter (where e.direction = 'credit'), 0)::bigint as credits,
             coalesce(sum(case e.direction when 'debit' then e.amount else -e.amount end)
                      filter (where e.account = 'receivable_stripe'), 0)::bigint as receivable
      from reserve.ledger_transactions t join reserve.ledger_entries e on e.transaction_id = t.id
      where t.payment_id = ${id}`;
    expect(bal.debits).toBe(bal.credits);
    expect(bal.receivable).toBe("0");
    expect(await db.sql`select * from reserve.find_ledger_imbalances(current_date - 1)`).toEqual([]);
  });

  it("keeps an earlier partial refund when a dispute is won", async () => {
    // disputed -> succeeded is legal, but a payment refunded in part before the dispute cannot be
    // plain succeeded again (payments_refund_status_check): it goes back to where it was
    const id = await paid();
    await apply(db.sql, id, { status: "partially_refunded", refunded: 30000 });
    await apply(db.sql, id, { status: "disputed" });
    const won = await apply(db.sql, id, { status: "succeeded" });
    expect(won.outcome).toBe("applied");
    expect(["succeeded", "partially_refunded"]).toContain(won.status);
    expect(await paymentRow(db.sql, id)).toMatchObject({ status: won.status, refunded_amount: "30000" });
    expect(await db.sql`select * from reserve.find_ledger_imbalances(current_date - 1)`).toEqual([]);
  });

  it("leaves nothing on the host's or our account once a payment is refunded in full, however it was split", async () => {
    // 10 centavos at 15% is 1.5 of commission: rounding each increase alone must not leave a centavo behind
    const id = await paid();
    await apply(db.sql, id, { status: "partially_refunded", refunded: 10 });
    await apply(db.sql, id, { status: "refunded" });
    const rows = await db.sql`
      select e.account, sum(case e.direction when 'debit' then e.amount else -e.amount end)::bigint as balance
      from reserve.ledger_transactions t join reserve.ledger_entries e on e.transaction_id = t.id
      where t.payment_id = ${id}
      group by e.account order by e.account`;
    expect(rows.filter((r) => r.balance !== "0")).toEqual([]);
  });
});

describe("every writer goes through the table", () => {
  const runbookFailed = (id: string) => db.sql.unsafe(`
    UPDATE reserve.payments
    SET status = 'failed',
        metadata = metadata || '{"manual_recovery": "webhook_down"}'::jsonb
    WHERE id = '${id}';`);

  it("refuses the runbook's manual UPDATE to failed on a succeeded payment (RC202)", async () => {
    const bi = await checkout(db.sql);
    const id = (await createPayment(db.sql, bi.id as string)).id as string;
    await apply(db.sql, id, { status: "succeeded" });
    expect(await sqlState(runbookFailed(id))).toBe("RC202");
    expect(await paymentRow(db.sql, id)).toMatchObject({ status: "succeeded", metadata: {} });
  });

  it("lets the runbook's manual UPDATE fail a processing payment, stamping failed_at", async () => {
    const bi = await checkout(db.sql);
    const id = (await createPayment(db.sql, bi.id as string)).id as string;
    await apply(db.sql, id, { status: "processing" });
    await runbookFailed(id);
    const p = await paymentRow(db.sql, id);
    expect(p).toMatchObject({ status: "failed", metadata: { manual_recovery: "webhook_down" } });
    expect(p.failed_at).toBeInstanceOf(Date);
    expect((await statusChanges(db.sql, id)).at(-1)).toEqual(["processing", "failed"]);
  });
});

describe("audit", () => {
  it("leaves one payments UPDATE row with old and new status for every applied change", async () => {
    const bi = await checkout(db.sql);
    const id = (await createPayment(db.sql, bi.id as string)).id as string;
    for (const e of [{ status: "processing" }, { status: "succeeded" }, { status: "partially_refunded", refunded: 40000 },
      { status: "disputed" }, { status: "refunded" }]) {
      expect((await apply(db.sql, id, e)).outcome).toBe("applied");
    }
    expect(await statusChanges(db.sql, id)).toEqual([
      ["pending", "processing"], ["processing", "succeeded"], ["succeeded", "partially_refunded"],
      ["partially_refunded", "disputed"], ["disputed", "refunded"]]);
    const [last] = await db.sql`
      select reason, old_values ->> 'refunded_amount' as old_refunded, new_values ->> 'refunded_amount' as new_refunded
      from reserve.audit_trail
      where table_name = 'payments' and action = 'UPDATE' and row_id = ${id} and new_values ->> 'status' = 'refunded'`;
    expect(last).toMatchObject({ old_refunded: "40000", new_refunded: String(AMOUNT) });
    expect(last.reason).toContain("disputed -> refunded");
  });
});

describe("gateway ids", () => {
  it("one provider id belongs to one payment: RC405 for another, RC001 when empty", async () => {
    const { unitId } = await f.unit(db.sql, { nights: 6 });
    const make = async (from: number) => {
      const [bi] = await db.sql`select * from reserve.create_booking_intent(${unitId}, ${f.isoDate(from)}, ${f.isoDate(from + 1)}, 1)`;
      return bi;
    };
    const a = await make(1);
    const [pa] = await db.sql`select * from reserve.create_payment(${a.id}, 'stripe', 'card', ${a.amount}, 'pi_shared')`;
    const b = await make(2);
    expect(await sqlState(db.sql`select reserve.create_payment(${b.id}, 'stripe', 'card', ${b.amount}, 'pi_shared')`)).toBe("RC405");
    expect(await sqlState(db.sql`select reserve.create_payment(${b.id}, 'stripe', 'card', ${b.amount}, '')`)).toBe("RC001");
    const [pb] = await db.sql`select * from reserve.create_payment(${b.id}, 'stripe', 'card', ${b.amount})`;
    expect(await sqlState(attachGateway(db.sql, pb.id as string, "pi_shared"))).toBe("RC405");
    expect((await attachGateway(db.sql, pa.id as string, "pi_shared")).gateway_payment_id).toBe("pi_shared");
  });
});
