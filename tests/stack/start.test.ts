// `npm start` as a person runs it: a cold start on an empty data dir, Ctrl-C, a warm start on the same
// data; and the one-line errors for a busy port and a failed migration.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { applyMigrations, bootstrapSupabaseLike, MigrationError, projectRoot } from "../../local/migrate.ts";
import { loadOrCreateSigningKey, localIssuer, signUserToken } from "../../local/auth_keys.ts";
import { freePort } from "../../local/ports.ts";
import { tempClusterDir } from "../../local/postgres.ts";
import { createTestDatabase, dbUrl } from "../helpers/db.ts";
import { isoDate } from "../helpers/fixtures.ts";


interface Run { child: ChildProcess; output: () => string; exited: Promise<number | null> }

function npmStart(env: Record<string, string>): Run {
  const child = spawn(process.execPath, ["--import", "tsx", "scripts/start.ts"], {
    cwd: projectRoot,
    env: { ...process.env, DATABASE_URL: "", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout!.on("data", (c) => (out += c));
  child.stderr!.on("data", (c) => (out += c));
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  const run = { child, output: () => out, exited };
  spawned.add(run);
  return run;
}

async function waitFor(run: Run, text: string, ms = 90_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!run.output().includes(text)) {
    if (run.child.exitCode !== null) throw new Error(`npm start exited ${run.child.exitCode}:\n${run.output()}`);
    if (Date.now() > deadline) throw new Error(`timed out waiting for "${text}":\n${run.output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Every npm start a test spawns; whatever a failing test leaves running is killed after the file. */
const spawned = new Set<Run>();
afterAll(() => {
  for (const run of spawned) run.child.kill("SIGKILL");
});

function isListening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1", () => { s.destroy(); resolve(true); });
    s.once("error", () => resolve(false));
  });
}

async function eventually(check: () => Promise<boolean>, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("npm start", () => {
  let dataDir: string;
  let env: Record<string, string>;
  let dbPort: number;
  let fnPort: number;

  beforeAll(async () => {
    dataDir = await tempClusterDir("reserve-start-");
    dbPort = await freePort();
    fnPort = await freePort();
    env = {
      RESERVE_DATA_DIR: dataDir, RESERVE_DB_PORT: String(dbPort), RESERVE_FUNCTIONS_PORT: String(fnPort),
      RESERVE_SANDBOX_PORT: String(await freePort()),
    };
  });
  afterAll(async () => {
    for (const run of spawned) {
      run.child.kill("SIGKILL");
      await run.exited;
    }
    const pid = Number((await readFile(path.join(dataDir, "postgres/postmaster.pid"), "utf8").catch(() => "")).split("\n")[0]);
    if (pid) try { process.kill(pid, "SIGKILL"); } catch { /* gone */ }
    await rm(dataDir, { recursive: true, force: true });
  });

  async function counts() {
    const sql = postgres(`postgresql://postgres:postgres@127.0.0.1:${dbPort}/postgres`, { max: 1 });
    try {
      const [row] = await sql`
        select (select count(*)::int from supabase_migrations.schema_migrations) as migrations,
               (select count(*)::int from reserve.availability_calendar) as nights,
               (select count(*)::int from reserve.unit_map) as units`;
      return row;
    } finally {
      await sql.end();
    }
  }

  async function startAndCheck() {
    const run = npmStart(env);
    await waitFor(run, "Ctrl-C stops everything");
    const res = await fetch(`http://127.0.0.1:${fnPort}/functions/v1/health`);
    expect(res.status).toBe(200);
    expect((await res.json()).status).toBe("ok");
    return { run, counts: await counts() };
  }

  async function expectNothingListening() {
    expect(await isListening(dbPort), "postgres port").toBe(false);
    expect(await isListening(fnPort), "functions port").toBe(false);
  }

  async function stop(run: Run, signal: NodeJS.Signals = "SIGINT") {
    run.child.kill(signal);
    expect(await run.exited).toBe(0);
    expect(run.output()).toContain("stopped");
    await expectNothingListening();
  }

  it("cold-starts on an empty data dir, seeds, serves health, and stops cleanly on Ctrl-C", async () => {
    const { run, counts: c } = await startAndCheck();
    expect(run.output()).toContain("postgres created and started");
    expect(run.output()).toContain("loaded supabase/seed.sql");
    expect(run.output()).toContain(`http://127.0.0.1:${fnPort}/functions/v1/health`);
    expect(run.output()).toMatch(/anon key\s+eyJ/);
    expect(c.units).toBe(8);
    expect(c.nights).toBe(8 * 365);
    await stop(run);
  });

  it("runs the provider sandbox and the poller's schedule; a card checkout paid at the sandbox becomes a reservation", async () => {
    const sandboxPort = Number(env.RESERVE_SANDBOX_PORT);
    const run = npmStart({ ...env, RESERVE_CRON_SECRET: "start-test-secret", RESERVE_POLL_INTERVAL_S: "1" });
    await waitFor(run, "Ctrl-C stops everything");
    expect(run.output()).toContain(`provider sandbox on http://127.0.0.1:${sandboxPort}`);
    const sql = postgres(`postgres://postgres:postgres@127.0.0.1:${dbPort}/postgres`, { max: 1, onnotice: () => {} });
    try {
      await eventually(async () => (await sql`select 1 from reserve.job_last_runs where job = 'poll_payment_status' and ok`).length > 0,
        "a heartbeat of the scheduled poller");
      const [u] = await sql`select id from reserve.unit_map order by name limit 1`;
      // a user token as `npm run token` signs it (the data dir's key), verified against the published JWKS
      const jwks = await fetch(`http://127.0.0.1:${fnPort}/auth/v1/.well-known/jwks.json`).then((r) => r.json());
      const key = loadOrCreateSigningKey(dataDir);
      expect(jwks).toEqual({ keys: [key.publicJwk] });
      const token = signUserToken(key, { email: "start-test@example.com", issuer: localIssuer(fnPort) });
      const res = await fetch(`http://127.0.0.1:${fnPort}/functions/v1/checkout`, {
        method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        body: JSON.stringify({ unit_id: u.id, check_in: isoDate(20), check_out: isoDate(23), guests: 1, method: "card" }),
      });
      const body = await res.json();
      expect(res.status, JSON.stringify(body)).toBe(201);
      // the guest pays through the sandbox's HTTP control, as `npm start` users do
      const paid = await fetch(`http://127.0.0.1:${sandboxPort}/_sandbox/stripeConfirm`, {
        method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify([body.gateway_payment_id, "succeeded"]),
      });
      expect(paid.status).toBe(200);
      await eventually(async () => (await sql`select 1 from reserve.reservations where booking_intent_id = ${body.booking_intent_id}`).length > 0,
        "the reservation");
    } finally {
      await sql.end();
    }
    await stop(run);
  });

  it("starts again on the same data without re-applying migrations or re-seeding, and stops on SIGTERM", async () => {
    const first = npmStart(env);
    await waitFor(first, "Ctrl-C stops everything");
    const before = await counts();
    await stop(first, "SIGTERM");
    expect(first.output()).toContain("migrations up to date");
    expect(first.output()).not.toContain("loaded supabase/seed.sql");
    expect(first.output()).not.toContain("created and started");
    const { run, counts: c } = await startAndCheck();
    expect(c).toEqual(before);
    await stop(run);
  });

  it.each([["edge functions", () => fnPort], ["PostgreSQL", () => dbPort]])(
    "says in one line that the %s port is in use",
    async (what, port) => {
      const blocker = net.createServer().listen(port(), "127.0.0.1");
      await new Promise((r) => blocker.once("listening", r));
      try {
        const run = npmStart(env);
        expect(await run.exited).toBe(1);
        expect(run.output().trim()).toBe(
          `error: port ${port()} (${what}) is already in use: stop what holds it or choose another port`);
      } finally {
        blocker.close();
      }
    },
  );

  it("stops what it already started when interrupted mid-start", async () => {
    const run = npmStart(env);
    await waitFor(run, "migrations up to date");
    run.child.kill("SIGTERM");
    expect(await run.exited).toBe(0);
    await new Promise((r) => setTimeout(r, 1500)); // an orphaned gateway would be listening by now
    await expectNothingListening();
  });

  it("exits 1 with one line when PostgreSQL dies under it, and stops the functions", async () => {
    const run = npmStart(env);
    await waitFor(run, "Ctrl-C stops everything");
    const pid = Number((await readFile(path.join(dataDir, "postgres/postmaster.pid"), "utf8")).split("\n")[0]);
    process.kill(pid, "SIGKILL");
    expect(await run.exited).toBe(1);
    expect(run.output()).toMatch(/^error: PostgreSQL exited unexpectedly \(.*\); see .*postgres\.log$/m);
    await expectNothingListening();
  });

  it("after a SIGKILL: the gateway goes with it, and the next start names the PostgreSQL left behind", async () => {
    const run = npmStart(env);
    await waitFor(run, "Ctrl-C stops everything");
    run.child.kill("SIGKILL");
    await run.exited;
    await eventually(async () => !(await isListening(fnPort)), "the gateway to exit");
    expect(await isListening(dbPort)).toBe(true);

    const again = npmStart(env);
    expect(await again.exited).toBe(1);
    const pid = Number((await readFile(path.join(dataDir, "postgres/postmaster.pid"), "utf8")).split("\n")[0]);
    expect(again.output().trim()).toBe(
      `error: a PostgreSQL from an earlier run still serves ${path.join(dataDir, "postgres")} (pid ${pid}): stop it with kill ${pid}`);
    process.kill(pid, "SIGINT");
    await eventually(async () => !(await isListening(dbPort)), "the leftover PostgreSQL to stop");
    const { run: recovered } = await startAndCheck();
    await stop(recovered);
  });
});

describe("npm start with DATABASE_URL", () => {
  it("uses that database: bootstraps and migrates it, seeds nothing, and leaves its server running", async () => {
    const name = `ext_${Date.now()}`;
    const admin = postgres(dbUrl("postgres"), { max: 1, onnotice: () => {} });
    await admin.unsafe(`create database ${name}`);
    try {
      const fnPort = await freePort();
      const run = npmStart({ DATABASE_URL: dbUrl(name), RESERVE_FUNCTIONS_PORT: String(fnPort), RESERVE_SANDBOX_PORT: String(await freePort()) });
      await waitFor(run, "Ctrl-C stops everything");
      const res = await fetch(`http://127.0.0.1:${fnPort}/functions/v1/health`);
      expect(res.status).toBe(200);
      expect(run.output()).toContain("bootstrapped Supabase roles and schemas");
      expect(run.output()).toMatch(/applied \d+ migration\(s\)/);
      expect(run.output()).not.toContain("loaded supabase/seed.sql");
      expect(run.output()).not.toContain("postgres created");
      run.child.kill("SIGINT");
      expect(await run.exited).toBe(0);
      expect((await admin`select 1 as up`)[0].up).toBe(1); // not ours to stop
      const ext = postgres(dbUrl(name), { max: 1 });
      const [{ cities }] = await ext`select count(*)::int as cities from reserve.cities`;
      await ext.end();
      expect(cities).toBe(0);
    } finally {
      await admin.unsafe(`drop database ${name} with (force)`);
      await admin.end();
    }
  });
});

describe("migrations", () => {
  it("applied twice do no harm: the second run applies nothing and the schema is unchanged", async () => {
    const db = await createTestDatabase();
    try {
      const fingerprint = async () => (await db.sql`
        select md5(string_agg(x, '|' order by x)) as h from (
          select format('%s.%s %s %s', table_name, column_name, data_type, is_nullable) as x
          from information_schema.columns where table_schema = 'reserve'
          union all
          select conname || ' ' || pg_get_constraintdef(oid) from pg_constraint
          where connamespace = 'reserve'::regnamespace
          union all
          select tgname || ' ' || tgrelid::regclass::text from pg_trigger
          where tgrelid::regclass::text like 'reserve.%'
        ) s`)[0].h;
      const before = await fingerprint();
      expect(await applyMigrations(db.url)).toEqual([]);
      expect(await fingerprint()).toBe(before);
    } finally {
      await db.drop();
    }
  });

  it("the Supabase bootstrap runs twice on a plain database without harm, and is skipped once in place", async () => {
    const name = `boot_${Date.now()}`;
    const admin = postgres(dbUrl("postgres"), { max: 1, onnotice: () => {} });
    await admin.unsafe(`create database ${name}`);
    const sql = postgres(dbUrl(name), { max: 1, onnotice: () => {} });
    try {
      const file = path.join(projectRoot, "local/supabase_bootstrap.sql");
      await sql.file(file);
      await sql.file(file);
      const [roles] = await sql`
        select bool_and(rolbypassrls) filter (where rolname = 'service_role') as service_bypasses_rls,
               count(*)::int as n
        from pg_roles where rolname in ('anon', 'authenticated', 'service_role', 'authenticator')`;
      expect(roles).toEqual({ service_bypasses_rls: true, n: 4 });
      expect(await bootstrapSupabaseLike(dbUrl(name))).toBe(false);
    } finally {
      await sql.end();
      await admin.unsafe(`drop database ${name} with (force)`);
      await admin.end();
    }
  });

  it("a failing migration gives one line naming the file and the error", async () => {
    const workdir = await mkdtemp(path.join(tmpdir(), "reserve-badmig-"));
    const name = `bad_${Date.now()}`;
    const admin = postgres(dbUrl("postgres"), { max: 1, onnotice: () => {} });
    await admin.unsafe(`create database ${name}`);
    try {
      await mkdir(path.join(workdir, "supabase/migrations"), { recursive: true });
      await writeFile(path.join(workdir, "supabase/config.toml"), 'project_id = "bad"\n');
      await writeFile(path.join(workdir, "supabase/migrations/20990101000000_broken.sql"), "select * from no_such_table;\n");
      const err = await applyMigrations(dbUrl(name), workdir).catch((e) => e);
      expect(err).toBeInstanceOf(MigrationError);
      expect(err.message).not.toContain("\n");
      expect(err.message).toMatch(/^migration 20990101000000_broken\.sql failed: .*no_such_table/);
    } finally {
      await admin.unsafe(`drop database ${name} with (force)`);
      await admin.end();
      await rm(workdir, { recursive: true, force: true });
    }
  });
});
