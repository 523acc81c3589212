// The local stand-in for pg_cron (+ pg_net): POSTs a function with the cron secret, or runs a SQL
// statement, on an interval, as the migrations' schedules do on Supabase. One run at a time; a run
// still going skips a tick. everyMs 0 schedules nothing (runNow still works).
import postgres from "postgres";

export interface LocalCron {
  runNow(): Promise<unknown>;
  stop(): void;
}

/** Runs a SQL statement every everyMs (0: never), one run at a time, as a pg_cron SQL job does. */
export function scheduleSql(url: string, statement: string, everyMs: number, log: (line: string) => void): LocalCron {
  let running: Promise<unknown> | undefined;
  const run = () => {
    running ??= (async () => {
      // no start-up type fetch: its dropped promise ends a process when the backend is killed (db.ts)
      const sql = postgres(url, { max: 1, onnotice: () => {}, fetch_types: false, connect_timeout: 10 });
      try {
        return await sql.unsafe(statement);
      } catch (err) {
        log(`cron: ${statement} failed: ${(err as Error).message}`);
        return undefined;
      } finally {
        await sql.end();
        running = undefined;
      }
    })();
    return running;
  };
  const timer = everyMs > 0 ? setInterval(() => void run(), everyMs) : undefined;
  timer?.unref();
  return { runNow: run, stop: () => clearInterval(timer) };
}

export function scheduleFunction(
  url: string, secret: string, everyMs: number, log: (line: string) => void, body: Record<string, unknown> = {},
): LocalCron {
  let running: Promise<unknown> | undefined;
  const run = () => {
    running ??= (async () => {
      try {
        const res = await fetch(url, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: `Bearer ${secret}` },
          body: JSON.stringify({ scheduled_at: new Date().toISOString(), ...body }),
        });
        const out = await res.json().catch(() => ({}));
        if (!res.ok) log(`cron: ${url} answered ${res.status}`);
        return out;
      } catch (err) {
        log(`cron: ${url} failed: ${(err as Error).message}`);
        return undefined;
      } finally {
        running = undefined;
      }
    })();
    return running;
  };
  const timer = everyMs > 0 ? setInterval(() => void run(), everyMs) : undefined;
  timer?.unref();
  return { runNow: run, stop: () => clearInterval(timer) };
}
