// PIX notifications, apart from Stripe's: /webhook_pix/mercadopago (x-signature HMAC; the body carries
// no status, so the payment is fetched from MercadoPago) and /webhook_pix/openpix (x-webhook-signature,
// RSA over the raw body). Same rules as Stripe: 400 and nothing written for a bad signature or body,
// 200 when done, duplicate or ignored, 500 when processing failed so the provider delivers again.
import { mercadoPago, mercadoPagoWebhookSecret, openPix, openPixPublicKeys } from "../_shared/provider_config.ts";
import { processEvent } from "../_shared/webhook.ts";
import { sha256Hex } from "../_shared/crypto.ts";
import { errorJson, methodNotAllowed, readBodyText, requireJson } from "../_shared/http.ts";
import { fetchMercadoPagoUpdate, verifyMercadoPagoSignature } from "../_shared/providers/mercadopago.ts";
import {
  fetchOpenPixUpdate, OPENPIX_REFUND_EVENTS, openPixEventCorrelationId, openPixEventUpdate, verifyOpenPixSignature,
  type OpenPixEvent,
} from "../_shared/providers/openpix.ts";
import { ProviderError } from "../_shared/providers/types.ts";

const MAX_BODY = 256 * 1024;

function parseObject(body: string): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(body);
    return v && typeof v === "object" && !Array.isArray(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

async function mercadopago(req: Request, url: URL, body: string): Promise<Response> {
  const secret = mercadoPagoWebhookSecret();
  const cfg = mercadoPago();
  if (!secret || !cfg) {
    console.error("webhook_pix: Webhook secret not configured (MERCADOPAGO_WEBHOOK_SECRET, MERCADOPAGO_ACCESS_TOKEN)");
    return errorJson(500, "not_configured", "Webhook secret not configured");
  }
  const dataId = url.searchParams.get("data.id") ?? url.searchParams.get("id");
  const ok = await verifyMercadoPagoSignature(req.headers.get("x-signature"), req.headers.get("x-request-id"), dataId, secret);
  if (!ok) {
    console.warn("webhook_pix: Invalid signature (mercadopago)");
    return errorJson(400, "invalid_signature", "the x-signature does not match this notification");
  }
  const n = parseObject(body);
  if (!n) return errorJson(400, "invalid_json", "the body is not a JSON object");
  const type = String(n.type ?? url.searchParams.get("type") ?? url.searchParams.get("topic") ?? "");
  const action = typeof n.action === "string" ? n.action.slice(0, 100) : type;
  if (!dataId || !type) return errorJson(400, "invalid_event", "the notification names no data.id or type");
  // the body is not signed: the event id comes from what is (data.id and x-request-id), and only the
  // notification's own fields are kept, so a replayed signature cannot make up events or store junk
  const requestId = req.headers.get("x-request-id") ?? req.headers.get("x-signature")?.match(/ts=([^,]+)/)?.[1];
  const eventId = `${dataId}:${requestId}`;
  const kept = { id: n.id, action, type, data: { id: dataId }, date_created: n.date_created, live_mode: n.live_mode };
  if (type !== "payment") {
    return processEvent("webhook_pix", { provider: "mercadopago", eventId, eventType: action || type, payload: kept, update: null });
  }
  try {
    return processEvent("webhook_pix", {
      provider: "mercadopago", eventId, eventType: action, payload: kept, update: await fetchMercadoPagoUpdate(cfg, dataId),
    });
  } catch (err) {
    if (!(err instanceof ProviderError)) throw err;
    return processEvent("webhook_pix", {
      provider: "mercadopago", eventId, eventType: action, payload: kept, update: null,
      processingError: `could not fetch payment ${dataId}: ${err.message}`,
    });
  }
}

async function openpix(req: Request, body: string): Promise<Response> {
  const cfg = openPix();
  let keys = await openPixPublicKeys();
  if (!cfg || keys.length === 0) {
    console.error("webhook_pix: Webhook secret not configured (OPENPIX_APP_ID, OPENPIX_WEBHOOK_PUBLIC_KEY)");
    return errorJson(500, "not_configured", "Webhook secret not configured");
  }
  const signature = req.headers.get("x-webhook-signature");
  let ok = await verifyOpenPixSignature(body, signature, keys);
  if (!ok && signature) {
    // OpenPIX may have rotated its key since we fetched it
    keys = await openPixPublicKeys(true);
    ok = await verifyOpenPixSignature(body, signature, keys);
  }
  if (!ok) {
    console.warn("webhook_pix: Invalid signature (openpix)");
    return errorJson(400, "invalid_signature", "the x-webhook-signature does not match the body");
  }
  const e = parseObject(body) as OpenPixEvent | undefined;
  if (!e) return errorJson(400, "invalid_json", "the body is not a JSON object");
  if (typeof e.event !== "string") return errorJson(400, "invalid_event", "the body names no event");
  const correlationId = openPixEventCorrelationId(e);
  // OpenPIX events carry no id of their own: a redelivery has the same body, so its hash is the id
  const eventId = `${e.event}:${correlationId ?? "-"}:${(await sha256Hex(body)).slice(0, 32)}`;
  if (OPENPIX_REFUND_EVENTS.has(e.event) && correlationId) {
    try {
      return processEvent("webhook_pix", {
        provider: "openpix", eventId, eventType: e.event, payload: e, update: await fetchOpenPixUpdate(cfg, correlationId),
      });
    } catch (err) {
      if (!(err instanceof ProviderError)) throw err;
      return processEvent("webhook_pix", {
        provider: "openpix", eventId, eventType: e.event, payload: e, update: null,
        processingError: `could not fetch charge ${correlationId}: ${err.message}`,
      });
    }
  }
  return processEvent("webhook_pix", { provider: "openpix", eventId, eventType: e.event, payload: e, update: openPixEventUpdate(e) });
}

export async function handler(req: Request): Promise<Response> {
  const url = new URL(req.url);
  const source = url.pathname.match(/^\/webhook_pix\/(mercadopago|openpix)\/?$/)?.[1];
  if (!source) return errorJson(404, "not_found", "post to /webhook_pix/mercadopago or /webhook_pix/openpix");
  if (req.method !== "POST") return methodNotAllowed(["POST"]);
  const notJson = requireJson(req);
  if (notJson) return notJson;
  const body = await readBodyText(req, MAX_BODY);
  if (body instanceof Response) return body;
  return source === "mercadopago" ? mercadopago(req, url, body) : openpix(req, body);
}
