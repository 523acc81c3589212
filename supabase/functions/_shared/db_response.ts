// Database errors as HTTP answers: our SQLSTATEs (class RC) map to their status and name; anything else
// is a 500 that says nothing about the database.
import { domainError } from "./db_errors.ts";
import { errorJson } from "./http.ts";

export function dbErrorResponse(err: unknown, where: string): Response {
  const e = err as { code?: string; message?: string; hint?: string };
  const known = domainError(e?.code);
  if (known) {
    const retryAfter = e.hint?.match(/retry after (\d+) seconds/)?.[1];
    const res = errorJson(known.http, known.name, e.message ?? known.name, { code: e.code, ...(e.hint && { hint: e.hint }) });
    if (retryAfter) res.headers.set("retry-after", retryAfter);
    return res;
  }
  // the log names the SQLSTATE only: messages of other errors can carry values from the request
  console.error(`${where}: database error ${e?.code ?? "unknown"}`);
  return errorJson(500, "internal_error", "the request could not be completed; retry later");
}
