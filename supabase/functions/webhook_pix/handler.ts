// PIX notifications at /webhook_pix/<provider> (mercadopago, openpix): the provider's module verifies
// and parses the delivery (MercadoPago's x-signature within its ts window, or an IPN checked by fetching
// the payment; OpenPIX's RSA x-webhook-signature), one database call records and applies it
// (_shared/webhook.ts). Same rules as Stripe: 400 and nothing written for a bad signature or body, 200
// when done, duplicate, ignored or dead-lettered, 500 when processing failed so the provider delivers again.
import { errorJson } from "../_shared/http.ts";
import { handleWebhook } from "../_shared/webhook.ts";
import { providerNamed, providersTaking } from "../_shared/providers/registry.ts";

export function handler(req: Request): Promise<Response> {
  const url = new URL(req.url);
  const name = url.pathname.match(/^\/webhook_pix\/([a-z0-9_]{1,40})\/?$/)?.[1];
  const provider = name ? providerNamed(name) : undefined;
  if (!provider || !provider.methods.includes("pix")) {
    const names = providersTaking("pix").map((p) => p.name).join(", ");
    return Promise.resolve(errorJson(404, "not_found", `post to /webhook_pix/<provider>, one of the PIX providers (${names})`));
  }
  return handleWebhook("webhook_pix", provider, req, url);
}
