// `npm run demo` as a person runs it: against the stack that is up (it says so and books through it),
// and with none up (it says so, starts its own, and stops it). Each time three bookings end paid: card on
// the PaymentIntent's pay page, PIX on MercadoPago's ticket page and on OpenPIX's payment link.
import { spawn } from "node:child_process";
import { rm } from "node:fs/promises";
import { afterAll, describe, expect, it } from "vitest";
import { DEFAULT_LOCAL_JWT_SECRET } from "../../local/keys.ts";
import { projectRoot } from "../../local/migrate.ts";
import { freePort } from "../../local/ports.ts";
import { tempClusterDir } from "../../local/postgres.ts";
import { startStack, type Stack } from "../../local/stack.ts";

let stack: Stack | undefined;
let dataDir: string | undefined;
afterAll(async () => {
  await stack?.stop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

function demo(env: Record<string, string>): Promise<{ code: number | null; out: string }> {
  const child = spawn(process.execPath, ["--import", "tsx", "scripts/demo.ts"], {
    cwd: projectRoot, env: { ...process.env, DATABASE_URL: "", ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout!.on("data", (c) => (out += c));
  child.stderr!.on("data", (c) => (out += c));
  return new Promise((resolve) => child.once("exit", (code) => resolve({ code, out })));
}

const paid = (out: string) => out.match(/"payment_status": "paid"/g)?.length ?? 0;

describe("npm run demo", () => {
  it("drives the running stack when one answers on the configured ports", async () => {
    dataDir = await tempClusterDir("reserve-demo-test-");
    const ports = { db: await freePort(), functions: await freePort(), sandbox: await freePort() };
    stack = await startStack({ dataDir, dbPort: ports.db, functionsPort: ports.functions, jwtSecret: DEFAULT_LOCAL_JWT_SECRET,
      seed: true, sandbox: true, sandboxPort: ports.sandbox, cronSecret: "demo-test", pollEveryMs: 0 }, () => {});
    const run = await demo({ RESERVE_DATA_DIR: dataDir, RESERVE_DB_PORT: String(ports.db), RESERVE_FUNCTIONS_PORT: String(ports.functions),
      RESERVE_SANDBOX_PORT: String(ports.sandbox) });
    expect(run.code, run.out).toBe(0);
    expect(run.out).toContain(`using the stack that is running (functions http://127.0.0.1:${ports.functions}, sandbox http://127.0.0.1:${ports.sandbox}`);
    expect(paid(run.out)).toBe(3);
    expect(run.out).toMatch(/0002 -> requires_payment_method; 4242 -> succeeded/);
    // the stack it used holds the bookings it made
    const deliveries = (await (await fetch(`${stack.sandbox!.url}/_sandbox/deliveries`)).json()) as { type: string; status: number }[];
    expect(deliveries.filter((d) => d.type === "payment_intent.succeeded" && d.status === 200)).toHaveLength(1);
    await stack.stop();
    stack = undefined;
  }, 180_000);

  it("starts its own stack when none is up, and says so", async () => {
    const run = await demo({ RESERVE_DB_PORT: String(await freePort()), RESERVE_FUNCTIONS_PORT: String(await freePort()),
      RESERVE_SANDBOX_PORT: String(await freePort()) });
    expect(run.code, run.out).toBe(0);
    expect(run.out).toContain("no stack answers on the configured ports; starting one of its own");
    expect(paid(run.out)).toBe(3);
  }, 180_000);
});
