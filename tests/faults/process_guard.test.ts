// No stray promise or exception ends a function: guard_probe.ts is served by serveFunction (what every
// index.ts calls) under real Deno, the way a deploy serves index.ts (Deno.serve's address from
// DENO_SERVE_ADDRESS), and its routes misbehave the ways a library does: a dropped rejection (what
// postgres.js's start-up type fetch did), a throw in a timer, an EventEmitter error nobody listens to, a
// handler that throws, a database that is gone. The process keeps serving, every answer is JSON, and
// what is logged masks what looks like a secret.
import { spawn, type ChildProcess } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { denoBinary } from "../../local/functions.ts";
import { projectRoot } from "../../local/migrate.ts";
import { freePort } from "../../local/ports.ts";

let child: ChildProcess;
let base: string;
const output: string[] = [];

beforeAll(async () => {
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  child = spawn(denoBinary(), ["run", "--allow-net", "--allow-env", "--config", path.join(projectRoot, "deno.json"),
    path.join(projectRoot, "tests/faults/guard_probe.ts")], {
    cwd: projectRoot, env: { ...process.env, DENO_SERVE_ADDRESS: `tcp:127.0.0.1:${port}`, NO_COLOR: "1" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  await new Promise<void>((resolve, reject) => {
    const onData = (b: Buffer) => {
      output.push(...b.toString().split("\n").filter(Boolean));
      if (output.some((l) => l.includes(`Listening on ${base}/`))) resolve();
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.once("exit", (code) => reject(new Error(`guard_probe exited (${code}): ${output.join("\n")}`)));
  });
}, 60_000);

afterAll(() => {
  child?.kill("SIGKILL");
});

async function get(route: string) {
  const res = await fetch(`${base}${route}`, { signal: AbortSignal.timeout(10_000) });
  return { status: res.status, body: await res.json(), headers: res.headers };
}

const settle = () => new Promise((r) => setTimeout(r, 50));

describe("serveFunction keeps the process serving", () => {
  it("through dropped rejections, throws in timers and unheard EventEmitter errors, many times over", async () => {
    const { body: first } = await get("/alive");
    for (let i = 0; i < 10; i++) {
      for (const route of ["/reject", "/timer-throw", "/emitter"]) {
        const r = await get(route);
        expect(r.status).toBe(200);
        await settle();
      }
    }
    const { body: after } = await get("/alive");
    expect(after).toEqual({ alive: true, pid: first.pid });
    expect(child.exitCode).toBeNull();
    expect(output.filter((l) => /unhandled rejection \(process kept running\)/.test(l)).length).toBeGreaterThanOrEqual(10);
    expect(output.filter((l) => /uncaught exception \(process kept running\)/.test(l)).length).toBeGreaterThanOrEqual(20);
    expect(output.filter((l) => /^error: Uncaught/.test(l))).toEqual([]);
  });

  it("a handler that throws answers JSON 500; a database that is gone answers 503 with Retry-After", async () => {
    const thrown = await get("/throw");
    expect(thrown.status).toBe(500);
    expect(thrown.body).toEqual({ error: "internal_error", message: "the function failed; see the function logs" });
    const db = await get("/db");
    expect(db.status).toBe(503);
    expect(db.body.error).toBe("database_unavailable");
    expect(typeof db.body.message).toBe("string");
    expect(Number(db.headers.get("retry-after"))).toBeGreaterThan(0);
    expect((await get("/alive")).body.alive).toBe(true);
  });

  it("logs each event in one line with what looks like a secret masked", async () => {
    const logged = output.join("\n");
    expect(logged).toContain("57P01: terminating connection due to administrator command");
    expect(logged).toContain("This socket has been ended by the other party");
    for (const secret of ["hunter2", "eyJhbGciOiJIUzI1NiJ9", "sk_test_abc123", "c2lnbmF0dXJl"]) expect(logged).not.toContain(secret);
  });
});

describe("every function is served through the guard", () => {
  const functionsDir = path.join(projectRoot, "supabase/functions");
  const names = readdirSync(functionsDir, { withFileTypes: true })
    .filter((d) => d.isDirectory() && !d.name.startsWith("_")).map((d) => d.name);

  it.each(names)("%s/index.ts serves its handler with serveFunction", (name) => {
    const source = readFileSync(path.join(functionsDir, name, "index.ts"), "utf8");
    expect(source).toMatch(/from "\.\.\/_shared\/serve\.ts"/);
    expect(source).toContain(`serveFunction("${name}", handler)`);
    expect(source).not.toMatch(/Deno\.serve\(/);
  });

  it("and the local gateway, which serves them all in one process, guards itself the same way", () => {
    const source = readFileSync(path.join(projectRoot, "local/gateway/local_gateway.ts"), "utf8");
    expect(source).toMatch(/guardProcess\("edge gateway"\)/);
    // each function through the same guard serveFunction uses (JSON on a throw, CORS)
    expect(source).toMatch(/guardHandler\(name, mod\.handler\)/);
  });
});
