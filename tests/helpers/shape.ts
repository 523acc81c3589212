// Field-for-field comparison of an object with a recorded provider payload: the same keys and the same
// kinds of value (string, number, boolean, object, array), recursively; values may differ, and null on
// either side matches anything (the providers send null for a field that has no value yet).
import { readFileSync } from "node:fs";
import path from "node:path";

export interface ShapeRules {
  /** dotted paths (`charge.invoice`, `evidence.enhanced_evidence`) the object may lack, with the reason in a comment */
  missingOk?: (path: string) => boolean;
  /** dotted paths the object may have that the recording lacks */
  extraOk?: (path: string) => boolean;
  /** fields holding the caller's own data (metadata, the customer it sent): their keys are not the provider's */
  opaque?: string[];
}

const OPAQUE = ["metadata", "customer"];

type Json = unknown;
const kind = (v: Json) => (v === null ? "null" : Array.isArray(v) ? "array" : typeof v);

/** Every difference, as `path: what`; empty when the shapes agree. */
export function shapeDiff(recorded: Json, actual: Json, rules: ShapeRules = {}, at = ""): string[] {
  if (recorded === null || actual === null || recorded === undefined) return [];
  const last = at.split(".").at(-1)!.replace(/\[\]$/, "");
  if (at && (rules.opaque ?? OPAQUE).includes(last)) return kind(recorded) === kind(actual) ? [] : [`${at}: ${kind(actual)} where the recording has ${kind(recorded)}`];
  const rk = kind(recorded);
  const ak = kind(actual);
  if (rk !== ak) return [`${at || "(root)"}: ${ak} where the recording has ${rk}`];
  if (rk === "array") {
    const r = recorded as Json[];
    const a = actual as Json[];
    if (r.length === 0 || a.length === 0) return [];
    return a.flatMap((el, i) => shapeDiff(r[0], el, rules, `${at}[${i}]`).map((d) => d.replace(`${at}[${i}]`, `${at}[]`)))
      .filter((d, i, all) => all.indexOf(d) === i);
  }
  if (rk !== "object") return [];
  const r = recorded as Record<string, Json>;
  const a = actual as Record<string, Json>;
  const out: string[] = [];
  for (const k of Object.keys(r)) {
    const p = at ? `${at}.${k}` : k;
    if (!(k in a)) {
      if (!rules.missingOk?.(p)) out.push(`${p}: missing`);
      continue;
    }
    out.push(...shapeDiff(r[k], a[k], rules, p));
  }
  for (const k of Object.keys(a)) {
    const p = at ? `${at}.${k}` : k;
    if (!(k in r) && !rules.extraOk?.(p)) out.push(`${p}: not in the recording`);
  }
  return out;
}

export const fixturesDir = path.resolve(import.meta.dirname, "../fixtures/providers");

export function recorded<T = Record<string, any>>(provider: string, name: string): T {
  return JSON.parse(readFileSync(path.join(fixturesDir, provider, `${name}.json`), "utf8")) as T;
}

/**
 * The top-level fields of a stripe-node resource interface (`export interface Dispute {`), with whether each is
 * optional: the field list of the API version the installed stripe-node speaks.
 */
export function stripeTypeFields(resourceFile: string, iface: string): Map<string, boolean> {
  const file = path.resolve(import.meta.dirname, "../../node_modules/stripe/cjs/resources", `${resourceFile}.d.ts`);
  const text = readFileSync(file, "utf8");
  const start = text.indexOf(`export interface ${iface} {`);
  if (start < 0) throw new Error(`no interface ${iface} in ${file}`);
  const body = text.slice(start, text.indexOf("\n}", start));
  const fields = new Map<string, boolean>();
  for (const m of body.matchAll(/^ {4}([a-z_0-9]+)(\??):/gm)) fields.set(m[1]!, m[2] === "?");
  return fields;
}
