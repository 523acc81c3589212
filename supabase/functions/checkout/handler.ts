// POST a new checkout {unit_id, check_in, check_out, guests, method, provider?} or a retry
// {booking_intent_id, method, provider?}: holds the nights, records the attempt, asks the provider for
// the payment and returns what the guest's app needs to pay (Stripe client_secret, or PIX QR code).
import { z } from "zod";
import { db } from "../_shared/db.ts";
import { defaultPixProvider, functionsBaseUrl, mercadoPago, openPix, stripeApi } from "../_shared/provider_config.ts";
import { dbErrorResponse } from "../_shared/db_response.ts";
import { errorJson, invalidRequest, json, methodNotAllowed, readBodyText, requireJson } from "../_shared/http.ts";
import { bearerClaims } from "../_shared/jwt.ts";
import { createPixPayment } from "../_shared/providers/mercadopago.ts";
import { createOpenPixCharge } from "../_shared/providers/openpix.ts";
import { createCardPaymentIntent, withoutClientSecret } from "../_shared/providers/stripe.ts";
import { ProviderError, type Provider } from "../_shared/providers/types.ts";

const isoDate = z.iso.date();
const method = z.enum(["card", "pix"]);
const provider = z.enum(["stripe", "mercadopago", "openpix"]).optional();
const guest = {
  guest_name: z.string().trim().min(1).max(200).optional(),
  guest_email: z.email().max(320).optional(),
};
const NewCheckout = z.strictObject({
  unit_id: z.uuid(), check_in: isoDate, check_out: isoDate, guests: z.int().min(1).max(50), method, provider, ...guest,
});
const RetryCheckout = z.strictObject({ booking_intent_id: z.uuid(), method, provider, ...guest });
const Body = z.union([NewCheckout, RetryCheckout]);

interface Attempt {
  booking_intent_id: string;
  payment_id: string;
  attempt: number;
  idempotency_key: string;
  provider: Provider;
  method: "card" | "pix";
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
function providerFor(body: z.infer<typeof Body>): { asked: Provider | null; fallback: Provider } | Response {
  if (body.method === "card") {
    if (body.provider && body.provider !== "stripe") return errorJson(400, "invalid_provider", "cards are paid through stripe");
    return { asked: "stripe", fallback: "stripe" };
  }
  if (body.provider === "stripe") return errorJson(400, "invalid_provider", "PIX is taken through mercadopago or openpix");
  return { asked: body.provider ?? null, fallback: defaultPixProvider() };
}

const configured = (p: Provider) => (p === "stripe" ? !!stripeApi() : p === "mercadopago" ? !!mercadoPago() : !!openPix());

/** What the guest's app needs to pay, per provider; the attempt is recorded before the call. */
async function askProvider(a: Attempt, email: string): Promise<{ gatewayId: string; gatewayStatus: string; payload: unknown; pay: Record<string, unknown> }> {
  const amount = Number(a.amount);
  const description = `Reserve Connect stay ${a.check_in} to ${a.check_out} (${a.nights} nights)`;
  if (a.provider === "stripe") {
    const stripe = stripeApi();
    if (!stripe) throw new Error("stripe is not configured");
    const pi = await createCardPaymentIntent(stripe, {
      paymentId: a.payment_id, bookingIntentId: a.booking_intent_id, amount, currency: a.currency,
      idempotencyKey: a.idempotency_key, description,
    });
    // the client secret goes to the guest, never to our database or logs
    return { gatewayId: pi.id, gatewayStatus: pi.status, payload: withoutClientSecret(pi), pay: { client_secret: pi.client_secret } };
  }
  const expiresAt = a.payment_expires_at ?? a.hold_expires_at;
  if (a.provider === "mercadopago") {
    const cfg = mercadoPago();
    if (!cfg) throw new Error("mercadopago is not configured");
    const p = await createPixPayment(cfg, {
      paymentId: a.payment_id, amount, description, payerEmail: email, payerName: a.guest_name ?? undefined,
      notificationUrl: `${functionsBaseUrl()}/webhook_pix/mercadopago`, expiresAt, idempotencyKey: a.idempotency_key,
    });
    const data = p.point_of_interaction?.transaction_data;
    return {
      gatewayId: String(p.id), gatewayStatus: p.status, payload: p,
      pay: { qr_code: data?.qr_code, qr_code_base64: data?.qr_code_base64, ticket_url: data?.ticket_url },
    };
  }
  const cfg = openPix();
  if (!cfg) throw new Error("openpix is not configured");
  const charge = await createOpenPixCharge(cfg, {
    paymentId: a.payment_id, amount, comment: description, expiresAt,
    ...(a.guest_name && { customer: { name: a.guest_name, email } }),
  });
  return {
    gatewayId: charge.correlationID, gatewayStatus: charge.status, payload: charge,
    pay: { qr_code: charge.brCode, qr_code_image: charge.qrCodeImage, payment_link_url: charge.paymentLinkUrl },
  };
}

function providerErrorResponse(err: ProviderError): Response {
  const status = err.kind === "rejected" ? 502 : 503;
  const error = err.kind === "rejected" ? "provider_rejected" : err.kind === "rate_limited" ? "provider_rate_limited"
    : err.kind === "timeout" ? "provider_timeout" : "provider_unavailable";
  const res = errorJson(status, error, `${err.provider} could not create the payment; the nights were released, start a new checkout`, {
    provider: err.provider, ...(err.code && { provider_code: err.code }),
  });
  if (err.kind === "rate_limited") res.headers.set("retry-after", "10");
  return res;
}

export async function handler(req: Request): Promise<Response> {
  if (req.method !== "POST") return methodNotAllowed(["POST"]);
  const notJson = requireJson(req);
  if (notJson) return notJson;
  const text = await readBodyText(req, 16 * 1024);
  if (text instanceof Response) return text;
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return errorJson(400, "invalid_json", "the body is not valid JSON");
  }
  const parsed = Body.safeParse(raw);
  if (!parsed.success) {
    return invalidRequest("the body does not match a checkout", parsed.error.issues);
  }
  const body = parsed.data;
  const claims = bearerClaims(req.headers.get("authorization"));
  const clientId = typeof claims?.sub === "string" ? claims.sub : null;
  // a guest pays as a signed-in user (the limits are per user); only the service role may act for none
  if (!clientId && claims?.role !== "service_role") {
    return errorJson(401, "sign_in_required", "checkout needs a signed-in user's token");
  }
  const email = body.guest_email ?? (typeof claims?.email === "string" ? claims.email : undefined);
  const chosen = providerFor(body);
  if (chosen instanceof Response) return chosen;
  const isRetry = "booking_intent_id" in body;
  const asked = isRetry ? chosen.asked : chosen.asked ?? chosen.fallback;
  if (asked && !configured(asked)) return errorJson(503, "provider_not_configured", `${asked} is not configured`);
  if (body.method === "pix" && !email && !("booking_intent_id" in body)) {
    return errorJson(400, "invalid_request", "a PIX checkout needs guest_email (the payer's e-mail)");
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
    return dbErrorResponse(err, "checkout");
  }

  if (!configured(attempt.provider)) return errorJson(503, "provider_not_configured", `${attempt.provider} is not configured`);
  let answer: Awaited<ReturnType<typeof askProvider>>;
  try {
    answer = await askProvider(attempt, email ?? attempt.guest_email ?? "");
  } catch (err) {
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

  let attached: { status: string };
  try {
    [attached] = await sql<{ status: string }[]>`
      select status from reserve.attach_gateway_payment(${attempt.payment_id}::uuid, ${answer.gatewayId}, ${answer.gatewayStatus},
                                                        ${sql.json(answer.payload as never)})`;
  } catch (err) {
    return dbErrorResponse(err, "checkout attach");
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
    gateway_payment_id: answer.gatewayId,
    ...answer.pay,
  }, 201);
}
