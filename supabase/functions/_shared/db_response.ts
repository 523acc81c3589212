// Database errors as HTTP answers: our SQLSTATEs (class RC) map to their status and name; a database that
// is not there right now (lost connection, deadline passed, failover) is a 503 to retry; anything else is a
// 500 that says nothing about the database.
import { isDatabaseUnavailable } from "./db.ts";
import { domainError } from "./db_errors.ts";
import { errorJson } from "./http.ts";

/** Seconds a client (or a provider redelivering a webhook) is asked to wait after a 503. */
export const DATABASE_RETRY_AFTER_S = 5;

/** 503 database_unavailable with Retry-After when err is a lost or late database, else undefined. */
export function databaseUnavailableResponse(err: unknown, where: string): Response | undefined {
  if (!isDatabaseUnavailable(err)) return undefined;
  const code = (err as { code?: unknown })?.code;
  // the code only: a transport error's message can carry the host
  console.error(`${where}: database unavailable (${typeof code === "string" ? code : "unknown"})`);
  const res = errorJson(503, "database_unavailable", "the database is not reachable right now; retry later");
  res.headers.set("retry-after", String(DATABASE_RETRY_AFTER_S));
  return res;
}

export function dbErrorResponse(err: unknown, where: string): Response {
  const e = err as { code?: string; message?: string; hint?: string };
  const known = domainError(e?.code);
  if (known) {
    const retryAfter = e.hint?.match(/retry after (\d+) seconds/)?.[1];
    const res = errorJson(known.http, known.name, e.message ?? known.name, { code: e.code, ...(e.hint && { hint: e.hint }) });
    if (retryAfter) res.headers.set("retry-after", retryAfter);
    return res;
  }
  const unavailable = databaseUnavailableResponse(err, where);
  if (unavailable) return unavailable;
  // the log names the SQLSTATE only: messages of other errors can carry values from the request
  console.error(`${where}: database error ${e?.code ?? "unknown"}`);
  return errorJson(500, "internal_error", "the request could not be completed; retry later");
}
