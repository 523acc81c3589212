// The same sources type-check where they run: `deno check` for the edge functions (what Supabase
// deploys) and tsc for the Node side (runner, shared code, tests).
import { execFile } from "node:child_process";
import { readdirSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { denoBinary } from "../local/functions.ts";
import { projectRoot } from "../local/migrate.ts";

function run(cmd: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd: projectRoot, env: { ...process.env, NO_COLOR: "1", ...env }, timeout: 170_000 },
      (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, out: `${stdout}${stderr}` }));
  });
}

const entrypoints = readdirSync(path.join(projectRoot, "supabase/functions"), { withFileTypes: true })
  .filter((d) => d.isDirectory() && !d.name.startsWith("_"))
  .map((d) => `supabase/functions/${d.name}/index.ts`);

describe("type checks", () => {
  it("deno check passes on every edge function, the local gateway and the bench's bare Deno server", async () => {
    const { code, out } = await run(
      denoBinary(),
      ["check", "--quiet", "--config", "deno.json", ...entrypoints, "local/gateway/local_gateway.ts", "scripts/bench/bare_insert.ts", "scripts/bench/bare_echo.ts"],
      { DENO_DIR: path.join(projectRoot, "node_modules", ".deno-cache"), DENO_NO_UPDATE_CHECK: "1" },
    );
    expect(out).toBe("");
    expect(code).toBe(0);
  }, 180_000);

  it("tsc passes on the Node side", async () => {
    const { code, out } = await run(process.execPath, [path.join(projectRoot, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.json"]);
    expect(out).toBe("");
    expect(code).toBe(0);
  }, 180_000);
});
