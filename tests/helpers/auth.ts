// The signing key a test's functions trust, as npm start's: an ES256 key whose public JWKS the gateway
// publishes at /auth/v1/.well-known/jwks.json and the functions fetch from SUPABASE_URL.
import { jwksOf, localIssuer, newSigningKey, signUserToken, type SigningKey } from "../../local/auth_keys.ts";

/** One key per test file (per worker): made once, trusted by every gateway the file starts. */
export const testSigningKey: SigningKey = newSigningKey("ES256");

/** What the gateway on `port` needs to publish the key and check user tokens' issuer. */
export function authEnv(port: number, key: SigningKey = testSigningKey): Record<string, string> {
  return {
    SUPABASE_URL: `http://127.0.0.1:${port}`,
    RESERVE_AUTH_JWKS: JSON.stringify(jwksOf(key)),
    RESERVE_JWT_ISSUER: localIssuer(port),
  };
}

/** A signed-in user's access token for the gateway on `port`, as Supabase Auth issues one. */
export function userTokenFor(port: number, sub?: string, email = "guest@example.com", operator = false): string {
  return signUserToken(testSigningKey, { email, sub, operator, issuer: localIssuer(port) });
}
