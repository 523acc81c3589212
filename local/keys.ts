// Local API keys: HS256 JWTs for the anon and service_role roles, signed with the local JWT secret,
// as `supabase start` prints them. Never used against a real project.
import { createHmac } from "node:crypto";

export const DEFAULT_LOCAL_JWT_SECRET = "reserve-connect-local-jwt-secret-at-least-32-chars";

function b64url(data: string | Buffer): string {
  return Buffer.from(data).toString("base64url");
}

export function signJwt(claims: Record<string, unknown>, secret: string): string {
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

export function localKeys(secret: string): { anon: string; serviceRole: string } {
  const iat = 1_700_000_000;
  const exp = iat + 10 * 365 * 24 * 3600;
  return {
    anon: signJwt({ iss: "supabase-local", role: "anon", iat, exp }, secret),
    serviceRole: signJwt({ iss: "supabase-local", role: "service_role", iat, exp }, secret),
  };
}
