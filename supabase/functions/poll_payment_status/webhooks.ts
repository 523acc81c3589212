// Failed webhook events, retried: those that carry what applying them needs are retried in SQL
// (retry_failed_webhooks); those that failed before the provider told us the status (its API did not
// answer the lookup) are looked up again here and recorded under the same event id.
import type { Sql } from "../_shared/db.ts";
import { mercadoPago, openPix } from "../_shared/provider_config.ts";
import { recordEvent } from "../_shared/webhook.ts";
import { fetchMercadoPagoUpdate } from "../_shared/providers/mercadopago.ts";
import { fetchOpenPixUpdate, openPixEventCorrelationId, type OpenPixEvent } from "../_shared/providers/openpix.ts";
import type { Provider, ProviderUpdate } from "../_shared/providers/types.ts";

export interface WebhookTally {
  webhooks_retried: number;
  webhooks_completed: number;
  webhooks_dead: number;
}

interface Refetch {
  webhook_id: string;
  provider: Provider;
  event_id: string;
  event_type: string;
  payload: Record<string, any> | null;
}

async function lookUp(w: Refetch): Promise<ProviderUpdate> {
  if (w.provider === "mercadopago") {
    const cfg = mercadoPago();
    const id = w.payload?.data?.id;
    if (!cfg || typeof id !== "string") throw new Error("mercadopago is not configured, or the event names no payment");
    return fetchMercadoPagoUpdate(cfg, id);
  }
  const cfg = openPix();
  const correlationId = openPixEventCorrelationId((w.payload ?? {}) as OpenPixEvent);
  if (w.provider !== "openpix" || !cfg || !correlationId) throw new Error(`${w.provider}: nothing to look up`);
  return fetchOpenPixUpdate(cfg, correlationId);
}

/** Starts no lookup after `deadline` (the poller's budget): what is left is claimed again next run. */
export async function retryWebhooks(sql: Sql, t: WebhookTally, deadline = Infinity): Promise<void> {
  const retried = await sql<{ webhook_status: string }[]>`select webhook_status from reserve.retry_failed_webhooks(100)`;
  const refetch = await sql<Refetch[]>`
    select webhook_id, provider, event_id, event_type, payload from reserve.claim_webhooks_to_refetch(50)`;
  const outcomes = retried.map((r) => r.webhook_status);
  for (const w of refetch) {
    if (Date.now() >= deadline) break;
    let update: ProviderUpdate | null = null;
    let processingError: string | undefined;
    try {
      update = await lookUp(w);
    } catch (err) {
      processingError = `lookup failed again: ${(err as Error)?.message ?? err}`;
    }
    const row = await recordEvent({ provider: w.provider, eventId: w.event_id, eventType: w.event_type, payload: w.payload, update, processingError });
    outcomes.push(row.webhook_status);
  }
  t.webhooks_retried += outcomes.length;
  t.webhooks_completed += outcomes.filter((s) => s === "completed" || s === "ignored").length;
  t.webhooks_dead += outcomes.filter((s) => s === "dead").length;
}
