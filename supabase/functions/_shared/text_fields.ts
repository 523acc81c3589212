// Text a client sends that we store and show (names, e-mails, notes): refused, not cleaned, when it
// carries characters that change how it reads elsewhere. NUL is refused by PostgreSQL's text type
// (a 500 if it got there); CR/LF forge lines in logs and e-mail headers; ESC starts ANSI sequences in a
// terminal; the bidi overrides and isolates make "Ana\u202Egnp.exe" read as another name in the ops
// console. Every function that takes a body uses these, so a 400 names the field. Days and times are
// fields too: zod's ISO checks take the year 0000, which PostgreSQL refuses.
import { z } from "zod";
import { storableIsoText } from "./times.ts";

/** C0 controls (NUL, tab, CR, LF, ESC, ...), DEL and the C1 controls. */
export const CONTROL_CHARS = /[\u0000-\u001f\u007f-\u009f]/;
/** Unicode bidi embeddings, overrides and isolates (LRE, RLE, PDF, LRO, RLO, LRI, RLI, FSI, PDI). */
export const BIDI_CONTROLS = /[\u202a-\u202e\u2066-\u2069]/;
/** A UTF-16 surrogate that is not half of a pair: no character at all; UTF-8 stores it as U+FFFD. */
export const LONE_SURROGATES = /\p{Cs}/u;
/** Controls but tab, CR and LF: what a text of several lines (a reason) may not hold. */
const CONTROL_CHARS_BUT_LINES = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/;

// a refinement runs only on a value that passed the checks before it: one issue a field (no abort, which
// would keep a union of request shapes from naming the field)
const once = { when: (payload: { issues: unknown[] }) => payload.issues.length === 0 };

/** A single-line text field of at most `max` characters, trimmed, with no control or bidi characters. */
export function printableText(max: number) {
  return readable(z.string().trim().min(1).max(max), CONTROL_CHARS, "must not contain control characters (NUL, tab, CR, LF, ESC, DEL, ...)");
}

/** A text of `min` to `max` characters that may run over several lines (tab, CR, LF), with no other control or bidi characters. */
export function noteText(min: number, max: number, tooShort?: string) {
  return readable(z.string().trim().min(min, tooShort).max(max), CONTROL_CHARS_BUT_LINES, "must not contain control characters other than tab, CR and LF");
}

/** A text refused when it holds the given controls, bidi overrides or isolates, or lone surrogates. */
function readable(text: z.ZodString, controls: RegExp, controlsMessage: string) {
  return text
    .refine((s) => !controls.test(s), { message: controlsMessage, ...once })
    .refine((s) => !BIDI_CONTROLS.test(s), { message: "must not contain bidi override or isolate characters", ...once })
    .refine((s) => !LONE_SURROGATES.test(s), { message: "must not contain lone UTF-16 surrogates", ...once });
}

/** A day as YYYY-MM-DD, years 0001 to 9999 (PostgreSQL's date has no year 0). */
export function calendarDay() {
  return z.iso.date().refine(storableIsoText, { message: "must be a day of the years 0001 to 9999", ...once });
}

/** A time in ISO 8601 with its offset (Z or ±hh:mm), years 0001 to 9999. */
export function instant() {
  return z.iso.datetime({ offset: true }).refine(storableIsoText, { message: "must be a time in the years 0001 to 9999", ...once });
}

/** An e-mail address of at most 320 characters, with no control characters. */
export function emailAddress() {
  return z.email().max(320).refine((s) => !CONTROL_CHARS.test(s) && !BIDI_CONTROLS.test(s) && !LONE_SURROGATES.test(s),
                                   { message: "must not contain control or bidi characters", ...once });
}
