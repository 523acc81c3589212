// The guest's page in Debian's Chromium, headless, on an origin of its own: supabase-js and the typed
// client book a stay across origins (CORS preflights included), with and without a region pinned (which
// makes supabase-js send x-region and ?forceFunctionRegion), and read it back until confirmed.
import type { Browser } from "puppeteer-core";
import type { Server } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startGuestStack, type GuestStack } from "../helpers/guest_app.ts";
import { bookInPage, chromiumPath, launchChromium, servePage } from "../helpers/guest_page.ts";

const chromium = chromiumPath();
let g: GuestStack;
let browser: Browser;
let page: { server: Server; origin: string };

beforeAll(async () => {
  if (!chromium) throw new Error("the browser test needs Debian's chromium (apt-get install chromium) or CHROMIUM_PATH");
  [g, page] = await Promise.all([startGuestStack(), servePage()]);
  browser = await launchChromium(chromium);
}, 120_000);

afterAll(async () => {
  await browser?.close();
  page?.server.close();
  await g?.stop();
});

describe("a guest books from a web page on another origin", () => {
  it.each([["no region", undefined], ["pinned to sa-east-1", "sa-east-1"]])("%s: checkout, the card paid, confirmed with a code", async (_name, region) => {
    const { awaiting, done, console: lines } = await bookInPage(browser, g, page.origin, { region });
    expect(awaiting, lines.join("\n")).toMatchObject({ state: "awaiting_payment", gateway: expect.stringMatching(/^pi_/) });
    expect(done, lines.join("\n")).toMatchObject({ state: "confirmed", confirmationCode: expect.stringMatching(/^RES-/) });
  });
});
