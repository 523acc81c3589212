// npm run demo — a card booking and two PIX bookings (MercadoPago, OpenPIX) end to end through the real edge
// functions, paid the way a person pays: on the sandbox's pages and through its HTTP control API
// (/_sandbox), never by reaching into a process. It drives the stack `npm start` runs when one answers on
// the configured ports (RESERVE_FUNCTIONS_PORT, RESERVE_SANDBOX_PORT) and says so; otherwise it starts
// its own on free ports, says so, and stops it at the end.
import { rm } from "node:fs/promises";
import postgres from "postgres";
import { loadOrCreateSigningKey, localIssuer, signUserToken } from "../local/auth_keys.ts";
import { DEFAULT_LOCAL_JWT_SECRET, localKeys } from "../local/keys.ts";
import { freePort } from "../local/ports.ts";
import { LOCAL_DB_PASSWORD, LOCAL_DB_USER, tempClusterDir } from "../local/postgres.ts";
import { configFromEnv, maskUrl, startStack, type Stack } from "../local/stack.ts";

type Json = Record<string, any>;

const step = (n: number, text: string, detail?: unknown) =>
  console.log(`\n${n}. ${text}${detail === undefined ? "" : `\n${JSON.stringify(detail, null, 2).replace(/^/gm, "   ")}`}`);

async function until<T>(what: string, check: () => Promise<T | undefined>, ms = 20_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 150));
  }
}

async function getJson(url: string, init?: RequestInit): Promise<{ status: number; body: Json } | undefined> {
  try {
    const res = await fetch(url, { ...init, signal: AbortSignal.timeout(2_000) });
    return { status: res.status, body: (await res.json().catch(() => ({}))) as Json };
  } catch {
    return undefined;
  }
}

interface Target {
  functionsUrl: string;
  sandboxUrl: string;
  databaseUrl: string;
  jwtSecret: string;
  anonKey: string;
  /** a guest's access token, as `npm run token` signs it for this stack */
  guestToken(email: string): string;
  stop(): Promise<void>;
}

/** The running stack, if its functions and its sandbox both answer on the configured ports. */
async function runningStack(): Promise<Target | undefined> {
  const cfg = configFromEnv();
  const functionsUrl = `http://127.0.0.1:${cfg.functionsPort}`;
  const sandboxUrl = `http://127.0.0.1:${cfg.sandboxPort}`;
  const [health, sandbox] = await Promise.all([getJson(`${functionsUrl}/functions/v1/health`), getJson(`${sandboxUrl}/_sandbox`)]);
  if (!health || !("database" in health.body) || !sandbox || sandbox.status !== 200 || !sandbox.body.stripe) return undefined;
  const databaseUrl = cfg.databaseUrl ?? `postgres://${LOCAL_DB_USER}:${LOCAL_DB_PASSWORD}@127.0.0.1:${cfg.dbPort}/postgres`;
  const key = loadOrCreateSigningKey(cfg.dataDir);
  return {
    functionsUrl, sandboxUrl, databaseUrl, jwtSecret: cfg.jwtSecret, anonKey: localKeys(cfg.jwtSecret).anon,
    guestToken: (email) => signUserToken(key, { email, issuer: localIssuer(cfg.functionsPort) }),
    stop: async () => {},
  };
}

async function ownStack(): Promise<Target> {
  const dataDir = await tempClusterDir("reserve-demo-");
  const functionsPort = await freePort();
  const stack: Stack = await startStack({
    dataDir, dbPort: await freePort(), functionsPort, jwtSecret: DEFAULT_LOCAL_JWT_SECRET, seed: true,
    sandbox: true, sandboxPort: await freePort(), cronSecret: "demo", pollEveryMs: 0,
  }, () => {});
  return {
    functionsUrl: stack.functions.url, sandboxUrl: stack.sandbox!.url, databaseUrl: stack.databaseUrl,
    jwtSecret: DEFAULT_LOCAL_JWT_SECRET, anonKey: stack.keys.anon,
    guestToken: (email) => signUserToken(loadOrCreateSigningKey(dataDir), { email, issuer: localIssuer(functionsPort) }),
    stop: async () => {
      await stack.stop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** What a person's browser does with the pay page's button: POST the form, land back on the page. */
async function pressPay(pageUrl: string, button?: { name: string; value: string }): Promise<string> {
  const html = await (await fetch(pageUrl)).text();
  const action = /<form method="post" action="([^"]+)"/.exec(html)?.[1];
  if (!action) throw new Error(`no pay button on ${pageUrl}`);
  const fields = new URLSearchParams([...html.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)"/g)].map((m) => [m[1]!, m[2]!.replace(/&amp;/g, "&")]));
  if (button) fields.set(button.name, button.value);
  const res = await fetch(new URL(action, pageUrl), { method: "POST", body: fields, redirect: "follow",
    headers: { "content-type": "application/x-www-form-urlencoded" } });
  return /data-status="([^"]+)"/.exec(await res.text())?.[1] ?? "unknown";
}

let target = await runningStack();
if (target) {
  console.log(`Reserve Connect demo: using the stack that is running (functions ${target.functionsUrl}, sandbox ${target.sandboxUrl}, database ${maskUrl(target.databaseUrl)})`);
} else {
  console.log("Reserve Connect demo: no stack answers on the configured ports; starting one of its own on free ports (stopped at the end)...");
  target = await ownStack();
  console.log(`   started: functions ${target.functionsUrl}, sandbox ${target.sandboxUrl}, database ${maskUrl(target.databaseUrl)}`);
}
const t = target;
const sql = postgres(t.databaseUrl, { max: 2, onnotice: () => {} });
try {
  const guest = t.guestToken("ana@example.com");
  const checkout = async (body: Json) => {
    const res = await fetch(`${t.functionsUrl}/functions/v1/checkout`, { method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${guest}`, apikey: t.anonKey }, body: JSON.stringify(body) });
    const out = (await res.json()) as Json;
    if (res.status !== 201) throw new Error(`checkout answered ${res.status}: ${JSON.stringify(out)}`);
    return out;
  };
  const reservation = (bookingIntentId: string) => until(`the reservation of ${bookingIntentId}`, async () =>
    (await sql`select confirmation_code, status, payment_status, total_amount from reserve.reservations where booking_intent_id = ${bookingIntentId}`)[0]);
  const payUrl = async (provider: string, id: string) => (await getJson(`${t.sandboxUrl}/_sandbox/payUrl/${provider}/${encodeURIComponent(id)}`))!.body.url as string;

  const units = await sql`
    select u.id, u.name, p.city_code from reserve.unit_map u join reserve.properties_map p on p.id = u.property_id
    where u.is_active order by p.city_code, u.name limit 3`;
  // a week after the latest stay already booked, so a second run on the same stack finds the nights free
  const [{ check_in, check_out }] = await sql`
    select to_char(d, 'YYYY-MM-DD') as check_in, to_char(d + 3, 'YYYY-MM-DD') as check_out
    from (select greatest(current_date + 7, coalesce(max(check_out) + 7, current_date + 7)) as d from reserve.reservations) s`;

  step(1, `Card: the guest checks out ${units[0]!.name} (${units[0]!.city_code}) from ${check_in} to ${check_out}`);
  const card = await checkout({ unit_id: units[0]!.id, check_in, check_out, guests: 2, method: "card" });
  console.log(`   POST /functions/v1/checkout -> 201: ${card.amount} centavos, PaymentIntent ${card.gateway_payment_id}, nights held until ${card.hold_expires_at}`);
  const cardPage = await payUrl("stripe", card.gateway_payment_id);
  step(2, `The guest pays on the PaymentIntent's pay page (${cardPage.replace(/client_secret=[^&]+/, "client_secret=…")}): a declined card first, then 4242`);
  console.log(`   0002 -> ${await pressPay(cardPage, { name: "outcome", value: "declined" })}; 4242 -> ${await pressPay(cardPage, { name: "outcome", value: "succeeded" })}`);
  step(3, "Stripe posts payment_intent.payment_failed, then payment_intent.succeeded (signed); the reservation", await reservation(card.booking_intent_id));

  step(4, `PIX with MercadoPago: ${units[1]!.name} (${units[1]!.city_code})`);
  const mp = await checkout({ unit_id: units[1]!.id, check_in, check_out, guests: 2, method: "pix", provider: "mercadopago" });
  const ticket = (mp.ticket_url as string | undefined) ?? await payUrl("mercadopago", String(mp.gateway_payment_id));
  console.log(`   MercadoPago payment ${mp.gateway_payment_id}; copy-and-paste code ${String(mp.qr_code).slice(0, 50)}…\n   ticket page (QR image, pay button): ${ticket}`);
  console.log(`   the guest presses "Pagar no app do banco" -> ${await pressPay(ticket)}`);
  step(5, "MercadoPago notifies (x-signature); the function reads the payment; the reservation", await reservation(mp.booking_intent_id));

  step(6, `PIX with OpenPIX: ${units[2]!.name} (${units[2]!.city_code})`);
  const opx = await checkout({ unit_id: units[2]!.id, check_in, check_out, guests: 2, method: "pix", provider: "openpix" });
  const link = (opx.payment_link_url as string | undefined) ?? await payUrl("openpix", String(opx.gateway_payment_id));
  console.log(`   OpenPIX charge ${opx.gateway_payment_id}; payment link ${link}`);
  console.log(`   the guest pays on the link -> ${await pressPay(link)}`);
  step(7, "OpenPIX posts the charge-completed event (RSA-signed); the reservation", await reservation(opx.booking_intent_id));

  const deliveries = (await getJson(`${t.sandboxUrl}/_sandbox/deliveries`))!.body as Json[];
  const events = (await getJson(`${t.sandboxUrl}/_sandbox/events`))!.body as Json[];
  const ours = [card.gateway_payment_id, String(mp.gateway_payment_id), String(opx.gateway_payment_id)] as string[];
  const ids = new Set(events.filter((e) => ours.some((id) => e.raw.includes(id))).map((e) => e.id));
  step(8, "Webhooks the sandbox delivered for these payments (GET /_sandbox/deliveries)",
    deliveries.filter((d) => ids.has(d.eventId)).map((d) => `${d.provider} ${d.type} -> ${d.status}`));
} finally {
  await sql.end();
  await t.stop();
}
