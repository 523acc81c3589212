// README.md's quick start, run as a person runs it: the bash block after "## Quick start" against a
// fresh stack (what `npm start` starts: seed, provider sandbox, functions under Deno), on free ports,
// with the printed service_role key pasted in. It must end in a paid reservation.
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { rm } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_LOCAL_JWT_SECRET } from "../../local/keys.ts";
import { projectRoot } from "../../local/migrate.ts";
import { freePort } from "../../local/ports.ts";
import { tempClusterDir } from "../../local/postgres.ts";
import { startStack, type Stack } from "../../local/stack.ts";

const README = readFileSync(path.join(projectRoot, "README.md"), "utf8");

/** The first ```bash block after the heading that starts with `heading`. */
function blockAfter(md: string, heading: string): string {
  const at = md.search(new RegExp(`^## ${heading}`, "m"));
  if (at < 0) throw new Error(`README.md has no "## ${heading}" section`);
  const m = md.slice(at).match(/```bash\n([\s\S]*?)\n```/);
  if (!m) throw new Error(`README.md's "## ${heading}" section has no bash block`);
  return m[1];
}

function bash(script: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile("bash", ["-euo", "pipefail", "-c", script], { timeout: 60_000, env: { ...process.env, PGCONNECT_TIMEOUT: "10" } },
      (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, out: `${stdout}${stderr}` }));
  });
}

let dataDir: string;
let stack: Stack;
let ports: { db: number; functions: number; sandbox: number };
beforeAll(async () => {
  dataDir = await tempClusterDir("reserve-readme-");
  ports = { db: await freePort(), functions: await freePort(), sandbox: await freePort() };
  stack = await startStack({
    dataDir, dbPort: ports.db, functionsPort: ports.functions, jwtSecret: DEFAULT_LOCAL_JWT_SECRET, seed: true,
    sandbox: true, sandboxPort: ports.sandbox, cronSecret: "readme", pollEveryMs: 0, retentionEveryMs: 0,
  }, () => {});
}, 180_000);
afterAll(async () => {
  await stack?.stop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

describe("README.md quick start", () => {
  const block = blockAfter(README, "Quick start");

  it("is ten lines at most, and names only what npm start prints or serves", () => {
    expect(block.split("\n").length).toBeLessThanOrEqual(10);
    expect(block).toContain("<the service_role key npm start printed>");
    for (const port of ["54321", "54322", "54329"]) expect(block).toContain(`127.0.0.1:${port}`);
  });

  it("runs: health answers, the card checkout and the sandbox payment end in a paid reservation", async () => {
    const script = block
      .replace("<the service_role key npm start printed>", stack.keys.serviceRole)
      .replaceAll("127.0.0.1:54321", `127.0.0.1:${ports.functions}`)
      .replaceAll("127.0.0.1:54322", `127.0.0.1:${ports.db}`)
      .replaceAll("127.0.0.1:54329", `127.0.0.1:${ports.sandbox}`);
    const { code, out } = await bash(script);
    expect(out).toMatch(/"status":"ok","database":"reachable","migration_version":"\d{14}"/);
    expect(out).toMatch(/RES-\d{4}-[A-Z0-9]{6}\s*\|\s*host_commit_pending\s*\|\s*paid/);
    expect(code, out).toBe(0);
  }, 90_000);
});
