// Keeps a child process of `npm start` running: when it dies on its own it is started again after a
// backoff (0.5 s doubling to 30 s; back to 0.5 s once it has stayed up a minute), and each death is one
// line in the log. PostgreSQL is not supervised: the stack ends with it (see stack.ts).

export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** One running instance of a supervised child. */
export interface Child {
  pid: number | undefined;
  /** resolves when the process has exited, however it ended */
  exited: Promise<ChildExit>;
  stop(): Promise<void>;
}

export interface Backoff {
  initialMs: number;
  maxMs: number;
  /** a child that stayed up this long starts the next backoff from initialMs again */
  healthyAfterMs: number;
}

export const DEFAULT_BACKOFF: Backoff = { initialMs: 500, maxMs: 30_000, healthyAfterMs: 60_000 };

export interface Supervised<C extends Child> {
  readonly name: string;
  /** the instance running now (the last one started) */
  readonly current: C;
  /** how many times it has been started again after dying */
  readonly restarts: number;
  /** stops the running instance and starts a new one now (not a crash: no backoff, no crash line) */
  replace(): Promise<C>;
  /** called with each instance started after the first */
  onRestart(cb: (child: C) => void): void;
  stop(): Promise<void>;
}

export function describeExit(exit: ChildExit): string {
  return exit.signal ? `signal ${exit.signal}` : `exit code ${exit.code}`;
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;

/**
 * Starts the child (the first start's failure is the caller's) and restarts it whenever it dies until
 * stop() is called. `start` is called again for every restart, so it decides the environment.
 */
export async function supervise<C extends Child>(
  name: string,
  start: () => Promise<C>,
  log: (line: string) => void,
  backoff: Backoff = DEFAULT_BACKOFF,
): Promise<Supervised<C>> {
  let current = await start();
  let startedAt = Date.now();
  let restarts = 0;
  let stopping = false;
  let replacing: Promise<C> | undefined;
  let delayMs = backoff.initialMs;
  let wake: (() => void) | undefined;
  const listeners: ((child: C) => void)[] = [];

  const sleep = (ms: number) => new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    wake = () => { clearTimeout(timer); resolve(); };
  });

  const watch = async () => {
    for (;;) {
      const child = current;
      const exit = await child.exited;
      if (stopping) return;
      if (replacing) { await replacing.catch(() => {}); continue; }
      if (child !== current) continue;
      const upMs = Date.now() - startedAt;
      if (upMs >= backoff.healthyAfterMs) delayMs = backoff.initialMs;
      log(`supervisor: ${name} (pid ${child.pid}) died (${describeExit(exit)}) after ${seconds(upMs)} up; restarting in ${seconds(delayMs)}`);
      for (;;) {
        await sleep(delayMs);
        delayMs = Math.min(delayMs * 2, backoff.maxMs);
        if (stopping) return;
        try {
          current = await start();
          startedAt = Date.now();
          restarts++;
          for (const cb of listeners) cb(current);
          break;
        } catch (err) {
          log(`supervisor: ${name} did not start again (${(err as Error).message.split("\n")[0]}); retrying in ${seconds(delayMs)}`);
        }
      }
    }
  };
  const watching = watch();

  return {
    name,
    get current() { return current; },
    get restarts() { return restarts; },
    onRestart(cb) { listeners.push(cb); },
    replace() {
      replacing ??= (async () => {
        try {
          await current.stop();
          current = await start();
          startedAt = Date.now();
          return current;
        } finally {
          replacing = undefined;
        }
      })();
      return replacing;
    },
    async stop() {
      stopping = true;
      wake?.();
      await replacing?.catch(() => {});
      await current.stop();
      await watching;
    },
  };
}
