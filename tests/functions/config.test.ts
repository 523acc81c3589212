// supabase/config.toml declares every function folder, and no function leaves its caller to the relay.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { projectRoot } from "../../local/migrate.ts";
import { parseFunctionsConfig } from "../../local/gateway/functions_config.ts";

const config = readFileSync(path.join(projectRoot, "supabase/config.toml"), "utf8");
const folders = readdirSync(path.join(projectRoot, "supabase/functions"), { withFileTypes: true })
  .filter((d) => d.isDirectory() && !d.name.startsWith("_")).map((d) => d.name).sort();

describe("supabase/config.toml", () => {
  it("names the project reserve-connect", () => {
    expect(config).toMatch(/^project_id = "reserve-connect"$/m);
  });

  it("has one [functions.<name>] block per function folder, each with index.ts and handler.ts", () => {
    const declared = parseFunctionsConfig(config).map((f) => f.name).sort();
    expect(declared).toEqual(folders);
    for (const name of folders) {
      expect(existsSync(path.join(projectRoot, "supabase/functions", name, "index.ts")), name).toBe(true);
      expect(existsSync(path.join(projectRoot, "supabase/functions", name, "handler.ts")), name).toBe(true);
    }
  });

  it("turns verify_jwt off everywhere: each function verifies its caller itself (JWKS, legacy secret, webhook signature or cron secret)", () => {
    for (const { name, verifyJwt } of parseFunctionsConfig(config)) expect(verifyJwt, name).toBe(false);
  });

  it("reads verify_jwt per block and defaults it to true", () => {
    expect(parseFunctionsConfig(`
      [functions.a]
      verify_jwt = false # webhooks
      [db]
      verify_jwt = false
      [functions.b]
      enabled = true
    `)).toEqual([{ name: "a", verifyJwt: false }, { name: "b", verifyJwt: true }]);
  });
});
