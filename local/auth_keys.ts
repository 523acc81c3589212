// The local stand-in for Supabase Auth's JWT signing keys: one ES256 key pair kept under the data dir
// (<data dir>/auth/signing_key.json, made on first use), its public half published by the gateway at
// /auth/v1/.well-known/jwks.json, and user access tokens signed with it carrying the claims Supabase
// Auth puts in one. Local runner, `npm run token` and tests only: a real project signs its own.
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomUUID, sign, type KeyObject } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";

export interface SigningKey {
  kid: string;
  alg: "ES256" | "RS256";
  privateKey: KeyObject;
  /** the public JWK as a JWKS lists it (kid, alg, use) */
  publicJwk: Record<string, unknown>;
}

export interface Jwks {
  keys: Record<string, unknown>[];
}

function fromPrivateJwk(jwk: Record<string, unknown>): SigningKey {
  const privateKey = createPrivateKey({ key: jwk as never, format: "jwk" });
  const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...pub } = createPublicKey(privateKey).export({ format: "jwk" }) as Record<string, unknown>;
  const alg = jwk.alg === "RS256" ? "RS256" : "ES256";
  return { kid: String(jwk.kid), alg, privateKey, publicJwk: { ...pub, kid: jwk.kid, alg, use: "sig", key_ops: ["verify"] } };
}

/** A new key pair: ES256 (Supabase's default for new signing keys) or RS256. */
export function newSigningKey(alg: "ES256" | "RS256" = "ES256"): SigningKey {
  const { privateKey } = alg === "ES256"
    ? generateKeyPairSync("ec", { namedCurve: "P-256" })
    : generateKeyPairSync("rsa", { modulusLength: 2048 });
  const jwk = { ...(privateKey.export({ format: "jwk" }) as Record<string, unknown>), kid: randomUUID(), alg };
  return fromPrivateJwk(jwk);
}

export const signingKeyFile = (dataDir: string) => path.join(dataDir, "auth", "signing_key.json");

/** The data dir's signing key, made (and written readable by its owner only) when there is none. */
export function loadOrCreateSigningKey(dataDir: string): SigningKey {
  const file = signingKeyFile(dataDir);
  if (existsSync(file)) return fromPrivateJwk(JSON.parse(readFileSync(file, "utf8")));
  const key = newSigningKey("ES256");
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const jwk = { ...(key.privateKey.export({ format: "jwk" }) as Record<string, unknown>), kid: key.kid, alg: key.alg };
  writeFileSync(file, JSON.stringify(jwk, null, 2) + "\n", { mode: 0o600, flag: "wx" });
  chmodSync(file, 0o600);
  return key;
}

export const jwksOf = (...keys: SigningKey[]): Jwks => ({ keys: keys.map((k) => k.publicJwk) });

const b64url = (data: string | Buffer) => Buffer.from(data).toString("base64url");

/** A JWT signed with the key (ES256 as IEEE P1363 r||s, as JWS wants; or RS256), header kid included. */
export function signWithKey(claims: Record<string, unknown>, key: SigningKey, header: Record<string, unknown> = {}): string {
  const head = b64url(JSON.stringify({ alg: key.alg, kid: key.kid, typ: "JWT", ...header }));
  const body = b64url(JSON.stringify(claims));
  const input = Buffer.from(`${head}.${body}`);
  const sig = key.alg === "ES256"
    ? sign("sha256", input, { key: key.privateKey, dsaEncoding: "ieee-p1363" })
    : sign("sha256", input, key.privateKey);
  return `${head}.${body}.${b64url(sig)}`;
}

/** The issuer of the local stack's tokens: its auth path on the functions port, as a project's is. */
export const localIssuer = (functionsPort: number) => `http://127.0.0.1:${functionsPort}/auth/v1`;

export interface UserTokenOptions {
  email: string;
  sub?: string;
  issuer: string;
  /** seconds; Supabase Auth's default is 3600 */
  expiresIn?: number;
  /** app_metadata.reserve_role = operator (what an operator's account carries) */
  operator?: boolean;
  now?: number;
}

/** The claims of a Supabase Auth access token for an e-mail user signed in with a password. */
export function userClaims(o: UserTokenOptions): Record<string, unknown> {
  const iat = Math.floor((o.now ?? Date.now()) / 1000);
  return {
    iss: o.issuer,
    sub: o.sub ?? randomUUID(),
    aud: "authenticated",
    exp: iat + (o.expiresIn ?? 3600),
    iat,
    email: o.email,
    phone: "",
    app_metadata: { provider: "email", providers: ["email"], ...(o.operator && { reserve_role: "operator" }) },
    user_metadata: { email: o.email, email_verified: true },
    role: "authenticated",
    aal: "aal1",
    amr: [{ method: "password", timestamp: iat }],
    session_id: randomUUID(),
    is_anonymous: false,
  };
}

/** A user access token as Supabase Auth issues one, signed with the key. */
export function signUserToken(key: SigningKey, o: UserTokenOptions): string {
  return signWithKey(userClaims(o), key);
}
