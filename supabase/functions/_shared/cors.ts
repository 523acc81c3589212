// CORS the way Supabase documents it for functions a browser calls: supabase-js's own `corsHeaders`
// (every header its clients send), OPTIONS answered before any authentication, and the headers on every
// response, errors included, so a browser app can read a 401 or a 429 as well as a 201.
//
// Allowed origins: RESERVE_CORS_ORIGINS, a comma-separated list of exact origins
// (https://app.example.com); unset or `*`, any origin (the local default). With a list, an allowed
// origin is echoed back with Vary: Origin; any other gets no Access-Control-Allow-Origin (the browser
// then hides the answer from the page) and its preflight is refused with 403. Requests without an
// Origin (servers, providers' webhooks, curl) are not concerned.
import { corsHeaders } from "@supabase/supabase-js/cors";
import { errorJson } from "./http.ts";

type Env = (name: string) => string | undefined;
const denoEnv: Env = (name) => (globalThis as { Deno?: { env: { get(n: string): string | undefined } } }).Deno?.env.get(name);

/** The allowed origins: "*" for any, else the exact list. */
export function allowedOrigins(env: Env = denoEnv): "*" | string[] {
  const raw = env("RESERVE_CORS_ORIGINS")?.trim();
  if (!raw || raw === "*") return "*";
  return raw.split(",").map((o) => o.trim().replace(/\/+$/, "")).filter(Boolean);
}

let processOrigins: "*" | string[] | undefined;
const configuredOrigins = () => (processOrigins ??= allowedOrigins());

/**
 * The CORS headers for this request's Origin, or null when a list is configured and the Origin is not
 * on it. `origins` defaults to RESERVE_CORS_ORIGINS, read once.
 */
export function corsHeadersFor(req: Request, origins = configuredOrigins()): Record<string, string> | null {
  const base: Record<string, string> = {
    ...corsHeaders,
    // supabase-js sends x-region with a call given a region (functions.invoke's `region`), which its
    // own list leaves out: a Brazilian app pinned to sa-east-1 failed every preflight
    "Access-Control-Allow-Headers": `${corsHeaders["Access-Control-Allow-Headers"]}, x-region`,
    // a browser reads a 429's or a 503's Retry-After only when it is exposed
    "Access-Control-Expose-Headers": "retry-after",
  };
  if (origins === "*") return base;
  const origin = req.headers.get("origin");
  if (!origin || !origins.includes(origin)) return null;
  return { ...base, "Access-Control-Allow-Origin": origin, "Vary": "Origin" };
}

/** The answer to an OPTIONS preflight: 200 with the headers, or 403 for an origin not allowed. */
export function preflightResponse(req: Request, origins = configuredOrigins()): Response {
  const headers = corsHeadersFor(req, origins);
  if (!headers) {
    const res = errorJson(403, "origin_not_allowed", `${req.headers.get("origin") ?? "a request without an Origin"} may not call this API from a browser`);
    res.headers.set("vary", "Origin");
    return res;
  }
  return new Response("ok", { status: 200, headers });
}

/**
 * The response with the CORS headers for the request. Set on the response itself: a copy would carry its
 * body as a stream, which the server then sends chunked, in more writes than the text it was. A fetched
 * response's headers are immutable; it alone is copied.
 */
export function withCors(req: Request, res: Response, origins = configuredOrigins()): Response {
  const cors = corsHeadersFor(req, origins);
  try {
    setCors(res.headers, cors);
    return res;
  } catch (err) {
    if (!(err instanceof TypeError)) throw err;
  }
  const headers = new Headers(res.headers);
  setCors(headers, cors);
  return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
}

function setCors(headers: Headers, cors: Record<string, string> | null): void {
  if (cors) {
    for (const [k, v] of Object.entries(cors)) headers.set(k, v);
  } else {
    headers.set("vary", "Origin"); // the answer differs by Origin: no cache may hand it to another
  }
}
