// The payment providers by name. Adding one is adding its module (implementing PaymentProvider), its
// name here, and its name in the SQL check constraints (payments.provider, processed_webhooks.provider,
// poll_policies, a receivable_<name> ledger account). Nothing else names a provider.
import { configuredDefaultProvider, mercadoPagoSettings, openPixSettings, stripeSettings } from "../provider_config.ts";
import { mercadoPagoProvider } from "./mercadopago.ts";
import { openPixProvider } from "./openpix.ts";
import { stripeProvider } from "./stripe.ts";
import type { PaymentMethod, PaymentProvider } from "./types.ts";

export const PROVIDERS = {
  stripe: stripeProvider(stripeSettings),
  mercadopago: mercadoPagoProvider(mercadoPagoSettings),
  openpix: openPixProvider(openPixSettings),
} satisfies Record<string, PaymentProvider>;

export type ProviderName = keyof typeof PROVIDERS;
export const PROVIDER_NAMES = Object.keys(PROVIDERS) as ProviderName[];

export function providerNamed(name: string): PaymentProvider | undefined {
  return Object.hasOwn(PROVIDERS, name) ? PROVIDERS[name as ProviderName] : undefined;
}

export const providersTaking = (method: PaymentMethod): PaymentProvider[] =>
  Object.values(PROVIDERS).filter((p) => p.methods.includes(method));

/** The provider a method uses when the request names none: <METHOD>_PROVIDER if it takes the method, else the first that does. */
export function defaultProviderFor(method: PaymentMethod): PaymentProvider | undefined {
  const takers = providersTaking(method);
  const configured = configuredDefaultProvider(method);
  return takers.find((p) => p.name === configured) ?? takers[0];
}
