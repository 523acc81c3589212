// npm run token -- --email guest@example.com [--sub <uuid>] [--operator] [--expires-in <seconds>]
//
// Prints a user access token as Supabase Auth issues one (ES256, kid, the claims of an e-mail user),
// signed with the local stack's signing key (made under the data dir if npm start has not made it yet),
// which the functions verify against the JWKS npm start publishes. --operator adds
// app_metadata.reserve_role = operator, what an operator's account carries. Use `npm run -s token` to
// get the token alone on stdout.
import { parseArgs } from "node:util";
import { loadOrCreateSigningKey, localIssuer, signUserToken } from "../local/auth_keys.ts";
import { configFromEnv } from "../local/stack.ts";
import { UUID_TEXT } from "../supabase/functions/_shared/uuid_text.ts";

const usage = "usage: npm run token -- --email <address> [--sub <uuid>] [--operator] [--expires-in <seconds>]";

function fail(message: string): never {
  console.error(`error: ${message}\n${usage}`);
  process.exit(2);
}

let values: { email?: string; sub?: string; operator?: boolean; "expires-in"?: string; help?: boolean };
try {
  ({ values } = parseArgs({
    options: {
      email: { type: "string" },
      sub: { type: "string" },
      operator: { type: "boolean" },
      "expires-in": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  }));
} catch (err) {
  fail((err as Error).message);
}
if (values.help) {
  console.log(usage);
  process.exit(0);
}
if (!values.email || !/^[^\s@]+@[^\s@]+$/.test(values.email)) fail("--email needs an e-mail address");
if (values.sub !== undefined && !UUID_TEXT.test(values.sub)) {
  fail("--sub must be a UUID, as Supabase Auth's user ids are");
}
const expiresIn = values["expires-in"] === undefined ? 3600 : Number(values["expires-in"]);
if (!Number.isInteger(expiresIn) || expiresIn < 1) fail("--expires-in must be a whole number of seconds");

const cfg = configFromEnv();
const key = loadOrCreateSigningKey(cfg.dataDir);
console.log(signUserToken(key, {
  email: values.email, sub: values.sub, operator: values.operator ?? false, expiresIn, issuer: localIssuer(cfg.functionsPort),
}));
