// Text a client sends that we store and show (names, e-mails, notes): refused, not cleaned, when it
// carries characters that change how it reads elsewhere. NUL is refused by PostgreSQL's text type
// (a 500 if it got there); CR/LF forge lines in logs and e-mail headers; ESC starts ANSI sequences in a
// terminal; the bidi overrides and isolates make "Ana\u202Egnp.exe" read as another name in the ops
// console. Every function that takes a body uses these, so a 400 names the field.
import { z } from "zod";

/** C0 controls (NUL, tab, CR, LF, ESC, ...), DEL and the C1 controls. */
export const CONTROL_CHARS = /[\u0000-\u001f\u007f-\u009f]/;
/** Unicode bidi embeddings, overrides and isolates (LRE, RLE, PDF, LRO, RLO, LRI, RLI, FSI, PDI). */
export const BIDI_CONTROLS = /[\u202a-\u202e\u2066-\u2069]/;

/** A single-line text field of at most `max` characters, trimmed, with no control or bidi characters. */
export function printableText(max: number) {
  return z.string().trim().min(1).max(max)
    .refine((s) => !CONTROL_CHARS.test(s), "must not contain control characters (NUL, tab, CR, LF, ESC, DEL, ...)")
    .refine((s) => !BIDI_CONTROLS.test(s), "must not contain bidi override or isolate characters");
}

/** An e-mail address of at most 320 characters, with no control characters. */
export function emailAddress() {
  return z.email().max(320).refine((s) => !CONTROL_CHARS.test(s) && !BIDI_CONTROLS.test(s), "must not contain control or bidi characters");
}
