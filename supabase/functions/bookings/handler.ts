// GET /bookings?limit&cursor: the caller's bookings, newest first, a page at a time; GET /bookings/<id>:
// one of them. The caller is the verified token's sub (the client id checkout recorded); anybody else's
// booking, like an unknown id, is 404 booking_not_found, so an id says nothing about whether it exists.
import { db } from "../_shared/db.ts";
import { dbErrorResponse } from "../_shared/db_response.ts";
import { BookingsQuery, UUID_TEXT, type GuestBooking, type NextStep } from "../_shared/guest_api.ts";
import { errorJson, invalidRequest, json, methodNotAllowed } from "../_shared/http.ts";
import { AuthRefusal, verifyCaller } from "../_shared/auth.ts";
import { providerNamed } from "../_shared/providers/registry.ts";
import { isJsonbTime } from "../_shared/times.ts";


/** reserve.guest_booking as to_jsonb writes it: dates and times as text, amounts as numbers. */
interface GuestBookingRow {
  booking_intent_id: string;
  state: GuestBooking["state"];
  held_until: string | null;
  confirmation_code: string | null;
  reservation_status: string | null;
  check_in: string;
  check_out: string;
  nights: number;
  guests: number;
  unit_id: string;
  unit_name: string;
  city_code: string;
  city_name: string;
  amount: number;
  currency: string;
  refunded_amount: number;
  refund_pending_amount: number;
  payment_id: string | null;
  payment_status: string | null;
  method: "card" | "pix" | null;
  provider: "stripe" | "mercadopago" | "openpix" | null;
  payment_expires_at: string | null;
  payment_error_code: string | null;
  pending_payment_object: unknown;
  created_at: string;
  updated_at: string;
}

/** What to pay with while the attempt waits for the guest (PIX codes from the stored object; never a card secret). */
function nextStep(r: GuestBookingRow): NextStep | null {
  if (r.state !== "awaiting_payment" || !r.payment_id || !r.method || !r.provider) return null;
  const pay = providerNamed(r.provider)?.payFields(r.pending_payment_object) ?? {};
  return {
    method: r.method, provider: r.provider, payment_id: r.payment_id, expires_at: r.payment_expires_at,
    pay, resume: { booking_intent_id: r.booking_intent_id, method: r.method },
  };
}

function guestBooking(r: GuestBookingRow): GuestBooking {
  return {
    booking_intent_id: r.booking_intent_id,
    state: r.state,
    held_until: r.held_until,
    confirmation_code: r.confirmation_code,
    reservation_status: r.reservation_status,
    check_in: r.check_in,
    check_out: r.check_out,
    nights: r.nights,
    guests: r.guests,
    unit: { id: r.unit_id, name: r.unit_name },
    city: { code: r.city_code, name: r.city_name },
    amount: r.amount,
    currency: r.currency,
    refunded_amount: r.refunded_amount,
    refund_pending_amount: r.refund_pending_amount,
    payment: r.payment_id && r.method && r.provider ? {
      id: r.payment_id, status: r.payment_status ?? "pending", method: r.method, provider: r.provider,
      expires_at: r.payment_expires_at, error_code: r.payment_error_code,
    } : null,
    next_step: nextStep(r),
    created_at: r.created_at,
    updated_at: r.updated_at,
  };
}

// a page ends at (created_at, id) of its last row; the cursor carries both, created_at to the microsecond
// (sent back as text: postgres.js would make a timestamptz parameter a Date, dropping the microseconds)
const encodeCursor = (createdAt: string, id: string) => btoa(`${createdAt}|${id}`).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

function decodeCursor(cursor: string): { createdAt: string; id: string } | undefined {
  try {
    const [createdAt, id, ...rest] = atob(cursor.replace(/-/g, "+").replace(/_/g, "/")).split("|");
    if (rest.length || !UUID_TEXT.test(id ?? "") || !isJsonbTime(createdAt ?? "")) return undefined;
    return { createdAt, id };
  } catch {
    return undefined;
  }
}

const REGION_PARAM = "forceFunctionRegion";

async function listBookings(sub: string, url: URL): Promise<Response> {
  const params: Record<string, string> = {};
  for (const [k, v] of url.searchParams) {
    // supabase-js adds it to a call given a region; the platform routes on it, the listing has no use for it
    if (k === REGION_PARAM) continue;
    if (k in params) return invalidRequest("the query names a parameter twice", [{ path: [k], message: "given more than once" }]);
    params[k] = v;
  }
  const parsed = BookingsQuery.safeParse(params);
  if (!parsed.success) return invalidRequest("the query does not match a bookings listing", parsed.error.issues);
  const { limit, cursor } = parsed.data;
  const before = cursor === undefined ? null : decodeCursor(cursor);
  if (before === undefined) {
    return invalidRequest("the cursor is not one this endpoint gave", [{ path: ["cursor"], message: "not a cursor this endpoint gave" }]);
  }
  const sql = db();
  let rows: { b: GuestBookingRow }[];
  try {
    rows = before
      ? await sql<{ b: GuestBookingRow }[]>`
          select to_jsonb(b) as b from reserve.guest_bookings(${sub}, ${limit},
            row(${before.createdAt}::text::timestamptz, ${before.id}::uuid)::reserve.guest_booking_cursor) b`
      : await sql<{ b: GuestBookingRow }[]>`select to_jsonb(b) as b from reserve.guest_bookings(${sub}, ${limit}) b`;
  } catch (err) {
    return dbErrorResponse(err, "bookings");
  }
  const last = rows.length === limit ? rows[rows.length - 1].b : undefined;
  return json({
    bookings: rows.map((r) => guestBooking(r.b)),
    next_cursor: last ? encodeCursor(last.created_at, last.booking_intent_id) : null,
  });
}

async function oneBooking(sub: string, id: string): Promise<Response> {
  if (!UUID_TEXT.test(id)) {
    return invalidRequest("the path does not name a booking", [{ path: ["booking_intent_id"], message: "Invalid UUID" }]);
  }
  let row: { b: GuestBookingRow } | undefined;
  try {
    [row] = await db()<{ b: GuestBookingRow }[]>`select to_jsonb(b) as b from reserve.guest_booking(${sub}, ${id}::uuid) b`;
  } catch (err) {
    return dbErrorResponse(err, "bookings");
  }
  return json(guestBooking(row!.b));
}

export async function handler(req: Request): Promise<Response> {
  if (req.method !== "GET") return methodNotAllowed(["GET"]);
  const url = new URL(req.url);
  const path = url.pathname.match(/^(?:\/functions\/v1)?\/bookings(?:\/([^/]*))?\/?$/);
  if (!path) return errorJson(404, "not_found", `no such path: ${url.pathname.slice(0, 100)}`);
  // the caller's own token, verified here (signature against the project's keys, exp, nbf, aud, iss)
  const caller = await verifyCaller(req);
  if (caller instanceof AuthRefusal) return caller.response();
  if (caller.kind !== "user") return errorJson(401, "sign_in_required", "reading bookings needs a signed-in user's token");
  const sub = caller.sub;
  if (!path[1]) return listBookings(sub, url);
  let id: string;
  try {
    id = decodeURIComponent(path[1]);
  } catch {
    id = path[1]; // a malformed escape is no uuid: refused below
  }
  return oneBooking(sub, id);
}
