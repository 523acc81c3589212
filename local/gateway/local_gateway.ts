// The local edge runtime: serves every function of supabase/config.toml under real Deno at
// /functions/v1/<name>, like `supabase start` does, without Docker. Local runner and tests only.
//
// Each function folder has index.ts (Deno.serve(handler), what Supabase deploys) and handler.ts;
// this gateway imports the handlers into one process and, like Supabase's relay, checks the JWT of
// functions whose verify_jwt is true and passes the path on without the /functions/v1 prefix.
import { parseFunctionsConfig } from "./functions_config.ts";
import { errorJson } from "../../supabase/functions/_shared/http.ts";
import { hmacKey, verifyJwt } from "../../supabase/functions/_shared/jwt.ts";
import { guardProcess, thrownAnswer } from "../../supabase/functions/_shared/serve.ts";

interface FunctionEntry {
  name: string;
  verifyJwt: boolean;
  handler: (req: Request) => Response | Promise<Response>;
}

const root = new URL("../../", import.meta.url);

async function loadFunctions(): Promise<Map<string, FunctionEntry>> {
  const config = await Deno.readTextFile(new URL("supabase/config.toml", root));
  const entries = new Map<string, FunctionEntry>();
  for (const { name, verifyJwt } of parseFunctionsConfig(config)) {
    const mod = await import(new URL(`supabase/functions/${name}/handler.ts`, root).href);
    entries.set(name, { name, verifyJwt, handler: mod.handler });
  }
  return entries;
}

async function main() {
  const port = Number(Deno.env.get("RESERVE_FUNCTIONS_PORT") ?? 54321);
  const secret = Deno.env.get("RESERVE_JWT_SECRET");
  if (!secret) throw new Error("RESERVE_JWT_SECRET is not set");
  const key = await hmacKey(secret);
  const functions = await loadFunctions();

  Deno.serve({
    port,
    hostname: "127.0.0.1",
    onListen: () => console.log(`edge gateway listening on ${port}: ${[...functions.keys()].join(", ")}`),
  }, async (req) => {
    const started = performance.now();
    const url = new URL(req.url);
    const match = url.pathname.match(/^\/functions\/v1\/([A-Za-z0-9_-]+)(\/.*)?$/);
    const fn = match && functions.get(match[1]);
    let res: Response;
    if (!fn) {
      res = errorJson(404, "function_not_found", `no function at ${url.pathname}`);
    } else if (fn.verifyJwt && !(await verifyJwt(req.headers.get("authorization"), key))) {
      res = errorJson(401, "invalid_jwt", "missing or invalid Authorization bearer token");
    } else {
      const inner = new URL(`/${fn.name}${match![2] ?? ""}${url.search}`, url.origin);
      try {
        res = await fn.handler(new Request(inner, { method: req.method, headers: req.headers, body: req.body }));
      } catch (err) {
        res = thrownAnswer(fn.name, err); // as serveFunction answers for a deployed function
      }
    }
    console.log(`${req.method} ${url.pathname} ${res.status} ${Math.round(performance.now() - started)}ms`);
    return res;
  });
}

/** The runner holds our stdin open; end of file means it is gone and we must not outlive it. */
async function exitWhenParentGoes() {
  for await (const _ of Deno.stdin.readable) { /* nothing is sent */ }
  Deno.exit(0);
}

if (import.meta.main) {
  // one gateway serves every function: a stray rejection in one of them must not end them all
  guardProcess("edge gateway");
  if (Deno.env.get("RESERVE_EXIT_ON_STDIN_EOF") === "1") exitWhenParentGoes();
  await main();
}
