// CORS as Supabase documents it for functions: a preflight is answered before any token is asked for,
// every answer (errors too) carries supabase-js's corsHeaders, and RESERVE_CORS_ORIGINS narrows the
// origins. Real Deno over HTTP; what a browser would do is asserted on the headers it reads.
import { corsHeaders } from "@supabase/supabase-js/cors";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { FunctionsServer } from "../../local/functions.ts";
import { userTokenFor } from "../helpers/auth.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { startTestFunctions } from "../helpers/functions.ts";

let db: TestDatabase;
let open: FunctionsServer; // RESERVE_CORS_ORIGINS unset: any origin
let listed: FunctionsServer; // two origins allowed
const APP = "https://app.example.com";
const DEV = "http://localhost:5173";

beforeAll(async () => {
  db = await createTestDatabase();
  [open, listed] = await Promise.all([
    startTestFunctions(db.url),
    startTestFunctions(db.url, { RESERVE_CORS_ORIGINS: `${APP}, ${DEV}/` }),
  ]);
}, 60_000);

afterAll(async () => {
  await Promise.all([open, listed].map((f) => f?.stop()));
  await db?.drop();
});

const port = (f: FunctionsServer) => Number(new URL(f.url).port);
const preflight = (f: FunctionsServer, fn: string, origin: string) => fetch(f.functionUrl(fn), {
  method: "OPTIONS",
  headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "authorization, x-client-info, apikey, content-type" },
});

describe("a call pinned to a region", () => {
  it("may send x-region (supabase-js does with functions.invoke's region): the preflight allows it", async () => {
    const res = await fetch(open.functionUrl("checkout"), { method: "OPTIONS", headers: { origin: APP, "access-control-request-method": "POST",
      "access-control-request-headers": "authorization, x-client-info, apikey, content-type, x-region" } });
    expect(res.status).toBe(200);
    const allowed = res.headers.get("access-control-allow-headers")!.split(",").map((h) => h.trim().toLowerCase());
    expect(allowed).toEqual(expect.arrayContaining(["authorization", "x-client-info", "apikey", "content-type", "x-region"]));
  });
});

describe("any origin (the local default)", () => {
  it.each(["checkout", "health", "poll_payment_status", "webhook_stripe"])("OPTIONS %s is 200 with the headers, no token asked", async (fn) => {
    const res = await preflight(open, fn, APP);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("ok");
    // supabase-js's own, with x-region added to the headers a call may send
    for (const [k, v] of Object.entries(corsHeaders)) {
      expect(res.headers.get(k), k).toBe(k.toLowerCase() === "access-control-allow-headers" ? `${v}, x-region` : v);
    }
    for (const h of ["authorization", "x-client-info", "apikey", "content-type"]) {
      expect(res.headers.get("access-control-allow-headers")).toContain(h);
    }
    expect(res.headers.get("access-control-allow-methods")).toContain("POST");
  });

  it("every answer carries them, errors included: 400, 401, 404, 405, 415, 500 and 503", async () => {
    const token = userTokenFor(port(open));
    const post = (fn: string, body: string, headers: Record<string, string> = {}) => fetch(open.functionUrl(fn), {
      method: "POST", headers: { origin: APP, "content-type": "application/json", ...headers }, body,
    });
    const answers: [number, Response][] = [
      [400, await post("checkout", "{}", { authorization: `Bearer ${token}` })],
      [401, await post("checkout", "{}")],
      [404, await post("no_such_function", "{}")],
      [405, await fetch(open.functionUrl("checkout"), { headers: { origin: APP } })],
      [415, await post("checkout", "{}", { authorization: `Bearer ${token}`, "content-type": "text/plain" })],
      // no RESERVE_CRON_SECRET in this gateway: the function says so
      [500, await post("poll_payment_status", "{}", { authorization: "Bearer x" })],
      // no provider configured in this gateway
      [503, await post("checkout", JSON.stringify({ unit_id: crypto.randomUUID(), check_in: "2030-01-02", check_out: "2030-01-04", guests: 1, method: "card" }),
        { authorization: `Bearer ${token}` })],
    ];
    for (const [status, res] of answers) {
      const body = await res.json();
      expect(res.status, JSON.stringify(body)).toBe(status);
      expect(res.headers.get("access-control-allow-origin"), String(status)).toBe("*");
      expect(res.headers.get("access-control-expose-headers"), String(status)).toContain("retry-after");
    }
  });
});

describe("RESERVE_CORS_ORIGINS lists the origins", () => {
  it("an allowed origin's preflight is echoed with Vary: Origin (a trailing slash in the setting is ignored)", async () => {
    for (const origin of [APP, DEV]) {
      const res = await preflight(listed, "checkout", origin);
      expect(res.status).toBe(200);
      expect(res.headers.get("access-control-allow-origin")).toBe(origin);
      expect(res.headers.get("vary")).toContain("Origin");
    }
  });

  it("another origin's preflight is 403 without Access-Control-Allow-Origin, and its requests get none", async () => {
    const res = await preflight(listed, "checkout", "https://evil.example");
    expect(res.status).toBe(403);
    expect(await res.json()).toMatchObject({ error: "origin_not_allowed" });
    expect(res.headers.get("access-control-allow-origin")).toBeNull();
    const post = await fetch(listed.functionUrl("checkout"), { method: "POST", headers: { origin: "https://evil.example", "content-type": "application/json" }, body: "{}" });
    expect(post.status).toBe(401);
    expect(post.headers.get("access-control-allow-origin")).toBeNull();
    expect(post.headers.get("vary")).toContain("Origin");
  });

  it("an allowed origin's error answers carry its origin; a request without an Origin (a server) gets none and still works", async () => {
    const token = userTokenFor(port(listed));
    const fromApp = await fetch(listed.functionUrl("checkout"), { method: "POST", headers: { origin: APP, "content-type": "application/json" }, body: "{}" });
    expect(fromApp.status).toBe(401);
    expect(fromApp.headers.get("access-control-allow-origin")).toBe(APP);
    const server = await fetch(listed.functionUrl("checkout"), {
      method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: "{}",
    });
    expect(server.status).toBe(400);
    expect(server.headers.get("access-control-allow-origin")).toBeNull();
  });
});
