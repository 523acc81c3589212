// The npm packages that ship our binaries (PostgreSQL, Deno, the Supabase CLI) come one per platform.
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(import.meta.url);

/** The folder of an installed package, or undefined where npm did not install it (another platform). */
export function packageDir(name: string): string | undefined {
  try {
    return path.dirname(require.resolve(`${name}/package.json`));
  } catch {
    return undefined;
  }
}

export const platform = `${process.platform}-${process.arch}`;
