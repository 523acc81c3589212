// The functions prove their caller themselves (_shared/auth.ts, jose): real Deno over HTTP, real ES256,
// RS256 and HS256 signatures, the JWKS fetched from the gateway's /auth/v1/.well-known/jwks.json (as a
// project's is from SUPABASE_URL) or given inline (SUPABASE_JWKS). A refused token is a 401 naming what
// failed, before the body is read: nothing reaches the database. An accepted one gets as far as the
// body's check (a 400 naming the missing fields), which is how these tests tell the two apart.
import { createHmac, createPublicKey } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jwksOf, localIssuer, newSigningKey, signWithKey, userClaims } from "../../local/auth_keys.ts";
import { DEFAULT_LOCAL_JWT_SECRET, localKeys, signJwt } from "../../local/keys.ts";
import { freePort } from "../../local/ports.ts";
import type { FunctionsServer } from "../../local/functions.ts";
import { testSigningKey } from "../helpers/auth.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { startTestFunctions } from "../helpers/functions.ts";

let db: TestDatabase;
let fetched: FunctionsServer; // JWKS fetched from its own /auth/v1/.well-known/jwks.json
let inline: FunctionsServer; // SUPABASE_JWKS inline: an RS256 and another ES256 key
let unreachable: FunctionsServer; // SUPABASE_URL where nothing listens
let failing: FunctionsServer; // SUPABASE_URL whose JWKS answers 500
let maintenance: FunctionsServer; // SUPABASE_URL whose JWKS answers 200 with an HTML page
let auths: http.Server[] = []; // the Auth of those two
const rsKey = newSigningKey("RS256");
const otherEsKey = newSigningKey("ES256");
const now = () => Math.floor(Date.now() / 1000);

beforeAll(async () => {
  db = await createTestDatabase();
  const authAnswering = async (status: number, type: string, body: string) => {
    const server = http.createServer((_req, res) => { res.writeHead(status, { "content-type": type }).end(body); });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    auths.push(server);
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  };
  const down = await authAnswering(500, "application/json", '{"message":"internal"}');
  const html = await authAnswering(200, "text/html", "<html><body>Down for maintenance</body></html>");
  [fetched, inline, unreachable, failing, maintenance] = await Promise.all([
    startTestFunctions(db.url),
    startTestFunctions(db.url, { SUPABASE_JWKS: JSON.stringify(jwksOf(rsKey, otherEsKey)), RESERVE_JWT_ISSUER: "" }),
    freePort().then((p) => startTestFunctions(db.url, { SUPABASE_URL: `http://127.0.0.1:${p}` })),
    startTestFunctions(db.url, { SUPABASE_URL: down }),
    startTestFunctions(db.url, { SUPABASE_URL: html }),
  ]);
}, 60_000);

afterAll(async () => {
  await Promise.all([fetched, inline, unreachable, failing, maintenance].map((f) => f?.stop()));
  for (const a of auths) {
    a.closeAllConnections();
    a.close();
  }
  await db?.drop();
});

const port = (f: FunctionsServer) => Number(new URL(f.url).port);
/** Supabase Auth's claims for the gateway's issuer, with some replaced (undefined removes one). */
const claimsFor = (f: FunctionsServer, over: Record<string, unknown> = {}) => {
  const c: Record<string, unknown> = { ...userClaims({ email: "guest@example.com", issuer: localIssuer(port(f)) }), ...over };
  for (const k of Object.keys(c)) if (c[k] === undefined) delete c[k];
  return c;
};
const b64 = (v: unknown) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");

async function counts() {
  const [c] = await db.sql`select (select count(*) from reserve.booking_intents)::int as intents,
                                  (select count(*) from reserve.payments)::int as payments,
                                  (select count(*) from reserve.rate_limit_counters)::int as counters`;
  return c;
}

async function checkoutWith(f: FunctionsServer, authorization?: string) {
  const res = await fetch(f.functionUrl("checkout"), {
    method: "POST",
    headers: { "content-type": "application/json", ...(authorization !== undefined && { authorization }) },
    body: "{}",
  });
  return { status: res.status, body: await res.json(), headers: res.headers };
}

describe("hostile tokens are refused with 401 invalid_jwt and the reason; nothing is written", () => {
  const cases: [string, (f: FunctionsServer) => string | undefined, string][] = [
    ["no Authorization header", () => undefined, "missing"],
    ["not a bearer token", () => `Basic ${b64("a:b")}`, "malformed"],
    ["not a JWT", () => "Bearer not-a-jwt", "malformed"],
    ["a JWT whose parts are not JSON", () => `Bearer ${b64("x")}.${b64("y")}.${b64("z")}`, "malformed"],
    ["a token over 8 KB", (f) => `Bearer ${signWithKey(claimsFor(f, { pad: "x".repeat(9000) }), testSigningKey)}`, "malformed"],
    ["no exp (it would never expire)", (f) => `Bearer ${signWithKey(claimsFor(f, { exp: undefined }), testSigningKey)}`, "missing_claim"],
    ["exp as a string", (f) => `Bearer ${signWithKey(claimsFor(f, { exp: String(now() + 3600) }), testSigningKey)}`, "invalid_claim"],
    ["expired", (f) => `Bearer ${signWithKey(claimsFor(f, { exp: now() - 5 }), testSigningKey)}`, "expired"],
    ["nbf in the future", (f) => `Bearer ${signWithKey(claimsFor(f, { nbf: now() + 600 }), testSigningKey)}`, "not_yet_valid"],
    ["iat as a string", (f) => `Bearer ${signWithKey(claimsFor(f, { iat: "yesterday" }), testSigningKey)}`, "invalid_claim"],
    ["wrong aud", (f) => `Bearer ${signWithKey(claimsFor(f, { aud: "another-api" }), testSigningKey)}`, "wrong_audience"],
    ["no aud on a user token", (f) => `Bearer ${signWithKey(claimsFor(f, { aud: undefined }), testSigningKey)}`, "wrong_audience"],
    ["wrong iss", (f) => `Bearer ${signWithKey(claimsFor(f, { iss: "https://evil.example/auth/v1" }), testSigningKey)}`, "wrong_issuer"],
    ["an unknown role", (f) => `Bearer ${signWithKey(claimsFor(f, { role: "supabase_admin" }), testSigningKey)}`, "invalid_claim"],
    ["no sub on a user token", (f) => `Bearer ${signWithKey(claimsFor(f, { sub: undefined }), testSigningKey)}`, "invalid_claim"],
    ["a sub of 300 characters", (f) => `Bearer ${signWithKey(claimsFor(f, { sub: "s".repeat(300) }), testSigningKey)}`, "invalid_claim"],
    ["a sub with a control character", (f) => `Bearer ${signWithKey(claimsFor(f, { sub: "a\u001b[31mb" }), testSigningKey)}`, "invalid_claim"],
    ["alg none", (f) => `Bearer ${b64({ alg: "none", typ: "JWT" })}.${b64(claimsFor(f))}.`, "unsupported_alg"],
    ["HS512", (f) => {
      const head = b64({ alg: "HS512", typ: "JWT" });
      const body = b64(claimsFor(f));
      return `Bearer ${head}.${body}.${createHmac("sha512", DEFAULT_LOCAL_JWT_SECRET).update(`${head}.${body}`).digest("base64url")}`;
    }, "unsupported_alg"],
    ["HS256 signed with the public key as the secret (alg confusion)", (f) => {
      const pem = createPublicKey(testSigningKey.privateKey).export({ type: "spki", format: "pem" }).toString();
      const head = b64({ alg: "HS256", typ: "JWT", kid: testSigningKey.kid });
      const body = b64(claimsFor(f));
      return `Bearer ${head}.${body}.${createHmac("sha256", pem).update(`${head}.${body}`).digest("base64url")}`;
    }, "bad_signature"],
    ["HS256 with another secret", (f) => `Bearer ${signJwt(claimsFor(f), "another-secret-of-at-least-32-characters")}`, "bad_signature"],
    ["an unknown kid", (f) => `Bearer ${signWithKey(claimsFor(f), newSigningKey("ES256"))}`, "unknown_key"],
    ["a tampered payload", (f) => {
      const [h, , s] = signWithKey(claimsFor(f), testSigningKey).split(".");
      return `Bearer ${h}.${b64(claimsFor(f, { sub: "someone-else" }))}.${s}`;
    }, "bad_signature"],
    ["a valid signature under another key's kid", (f) => {
      const t = signWithKey(claimsFor(f), otherEsKey, { kid: testSigningKey.kid });
      return `Bearer ${t}`;
    }, "bad_signature"],
  ];

  it.each(cases)("%s", async (_what, token, reason) => {
    const before = await counts();
    const res = await checkoutWith(fetched, token(fetched));
    expect(res.status, JSON.stringify(res.body)).toBe(401);
    expect(res.body).toMatchObject({ error: "invalid_jwt", reason });
    expect(res.headers.get("access-control-allow-origin")).toBe("*");
    expect(await counts()).toEqual(before);
  });

  it("counts the hostile token classes it covers", () => {
    expect(new Set(cases.map(([what]) => what)).size).toBe(cases.length);
    expect(cases.length).toBeGreaterThanOrEqual(24);
  });
});

describe("tokens Supabase issues are accepted", () => {
  it("ES256 from the JWKS the gateway publishes, fetched from SUPABASE_URL as a project's", async () => {
    const jwks = await fetch(`${fetched.url}/auth/v1/.well-known/jwks.json`);
    expect(jwks.status).toBe(200);
    expect(await jwks.json()).toEqual(jwksOf(testSigningKey));
    const res = await checkoutWith(fetched, `Bearer ${signWithKey(claimsFor(fetched), testSigningKey)}`);
    expect(res.status, JSON.stringify(res.body)).toBe(400);
    expect(res.body.error).toBe("invalid_request");
  });

  it("RS256 and ES256 from an inline SUPABASE_JWKS; a key it does not list is unknown there", async () => {
    for (const key of [rsKey, otherEsKey]) {
      const res = await checkoutWith(inline, `Bearer ${signWithKey(claimsFor(inline), key)}`);
      expect(res.status, `${key.alg} ${JSON.stringify(res.body)}`).toBe(400);
    }
    const foreign = await checkoutWith(inline, `Bearer ${signWithKey(claimsFor(inline), testSigningKey)}`);
    expect(foreign.body).toMatchObject({ error: "invalid_jwt", reason: "unknown_key" });
  });

  it("the legacy HS256 secret, for user tokens and the API keys; the anon key is no user", async () => {
    const legacy = await checkoutWith(fetched, `Bearer ${signJwt(claimsFor(fetched), DEFAULT_LOCAL_JWT_SECRET)}`);
    expect(legacy.status, JSON.stringify(legacy.body)).toBe(400);
    const service = await checkoutWith(fetched, `Bearer ${localKeys(DEFAULT_LOCAL_JWT_SECRET).serviceRole}`);
    expect(service.status, JSON.stringify(service.body)).toBe(400);
    const anon = await checkoutWith(fetched, `Bearer ${localKeys(DEFAULT_LOCAL_JWT_SECRET).anon}`);
    expect(anon.status).toBe(401);
    expect(anon.body.error).toBe("sign_in_required");
  });

  it("a project's JWKS that cannot be fetched is a 503, not the caller's fault; the legacy secret still works", async () => {
    const before = await counts();
    const res = await checkoutWith(unreachable, `Bearer ${signWithKey(claimsFor(unreachable), testSigningKey)}`);
    expect(res.status, JSON.stringify(res.body)).toBe(503);
    expect(res.body).toMatchObject({ error: "auth_unavailable", reason: "jwks_unavailable" });
    expect(await counts()).toEqual(before);
    const legacy = await checkoutWith(unreachable, `Bearer ${signJwt(claimsFor(unreachable), DEFAULT_LOCAL_JWT_SECRET)}`);
    expect(legacy.status).toBe(400);
  });

  it("so is a JWKS answered with a 500 or an HTML maintenance page: a 401 would sign the guest out", async () => {
    for (const f of [failing, maintenance]) {
      const res = await checkoutWith(f, `Bearer ${signWithKey(claimsFor(f), testSigningKey)}`);
      expect(res.status, JSON.stringify(res.body)).toBe(503);
      expect(res.body).toMatchObject({ error: "auth_unavailable", reason: "jwks_unavailable" });
    }
  });
});
