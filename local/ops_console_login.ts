// The ops console's own database login (role reserve_ops_console, made by the migrations without a
// password): locally it gets a fixed password, and the functions get RESERVE_OPS_DB_URL as a deploy
// sets it (docs/DEPLOYMENT.md), so the console's on-call actions and ledger corrections reach the
// database on that login.
import postgres from "postgres";

export const OPS_CONSOLE_ROLE = "reserve_ops_console";
/** A local development password, like LOCAL_DB_PASSWORD: never a deployed one. */
export const LOCAL_OPS_CONSOLE_PASSWORD = "ops-console-local";

/** Lets reserve_ops_console sign in with the local password (roles are the cluster's: once per cluster). */
export async function enableOpsConsoleLogin(adminUrl: string): Promise<void> {
  const sql = postgres(adminUrl, { max: 1, onnotice: () => {}, fetch_types: false });
  try {
    await sql.unsafe(`alter role ${OPS_CONSOLE_ROLE} login password '${LOCAL_OPS_CONSOLE_PASSWORD}'`);
  } finally {
    await sql.end();
  }
}

/** The database of `databaseUrl`, signed in as the ops console's login. */
export function opsConsoleDbUrl(databaseUrl: string): string {
  const u = new URL(databaseUrl);
  u.username = OPS_CONSOLE_ROLE;
  u.password = LOCAL_OPS_CONSOLE_PASSWORD;
  return u.toString();
}
