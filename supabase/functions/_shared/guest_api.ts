// What a guest's app sends to and gets from the functions it calls (checkout, bookings), as zod schemas:
// the functions validate requests with them, and client/reserve_client.ts takes its types (and checks
// the answers) from the same ones, so the app and the functions cannot drift apart.
import { z } from "zod";
import { calendarDay, emailAddress, printableText } from "./text_fields.ts";

const isoDate = calendarDay();
/** a time as JSON carries it: ISO 8601 in UTC (Date's toJSON) or with an offset (PostgreSQL's text) */
const isoTime = z.iso.datetime({ offset: true });
const minorUnits = z.int().min(0);

export const PaymentMethod = z.enum(["card", "pix"]);
export const ProviderName = z.enum(["stripe", "mercadopago", "openpix"]);

const guestDetails = {
  guest_name: printableText(200).optional(),
  guest_email: emailAddress().optional(),
};

/** A new checkout: the unit, the dates [check_in, check_out), the guests and how they pay. */
export const NewCheckoutRequest = z.strictObject({
  unit_id: z.uuid(), check_in: isoDate, check_out: isoDate, guests: z.int().min(1).max(50),
  method: PaymentMethod, provider: ProviderName.optional(), ...guestDetails,
});
/** Another attempt at paying an intent (or the attempt in flight again, with its means of payment). */
export const RetryCheckoutRequest = z.strictObject({
  booking_intent_id: z.uuid(), method: PaymentMethod, provider: ProviderName.optional(), ...guestDetails,
});
/** A uuid as the guest API's paths and cursors carry one (checked before any read). */
export { UUID_TEXT } from "./uuid_text.ts";

export const CheckoutRequest = z.union([NewCheckoutRequest, RetryCheckoutRequest]);
export type CheckoutRequest = z.infer<typeof CheckoutRequest>;

/**
 * The one shape a checkout body means (a retry names its booking_intent_id), checked alone so every
 * missing or wrong field is named (the union answers a lone "Invalid input" for the whole body); the
 * function and the typed client both check with it, so both name the same fields.
 */
export function checkoutShapeOf(raw: unknown): typeof NewCheckoutRequest | typeof RetryCheckoutRequest {
  return raw !== null && typeof raw === "object" && "booking_intent_id" in raw ? RetryCheckoutRequest : NewCheckoutRequest;
}

/** What the guest pays with, as the provider gives it: a card's client_secret (checkout only), PIX codes. */
export const PayFields = z.object({
  client_secret: z.string().optional(),
  qr_code: z.string().optional(),
  qr_code_base64: z.string().optional(),
  qr_code_image: z.string().optional(),
  ticket_url: z.string().optional(),
  payment_link_url: z.string().optional(),
});
export type PayFields = z.infer<typeof PayFields>;

export const CheckoutResponse = z.object({
  booking_intent_id: z.uuid(),
  payment_id: z.uuid(),
  attempt: z.int().min(1),
  provider: ProviderName,
  method: PaymentMethod,
  amount: minorUnits,
  currency: z.string().length(3),
  status: z.string(),
  hold_expires_at: isoTime,
  payment_expires_at: isoTime.nullable(),
  gateway_payment_id: z.string(),
  ...PayFields.shape,
});
export type CheckoutResponse = z.infer<typeof CheckoutResponse>;

/** The states a guest sees (reserve.guest_booking documents each). */
export const BookingState = z.enum([
  "held", "awaiting_payment", "payment_processing", "payment_failed", "expired", "cancelled",
  "confirmed", "checked_in", "checked_out", "no_show", "refund_pending", "refunded",
]);
export type BookingState = z.infer<typeof BookingState>;

/**
 * While a payment waits for the guest: what to pay with. PIX codes come from the provider's object we
 * stored; a card's client_secret is never stored, so `resume` is the checkout body that hands the same
 * attempt (and its client_secret) out again.
 */
export const NextStep = z.object({
  method: PaymentMethod,
  provider: ProviderName,
  payment_id: z.uuid(),
  expires_at: isoTime.nullable(),
  pay: PayFields.omit({ client_secret: true }),
  resume: RetryCheckoutRequest.pick({ booking_intent_id: true, method: true }),
});
export type NextStep = z.infer<typeof NextStep>;

export const GuestBooking = z.object({
  booking_intent_id: z.uuid(),
  state: BookingState,
  /** the nights are held until then while the booking is not yet paid */
  held_until: isoTime.nullable(),
  confirmation_code: z.string().nullable(),
  reservation_status: z.string().nullable(),
  check_in: isoDate,
  check_out: isoDate,
  nights: z.int().min(1),
  guests: z.int().min(1),
  unit: z.object({ id: z.uuid(), name: z.string() }),
  city: z.object({ code: z.string(), name: z.string() }),
  amount: minorUnits,
  currency: z.string().length(3),
  refunded_amount: minorUnits,
  refund_pending_amount: minorUnits,
  payment: z.object({
    id: z.uuid(),
    status: z.string(),
    method: PaymentMethod,
    provider: ProviderName,
    expires_at: isoTime.nullable(),
    error_code: z.string().nullable(),
  }).nullable(),
  next_step: NextStep.nullable(),
  created_at: isoTime,
  updated_at: isoTime,
});
export type GuestBooking = z.infer<typeof GuestBooking>;

/** GET bookings?limit&cursor: limit 1..50 (default 20), cursor = the previous page's next_cursor. */
export const BookingsQuery = z.strictObject({
  // a query's text as a decimal count (coerce took "0x10", "1e1" and " 5")
  limit: z.union([z.number(), z.string().regex(/^[0-9]{1,3}$/, "a whole number of bookings, 1 to 50").transform(Number)])
    .pipe(z.int().min(1).max(50)).default(20),
  cursor: z.string().regex(/^[A-Za-z0-9_-]{1,200}$/, "not a cursor this endpoint gave").optional(),
});
export type BookingsQuery = z.input<typeof BookingsQuery>;

export const BookingsPage = z.object({
  bookings: z.array(GuestBooking),
  /** pass as cursor for the next (older) page; null on the last page */
  next_cursor: z.string().nullable(),
});
export type BookingsPage = z.infer<typeof BookingsPage>;

/** Every error a function answers with (see _shared/http.ts). */
export const ErrorBody = z.object({
  error: z.string(),
  message: z.string(),
  issues: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
}).loose();
export type ErrorBody = z.infer<typeof ErrorBody>;
