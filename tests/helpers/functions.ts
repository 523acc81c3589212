// The edge functions under real Deno, pointed at a test database.
import { startFunctions, type FunctionsServer } from "../../local/functions.ts";
import { DEFAULT_LOCAL_JWT_SECRET } from "../../local/keys.ts";
import { opsConsoleDbUrl } from "../../local/ops_console_login.ts";
import { freePort } from "../../local/ports.ts";
import { authEnv } from "./auth.ts";

export async function startTestFunctions(databaseUrl: string, env: Record<string, string> = {}): Promise<FunctionsServer> {
  const lines: string[] = [];
  const port = await freePort();
  try {
    return await startFunctions({
      port,
      env: { SUPABASE_DB_URL: databaseUrl, RESERVE_OPS_DB_URL: opsConsoleDbUrl(databaseUrl), ...authEnv(port), RESERVE_JWT_SECRET: DEFAULT_LOCAL_JWT_SECRET, ...env },
      onLog: (l) => lines.push(l),
    });
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${lines.join("\n")}`);
  }
}
