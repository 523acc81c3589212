// Personal login roles for tests of what needs a proven operator (4-eyes corrections, on-call actions):
// each person gets a real LOGIN role in reserve_operator and a connection as it, so the database takes the
// name from the login (session_user), as it does for an operator in psql. Roles are cluster-wide, so each
// call tags its names; name(who) is the role a person really is.
import { randomBytes } from "node:crypto";
import postgres from "postgres";
import { opsConsoleDbUrl } from "../../local/ops_console_login.ts";
import type { Sql } from "./db.ts";

export interface OperatorRoles {
  /** the role (and so the proven name) of a person, e.g. "alice" → "alice.3f9a" */
  name(who: string): string;
  /** a connection to `url` (default: the database the roles were made from) as that person */
  sql(who: string, url?: string): Sql;
  /** a transaction as that person, committed */
  as<T>(who: string, fn: (tx: postgres.TransactionSql) => Promise<T>, url?: string): Promise<T>;
  /** closes the connections and drops the roles */
  drop(): Promise<void>;
}

export async function operatorRoles(admin: Sql, url: string, people: string[], opts: { member?: boolean } = {}): Promise<OperatorRoles> {
  const tag = randomBytes(3).toString("hex");
  const password = randomBytes(12).toString("hex");
  const name = (who: string) => `${who}.${tag}`;
  for (const who of people) {
    await admin.unsafe(`create role "${name(who)}" login password '${password}'${opts.member === false ? "" : " in role reserve_operator"}`);
  }
  const clients = new Map<string, Sql>();
  const sql = (who: string, at = url) => {
    if (!people.includes(who)) throw new Error(`no role for ${who}: made for ${people.join(", ")}`);
    const key = `${who} ${at}`;
    let c = clients.get(key);
    if (!c) {
      const u = new URL(at);
      u.username = encodeURIComponent(name(who));
      u.password = password;
      c = postgres(u.toString(), { max: 2, onnotice: () => {} });
      clients.set(key, c);
    }
    return c;
  };
  return {
    name,
    sql,
    as: (who, fn, at) => sql(who, at).begin(fn) as never,
    async drop() {
      await Promise.all([...clients.values()].map((c) => c.end({ timeout: 5 })));
      for (const who of people) {
        // grants on objects of the databases they touched go with the databases; the role itself is the cluster's
        await admin.unsafe(`drop role if exists "${name(who)}"`);
      }
    },
  };
}

export interface OpsConsoleLogin {
  /** a committed transaction as the ops function runs an on-call or 4-eyes action: its login, the token's sub set */
  as<T>(sub: string | null, fn: (tx: postgres.TransactionSql) => Promise<T>): Promise<T>;
  end(): Promise<void>;
}

/** The ops console's own login (reserve_ops_console) on the database of `url`, as the ops function connects. */
export function opsConsoleLogin(url: string): OpsConsoleLogin {
  const sql = postgres(opsConsoleDbUrl(url), { max: 2, onnotice: () => {} });
  return {
    as: (sub, fn) => sql.begin(async (tx) => {
      if (sub !== null) await tx`select set_config('reserve.operator_subject', ${sub}, true)`;
      return fn(tx);
    }) as never,
    end: () => sql.end({ timeout: 5 }),
  };
}

/** The personal roles asPersonalRole made for a test database: made when a person first acts, dropped with it. */
interface PersonalRoles {
  url: string;
  tag: string;
  password: string;
  made: Map<string, Promise<unknown>>;
  clients: Map<string, Sql>;
}
const personal = new WeakMap<Sql, PersonalRoles>();

/** Lets asPersonalRole make roles for the database `admin` owns at `url` (createTestDatabase does this). */
export function allowPersonalRoles(admin: Sql, url: string): void {
  personal.set(admin, { url, tag: randomBytes(3).toString("hex"), password: randomBytes(12).toString("hex"), made: new Map(), clients: new Map() });
}

function personalRoles(admin: Sql): PersonalRoles {
  const p = personal.get(admin);
  if (!p) throw new Error("asPersonalRole needs the connection of a createTestDatabase database");
  return p;
}

/** The role, and so the proven name, `who` acts as on the database of `admin` ("oncall@reserve" → "oncall@reserve.3f9a"). */
export function personalRoleName(admin: Sql, who: string): string {
  return `${who}.${personalRoles(admin).tag}`;
}

/** The URL of the database of `admin` signed in as `who`'s own login role in reserve_operator, made when first asked for. */
export async function personalRoleUrl(admin: Sql, who: string): Promise<string> {
  const p = personalRoles(admin);
  const role = personalRoleName(admin, who);
  if (!p.made.has(who)) p.made.set(who, admin.unsafe(`create role "${role}" login password '${p.password}' in role reserve_operator`));
  await p.made.get(who);
  const u = new URL(p.url);
  u.username = encodeURIComponent(role);
  u.password = p.password;
  return u.toString();
}

/**
 * A committed transaction as `who`'s own login role in reserve_operator on the database of `admin`, as an
 * operator runs a repair in psql: the database takes the name from the login (session_user).
 */
export async function asPersonalRole<T>(admin: Sql, who: string, fn: (tx: postgres.TransactionSql) => Promise<T>): Promise<T> {
  const p = personalRoles(admin);
  const url = await personalRoleUrl(admin, who);
  let c = p.clients.get(who);
  if (!c) {
    c = postgres(url, { max: 2, onnotice: () => {} });
    p.clients.set(who, c);
  }
  return c.begin(fn) as Promise<T>;
}

/**
 * Makes the rest of a superuser's transaction `tx` run as `who`'s personal role (SET LOCAL SESSION
 * AUTHORIZATION: session_user is the role, as on its own login), for a case whose setup needs the
 * superuser first (replica mode) in the same transaction. Only a superuser can; the database's owner on
 * Supabase is not one.
 */
export async function becomePersonalRole(tx: postgres.TransactionSql, admin: Sql, who: string): Promise<void> {
  await personalRoleUrl(admin, who);
  await tx.unsafe(`set local session authorization "${personalRoleName(admin, who)}"`);
}

/** Closes the personal roles' connections and drops the roles (createTestDatabase's drop does this). */
export async function dropPersonalRoles(admin: Sql): Promise<void> {
  const p = personal.get(admin);
  if (!p) return;
  await Promise.all([...p.clients.values()].map((c) => c.end({ timeout: 5 })));
  for (const [who, made] of p.made) {
    if (await made.then(() => true, () => false)) await admin.unsafe(`drop role if exists "${personalRoleName(admin, who)}"`);
  }
  personal.delete(admin);
}
