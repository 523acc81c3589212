// The year dataset (`npm run seed:large`'s database) as the runbook benches open and prepare it:
// bench:runbook and bench:runbook-doc start it the same way, stamp the stays of an older seed, and set
// the checks' watermark minutes before its newest payment.
import { existsSync } from "node:fs";
import path from "node:path";
import type postgres from "postgres";
import { freePort } from "../../local/ports.ts";
import { startLocalPostgres } from "../../local/postgres.ts";

export const YEAR_DB = "reserve_large";

/** The dataset's cluster in `dir`, started for reading at scale. */
export async function startYearDataset(dir: string) {
  if (!existsSync(path.join(dir, "postgres"))) throw new Error(`no large database in ${dir}: run npm run seed:large first`);
  const pg = await startLocalPostgres({
    dataDir: path.join(dir, "postgres"), port: await freePort(), logFile: path.join(dir, "postgres.log"),
    // wal_level minimal: a migration that rewrites a table into one it created (the partitioning of
    // audit_logs) writes no WAL for it, so a 5M-row conversion fits the disk beside the copy
    settings: { shared_buffers: "2GB", work_mem: "64MB", maintenance_work_mem: "1GB", wal_level: "minimal", max_wal_senders: "0" },
  });
  return { pg, url: pg.url(YEAR_DB) };
}

/**
 * A dataset seeded before reservations.nights_changed_at existed (the migration stamped only those
 * written since the last watermark, with their updated_at): its stays stamped as the trigger would have,
 * once. A stay's nights change when it is created and when it is cancelled; the seed's other updates
 * (confirmations, a day's check-ins) change none. Returns how many were stamped.
 */
export async function stampSeededStays(sql: postgres.Sql): Promise<number> {
  await sql`set session_replication_role = replica`;
  const [stamps] = await sql`with u as (update reserve.reservations set nights_changed_at = coalesce(cancelled_at, created_at)
                                        where nights_changed_at is distinct from coalesce(cancelled_at, created_at) returning 1)
                             select count(*)::int as n from u`;
  await sql`set session_replication_role = origin`;
  // that rewrote every stay: left unvacuumed, each probe of its indexes walks the dead versions
  if (stamps!.n) await sql`vacuum reserve.reservations`;
  return stamps!.n as number;
}

/** The checks' watermark (integrity_audits row `auditId`) `minutes` before the newest payment, and what that window holds. */
export async function setChecksWindow(sql: postgres.Sql, auditId: string, minutes: number) {
  const [w] = await sql`
    update reserve.integrity_audits set verified_through = (select max(created_at) from reserve.payments) - make_interval(mins => ${minutes}),
      ledger_summed_before = (select max(created_at) from reserve.payments) - make_interval(mins => ${minutes})
    where id = ${auditId} returning verified_through,
      (select count(*) from reserve.ledger_entries e where e.created_at >= verified_through) as legs,
      (select count(*) from reserve.units_written_since(verified_through)) as units,
      (select count(*) from reserve.reservations r where r.nights_changed_at >= verified_through) as stays`;
  return w as { verified_through: Date; legs: string; units: string; stays: string };
}

/** Row counts of the big tables and the database's size, for a bench's header. */
export async function datasetSizes(sql: postgres.Sql) {
  const [sizes] = await sql`select (select count(*) from reserve.payments) as payments, (select count(*) from reserve.ledger_entries) as ledger_entries,
    (select count(*) from reserve.availability_calendar) as nights, (select count(*) from reserve.audit_logs) as audit,
    (select count(*) from reserve.processed_webhooks) as webhooks, pg_size_pretty(pg_database_size(current_database())) as size`;
  return sizes!;
}
