// Stripe's HTTP surface at root paths (/v1/...), so stripe-node works with {host, port, protocol: 'http'}:
// Bearer auth, form bodies, Idempotency-Key replay and conflicts, errors in Stripe's shape.
import { createHash } from "node:crypto";
import type { Obj, RequestInfo, StripeState } from "./stripe.ts";
import { CANCELABLE } from "./stripe.ts";
import { SandboxError } from "./types.ts";
import type { ApiRequest, ApiResponse } from "./util.ts";
import { asList, header, parseStripeForm, randomId } from "./util.ts";

const MAX_AMOUNT = 99_999_999;
// Stripe's minimum charge per currency (in the smallest unit); BRL is R$0.50
const MIN_AMOUNT: Record<string, number> = { brl: 50, usd: 50, eur: 50 };
// every create param of the installed API version (stripe-node's PaymentIntentCreateParams), plus
// payment_method_types from older versions; anything else gets Stripe's parameter_unknown
const CREATE_PARAMS = new Set(("amount currency allowed_payment_method_types amount_details application_fee_amount " +
  "automatic_payment_methods capture_method confirm confirmation_method confirmation_token customer customer_account " +
  "description error_on_requires_action excluded_payment_method_types expand hooks mandate mandate_data metadata " +
  "off_session on_behalf_of payment_details payment_method payment_method_configuration payment_method_data " +
  "payment_method_options radar_options receipt_email return_url setup_future_usage shipping statement_descriptor " +
  "statement_descriptor_suffix transfer_data transfer_group use_stripe_sdk payment_method_types").split(" "));
const REFUND_REASONS = ["duplicate", "fraudulent", "requested_by_customer"];

/** GET /v1/<resource>/<id>: the object type each path serves. */
const RETRIEVABLE: Record<string, string> = { payment_intents: "payment_intent", charges: "charge", refunds: "refund",
  disputes: "dispute", balance_transactions: "balance_transaction", payouts: "payout", events: "event" };

/** `<object>.<field>` pairs that hold an id Stripe can expand. */
const EXPANDABLE = new Set(["payment_intent.latest_charge", "payment_intent.payment_method", "charge.balance_transaction",
  "charge.payment_intent", "refund.balance_transaction", "refund.charge", "refund.payment_intent", "dispute.charge",
  "dispute.payment_intent", "payout.balance_transaction", "balance_transaction.source"]);

interface ListSpec {
  object: string;
  all(s: StripeState): Obj[];
  filters: string[];
  match(o: Obj, filter: string, value: string, s: StripeState): boolean;
}

const byField = (o: Obj, f: string, v: string) => String(o[f]) === v;
const LISTS: Record<string, ListSpec> = {
  payment_intents: { object: "payment_intent", all: (s) => [...s.intents.values()], filters: ["customer"], match: byField },
  charges: { object: "charge", all: (s) => [...s.charges.values()], filters: ["customer", "payment_intent"], match: byField },
  refunds: { object: "refund", all: (s) => [...s.refunds.values()], filters: ["charge", "payment_intent"], match: byField },
  disputes: { object: "dispute", all: (s) => [...s.disputes.values()], filters: ["charge", "payment_intent"], match: byField },
  payouts: { object: "payout", all: (s) => [...s.payouts.values()], filters: ["status", "destination"], match: byField },
  balance_transactions: { object: "balance_transaction", all: (s) => [...s.balanceTransactions.values()],
    filters: ["payout", "type", "source", "currency"],
    match: (o, f, v, s) => (f === "payout" ? s.paidOutBy.get(o.id as string) === v : byField(o, f, v)) },
  events: { object: "event", all: (s) => [...s.events.values()], filters: ["type"], match: byField },
};

/** `created=<t>` or `created[gt|gte|lt|lte]=<t>` (unix seconds). */
function createdFilter(c: unknown): (t: number) => boolean {
  if (c === undefined) return () => true;
  const int = (v: unknown, param: string) => {
    if (!/^\d+$/.test(String(v))) throw invalid(`Invalid integer: ${v}`, { param });
    return Number(v);
  };
  if (typeof c === "string") {
    const at = int(c, "created");
    return (t) => t === at;
  }
  const o = c as Record<string, unknown>;
  const unknown = Object.keys(o).find((k) => !["gt", "gte", "lt", "lte"].includes(k));
  if (unknown) throw invalid(`Received unknown parameter: created[${unknown}]`, { param: `created[${unknown}]` });
  const gt = o.gt === undefined ? undefined : int(o.gt, "created[gt]");
  const gte = o.gte === undefined ? undefined : int(o.gte, "created[gte]");
  const lt = o.lt === undefined ? undefined : int(o.lt, "created[lt]");
  const lte = o.lte === undefined ? undefined : int(o.lte, "created[lte]");
  return (t) => (gt === undefined || t > gt) && (gte === undefined || t >= gte) && (lt === undefined || t < lt) && (lte === undefined || t <= lte);
}

class StripeApiError extends Error {
  constructor(readonly status: number, readonly error: Obj) {
    super(String(error.message));
  }
}

const invalid = (message: string, extra: Obj = {}) =>
  new StripeApiError(400, { type: "invalid_request_error", message, ...extra });

function withDoc(code: string): Obj {
  return { code, doc_url: `https://stripe.com/docs/error-codes/${code.replace(/_/g, "-")}` };
}

/** The error body Stripe sends for a given status, used by failApi. */
export function stripeErrorFor(status: number, code?: string): Obj {
  const type = status === 402 ? "card_error" : status === 429 ? "rate_limit_error" : status >= 500 ? "api_error" : "invalid_request_error";
  const message = status === 429
    ? "Too many requests hit the API too quickly. We recommend an exponential backoff of your requests."
    : status >= 500 ? "An unknown error occurred" : status === 402 ? "Your card was declined." : "Invalid request";
  return { error: { type, message, ...(code ? withDoc(code) : status === 429 ? withDoc("rate_limit") : {}),
    ...(status === 402 ? { decline_code: "generic_decline" } : {}) } };
}

export class StripeApi {
  private idempotent = new Map<string, { fingerprint: string; status: number; body: unknown }>();

  constructor(private state: StripeState, private secretKey: string) {}

  snapshot(): [string, { fingerprint: string; status: number; body: unknown }][] {
    return [...this.idempotent];
  }

  restore(entries: [string, { fingerprint: string; status: number; body: unknown }][]): void {
    for (const [k, v] of entries) this.idempotent.set(k, v);
  }

  handle(req: ApiRequest): ApiResponse {
    const requestId = randomId("req_", 14);
    const headers: Record<string, string> = { "request-id": requestId, "stripe-version": this.state.apiVersion };
    try {
      this.authenticate(req);
      const key = header(req.headers, "idempotency-key") ?? null;
      const params = req.method === "GET" ? parseStripeForm(req.query.toString()) : parseStripeForm(req.rawBody);
      if (key !== null && req.method === "POST") {
        const fingerprint = createHash("sha256").update(`${req.method} ${req.path}\n${req.rawBody}`).digest("hex");
        const seen = this.idempotent.get(key);
        if (seen && seen.fingerprint !== fingerprint) {
          throw new StripeApiError(400, { type: "idempotency_error", message:
            `Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '${key}' if you meant to execute a different request.` });
        }
        if (seen) return { status: seen.status, body: seen.body, headers: { ...headers, "idempotent-replayed": "true", "original-request": requestId } };
        const res = this.route(req.method, req.path, params, { id: requestId, idempotency_key: key });
        this.idempotent.set(key, { fingerprint, status: 200, body: res });
        return { status: 200, body: res, headers: { ...headers, "idempotency-key": key } };
      }
      return { status: 200, body: this.route(req.method, req.path, params, { id: requestId, idempotency_key: null }), headers };
    } catch (err) {
      if (err instanceof StripeApiError) return { status: err.status, body: { error: { ...err.error, request_log_url: null } }, headers };
      if (err instanceof SandboxError && err.status === 404) {
        return { status: 404, body: { error: { type: "invalid_request_error", code: "resource_missing",
          doc_url: "https://stripe.com/docs/error-codes/resource-missing", message: err.message, param: "id" } }, headers };
      }
      throw err;
    }
  }

  private authenticate(req: ApiRequest): void {
    const auth = header(req.headers, "authorization") ?? "";
    let key = "";
    if (auth.startsWith("Bearer ")) key = auth.slice(7).trim();
    else if (auth.startsWith("Basic ")) key = Buffer.from(auth.slice(6), "base64").toString().split(":")[0] ?? "";
    if (!key) {
      throw new StripeApiError(401, { type: "invalid_request_error", message:
        "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY')." });
    }
    if (key !== this.secretKey) {
      throw new StripeApiError(401, { type: "invalid_request_error", code: "api_key_invalid",
        message: `Invalid API Key provided: ${key.slice(0, 8)}${"*".repeat(Math.max(0, key.length - 12))}${key.slice(-4)}` });
    }
  }

  private route(method: string, path: string, p: Obj, req: RequestInfo): Obj {
    const seg = path.split("/").filter(Boolean); // ["v1", "payment_intents", id?, action?]
    const [v, resource, id, action] = seg;
    const list = v === "v1" && method === "GET" && seg.length === 2 ? LISTS[resource!] : undefined;
    if (list) return this.list(resource!, list, p);
    if (v === "v1" && resource === "payment_intents") {
      if (method === "POST" && seg.length === 2) return this.expand(this.create(p, req), p);
      if (method === "GET" && seg.length === 3) return this.expand(this.state.intent(id!), p);
      if (method === "POST" && seg.length === 4 && action === "cancel") return this.expand(this.cancel(id!, p, req), p);
    }
    if (v === "v1" && resource === "refunds" && method === "POST" && seg.length === 2) return this.expand(this.refund(p, req), p);
    if (v === "v1" && resource === "balance" && method === "GET" && seg.length === 2) return this.state.balance();
    if (v === "v1" && method === "GET" && seg.length === 3 && resource! in RETRIEVABLE) {
      const found = this.state.byId(id!);
      if (found && found.object === RETRIEVABLE[resource!]) return this.expand(found, p);
      throw new SandboxError(404, `No such ${RETRIEVABLE[resource!]}: '${id}'`);
    }
    throw new StripeApiError(404, { type: "invalid_request_error", message:
      `Unrecognized request URL (${method}: ${path}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.` });
  }

  /**
   * Stripe's list envelope: newest first, `limit` 1..100 (default 10), a cursor with `starting_after` or
   * `ending_before` (an object id), `created` as an exact value or `created[gt|gte|lt|lte]`, plus the
   * resource's own filters; `has_more` says whether another page follows in the direction of travel.
   */
  private list(resource: string, spec: ListSpec, p: Obj): Obj {
    for (const k of Object.keys(p)) {
      if (!["limit", "starting_after", "ending_before", "created", "expand"].includes(k) && !spec.filters.includes(k)) {
        throw invalid(`Received unknown parameter: ${k}`, { ...withDoc("parameter_unknown"), param: k });
      }
    }
    let limit = 10;
    if (p.limit !== undefined) {
      if (!/^\d+$/.test(String(p.limit))) throw invalid(`Invalid integer: ${p.limit}`, { param: "limit" });
      limit = Number(p.limit);
      if (limit < 1 || limit > 100) throw invalid("This value must be greater than or equal to 1 and less than or equal to 100.", { param: "limit" });
    }
    if (p.starting_after !== undefined && p.ending_before !== undefined) {
      throw invalid("You may only specify one of these parameters: ending_before, starting_after.");
    }
    const created = createdFilter(p.created);
    let items = spec.all(this.state).filter((o) => created(o.created as number) && spec.filters.every((f) => p[f] === undefined || spec.match(o, f, String(p[f]), this.state)));
    // newest first; equal timestamps keep the newest-made first, as Stripe's ids sort within a second
    items = items.map((o, i) => ({ o, i })).sort((a, b) => (b.o.created as number) - (a.o.created as number) || b.i - a.i).map((x) => x.o);
    let page: Obj[];
    let hasMore: boolean;
    const cursor = (p.starting_after ?? p.ending_before) as string | undefined;
    if (cursor !== undefined) {
      const at = items.findIndex((o) => o.id === cursor);
      if (at < 0) throw new SandboxError(404, `No such ${spec.object}: '${cursor}'`);
      if (p.starting_after !== undefined) {
        page = items.slice(at + 1, at + 1 + limit);
        hasMore = at + 1 + limit < items.length;
      } else {
        page = items.slice(Math.max(0, at - limit), at);
        hasMore = at - limit > 0;
      }
    } else {
      page = items.slice(0, limit);
      hasMore = items.length > limit;
    }
    const expandData = asList(p.expand).map((e) => {
      if (!e.startsWith("data.")) throw invalid(`This property cannot be expanded (${e}). You may want to try expanding 'data.${e}' instead.`, { param: "expand" });
      return e.slice(5);
    });
    return { object: "list", data: page.map((o) => this.expandPaths(o, expandData)), has_more: hasMore, url: `/v1/${resource}` };
  }

  private expand(obj: Obj, p: Obj): Obj {
    return this.expandPaths(obj, asList(p.expand));
  }

  /** `expand[]=latest_charge.balance_transaction`: each segment must name an id field of the object it reaches. */
  private expandPaths(obj: Obj, paths: string[]): Obj {
    let out = obj;
    for (const path of paths) {
      const parts = path.split(".");
      if (parts.length > 4) throw invalid(`You cannot expand more than 4 levels of a property (${path}).`, { param: "expand" });
      out = this.expandOne(out, parts, path);
    }
    return out;
  }

  private expandOne(obj: Obj, parts: string[], full: string): Obj {
    const [head, ...rest] = parts;
    const value = obj[head!];
    if (!EXPANDABLE.has(`${obj.object}.${head}`)) throw invalid(`This property cannot be expanded (${full}).`, { param: "expand" });
    if (value === null || value === undefined) return obj;
    const target = typeof value === "string" ? this.state.byId(value) : (value as Obj);
    if (!target) return obj;
    return { ...obj, [head!]: rest.length ? this.expandOne(target, rest, full) : target };
  }

  private create(p: Obj, req: RequestInfo): Obj {
    const unknown = Object.keys(p).find((k) => !CREATE_PARAMS.has(k));
    if (unknown) throw invalid(`Received unknown parameter: ${unknown}`, { ...withDoc("parameter_unknown"), param: unknown });
    if (p.amount === undefined) throw invalid("Missing required param: amount.", { ...withDoc("parameter_missing"), param: "amount" });
    if (!/^-?\d+$/.test(String(p.amount))) throw invalid(`Invalid integer: ${p.amount}`, { param: "amount" });
    if (p.currency === undefined || p.currency === "") throw invalid("Missing required param: currency.", { ...withDoc("parameter_missing"), param: "currency" });
    const currency = String(p.currency).toLowerCase();
    if (!/^[a-z]{3}$/.test(currency)) throw invalid(`Invalid currency: ${p.currency}. Stripe currently supports these currencies: brl, usd, eur, ...`, { param: "currency" });
    const amount = Number(p.amount);
    const min = MIN_AMOUNT[currency] ?? 50;
    if (amount < 1) throw invalid("This value must be greater than or equal to 1.", { ...withDoc("parameter_invalid_integer"), param: "amount" });
    if (amount < min) throw invalid(`Amount must be at least ${fmt(min, currency)}`, { ...withDoc("amount_too_small"), param: "amount" });
    if (amount > MAX_AMOUNT) throw invalid(`Amount must be no more than ${fmt(MAX_AMOUNT, currency)}`, { ...withDoc("amount_too_large"), param: "amount" });
    const metadata = (p.metadata ?? {}) as Record<string, string>;
    if (typeof metadata !== "object" || Array.isArray(metadata)) throw invalid("Invalid object", { param: "metadata" });
    for (const [k, val] of Object.entries(metadata)) {
      if (k.length > 40) throw invalid(`Metadata keys can have up to 40 characters; '${k}' has ${k.length}.`, { param: `metadata[${k}]` });
      if (String(val).length > 500) throw invalid(`Metadata values can have up to 500 characters, but you passed in a value that is ${String(val).length} characters.`, { param: `metadata[${k}]` });
    }
    if (p.confirm === "true") {
      throw invalid("The sandbox does not confirm on create: confirm as the guest's browser would, with control.stripeConfirm.", { param: "confirm" });
    }
    const automatic = (p.automatic_payment_methods as Obj | undefined)?.enabled === "true";
    const allowed = asList(p.allowed_payment_method_types);
    const types = allowed.length ? allowed : asList(p.payment_method_types);
    return this.state.createIntent({
      amount, currency, metadata: Object.fromEntries(Object.entries(metadata).filter(([, v]) => v !== "")),
      description: (p.description as string) || null, payment_method_types: types.length ? types : ["card"], automatic,
      allowed_payment_method_types: allowed.length ? allowed : null,
      receipt_email: (p.receipt_email as string) || null, capture_method: (p.capture_method as string) || "automatic_async",
    }, req);
  }

  private cancel(id: string, p: Obj, req: RequestInfo): Obj {
    const pi = this.state.intent(id);
    if (!CANCELABLE.includes(pi.status as string)) {
      throw invalid(`You cannot cancel this PaymentIntent because it has a status of ${pi.status}. Only a PaymentIntent with one of the following statuses may be canceled: ${CANCELABLE.join(", ")}.`,
        { ...withDoc("payment_intent_unexpected_state"), payment_intent: pi });
    }
    return this.state.cancel(pi, (p.cancellation_reason as string) || null, req);
  }

  private refund(p: Obj, req: RequestInfo): Obj {
    const piId = p.payment_intent as string | undefined;
    const chargeId = p.charge as string | undefined;
    if (!piId && !chargeId) throw invalid("One of the following params should be provided for this request: payment_intent or charge.");
    const byCharge = chargeId ? this.state.charges.get(chargeId) : undefined;
    if (!piId && !byCharge) throw new SandboxError(404, `No such charge: '${chargeId}'`);
    const pi = this.state.intent(piId ?? String(byCharge!.payment_intent));
    const charge = pi.latest_charge ? this.state.charges.get(pi.latest_charge as string) : undefined;
    if (!charge || charge.status !== "succeeded") {
      throw invalid(`This PaymentIntent (${pi.id}) does not have a successful charge to refund.`, { param: "payment_intent" });
    }
    // what a dispute took back (open or lost; a won one was given back) cannot go back a second time as a refund
    const dispute = this.state.disputes.get(pi.id as string);
    const withheld = dispute && dispute.status !== "won" ? dispute.amount as number : 0;
    const unrefunded = (charge.amount as number) - (charge.amount_refunded as number);
    const remaining = Math.max(0, unrefunded - withheld);
    if (unrefunded === 0) throw invalid(`Charge ${charge.id} has already been refunded.`, withDoc("charge_already_refunded"));
    if (remaining === 0) {
      throw invalid(`Charge ${charge.id} has been charged back; respond to dispute ${String(dispute!.id)} instead of refunding.`, withDoc("charge_disputed"));
    }
    if (p.amount !== undefined && !/^\d+$/.test(String(p.amount))) throw invalid(`Invalid integer: ${p.amount}`, { param: "amount" });
    const amount = p.amount === undefined ? remaining : Number(p.amount);
    if (amount < 1) throw invalid("This value must be greater than or equal to 1.", { param: "amount" });
    if (amount > remaining) {
      throw invalid(`Refund amount (${fmt(amount, pi.currency as string)}) is greater than unrefunded amount on charge (${fmt(remaining, pi.currency as string)})`, { param: "amount" });
    }
    const reason = (p.reason as string) || null;
    if (reason && !REFUND_REASONS.includes(reason)) throw invalid(`Invalid reason: must be one of ${REFUND_REASONS.join(", ")}`, { param: "reason" });
    return this.state.refund(pi, amount, reason, (p.metadata ?? {}) as Record<string, string>, req);
  }
}

function fmt(minor: number, currency: string): string {
  const major = (minor / 100).toFixed(2);
  return currency === "brl" ? `R$${major} brl` : `$${major} ${currency}`;
}
