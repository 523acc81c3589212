// Injected API failures: the next N calls to a provider fail or hang, so callers' retry and timeout
// paths run against the same HTTP surface they use in production.
import type { Provider, ProviderOrAll } from "./types.ts";
import { SandboxError } from "./types.ts";

const PROVIDERS: Provider[] = ["stripe", "mercadopago", "openpix"];

interface Counted<T> {
  rule: T;
  left: number;
}

export class Faults {
  private fails = new Map<Provider, Counted<{ status: number; code?: string }>[]>();
  private hangs = new Map<Provider, Counted<{ ms: number }>[]>();

  failApi(provider: ProviderOrAll, opts: { status: number; code?: string; times: number }): void {
    if (!(opts.status >= 400 && opts.status <= 599)) throw new SandboxError(400, "failApi status must be 4xx or 5xx");
    for (const p of expand(provider)) push(this.fails, p, { status: opts.status, code: opts.code }, opts.times);
  }

  timeoutApi(provider: ProviderOrAll, opts: { ms: number; times: number }): void {
    for (const p of expand(provider)) push(this.hangs, p, { ms: opts.ms }, opts.times);
  }

  takeFail(p: Provider): { status: number; code?: string } | undefined {
    return take(this.fails, p);
  }

  takeHang(p: Provider): { ms: number } | undefined {
    return take(this.hangs, p);
  }
}

function expand(p: ProviderOrAll): Provider[] {
  return p === "all" ? PROVIDERS : [p];
}

function push<T>(m: Map<Provider, Counted<T>[]>, p: Provider, rule: T, times: number): void {
  if (!(times >= 1)) throw new SandboxError(400, "times must be at least 1");
  const list = m.get(p) ?? [];
  list.push({ rule, left: times });
  m.set(p, list);
}

function take<T>(m: Map<Provider, Counted<T>[]>, p: Provider): T | undefined {
  const list = m.get(p);
  const head = list?.[0];
  if (!head) return undefined;
  head.left -= 1;
  if (head.left <= 0) list!.shift();
  return head.rule;
}
