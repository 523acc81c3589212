// The edge functions under real Deno, pointed at a test database.
import { startFunctions, type FunctionsServer } from "../../local/functions.ts";
import { DEFAULT_LOCAL_JWT_SECRET } from "../../local/keys.ts";
import { freePort } from "../../local/ports.ts";

export async function startTestFunctions(databaseUrl: string, env: Record<string, string> = {}): Promise<FunctionsServer> {
  const lines: string[] = [];
  try {
    return await startFunctions({
      port: await freePort(),
      env: { SUPABASE_DB_URL: databaseUrl, RESERVE_JWT_SECRET: DEFAULT_LOCAL_JWT_SECRET, ...env },
      onLog: (l) => lines.push(l),
    });
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${lines.join("\n")}`);
  }
}
