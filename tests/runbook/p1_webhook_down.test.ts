// P1: WEBHOOK DOWN. Stripe's deliveries stop reaching us (the sandbox drops them) while guests pay; an
// hour later the payments are stuck and no webhook has completed. The alert fires at P1; the poller
// recovers every payment; redelivered events complete; the runbook's verification says 0 stuck.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startE2E, type E2E } from "../helpers/e2e.ts";
import { isoDate, unit } from "../helpers/fixtures.ts";
import { expectFires, expectResolved } from "../helpers/runbook.ts";

let e: E2E;
beforeAll(async () => {
  e = await startE2E();
});
afterAll(async () => {
  await e?.stop();
});

describe("P1: webhook down", () => {
  it("fires, is diagnosed with the runbook's queries, and recovers through the poller", async () => {
    const paid: { payment_id: string; booking_intent_id: string; gateway_payment_id: string }[] = [];
    e.sandbox.control.setWebhookMode("stripe", "drop");
    for (let i = 0; i < 3; i++) {
      const { unitId } = await unit(e.db.sql);
      const res = await e.checkout({ unit_id: unitId, check_in: isoDate(2), check_out: isoDate(4), guests: 2, method: "card" });
      expect(res.status).toBe(201);
      e.sandbox.control.stripeConfirm(res.body.gateway_payment_id, "succeeded");
      paid.push(res.body);
    }
    await e.sandbox.control.flush();
    // an hour goes by with the endpoint down
    await e.db.sql`update reserve.payments set status_changed_at = now() - interval '70 minutes', created_at = now() - interval '70 minutes'`;

    await expectFires(e.db.sql, "webhook_down", "P1", "P1: WEBHOOK DOWN (Stripe/PIX)");
    await expectFires(e.db.sql, "stuck_payments", "P2", "P2: PAYMENT STUCK IN PROCESSING");

    // Immediate checks, as written
    await e.db.sql.unsafe(`SELECT provider, status, COUNT(*) FROM reserve.processed_webhooks
      WHERE received_at > NOW() - INTERVAL '1 hour' GROUP BY provider, status;`);
    const [{ stuck_count }] = await e.db.sql.unsafe(`SELECT COUNT(*) as stuck_count FROM reserve.stuck_payments;`);
    expect(Number(stuck_count)).toBe(3);
    await e.db.sql.unsafe(`SELECT * FROM reserve.webhook_failure_analysis ORDER BY last_seen DESC LIMIT 10;`);
    // Scenario C: the endpoint answers 400 (invalid signature), not 404
    const probe = await e.post("webhook_stripe", { test: true }, { "content-type": "application/json" });
    expect(probe.status).toBe(400);

    // Recovery: the poller asks Stripe about every stuck payment (what the 5-minute schedule does)
    const run = await e.poll();
    expect(run.body).toMatchObject({ ok: true, finalized: 3 });
    for (const p of paid) {
      const [r] = await e.db.sql`select confirmation_code from reserve.reservations where booking_intent_id = ${p.booking_intent_id}`;
      expect(r.confirmation_code).toMatch(/^RES-/);
    }
    // the endpoint is back: Stripe redelivers what it could not send, and it completes as a no-op
    e.sandbox.control.setWebhookMode("stripe", "deliver");
    for (const d of e.sandbox.control.deliveries().filter((x) => x.status === "dropped" && x.type === "payment_intent.succeeded")) {
      expect((await e.sandbox.control.redeliver(d.eventId)).status).toBe(200);
    }

    // Verification, as written
    const [{ count }] = await e.db.sql.unsafe(`SELECT COUNT(*) FROM reserve.stuck_payments;`);
    expect(Number(count)).toBe(0);
    const completed = await e.db.sql`select count(*)::int as n from reserve.processed_webhooks
                                     where event_type = 'payment_intent.succeeded' and status = 'completed'`;
    expect(completed[0].n).toBe(3);
    await expectResolved(e.db.sql, "webhook_down");
    await expectResolved(e.db.sql, "stuck_payments");
  });
});
