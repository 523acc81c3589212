// How a function is served, deployed or local: no stray promise or exception ends the process, and a
// handler that throws still answers JSON (503 when the database is away, 500 otherwise).
//
// A library that drops a promise (postgres.js did, on connection start-up) would otherwise end the whole
// isolate with every request in flight; the event is logged, without its stack or values, and the
// process keeps serving.
import { preflightResponse, withCors } from "./cors.ts";
import { databaseUnavailableResponse } from "./db_response.ts";
import { errorJson } from "./http.ts";

const REDACTIONS: [RegExp, string][] = [
  [/(\/\/[^:/@\s]+):[^@\s]+@/g, "$1:****@"], // credentials in a URL
  [/\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+/gi, "$1 ****"],
  [/\b(sk|rk|pk)_(test|live)_[A-Za-z0-9]+/g, "$1_$2_****"],
  [/\bwhsec_[A-Za-z0-9+/=]+/g, "whsec_****"],
  [/\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+/g, "<jwt>"],
  [/\b(password|secret|token)=[^&\s]+/gi, "$1=****"],
];

/** One line about an error: its name, code and message, with anything like a secret masked. */
export function describeError(err: unknown): string {
  const e = err as { name?: unknown; code?: unknown; message?: unknown } | null;
  const name = typeof e?.name === "string" ? e.name : typeof err;
  const code = typeof e?.code === "string" ? ` ${e.code}` : "";
  let message = typeof e?.message === "string" ? e.message : typeof err === "string" ? err : "";
  for (const [pattern, replacement] of REDACTIONS) message = message.replace(pattern, replacement);
  message = message.replace(/\s+/g, " ").slice(0, 300);
  return `${name}${code}${message ? `: ${message}` : ""}`;
}

let guarded = false;

/** Keeps unhandled rejections and uncaught exceptions from ending this process; each is logged once. */
export function guardProcess(name: string): void {
  if (guarded) return;
  guarded = true;
  globalThis.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    console.error(`${name}: unhandled rejection (process kept running): ${describeError(event.reason)}`);
  });
  globalThis.addEventListener("error", (event) => {
    event.preventDefault();
    console.error(`${name}: uncaught exception (process kept running): ${describeError(event.error ?? event.message)}`);
  });
}

type Handler = (req: Request) => Response | Promise<Response>;

/** The JSON answer for an error a handler threw: 503 for a database that is away, 500 otherwise. */
export function thrownAnswer(name: string, err: unknown): Response {
  const unavailable = databaseUnavailableResponse(err, name);
  if (unavailable) return unavailable;
  console.error(`${name}: unhandled error: ${describeError(err)}`);
  return errorJson(500, "internal_error", "the function failed; see the function logs");
}

/**
 * The handler as it is served: a CORS preflight answered before anything else (no token is sent with
 * one), JSON when the handler throws instead of the runtime's answer (or a crash), and the CORS headers
 * on every response (cors.ts).
 */
export function guardHandler(name: string, handler: Handler): (req: Request) => Promise<Response> {
  return async (req) => {
    if (req.method === "OPTIONS") return preflightResponse(req);
    let res: Response;
    try {
      res = await handler(req);
    } catch (err) {
      res = thrownAnswer(name, err);
    }
    return withCors(req, res);
  };
}

/** What each function's index.ts calls: Deno.serve with the guards above. */
export function serveFunction(name: string, handler: Handler): void {
  guardProcess(name);
  Deno.serve(guardHandler(name, handler));
}
