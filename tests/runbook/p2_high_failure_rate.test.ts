// P2: HIGH RATE OF FAILED PAYMENTS. A burst of declines at Stripe: most card attempts of the hour fail.
// The P2 alert is pending first (one bad minute does not page), firing once it has held for its 10
// minutes; the runbook's analysis queries show the cause; when the burst is an hour old it resolves.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startE2E, until, type E2E } from "../helpers/e2e.ts";
import { isoDate, unit } from "../helpers/fixtures.ts";
import { alerts, expectFires, expectResolved } from "../helpers/runbook.ts";

let e: E2E;
beforeAll(async () => {
  e = await startE2E();
});
afterAll(async () => {
  await e?.stop();
});

describe("P2: high rate of failed payments", () => {
  it("is pending, then fires at P2, is explained by failed_payments_analysis, and resolves", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) {
      const { unitId } = await unit(e.db.sql);
      const res = await e.checkout({ unit_id: unitId, check_in: isoDate(2), check_out: isoDate(4), guests: 2, method: "card" });
      e.sandbox.control.stripeConfirm(res.body.gateway_payment_id, i < 10 ? "declined" : "succeeded",
        i < 10 ? { declineCode: i < 7 ? "insufficient_funds" : "expired_card" } : undefined);
      ids.push(res.body.payment_id);
    }
    await until(async () => (await e.db.sql`select count(*)::int as n from reserve.payments where status in ('failed', 'succeeded')`)[0].n === 12, "all decided");

    const first = (await alerts(e.db.sql)).get("payment_failure_rate")!;
    expect(first.state).toBe("pending");
    await expectFires(e.db.sql, "payment_failure_rate", "P2", "P2: HIGH RATE OF FAILED PAYMENTS");

    // Checks, as written
    const analysis = await e.db.sql.unsafe(`SELECT * FROM reserve.failed_payments_analysis ORDER BY count DESC;`);
    expect(analysis[0]).toMatchObject({ error_code: "insufficient_funds", count: "7" });
    expect(analysis.reduce((s, a) => s + Number(a.share), 0)).toBeCloseTo(100, 1);
    const [hour] = await e.db.sql.unsafe(`
      SELECT DATE_TRUNC('hour', created_at) as hour,
        COUNT(*) FILTER (WHERE status = 'succeeded') as succeeded,
        COUNT(*) FILTER (WHERE status = 'failed') as failed,
        ROUND(COUNT(*) FILTER (WHERE status = 'succeeded')::numeric / COUNT(*) * 100, 2) as success_rate
      FROM reserve.payments WHERE created_at > NOW() - INTERVAL '24 hours'
      GROUP BY DATE_TRUNC('hour', created_at) ORDER BY hour DESC;`);
    expect(Number(hour.success_rate)).toBeLessThan(80);

    // card_declined and friends: "nothing - normal behaviour"; the burst passes
    await e.db.sql`update reserve.payments set created_at = created_at - interval '2 hours' where id = any(${ids}::uuid[])`;
    await expectResolved(e.db.sql, "payment_failure_rate");
    const [ev] = await e.db.sql`select array_agg(state order by id) as states from reserve.alert_events where alert_name = 'payment_failure_rate'`;
    expect(ev.states).toEqual(["pending", "firing", "resolved"]);
  });
});
