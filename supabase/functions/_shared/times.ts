// A time PostgreSQL stores and JavaScript writes back the same: years 1 to 9999. zod's ISO checks accept
// the year 0000, which date and timestamptz refuse (22008), and Date's toISOString writes years past 9999
// as +010000-01-01 (refused too) and throws on an invalid Date.

/** The time itself when it is one of years 1 to 9999 in UTC, else undefined. */
export function storableTime(d: Date | undefined): Date | undefined {
  if (!d || Number.isNaN(d.getTime())) return undefined;
  const year = d.getUTCFullYear();
  return year >= 1 && year <= 9999 ? d : undefined;
}

/** Whether an ISO 8601 text (a date, or a time with its offset) names a storable day or time. */
export function storableIsoText(s: string): boolean {
  return !s.startsWith("0000") && storableTime(new Date(s)) !== undefined;
}

// 2026-12-07T15:20:11.123456+00:00: a recent timestamptz as to_jsonb writes it
const JSONB_TIME = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d{1,6})?[+-](\d{2}):(\d{2})$/;

/**
 * Whether a text is a time as to_jsonb writes a timestamptz, and one PostgreSQL reads back: Date.parse
 * takes far more ("2024", "0", February 30th rolled over into March), and a cast of those fails (22007, 22008).
 */
export function isJsonbTime(s: string): boolean {
  const m = JSONB_TIME.exec(s);
  if (!m) return false;
  const [y, mo, d, h, mi, sec, oh, om] = m.slice(1).map(Number);
  const daysInMonth = new Date(Date.UTC(y, mo, 0)).getUTCDate();
  return y >= 1 && mo >= 1 && mo <= 12 && d >= 1 && d <= daysInMonth && h < 24 && mi < 60 && sec < 60 && oh <= 15 && om < 60
    && storableTime(new Date(s)) !== undefined;
}
