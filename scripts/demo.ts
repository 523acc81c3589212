// npm run demo — a card booking and a PIX booking end to end through the real edge functions: a fresh
// stack (embedded PostgreSQL, seed, provider sandbox, functions under Deno) on free ports, a guest who
// checks out and pays at the sandbox, the signed webhooks, and the reservations they produce.
import { rm } from "node:fs/promises";
import postgres from "postgres";
import { DEFAULT_LOCAL_JWT_SECRET, signJwt } from "../local/keys.ts";
import { freePort } from "../local/ports.ts";
import { tempClusterDir } from "../local/postgres.ts";
import { startStack } from "../local/stack.ts";

const step = (n: number, text: string, detail?: unknown) =>
  console.log(`\n${n}. ${text}${detail === undefined ? "" : `\n${JSON.stringify(detail, null, 2).replace(/^/gm, "   ")}`}`);

async function until<T>(what: string, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const dataDir = await tempClusterDir("reserve-demo-");
const stack = await startStack({
  dataDir, dbPort: await freePort(), functionsPort: await freePort(), jwtSecret: DEFAULT_LOCAL_JWT_SECRET, seed: true,
  sandbox: true, sandboxPort: await freePort(), cronSecret: "demo", pollEveryMs: 0,
}, () => {});
const sql = postgres(stack.databaseUrl, { max: 2, onnotice: () => {} });
try {
  const fn = (name: string) => stack.functions.functionUrl(name);
  const guest = signJwt({ sub: "demo-guest", email: "ana@example.com", role: "authenticated", exp: Math.floor(Date.now() / 1000) + 3600 }, DEFAULT_LOCAL_JWT_SECRET);
  const checkout = async (body: Record<string, unknown>) => {
    const res = await fetch(fn("checkout"), { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${guest}` }, body: JSON.stringify(body) });
    const out = await res.json();
    if (res.status !== 201) throw new Error(`checkout answered ${res.status}: ${JSON.stringify(out)}`);
    return out;
  };
  const units = await sql`
    select u.id, u.name, p.city_code from reserve.unit_map u join reserve.properties_map p on p.id = u.property_id
    where u.is_active order by p.city_code, u.name limit 2`;
  const nights = await sql`select current_date + 7 as check_in, current_date + 10 as check_out`;
  const { check_in, check_out } = { check_in: nights[0].check_in.toISOString().slice(0, 10), check_out: nights[0].check_out.toISOString().slice(0, 10) };
  console.log(`Reserve Connect demo: stack up (database ${stack.databaseUrl.replace(/:[^:@/]+@/, ":****@")}, sandbox ${stack.sandbox!.url})`);

  step(1, `Card: the guest checks out ${units[0].name} (${units[0].city_code}) from ${check_in} to ${check_out}`);
  const card = await checkout({ unit_id: units[0].id, check_in, check_out, guests: 2, method: "card" });
  console.log(`   POST /functions/v1/checkout -> 201: payment ${card.payment_id}, ${card.amount} centavos, PaymentIntent ${card.gateway_payment_id}, client_secret ${String(card.client_secret).slice(0, 12)}..., nights held until ${card.hold_expires_at}`);
  step(2, "The guest confirms the card in the app (Stripe.js, at the sandbox); Stripe posts payment_intent.succeeded, signed");
  await stack.sandbox!.control.stripeConfirm(card.gateway_payment_id, "succeeded");
  const r1 = await until("the card reservation", async () => (await sql`select confirmation_code, status, payment_status, total_amount from reserve.reservations where booking_intent_id = ${card.booking_intent_id}`)[0]);
  const hooks = await sql`select event_type, status from reserve.processed_webhooks where payment_id = ${card.payment_id} order by received_at`;
  console.log(`   webhooks: ${hooks.map((h) => `${h.event_type} ${h.status}`).join(", ")}`);
  step(3, "Reservation", r1);

  step(4, `PIX: the guest checks out ${units[1].name} (${units[1].city_code}) with PIX through MercadoPago`);
  const pix = await checkout({ unit_id: units[1].id, check_in, check_out, guests: 2, method: "pix", provider: "mercadopago" });
  console.log(`   POST /functions/v1/checkout -> 201: payment ${pix.payment_id}, MercadoPago payment ${pix.gateway_payment_id}, expires ${pix.payment_expires_at}`);
  console.log(`   copy-paste code: ${String(pix.qr_code).slice(0, 60)}...`);
  step(5, "The guest pays the PIX in the bank app; MercadoPago notifies (x-signature), the function fetches the payment");
  await stack.sandbox!.control.mercadopagoPay(pix.gateway_payment_id);
  const r2 = await until("the PIX reservation", async () => (await sql`select confirmation_code, status, payment_status, total_amount from reserve.reservations where booking_intent_id = ${pix.booking_intent_id}`)[0]);
  step(6, "Reservation", r2);

  const ledger = await sql`
    select account, sum(case when direction = 'debit' then amount else -amount end)::bigint as balance
    from reserve.ledger_entries group by account order by account`;
  step(7, "Ledger balances (debits minus credits, centavos)", Object.fromEntries(ledger.map((l) => [l.account, Number(l.balance)])));
} finally {
  await sql.end();
  await stack.stop();
  await rm(dataDir, { recursive: true, force: true });
}
