// A plain webhook receiver that checks signatures the way our edge functions will: Stripe with
// constructEventAsync, MercadoPago with the x-signature HMAC over the query's data.id, OpenPIX with RSA-SHA256.
import { createHmac, createPublicKey, timingSafeEqual, verify } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import Stripe from "stripe";
import type { ProviderSandbox } from "../../local/sandbox/index.ts";

export interface Received {
  path: string;
  query: URLSearchParams;
  headers: http.IncomingHttpHeaders;
  raw: string;
  body: Record<string, unknown>;
  verified: boolean;
}

export interface Receiver {
  url: string;
  received: Received[];
  /** statuses to answer with, in order; afterwards 200 */
  answers: number[];
  close(): Promise<void>;
}

const stripe = new Stripe("sk_test_unused");

export async function verifyStripe(raw: string, header: string, secret: string): Promise<boolean> {
  try {
    await stripe.webhooks.constructEventAsync(raw, header, secret);
    return true;
  } catch {
    return false;
  }
}

export function verifyMercadoPago(query: URLSearchParams, headers: http.IncomingHttpHeaders, secret: string): boolean {
  const parts = Object.fromEntries(String(headers["x-signature"] ?? "").split(",").map((p) => {
    const i = p.indexOf("=");
    return [p.slice(0, i).trim(), p.slice(i + 1).trim()];
  }));
  if (!parts.ts || !parts.v1) return false;
  const manifest = `id:${query.get("data.id")};request-id:${headers["x-request-id"]};ts:${parts.ts};`;
  const expected = Buffer.from(createHmac("sha256", secret).update(manifest).digest("hex"));
  const got = Buffer.from(parts.v1);
  return expected.length === got.length && timingSafeEqual(expected, got);
}

export function verifyOpenPix(raw: string, signature: string, publicKeyBase64: string): boolean {
  const key = createPublicKey(Buffer.from(publicKeyBase64, "base64").toString("utf8"));
  return verify("sha256", Buffer.from(raw), key, Buffer.from(signature, "base64"));
}

export async function startReceiver(sandbox: () => ProviderSandbox): Promise<Receiver> {
  const received: Received[] = [];
  const answers: number[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", async () => {
      const raw = Buffer.concat(chunks).toString("utf8");
      const u = new URL(req.url ?? "/", "http://x");
      const sb = sandbox();
      let verified = false;
      if (u.pathname === "/stripe") verified = await verifyStripe(raw, String(req.headers["stripe-signature"]), sb.stripe.webhookSecret);
      else if (u.pathname.startsWith("/mp")) verified = verifyMercadoPago(u.searchParams, req.headers, sb.mercadopago.webhookSecret);
      else if (u.pathname === "/openpix") verified = verifyOpenPix(raw, String(req.headers["x-webhook-signature"]), sb.openpix.webhookPublicKey);
      received.push({ path: u.pathname, query: u.searchParams, headers: req.headers, raw, body: JSON.parse(raw), verified });
      // a receiver that rejects bad signatures, as ours will
      res.writeHead(verified ? (answers.shift() ?? 200) : 400).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    received,
    answers,
    close: () => new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
}
