// What the runbook scenarios share: reading check_all_alerts as an on-call person does, letting an
// alert's `for` duration pass, and acting as an operator signed in as their own role.
import type postgres from "postgres";
import { expect } from "vitest";
import { attachGateway, processEvent } from "./money.ts";
import { asPersonalRole, personalRoleName } from "./operator_roles.ts";

type Sql = postgres.Sql;

export interface Alert {
  alert_name: string;
  severity: string;
  state: string;
  observed_value: string | null;
  first_seen: Date | null;
  fingerprint: string;
  runbook_section: string;
  summary: string;
}

export async function alerts(sql: Sql): Promise<Map<string, Alert>> {
  const rows = await sql<Alert[]>`select * from reserve.check_all_alerts()`;
  return new Map(rows.map((r) => [r.alert_name, r]));
}

export async function firing(sql: Sql): Promise<string[]> {
  return [...(await alerts(sql)).values()].filter((a) => a.state === "firing").map((a) => a.alert_name).sort();
}

/** The clock moves on for a pending alert: its episode started `minutes` earlier. */
export async function elapse(sql: Sql, alertName: string, minutes: number): Promise<void> {
  await sql`update reserve.alert_states set active_since = active_since - make_interval(mins => ${minutes})
            where alert_name = ${alertName}`;
}

/** Asserts the alert fires with the runbook's severity and section, through its `for` duration if any. */
export async function expectFires(sql: Sql, alertName: string, severity: string, section: string): Promise<Alert> {
  let a = (await alerts(sql)).get(alertName)!;
  expect(a, alertName).toBeDefined();
  if (a.state === "pending") {
    const [rule] = await sql`select extract(epoch from for_duration) / 60 as minutes from reserve.alert_rules where alert_name = ${alertName}`;
    await elapse(sql, alertName, Math.ceil(Number(rule.minutes)) + 1);
    a = (await alerts(sql)).get(alertName)!;
  }
  expect(a, `${alertName}: ${a.summary}`).toMatchObject({ state: "firing", severity, runbook_section: section });
  return a;
}

export async function expectResolved(sql: Sql, alertName: string): Promise<void> {
  const a = (await alerts(sql)).get(alertName)!;
  expect(a.state, `${alertName}: ${a.summary}`).toBe("resolved");
}

/**
 * Runs a repair as the operator on call, in one committed transaction, as the runbook says to: signed in
 * as their own role (`sql` is the test database's owner connection; the role's name is operatorName).
 */
export function asOperator<T>(sql: Sql, who: string, fn: (tx: postgres.TransactionSql) => Promise<T>): Promise<T> {
  return asPersonalRole(sql, who, fn);
}

/** The name the database proves for `who` acting through asOperator (what audit_logs.actor holds). */
export const operatorName = (sql: Sql, who: string): string => personalRoleName(sql, who);

/** A stay paid by card and confirmed the way a Stripe webhook confirms it: its reservation. */
export async function paidStay(sql: Sql, unitId: string, checkIn: string, checkOut: string, guest = `guest-${crypto.randomUUID()}`) {
  const [c] = await sql`select * from reserve.begin_checkout(${guest}, 'card', 'stripe', ${unitId}, ${checkIn}, ${checkOut}, 2)`;
  const pi = `pi_${crypto.randomUUID().replace(/-/g, "")}`;
  await attachGateway(sql, c.payment_id as string, pi);
  const w = await processEvent(sql, { event_id: `evt_${pi}`, event_at: new Date(), payload: {} },
                               { status: "succeeded", payment_reference: c.payment_id as string, gateway_payment_id: pi });
  return { paymentId: c.payment_id as string, intentId: c.booking_intent_id as string, reservationId: w.reservation_id as string, gatewayId: pi };
}
