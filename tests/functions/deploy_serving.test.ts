// Each function served the way `supabase functions deploy` resolves it: its index.ts, from a copy of
// supabase/functions/ alone, with supabase/functions/import_map.json as the only configuration: no
// deno.json, no node_modules, a fresh Deno cache, so Deno fetches the npm: packages from the registry.
// Deno.serve() in index.ts takes its address from DENO_SERVE_ADDRESS, so index.ts is served untouched.
// A card booking then runs through the deployed checkout and webhook_stripe against the sandbox.
import { spawn, type ChildProcess } from "node:child_process";
import { createHmac, randomUUID } from "node:crypto";
import { cp, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { denoBinary } from "../../local/functions.ts";
import { jwksOf, signUserToken } from "../../local/auth_keys.ts";
import { DEFAULT_LOCAL_JWT_SECRET } from "../../local/keys.ts";
import { projectRoot } from "../../local/migrate.ts";
import { freePort } from "../../local/ports.ts";
import { newCronSecret, sandboxEnv } from "../../local/provider_env.ts";
import { startProviderSandbox, type ProviderSandbox } from "../../local/sandbox/index.ts";
import { testSigningKey } from "../helpers/auth.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { until } from "../helpers/e2e.ts";
import { isoDate, unit } from "../helpers/fixtures.ts";

// what reaches the registry from this machine, where it needs them (a mirror, a proxy, its certificates)
const NETWORK_VARS = [
  "NPM_CONFIG_REGISTRY", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy",
  "DENO_CERT", "DENO_TLS_CA_STORE", "NODE_EXTRA_CA_CERTS",
];

interface Deployed {
  name: string;
  url: string;
  child: ChildProcess;
  output: string[];
}

let work: string;
let bundle: string;
let denoDir: string;
let db: TestDatabase;
let sandbox: ProviderSandbox;
const served: Deployed[] = [];
const cronSecret = newCronSecret();

function denoArgs(command: "cache" | "run", entrypoints: string[]): string[] {
  return [
    // run is not --quiet: that would also silence Deno.serve's "Listening on", which says it is up
    command, ...(command === "cache" ? ["--quiet"] : []), "--no-config", "--no-lock", "--node-modules-dir=none",
    "--import-map", path.join(bundle, "import_map.json"),
    ...(command === "run" ? ["--no-prompt", "--allow-net", "--allow-env"] : []),
    ...entrypoints,
  ];
}

function denoEnv(extra: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "", HOME: work, DENO_DIR: denoDir, DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1",
  };
  for (const k of NETWORK_VARS) if (process.env[k]) env[k] = process.env[k]!;
  return { ...env, ...extra };
}

/** Serves supabase/functions/<name>/index.ts as deployed; resolves once Deno.serve listens. */
async function serve(name: string, port: number, env: Record<string, string>): Promise<Deployed> {
  const child = spawn(denoBinary(), denoArgs("run", [path.join(bundle, name, "index.ts")]), {
    cwd: work,
    env: denoEnv({ ...env, DENO_SERVE_ADDRESS: `tcp:127.0.0.1:${port}` }),
    stdio: ["ignore", "pipe", "pipe"],
  });
  const d: Deployed = { name, url: `http://127.0.0.1:${port}/${name}`, child, output: [] };
  served.push(d);
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      d.output.push(chunk.toString());
      if (d.output.join("").includes(`Listening on http://127.0.0.1:${port}/`)) resolve();
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.once("exit", (code) => reject(new Error(`${name} exited (${code}) before listening: ${d.output.join("")}`)));
  });
  return d;
}

async function call(d: Deployed, init: RequestInit & { path?: string } = {}) {
  const res = await fetch(`${d.url}${init.path ?? ""}`, init);
  const text = await res.text();
  let body: any = text;
  try {
    body = JSON.parse(text);
  } catch { /* keep the text, the assertion says what came back */ }
  return { status: res.status, type: res.headers.get("content-type"), body };
}

const fns: Record<string, Deployed> = {};

beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), "reserve-deploy-"));
  bundle = path.join(work, "functions");
  denoDir = path.join(work, "deno-cache");
  // only what deploys: anything imported from outside this copy cannot resolve
  await cp(path.join(projectRoot, "supabase/functions"), bundle, { recursive: true });
  const entrypoints = (await readdir(bundle, { withFileTypes: true }))
    .filter((e) => e.isDirectory() && !e.name.startsWith("_"))
    .map((e) => path.join(bundle, e.name, "index.ts"));
  // one fetch from the registry into the shared cache, so the servers below start side by side
  await new Promise<void>((resolve, reject) => {
    const c = spawn(denoBinary(), denoArgs("cache", entrypoints), { cwd: work, env: denoEnv({}), stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    c.stdout!.on("data", (b) => (out += b));
    c.stderr!.on("data", (b) => (out += b));
    c.once("exit", (code) => (code === 0 ? resolve() : reject(new Error(`deno cache failed (${code}): ${out}`))));
  });

  db = await createTestDatabase();
  const ports = { checkout: 0, webhook_stripe: 0, webhook_pix: 0, poll_payment_status: 0, health: 0, unconfigured: 0 };
  for (const k of Object.keys(ports) as (keyof typeof ports)[]) ports[k] = await freePort();
  sandbox = await startProviderSandbox({
    stripeWebhookUrl: `http://127.0.0.1:${ports.webhook_stripe}/webhook_stripe`,
    openpixWebhookUrl: `http://127.0.0.1:${ports.webhook_pix}/webhook_pix/openpix`,
    log: () => {},
  });
  const common = {
    SUPABASE_DB_URL: db.url,
    ...sandboxEnv(sandbox),
    // each function has its own address here; MercadoPago notifications go to webhook_pix's
    RESERVE_FUNCTIONS_URL: `http://127.0.0.1:${ports.webhook_pix}`,
    RESERVE_CRON_SECRET: cronSecret,
    // the project's JWKS inline (a deployed function may also fetch it from SUPABASE_URL) and the legacy secret
    SUPABASE_JWKS: JSON.stringify(jwksOf(testSigningKey)),
    SUPABASE_JWT_SECRET: DEFAULT_LOCAL_JWT_SECRET,
  };
  const started = await Promise.all([
    serve("health", ports.health, { SUPABASE_DB_URL: db.url }),
    serve("checkout", ports.checkout, common),
    serve("webhook_stripe", ports.webhook_stripe, common),
    serve("webhook_pix", ports.webhook_pix, common),
    serve("poll_payment_status", ports.poll_payment_status, common),
  ]);
  for (const d of started) fns[d.name] = d;
  // a function deployed before its secrets were set
  fns.unconfigured_webhook_stripe = await serve("webhook_stripe", ports.unconfigured, { SUPABASE_DB_URL: db.url });
}, 180_000);

afterAll(async () => {
  await Promise.all(served.map((d) => new Promise<void>((resolve) => {
    if (d.child.exitCode !== null || d.child.signalCode !== null) return resolve();
    d.child.once("exit", () => resolve());
    d.child.kill("SIGTERM");
  })));
  await sandbox?.stop();
  await db?.drop();
  if (work) await rm(work, { recursive: true, force: true });
});

const guestToken = () => signUserToken(testSigningKey, { email: "guest@example.com", issuer: "http://127.0.0.1/auth/v1" });

const postJson = (body: unknown, headers: Record<string, string> = {}): RequestInit => ({
  method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body),
});

describe("functions served as a deploy resolves them (import_map.json alone, npm packages from the registry)", () => {
  it("the Deno cache holds the npm packages it fetched, outside node_modules", async () => {
    const npm = await readdir(path.join(denoDir, "npm", "registry.npmjs.org"));
    expect(npm).toEqual(expect.arrayContaining(["postgres", "stripe", "zod"]));
  });

  it("health answers 200 with the database's migration version, and 405 in JSON to a POST", async () => {
    const ok = await call(fns.health);
    expect(ok.status).toBe(200);
    expect(ok.type).toMatch(/application\/json/);
    const [{ v }] = await db.sql`select max(version) as v from supabase_migrations.schema_migrations`;
    expect(ok.body).toMatchObject({ status: "ok", database: "reachable", migration_version: v });
    const post = await call(fns.health, { method: "POST" });
    expect(post.status).toBe(405);
    expect(post.body).toMatchObject({ error: "method_not_allowed" });
  });

  it("webhook_stripe without its secret answers 500 not_configured in JSON; with it, a forged signature is 400", async () => {
    const bare = await call(fns.unconfigured_webhook_stripe, postJson({ id: "evt_1" }, { "stripe-signature": "t=1,v1=00" }));
    expect(bare.status).toBe(500);
    expect(bare.body).toMatchObject({ error: "not_configured" });
    const forged = await call(fns.webhook_stripe, postJson({ id: "evt_1" }, { "stripe-signature": "t=1,v1=00" }));
    expect(forged.status).toBe(400);
    expect(forged.body).toMatchObject({ error: "invalid_signature" });
  });

  it("checkout verifies its caller itself, names the refused fields (zod), and answers CORS", async () => {
    const anonymous = await call(fns.checkout, postJson({ unit_id: randomUUID(), check_in: isoDate(2), check_out: isoDate(4), guests: 1, method: "card" }));
    expect(anonymous.status).toBe(401);
    expect(anonymous.body).toMatchObject({ error: "invalid_jwt", reason: "missing" });
    const bad = await call(fns.checkout, postJson({ unit_id: "x", check_in: "tomorrow", guests: 0, method: "card" }, { authorization: `Bearer ${guestToken()}` }));
    expect(bad.status).toBe(400);
    expect(bad.body.error).toBe("invalid_request");
    expect(bad.body.issues.map((i: { path: string }) => i.path).sort()).toEqual(["check_in", "check_out", "guests", "unit_id"]);
    const preflight = await fetch(fns.checkout.url, { method: "OPTIONS", headers: { origin: "https://app.example", "access-control-request-method": "POST" } });
    expect(preflight.status).toBe(200);
    expect(preflight.headers.get("access-control-allow-origin")).toBe("*");
    expect(preflight.headers.get("access-control-allow-headers")).toContain("authorization");
  });

  it("poll_payment_status refuses a wrong cron secret and runs with the right one", async () => {
    const wrong = await call(fns.poll_payment_status, postJson({}, { authorization: "Bearer nope" }));
    expect(wrong.status).toBe(401);
    const run = await call(fns.poll_payment_status, postJson({}, { authorization: `Bearer ${cronSecret}` }));
    expect(run.status, JSON.stringify(run.body)).toBe(200);
    expect(run.body).toMatchObject({ claimed: 0 });
  });

  it("webhook_pix checks MercadoPago's signature and records a signed notification", async () => {
    const forged = await call(fns.webhook_pix, { ...postJson({ type: "payment", data: { id: "1" } }, { "x-signature": "ts=1,v1=00", "x-request-id": "r1" }), path: "/mercadopago?data.id=1&type=payment" });
    expect(forged.status).toBe(400);
    expect(forged.body).toMatchObject({ error: "invalid_signature" });
    const ts = String(Date.now());
    const requestId = randomUUID();
    const v1 = createHmac("sha256", sandbox.mercadopago.webhookSecret).update(`id:42;request-id:${requestId};ts:${ts};`).digest("hex");
    const signed = await call(fns.webhook_pix, {
      ...postJson({ type: "plan", action: "plan.updated", data: { id: "42" } }, { "x-signature": `ts=${ts},v1=${v1}`, "x-request-id": requestId }),
      path: "/mercadopago?data.id=42&type=plan",
    });
    expect(signed.status, JSON.stringify(signed.body)).toBe(200);
    const [row] = await db.sql`select status from reserve.processed_webhooks where provider = 'mercadopago' and event_id = ${`42:${requestId}`}`;
    expect(row?.status).toBe("ignored"); // nothing to apply for a plan, and MercadoPago is not asked again
  });

  it("a card booking runs through the deployed checkout and webhook_stripe: reservation and ledger receipt", async () => {
    const { unitId } = await unit(db.sql);
    const res = await call(fns.checkout, postJson(
      { unit_id: unitId, check_in: isoDate(2), check_out: isoDate(4), guests: 2, method: "card" },
      { authorization: `Bearer ${guestToken()}` }));
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    expect(res.body.client_secret).toMatch(/^pi_.+_secret_.+/);
    sandbox.control.stripeConfirm(res.body.gateway_payment_id, "succeeded");
    await sandbox.control.flush();
    const r = await until(async () => (await db.sql`
      select status, payment_status from reserve.reservations where booking_intent_id = ${res.body.booking_intent_id}`)[0], "the reservation");
    expect(r).toEqual({ status: "host_commit_pending", payment_status: "paid" });
    const [l] = await db.sql`select count(*)::int as n from reserve.ledger_transactions where payment_id = ${res.body.payment_id}`;
    expect(l.n).toBe(1);
    const deliveries = sandbox.control.deliveries().filter((x) => x.provider === "stripe");
    expect(deliveries.length).toBeGreaterThan(0);
    expect(deliveries.every((x) => x.status === 200)).toBe(true);
  });
});
