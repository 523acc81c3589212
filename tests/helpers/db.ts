// Each test file gets its own database, cloned from the migrated template.
import { randomBytes } from "node:crypto";
import postgres from "postgres";
import { inject } from "vitest";
import { allowPersonalRoles, dropPersonalRoles } from "./operator_roles.ts";

export type Sql = postgres.Sql;

export interface TestDatabase {
  name: string;
  url: string;
  sql: Sql;
  drop(): Promise<void>;
}

export function dbUrl(database: string): string {
  const url = new URL(inject("adminUrl"));
  url.pathname = `/${database}`;
  return url.toString();
}

export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `test_${randomBytes(6).toString("hex")}`;
  const admin = postgres(inject("adminUrl"), { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`create database ${name} template ${inject("templateDb")}`);
  } finally {
    await admin.end();
  }
  const url = dbUrl(name);
  const sql = postgres(url, { max: 10, onnotice: () => {} });
  allowPersonalRoles(sql, url);
  return {
    name,
    url,
    sql,
    async drop() {
      // the roles are the cluster's, not the database's
      await dropPersonalRoles(sql);
      await sql.end({ timeout: 5 });
      const a = postgres(inject("adminUrl"), { max: 1, onnotice: () => {} });
      try {
        await a.unsafe(`drop database if exists ${name} with (force)`);
      } finally {
        await a.end();
      }
    },
  };
}

/** Resolves with the SQLSTATE the promise was rejected with; fails the test if it succeeded. */
export async function sqlState(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (typeof code === "string") return code;
    throw err;
  }
  throw new Error("expected the statement to fail, but it succeeded");
}

/** Runs fn in a transaction that is always rolled back, so a case leaves nothing behind. */
export async function rolledBack<T>(sql: Sql, fn: (tx: postgres.TransactionSql) => Promise<T>): Promise<T> {
  const rollback = new Error("rollback");
  let result: T | undefined;
  try {
    await sql.begin(async (tx) => {
      result = await fn(tx);
      throw rollback;
    });
  } catch (err) {
    if (err !== rollback) throw err;
  }
  return result as T;
}
