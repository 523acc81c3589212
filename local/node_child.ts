// A Node child process of `npm start` (the provider sandbox, the scheduler): `node --import tsx <entry>`,
// its output passed on line by line, ready when it sends { type: "ready" } over IPC, stopped with SIGTERM
// (SIGKILL after 5 s). Each child exits by itself when its IPC channel closes, so none outlives a parent
// that was killed.
import { spawn } from "node:child_process";
import path from "node:path";
import { eachLine } from "./child_output.ts";
import { projectRoot } from "./migrate.ts";
import type { Child, ChildExit } from "./supervisor.ts";

export interface NodeChild<R> extends Child {
  ready: R;
}

export async function startNodeChild<R extends { type: "ready" }>(opts: {
  name: string;
  /** path from the project root */
  entry: string;
  env: Record<string, string>;
  onLog?: (line: string) => void;
  startTimeoutMs?: number;
}): Promise<NodeChild<R>> {
  const child = spawn(process.execPath, ["--import", "tsx", path.join(projectRoot, opts.entry)], {
    cwd: projectRoot,
    env: { ...process.env, ...opts.env },
    stdio: ["ignore", "pipe", "pipe", "ipc"],
    // its own process group: a terminal's Ctrl-C is for `npm start`, which stops its children in order
    // (a child hit by the same Ctrl-C would look like a crash to the supervisor)
    detached: true,
  });
  const exited = new Promise<ChildExit>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const recent: string[] = [];
  const log = (line: string) => {
    if (!line) return;
    recent.push(line);
    if (recent.length > 5) recent.shift();
    opts.onLog?.(line);
  };
  eachLine(child.stdout!, log);
  eachLine(child.stderr!, log);
  const timeoutMs = opts.startTimeoutMs ?? 30_000;
  let ready: R;
  try {
    ready = await new Promise<R>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the ${opts.name} did not start within ${timeoutMs} ms`)), timeoutMs);
      child.on("message", (m: R) => {
        if (m?.type === "ready") { clearTimeout(timer); resolve(m); }
      });
      void exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`the ${opts.name} exited (${code ?? signal}) before it was ready${recent.length ? `: ${recent.join(" | ")}` : ""}`));
      });
    });
  } catch (err) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    throw err;
  }
  return {
    ready,
    pid: child.pid,
    exited,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** For a child's entry: exit when the parent goes (IPC closed) or asks (SIGTERM, SIGINT, SIGHUP). */
export function exitWithParent(stop: () => Promise<void>): void {
  let stopping = false;
  const end = () => {
    if (stopping) return;
    stopping = true;
    void stop().catch(() => {}).finally(() => process.exit(0));
  };
  for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"] as const) process.on(sig, end);
  process.on("disconnect", end);
}
