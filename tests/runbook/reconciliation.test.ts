// The runbook's reconciliation steps, as written, against the real reconcile function and the provider
// sandbox: "Recovery: Process Missed Webhooks" (card and PIX paid while deliveries were dropped),
// "P2: PIX PAID BUT NOT CONFIRMED", "P2: DOUBLE CHARGE" (both charges confirmed, a second charge we never
// recorded found) and "P2: RECONCILIATION DIFFERENCES" (the alert, its checks, closing the item). Each
// `curl` body is the runbook's own, with the example window moved to the hour around now.
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startE2E, type E2E } from "../helpers/e2e.ts";
import { isoDate, unit } from "../helpers/fixtures.ts";
import { asOperator, expectFires, expectResolved } from "../helpers/runbook.ts";

const DOC = readFileSync(path.resolve(import.meta.dirname, "../../docs/RUNBOOK.md"), "utf8");

/** The text of a `## ` or `### ` section, up to the next heading of the same level or higher. */
function section(title: string): string {
  const lines = DOC.split("\n");
  const start = lines.findIndex((l) => /^#{2,3} /.test(l) && l.replace(/^#+ /, "") === title);
  expect(start, title).toBeGreaterThanOrEqual(0);
  const level = lines[start]!.match(/^#+/)![0].length;
  // a `# comment` inside a fenced block is no heading
  let fenced = false;
  const end = lines.findIndex((l, i) => {
    if (/^\s*```/.test(l)) fenced = !fenced;
    return i > start && !fenced && new RegExp(`^#{1,${level}} `).test(l);
  });
  return lines.slice(start, end < 0 ? undefined : end).join("\n");
}

/** The fenced blocks of a language in a section. */
const blocks = (text: string, lang: string) =>
  [...text.matchAll(new RegExp("```" + lang + "\\n([\\s\\S]*?)\\n```", "g"))].map((m) => m[1]!);

/** The JSON body of the section's reconcile curl, its window moved to the hour around now. */
function reconcileBody(text: string): Record<string, unknown> {
  const curl = blocks(text, "bash").find((b) => b.includes("/functions/v1/reconcile"));
  expect(curl, "a reconcile curl").toBeDefined();
  const body = JSON.parse(curl!.match(/-d '(\{.*\})'/)![1]!) as Record<string, unknown>;
  expect(Object.keys(body).sort()).toEqual(["from", "provider", "to"]);
  return { ...body, from: new Date(Date.now() - 3_600_000).toISOString(), to: new Date(Date.now() + 3_600_000).toISOString() };
}

let e: E2E;
beforeAll(async () => {
  e = await startE2E();
});
afterAll(async () => {
  await e?.stop();
});

const reconcile = (body: Record<string, unknown>) => e.post("reconcile", body, { authorization: `Bearer ${e.cronSecret}` });

async function checkout(method: "card" | "pix", provider?: string) {
  const { unitId } = await unit(e.db.sql);
  const res = await e.checkout({ unit_id: unitId, check_in: isoDate(2), check_out: isoDate(4), guests: 2, method, provider });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body as { payment_id: string; booking_intent_id: string; gateway_payment_id: string };
}

describe("the runbook's reconciliation", () => {
  it("Recovery: Process Missed Webhooks reconciles the outage window and its query shows the repairs", async () => {
    const text = section("Recovery: Process Missed Webhooks");
    const paid = [await checkout("card"), await checkout("card")];
    await e.sandbox.control.flush();
    e.sandbox.control.setWebhookMode("stripe", "drop");
    try {
      for (const p of paid) e.sandbox.control.stripeConfirm(p.gateway_payment_id, "succeeded");
    } finally {
      e.sandbox.control.setWebhookMode("stripe", "deliver");
    }
    const body = reconcileBody(text);
    expect(body.provider).toBe("stripe");
    const res = await reconcile(body);
    expect(res.body).toMatchObject({ ok: true, done: true });
    const found = await e.db.sql.unsafe(blocks(text, "sql").find((b) => b.includes("reserve.reconciliation_items"))!);
    for (const p of paid) {
      expect(found.find((r) => r.payment_id === p.payment_id && r.kind === "paid_not_recorded")?.repaired_at, p.payment_id).toBeTruthy();
      const [r] = await e.db.sql`select confirmation_code from reserve.reservations where payment_id = ${p.payment_id}`;
      expect(r!.confirmation_code).toMatch(/^RES-/);
    }
  });

  it("P2: PIX PAID BUT NOT CONFIRMED confirms a PIX from MercadoPago's search", async () => {
    const text = section("P2: PIX PAID BUT NOT CONFIRMED");
    const pix = await checkout("pix", "mercadopago");
    await e.sandbox.control.flush();
    e.sandbox.control.setWebhookMode("mercadopago", "drop");
    try {
      e.sandbox.control.mercadopagoPay(pix.gateway_payment_id);
    } finally {
      e.sandbox.control.setWebhookMode("mercadopago", "deliver");
    }
    const body = reconcileBody(text);
    expect(body.provider).toBe("mercadopago");
    expect((await reconcile(body)).body).toMatchObject({ ok: true, done: true });
    const query = blocks(text, "sql").find((b) => b.includes("reserve.reconciliation_items"))!.split("'pix-payment-uuid'").join(`'${pix.payment_id}'`);
    const rows = await e.db.sql.unsafe(query);
    expect(rows.map((r) => [r.kind, !!r.repaired_at])).toContainEqual(["paid_not_recorded", true]);
    expect(rows.every((r) => r.repaired_at)).toBe(true);
    const [p] = await e.db.sql`select status from reserve.payments where id = ${pix.payment_id}`;
    expect(p!.status).toBe("succeeded");
  });

  it("P2: DOUBLE CHARGE and P2: RECONCILIATION DIFFERENCES: a second charge we never recorded is found, pages, and is closed", async () => {
    const text = section("P2: DOUBLE CHARGE");
    const first = await checkout("card");
    e.sandbox.control.stripeConfirm(first.gateway_payment_id, "succeeded");
    await e.sandbox.control.flush();
    // the guest's bank or a retried integration: Stripe holds a second paid charge naming our payment
    const second = e.sandbox.control.stripeCreateUnnotifiedPayment({ amount: 100000, metadata: { payment_id: first.payment_id } }) as { id: string };
    const res = await reconcile({ ...reconcileBody(section("Recovery: Process Missed Webhooks")), provider: "stripe" });
    expect(res.body.done).toBe(true);
    const query = blocks(text, "sql").find((b) => b.includes("reserve.reconciliation_items"))!.split("'duplicate-payment-uuid'").join(`'${first.payment_id}'`);
    const rows = await e.db.sql.unsafe(query);
    expect(rows.map((r) => [r.kind, r.object_id])).toContainEqual(["duplicate_charge", second.id]);
    expect(rows.map((r) => r.kind)).not.toContain("ours_missing_there");

    const differences = section("P2: RECONCILIATION DIFFERENCES");
    await expectFires(e.db.sql, "reconciliation_unrepaired", "P2", "P2: RECONCILIATION DIFFERENCES");
    const [checks] = blocks(differences, "sql");
    const open = await e.db.sql.unsafe(checks!.split(";")[0]!);
    expect(open.map((r) => r.kind)).toContain("duplicate_charge");
    const resolve = blocks(differences, "sql").find((b) => b.includes("resolve_reconciliation_item"))!;
    for (const o of open) {
      const statement = resolve.split("\n").filter((l) => !/^(begin|commit|set local)/.test(l.trim())).join("\n")
        .split("'reconciliation-item-uuid'").join(`'${o.id}'`);
      await asOperator(e.db.sql, "oncall@company", (tx) => tx.unsafe(statement));
    }
    await expectResolved(e.db.sql, "reconciliation_unrepaired");
    const verification = blocks(differences, "sql").at(-1)!;
    const [{ count }] = await e.db.sql.unsafe(verification.split(";")[0]!);
    expect(Number(count)).toBe(0);
  });
});
