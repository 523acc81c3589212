// Brings a database to our schema the way a real Supabase project gets it: the bootstrap (local only,
// skipped where Supabase's roles exist), then `supabase migration up` from the Supabase CLI.
import { execFile } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { packageDir, platform } from "./packages.ts";

export const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

export class MigrationError extends Error {}

function supabaseCli(): string {
  const dir = packageDir(`@supabase/cli-${platform}`);
  return dir ? path.join(dir, "bin", "supabase") : path.join(projectRoot, "node_modules", ".bin", "supabase");
}

/** Creates the roles and schemas a Supabase database has, unless they already exist. */
export async function bootstrapSupabaseLike(url: string): Promise<boolean> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    // Roles are per cluster, schemas per database: a fresh database in a bootstrapped cluster needs it too.
    const [{ ready }] = await sql`
      select exists (select 1 from pg_roles where rolname = 'service_role')
         and to_regnamespace('auth') is not null
         and to_regnamespace('extensions') is not null as ready`;
    if (ready) return false;
    await sql.file(path.join(projectRoot, "local/supabase_bootstrap.sql"));
    return true;
  } finally {
    await sql.end();
  }
}

/** `supabase migration up --db-url`; on failure one line naming the migration and the error. */
export interface MigrateOptions {
  /** also apply files older than the newest applied one (a copied database migrated by another branch first) */
  includeAll?: boolean;
  /** how long `migration up` may take (default 2 minutes; a year of data takes longer) */
  timeoutMs?: number;
}

export async function applyMigrations(url: string, workdir = projectRoot, options: MigrateOptions = {}): Promise<string[]> {
  const dbUrl = url.includes("sslmode=") ? url : `${url}${url.includes("?") ? "&" : "?"}sslmode=disable`;
  const out = await new Promise<string>((resolve, reject) => {
    execFile(
      supabaseCli(),
      ["migration", "up", "--db-url", dbUrl, "--workdir", workdir, ...(options.includeAll ? ["--include-all"] : [])],
      // a year of data migrated forward (a backfill) can take longer than a fresh database: RESERVE_MIGRATE_TIMEOUT_MS
      { env: { ...process.env, SUPABASE_TELEMETRY_DISABLED: "1", DO_NOT_TRACK: "1" }, timeout: options.timeoutMs ?? (Number(process.env.RESERVE_MIGRATE_TIMEOUT_MS) || 120_000) },
      (err, stdout, stderr) => {
        const text = `${stdout}\n${stderr}`;
        if (!err) return resolve(text);
        const applying = [...text.matchAll(/Applying migration (\S+?)\.{3}/g)].pop()?.[1];
        // the server's ERROR line first: a migration's name (error_codes) also matches "error"
        const lines = text.split("\n");
        const error = (lines.find((l) => /ERROR/.test(l)) ?? lines.find((l) => /error|failed/i.test(l) && !/^Applying migration/.test(l)))?.trim() ?? err.message;
        reject(new MigrationError(`migration ${applying ?? "(none)"} failed: ${error}`));
      },
    );
  });
  return [...out.matchAll(/Applying migration (\S+?)\.{3}/g)].map((m) => m[1]);
}

export async function migrate(url: string, options: MigrateOptions = {}): Promise<{ bootstrapped: boolean; applied: string[] }> {
  const bootstrapped = await bootstrapSupabaseLike(url);
  const applied = await applyMigrations(url, projectRoot, options);
  return { bootstrapped, applied };
}

/** seed.sql in one transaction (it is idempotent; the runner loads it on a database's first start). */
export async function loadSeed(url: string): Promise<void> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    await sql.begin((tx) => tx.file(path.join(projectRoot, "supabase/seed.sql")));
  } finally {
    await sql.end();
  }
}
