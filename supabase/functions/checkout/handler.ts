// POST a new checkout {unit_id, check_in, check_out, guests, method, provider?} or a retry
// {booking_intent_id, method, provider?}: holds the nights, records the attempt, asks the provider for
// the payment and returns what the guest's app needs to pay (Stripe client_secret, or PIX QR code).
import { db, type Sql } from "../_shared/db.ts";
import { dbErrorResponse } from "../_shared/db_response.ts";
import { checkoutShapeOf, type CheckoutRequest } from "../_shared/guest_api.ts";
import { errorJson, invalidRequest, json, methodNotAllowed, readJsonBody } from "../_shared/http.ts";
import { AuthRefusal, verifyCaller } from "../_shared/auth.ts";
import { defaultProviderFor, providerNamed, providersTaking } from "../_shared/providers/registry.ts";
import { ProviderError, UnusableAnswer, type CreatedPayment, type PaymentMethod } from "../_shared/providers/types.ts";
import { unusableUpdate, updateJson } from "../_shared/webhook.ts";

/**
 * The body checked against the one shape it means (a retry names its booking_intent_id), so every
 * missing or wrong field is named; the union would answer a lone "Invalid input" for the whole body.
 */
function parseBody(raw: unknown): CheckoutRequest | Response {
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) {
    return invalidRequest("the body must be a JSON object", [{ path: [], message: "expected an object" }]);
  }
  const isRetry = "booking_intent_id" in raw;
  const parsed = checkoutShapeOf(raw).safeParse(raw);
  if (!parsed.success) {
    return invalidRequest(isRetry ? "the body does not match a checkout retry" : "the body does not match a checkout",
      parsed.error.issues);
  }
  return parsed.data;
}

interface Attempt {
  booking_intent_id: string;
  payment_id: string;
  attempt: number;
  idempotency_key: string;
  provider: string;
  method: PaymentMethod;
  amount: string;
  currency: string;
  payment_status: string;
  gateway_payment_id: string | null;
  payment_expires_at: Date | null;
  hold_expires_at: Date;
  unit_id: string;
  check_in: string;
  check_out: string;
  nights: number;
  guest_name: string | null;
  guest_email: string | null;
}

/** The provider asked for, else the default for the method (a retry keeps its attempts' provider in SQL). */
function providerFor(body: CheckoutRequest): { asked: string | null; fallback: string } | Response {
  const takers = providersTaking(body.method).map((p) => p.name);
  if (body.provider && !takers.includes(body.provider)) {
    return errorJson(400, "invalid_provider", `${body.method} is paid through ${takers.join(" or ")}`);
  }
  const fallback = defaultProviderFor(body.method)?.name;
  if (!fallback) return errorJson(503, "provider_not_configured", `no provider takes ${body.method}`);
  // a card has one provider: it is named even on a retry
  return { asked: body.provider ?? (takers.length === 1 ? fallback : null), fallback };
}

const configured = (name: string) => providerNamed(name)?.configured() ?? false;

const dateOnly = (d: Date | string) => (d instanceof Date ? d.toISOString().slice(0, 10) : String(d).slice(0, 10));

/** What the provider shows the guest: the unit and the dates, as dates. */
async function describeStay(sql: Sql, a: Attempt): Promise<string> {
  const [u] = await sql<{ name: string }[]>`select name from reserve.unit_map where id = ${a.unit_id}`;
  const nights = `${a.nights} night${a.nights === 1 ? "" : "s"}`;
  return `Reserve Connect: ${u?.name ?? "stay"}, ${dateOnly(a.check_in)} to ${dateOnly(a.check_out)} (${nights})`;
}

/** What the guest's app needs to pay; the attempt is recorded before the call. */
async function askProvider(sql: Sql, a: Attempt, email: string): Promise<CreatedPayment> {
  const provider = providerNamed(a.provider);
  if (!provider) throw new ProviderError(a.provider, "not_configured", `no payment provider ${a.provider}`);
  return provider.createPayment({
    paymentId: a.payment_id, bookingIntentId: a.booking_intent_id, method: a.method, amount: Number(a.amount),
    currency: a.currency, idempotencyKey: a.idempotency_key, description: await describeStay(sql, a),
    expiresAt: a.payment_expires_at ?? a.hold_expires_at, payer: { email: email || undefined, name: a.guest_name ?? undefined },
  });
}

function providerErrorResponse(err: ProviderError): Response {
  const refused = err.kind === "rejected" || err.kind === "not_found";
  const status = refused ? 502 : 503;
  const error = refused ? "provider_rejected" : err.kind === "rate_limited" ? "provider_rate_limited"
    : err.kind === "timeout" ? "provider_timeout" : err.kind === "not_configured" ? "provider_not_configured" : "provider_unavailable";
  const res = errorJson(status, error, `${err.provider} could not create the payment; the nights were released, start a new checkout`, {
    provider: err.provider, ...(err.code && { provider_code: err.code }),
  });
  if (err.kind === "rate_limited") res.headers.set("retry-after", "10");
  return res;
}

export async function handler(req: Request): Promise<Response> {
  if (req.method !== "POST") return methodNotAllowed(["POST"]);
  // a guest pays as a signed-in user (the limits are per user); only the service role may act for none
  const caller = await verifyCaller(req);
  if (caller instanceof AuthRefusal) return caller.response();
  if (caller.kind === "anon") return errorJson(401, "sign_in_required", "checkout needs a signed-in user's token");
  const clientId = caller.kind === "user" ? caller.sub : null;
  const read = await readJsonBody(req, 16 * 1024);
  if (read instanceof Response) return read;
  const raw = read.value;
  const body = parseBody(raw);
  if (body instanceof Response) return body;
  const email = body.guest_email ?? (caller.kind === "user" ? caller.email : undefined);
  const chosen = providerFor(body);
  if (chosen instanceof Response) return chosen;
  const isRetry = "booking_intent_id" in body;
  const asked = isRetry ? chosen.asked : chosen.asked ?? chosen.fallback;
  if (asked && !configured(asked)) return errorJson(503, "provider_not_configured", `${asked} is not configured`);
  if (body.method === "pix" && !email && !("booking_intent_id" in body)) {
    return invalidRequest("a PIX checkout needs guest_email (the payer's e-mail)",
      [{ path: ["guest_email"], message: "required for a PIX checkout when the token carries no email" }]);
  }

  const sql = db();
  let attempt: Attempt;
  try {
    const [row] = await sql<Attempt[]>`
      select * from reserve.begin_checkout(
        p_client_id => ${clientId}, p_method => ${body.method}, p_provider => ${asked},
        p_default_provider => ${chosen.fallback},
        p_unit_id => ${"unit_id" in body ? body.unit_id : null}, p_check_in => ${"check_in" in body ? body.check_in : null},
        p_check_out => ${"check_out" in body ? body.check_out : null}, p_guests => ${"guests" in body ? body.guests : null},
        p_booking_intent_id => ${"booking_intent_id" in body ? body.booking_intent_id : null},
        p_guest_name => ${body.guest_name ?? null}, p_guest_email => ${email ?? null})`;
    attempt = row;
  } catch (err) {
    // a refused new checkout still costs the client one from the hour's budget (probing nights is not free);
    // the refusal rolled back begin_checkout's own count, so it is taken again on its own
    const code = (err as { code?: unknown })?.code;
    if (!isRetry && clientId && typeof code === "string" && /^RC/.test(code) && code !== "RC109") {
      try {
        await sql`select reserve.count_refused_checkout(${clientId})`;
      } catch (countErr) {
        console.error(`checkout: refused checkout not counted (${(countErr as { code?: unknown })?.code ?? "unknown"})`);
      }
    }
    return dbErrorResponse(err, "checkout");
  }

  if (!configured(attempt.provider)) return errorJson(503, "provider_not_configured", `${attempt.provider} is not configured`);
  let answer: CreatedPayment;
  try {
    // the payer is the intent's, as its first call sent it: a retry of the attempt (its key) must send the same
    // body, whatever e-mail the retry's token carries (MercadoPago refuses a key reused with another one)
    answer = await askProvider(sql, attempt, attempt.guest_email ?? email ?? "");
    const unusable = unusableUpdate(answer.update);
    if (unusable) throw new UnusableAnswer(unusable);
  } catch (thrown) {
    // an answer no payment can hold (an amount that is text, an id too long to store) is the provider
    // refusing, in effect: never handed out, the attempt given up, the nights released
    const err = thrown instanceof UnusableAnswer
      ? new ProviderError(attempt.provider, "rejected", `${attempt.provider} answered the payment's creation with what cannot be recorded: ${thrown.message}`)
      : thrown;
    if (!(err instanceof ProviderError)) throw err;
    console.error(`checkout: ${err.provider} refused payment ${attempt.payment_id}: ${err.kind} ${err.status ?? ""} ${err.code ?? ""}`);
    if (attempt.gateway_payment_id) {
      // the provider already took this attempt and the guest may be paying it: leave it open
      const res = errorJson(503, "provider_unavailable", `${err.provider} did not answer; the payment is still open, retry in a moment`, {
        provider: err.provider, payment_id: attempt.payment_id,
      });
      res.headers.set("retry-after", "5");
      return res;
    }
    try {
      await sql`select reserve.abort_checkout(${attempt.payment_id}::uuid, ${`provider_${err.kind}`}, ${err.message})`;
    } catch (dbErr) {
      // the poller fails the attempt and frees the nights once the provider's answer is overdue
      return dbErrorResponse(dbErr, "checkout abort");
    }
    return providerErrorResponse(err);
  }

  let attached: { status: string; error_code: string | null };
  try {
    [attached] = await sql<{ status: string; error_code: string | null }[]>`
      select status, error_code from reserve.attach_gateway_payment(${attempt.payment_id}::uuid,
        reserve.as_provider_update(${sql.json(updateJson(answer.update) as never)}))`;
  } catch (err) {
    return dbErrorResponse(err, "checkout attach");
  }
  if (attached.status === "failed" && attached.error_code === "provider_mismatch") {
    // the provider's payment is not ours at our price: never handed out (a money discrepancy is open)
    console.error(`checkout: ${attempt.provider} payment ${answer.update.gatewayPaymentId} does not match payment ${attempt.payment_id}`);
    return errorJson(502, "provider_mismatch", `${attempt.provider} created a payment that does not match this checkout; the nights were released, start a new checkout`, {
      provider: attempt.provider, payment_id: attempt.payment_id,
    });
  }
  // a concurrent retry may have closed the attempt meanwhile: its means of payment is not handed out
  if (attached.status !== "pending" && attached.status !== "processing") {
    return errorJson(409, "attempt_closed", `payment ${attempt.payment_id} is ${attached.status}; start a new checkout`, {
      payment_id: attempt.payment_id, status: attached.status,
    });
  }
  return json({
    booking_intent_id: attempt.booking_intent_id,
    payment_id: attempt.payment_id,
    attempt: attempt.attempt,
    provider: attempt.provider,
    method: attempt.method,
    amount: Number(attempt.amount),
    currency: attempt.currency,
    status: attempt.payment_status,
    hold_expires_at: attempt.hold_expires_at,
    payment_expires_at: attempt.payment_expires_at,
    gateway_payment_id: answer.update.gatewayPaymentId,
    ...answer.pay,
  }, 201);
}
