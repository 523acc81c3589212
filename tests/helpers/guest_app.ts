// A guest's app against the stack `npm start` runs (local/stack.ts): a signed-in user's token, a
// supabase-js client that sends it, the typed Reserve client on top, and the sandbox's HTTP control API
// to pay as the guest's bank would. No vitest imports: bench:guest uses it too.
import { randomUUID } from "node:crypto";
import { rm } from "node:fs/promises";
import { createClient } from "@supabase/supabase-js";
import postgres from "postgres";
import WebSocket from "ws";
import { reserveClient, type ReserveClient, type ReserveClientOptions } from "../../client/reserve_client.ts";
import { localIssuer } from "../../local/auth_keys.ts";
import { DEFAULT_LOCAL_JWT_SECRET, signJwt } from "../../local/keys.ts";
import { freePort } from "../../local/ports.ts";
import { tempClusterDir } from "../../local/postgres.ts";
import { startStack, type Stack } from "../../local/stack.ts";

/** The issuer of the stack this process started last: the functions check a token's `iss` against it. */
let stackIssuer: string | undefined;

/**
 * A signed-in guest's access token as Supabase Auth issues one (role authenticated, aud authenticated,
 * sub = the user's id, iss = the stack's auth), signed with the local stack's legacy HS256 secret.
 */
export function guestToken(sub: string = randomUUID(), opts: { email?: string; secret?: string; expiresInS?: number } = {}): string {
  return signJwt({
    iss: stackIssuer, sub, email: opts.email ?? "guest@example.com", role: "authenticated", aud: "authenticated",
    iat: Math.floor(Date.now() / 1000), exp: Math.floor(Date.now() / 1000) + (opts.expiresInS ?? 3600),
  }, opts.secret ?? DEFAULT_LOCAL_JWT_SECRET);
}

export interface GuestStack {
  stack: Stack;
  /** the project URL an app gives createClient (the functions are under /functions/v1) */
  url: string;
  anonKey: string;
  sandboxUrl: string;
  sql: postgres.Sql;
  /** a typed client for a guest signed in with this token */
  guest(token?: string, opts?: ReserveClientOptions): ReserveClient;
  /** POST /_sandbox/<method> with its arguments: the sandbox's HTTP control API */
  sandbox(method: string, ...args: unknown[]): Promise<unknown>;
  /** a unit of the seed and free dates for a stay of `nights` nights (each call new dates) */
  freeStay(nights?: 1 | 2): Promise<{ unit_id: string; check_in: string; check_out: string }>;
  stop(): Promise<void>;
}

export async function startGuestStack(opts: { log?: (line: string) => void } = {}): Promise<GuestStack> {
  const dataDir = await tempClusterDir("reserve-guest-");
  const functionsPort = await freePort();
  stackIssuer = localIssuer(functionsPort);
  let stack: Stack;
  try {
    stack = await startStack({
      dataDir, dbPort: await freePort(), functionsPort, jwtSecret: DEFAULT_LOCAL_JWT_SECRET,
      seed: true, sandbox: true, sandboxPort: await freePort(), cronSecret: `guest-${randomUUID()}`, pollEveryMs: 0,
    }, opts.log ?? (() => {}));
  } catch (err) {
    await rm(dataDir, { recursive: true, force: true });
    throw err;
  }
  const sql = postgres(stack.databaseUrl, { max: 2, onnotice: () => {} });
  const sandboxUrl = stack.sandbox!.url;
  let nextOffset = 0;
  const units = await sql<{ id: string }[]>`
    select u.id from reserve.unit_map u join reserve.properties_map p on p.id = u.property_id
    where u.is_active and u.max_occupancy >= 2 and u.min_nights <= 2 order by p.city_code, u.name`;
  return {
    stack, url: stack.functions.url, anonKey: stack.keys.anon, sandboxUrl, sql,
    guest(token = guestToken(), clientOpts = {}) {
      // accessToken: the app's own sign-in hands supabase-js the user's token for every call; Node 20 has
      // no WebSocket of its own for supabase-js's realtime client (never opened here, but built)
      return reserveClient(createClient(stack.functions.url, stack.keys.anon, {
        accessToken: async () => token, realtime: { transport: WebSocket as never },
      }), clientOpts);
    },
    async sandbox(method, ...args) {
      const res = await fetch(`${sandboxUrl}/_sandbox/${method}`, {
        method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(args),
      });
      const body = await res.json().catch(() => undefined);
      if (!res.ok) throw new Error(`sandbox ${method} answered ${res.status}: ${JSON.stringify(body)}`);
      return body;
    },
    async freeStay(nights: 1 | 2 = 2) {
      // units in turn, each a week later than the one before, so stays never meet
      const i = nextOffset++;
      const unit = units[i % units.length]!;
      const from = 7 + Math.floor(i / units.length) * (nights + 1);
      const [d] = await sql<{ check_in: string; check_out: string }[]>`
        select to_char(current_date + ${from}::int, 'YYYY-MM-DD') as check_in,
               to_char(current_date + ${from + nights}::int, 'YYYY-MM-DD') as check_out`;
      return { unit_id: unit.id, ...d! };
    },
    async stop() {
      await sql.end();
      await stack.stop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
