// The one shape of a uuid as text, for every door that must check an id before it reaches a uuid column
// (PostgreSQL refuses a malformed one with 22P02, which would otherwise surface as a 500).

/** A uuid in its canonical text form (any case), as paths, cursors, metadata and webhooks carry one. */
export const UUID_TEXT = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The value when it is a uuid's text, else undefined (what a provider's field may say about our id). */
export const asUuid = (v: unknown): string | undefined => (typeof v === "string" && UUID_TEXT.test(v) ? v : undefined);
