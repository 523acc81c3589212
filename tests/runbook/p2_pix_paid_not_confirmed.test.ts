// P2: PIX PAID BUT NOT CONFIRMED. MercadoPago's notifications are lost (the sandbox drops them) while the
// guest pays; half an hour later the P2 alert fires. The runbook's checks run as written; the poller's
// lookup confirms the payment (the runbook's "poll every 5 minutes" prevention, built).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startE2E, type E2E } from "../helpers/e2e.ts";
import { isoDate, unit } from "../helpers/fixtures.ts";
import { expectFires, expectResolved } from "../helpers/runbook.ts";

let e: E2E;
beforeAll(async () => {
  e = await startE2E({ pixProvider: "mercadopago" });
});
afterAll(async () => {
  await e?.stop();
});

describe("P2: PIX paid but not confirmed", () => {
  it("fires after 30 minutes pending, and the poller confirms the payment", async () => {
    const { unitId } = await unit(e.db.sql);
    e.sandbox.control.setWebhookMode("mercadopago", "drop");
    const res = await e.checkout({ unit_id: unitId, check_in: isoDate(2), check_out: isoDate(4), guests: 2, method: "pix", guest_email: "ana@example.com" });
    expect(res.status).toBe(201);
    e.sandbox.control.mercadopagoPay(res.body.gateway_payment_id);
    await e.sandbox.control.flush();
    await e.db.sql`update reserve.payments set created_at = now() - interval '35 minutes' where id = ${res.body.payment_id}`;

    await expectFires(e.db.sql, "pix_pending_over_30m", "P2", "P2: PIX PAID BUT NOT CONFIRMED");

    // Checks, as written
    const [p] = await e.db.sql.unsafe(`SELECT * FROM reserve.payments WHERE gateway_payment_id = '${res.body.gateway_payment_id}'
      OR booking_intent_id = '${res.body.booking_intent_id}';`);
    expect(p.status).toBe("pending");
    const seen = await e.db.sql.unsafe(`SELECT * FROM reserve.processed_webhooks WHERE provider IN ('mercadopago', 'openpix')
      AND received_at > NOW() - INTERVAL '24 hours' ORDER BY received_at DESC;`);
    expect(seen.filter((w) => w.payment_id === res.body.payment_id)).toHaveLength(0);

    // Resolution: what the 5-minute schedule does, now
    const run = await e.poll({}, [res.body.payment_id]);
    expect(run.body).toMatchObject({ ok: true, finalized: 1 });
    const [r] = await e.db.sql`select payment_status from reserve.reservations where booking_intent_id = ${res.body.booking_intent_id}`;
    expect(r.payment_status).toBe("paid");
    await expectResolved(e.db.sql, "pix_pending_over_30m");
  });
});
