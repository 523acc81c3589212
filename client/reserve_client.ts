// The guest app's client of Reserve Connect, on supabase-js: checkout and the guest's bookings through
// `supabase.functions.invoke`, which sends the signed-in user's token. Requests and answers are typed
// by, and checked against, the zod schemas the functions validate with (supabase/functions/_shared/
// guest_api.ts); every failure is a value, never a throw: { code, message, field?, status }.
//
//   const reserve = reserveClient(createClient(SUPABASE_URL, SUPABASE_ANON_KEY));
//   const { data, error } = await reserve.checkout({ unit_id, check_in, check_out, guests: 2, method: "pix" });
//   if (error) showError(error.field ?? error.code, error.message); else showPix(data.qr_code);
import type { SupabaseClient } from "@supabase/supabase-js";
import type { z } from "zod";
import {
  BookingsPage, BookingsQuery, checkoutShapeOf, CheckoutResponse, ErrorBody, GuestBooking, UUID_TEXT, type CheckoutRequest,
  type BookingState,
} from "../supabase/functions/_shared/guest_api.ts";
import { issueLines } from "../supabase/functions/_shared/http.ts";

export type { BookingsPage, BookingsQuery, BookingState, CheckoutRequest, CheckoutResponse, GuestBooking };
export type { NextStep, PayFields } from "../supabase/functions/_shared/guest_api.ts";

/** A failure as the app handles it: `code` to branch on, `field` when one input is at fault. */
export interface ReserveError {
  /**
   * the function's error (invalid_request, sign_in_required, unavailable, booking_not_found,
   * rate_limited, ...), or the client's own: network_error (no answer), relay_error (the platform's
   * relay refused), unexpected_response (an answer the schemas do not describe)
   */
  code: string;
  message: string;
  /** the request field at fault ("check_in", "limit", "booking_intent_id"), when the function named one */
  field?: string;
  /** every field the function refused, with why */
  issues?: { path: string; message: string }[];
  /** the HTTP status, 0 when there was no answer */
  status: number;
  /** seconds the function asked to wait before retrying (429, 503) */
  retryAfter?: number;
}

export type Result<T> = { data: T; error: null } | { data: null; error: ReserveError };

const failure = (error: ReserveError): { data: null; error: ReserveError } => ({ data: null, error });

/** The first path of zod's issues as our functions name fields ("guests", "check_in"). */
function issuesOf(issues: z.core.$ZodIssue[]): { path: string; message: string }[] {
  return issueLines(issues as never);
}

/** A refused request in the same shape the function would answer it with, without the round trip. */
function invalid(message: string, issues: z.core.$ZodIssue[]): { data: null; error: ReserveError } {
  const list = issuesOf(issues);
  return failure({ code: "invalid_request", message, field: list[0]?.path || undefined, issues: list, status: 400 });
}

/** supabase-js's error of an invoke, as a ReserveError (the function's JSON body when it sent one). */
async function errorOf(error: unknown): Promise<ReserveError> {
  const e = error as { name?: string; message?: string; context?: unknown };
  if (e?.name === "FunctionsHttpError" && e.context instanceof Response) {
    const res = e.context;
    const retry = Number(res.headers.get("retry-after"));
    const retryAfter = Number.isFinite(retry) && retry > 0 ? retry : undefined;
    let body: unknown;
    try {
      body = await res.json();
    } catch {
      body = undefined;
    }
    const parsed = ErrorBody.safeParse(body);
    if (!parsed.success) {
      return { code: "unexpected_response", message: `HTTP ${res.status} without an error body`, status: res.status, retryAfter };
    }
    const { error: code, message, issues } = parsed.data;
    const field = issues?.[0]?.path || (typeof parsed.data.field === "string" ? parsed.data.field : undefined);
    return { code, message, status: res.status, retryAfter, ...(field && { field }), ...(issues && { issues }) };
  }
  if (e?.name === "FunctionsRelayError") return { code: "relay_error", message: e.message ?? "relay error", status: 0 };
  return { code: "network_error", message: e?.message ?? String(error), status: 0 };
}

async function call<S extends z.ZodType>(
  supabase: SupabaseClient, name: string, schema: S, options: { method: "GET" | "POST"; body?: unknown; region?: string },
): Promise<Result<z.infer<S>>> {
  let answer: { data: unknown; error: unknown };
  try {
    answer = await supabase.functions.invoke(name, (options.region ? options : { method: options.method, body: options.body }) as never);
  } catch (err) {
    return failure(await errorOf(err));
  }
  if (answer.error) return failure(await errorOf(answer.error));
  const parsed = schema.safeParse(answer.data);
  if (!parsed.success) {
    return failure({ code: "unexpected_response", message: `${name} answered what its schema does not describe`,
                     issues: issuesOf(parsed.error.issues), status: 200 });
  }
  return { data: parsed.data, error: null };
}

export interface ReserveClient {
  /** Starts a checkout (or resumes an intent's attempt): what to pay with, Stripe client_secret or PIX codes. */
  checkout(request: CheckoutRequest): Promise<Result<CheckoutResponse>>;
  /** The signed-in guest's bookings, newest first; pass the page's next_cursor for the next one. */
  bookings(query?: BookingsQuery): Promise<Result<BookingsPage>>;
  /** One of the signed-in guest's bookings; booking_not_found for any other id. */
  booking(bookingIntentId: string): Promise<Result<GuestBooking>>;
  /**
   * Reads the booking until `done` says so (by default: no longer waiting for a payment), every
   * `intervalMs`, for at most `timeoutMs` (then code timeout, with the last state in the message).
   */
  waitForBooking(bookingIntentId: string, opts?: { done?: (b: GuestBooking) => boolean; intervalMs?: number; timeoutMs?: number }): Promise<Result<GuestBooking>>;
}

const STILL_PAYING: readonly BookingState[] = ["held", "awaiting_payment", "payment_processing"];

export interface ReserveClientOptions {
  /** the region every call is pinned to (supabase-js's functions.invoke `region`, e.g. "sa-east-1") */
  region?: string;
}

export function reserveClient(supabase: SupabaseClient, opts: ReserveClientOptions = {}): ReserveClient {
  const region = opts.region;
  const client: ReserveClient = {
    async checkout(request) {
      const parsed = checkoutShapeOf(request).safeParse(request);
      if (!parsed.success) return invalid("the request does not match a checkout", parsed.error.issues);
      return call(supabase, "checkout", CheckoutResponse, { method: "POST", body: parsed.data, region });
    },

    async bookings(query = {}) {
      const parsed = BookingsQuery.safeParse(query);
      if (!parsed.success) return invalid("the query does not match a bookings listing", parsed.error.issues);
      const params = new URLSearchParams({ limit: String(parsed.data.limit) });
      if (parsed.data.cursor) params.set("cursor", parsed.data.cursor);
      return call(supabase, `bookings?${params}`, BookingsPage, { method: "GET", region });
    },

    async booking(bookingIntentId) {
      // an empty id would call the listing (bookings/) and read its page as a booking
      if (typeof bookingIntentId !== "string" || !UUID_TEXT.test(bookingIntentId)) {
        return failure({ code: "invalid_request", message: "the path does not name a booking", field: "booking_intent_id",
                         issues: [{ path: "booking_intent_id", message: "Invalid UUID" }], status: 400 });
      }
      return call(supabase, `bookings/${encodeURIComponent(bookingIntentId)}`, GuestBooking, { method: "GET", region });
    },

    async waitForBooking(bookingIntentId, opts = {}) {
      const done = opts.done ?? ((b: GuestBooking) => !STILL_PAYING.includes(b.state));
      const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
      for (;;) {
        const r = await client.booking(bookingIntentId);
        if (r.error || done(r.data)) return r;
        if (Date.now() >= deadline) {
          return failure({ code: "timeout", message: `booking ${bookingIntentId} is still ${r.data.state}`, status: 0 });
        }
        await new Promise((resolve) => setTimeout(resolve, opts.intervalMs ?? 500));
      }
    },
  };
  return client;
}
