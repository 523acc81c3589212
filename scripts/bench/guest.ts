// npm run bench:guest — what a guest waits for: from the checkout call to the booking read back
// confirmed, through supabase-js and the typed client (client/reserve_client.ts), against the stack
// `npm start` runs, with the sandbox confirming each card payment at once (its HTTP control API, as
// soon as checkout answers). BOOKINGS bookings one after another, each by a new guest; p50 and p99 of
// the whole, of the checkout call and of one booking read. Then the same once from a real headless
// Chromium (the browser test's page), when chromium is installed.
//
// The ceiling, measured in the same run: a bare Deno.serve round trip (scripts/bench/bare_echo.ts), by
// fetch and by supabase-js's functions.invoke. Figures are ratios to it, with the load beside them.
//
//   npm run bench:guest     env: BOOKINGS (default 50), READ_INTERVAL_MS (default 20: how often the
//                                app reads the booking while it waits)
import { spawn } from "node:child_process";
import { cpus, loadavg, totalmem } from "node:os";
import path from "node:path";
import { createClient } from "@supabase/supabase-js";
import WebSocket from "ws";
import { denoBinary } from "../../local/functions.ts";
import { projectRoot } from "../../local/migrate.ts";
import { freePort } from "../../local/ports.ts";
import { guestToken, startGuestStack } from "../../tests/helpers/guest_app.ts";
import { bookInPage, chromiumPath, launchChromium, servePage } from "../../tests/helpers/guest_page.ts";

const bookings = Number(process.env.BOOKINGS ?? 50);
const readIntervalMs = Number(process.env.READ_INTERVAL_MS ?? 20);
const log = (m: string) => process.stderr.write(`${m}\n`);
const load = () => loadavg().map((l) => l.toFixed(2)).join(" ");

function pct(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]! : NaN;
}

async function timed<T>(f: () => Promise<T>): Promise<[T, number]> {
  const t = performance.now();
  const v = await f();
  return [v, performance.now() - t];
}

async function main() {
  log("bench:guest: starting the stack (as npm start) and the bare Deno.serve ceiling...");
  const g = await startGuestStack();
  const barePort = await freePort();
  const bare = spawn(denoBinary(), ["run", "--quiet", "--no-prompt", "--config", path.join(projectRoot, "deno.json"),
    "--allow-net", "--allow-env", path.join(projectRoot, "scripts/bench/bare_echo.ts")], {
    env: { ...process.env, DENO_DIR: path.join(projectRoot, "node_modules", ".deno-cache"), PORT: String(barePort) },
    stdio: ["ignore", "pipe", "inherit"],
  });
  try {
    await new Promise<void>((resolve) => bare.stdout!.on("data", (d: Buffer) => d.toString().includes("listening") && resolve()));
    const bareUrl = `http://127.0.0.1:${barePort}`;
    const bareClient = createClient(bareUrl, g.anonKey, { accessToken: async () => guestToken(), realtime: { transport: WebSocket as never } });
    const ceilingFetch: number[] = [];
    const ceilingInvoke: number[] = [];
    for (let i = 0; i < 200; i++) {
      ceilingFetch.push((await timed(async () => (await fetch(`${bareUrl}/functions/v1/echo`)).arrayBuffer()))[1]);
      ceilingInvoke.push((await timed(() => bareClient.functions.invoke("echo", { method: "GET" })))[1]);
    }

    const total: number[] = [];
    const checkoutMs: number[] = [];
    const readMs: number[] = [];
    let reads = 0;
    for (let i = 0; i < bookings; i++) {
      const reserve = g.guest(guestToken());
      const stay = await g.freeStay();
      const started = performance.now();
      const [c, cMs] = await timed(() => reserve.checkout({ ...stay, guests: 2, method: "card" }));
      if (c.error) throw new Error(`checkout ${i}: ${c.error.code} ${c.error.message}`);
      checkoutMs.push(cMs);
      await g.sandbox("stripeConfirm", c.data.gateway_payment_id, "succeeded");
      for (;;) {
        const [b, rMs] = await timed(() => reserve.booking(c.data.booking_intent_id));
        readMs.push(rMs);
        reads++;
        if (b.error) throw new Error(`booking ${i}: ${b.error.code} ${b.error.message}`);
        if (b.data.state === "confirmed") break;
        if (performance.now() - started > 30_000) throw new Error(`booking ${i} still ${b.data.state} after 30 s`);
        await new Promise((r) => setTimeout(r, readIntervalMs));
      }
      total.push(performance.now() - started);
    }
    const loadAfterNode = load();

    let browserLine = "browser: chromium is not installed (apt-get install -y chromium): not measured";
    const chromium = chromiumPath();
    if (chromium) {
      const page = await servePage();
      const browser = await launchChromium(chromium);
      try {
        const r = await bookInPage(browser, g, page.origin);
        const ms = Number(r.done.ms);
        browserLine = r.done.state === "confirmed"
          ? `browser (headless Chromium, page on another origin, one booking): checkout to confirmed ${ms.toFixed(0)} ms = ${(ms / pct(ceilingInvoke, 0.5)).toFixed(1)}x the bare invoke p50; load ${load()}`
          : `browser: the page's booking ended ${r.done.state} (${r.done.text}): not measured`;
      } finally {
        await browser.close();
        page.server.close();
      }
    }

    const row = (name: string, v: number[], ceiling: number) =>
      `| ${name} | ${v.length} | ${pct(v, 0.5).toFixed(1)} | ${pct(v, 0.99).toFixed(1)} | ${(pct(v, 0.5) / ceiling).toFixed(1)}x | ${(pct(v, 0.99) / ceiling).toFixed(1)}x |`;
    const fetchP50 = pct(ceilingFetch, 0.5);
    const invokeP50 = pct(ceilingInvoke, 0.5);
    console.log(`
bench:guest — ${bookings} card bookings through supabase-js, the sandbox confirming at once, the booking read every ${readIntervalMs} ms until confirmed
${cpus().length} vCPU ${cpus()[0]?.model ?? ""}, ${(totalmem() / 2 ** 30).toFixed(1)} GiB, Node ${process.version}; load ${loadAfterNode} after the Node run

| what (ms) | n | p50 | p99 | p50 / bare invoke p50 | p99 / bare invoke p50 |
| --- | --- | --- | --- | --- | --- |
${row("ceiling: bare Deno.serve by fetch", ceilingFetch, invokeP50)}
${row("ceiling: bare Deno.serve by functions.invoke", ceilingInvoke, invokeP50)}
${row("checkout (POST, provider call included)", checkoutMs, invokeP50)}
${row("one booking read (GET bookings/<id>)", readMs, invokeP50)}
${row("checkout to confirmed booking read back", total, invokeP50)}

reads per booking: ${(reads / bookings).toFixed(1)}; bare fetch p50 ${fetchP50.toFixed(2)} ms
${browserLine}`);
  } finally {
    bare.kill();
    await g.stop();
  }
}

await main();
