// The gateway's JWT check, for functions with verify_jwt = true, against the keys npm start prints.
import { describe, expect, it } from "vitest";
import { hmacKey, verifyJwt } from "../../supabase/functions/_shared/jwt.ts";
import { DEFAULT_LOCAL_JWT_SECRET, localKeys, signJwt } from "../../local/keys.ts";

const keys = localKeys(DEFAULT_LOCAL_JWT_SECRET);
const key = await hmacKey(DEFAULT_LOCAL_JWT_SECRET);

describe("verifyJwt", () => {
  it("accepts the anon and service_role keys", async () => {
    expect(await verifyJwt(`Bearer ${keys.anon}`, key)).toBe(true);
    expect(await verifyJwt(`bearer ${keys.serviceRole}`, key)).toBe(true);
  });

  it("refuses a missing, malformed, tampered, foreign, expired or unsigned token", async () => {
    const [h, , s] = keys.anon.split(".");
    const forged = Buffer.from(JSON.stringify({ role: "service_role" })).toString("base64url");
    const none = `${Buffer.from('{"alg":"none"}').toString("base64url")}.${forged}.`;
    for (const auth of [
      null,
      "",
      keys.anon,
      "Bearer not.a.jwt",
      `Bearer ${h}.${forged}.${s}`,
      `Bearer ${signJwt({ role: "anon" }, "another-secret-of-at-least-32-characters")}`,
      `Bearer ${signJwt({ role: "anon", exp: Math.floor(Date.now() / 1000) - 1 }, DEFAULT_LOCAL_JWT_SECRET)}`,
      `Bearer ${none}`,
    ]) {
      expect(await verifyJwt(auth, key), String(auth)).toBe(false);
    }
  });
});
