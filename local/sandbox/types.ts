// Public types of the provider sandbox: what tests and `npm start` users program against.

export type Provider = "stripe" | "mercadopago" | "openpix";
export type ProviderOrAll = Provider | "all";

export type WebhookMode =
  | "deliver"
  | "drop"
  | "reorder"
  | "wrong_secret"
  | { delayMs: number }
  | { duplicate: number };

export interface Delivery {
  provider: Provider;
  eventId: string;
  type: string;
  url: string;
  status: number | "dropped" | "error";
  attempt: number;
  at: string;
  error?: string;
}

/** One notification as the provider would send it; `raw` is the exact body that is signed and sent. */
export interface SandboxEvent {
  provider: Provider;
  id: string;
  type: string;
  url: string | null;
  body: unknown;
  raw: string;
  createdAt: string;
  /** sent without a signature header (MercadoPago's IPN) */
  unsigned?: boolean;
}

export interface SandboxOptions {
  port?: number;
  stripeWebhookUrl?: string;
  openpixWebhookUrl?: string;
  retry?: { attempts: number; baseMs: number };
  log?: (line: string) => void;
  /**
   * Where the sandbox keeps every object, idempotency key, event and delivery, and its secrets, so that a
   * restart with the same directory is the same provider (same keys, same payments). Absent: memory only.
   */
  stateDir?: string;
  /** OpenPIX event names: "openpix" (OPENPIX:CHARGE_COMPLETED, the default) or "woovi" (woovi:CHARGE_COMPLETED) */
  openpixEventNaming?: "openpix" | "woovi";
  /** routing keys PagerDuty accepts besides the sandbox's own (one per service, as PagerDuty has) */
  pagerdutyRoutingKeys?: string[];
  /** MercadoPago also sends IPN (`?topic=payment&id=`) unless the notification_url says source_news=webhooks */
  mercadopagoIpn?: boolean;
}

export type StripeConfirmOutcome = "succeeded" | "declined" | "processing";

export interface SandboxControl {
  // guest and provider-side actions
  /** `amountReceived`/`currency`: the bank settles other figures than the PaymentIntent asked for */
  stripeConfirm(piId: string, outcome: StripeConfirmOutcome, opts?: { declineCode?: string; amountReceived?: number; currency?: string }): Record<string, unknown>;
  stripeSettle(piId: string, outcome: "succeeded" | "declined"): Record<string, unknown>;
  /** `amount`: the cardholder disputes only that much of the charge */
  stripeDispute(piId: string, opts?: { reason?: string; amount?: number }): Record<string, unknown>;
  stripeCloseDispute(piId: string, outcome: "won" | "lost"): Record<string, unknown>;
  /** `amount`/`currency`: approved for other figures than created with; `notify: false`: no notification */
  mercadopagoPay(id: number | string, opts?: { afterExpiry?: boolean; amount?: number; currency?: string; notify?: boolean }): Record<string, unknown>;
  /** `value`: completed for another value than the charge asked; `notify: false`: no webhook */
  openpixPay(correlationID: string, opts?: { afterExpiry?: boolean; value?: number; notify?: boolean }): Record<string, unknown>;
  expire(provider: "mercadopago" | "openpix", id: number | string): Record<string, unknown>;
  /** Stripe's automatic payout of the balance not yet paid out (gross − fees − refunds − disputes) */
  stripePayout(opts?: { currency?: string; status?: "paid" | "in_transit" | "failed" }): Record<string, unknown>;
  /** a payout in transit arrives (paid) or bounces (failed: its amount back in the balance, payout_failure) */
  stripePayoutOutcome(payoutId: string, outcome: "paid" | "failed"): Record<string, unknown>;
  // payments the provider knows and we were never told of (no webhook): ours (our metadata) or a stranger's
  stripeCreateUnnotifiedPayment(opts: { amount: number; currency?: string; metadata?: Record<string, string>; description?: string }): Record<string, unknown>;
  mercadopagoCreateUnnotifiedPayment(opts: { transaction_amount: number; external_reference?: string; metadata?: Record<string, unknown>; currency?: string }): Record<string, unknown>;
  openpixCreateUnnotifiedCharge(opts: { value: number; correlationID?: string; comment?: string }): Record<string, unknown>;
  // shape switches
  setOpenPixEventNaming(naming: "openpix" | "woovi"): void;
  setOpenPixDeliveriesWithoutEvent(on: boolean): void;
  setMercadoPagoIpn(on: boolean): void;
  // failure modes
  setWebhookMode(provider: ProviderOrAll, mode: WebhookMode): void;
  setWebhookUrl(provider: "stripe" | "openpix", url: string | null): void;
  failApi(provider: ProviderOrAll, opts: { status: number; code?: string; times: number }): void;
  /** a stored object's fields replaced by what no such object can hold (a value "1000.50", an undocumented status): its reads and listings answer them */
  garbleObject(provider: Provider, id: number | string, fields: Record<string, unknown>): Record<string, unknown>;
  timeoutApi(provider: ProviderOrAll, opts: { ms: number; times: number }): void;
  redeliver(eventId: string): Promise<Delivery>;
  flush(): Promise<void>;
  // inspection
  deliveries(): Delivery[];
  waitForDeliveries(n: number, timeoutMs?: number): Promise<Delivery[]>;
  events(provider?: Provider): SandboxEvent[];
  payment(provider: Provider, id: number | string): Record<string, unknown> | undefined;
  /** the page a person pays on (Stripe's pay page, MercadoPago's ticket_url, OpenPIX's paymentLinkUrl) */
  payUrl(provider: Provider, id: number | string): string;
  // alert receivers
  /** every event PagerDuty received, oldest first, with its answer */
  pagerdutyEvents(): ReceivedCall[];
  /** PagerDuty's alerts: state per dedup_key (triggered, acknowledged, resolved) with their event log */
  pagerdutyAlerts(): PagerDutyAlertState[];
  pagerdutyAlert(dedupKey: string): PagerDutyAlertState | undefined;
  /** every message the Slack webhook received, oldest first, with its answer */
  slackMessages(): ReceivedCall[];
  /** the next `times` calls to a receiver fail with `status` (429 with Retry-After: `retryAfter` s) or hang `timeoutMs`; null clears */
  setReceiverFault(receiver: "pagerduty" | "slack", fault: { status?: number; retryAfter?: number; timeoutMs?: number; times: number } | null): void;
  // bulk
  seedStripePaymentIntents(
    n: number,
    opts: { status: string; amount: number; currency?: string; metadata?: Record<string, string>; created?: number },
  ): string[];
  seedMercadoPagoPayments(
    n: number,
    opts: { status?: string; transaction_amount: number; external_reference?: string; metadata?: Record<string, unknown>; created?: number },
  ): number[];
}

export interface ProviderSandbox {
  url: string;
  stripe: { host: string; port: number; protocol: "http"; secretKey: string; webhookSecret: string };
  mercadopago: { apiBase: string; accessToken: string; webhookSecret: string };
  openpix: { apiBase: string; appId: string; webhookPublicKey: string };
  /** PagerDuty Events API v2: POST events to eventsUrl with this routing_key */
  pagerduty: { eventsUrl: string; routingKey: string };
  /** a Slack incoming webhook */
  slack: { webhookUrl: string };
  /** where state and secrets are kept (SandboxOptions.stateDir), or null for memory only */
  stateDir: string | null;
  control: SandboxControl;
  /** writes the state now (it is written within ~50 ms of any change anyway, and on stop) */
  flushState(): Promise<void>;
  stop(): Promise<void>;
}

export interface ReceivedCall {
  at: string;
  status: number;
  body: unknown;
  raw: string;
  answer: unknown;
}

export interface PagerDutyAlertState {
  dedup_key: string;
  routing_key: string;
  status: "triggered" | "acknowledged" | "resolved";
  summary: string;
  severity: string;
  source: string;
  created_at: string;
  updated_at: string;
  log: { at: string; event_action: string; payload?: Record<string, unknown> }[];
}

/** Raised by control actions a real guest or provider could not perform (wrong state, unknown id). */
export class SandboxError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}
