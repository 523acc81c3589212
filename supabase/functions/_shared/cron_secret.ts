// The shared secret pg_cron (and the local scheduler) present to the functions they call.
import { timingSafeEqual } from "./crypto.ts";

/** true / false for the Authorization: Bearer <RESERVE_CRON_SECRET> (or x-cron-secret); undefined when none is configured. */
export function cronAuthorized(req: Request, secret = Deno.env.get("RESERVE_CRON_SECRET")): boolean | undefined {
  if (!secret) return undefined;
  const given = req.headers.get("authorization")?.match(/^Bearer\s+(.+)$/i)?.[1] ?? req.headers.get("x-cron-secret") ?? "";
  return timingSafeEqual(given, secret);
}
