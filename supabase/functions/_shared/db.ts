// The database client of the edge functions (Deno). One small pool per function instance.
import postgres from "postgres";

export type Sql = postgres.Sql;

let client: Sql | undefined;

/**
 * RESERVE_DB_POOLER_URL (our own secret, Supabase's transaction pooler on port 6543) wins over the
 * injected SUPABASE_DB_URL (a direct connection). The pooler cannot keep prepared statements.
 */
export function db(): Sql {
  if (client) return client;
  const pooled = Deno.env.get("RESERVE_DB_POOLER_URL");
  const url = pooled ?? Deno.env.get("SUPABASE_DB_URL");
  if (!url) throw new Error("SUPABASE_DB_URL is not set");
  client = postgres(url, {
    prepare: !pooled,
    max: Number(Deno.env.get("RESERVE_DB_POOL_SIZE") ?? 4),
    connect_timeout: 5,
    idle_timeout: 30,
    onnotice: () => {},
    connection: { application_name: "reserve-edge" },
  });
  return client;
}

/** A database error reduced to what is safe to show a caller: never the URL or credentials. */
export function describeDbError(err: unknown): { code: string; message: string } {
  const e = err as { code?: string; message?: string; errno?: string };
  const code = e?.code ?? e?.errno ?? "unknown";
  // a SQLSTATE means the server answered; its text may name our objects, so keep it in the logs
  if (/^[0-9A-Z]{5}$/.test(code)) return { code, message: "database error" };
  return { code, message: "database unreachable" };
}
