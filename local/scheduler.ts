// The scheduler of `npm start` as a process of its own (so it can be supervised): the local stand-in for
// pg_cron, posting poll_payment_status every RESERVE_POLL_INTERVAL_S, notify (alert evaluation and
// delivery) every RESERVE_NOTIFY_INTERVAL_S, running the retention cleanup daily, the integrity audit
// hourly and its watermark each minute, and posting reconcile every RESERVE_RECONCILE_INTERVAL_S (it reconciles yesterday until done,
// then has nothing to do) with the ledger's full balance check (cron.ts). Started by stack.ts with its
// settings as JSON in RESERVE_SCHEDULER_OPTIONS.
import { pathToFileURL } from "node:url";
import { scheduleFunction, scheduleSql } from "./cron.ts";
import { exitWithParent, startNodeChild, type NodeChild } from "./node_child.ts";

export interface SchedulerOptions {
  pollUrl: string;
  cronSecret: string;
  pollEveryMs: number;
  /** notify: evaluate_alerts() and the outbox's delivery (pg_cron: every minute) */
  notifyUrl?: string;
  notifyEveryMs?: number;
  databaseUrl: string;
  retentionEveryMs: number;
  reconcileUrl?: string;
  reconcileEveryMs?: number;
  /** run_integrity_audit (pg_cron: hourly); 0 = never */
  integrityAuditEveryMs?: number;
  /** verify_recent_writes, which moves the checks' watermark (pg_cron: every minute); 0 = never */
  integrityVerifyEveryMs?: number;
}

export function startSchedulerProcess(options: SchedulerOptions, onLog?: (line: string) => void): Promise<NodeChild<{ type: "ready" }>> {
  return startNodeChild<{ type: "ready" }>({
    name: "scheduler", entry: "local/scheduler.ts", env: { RESERVE_SCHEDULER_OPTIONS: JSON.stringify(options) }, onLog,
  });
}

function main() {
  const o = JSON.parse(process.env.RESERVE_SCHEDULER_OPTIONS ?? "{}") as SchedulerOptions;
  const log = (line: string) => console.log(line);
  process.on("unhandledRejection", (reason) => log(`unhandled rejection (kept running): ${(reason as Error)?.message ?? reason}`));
  const poll = scheduleFunction(o.pollUrl, o.cronSecret, o.pollEveryMs, log);
  const notify = o.notifyUrl ? scheduleFunction(o.notifyUrl, o.cronSecret, o.notifyEveryMs ?? 0, log) : undefined;
  const retention = scheduleSql(o.databaseUrl, "call reserve.retention_cleanup_job()", o.retentionEveryMs, log);
  const reconcile = o.reconcileUrl ? scheduleFunction(o.reconcileUrl, o.cronSecret, o.reconcileEveryMs ?? 0, log) : undefined;
  const ledgerCheck = scheduleSql(o.databaseUrl, "call reserve.ledger_balance_full_check()", o.retentionEveryMs, log);
  const integrityAudit = scheduleSql(o.databaseUrl, "select reserve.run_integrity_audit()", o.integrityAuditEveryMs ?? 0, log);
  const integrityVerify = scheduleSql(o.databaseUrl, "select reserve.verify_recent_writes()", o.integrityVerifyEveryMs ?? 0, log);
  // the timers are unref'd (cron.ts); this keeps the process up until it is told to stop
  const alive = setInterval(() => {}, 1 << 30);
  exitWithParent(async () => {
    clearInterval(alive);
    poll.stop();
    notify?.stop();
    retention.stop();
    reconcile?.stop();
    ledgerCheck.stop();
    integrityAudit.stop();
    integrityVerify.stop();
  });
  process.send?.({ type: "ready" });
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) main();
