// The guest's page of tests/browser (tests/browser/guest_page/app.ts bundled for the browser with
// esbuild) on an origin of its own, and the system's Chromium to load it; bench:guest uses them too.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { build } from "esbuild";
import puppeteer, { type Browser } from "puppeteer-core";
import { projectRoot } from "../../local/migrate.ts";
import { guestToken, type GuestStack } from "./guest_app.ts";

/** The system's Chromium: CHROMIUM_PATH, else `chromium` on the PATH. */
export function chromiumPath(): string | undefined {
  if (process.env.CHROMIUM_PATH) return existsSync(process.env.CHROMIUM_PATH) ? process.env.CHROMIUM_PATH : undefined;
  try {
    return execFileSync("sh", ["-c", "command -v chromium"], { encoding: "utf8" }).trim() || undefined;
  } catch {
    return undefined;
  }
}

/** The page and its script (the typed client and supabase-js bundled for the browser), on its own origin. */
export async function servePage(): Promise<{ server: Server; origin: string }> {
  const bundle = await build({
    entryPoints: [path.join(projectRoot, "tests/browser/guest_page/app.ts")], bundle: true, write: false,
    format: "esm", platform: "browser", target: "es2022", logLevel: "silent",
  });
  const js = bundle.outputFiles[0]!.text;
  const html = `<!doctype html><meta charset="utf-8"><title>Reserve guest</title>
<p id="status" data-state="loading">loading</p><script type="module" src="/app.js"></script>`;
  const server = createServer((req, res) => {
    if (req.url === "/app.js") res.writeHead(200, { "content-type": "text/javascript" }).end(js);
    else if (req.url === "/" || req.url?.startsWith("/#")) res.writeHead(200, { "content-type": "text/html" }).end(html);
    else res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  // localhost, not 127.0.0.1 as the functions: another origin (scheme, host and port all count)
  return { server, origin: `http://localhost:${(server.address() as AddressInfo).port}` };
}


/** Chromium headless, driven over the DevTools protocol. */
export function launchChromium(executablePath: string): Promise<Browser> {
  return puppeteer.launch({
    executablePath, headless: true,
    // root in a container has no user namespace for Chromium's sandbox
    args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
  });
}

type Shown = Record<string, string | undefined> & { text?: string | null };

/**
 * A new signed-in guest books a free stay on the page: checkout from the browser, the sandbox confirms
 * the card payment as soon as the page shows it awaiting payment, the page reads the booking until it is
 * no longer being paid. What #status showed at each point, and the page's console.
 */
export async function bookInPage(browser: Browser, g: GuestStack, origin: string, opts: { region?: string } = {}): Promise<{ awaiting: Shown; done: Shown; console: string[] }> {
  const stay = await g.freeStay();
  const tab = await browser.newPage();
  const lines: string[] = [];
  tab.on("console", (m) => lines.push(m.text()));
  try {
    const hash = new URLSearchParams({ url: g.url, anon: g.anonKey, token: guestToken(), unit: stay.unit_id, in: stay.check_in, out: stay.check_out,
                                       ...(opts.region && { region: opts.region }) });
    await tab.goto(`${origin}/#${hash}`);
    const read = (): Promise<Shown> => tab.$eval("#status", (e) => ({ ...(e as HTMLElement).dataset, text: e.textContent }) as Shown);
    await tab.waitForFunction(() => document.querySelector<HTMLElement>("#status")?.dataset.state !== "loading", { timeout: 30_000, polling: 10 });
    const awaiting = await read();
    if (awaiting.state !== "awaiting_payment") return { awaiting, done: awaiting, console: lines };
    await fetch(`${g.sandboxUrl}/_sandbox/stripeConfirm`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify([awaiting.gateway, "succeeded"]),
    });
    await tab.waitForFunction(() => !["awaiting_payment", "payment_processing"].includes(document.querySelector<HTMLElement>("#status")?.dataset.state ?? ""),
      { timeout: 30_000, polling: 10 });
    return { awaiting, done: await read(), console: lines };
  } finally {
    await tab.close();
  }
}
