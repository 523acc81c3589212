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

/** How long a body may take to arrive, all of it: a client that stalls (or sends less than it declared) holds a worker. */
export const BODY_READ_TIMEOUT_MS = 10_000;

/**
 * The body as text, refusing more than `limit` bytes without reading them all (413), one that has not
 * arrived within `timeoutMs` (408), and one whose connection ended before it did (400, nothing to log).
 */
export async function readBodyText(req: Request, limit: number, timeoutMs = BODY_READ_TIMEOUT_MS): Promise<string | Response> {
  const declared = Number(req.headers.get("content-length") ?? NaN);
  if (declared > limit) return errorJson(413, "payload_too_large", `the body is over ${limit} bytes`);
  if (!req.body) return "";
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"late">((resolve) => { timer = setTimeout(() => resolve("late"), timeoutMs); });
  try {
    for (;;) {
      let next: ReadableStreamReadResult<Uint8Array> | "late";
      try {
        next = await Promise.race([reader.read(), late]);
      } catch {
        return errorJson(400, "body_unreadable", "the connection ended before the body did");
      }
      if (next === "late") {
        reader.cancel().catch(() => {});
        return errorJson(408, "request_timeout", `the body did not arrive within ${timeoutMs / 1000} s`);
      }
      if (next.done) break;
      size += next.value.byteLength;
      if (size > limit) {
        await reader.cancel().catch(() => {});
        return errorJson(413, "payload_too_large", `the body is over ${limit} bytes`);
      }
      chunks.push(next.value);
    }
  } finally {
    clearTimeout(timer);
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.byteLength;
  }
  return new TextDecoder().decode(all);
}

/** 415 unless the request says it is JSON. */
export function requireJson(req: Request): Response | undefined {
  const type = req.headers.get("content-type") ?? "";
  if (!/^application\/json\s*(;|$)/i.test(type)) {
    return errorJson(415, "unsupported_media_type", "send the body as application/json");
  }
  return undefined;
}

/** A JSON body of at most `limit` bytes, parsed: 415 unless sent as JSON, 413 when larger, 400 when not JSON. */
export async function readJsonBody(req: Request, limit: number): Promise<{ value: unknown } | Response> {
  const notJson = requireJson(req);
  if (notJson) return notJson;
  const text = await readBodyText(req, limit);
  if (text instanceof Response) return text;
  try {
    return { value: JSON.parse(text) };
  } catch {
    return errorJson(400, "invalid_json", "the body is not valid JSON");
  }
}

/**
 * 400 invalid_request listing what a schema refused, field by field (zod's issues, or any alike); a
 * field the schema does not know is named on its own line too.
 */
export function invalidRequest(message: string, issues: SchemaIssue[]): Response {
  return errorJson(400, "invalid_request", message, { issues: issueLines(issues) });
}

type SchemaIssue = { path: PropertyKey[]; message: string; code?: string; keys?: string[] };

/** zod's issues as the functions name them ("check_in", "unknown field" on a line of its own); the typed client says the same. */
export function issueLines(issues: SchemaIssue[]): { path: string; message: string }[] {
  return issues.flatMap((i) => {
    const at = i.path.map(String);
    if (i.code === "unrecognized_keys" && i.keys?.length) {
      return i.keys.map((k) => ({ path: [...at, k].join("."), message: "unknown field" }));
    }
    return [{ path: at.join("."), message: i.message }];
  });
}
