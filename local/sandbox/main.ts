// The provider sandbox as a process of its own, so `npm start` can supervise it (local/sandbox_process.ts
// starts it). Options come as JSON in RESERVE_SANDBOX_OPTIONS; once listening it sends its address and
// keys to the parent over the IPC channel, prints its log lines on stdout, and exits when the parent
// goes (IPC disconnect) or on SIGTERM/SIGINT.
import { exitWithParent } from "../node_child.ts";
import { startProviderSandbox } from "./index.ts";
import type { SandboxOptions } from "./types.ts";

/** What the child tells its parent once it listens. */
export interface SandboxReady {
  type: "ready";
  url: string;
  stripe: { host: string; port: number; protocol: "http"; secretKey: string; webhookSecret: string };
  mercadopago: { apiBase: string; accessToken: string; webhookSecret: string };
  openpix: { apiBase: string; appId: string; webhookPublicKey: string };
  /** the alert receivers: PagerDuty's Events API v2 and a Slack incoming webhook */
  pagerduty: { eventsUrl: string; routingKey: string };
  slack: { webhookUrl: string };
}

/** SandboxOptions that travel as JSON, plus where the sandbox keeps its state across restarts. */
export type SandboxProcessOptions = Omit<SandboxOptions, "log"> & { stateDir?: string };

// a stray rejection in the sandbox is logged, not a crash (the supervisor would restart it, but the
// state of the payments in flight would go with it)
process.on("unhandledRejection", (reason) => {
  console.error(`[sandbox] unhandled rejection (kept running): ${(reason as Error)?.message ?? reason}`);
});

const options = JSON.parse(process.env.RESERVE_SANDBOX_OPTIONS ?? "{}") as SandboxProcessOptions;
// stateDir is the sandbox's own persistence option (ignored by a sandbox that has none yet)
const sandbox = await startProviderSandbox({ ...options, log: (line) => console.log(line) } as SandboxOptions);

exitWithParent(() => sandbox.stop());

const ready: SandboxReady = {
  type: "ready", url: sandbox.url, stripe: sandbox.stripe, mercadopago: sandbox.mercadopago, openpix: sandbox.openpix,
  pagerduty: sandbox.pagerduty, slack: sandbox.slack,
};
process.send?.(ready);
