// `npm run token` prints a user access token as Supabase Auth issues one, signed with the data dir's
// ES256 key: it verifies (jose) against the JWKS npm start publishes, carries Auth's claims, and a
// function accepts it; --operator makes an operator verifyOperator proves.
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jwksOf, loadOrCreateSigningKey, localIssuer, signingKeyFile } from "../../local/auth_keys.ts";
import { DEFAULT_LOCAL_JWT_SECRET, localKeys } from "../../local/keys.ts";
import { projectRoot } from "../../local/migrate.ts";
import { AuthRefusal, verifyOperator } from "../../supabase/functions/_shared/auth.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/db.ts";
import { startTestFunctions } from "../helpers/functions.ts";

let dataDir: string;
let db: TestDatabase;
const FN_PORT = 54999; // only the issuer is derived from it: nothing listens there

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), "reserve-token-"));
  db = await createTestDatabase();
});

afterAll(async () => {
  await db?.drop();
  await rm(dataDir, { recursive: true, force: true });
});

function npmToken(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn("npm", ["run", "-s", "token", "--", ...args], {
      cwd: projectRoot,
      env: { ...process.env, RESERVE_DATA_DIR: dataDir, RESERVE_FUNCTIONS_PORT: String(FN_PORT) },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

describe("npm run token", () => {
  it("prints an ES256 user token with Auth's claims that verifies against the data dir's JWKS; the key file is its owner's", async () => {
    const sub = randomUUID();
    const run = await npmToken(["--email", "guest@example.com", "--sub", sub]);
    expect(run.code, run.stderr).toBe(0);
    const token = run.stdout.trim();
    expect(token.split(".")).toHaveLength(3);
    const key = loadOrCreateSigningKey(dataDir);
    expect(decodeProtectedHeader(token)).toEqual({ alg: "ES256", kid: key.kid, typ: "JWT" });
    const { payload } = await jwtVerify(token, createLocalJWKSet(jwksOf(key) as never), {
      audience: "authenticated", issuer: localIssuer(FN_PORT), requiredClaims: ["exp", "iat", "sub"],
    });
    expect(payload).toMatchObject({
      sub, email: "guest@example.com", role: "authenticated", aud: "authenticated", is_anonymous: false, aal: "aal1",
      app_metadata: { provider: "email", providers: ["email"] },
    });
    expect(payload.exp! - payload.iat!).toBe(3600);
    expect(typeof payload.session_id).toBe("string");
    expect((payload.app_metadata as Record<string, unknown>).reserve_role).toBeUndefined();
    expect((await stat(signingKeyFile(dataDir))).mode & 0o777).toBe(0o600);

    // the same key next time, and a function trusting its JWKS accepts the token
    const again = (await npmToken(["--email", "other@example.com"])).stdout.trim();
    expect(decodeProtectedHeader(again).kid).toBe(key.kid);
    const functions = await startTestFunctions(db.url, {
      RESERVE_AUTH_JWKS: JSON.stringify(jwksOf(key)), RESERVE_JWT_ISSUER: localIssuer(FN_PORT),
    });
    try {
      const res = await fetch(functions.functionUrl("checkout"), {
        method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: "{}",
      });
      expect(res.status).toBe(400); // past the token: the body's fields are what is missing
      expect((await res.json()).error).toBe("invalid_request");
    } finally {
      await functions.stop();
    }
  }, 180_000);

  it("--operator mints an operator verifyOperator proves; a guest and the service role are no operator", async () => {
    const operator = (await npmToken(["--operator", "--email", "ops@example.com"])).stdout.trim();
    const guest = (await npmToken(["--email", "guest@example.com"])).stdout.trim();
    const config = { jwks: createLocalJWKSet(jwksOf(loadOrCreateSigningKey(dataDir)) as never), issuer: localIssuer(FN_PORT),
                     legacySecret: new TextEncoder().encode(DEFAULT_LOCAL_JWT_SECRET) };
    const as = (token: string) => new Request("http://x/", { headers: { authorization: `Bearer ${token}` } });
    const proven = await verifyOperator(as(operator), config);
    expect(proven).not.toBeInstanceOf(AuthRefusal);
    expect(proven).toMatchObject({ email: "ops@example.com" });
    for (const token of [guest, localKeys(DEFAULT_LOCAL_JWT_SECRET).serviceRole]) {
      const refused = await verifyOperator(as(token), config);
      expect(refused).toBeInstanceOf(AuthRefusal);
      expect(refused).toMatchObject({ status: 403, error: "not_an_operator" });
    }
    expect(await verifyOperator(as(`${operator}x`), config)).toMatchObject({ status: 401, reason: "bad_signature" });
  }, 180_000);

  it("refuses a bad e-mail, a sub that is no UUID or an unknown option with exit 2", async () => {
    for (const args of [["--email", "nope"], ["--email", "a@b.co", "--sub", "x", "--bogus"]]) {
      const run = await npmToken(args);
      expect(run.code, args.join(" ")).toBe(2);
      expect(run.stdout).toBe("");
      expect(run.stderr).toContain("usage: npm run token");
    }
  }, 180_000);
});
