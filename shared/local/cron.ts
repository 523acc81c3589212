// The local stand-in for pg_cron + pg_net: POSTs a function on an interval with the cron secret, as
// the migration's schedule does on Supabase. One run at a time; a run still going skips a tick.
// everyMs 0 schedules nothing (runNow still works).
export interface LocalCron {
  runNow(): Promise<unknown>;
  stop(): void;
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
