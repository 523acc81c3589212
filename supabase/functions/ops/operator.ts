// The operator a console request proves: a bearer token whose signature and expiry verify against the
// project's JWT secret (HS256, _shared/jwt.ts), with aud authenticated, a sub, and
// app_metadata.reserve_role = operator (app_metadata is writable by the service role only, so a user
// cannot grant it to themselves). The same shape as a general verifier: { sub, email } or a refusal.
import { errorJson } from "../_shared/http.ts";
import { bearerClaims, hmacKey, verifyJwt } from "../_shared/jwt.ts";

export interface Operator {
  sub: string;
  email?: string;
}

export class OperatorRefusal {
  constructor(readonly status: 401 | 403 | 500, readonly error: string, readonly message: string) {}
  response(): Response {
    const res = errorJson(this.status, this.error, this.message);
    if (this.status === 401) res.headers.set("www-authenticate", `Bearer error="invalid_token"`);
    return res;
  }
}

let key: { secret: string; key: Promise<CryptoKey> } | undefined;

export async function verifyOperator(req: Request): Promise<Operator | OperatorRefusal> {
  const secret = Deno.env.get("SUPABASE_JWT_SECRET") || Deno.env.get("RESERVE_JWT_SECRET");
  if (!secret) return new OperatorRefusal(500, "not_configured", "the JWT secret is not configured");
  if (key?.secret !== secret) key = { secret, key: hmacKey(secret) };
  const authorization = req.headers.get("authorization");
  if (!authorization || (authorization.length > 8192) || !(await verifyJwt(authorization, await key.key))) {
    return new OperatorRefusal(401, "invalid_jwt", "sign in with an operator token");
  }
  const claims = bearerClaims(authorization) ?? {};
  const meta = claims.app_metadata as Record<string, unknown> | undefined;
  const sub = typeof claims.sub === "string" ? claims.sub : "";
  if (claims.aud !== "authenticated" || !sub || sub.length > 255 || meta?.reserve_role !== "operator") {
    return new OperatorRefusal(403, "not_an_operator", "this needs an operator's token (app_metadata.reserve_role = operator)");
  }
  const email = typeof claims.email === "string" && claims.email.length <= 200 ? claims.email : undefined;
  return { sub, email };
}

/** The name recorded for an operator's actions: the email when the token has one, else the subject. */
export const operatorName = (o: Operator) => o.email ?? o.sub;
