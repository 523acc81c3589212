// The pages a person uses: MercadoPago's ticket_url, OpenPIX's paymentLinkUrl and qrCodeImage,
// and a pay page for a Stripe PaymentIntent. They answer without an API key (the link is the capability),
// show the real QR of the copy-and-paste code (decoded here with jsQR), and their buttons move the payment
// as the provider would, with its signed webhook. A real headless Chromium renders the ticket page and
// the QR in its screenshot decodes to the same code.
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import jsQR from "jsqr";
import { PNG } from "pngjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startProviderSandbox, type ProviderSandbox } from "../../local/sandbox/index.ts";
import { startReceiver, type Receiver } from "./receiver.ts";

type Json = Record<string, any>;
let sb: ProviderSandbox;
let rx: Receiver;

beforeAll(async () => {
  rx = await startReceiver(() => sb);
  sb = await startProviderSandbox({ stripeWebhookUrl: `${rx.url}/stripe`, openpixWebhookUrl: `${rx.url}/openpix` });
});
afterAll(async () => {
  await sb.stop();
  await rx.close();
});

function decodeQr(png: Buffer): string | undefined {
  const img = PNG.sync.read(png);
  return jsQR(new Uint8ClampedArray(img.data.buffer, img.data.byteOffset, img.data.byteLength), img.width, img.height)?.data;
}

/** What a browser does with the page's form: POST its fields, follow the 303 back to the page. */
async function submit(pageUrl: string, html: string, button?: { name: string; value: string }) {
  const action = /<form method="post" action="([^"]+)"/.exec(html)?.[1];
  expect(action, "the page has a pay button").toBeDefined();
  const fields = new URLSearchParams([...html.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)"/g)].map((m) => [m[1]!, m[2]!.replace(/&amp;/g, "&")]));
  if (button) fields.set(button.name, button.value);
  const res = await fetch(new URL(action!, pageUrl), { method: "POST", body: fields, redirect: "manual",
    headers: { "content-type": "application/x-www-form-urlencoded" } });
  expect(res.status).toBe(303);
  const back = await fetch(new URL(res.headers.get("location")!, pageUrl));
  return { status: back.status, html: await back.text() };
}

const statusOf = (html: string) => /data-status="([^"]+)"/.exec(html)?.[1];

describe("MercadoPago's ticket page", () => {
  it("shows the PIX QR of its copy-and-paste code and pays with a button, notifying as MercadoPago does", async () => {
    const res = await fetch(`${sb.mercadopago.apiBase}/v1/payments`, { method: "POST",
      headers: { authorization: `Bearer ${sb.mercadopago.accessToken}`, "content-type": "application/json", "x-idempotency-key": "page-1" },
      body: JSON.stringify({ transaction_amount: 480.5, payment_method_id: "pix", description: "2 noites, Ipanema",
        payer: { email: "ana@example.com" }, external_reference: "page-1", notification_url: `${rx.url}/mp` }) });
    const payment = (await res.json()) as Json;
    const { qr_code, qr_code_base64, ticket_url } = payment.point_of_interaction.transaction_data;
    expect(decodeQr(Buffer.from(qr_code_base64, "base64"))).toBe(qr_code);
    expect(qr_code).toMatch(/^000201.*5406480\.50.*6304[0-9A-F]{4}$/);

    const pageRes = await fetch(ticket_url);
    expect(pageRes.status).toBe(200);
    expect(pageRes.headers.get("content-type")).toMatch(/text\/html/);
    const html = await pageRes.text();
    expect(html).toContain("R$&nbsp;480,50".replace("&nbsp;", "\u00a0"));
    expect(statusOf(html)).toBe("pending");
    expect(html).toContain(qr_code);
    expect(html).toContain(`data:image/png;base64,${qr_code_base64}`);
    const wrongHash = new URL(ticket_url);
    wrongHash.searchParams.set("hash", "not-the-hash");
    expect((await fetch(wrongHash)).status).toBe(404);

    const seen = rx.received.length;
    const after = await submit(ticket_url, html);
    expect(statusOf(after.html)).toBe("approved");
    expect(sb.control.payment("mercadopago", payment.id)).toMatchObject({ status: "approved", status_detail: "accredited" });
    await sb.control.flush();
    const hook = rx.received.slice(seen).find((r) => r.path === "/mp");
    expect(hook).toMatchObject({ verified: true, body: { action: "payment.updated", data: { id: String(payment.id) } } });
  });

  it("renders in headless Chromium with a QR a camera can read", async (ctx) => {
    const chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find((p) => existsSync(p));
    if (!chromium) {
      console.warn("headless Chromium test skipped: Debian's chromium is not installed (apt-get install chromium)");
      ctx.skip();
      return;
    }
    const res = await fetch(`${sb.mercadopago.apiBase}/v1/payments`, { method: "POST",
      headers: { authorization: `Bearer ${sb.mercadopago.accessToken}`, "content-type": "application/json", "x-idempotency-key": "page-2" },
      body: JSON.stringify({ transaction_amount: 99.9, payment_method_id: "pix", payer: { email: "ana@example.com" } }) });
    const { qr_code, ticket_url } = ((await res.json()) as Json).point_of_interaction.transaction_data;
    const dir = mkdtempSync(path.join(tmpdir(), "sandbox-page-"));
    try {
      const shot = path.join(dir, "ticket.png");
      await promisify(execFile)(chromium, ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        `--user-data-dir=${path.join(dir, "profile")}`, "--window-size=600,900", `--screenshot=${shot}`, ticket_url], { timeout: 60_000 });
      expect(decodeQr(readFileSync(shot))).toBe(qr_code);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 90_000);
});

describe("OpenPIX's payment link and QR image", () => {
  it("serve the charge without the AppID; the image is the PNG of its brCode; paying sends CHARGE_COMPLETED", async () => {
    const res = await fetch(`${sb.openpix.apiBase}/api/v1/charge`, { method: "POST",
      headers: { authorization: sb.openpix.appId, "content-type": "application/json" },
      body: JSON.stringify({ correlationID: "page-opx-1", value: 32_090, comment: "Copacabana" }) });
    const { charge } = (await res.json()) as Json;
    const img = await fetch(charge.qrCodeImage);
    expect(img.status).toBe(200);
    expect(img.headers.get("content-type")).toBe("image/png");
    expect(decodeQr(Buffer.from(await img.arrayBuffer()))).toBe(charge.brCode);
    const html = await (await fetch(charge.paymentLinkUrl)).text();
    expect(statusOf(html)).toBe("ACTIVE");
    expect(html).toContain(charge.brCode);
    const seen = rx.received.length;
    const after = await submit(charge.paymentLinkUrl, html);
    expect(statusOf(after.html)).toBe("COMPLETED");
    await sb.control.flush();
    expect(rx.received.slice(seen).find((r) => r.path === "/openpix")).toMatchObject({ verified: true,
      body: { event: "OPENPIX:CHARGE_COMPLETED", charge: { correlationID: "page-opx-1", status: "COMPLETED" } } });
    expect((await fetch(`${sb.openpix.apiBase}/pay/00000000-0000-0000-0000-000000000000`)).status).toBe(404);
  });
});

describe("a Stripe PaymentIntent's pay page", () => {
  it("takes the client_secret, declines with 0002, then pays with 4242 and Stripe posts payment_intent.succeeded", async () => {
    const res = await fetch(`${sb.url}/v1/payment_intents`, { method: "POST", body: "amount=64000&currency=brl&description=3%20nights",
      headers: { authorization: `Bearer ${sb.stripe.secretKey}`, "content-type": "application/x-www-form-urlencoded" } });
    const pi = (await res.json()) as Json;
    const url = sb.control.payUrl("stripe", pi.id);
    expect(url).toBe(`${sb.url}/pay/stripe/${pi.id}?client_secret=${encodeURIComponent(pi.client_secret)}`);
    expect((await fetch(`${sb.url}/pay/stripe/${pi.id}?client_secret=wrong`)).status).toBe(404);
    const html = await (await fetch(url)).text();
    expect(html).toContain("R$\u00a0640,00");
    const declined = await submit(url, html, { name: "outcome", value: "declined" });
    expect(statusOf(declined.html)).toBe("requires_payment_method");
    expect(declined.html).toContain("Your card was declined.");
    const seen = rx.received.length;
    const paid = await submit(url, declined.html, { name: "outcome", value: "succeeded" });
    expect(statusOf(paid.html)).toBe("succeeded");
    await sb.control.flush();
    expect(rx.received.slice(seen).map((r) => [r.body.type, r.verified])).toEqual(expect.arrayContaining([["payment_intent.succeeded", true]]));
    const info = (await (await fetch(`${sb.url}/_sandbox/payUrl/stripe/${pi.id}`)).json()) as Json;
    expect(info.url).toBe(url);
  });
});
