// Provider settings of the edge functions, from their secrets. Unset means the provider is off: the
// function answers 503 for it rather than calling a provider with no key.
import type Stripe from "stripe";
import type { MercadoPagoConfig } from "./providers/mercadopago.ts";
import { fetchOpenPixPublicKeys, type OpenPixConfig } from "./providers/openpix.ts";
import { stripeClient } from "./providers/stripe.ts";

const env = (name: string) => Deno.env.get(name) || undefined;

let stripe: Stripe | undefined;

export function stripeApi(): Stripe | undefined {
  const secretKey = env("STRIPE_SECRET_KEY");
  if (!secretKey) return undefined;
  stripe ??= stripeClient({ secretKey, apiBase: env("STRIPE_API_BASE") });
  return stripe;
}

export const stripeWebhookSecret = () => env("STRIPE_WEBHOOK_SECRET");

export function mercadoPago(): MercadoPagoConfig | undefined {
  const accessToken = env("MERCADOPAGO_ACCESS_TOKEN");
  return accessToken ? { accessToken, apiBase: env("MERCADOPAGO_API_BASE") } : undefined;
}

export const mercadoPagoWebhookSecret = () => env("MERCADOPAGO_WEBHOOK_SECRET");

export function openPix(): OpenPixConfig | undefined {
  const appId = env("OPENPIX_APP_ID");
  return appId ? { appId, apiBase: env("OPENPIX_API_BASE") } : undefined;
}

let openPixKeys: { keys: string[]; at: number } | undefined;
// a forged signature must not make us call OpenPIX on every request
const KEY_REFRESH_MIN_MS = 60_000;

/**
 * The configured OPENPIX_WEBHOOK_PUBLIC_KEY, plus the keys OpenPIX publishes (fetched once an hour,
 * because they rotate, or on `refresh` at most once a minute). A fetch that fails leaves the configured key.
 */
export async function openPixPublicKeys(refresh = false): Promise<string[]> {
  const configured = env("OPENPIX_WEBHOOK_PUBLIC_KEY");
  const cfg = openPix();
  const age = openPixKeys ? Date.now() - openPixKeys.at : Infinity;
  if (cfg && (age > 3600_000 || (refresh && age > KEY_REFRESH_MIN_MS))) {
    try {
      openPixKeys = { keys: await fetchOpenPixPublicKeys(cfg), at: Date.now() };
    } catch {
      openPixKeys ??= { keys: [], at: Date.now() };
    }
  }
  return [...(configured ? [configured] : []), ...(openPixKeys?.keys ?? [])];
}

/** Where MercadoPago posts notifications of the payments we create. */
export function functionsBaseUrl(): string {
  const explicit = env("RESERVE_FUNCTIONS_URL");
  if (explicit) return explicit.replace(/\/$/, "");
  const supabase = env("SUPABASE_URL");
  if (!supabase) throw new Error("SUPABASE_URL is not set");
  return `${supabase.replace(/\/$/, "")}/functions/v1`;
}

export const defaultPixProvider = (): "mercadopago" | "openpix" =>
  env("PIX_PROVIDER") === "openpix" ? "openpix" : "mercadopago";
