// Served under Deno by process_guard.test.ts: a function, as its index.ts serves it (serveFunction), whose
// routes misbehave the ways a library can: a dropped promise, a throw in a timer, an EventEmitter error
// nobody listens to, a handler that throws, a database that is gone. Deno run only (excluded from tsc).
import { EventEmitter } from "node:events";
import { DatabaseUnavailable } from "../../supabase/functions/_shared/db.ts";
import { serveFunction } from "../../supabase/functions/_shared/serve.ts";

const secretish = "postgresql://reserve:hunter2@db.internal:5432/postgres Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl sk_test_abc123";

serveFunction("guard_probe", (req) => {
  const path = new URL(req.url).pathname;
  if (path === "/reject") {
    Promise.reject(Object.assign(new Error(`terminating connection due to administrator command (${secretish})`), { code: "57P01" }));
  } else if (path === "/timer-throw") {
    setTimeout(() => { throw new Error(`read ECONNRESET ${secretish}`); }, 0);
  } else if (path === "/emitter") {
    setTimeout(() => new EventEmitter().emit("error", new Error("This socket has been ended by the other party")), 0);
  } else if (path === "/throw") {
    throw new Error(`a bug ${secretish}`);
  } else if (path === "/db") {
    throw new DatabaseUnavailable("the database did not answer within 4000 ms");
  }
  return new Response(JSON.stringify({ alive: true, pid: Deno.pid }), { headers: { "content-type": "application/json" } });
});
