// The whole payment path for a test file: its own database, the provider sandbox, and the edge
// functions under real Deno, wired as `npm start` wires them.
import { randomUUID } from "node:crypto";
import { startFunctions, type FunctionsServer } from "../../local/functions.ts";
import { opsConsoleDbUrl } from "../../local/ops_console_login.ts";
import { DEFAULT_LOCAL_JWT_SECRET } from "../../local/keys.ts";
import { freePort } from "../../local/ports.ts";
import { newCronSecret, sandboxEnv } from "../../local/provider_env.ts";
import { startProviderSandbox, type ProviderSandbox } from "../../local/sandbox/index.ts";
import { authEnv, userTokenFor } from "./auth.ts";
import { createTestDatabase, type TestDatabase } from "./db.ts";

export interface E2E {
  db: TestDatabase;
  sandbox: ProviderSandbox;
  functions: FunctionsServer;
  cronSecret: string;
  logs: string[];
  url(fn: string): string;
  /** a signed-in guest's token (sub = the client the rate limits count): ES256, from the published JWKS */
  userToken(sub?: string, email?: string): string;
  post(fn: string, body: unknown, headers?: Record<string, string>): Promise<{ status: number; body: any; headers: Headers }>;
  checkout(body: Record<string, unknown>, token?: string): Promise<{ status: number; body: any; headers: Headers }>;
  /** runs the poller as cron does, after making every poll due now (or only those of `only`) */
  poll(body?: Record<string, unknown>, only?: string[]): Promise<{ status: number; body: any }>;
  stop(): Promise<void>;
}

export async function startE2E(opts: { pixProvider?: "mercadopago" | "openpix"; env?: Record<string, string> } = {}): Promise<E2E> {
  const db = await createTestDatabase();
  const port = await freePort();
  const base = `http://127.0.0.1:${port}/functions/v1`;
  const logs: string[] = [];
  const sandbox = await startProviderSandbox({
    stripeWebhookUrl: `${base}/webhook_stripe`,
    openpixWebhookUrl: `${base}/webhook_pix/openpix`,
    log: (l) => logs.push(`[sandbox] ${l}`),
  });
  const cronSecret = newCronSecret();
  let functions: FunctionsServer;
  try {
    functions = await startFunctions({
      port,
      env: {
        SUPABASE_DB_URL: db.url,
        RESERVE_OPS_DB_URL: opsConsoleDbUrl(db.url),
        ...authEnv(port),
        RESERVE_JWT_SECRET: DEFAULT_LOCAL_JWT_SECRET,
        RESERVE_CRON_SECRET: cronSecret,
        PIX_PROVIDER: opts.pixProvider ?? "mercadopago",
        ...sandboxEnv(sandbox),
        ...opts.env,
      },
      onLog: (l) => logs.push(l),
    });
  } catch (err) {
    await sandbox.stop();
    await db.drop();
    throw new Error(`${(err as Error).message}\n${logs.join("\n")}`);
  }
  const url = (fn: string) => `${base}/${fn}`;
  const post = async (fn: string, body: unknown, headers: Record<string, string> = {}) => {
    const res = await fetch(url(fn), {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: typeof body === "string" ? body : JSON.stringify(body),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch { /* not JSON: keep the text */ }
    return { status: res.status, body: parsed as any, headers: res.headers };
  };
  const userToken = (sub = randomUUID(), email = "guest@example.com") => userTokenFor(port, sub, email);
  return {
    db, sandbox, functions: functions!, cronSecret, logs, url, userToken, post,
    checkout: (body, token = userToken()) => post("checkout", body, { authorization: `Bearer ${token}` }),
    async poll(body = {}, only?: string[]) {
      await db.sql`update reserve.payment_polls
                   set next_poll_at = case when ${only ?? null}::uuid[] is null or payment_id = any(${only ?? null}::uuid[])
                                           then now() - interval '1 second' else now() + interval '1 hour' end`;
      const r = await post("poll_payment_status", body, { authorization: `Bearer ${cronSecret}` });
      return { status: r.status, body: r.body };
    },
    async stop() {
      await functions!.stop();
      await sandbox.stop();
      await db.drop();
    },
  };
}

/** Polls until check() is truthy: webhooks arrive asynchronously. */
export async function until<T>(check: () => Promise<T | undefined | null | false>, what: string, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
