// The ceiling of this stack for bench:webhooks: a bare Deno.serve that reads the body and does one
// INSERT through postgres.js, with the same pool size as the edge functions.
import postgres from "postgres";

const sql = postgres(Deno.env.get("SUPABASE_DB_URL")!, {
  max: Number(Deno.env.get("RESERVE_DB_POOL_SIZE") ?? 4), onnotice: () => {},
});
await sql`create table if not exists public.bench_hits (id bigint generated always as identity primary key, body text not null)`;

Deno.serve({ port: Number(Deno.env.get("PORT")), hostname: "127.0.0.1", onListen: () => console.log("bare insert listening") },
  async (req) => {
    await sql`insert into public.bench_hits (body) values (${await req.text()})`;
    return new Response('{"ok":true}', { headers: { "content-type": "application/json" } });
  });
