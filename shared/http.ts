// HTTP helpers shared by the edge functions and the local gateway (Deno and Node both have Response).

export function json(body: unknown, status = 200, headers: HeadersInit = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json; charset=utf-8", ...headers },
  });
}

/** Every error we return has this shape, so clients branch on `error`, not on prose. */
export function errorJson(status: number, error: string, message: string, extra: Record<string, unknown> = {}): Response {
  return json({ error, message, ...extra }, status);
}

export function methodNotAllowed(allowed: string[]): Response {
  return json(
    { error: "method_not_allowed", message: `use ${allowed.join(" or ")}` },
    405,
    { allow: allowed.join(", ") },
  );
}
