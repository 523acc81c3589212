// A local stand-in for Stripe, MercadoPago and OpenPIX: real request and webhook shapes, real signatures,
// and levers for the failures that matter (lost, late, duplicated, reordered or forged webhooks; API errors
// and timeouts; PIX paid after expiry; a card charged twice from two tabs).
export { startProviderSandbox } from "./server.ts";
export type {
  Delivery,
  Provider,
  ProviderOrAll,
  ProviderSandbox,
  SandboxControl,
  SandboxEvent,
  SandboxOptions,
  StripeConfirmOutcome,
  WebhookMode,
} from "./types.ts";
export { SandboxError } from "./types.ts";
