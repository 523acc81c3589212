// Provider settings of the edge functions, from their secrets, read when needed (a secret changed by
// `supabase secrets set` is seen by the next instance). Unset means the provider is off: the function
// answers 503 for it rather than calling a provider with no key. Each provider module takes its
// settings from here; nothing here knows how a provider works.

// Deno in the functions; the Node side (tests of the provider modules) imports the types only
const env = (name: string): string | undefined =>
  (globalThis as { Deno?: { env: { get(n: string): string | undefined } } }).Deno?.env.get(name) || undefined;

export interface StripeSettings {
  secretKey?: string;
  /** e.g. http://127.0.0.1:12111 for the sandbox; absent means api.stripe.com */
  apiBase?: string;
  webhookSecret?: string;
}

export const stripeSettings = (): StripeSettings => ({
  secretKey: env("STRIPE_SECRET_KEY"),
  apiBase: env("STRIPE_API_BASE"),
  webhookSecret: env("STRIPE_WEBHOOK_SECRET"),
});

export interface MercadoPagoSettings {
  accessToken?: string;
  apiBase?: string;
  webhookSecret?: string;
  /** where MercadoPago posts the notifications of the payments we create */
  notificationUrl?: string;
}

export const mercadoPagoSettings = (): MercadoPagoSettings => ({
  accessToken: env("MERCADOPAGO_ACCESS_TOKEN"),
  apiBase: env("MERCADOPAGO_API_BASE"),
  webhookSecret: env("MERCADOPAGO_WEBHOOK_SECRET"),
  notificationUrl: functionsBaseUrlOrUndefined() && `${functionsBaseUrl()}/webhook_pix/mercadopago`,
});

export interface OpenPixSettings {
  appId?: string;
  apiBase?: string;
  /** a key configured by hand; the ones OpenPIX publishes are fetched as well */
  webhookPublicKey?: string;
}

export const openPixSettings = (): OpenPixSettings => ({
  appId: env("OPENPIX_APP_ID"),
  apiBase: env("OPENPIX_API_BASE"),
  webhookPublicKey: env("OPENPIX_WEBHOOK_PUBLIC_KEY"),
});

function functionsBaseUrlOrUndefined(): string | undefined {
  return env("RESERVE_FUNCTIONS_URL") ?? env("SUPABASE_URL");
}

/** Where the functions are served: RESERVE_FUNCTIONS_URL, else SUPABASE_URL/functions/v1. */
export function functionsBaseUrl(): string {
  const explicit = env("RESERVE_FUNCTIONS_URL");
  if (explicit) return explicit.replace(/\/$/, "");
  const supabase = env("SUPABASE_URL");
  if (!supabase) throw new Error("SUPABASE_URL is not set");
  return `${supabase.replace(/\/$/, "")}/functions/v1`;
}

/** The provider a method uses when the request names none: PIX_PROVIDER / CARD_PROVIDER, if set. */
export const configuredDefaultProvider = (method: string): string | undefined => env(`${method.toUpperCase()}_PROVIDER`);
