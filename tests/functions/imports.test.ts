// One version of each dependency everywhere: package.json (what npm installs and Node runs), deno.json
// (local Deno, reading node_modules) and the import map Supabase deploys with.
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { projectRoot } from "../../local/migrate.ts";

const read = (p: string) => JSON.parse(readFileSync(path.join(projectRoot, p), "utf8"));
const pkg = read("package.json");
const deno = read("deno.json");
const deployMap = read("supabase/functions/import_map.json");

describe("import maps", () => {
  it("deno.json reads npm's node_modules and needs no network", () => {
    expect(deno.nodeModulesDir).toBe("manual");
  });

  it("the deploy import map has the same imports as deno.json, and nothing local-only", () => {
    expect(deployMap).toEqual({ imports: deno.imports });
  });

  it("pins every npm import to the exact version package.json installs", () => {
    const deps = { ...pkg.dependencies, ...pkg.devDependencies };
    for (const [name, spec] of Object.entries<string>(deno.imports)) {
      // a subpath export (`npm:pkg@1.2.3/sub`) is pinned to its package's version
      const m = spec.match(/^npm:(@?[^@]+)@([^/]+)(\/.+)?$/);
      expect(m, `${name}: ${spec}`).not.toBeNull();
      expect(deps[m![1]], `${name} in package.json`).toBe(m![2]);
    }
  });
});
