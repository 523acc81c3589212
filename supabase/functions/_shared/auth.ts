// Who is calling, proven in the function itself: the bearer token's signature, expiry, not-before,
// audience and issuer are checked here with jose, not trusted from a relay. Supabase recommends this with
// its JWT signing keys (verify_jwt is tied to the legacy secret), so every function is verify_jwt = false.
//
// Keys, as Supabase Auth signs:
// - asymmetric signing keys (ES256, RS256) from the project's JWKS: SUPABASE_JWKS (inline JSON, for a
//   self-hosted or test setup) or <SUPABASE_URL>/auth/v1/.well-known/jwks.json, fetched and cached;
// - the legacy HS256 secret: SUPABASE_JWT_SECRET, else RESERVE_JWT_SECRET (the local stack's).
// The key follows from the token's `alg`: an HS256 token is checked against the secret only and an
// ES256/RS256 token against the JWKS only, so a token "signed" with a public key as an HMAC secret (alg
// confusion) or with alg none never verifies.
//
// User tokens (role authenticated) must say aud = authenticated, carry a sub, and come from
// RESERVE_JWT_ISSUER when that is set. The API keys (role anon or service_role) carry no aud and a
// platform issuer; their signature and expiry are what is checked.
import { createLocalJWKSet, createRemoteJWKSet, decodeJwt, decodeProtectedHeader, errors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from "jose";
import { errorJson } from "./http.ts";
import { BIDI_CONTROLS, CONTROL_CHARS, emailAddress } from "./text_fields.ts";

const TOKEN_EMAIL = emailAddress();

export const USER_AUDIENCE = "authenticated";
/** Where Supabase Auth publishes a project's public signing keys, under the project URL. */
export const JWKS_PATH = "/auth/v1/.well-known/jwks.json";
/** The app_metadata claim that makes a user an operator (app_metadata is writable by the service role only). */
export const OPERATOR_ROLE_CLAIM = "reserve_role";
export const OPERATOR_ROLE = "operator";

const ASYMMETRIC_ALGS = ["ES256", "RS256"];
const MAX_TOKEN_CHARS = 8192;
// the rate limits' bucket holds "checkout:client:" and the sub in 300 characters
const MAX_SUB_CHARS = 255;

export interface AuthConfig {
  /** resolves an ES256/RS256 token's key from the JWKS; undefined: no asymmetric keys configured */
  jwks?: JWTVerifyGetKey;
  /** the legacy HS256 secret; undefined: HS256 tokens are refused */
  legacySecret?: Uint8Array;
  /** the `iss` every user token must carry (RESERVE_JWT_ISSUER); undefined: not checked */
  issuer?: string;
}

export type Claims = JWTPayload & Record<string, unknown>;

/** A caller whose token verified. */
export type Caller =
  | { kind: "user"; sub: string; email?: string; claims: Claims }
  | { kind: "service_role"; claims: Claims }
  | { kind: "anon"; claims: Claims };

/** A proven operator: a verified user token whose app_metadata.reserve_role is operator. */
export interface Operator {
  sub: string;
  email?: string;
}

/** Why a caller is refused; `response()` is the JSON answer (401, 403 or 503). */
export class AuthRefusal {
  constructor(
    readonly status: 401 | 403 | 503,
    readonly error: "invalid_jwt" | "sign_in_required" | "not_an_operator" | "auth_unavailable",
    /** what failed, for clients and tests: missing, malformed, unsupported_alg, unknown_key, bad_signature, expired, not_yet_valid, missing_claim, invalid_claim, wrong_audience, wrong_issuer, ... */
    readonly reason: string,
    readonly message: string,
  ) {}

  response(): Response {
    const res = errorJson(this.status, this.error, this.message, { reason: this.reason });
    if (this.status === 401) res.headers.set("www-authenticate", `Bearer error="invalid_token"`);
    return res;
  }
}

type Env = (name: string) => string | undefined;
const denoEnv: Env = (name) => (globalThis as { Deno?: { env: { get(n: string): string | undefined } } }).Deno?.env.get(name);

/** The keys and issuer from the environment (see the top of this file). Throws on an unreadable SUPABASE_JWKS. */
export function authConfigFromEnv(env: Env = denoEnv): AuthConfig {
  const inline = env("SUPABASE_JWKS");
  const url = env("SUPABASE_URL");
  let jwks: JWTVerifyGetKey | undefined;
  if (inline) {
    const parsed = JSON.parse(inline);
    jwks = createLocalJWKSet(Array.isArray(parsed) ? { keys: parsed } : parsed);
  } else if (url) {
    // cached for 10 minutes; a token with an unknown kid refetches at most every 30 s (a rotated key)
    const remote = createRemoteJWKSet(new URL(JWKS_PATH, url), { timeoutDuration: 5000, cooldownDuration: 30_000, cacheMaxAge: 600_000 });
    jwks = async (header, token) => {
      try {
        return await remote(header, token);
      } catch (err) {
        // what the token's header asks of the keys is the token's; anything else (a 500, an HTML page, a
        // set jose cannot read) is Auth's JWKS failing, which says nothing of the token
        if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys || err instanceof errors.JOSEAlgNotAllowed) throw err;
        throw new JwksUnavailable((err as Error)?.name ?? "error");
      }
    };
  }
  const secret = env("SUPABASE_JWT_SECRET") || env("RESERVE_JWT_SECRET");
  return {
    jwks,
    legacySecret: secret ? new TextEncoder().encode(secret) : undefined,
    issuer: env("RESERVE_JWT_ISSUER") || undefined,
  };
}

/** The project's JWKS could not be had (fetched, parsed or read). */
class JwksUnavailable extends Error {
  override name = "JwksUnavailable";
}

let fromEnv: AuthConfig | AuthRefusal | undefined;

/** This process's configuration, read once. */
function processConfig(): AuthConfig | AuthRefusal {
  if (!fromEnv) {
    try {
      fromEnv = authConfigFromEnv();
    } catch (err) {
      console.error(`auth: SUPABASE_JWKS is not a JSON Web Key Set (${(err as Error).name}); every token is refused`);
      fromEnv = new AuthRefusal(503, "auth_unavailable", "keys_misconfigured", "the function's signing keys are misconfigured");
    }
  }
  return fromEnv;
}

const invalid = (reason: string, message: string) => new AuthRefusal(401, "invalid_jwt", reason, message);

/** The token of `Authorization: Bearer <jwt>`, or a refusal. */
function bearerToken(authorization: string | null): string | AuthRefusal {
  if (!authorization) return invalid("missing", "send Authorization: Bearer <access token>");
  const token = authorization.match(/^Bearer +([A-Za-z0-9_.~+/=-]+)$/i)?.[1];
  if (!token) return invalid("malformed", "the Authorization header is not Bearer <jwt>");
  if (token.length > MAX_TOKEN_CHARS) return invalid("malformed", `the token is over ${MAX_TOKEN_CHARS} characters`);
  return token;
}

/** jose's verdicts, as a client can act on them. */
function refusalFor(err: unknown): AuthRefusal {
  if (err instanceof errors.JWTExpired) return invalid("expired", "the token has expired: get a new one");
  if (err instanceof errors.JWTClaimValidationFailed) {
    const claim = err.claim;
    if (claim === "nbf") return invalid("not_yet_valid", "the token is not valid yet (nbf is in the future)");
    if (claim === "aud") return invalid("wrong_audience", `the token is not for this API (aud must be ${USER_AUDIENCE})`);
    if (claim === "iss") return invalid("wrong_issuer", "the token was not issued by this project's auth");
    if (err.reason === "missing") return invalid("missing_claim", `the token has no ${claim} claim`);
    return invalid("invalid_claim", `the token's ${claim} claim is invalid: ${err.message}`);
  }
  if (err instanceof errors.JWKSNoMatchingKey) return invalid("unknown_key", "no signing key of this project has the token's kid");
  if (err instanceof errors.JWSSignatureVerificationFailed) return invalid("bad_signature", "the token's signature does not verify");
  if (err instanceof errors.JOSEAlgNotAllowed || err instanceof errors.JOSENotSupported) {
    return invalid("unsupported_alg", "the token's alg is not one this project signs with");
  }
  if (err instanceof JwksUnavailable || err instanceof errors.JWKSTimeout || err instanceof errors.JWKSInvalid || err instanceof TypeError) {
    // the project's JWKS could not be had: the token may be fine, so this is ours, not the caller's
    console.error(`auth: the JWKS could not be fetched (${err instanceof JwksUnavailable ? err.message : (err as Error).name})`);
    return new AuthRefusal(503, "auth_unavailable", "jwks_unavailable", "the project's signing keys could not be fetched; retry shortly");
  }
  if (err instanceof errors.JOSEError) return invalid("malformed", "the token is not a well-formed JWT");
  throw err;
}

/**
 * The caller the Authorization header proves, or why not. `config` defaults to the process's
 * environment (authConfigFromEnv).
 */
export async function verifyAuthorization(authorization: string | null, config?: AuthConfig): Promise<Caller | AuthRefusal> {
  const cfg = config ?? processConfig();
  if (cfg instanceof AuthRefusal) return cfg;
  const token = bearerToken(authorization);
  if (token instanceof AuthRefusal) return token;
  let alg: unknown;
  let unverified: Claims;
  try {
    alg = decodeProtectedHeader(token).alg;
    unverified = decodeJwt(token) as Claims;
  } catch {
    return invalid("malformed", "the token is not a well-formed JWT");
  }
  // what the token claims to be decides which checks apply; the signature then proves the claim
  const isUser = unverified.role === "authenticated";
  if (!isUser && unverified.role !== "anon" && unverified.role !== "service_role") {
    return invalid("invalid_claim", "the token's role must be authenticated, anon or service_role");
  }
  const checks = {
    requiredClaims: ["exp"],
    ...(isUser && { audience: USER_AUDIENCE, ...(cfg.issuer && { issuer: cfg.issuer }) }),
  };
  let claims: Claims;
  try {
    if (alg === "HS256" && cfg.legacySecret) {
      claims = (await jwtVerify(token, cfg.legacySecret, { ...checks, algorithms: ["HS256"] })).payload as Claims;
    } else if (typeof alg === "string" && ASYMMETRIC_ALGS.includes(alg) && cfg.jwks) {
      claims = (await jwtVerify(token, cfg.jwks, { ...checks, algorithms: ASYMMETRIC_ALGS })).payload as Claims;
    } else {
      return invalid("unsupported_alg", "the token's alg is not one this project signs with");
    }
  } catch (err) {
    return refusalFor(err);
  }
  if (claims.role === "service_role") return { kind: "service_role", claims };
  if (claims.role === "anon") return { kind: "anon", claims };
  const sub = claims.sub;
  if (typeof sub !== "string" || sub.length === 0 || sub.length > MAX_SUB_CHARS || CONTROL_CHARS.test(sub) || BIDI_CONTROLS.test(sub)) {
    return invalid("invalid_claim", `a user token needs a sub of 1 to ${MAX_SUB_CHARS} printable characters`);
  }
  // a claim like any input (a third-party issuer's especially): one that is no address is no email
  const email = typeof claims.email === "string" && TOKEN_EMAIL.safeParse(claims.email).success ? claims.email : undefined;
  return { kind: "user", sub, email, claims };
}

/** The caller of a request (see verifyAuthorization). */
export function verifyCaller(req: Request, config?: AuthConfig): Promise<Caller | AuthRefusal> {
  return verifyAuthorization(req.headers.get("authorization"), config);
}

/** True when verified claims make their user an operator. */
export function isOperatorClaims(claims: Claims): boolean {
  const meta = claims.app_metadata;
  return !!meta && typeof meta === "object" && (meta as Record<string, unknown>)[OPERATOR_ROLE_CLAIM] === OPERATOR_ROLE;
}

/**
 * The operator a request proves: a verified user token (ES256/RS256 or legacy HS256, as above) whose
 * app_metadata.reserve_role is operator. Anything else is refused: no token or a bad one 401, a valid
 * token of someone else (the service role included: it names nobody) 403 not_an_operator.
 */
export async function verifyOperator(req: Request, config?: AuthConfig): Promise<Operator | AuthRefusal> {
  const caller = await verifyCaller(req, config);
  if (caller instanceof AuthRefusal) return caller;
  if (caller.kind !== "user" || !isOperatorClaims(caller.claims)) {
    return new AuthRefusal(403, "not_an_operator", "not_an_operator",
      `this needs an operator's token (app_metadata.${OPERATOR_ROLE_CLAIM} = ${OPERATOR_ROLE})`);
  }
  return { sub: caller.sub, email: caller.email };
}
