// `supabase functions deploy` bundles a function from supabase/functions/ alone, resolving bare names
// through supabase/functions/import_map.json: an import that climbs out of that folder, an absolute
// path or a file: URL works locally and breaks (or silently ships the wrong file) at deploy.
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import ts from "typescript";
import { describe, expect, it } from "vitest";
import { projectRoot } from "../../local/migrate.ts";

const functionsDir = path.join(projectRoot, "supabase/functions");
const deployMap: { imports: Record<string, string> } = JSON.parse(
  readFileSync(path.join(functionsDir, "import_map.json"), "utf8"));

/** Every import specifier of a module: static, re-exports, side-effect, dynamic, triple-slash references. */
function importSpecifiers(source: string): string[] {
  const info = ts.preProcessFile(source, true, true);
  return [...info.importedFiles, ...info.referencedFiles].map((f) => f.fileName);
}

/** Why a specifier written in `file` would not resolve inside `root` at deploy, or null when it would. */
function outsideImport(specifier: string, file: string, root: string, mapped: Record<string, string>): string | null {
  if (specifier.startsWith("file:")) return "a file: URL";
  if (path.isAbsolute(specifier)) return "an absolute path";
  if (specifier.startsWith("./") || specifier.startsWith("../")) {
    const target = path.resolve(path.dirname(file), specifier);
    const rel = path.relative(root, target);
    return rel.startsWith("..") || path.isAbsolute(rel) ? `outside supabase/functions (${path.relative(projectRoot, target)})` : null;
  }
  if (specifier.startsWith("node:")) return null; // the runtime's own modules
  if (/^(npm|jsr|https?):/.test(specifier)) return "an unpinned registry or URL import: name it in import_map.json";
  const bare = Object.keys(mapped).some((k) => specifier === k || (k.endsWith("/") && specifier.startsWith(k)));
  return bare ? null : "a bare name import_map.json does not map";
}

function moduleFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) => {
    const p = path.join(dir, d.name);
    if (d.isDirectory()) return moduleFiles(p);
    return /\.(ts|tsx|js|mjs|jsx)$/.test(d.name) ? [p] : [];
  });
}

describe("what functions import stays inside supabase/functions", () => {
  const files = moduleFiles(functionsDir);

  it("reads every module of every function, _shared included", () => {
    const rel = files.map((f) => path.relative(functionsDir, f));
    expect(rel).toContain("_shared/db.ts");
    for (const fn of readdirSync(functionsDir, { withFileTypes: true }).filter((d) => d.isDirectory() && !d.name.startsWith("_"))) {
      expect(rel).toContain(`${fn.name}/index.ts`);
    }
  });

  it("no module imports a file outside supabase/functions, an absolute path, a file: URL or an unmapped name", () => {
    const offenders: string[] = [];
    for (const file of files) {
      for (const spec of importSpecifiers(readFileSync(file, "utf8"))) {
        const why = outsideImport(spec, file, functionsDir, deployMap.imports);
        if (why) offenders.push(`${path.relative(projectRoot, file)} imports "${spec}": ${why}`);
      }
    }
    expect(offenders).toEqual([]);
  });

  it("the check itself catches each way out", () => {
    const file = path.join(functionsDir, "checkout/handler.ts");
    const source = [
      `/// <reference path="../../../e.d.ts" />`,
      `import { a } from "../../../local/keys.ts";`,
      `export { b } from "/etc/b.ts";`,
      `import "file:///tmp/c.ts";`,
      `const d = await import("../../d.ts");`,
      `import { z } from "zod";`,
      `import x from "left-pad";`,
      `import y from "npm:stripe@1";`,
      `import { db } from "../_shared/db.ts";`,
      `import { Buffer } from "node:buffer";`,
    ].join("\n");
    const verdicts = importSpecifiers(source).map((s) => [s, outsideImport(s, file, functionsDir, deployMap.imports)]);
    expect(Object.fromEntries(verdicts)).toEqual({
      "../../../local/keys.ts": "outside supabase/functions (local/keys.ts)",
      "/etc/b.ts": "an absolute path",
      "file:///tmp/c.ts": "a file: URL",
      "../../d.ts": "outside supabase/functions (supabase/d.ts)",
      "../../../e.d.ts": "outside supabase/functions (e.d.ts)",
      zod: null,
      "left-pad": "a bare name import_map.json does not map",
      "npm:stripe@1": "an unpinned registry or URL import: name it in import_map.json",
      "../_shared/db.ts": null,
      "node:buffer": null,
    });
  });
});
