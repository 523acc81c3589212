// The database client of the edge functions (Deno). One small pool per function instance.
//
// A database that goes away (a failover, a pooler restart, pg_terminate_backend) must cost a request a
// quick 503, never the process and never a hang:
// - no start-up type fetch (fetch_types off, the built-in array types declared in pg_arrays.ts): its
//   dropped promise is what ended the process (porsager/postgres #1192, #1223);
// - every statement has a deadline (RESERVE_DB_QUERY_TIMEOUT_MS, 4 s by default), counted from when it is
//   awaited, waiting for a connection included: past it the statement is cancelled and the caller gets a
//   DatabaseUnavailable; dbUntil(t) makes the deadline no later than t (the poller's budget);
// - connect_timeout, and statement_timeout on the server, bound each side on its own;
// - reconnects wait at most a second: postgres.js's own backoff grows to 20 s after a few failed
//   connects, which kept a pool unusable for that long after the database was back.
import postgres from "postgres";
import { ARRAY_OF, builtinArrayTypes } from "./pg_arrays.ts";

export type Sql = postgres.Sql;

const DEFAULT_QUERY_TIMEOUT_MS = 4_000;

/** A statement's deadline unless the caller asks for a tighter one. */
export function queryTimeoutMs(): number {
  const configured = Number(Deno.env.get("RESERVE_DB_QUERY_TIMEOUT_MS"));
  return Number.isFinite(configured) && configured > 0 ? configured : DEFAULT_QUERY_TIMEOUT_MS;
}

/** The database did not answer in time, or the connection to it was lost: retry later (503). */
export class DatabaseUnavailable extends Error {
  readonly code = "DATABASE_UNAVAILABLE";
  constructor(message: string) {
    super(message);
    this.name = "DatabaseUnavailable";
  }
}

let client: Sql | undefined;
let bounded: Sql | undefined;
let opsClient: Sql | undefined;
let opsBounded: Sql | undefined;

/**
 * RESERVE_DB_POOLER_URL (our own secret, Supabase's transaction pooler on port 6543) wins over the
 * injected SUPABASE_DB_URL (a direct connection). The pooler cannot keep prepared statements.
 */
function pool(): Sql {
  if (client) return client;
  const pooled = Deno.env.get("RESERVE_DB_POOLER_URL");
  const url = pooled ?? Deno.env.get("SUPABASE_DB_URL");
  if (!url) throw new Error("SUPABASE_DB_URL is not set");
  client = connect(url, { prepare: !pooled, max: Number(Deno.env.get("RESERVE_DB_POOL_SIZE") ?? 4) });
  return client;
}

function connect(url: string, opts: { prepare: boolean; max: number }): Sql {
  const timeout = queryTimeoutMs();
  const sql = postgres(url, {
    prepare: opts.prepare,
    max: opts.max,
    fetch_types: false,
    types: builtinArrayTypes() as never,
    // a connection attempt never outlives the statement that asked for it
    connect_timeout: Math.max(1, Math.ceil(timeout / 1000)),
    idle_timeout: 20,
    backoff: reconnectDelaySeconds,
    max_lifetime: 30 * 60,
    onnotice: () => {},
    connection: {
      application_name: "reserve-edge",
      // the server stops a statement the client has given up on, even if the cancel never reaches it
      statement_timeout: timeout + 1_000,
    } as Record<string, string | number>,
  });
  // sql.array(values) looks the array type up in the map the type fetch would have filled
  const shared = (sql.options as unknown as { shared?: { typeArrayMap?: Record<number, number> } }).shared;
  if (shared?.typeArrayMap) Object.assign(shared.typeArrayMap, ARRAY_OF);
  return sql;
}

/** The ops console's login is not configured: what needs a proven operator cannot be done (503). */
export class OpsConsoleLoginMissing extends Error {
  readonly code = "OPS_CONSOLE_LOGIN_MISSING";
  constructor() {
    super("RESERVE_OPS_DB_URL is not set");
    this.name = "OpsConsoleLoginMissing";
  }
}

/**
 * The ops console's own login (RESERVE_OPS_DB_URL: role reserve_ops_console, a password only this
 * function's secrets hold): the one connection the database takes an operator's name and token subject
 * from (reserve.correction_actor). The shared login (SUPABASE_DB_URL, postgres) is also the SQL editor's,
 * so a name passed on it proves nobody. Direct or through the pooler: no prepared statements either way.
 */
export function opsConsoleDb(): Sql {
  if (!opsClient) {
    const url = Deno.env.get("RESERVE_OPS_DB_URL");
    if (!url) throw new OpsConsoleLoginMissing();
    opsClient = connect(url, { prepare: false, max: 2 });
  }
  opsBounded ??= withDeadlines(opsClient, () => queryTimeoutMs());
  return opsBounded;
}

/** Seconds before a closed connection is opened again, after `retries` failed ones in a row: 0.1 to 1 s, jittered. */
export function reconnectDelaySeconds(retries: number): number {
  return Math.min(0.1 * 2 ** retries, 1) * (0.75 + Math.random() / 4);
}

/** The functions' database: every statement run through it is bounded by queryTimeoutMs(). */
export function db(): Sql {
  bounded ??= withDeadlines(pool(), () => queryTimeoutMs());
  return bounded;
}

/** The same database with every statement also ending by `deadline` (epoch ms): a run with a budget. */
export function dbUntil(deadline: number): Sql {
  return withDeadlines(pool(), () => Math.min(queryTimeoutMs(), deadline - Date.now()));
}

type Pending = Promise<unknown> & { cancel?: () => unknown; canceller?: ((q: unknown) => unknown) | null };

function isQuery(x: unknown): x is Pending {
  return x instanceof Promise && typeof (x as Pending).cancel === "function";
}

// sql`...` returns a lazy query that runs when first awaited; the proxy gives each one a `then` that
// races it with its deadline. Fragments nested in other queries are never awaited, so never raced, and
// stay the Query objects postgres.js expects.
function withDeadlines(sql: Sql, msLeft: () => number): Sql {
  const limit = <T>(q: T): T => (isQuery(q) ? raceOnAwait(q, msLeft) as T : q);
  return new Proxy(sql, {
    apply: (target, self, args) => limit(Reflect.apply(target as never, self, args)),
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (prop === "unsafe" || prop === "file") {
        return (...args: unknown[]) => limit((value as (...a: unknown[]) => unknown).apply(target, args));
      }
      return value;
    },
  });
}

function raceOnAwait(q: Pending, msLeft: () => number): Pending {
  const run = Promise.prototype.then.bind(q) as Promise<unknown>["then"];
  const start = (q as unknown as { handle?: () => void }).handle?.bind(q);
  let raced: Promise<unknown> | undefined;
  Object.defineProperty(q, "then", {
    configurable: true,
    writable: true,
    value(onFulfilled?: (v: unknown) => unknown, onRejected?: (e: unknown) => unknown) {
      raced ??= race(q, run, start, msLeft());
      return raced.then(onFulfilled, onRejected);
    },
  });
  return q;
}

function race(q: Pending, run: Promise<unknown>["then"], start: (() => void) | undefined, ms: number): Promise<unknown> {
  // a deadline already past: the statement is never sent
  if (!(ms > 0)) return Promise.reject(new DatabaseUnavailable("the database did not answer in time (deadline passed before the statement was sent)"));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cancelQuietly(q);
      reject(new DatabaseUnavailable(`the database did not answer within ${Math.round(ms)} ms`));
    }, ms);
    // what Query.then does: start the query, then wait on it; both outcomes are handled here, so a
    // statement that fails after its deadline is no unhandled rejection
    start?.();
    run(
      (v) => {
        clearTimeout(timer);
        if (unanswered(v)) reject(new DatabaseUnavailable("the database's answer was lost with its connection"));
        else resolve(v);
      },
      (e) => { clearTimeout(timer); reject(e); },
    );
  });
}

// Every statement's answer ends with its CommandComplete, which names the command. In the kill loop
// postgres.js 3.4.9 once resolved a statement whose connection died with an empty result and no command
// (the poller read `const [r]` as undefined: a TypeError, a 500): that is no answer, and the caller is
// told the database is away, as for the statements that fail outright.
function unanswered(v: unknown): boolean {
  return Array.isArray(v) && "command" in v && (v as { command: unknown }).command == null;
}

// Query.cancel() drops the promise of its cancel request (a new connection to a server that may be gone),
// so the canceller is called here and its outcome ignored: the deadline has answered the caller already.
function cancelQuietly(q: Pending): void {
  const cancel = q.canceller;
  if (typeof cancel !== "function") return;
  q.canceller = null;
  try {
    Promise.resolve(cancel(q)).catch(() => {});
  } catch {
    // a query that cannot be cancelled any more has finished or failed on its own
  }
}

// Transport failures: the connection went away, was refused or timed out.
const LOST_CONNECTION_CODES = new Set([
  "CONNECTION_CLOSED", "CONNECTION_ENDED", "CONNECTION_DESTROYED", "CONNECT_TIMEOUT",
  "ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH",
  "ENOTFOUND", "EAI_AGAIN", "ERR_SOCKET_CLOSED", "ERR_STREAM_DESTROYED", "DATABASE_UNAVAILABLE",
]);
// SQLSTATEs of a server that is going away, not taking connections, read-only after a failover, or that
// cancelled the statement at our deadline.
const UNAVAILABLE_SQLSTATES = new Set(["57P01", "57P02", "57P03", "57014", "53300", "53400", "25006"]);

/** True when err means "the database is not there right now" (retry later), not "the database said no". */
export function isDatabaseUnavailable(err: unknown): boolean {
  if (err instanceof DatabaseUnavailable) return true;
  const e = err as { code?: unknown; errno?: unknown; message?: unknown } | null;
  const code = typeof e?.code === "string" ? e.code : typeof e?.errno === "string" ? e.errno : "";
  if (LOST_CONNECTION_CODES.has(code) || UNAVAILABLE_SQLSTATES.has(code) || code.startsWith("08")) return true;
  // Deno's node:net sometimes raises socket errors with no code at all
  return !code && typeof e?.message === "string" &&
    /socket has been ended|socket hang up|connection (reset|refused|closed)|broken pipe/i.test(e.message);
}

/** A database error reduced to what is safe to show a caller: never the URL or credentials. */
export function describeDbError(err: unknown): { code: string; message: string } {
  const e = err as { code?: string; message?: string; errno?: string };
  const code = e?.code ?? e?.errno ?? "unknown";
  if (err instanceof DatabaseUnavailable) return { code, message: "database did not answer in time" };
  // a SQLSTATE means the server answered; its text may name our objects, so keep it in the logs
  if (/^[0-9A-Z]{5}$/.test(code) && !isDatabaseUnavailable(err)) return { code, message: "database error" };
  return { code, message: "database unreachable" };
}
