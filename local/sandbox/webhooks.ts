// Webhook delivery with the failure modes real providers show: lost, late, duplicated, out of order,
// badly signed. Every attempt is recorded so tests can assert on what the receiver actually saw.
import type { Delivery, Provider, ProviderOrAll, SandboxEvent, WebhookMode } from "./types.ts";
import { SandboxError } from "./types.ts";
import { sleep } from "./util.ts";

/** Per provider: the headers that sign one attempt (a new timestamp each time, as the providers do). */
export type Signer = (event: SandboxEvent, wrongSecret: boolean) => Promise<Record<string, string>>;

const PROVIDERS: Provider[] = ["stripe", "mercadopago", "openpix"];
// real providers give up on a slow endpoint (Stripe ~20 s, MercadoPago 22 s); a sandbox can be stricter
const SEND_TIMEOUT_MS = 10_000;
/** how much history a restart keeps (events for redelivery, deliveries for inspection) */
const KEPT_HISTORY = 10_000;

export interface DispatcherSnapshot {
  events: SandboxEvent[];
  deliveries: Delivery[];
}

export class Dispatcher {
  private modes = new Map<Provider, WebhookMode>(PROVIDERS.map((p) => [p, "deliver"]));
  private held: SandboxEvent[] = [];
  private recorded: Delivery[] = [];
  private all: SandboxEvent[] = [];
  private byId = new Map<string, SandboxEvent>();
  private inflight = new Set<Promise<unknown>>();
  private timers = new Map<NodeJS.Timeout, () => void>();
  private waiters = new Set<() => void>();
  private abort = new AbortController();

  /** called after every event and delivery, so the state store knows to write */
  onChange: () => void = () => {};

  constructor(
    private signers: Record<Provider, Signer>,
    private retry: { attempts: number; baseMs: number },
    private log: (line: string) => void,
  ) {}

  snapshot(): DispatcherSnapshot {
    return { events: this.all.slice(-KEPT_HISTORY), deliveries: this.recorded.slice(-KEPT_HISTORY) };
  }

  restore(s: DispatcherSnapshot): void {
    for (const e of s.events) {
      this.all.push(e);
      this.byId.set(e.id, e);
    }
    this.recorded.push(...s.deliveries);
  }

  setMode(provider: ProviderOrAll, mode: WebhookMode): void {
    if (typeof mode === "object" && "duplicate" in mode && !(mode.duplicate >= 1)) {
      throw new SandboxError(400, "duplicate must be at least 1");
    }
    for (const p of provider === "all" ? PROVIDERS : [provider]) this.modes.set(p, mode);
  }

  emit(event: SandboxEvent): void {
    this.all.push(event);
    this.byId.set(event.id, event);
    this.onChange();
    if (!event.url) {
      this.log(`[sandbox] ${event.provider} ${event.type} ${event.id}: no webhook url, recorded only`);
      return;
    }
    const mode = this.modes.get(event.provider)!;
    if (mode === "drop") {
      this.record({ event, status: "dropped", attempt: 1 });
    } else if (mode === "reorder") {
      this.held.push(event);
    } else if (mode === "wrong_secret") {
      this.track(this.deliverWithRetry(event, true));
    } else if (mode === "deliver") {
      this.track(this.deliverWithRetry(event, false));
    } else if ("delayMs" in mode) {
      // tracked as in flight from now, so flush() also waits for late ones
      this.track(new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.timers.delete(timer);
          this.deliverWithRetry(event, false).finally(resolve);
        }, mode.delayMs);
        this.timers.set(timer, resolve);
      }));
    } else {
      for (let i = 0; i < mode.duplicate; i++) this.track(this.deliverWithRetry(event, false));
    }
  }

  /** Like the dashboard's "resend": one more attempt now, whatever the current mode. */
  async redeliver(eventId: string): Promise<Delivery> {
    const event = this.byId.get(eventId);
    if (!event) throw new SandboxError(404, `no event ${eventId}`);
    if (!event.url) throw new SandboxError(409, `event ${eventId} has no webhook url`);
    const attempt = Math.max(0, ...this.recorded.filter((d) => d.eventId === eventId).map((d) => d.attempt)) + 1;
    return await this.send(event, attempt, false);
  }

  /** Releases events held by `reorder` newest first, then waits until nothing is in flight. */
  async flush(): Promise<void> {
    const held = this.held.reverse();
    this.held = [];
    for (const event of held) await this.deliverWithRetry(event, false);
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
  }

  deliveries(): Delivery[] {
    return this.recorded.map((d) => ({ ...d }));
  }

  events(provider?: Provider): SandboxEvent[] {
    return this.all.filter((e) => !provider || e.provider === provider);
  }

  event(id: string): SandboxEvent | undefined {
    return this.byId.get(id);
  }

  async waitFor(n: number, timeoutMs: number): Promise<Delivery[]> {
    if (this.recorded.length >= n) return this.deliveries();
    return await new Promise((resolve, reject) => {
      const waiter = () => {
        if (this.recorded.length < n) return;
        clearTimeout(timer);
        this.waiters.delete(waiter);
        resolve(this.deliveries());
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        const seen = this.recorded.map((d) => `${d.provider}:${d.type}:${d.status}`).join(", ") || "none";
        reject(new Error(`waited ${timeoutMs} ms for ${n} deliveries, got ${this.recorded.length} (${seen})`));
      }, timeoutMs);
      this.waiters.add(waiter);
    });
  }

  async stop(): Promise<void> {
    for (const [t, resolve] of this.timers) {
      clearTimeout(t);
      resolve();
    }
    this.timers.clear();
    this.held = [];
    this.abort.abort();
    await Promise.allSettled([...this.inflight]);
  }

  private track(p: Promise<unknown>): void {
    this.inflight.add(p);
    p.catch(() => {}).finally(() => this.inflight.delete(p));
  }

  private async deliverWithRetry(event: SandboxEvent, wrongSecret: boolean): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const d = await this.send(event, attempt, wrongSecret);
      const ok = typeof d.status === "number" && d.status >= 200 && d.status < 300;
      if (ok || attempt > this.retry.attempts || this.abort.signal.aborted) return;
      await sleep(this.retry.baseMs * 2 ** (attempt - 1));
    }
  }

  private async send(event: SandboxEvent, attempt: number, wrongSecret: boolean): Promise<Delivery> {
    const url = event.url!;
    try {
      const headers = await this.signers[event.provider](event, wrongSecret);
      const res = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body: event.raw,
        signal: AbortSignal.any([this.abort.signal, AbortSignal.timeout(SEND_TIMEOUT_MS)]),
      });
      await res.arrayBuffer().catch(() => undefined);
      return this.record({ event, status: res.status, attempt });
    } catch (err) {
      return this.record({ event, status: "error", attempt, error: (err as Error).message });
    }
  }

  private record(a: { event: SandboxEvent; status: Delivery["status"]; attempt: number; error?: string }): Delivery {
    const d: Delivery = {
      provider: a.event.provider,
      eventId: a.event.id,
      type: a.event.type,
      url: a.event.url ?? "",
      status: a.status,
      attempt: a.attempt,
      at: new Date().toISOString(),
      ...(a.error ? { error: a.error } : {}),
    };
    this.recorded.push(d);
    this.onChange();
    this.log(`[sandbox] webhook ${d.provider} ${d.type} ${d.eventId} attempt ${d.attempt} -> ${d.status}`);
    for (const w of [...this.waiters]) w();
    return { ...d };
  }
}
