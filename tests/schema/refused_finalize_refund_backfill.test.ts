// Payments finalize refused before it requested their refunds itself (20261207085000) sat flagged with
// the guest's money in refunds_payable and nothing on its way back. A database migrated up to that
// migration gets such payments, and ones an operator already has in hand; then the rest of the migrations
// run: each payment still owed gets one request for what is left, under finalize's own key, and the ones
// in hand (sold after all, a failed or a closed request, refunded already) get none.
import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import * as f from "../helpers/fixtures.ts";
import { useMigratedBefore } from "../helpers/migrated_before.ts";
import { applyStatus } from "../helpers/money.ts";

const FINALIZE_REQUESTS_REFUNDS = "20261207085000";
const db = useMigratedBefore(FINALIZE_REQUESTS_REFUNDS, "refund_backfill");

/** A card payment whose intent an operator cancelled before its success arrived: refused, flagged, no request. */
async function refusedPayment(unitId: string, from: number) {
  const [bi] = await db.sql`select * from reserve.create_booking_intent(${unitId}, ${f.isoDate(from)}, ${f.isoDate(from + 1)}, 2, 'card')`;
  const [p] = await db.sql`select * from reserve.create_payment(${bi.id}, 'stripe', 'card', ${bi.amount})`;
  await db.sql`update reserve.booking_intents set status = 'cancelled' where id = ${bi.id}`;
  const r = await applyStatus(db.sql, p.id as string, "succeeded");
  expect(r.finalize_outcome).toBe("intent_cancelled");
  return { id: p.id as string, amount: Number(bi.amount) };
}

describe("refunds owed by finalizes refused before finalize requested them", () => {
  it("are requested on deploy, once, for what is left; an operator's cases are left alone", async () => {
    const { unitId } = await f.unit(db.sql, { nights: 20 });
    const owed = await refusedPayment(unitId, 1);
    const halfBack = await refusedPayment(unitId, 3);
    const failed = await refusedPayment(unitId, 5);
    const closed = await refusedPayment(unitId, 7);
    const refunded = await refusedPayment(unitId, 9);
    // the landed behaviour: refused and flagged, and nothing asked back
    const [{ n }] = await db.sql`select count(*)::int as n from reserve.refund_requests`;
    expect(n).toBe(0);

    // an operator's partial refund by hand, still on its way; another's request the provider refused; one closed; one done
    await db.sql`select reserve.request_refund(${halfBack.id}, ${halfBack.amount / 2}, 'goodwill', 'by-hand:' || ${halfBack.id})`;
    await db.sql`select reserve.request_refund(${failed.id}, ${failed.amount}, 'intent_cancelled', 'by-hand:' || ${failed.id})`;
    await db.sql`update reserve.refund_requests set status = 'failed', error_message = 'card closed' where payment_id = ${failed.id}`;
    await db.sql`select reserve.request_refund(${closed.id}, ${closed.amount}, 'intent_cancelled', 'by-hand:' || ${closed.id})`;
    await db.sql`update reserve.refund_requests set status = 'closed', closed_at = now(), closed_by = 'ops', close_reason = 'paid by bank transfer'
              where payment_id = ${closed.id}`;
    await applyStatus(db.sql, refunded.id, "refunded", { refunded_amount: refunded.amount });

    await db.applyRest();

    const requests = await db.sql`select payment_id::text, amount::int, reason, request_key, status, requested_by
                               from reserve.refund_requests where request_key like 'unsellable:%' order by amount desc`;
    expect(requests).toEqual([
      { payment_id: owed.id, amount: owed.amount, reason: "intent_cancelled", request_key: `unsellable:${owed.id}`, status: "requested", requested_by: "migration" },
      { payment_id: halfBack.id, amount: halfBack.amount / 2, reason: "intent_cancelled", request_key: `unsellable:${halfBack.id}`, status: "requested", requested_by: "migration" },
    ]);
    // the audit says who and why
    const [audit] = await db.sql`select actor, reason from reserve.audit_logs where table_name = 'refund_requests' and row_id = (
                                select id::text from reserve.refund_requests where request_key = ${`unsellable:${owed.id}`})`;
    expect(audit.actor).toBe("migration");
    expect(audit.reason).toContain(owed.id);

    // the migration's own SQL run again asks nothing twice
    const body = await readFile(new URL("../../supabase/migrations/20261207111000_refunds_owed_by_earlier_refused_finalizes_are_requested.sql", import.meta.url), "utf8");
    await db.sql.begin((tx) => tx.unsafe(body));
    const [{ again }] = await db.sql`select count(*)::int as again from reserve.refund_requests where request_key like 'unsellable:%'`;
    expect(again).toBe(2);
  });
});
