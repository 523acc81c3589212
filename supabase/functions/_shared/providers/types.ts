// What every provider adapter reduces a provider's object or event to: our payment status and the
// facts apply_payment_status needs.

export type PaymentStatus =
  | "pending" | "processing" | "succeeded" | "failed" | "cancelled" | "expired"
  | "refunded" | "partially_refunded" | "disputed";

export type Provider = "stripe" | "mercadopago" | "openpix";

export interface ProviderUpdate {
  status: PaymentStatus;
  /** the provider's id of the payment (PaymentIntent, MercadoPago payment, OpenPIX correlationID) */
  gatewayPaymentId: string;
  /** our payments.id when the provider echoes it (metadata, external_reference, correlationID) */
  paymentId?: string;
  /** the provider's time of the news, which orders late deliveries */
  eventAt?: Date;
  gatewayStatus: string;
  errorCode?: string;
  errorMessage?: string;
  /** cumulative amount refunded, centavos */
  refundedAmount?: number;
  /** the provider's object, kept as evidence */
  object: unknown;
}

/** A provider call that failed; kind decides our HTTP answer and whether a retry can help. */
export class ProviderError extends Error {
  constructor(
    readonly provider: Provider,
    readonly kind: "rejected" | "rate_limited" | "unavailable" | "timeout",
    message: string,
    readonly status?: number,
    readonly code?: string,
  ) {
    super(message);
    this.name = "ProviderError";
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const asUuid = (v: unknown): string | undefined => (typeof v === "string" && UUID.test(v) ? v : undefined);

/** fetch with a deadline; a provider that hangs must not hold the function until the platform kills it. */
export async function fetchWithTimeout(provider: Provider, url: string, init: RequestInit, timeoutMs: number): Promise<Response> {
  try {
    return await fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    const name = (err as Error)?.name;
    if (name === "TimeoutError" || name === "AbortError") {
      throw new ProviderError(provider, "timeout", `${provider} did not answer within ${timeoutMs} ms`);
    }
    throw new ProviderError(provider, "unavailable", `${provider} unreachable: ${(err as Error)?.message ?? err}`);
  }
}

/** Non-2xx answers of a provider API as a ProviderError, keeping the provider's own code. */
export function httpError(provider: Provider, res: Response, body: unknown, what: string): ProviderError {
  const b = body as { message?: string; error?: unknown; cause?: { code?: unknown }[] } | null;
  const code = typeof b?.error === "string" ? b.error : b?.cause?.[0]?.code != null ? String(b.cause[0].code) : undefined;
  const message = `${provider} ${what}: HTTP ${res.status}${b?.message ? ` ${b.message}` : code ? ` ${code}` : ""}`;
  const kind = res.status === 429 ? "rate_limited" : res.status >= 500 ? "unavailable" : "rejected";
  return new ProviderError(provider, kind, message, res.status, code);
}

/**
 * One JSON call to a provider's API: the deadline covers the body too (headers that arrive and a body
 * that stalls are no answer), a body that is not JSON is the provider's fault, and non-2xx answers
 * become a ProviderError with the provider's own code.
 */
export async function providerJson<T>(provider: Provider, url: string, init: RequestInit, timeoutMs: number, what: string): Promise<T> {
  const res = await fetchWithTimeout(provider, url, init, timeoutMs);
  let text: string;
  try {
    text = await res.text();
  } catch (err) {
    const name = (err as Error)?.name;
    throw new ProviderError(provider, name === "TimeoutError" || name === "AbortError" ? "timeout" : "unavailable",
      `${provider} ${what}: the answer's body did not arrive (${(err as Error)?.message ?? err})`, res.status);
  }
  let parsed: unknown = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    throw new ProviderError(provider, res.ok ? "unavailable" : "rejected", `${provider} ${what}: HTTP ${res.status} with a body that is not JSON`, res.status);
  }
  if (!res.ok) throw httpError(provider, res, parsed, what);
  return parsed as T;
}
