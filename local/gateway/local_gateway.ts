// The local edge runtime: serves every function of supabase/config.toml under real Deno at
// /functions/v1/<name>, like `supabase start` does, without Docker. Local runner and tests only.
//
// Each function folder has index.ts (Deno.serve(handler), what Supabase deploys) and handler.ts;
// this gateway imports the handlers into one process, serves each as serveFunction does (CORS, JSON on a
// throw), checks the JWT of functions whose verify_jwt is true (none today: each verifies its caller
// itself) and passes the path on without the /functions/v1 prefix.
//
// It also stands in for Supabase Auth's key publication: the public JWKS of npm start's signing key
// (RESERVE_AUTH_JWKS) at /auth/v1/.well-known/jwks.json, where the functions fetch it from SUPABASE_URL
// as they do on a project.
import { parseFunctionsConfig } from "./functions_config.ts";
import { AuthRefusal, JWKS_PATH, verifyAuthorization } from "../../supabase/functions/_shared/auth.ts";
import { withCors } from "../../supabase/functions/_shared/cors.ts";
import { errorJson, json } from "../../supabase/functions/_shared/http.ts";
import { guardHandler, guardProcess } from "../../supabase/functions/_shared/serve.ts";

interface FunctionEntry {
  name: string;
  verifyJwt: boolean;
  /** the handler as serveFunction serves it */
  served: (req: Request) => Promise<Response>;
}

const root = new URL("../../", import.meta.url);

async function loadFunctions(): Promise<Map<string, FunctionEntry>> {
  const config = await Deno.readTextFile(new URL("supabase/config.toml", root));
  const entries = new Map<string, FunctionEntry>();
  for (const { name, verifyJwt } of parseFunctionsConfig(config)) {
    const mod = await import(new URL(`supabase/functions/${name}/handler.ts`, root).href);
    entries.set(name, { name, verifyJwt, served: guardHandler(name, mod.handler) });
  }
  return entries;
}

async function main() {
  const port = Number(Deno.env.get("RESERVE_FUNCTIONS_PORT") ?? 54321);
  if (!Deno.env.get("RESERVE_JWT_SECRET")) throw new Error("RESERVE_JWT_SECRET is not set");
  const publishedJwks = Deno.env.get("RESERVE_AUTH_JWKS");
  const jwks = publishedJwks ? JSON.parse(publishedJwks) : undefined;
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
    if (url.pathname === JWKS_PATH && jwks && (req.method === "GET" || req.method === "HEAD")) {
      res = json(jwks, 200, { "cache-control": "public, max-age=600" });
    } else if (!fn) {
      res = withCors(req, errorJson(404, "function_not_found", `no function at ${url.pathname}`));
    } else {
      // like the relay: a preflight carries no token and goes through
      const caller = fn.verifyJwt && req.method !== "OPTIONS" ? await verifyAuthorization(req.headers.get("authorization")) : undefined;
      if (caller instanceof AuthRefusal) {
        res = withCors(req, caller.response()); // readable by a browser too
      } else {
        const inner = new URL(`/${fn.name}${match![2] ?? ""}${url.search}`, url.origin);
        res = await fn.served(new Request(inner, { method: req.method, headers: req.headers, body: req.body }));
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
