// The ceiling of bench:guest: a bare Deno.serve answering a small JSON body, no database, no checks.
// One round trip to it is the least any function call can cost on this machine.
Deno.serve({ port: Number(Deno.env.get("PORT")), hostname: "127.0.0.1", onListen: () => console.log("bare echo listening") },
  () => new Response('{"ok":true}', { headers: { "content-type": "application/json" } }));
