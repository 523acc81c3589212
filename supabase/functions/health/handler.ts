import { db, describeDbError, isDatabaseUnavailable } from "../_shared/db.ts";
import { DATABASE_RETRY_AFTER_S } from "../_shared/db_response.ts";
import { json, methodNotAllowed } from "../_shared/http.ts";

/** GET: is the database reachable, which migration is it on, what time does it say it is. */
export async function handler(req: Request): Promise<Response> {
  if (req.method !== "GET" && req.method !== "HEAD") return methodNotAllowed(["GET", "HEAD"]);
  const started = performance.now();
  try {
    const sql = db();
    const [row] = await sql`
      select now() as server_time,
             to_regclass('supabase_migrations.schema_migrations') is not null as has_migrations`;
    // A database that never saw our migrations is reachable but not ready: that is a 503 too.
    const version = row.has_migrations
      ? (await sql`select max(version) as v from supabase_migrations.schema_migrations`)[0].v as string | null
      : null;
    return json({
      status: version ? "ok" : "unmigrated",
      database: "reachable",
      migration_version: version,
      server_time: row.server_time,
      latency_ms: Math.round(performance.now() - started),
    }, version ? 200 : 503);
  } catch (err) {
    const { code, message } = describeDbError(err);
    const away = isDatabaseUnavailable(err);
    return json({
      status: "unavailable",
      database: "unreachable",
      // the same name every function answers a database that is away with
      ...(away && { error: "database_unavailable" }),
      reason: message,
      code,
      server_time: new Date().toISOString(),
    }, 503, away ? { "retry-after": String(DATABASE_RETRY_AFTER_S) } : {});
  }
}
