// The shared secret pg_cron (and the local scheduler) present to the functions they call.
import type { ZodType } from "zod";
import { timingSafeEqual } from "./crypto.ts";
import { errorJson, invalidRequest, methodNotAllowed, readBodyText } from "./http.ts";

/** true / false for the Authorization: Bearer <RESERVE_CRON_SECRET> (or x-cron-secret); undefined when none is configured. */
export function cronAuthorized(req: Request, secret = Deno.env.get("RESERVE_CRON_SECRET")): boolean | undefined {
  if (!secret) return undefined;
  const given = req.headers.get("authorization")?.match(/^Bearer\s+(.+)$/i)?.[1] ?? req.headers.get("x-cron-secret") ?? "";
  return timingSafeEqual(given, secret);
}

/**
 * A scheduled call's request: POST, the cron secret, and a small JSON body of options (empty = defaults)
 * checked against the function's schema; a Response for anything else (405, 500 not_configured, 401,
 * 400 naming the field).
 */
export async function cronRequest<T>(req: Request, fn: string, options: ZodType<T>): Promise<T | Response> {
  if (req.method !== "POST") return methodNotAllowed(["POST"]);
  const auth = cronAuthorized(req);
  if (auth === undefined) {
    console.error(`${fn}: RESERVE_CRON_SECRET is not configured`);
    return errorJson(500, "not_configured", "RESERVE_CRON_SECRET is not configured");
  }
  if (!auth) return errorJson(401, "unauthorized", "a valid cron secret is required");
  const text = await readBodyText(req, 4096);
  if (text instanceof Response) return text;
  let raw: unknown = {};
  try {
    raw = text.trim() ? JSON.parse(text) : {};
  } catch {
    return errorJson(400, "invalid_json", "the body is not valid JSON");
  }
  const opts = options.safeParse(raw);
  if (!opts.success) return invalidRequest("unknown or out-of-range options", opts.error.issues);
  return opts.data;
}
