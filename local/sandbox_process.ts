// The provider sandbox as a child process (local/sandbox/main.ts) for `npm start`, so that it can die and
// be started again without taking the stack with it. Its control methods are reached over its HTTP
// control API (POST /_sandbox/<method> with the arguments as a JSON array), as a person would.
import { startNodeChild } from "./node_child.ts";
import type { SandboxProcessOptions, SandboxReady } from "./sandbox/main.ts";
import type { SandboxControl } from "./sandbox/types.ts";
import type { Child } from "./supervisor.ts";

/** Every control method, over HTTP: the same arguments, the answer as a promise. */
export type RemoteControl = {
  [K in keyof SandboxControl]: (...args: Parameters<SandboxControl[K]>) => Promise<Awaited<ReturnType<SandboxControl[K]>>>;
};

export interface SandboxProcess extends Child, Omit<SandboxReady, "type"> {
  control: RemoteControl;
}

/** Calls control methods at a running sandbox's /_sandbox over HTTP. */
export function remoteControl(url: string): RemoteControl {
  const reads: Record<string, (args: unknown[]) => string> = {
    deliveries: () => "deliveries",
    events: (a) => `events${a[0] ? `/${a[0]}` : ""}`,
    payment: (a) => `payment/${a[0]}/${encodeURIComponent(String(a[1]))}`,
    // what the alert receivers got
    pagerdutyEvents: () => "pagerdutyEvents",
    pagerdutyAlerts: () => "pagerdutyAlerts",
    pagerdutyAlert: (a) => `pagerdutyAlert/${encodeURIComponent(String(a[0]))}`,
    slackMessages: () => "slackMessages",
  };
  return new Proxy({} as RemoteControl, {
    get: (_t, method: string) => async (...args: unknown[]) => {
      const read = reads[method];
      const res = read
        ? await fetch(`${url}/_sandbox/${read(args)}`)
        : await fetch(`${url}/_sandbox/${method}`, {
          method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(args),
        });
      const body = await res.json().catch(() => ({}));
      if ((method === "payment" || method === "pagerdutyAlert") && res.status === 404) return undefined;
      if (!res.ok) throw new Error(`sandbox ${method}: ${res.status} ${(body as { error?: string }).error ?? ""}`.trim());
      return body;
    },
  });
}

export async function startSandboxProcess(options: SandboxProcessOptions, onLog?: (line: string) => void): Promise<SandboxProcess> {
  const child = await startNodeChild<SandboxReady>({
    name: "provider sandbox", entry: "local/sandbox/main.ts",
    env: { RESERVE_SANDBOX_OPTIONS: JSON.stringify(options) }, onLog,
  });
  const { type: _type, ...info } = child.ready;
  return { ...info, control: remoteControl(info.url), pid: child.pid, exited: child.exited, stop: child.stop };
}
