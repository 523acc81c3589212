// Reads the [functions.<name>] blocks of supabase/config.toml: the local gateway serves exactly these.
// A line-based reader for the keys we use, so Deno and Node need no TOML dependency.

/** The [functions.<name>] blocks of config.toml and their verify_jwt (true unless set false). */
export function parseFunctionsConfig(toml: string): { name: string; verifyJwt: boolean }[] {
  const out: { name: string; verifyJwt: boolean }[] = [];
  let current: { name: string; verifyJwt: boolean } | undefined;
  for (const raw of toml.split("\n")) {
    const line = raw.replace(/#.*$/, "").trim();
    const section = line.match(/^\[(.+)\]$/);
    if (section) {
      const fn = section[1].match(/^functions\.([A-Za-z0-9_-]+)$/);
      current = fn ? { name: fn[1], verifyJwt: true } : undefined;
      if (current) out.push(current);
      continue;
    }
    const kv = line.match(/^verify_jwt\s*=\s*(true|false)$/);
    if (current && kv) current.verifyJwt = kv[1] === "true";
  }
  return out;
}
