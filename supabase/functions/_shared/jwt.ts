// HS256 JWT verification with WebCrypto (Deno and Node alike), as Supabase's relay does for
// functions with verify_jwt = true.

function b64urlDecode(s: string): Uint8Array<ArrayBuffer> {
  const bin = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (s.length % 4)) % 4));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function hmacKey(secret: string): Promise<CryptoKey> {
  return crypto.subtle.importKey(
    "raw", new TextEncoder().encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["verify"]);
}

/** True for `Bearer <jwt>` signed with the key (HS256 only) and not expired. */
export async function verifyJwt(authorization: string | null, key: CryptoKey, now = Date.now()): Promise<boolean> {
  const token = authorization?.match(/^Bearer\s+(\S+)$/i)?.[1];
  const parts = token?.split(".");
  if (!parts || parts.length !== 3) return false;
  try {
    const header = JSON.parse(new TextDecoder().decode(b64urlDecode(parts[0])));
    if (header.alg !== "HS256") return false;
    const ok = await crypto.subtle.verify(
      "HMAC", key, b64urlDecode(parts[2]), new TextEncoder().encode(`${parts[0]}.${parts[1]}`));
    if (!ok) return false;
    const claims = JSON.parse(new TextDecoder().decode(b64urlDecode(parts[1])));
    return typeof claims.exp !== "number" || claims.exp * 1000 > now;
  } catch {
    return false;
  }
}

/**
 * The claims of a bearer token that the relay already verified (verify_jwt = true): read, not checked.
 * Undefined for anything that is not a JWT.
 */
export function bearerClaims(authorization: string | null): Record<string, unknown> | undefined {
  const parts = authorization?.match(/^Bearer\s+(\S+)$/i)?.[1]?.split(".");
  if (!parts || parts.length !== 3) return undefined;
  try {
    const claims = JSON.parse(new TextDecoder().decode(b64urlDecode(parts[1])));
    return claims && typeof claims === "object" ? claims : undefined;
  } catch {
    return undefined;
  }
}
