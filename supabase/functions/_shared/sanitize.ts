// What a provider sent, made storable: PostgreSQL's jsonb refuses a NUL (\u0000) and lone UTF-16
// surrogates, its parser (and JSON.stringify) overflow on very deep nesting, and an attacker with a
// captured signature (or a provider bug) can send megabytes of arrays. Signed events are still recorded
// as evidence, so instead of refusing them their content is bounded: control characters and lone
// surrogates are written out as visible escapes, depth, array and object sizes and string lengths are
// capped (what is cut says so), and a whole that is still too big is kept as its hash and a prefix.

import { sha256Hex } from "./crypto.ts";

export const LIMITS = {
  depth: 32,
  items: 200,
  keys: 200,
  stringChars: 8192,
  keyChars: 256,
  totalChars: 256 * 1024,
};

// C0 controls and DEL, and UTF-16 surrogates that are not part of a pair
const UNSAFE = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

const UNSAFE_ONE = new RegExp(UNSAFE.source);

/** Whether a string holds what PostgreSQL's text cannot (NUL, lone surrogates) or other control characters but tab, CR, LF. */
export const hasUnsafeChars = (s: string) => UNSAFE_ONE.test(s);

const escape = (c: string) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`;

/**
 * A string with NUL, other control characters (not tab, CR, LF) and lone surrogates escaped, at most `max`
 * characters, saying what it cut within them: the columns these go to (gateway_status, error_code, ...)
 * refuse one character more, and a refused update is a webhook retried for days.
 */
export function safeText(s: string, max = LIMITS.stringChars): string {
  const out = s.replace(UNSAFE, escape);
  if (out.length <= max) return out;
  const note = (cut: number) => `…[${out.length - cut} more characters]`;
  let cut = max - note(max).length;
  while (cut > 0 && cut + note(cut).length > max) cut--;
  // too short a field to say how much: a bare ellipsis
  const short = cut < max / 2;
  if (short) cut = max - 1;
  // never cut a surrogate pair in half
  if (cut > 0 && /[\ud800-\udbff]/.test(out[cut - 1])) cut--;
  return `${out.slice(0, Math.max(cut, 0))}${short ? "…" : note(cut)}`;
}

/**
 * A provider's value as text, whatever JSON it is: String() of an array nested thousands deep overflows
 * the stack, and of an object with a "toString" key throws; those are written as their bounded JSON.
 */
export function textOf(v: unknown): string {
  if (typeof v === "string") return v;
  if (v === null || typeof v !== "object") return String(v);
  return JSON.stringify(sanitizeJson(v)) ?? "null";
}

function walk(v: unknown, depth: number): unknown {
  if (typeof v === "string") return safeText(v);
  if (typeof v === "number") return Number.isFinite(v) ? v : null;
  if (v === null || typeof v === "boolean") return v;
  if (typeof v !== "object") return null;
  if (depth >= LIMITS.depth) return `[nested deeper than ${LIMITS.depth} levels: left out]`;
  if (Array.isArray(v)) {
    const out = v.slice(0, LIMITS.items).map((x) => walk(x, depth + 1));
    if (v.length > LIMITS.items) out.push(`[${v.length - LIMITS.items} more items left out]`);
    return out;
  }
  const out: Record<string, unknown> = {};
  let n = 0;
  const entries = Object.entries(v as Record<string, unknown>);
  for (const [k, x] of entries) {
    if (n++ >= LIMITS.keys) {
      out["[left out]"] = `${entries.length - LIMITS.keys} more keys`;
      break;
    }
    out[safeText(k, LIMITS.keyChars)] = walk(x, depth + 1);
  }
  return out;
}

/**
 * A JSON value PostgreSQL can store and JSON.stringify can write, of bounded size. A value that is still
 * over totalChars is replaced by what identifies it.
 */
export function sanitizeJson(v: unknown): unknown {
  const out = walk(v, 0);
  const text = JSON.stringify(out) ?? "null";
  if (text.length <= LIMITS.totalChars) return out;
  return {
    "[truncated]": `${text.length} characters, over ${LIMITS.totalChars}`,
    sha256: sha256Hex(text),
    prefix: safeText(text.slice(0, 4096), 4096),
  };
}
