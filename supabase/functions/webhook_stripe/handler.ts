// Stripe events: the stripe module verifies Stripe-Signature on the raw body and reduces the event to the
// provider's normalized update; one database call records and applies it (_shared/webhook.ts). 400 for a
// bad signature or body (nothing written), 200 for a done, duplicate, ignored or dead-lettered event, 500
// when processing failed so Stripe delivers it again.
import { handleWebhook } from "../_shared/webhook.ts";
import { PROVIDERS } from "../_shared/providers/registry.ts";

export function handler(req: Request): Promise<Response> {
  return handleWebhook("webhook_stripe", PROVIDERS.stripe, req);
}
