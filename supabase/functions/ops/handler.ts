// /functions/v1/ops/: the ops console. The page and its script and style are served from string modules
// (assets.ts) so they deploy with the function; the API under /ops/api/ needs an operator token on every
// call (operator.ts). The page holds the token in sessionStorage and sends it as a bearer header, so it
// is never in a URL, a log line or a cookie that another site could make the browser send.
import { errorJson, methodNotAllowed } from "../_shared/http.ts";
import { action, overview, review } from "./api.ts";
import { APP_CSS, APP_JS, INDEX_HTML } from "./assets.ts";
import { operatorName, verifyOperator } from "./operator.ts";

const SECURITY_HEADERS = {
  "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
  "cache-control": "no-store",
};

function asset(body: string, type: string): Response {
  return new Response(body, { status: 200, headers: { "content-type": type, ...SECURITY_HEADERS } });
}

function secured(res: Response): Response {
  for (const [k, v] of Object.entries(SECURITY_HEADERS)) if (!res.headers.has(k)) res.headers.set(k, v);
  return res;
}

export async function handler(req: Request): Promise<Response> {
  const path = new URL(req.url).pathname.replace(/^.*?\/ops(?=\/|$)/, "");
  if (path === "") return new Response(null, { status: 308, headers: { location: "ops/", ...SECURITY_HEADERS } });
  if (!path.startsWith("/api/")) {
    if (req.method !== "GET" && req.method !== "HEAD") return secured(methodNotAllowed(["GET"]));
    if (path === "/" || path === "/index.html") return asset(INDEX_HTML, "text/html; charset=utf-8");
    if (path === "/app.js") return asset(APP_JS, "text/javascript; charset=utf-8");
    if (path === "/app.css") return asset(APP_CSS, "text/css; charset=utf-8");
    return secured(errorJson(404, "not_found", `no page at ${path}`));
  }
  const operator = await verifyOperator(req);
  // a refusal answers for itself (401 or 403 with its reason)
  if (!("sub" in operator)) return secured(operator.response());
  const route = path.slice("/api/".length);
  if (route === "me") {
    if (req.method !== "GET") return secured(methodNotAllowed(["GET"]));
    return secured(new Response(JSON.stringify({ operator: operatorName(operator), sub: operator.sub }), {
      headers: { "content-type": "application/json; charset=utf-8" } }));
  }
  if (route === "overview") return secured(req.method === "GET" ? await overview() : methodNotAllowed(["GET"]));
  if (route === "review") return secured(req.method === "GET" ? await review(new URL(req.url).searchParams.get("incident")) : methodNotAllowed(["GET"]));
  if (route === "action") return secured(req.method === "POST" ? await action(req, operator) : methodNotAllowed(["POST"]));
  return secured(errorJson(404, "not_found", `no API at ${path}`));
}
