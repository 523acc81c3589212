// A database migrated up to (not including) one migration, for testing what that migration does to
// landed data: the database is filled as the landed schema allows, then `applyRest` runs the
// project's remaining migrations on it.
import { mkdir, mkdtemp, readdir, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import postgres from "postgres";
import { afterAll, beforeAll } from "vitest";
import { applyMigrations, bootstrapSupabaseLike, projectRoot } from "../../local/migrate.ts";
import { dbUrl } from "./db.ts";

export interface MigratedBefore {
  sql: postgres.Sql;
  url: string;
  /** the project's migrations from `first` on; returns the names applied */
  applyRest(): Promise<string[]>;
  drop(): Promise<void>;
}

export async function migratedBefore(first: string, label: string): Promise<MigratedBefore> {
  const name = `${label}_${Date.now()}`;
  const url = dbUrl(name);
  const admin = postgres(dbUrl("postgres"), { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${name}`);
  // a project whose migrations stop before `first`
  const workdir = await mkdtemp(path.join(tmpdir(), `reserve-${label}-`));
  await mkdir(path.join(workdir, "supabase/migrations"), { recursive: true });
  await writeFile(path.join(workdir, "supabase/config.toml"), `project_id = "${label}"\n`);
  for (const f of await readdir(path.join(projectRoot, "supabase/migrations"))) {
    if (f < first) await symlink(path.join(projectRoot, "supabase/migrations", f), path.join(workdir, "supabase/migrations", f));
  }
  await bootstrapSupabaseLike(url);
  await applyMigrations(url, workdir);
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  return {
    sql, url,
    applyRest: () => applyMigrations(url),
    async drop() {
      await sql.end();
      await admin.unsafe(`drop database if exists ${name} with (force)`);
      await admin.end();
      await rm(workdir, { recursive: true, force: true });
    },
  };
}

/**
 * A test file's database migrated up to `first`: made before its tests and dropped after them. Its
 * `sql` and `applyRest` are there once the tests run (not while the file is being collected).
 */
export function useMigratedBefore(first: string, label: string): Omit<MigratedBefore, "drop"> {
  let db: MigratedBefore | undefined;
  const made = () => {
    if (!db) throw new Error(`the database migrated before ${first} is made in beforeAll; use it inside a test`);
    return db;
  };
  beforeAll(async () => {
    db = await migratedBefore(first, label);
  }, 300_000);
  afterAll(async () => {
    await db?.drop();
  });
  return {
    get sql() { return made().sql; },
    get url() { return made().url; },
    applyRest: () => made().applyRest(),
  };
}
