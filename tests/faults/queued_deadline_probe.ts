// Run under Deno by queued_deadline.test.ts (excluded from tsc): the functions' client with a pool of one,
// that connection held by a slow statement while an insert with a short deadline waits for it.
import { db, dbUntil } from "../../supabase/functions/_shared/db.ts";

const sql = db();
const hold = sql`select pg_sleep(1.5)`.then(() => "held", (e) => `hold failed: ${e}`);
await new Promise((r) => setTimeout(r, 200));
let insert = "resolved";
try {
  await dbUntil(Date.now() + 300)`insert into public.queued_deadline_probe values ('sent after its 503')`;
} catch (e) {
  insert = `rejected ${(e as Error).name}`;
}
const held = await hold;
// the pool's one connection takes its queue in order: a statement still queued for it runs before this count
const [{ rows }] = await sql`select count(*)::int as rows from public.queued_deadline_probe`;
console.log(JSON.stringify({ insert, held, rows }));
Deno.exit(0);
