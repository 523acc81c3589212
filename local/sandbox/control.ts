// The sandbox's levers: what a guest, a bank or a flaky network would do, in-process for tests and
// over HTTP under /_sandbox for `npm start` users (POST /_sandbox/<method> with a JSON array of arguments).
import type { Dispatcher } from "./webhooks.ts";
import type { Faults } from "./faults.ts";
import type { Receivers } from "./receivers.ts";
import type { MercadoPago } from "./mercadopago.ts";
import type { OpenPix } from "./openpix.ts";
import type { StripeState } from "./stripe.ts";
import type { Provider, SandboxControl } from "./types.ts";
import { SandboxError } from "./types.ts";
import type { ApiRequest, ApiResponse } from "./util.ts";
import { parseJson } from "./util.ts";
import { stripePayUrl } from "./pages.ts";

export interface ControlDeps {
  stripe: StripeState;
  mercadopago: MercadoPago;
  openpix: OpenPix;
  dispatcher: Dispatcher;
  faults: Faults;
  webhookUrls: { stripe: string | null; openpix: string | null };
  url: string;
  receivers: Receivers;
}

export function createControl(d: ControlDeps): SandboxControl {
  const clone = <T>(x: T): T => structuredClone(x);
  return {
    stripeConfirm: (piId, outcome, opts) => clone(d.stripe.confirm(piId, outcome, opts ?? {})),
    stripeSettle: (piId, outcome) => clone(d.stripe.settle(piId, outcome)),
    stripeDispute: (piId, opts) => clone(d.stripe.dispute(piId, opts?.reason, opts?.amount)),
    stripeCloseDispute: (piId, outcome) => clone(d.stripe.closeDispute(piId, outcome)),
    mercadopagoPay: (id, opts) => d.mercadopago.pay(Number(id), opts ?? {}),
    openpixPay: (correlationID, opts) => d.openpix.pay(correlationID, opts ?? {}),
    expire: (provider, id) => {
      if (provider === "mercadopago") return d.mercadopago.expireNow(Number(id));
      if (provider === "openpix") return d.openpix.expireNow(String(id));
      throw new SandboxError(400, `expire takes mercadopago or openpix, not ${provider}`);
    },
    stripePayout: (opts) => clone(d.stripe.payout(opts ?? {})),
    stripePayoutOutcome: (id, outcome) => clone(d.stripe.payoutOutcome(String(id), outcome === "failed" ? "failed" : "paid")),
    stripeCreateUnnotifiedPayment: (opts) => clone(d.stripe.unnotifiedPayment(opts)),
    mercadopagoCreateUnnotifiedPayment: (opts) => d.mercadopago.unnotifiedPayment(opts),
    openpixCreateUnnotifiedCharge: (opts) => d.openpix.unnotifiedCharge(opts),
    setOpenPixEventNaming: (naming) => {
      if (naming !== "openpix" && naming !== "woovi") throw new SandboxError(400, "naming is openpix or woovi");
      d.openpix.naming = naming;
    },
    setOpenPixDeliveriesWithoutEvent: (on) => {
      d.openpix.withoutEvent = on === true;
    },
    setMercadoPagoIpn: (on) => {
      d.mercadopago.ipn = on === true;
    },
    setWebhookMode: (provider, mode) => d.dispatcher.setMode(provider, mode),
    setWebhookUrl: (provider, url) => {
      if (provider !== "stripe" && provider !== "openpix") throw new SandboxError(400, "MercadoPago posts to each payment's notification_url");
      d.webhookUrls[provider] = url;
    },
    failApi: (provider, opts) => d.faults.failApi(provider, opts),
    garbleObject: (provider, id, fields) => garble(d, provider, String(id), fields),
    timeoutApi: (provider, opts) => d.faults.timeoutApi(provider, opts),
    redeliver: (eventId) => d.dispatcher.redeliver(eventId),
    flush: () => d.dispatcher.flush(),
    deliveries: () => d.dispatcher.deliveries(),
    waitForDeliveries: (n, timeoutMs = 5_000) => d.dispatcher.waitFor(n, timeoutMs),
    events: (provider) => d.dispatcher.events(provider),
    payment: (provider, id) => payment(d, provider, String(id)),
    payUrl: (provider, id) => payUrl(d, provider, String(id)),
    pagerdutyEvents: () => structuredClone(d.receivers.pagerdutyReceived),
    pagerdutyAlerts: () => structuredClone(d.receivers.alerts),
    pagerdutyAlert: (dedupKey) => structuredClone(d.receivers.alert(dedupKey)),
    slackMessages: () => structuredClone(d.receivers.slackReceived),
    setReceiverFault: (receiver, fault) => d.receivers.setFault(receiver, fault),
    seedStripePaymentIntents: (n, opts) => d.stripe.seed(n, opts),
    seedMercadoPagoPayments: (n, opts) => d.mercadopago.seed(n, opts),
  };
}

function payment(d: ControlDeps, provider: Provider, id: string): Record<string, unknown> | undefined {
  if (provider === "stripe") {
    const found = d.stripe.byId(id);
    return found && structuredClone(found);
  }
  if (provider === "mercadopago") return d.mercadopago.payments.has(Number(id)) ? d.mercadopago.read(Number(id)) : undefined;
  const c = d.openpix.find(id);
  return c && d.openpix.read(c);
}

/** Fields of a stored object replaced, as every read and listing then answers them (what a provider's bug sends). */
function garble(d: ControlDeps, provider: Provider, id: string, fields: Record<string, unknown>): Record<string, unknown> {
  if (typeof fields !== "object" || fields === null || Array.isArray(fields)) throw new SandboxError(400, "fields is an object");
  const target: Record<string, unknown> | undefined = provider === "stripe" ? d.stripe.byId(id)
    : provider === "mercadopago" ? d.mercadopago.payments.get(Number(id)) as Record<string, unknown> | undefined
    : d.openpix.find(id) as Record<string, unknown> | undefined;
  if (!target) throw new SandboxError(404, `no ${provider} object ${id}`);
  Object.assign(target, structuredClone(fields));
  return structuredClone(target);
}

/** The page a person pays on: Stripe's pay page for a PaymentIntent, MercadoPago's ticket, OpenPIX's link. */
function payUrl(d: ControlDeps, provider: Provider, id: string): string {
  if (provider === "stripe") {
    const pi = d.stripe.intents.get(id);
    if (!pi) throw new SandboxError(404, `no PaymentIntent ${id}`);
    return stripePayUrl(d.url, pi);
  }
  if (provider === "mercadopago") {
    const p = d.mercadopago.payments.get(Number(id));
    if (!p) throw new SandboxError(404, `no MercadoPago payment ${id}`);
    return ((p.point_of_interaction as Record<string, any>).transaction_data).ticket_url as string;
  }
  return d.openpix.get(id).paymentLinkUrl as string;
}

const READS = new Set(["deliveries", "events", "payment", "payUrl", "pagerdutyEvents", "pagerdutyAlerts", "pagerdutyAlert", "slackMessages"]);

/**
 * GET /_sandbox                       what is here: urls, secrets, methods
 * GET /_sandbox/deliveries            GET /_sandbox/events[/<provider>]     GET /_sandbox/payment/<provider>/<id>
 * GET /_sandbox/payUrl/<provider>/<id>  the page a person pays on
 * POST /_sandbox/<method>             body: JSON array of the method's arguments, e.g.
 *   POST /_sandbox/stripeConfirm ["pi_...", "succeeded"]     POST /_sandbox/setWebhookMode ["all", {"duplicate": 2}]
 */
export async function handleControl(control: SandboxControl, info: () => unknown, req: ApiRequest): Promise<ApiResponse> {
  const [method, ...rest] = req.path.split("/").filter(Boolean);
  try {
    if (req.method === "GET") {
      if (!method) return { status: 200, body: { ...(info() as object), methods: Object.keys(control) } };
      if (method === "deliveries") return { status: 200, body: control.deliveries() };
      if (method === "events") return { status: 200, body: control.events(rest[0] as Provider | undefined) };
      if (method === "payUrl" && rest.length === 2) {
        return { status: 200, body: { url: control.payUrl(rest[0] as Provider, decodeURIComponent(rest[1]!)) } };
      }
      if (method === "payment" && rest.length === 2) {
        const found = control.payment(rest[0] as Provider, decodeURIComponent(rest[1]!));
        return found ? { status: 200, body: found } : { status: 404, body: { error: `no ${rest[0]} payment ${rest[1]}` } };
      }
      if (READS.has(method)) {
        const fn = control[method as keyof SandboxControl] as (...a: unknown[]) => unknown;
        const found = fn(...rest.map((r) => decodeURIComponent(r)));
        return found === undefined ? { status: 404, body: { error: `nothing at GET /_sandbox${req.path}` } } : { status: 200, body: found };
      }
      return { status: 404, body: { error: `unknown control route GET ${req.path}` } };
    }
    if (req.method !== "POST" || !method || !(method in control) || READS.has(method)) {
      return { status: 404, body: { error: `unknown control route ${req.method} ${req.path}; see GET /_sandbox` } };
    }
    const parsed = parseJson(req.rawBody);
    if (!parsed.ok) return { status: 400, body: { error: "body must be JSON: an array of arguments" } };
    const args = Array.isArray(parsed.value) ? parsed.value : [];
    const fn = control[method as keyof SandboxControl] as (...a: unknown[]) => unknown;
    const result = await fn(...args);
    return { status: 200, body: result ?? { ok: true } };
  } catch (err) {
    if (err instanceof SandboxError) return { status: err.status, body: { error: err.message } };
    return { status: 500, body: { error: (err as Error).message } };
  }
}
