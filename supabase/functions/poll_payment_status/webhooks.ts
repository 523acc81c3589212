// Failed webhook events, retried: those that carry what applying them needs are retried in SQL
// (retry_failed_webhooks); those that failed before the provider told us the status (its API did not
// answer the lookup) are looked up again through the provider's module with the lookup the event kept,
// and recorded under the same event id.
import type { Sql } from "../_shared/db.ts";
import { providerNamed } from "../_shared/providers/registry.ts";
import type { LookupKey } from "../_shared/providers/types.ts";
import { lookUpEvent, recordEvent } from "../_shared/webhook.ts";

export interface WebhookTally {
  webhooks_retried: number;
  webhooks_completed: number;
  webhooks_dead: number;
}

interface Refetch {
  webhook_id: string;
  provider: string;
  event_id: string;
  event_type: string;
  payload: Record<string, unknown> | null;
  lookup: LookupKey | null;
}

export async function retryWebhooks(sql: Sql, t: WebhookTally): Promise<void> {
  const retried = await sql<{ webhook_status: string }[]>`select webhook_status from reserve.retry_failed_webhooks(100)`;
  const refetch = await sql<Refetch[]>`
    select webhook_id, provider, event_id, event_type, payload, lookup from reserve.claim_webhooks_to_refetch(50)`;
  const outcomes = retried.map((r) => r.webhook_status);
  for (const w of refetch) {
    const provider = providerNamed(w.provider);
    const found = provider && w.lookup
      ? await lookUpEvent(provider, w.lookup)
      : { update: null, poison: `${w.provider}: the event kept nothing to ask the provider` };
    const row = await recordEvent({
      provider: w.provider, eventId: w.event_id, eventType: w.event_type, payload: w.payload, lookup: w.lookup ?? undefined,
      update: found.update, note: found.note, poison: found.poison,
      processingError: found.processingError && `lookup failed again: ${found.processingError}`,
    });
    outcomes.push(row.webhook_status);
  }
  t.webhooks_retried += outcomes.length;
  t.webhooks_completed += outcomes.filter((s) => s === "completed" || s === "ignored").length;
  t.webhooks_dead += outcomes.filter((s) => s === "dead").length;
}
