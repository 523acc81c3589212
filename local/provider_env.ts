// The provider secrets the edge functions get locally: the sandbox's, or the real ones from the
// environment when any is set (then nothing is faked).
import { randomBytes } from "node:crypto";
import type { ProviderSandbox } from "./sandbox/index.ts";

const PROVIDER_VARS = [
  "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "STRIPE_API_BASE",
  "MERCADOPAGO_ACCESS_TOKEN", "MERCADOPAGO_WEBHOOK_SECRET", "MERCADOPAGO_API_BASE",
  "OPENPIX_APP_ID", "OPENPIX_WEBHOOK_PUBLIC_KEY", "OPENPIX_API_BASE",
  "PIX_PROVIDER", "RESERVE_FUNCTIONS_URL",
  "PAGERDUTY_ROUTING_KEY", "PAGERDUTY_EVENTS_URL", "SLACK_WEBHOOK_URL",
] as const;

/** Real provider keys in the environment mean: talk to the real providers, run no sandbox. */
export function realProvidersConfigured(env: NodeJS.ProcessEnv = process.env): boolean {
  return !!(env.STRIPE_SECRET_KEY || env.MERCADOPAGO_ACCESS_TOKEN || env.OPENPIX_APP_ID);
}

export function sandboxEnv(sb: Pick<ProviderSandbox, "stripe" | "mercadopago" | "openpix"> & Partial<Pick<ProviderSandbox, "pagerduty" | "slack">>): Record<string, string> {
  return {
    // the alert receivers: the sandbox's, unless real ones are set in the environment
    ...(sb.pagerduty && { PAGERDUTY_ROUTING_KEY: process.env.PAGERDUTY_ROUTING_KEY || sb.pagerduty.routingKey,
                          PAGERDUTY_EVENTS_URL: process.env.PAGERDUTY_ROUTING_KEY ? process.env.PAGERDUTY_EVENTS_URL || "https://events.pagerduty.com/v2/enqueue" : sb.pagerduty.eventsUrl }),
    ...(sb.slack && { SLACK_WEBHOOK_URL: process.env.SLACK_WEBHOOK_URL || sb.slack.webhookUrl }),
    STRIPE_SECRET_KEY: sb.stripe.secretKey,
    STRIPE_WEBHOOK_SECRET: sb.stripe.webhookSecret,
    STRIPE_API_BASE: `${sb.stripe.protocol}://${sb.stripe.host}:${sb.stripe.port}`,
    MERCADOPAGO_ACCESS_TOKEN: sb.mercadopago.accessToken,
    MERCADOPAGO_WEBHOOK_SECRET: sb.mercadopago.webhookSecret,
    MERCADOPAGO_API_BASE: sb.mercadopago.apiBase,
    OPENPIX_APP_ID: sb.openpix.appId,
    OPENPIX_API_BASE: sb.openpix.apiBase,
    OPENPIX_WEBHOOK_PUBLIC_KEY: sb.openpix.webhookPublicKey,
  };
}

/** The provider variables set in the environment, passed through unchanged. */
export function passthroughEnv(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of PROVIDER_VARS) if (env[k]) out[k] = env[k]!;
  return out;
}

export const newCronSecret = () => randomBytes(24).toString("base64url");
