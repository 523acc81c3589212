// Stripe events: verify the signature on the raw body, then one database call records and applies the
// event. 400 for a bad signature or body (nothing written), 200 for a done, duplicate or ignored event,
// 500 when processing failed so Stripe delivers it again.
import Stripe from "stripe";
import { stripeApi, stripeWebhookSecret } from "../_shared/provider_config.ts";
import { processEvent } from "../_shared/webhook.ts";
import { errorJson, methodNotAllowed, readBodyText, requireJson } from "../_shared/http.ts";
import { storableEvent, stripeClient, stripeEventUpdate } from "../_shared/providers/stripe.ts";

const crypto = Stripe.createSubtleCryptoProvider();
const MAX_BODY = 512 * 1024;
// verification needs no API key; a client without one is enough when only the webhook is configured
let verifier: Stripe | undefined;

export async function handler(req: Request): Promise<Response> {
  if (req.method !== "POST") return methodNotAllowed(["POST"]);
  const secret = stripeWebhookSecret();
  if (!secret) {
    console.error("webhook_stripe: Webhook secret not configured (STRIPE_WEBHOOK_SECRET)");
    return errorJson(500, "not_configured", "Webhook secret not configured");
  }
  const notJson = requireJson(req);
  if (notJson) return notJson;
  const body = await readBodyText(req, MAX_BODY);
  if (body instanceof Response) return body;
  const signature = req.headers.get("stripe-signature");
  if (!signature) return errorJson(400, "missing_signature", "the Stripe-Signature header is missing");

  verifier ??= stripeApi() ?? stripeClient({ secretKey: "sk_verify_only" });
  let event: Stripe.Event;
  try {
    event = await verifier.webhooks.constructEventAsync(body, signature, secret, 300, crypto);
  } catch (err) {
    if (err instanceof SyntaxError) return errorJson(400, "invalid_json", "the body is not valid JSON");
    console.warn(`webhook_stripe: Invalid signature: ${(err as Error).message}`);
    return errorJson(400, "invalid_signature", "the Stripe-Signature does not match the body, or is older than 300 s");
  }
  if (typeof event?.id !== "string" || typeof event?.type !== "string" || !event.data?.object) {
    return errorJson(400, "invalid_event", "the body is not a Stripe event");
  }

  return processEvent("webhook_stripe", {
    provider: "stripe",
    eventId: event.id,
    eventType: event.type,
    eventAt: new Date(event.created * 1000),
    payload: storableEvent(event),
    update: stripeEventUpdate(event),
  });
}
