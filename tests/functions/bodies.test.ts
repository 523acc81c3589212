// A request body as a hostile or broken client sends it, over a raw socket to real Deno: one that stalls
// (or declares more than it sends) is answered 408 within the read deadline instead of holding a worker
// for good; one whose connection ends mid-upload is a quiet 400 the function never logs as its failure.
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { FunctionsServer } from "../../local/functions.ts";
import { startFunctions } from "../../local/functions.ts";
import { freePort } from "../../local/ports.ts";
import { BODY_READ_TIMEOUT_MS } from "../../supabase/functions/_shared/http.ts";
import { authEnv } from "../helpers/auth.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { DEFAULT_LOCAL_JWT_SECRET } from "../../local/keys.ts";

let db: TestDatabase;
let f: FunctionsServer;
const logs: string[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
  const port = await freePort();
  f = await startFunctions({
    port, onLog: (l) => logs.push(l),
    env: { SUPABASE_DB_URL: db.url, ...authEnv(port), RESERVE_JWT_SECRET: DEFAULT_LOCAL_JWT_SECRET, STRIPE_WEBHOOK_SECRET: "whsec_test" },
  });
}, 60_000);

afterAll(async () => {
  await f?.stop();
  await db?.drop();
});

/** Sends the head and `sent` of the body, then waits for the answer (or ends the socket after `endAfterMs`). */
function rawPost(path: string, declared: number, sent: string, endAfterMs?: number): Promise<{ status: number; text: string; ms: number }> {
  const url = new URL(f.functionUrl(path));
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(url.port), url.hostname, () => {
      socket.write(`POST ${url.pathname} HTTP/1.1\r\nhost: ${url.host}\r\ncontent-type: application/json\r\ncontent-length: ${declared}\r\n` +
                   `stripe-signature: t=1,v1=00\r\n\r\n${sent}`);
      if (endAfterMs !== undefined) setTimeout(() => { socket.destroy(); resolve({ status: 0, text: "", ms: Date.now() - started }); }, endAfterMs);
    });
    let data = "";
    socket.on("data", (d) => {
      data += d.toString();
      const status = Number(data.match(/^HTTP\/1\.1 (\d{3})/)?.[1]);
      if (status && data.includes("\r\n\r\n")) {
        socket.destroy();
        resolve({ status, text: data, ms: Date.now() - started });
      }
    });
    socket.on("error", (err) => endAfterMs === undefined ? reject(err) : undefined);
  });
}

describe("a body that does not arrive", () => {
  it("one that stalls, declaring more than it sends, is 408 request_timeout within the deadline (an unauthenticated webhook door)", async () => {
    const res = await rawPost("webhook_stripe", 1000, '{"id":"evt_');
    expect(res.status).toBe(408);
    expect(res.text).toContain("request_timeout");
    expect(res.ms).toBeGreaterThanOrEqual(BODY_READ_TIMEOUT_MS - 500);
  }, BODY_READ_TIMEOUT_MS * 3);

  it("one whose client goes away mid-upload is never logged as the function's failure", async () => {
    const before = logs.length;
    await rawPost("webhook_stripe", 1000, '{"id":"evt_', 200);
    await rawPost("checkout", 1000, '{"unit_id":', 200);
    // the function still serves, and said nothing of an unhandled error
    expect((await fetch(f.functionUrl("health"))).status).toBeLessThan(500);
    expect(logs.slice(before).filter((l) => /unhandled error|BadResource|uncaught/i.test(l))).toEqual([]);
  });
});
