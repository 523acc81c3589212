// Runs the edge functions under real Deno (local/gateway/local_gateway.ts) for `npm start` and tests.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { projectRoot } from "./migrate.ts";
import { packageDir, platform } from "./packages.ts";
import type { Child, ChildExit } from "./supervisor.ts";
import { eachLine } from "./child_output.ts";

export function denoBinary(): string {
  const candidates = [`@deno/${platform}-glibc`, `@deno/${platform}`]
    .map((pkg) => packageDir(pkg))
    .filter((dir): dir is string => !!dir)
    .map((dir) => path.join(dir, "deno"));
  candidates.push(path.join(projectRoot, "node_modules", "deno", "deno"));
  const found = candidates.find((c) => existsSync(c));
  if (!found) throw new Error("the Deno binary is missing: run npm install");
  return found;
}

export interface FunctionsServer extends Child {
  url: string;
  functionUrl(name: string): string;
  process: ChildProcess;
  /** called if the gateway exits without stop() having been asked */
  onUnexpectedExit(cb: (code: number | null) => void): void;
  stop(): Promise<void>;
}

export interface FunctionsOptions {
  port: number;
  env: Record<string, string>;
  /** receives every line the gateway and the functions print */
  onLog?: (line: string) => void;
  /** aborting before the gateway listens kills it and rejects */
  signal?: AbortSignal;
  /**
   * its own process group, so a Ctrl-C in the terminal reaches only `npm start`, which stops it in
   * order (instead of the supervisor seeing it die and starting it again)
   */
  detached?: boolean;
}

export async function startFunctions(opts: FunctionsOptions): Promise<FunctionsServer> {
  const child = spawn(
    denoBinary(),
    [
      "run", "--quiet", "--no-prompt", "--config", path.join(projectRoot, "deno.json"),
      "--allow-net", "--allow-env", "--allow-read", "--allow-sys",
      path.join(projectRoot, "local/gateway/local_gateway.ts"),
    ],
    {
      cwd: projectRoot,
      env: {
        PATH: process.env.PATH ?? "",
        HOME: process.env.HOME ?? "",
        DENO_DIR: process.env.DENO_DIR ?? path.join(projectRoot, "node_modules", ".deno-cache"),
        DENO_NO_UPDATE_CHECK: "1",
        NO_COLOR: "1",
        ...opts.env,
        RESERVE_FUNCTIONS_PORT: String(opts.port),
        // the gateway exits when this pipe closes, so it cannot outlive us, even after a SIGKILL
        RESERVE_EXIT_ON_STDIN_EOF: "1",
      },
      stdio: ["pipe", "pipe", "pipe"],
      detached: opts.detached ?? false,
    },
  );
  const exited = new Promise<ChildExit>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const abort = () => child.kill("SIGTERM");
  opts.signal?.addEventListener("abort", abort, { once: true });
  const log = opts.onLog ?? (() => {});
  let output: string[] = []; // kept only until the gateway listens, for the error if it never does
  let listening = false;
  const ready = new Promise<void>((resolve, reject) => {
    const onLine = (line: string) => {
      if (line) log(line);
      if (listening) return;
      output.push(line);
      if (/edge gateway listening/.test(line)) {
        listening = true;
        output = [];
        resolve();
      }
    };
    eachLine(child.stdout!, onLine);
    eachLine(child.stderr!, onLine);
    child.once("exit", (code, sig) => reject(new Error(`the edge gateway exited (${code ?? sig}) before listening: ${output.filter(Boolean).slice(-3).join(" | ")}`)));
  });
  try {
    await ready;
  } catch (err) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    throw err;
  } finally {
    opts.signal?.removeEventListener("abort", abort);
  }
  let stopping = false;
  const url = `http://127.0.0.1:${opts.port}`;
  return {
    url,
    functionUrl: (name) => `${url}/functions/v1/${name}`,
    process: child,
    pid: child.pid,
    exited,
    onUnexpectedExit(cb) {
      child.once("exit", (code) => {
        if (!stopping) cb(code);
      });
    },
    async stop() {
      stopping = true;
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}
