// One HTTP server on 127.0.0.1 speaking Stripe (root /v1), MercadoPago (/mercadopago) and OpenPIX (/openpix),
// with secrets made on first start (kept under stateDir when given), so code under test uses its real
// clients and real signature checks, and a restarted sandbox is the same provider.
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, type KeyObject } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import Stripe from "stripe";
import { createControl, handleControl } from "./control.ts";
import { Faults } from "./faults.ts";
import { MercadoPago, mpError, signMercadoPago, type MercadoPagoSnapshot } from "./mercadopago.ts";
import { handlePage } from "./pages.ts";
import { OpenPix, openpixError, signOpenPix, type OpenPixSnapshot } from "./openpix.ts";
import { Receivers, type ReceiversSnapshot } from "./receivers.ts";
import { StateStore, type SandboxSecrets } from "./store.ts";
import { StripeState, type StripeSnapshot } from "./stripe.ts";
import { StripeApi, stripeErrorFor } from "./stripe_api.ts";
import type { Provider, ProviderSandbox, SandboxControl, SandboxOptions } from "./types.ts";
import type { ApiRequest, ApiResponse } from "./util.ts";
import { hex, qrPngBase64, sleep } from "./util.ts";
import { Dispatcher, type DispatcherSnapshot } from "./webhooks.ts";

const EXPIRY_SWEEP_MS = 1_000;

interface SandboxState {
  stripe: StripeSnapshot;
  stripeIdempotency: ReturnType<StripeApi["snapshot"]>;
  mercadopago: MercadoPagoSnapshot;
  openpix: OpenPixSnapshot;
  dispatcher: DispatcherSnapshot;
  receivers?: ReceiversSnapshot;
}

/** Every control action may move state: each call (and each awaited one, when it settles) marks it for writing. */
function noticeChanges(control: SandboxControl, changed: () => void): SandboxControl {
  const out: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(control)) {
    out[name] = (...args: unknown[]) => {
      try {
        const r = (fn as (...a: unknown[]) => unknown)(...args);
        if (r instanceof Promise) return r.finally(changed);
        return r;
      } finally {
        changed();
      }
    };
  }
  return out as unknown as SandboxControl;
}

function rsaPair() {
  return generateKeyPairSync("rsa", { modulusLength: 2048 });
}

function newSecrets(): SandboxSecrets {
  const keys = rsaPair();
  const alnum = (n: number) => randomBytes(n).toString("base64").replace(/[^A-Za-z0-9]/g, "").padEnd(n, "0").slice(0, n);
  return {
    pagerdutyRoutingKey: hex(16),
    slackWebhookPath: `/services/T${alnum(10).toUpperCase()}/B${alnum(10).toUpperCase()}/${alnum(24)}`,
    stripeSecretKey: `sk_test_sandbox_${hex(16)}`,
    stripeWebhookSecret: `whsec_${randomBytes(24).toString("base64")}`,
    mercadopagoAccessToken: `TEST-${hex(8)}-${hex(3)}-${hex(16)}-${hex(4)}`,
    mercadopagoWebhookSecret: hex(32),
    openpixAppId: Buffer.from(`Client_Id_${hex(8)}:Client_Secret_${hex(16)}`).toString("base64"),
    openpixPrivateKeyPem: keys.privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    openpixPublicKeyPem: keys.publicKey.export({ type: "spki", format: "pem" }).toString(),
  };
}

export async function startProviderSandbox(opts: SandboxOptions = {}): Promise<ProviderSandbox> {
  const log = opts.log ?? (() => {});
  const secrets = opts.stateDir ? StateStore.secrets(opts.stateDir, newSecrets).secrets : newSecrets();
  const { stripeSecretKey: secretKey, stripeWebhookSecret: webhookSecret, mercadopagoAccessToken: mpToken,
    mercadopagoWebhookSecret: mpSecret, openpixAppId: appId, openpixPublicKeyPem: publicPem } = secrets;
  const privateKey: KeyObject = createPrivateKey(secrets.openpixPrivateKeyPem);
  createPublicKey(publicPem); // a corrupt key fails the start, not the first webhook
  let wrongKeys: ReturnType<typeof rsaPair> | undefined; // made on first use: RSA keygen is slow
  const wrong = { stripe: `whsec_${randomBytes(24).toString("base64")}`, mp: hex(32) };

  const webhookUrls = { stripe: opts.stripeWebhookUrl ?? null, openpix: opts.openpixWebhookUrl ?? null };
  const dispatcher = new Dispatcher({
    stripe: async (e, bad) => ({ "stripe-signature": await Stripe.webhooks.generateTestHeaderStringAsync({ payload: e.raw, secret: bad ? wrong.stripe : webhookSecret }),
      "user-agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)" }),
    mercadopago: async (e, bad) => signMercadoPago(e, bad ? wrong.mp : mpSecret),
    openpix: async (e, bad) => signOpenPix(e.raw, bad ? (wrongKeys ??= rsaPair()).privateKey : privateKey),
  }, opts.retry ?? { attempts: 0, baseMs: 1000 }, log);
  const emit = dispatcher.emit.bind(dispatcher);

  const server = http.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://127.0.0.1:${port}`;

  const stripe = new StripeState(emit, () => webhookUrls.stripe);
  const stripeApi = new StripeApi(stripe, secretKey);
  const mercadopago = new MercadoPago(mpToken, mpSecret, `${url}/mercadopago`, `${url}/mercadopago`, emit, qrPngBase64);
  mercadopago.ipn = opts.mercadopagoIpn ?? false;
  const openpix = new OpenPix(appId, `${url}/openpix`, publicPem, emit, () => webhookUrls.openpix, opts.openpixEventNaming ?? "openpix");
  const faults = new Faults();
  const receivers = new Receivers(new Set([secrets.pagerdutyRoutingKey, ...(opts.pagerdutyRoutingKeys ?? [])]), secrets.slackWebhookPath);

  const store = opts.stateDir ? StateStore.open(opts.stateDir, (): SandboxState => ({
    stripe: stripe.snapshot(), stripeIdempotency: stripeApi.snapshot(), mercadopago: mercadopago.snapshot(),
    openpix: openpix.snapshot(), dispatcher: dispatcher.snapshot(), receivers: receivers.snapshot(),
  }), log) : undefined;
  const saved = store?.load<SandboxState>();
  if (saved) {
    stripe.restore(saved.stripe);
    stripeApi.restore(saved.stripeIdempotency);
    mercadopago.restore(saved.mercadopago);
    openpix.restore(saved.openpix);
    dispatcher.restore(saved.dispatcher);
    if (saved.receivers) receivers.restore(saved.receivers);
    log(`[sandbox] restored ${stripe.intents.size} PaymentIntents, ${mercadopago.payments.size} MercadoPago payments, ${openpix.charges.size} OpenPIX charges from ${opts.stateDir}`);
  }
  const changed = () => store?.markDirty();
  dispatcher.onChange = changed;

  const control = noticeChanges(createControl({ stripe, mercadopago, openpix, dispatcher, faults, webhookUrls, url, receivers }), changed);
  const sandbox: ProviderSandbox = {
    url,
    stripe: { host: "127.0.0.1", port, protocol: "http", secretKey, webhookSecret },
    mercadopago: { apiBase: `${url}/mercadopago`, accessToken: mpToken, webhookSecret: mpSecret },
    openpix: { apiBase: `${url}/openpix`, appId, webhookPublicKey: Buffer.from(publicPem).toString("base64") },
    pagerduty: { eventsUrl: `${url}/pagerduty/v2/enqueue`, routingKey: secrets.pagerdutyRoutingKey },
    slack: { webhookUrl: `${url}/slack${secrets.slackWebhookPath}` },
    stateDir: opts.stateDir ?? null,
    control,
    flushState: async () => await store?.flush(),
    stop: async () => {
      clearInterval(sweep);
      await dispatcher.stop();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await store?.close();
    },
  };
  const info = () => ({ url, stripe: sandbox.stripe, mercadopago: sandbox.mercadopago, openpix: sandbox.openpix,
    pagerduty: { ...sandbox.pagerduty, note: "POST Events API v2 JSON; routing_key must be this one (or one given in pagerdutyRoutingKeys)" },
    slack: { ...sandbox.slack, note: "POST {text, blocks?} JSON (or payload= form); answers ok" },
    webhookUrls,
    stateDir: opts.stateDir ?? null,
    pages: {
      stripe: `${url}/pay/stripe/<payment_intent id>?client_secret=<its client_secret>`,
      mercadopago: "each payment's point_of_interaction.transaction_data.ticket_url",
      openpix: "each charge's paymentLinkUrl (and qrCodeImage, the PNG of its brCode)",
      payUrl: "GET /_sandbox/payUrl/<provider>/<id>",
    } });

  const sweep = setInterval(() => {
    if (mercadopago.sweep() || openpix.sweep()) changed();
  }, EXPIRY_SWEEP_MS);
  sweep.unref();

  const providerApi = async (provider: Provider, req: ApiRequest): Promise<ApiResponse> => {
    const hang = faults.takeHang(provider);
    if (hang) await sleep(hang.ms);
    const fail = faults.takeFail(provider);
    if (fail) {
      if (provider === "stripe") return { status: fail.status, body: stripeErrorFor(fail.status, fail.code) };
      if (provider === "mercadopago") return mpError(fail.status, fail.code ?? "injected failure", fail.code);
      return openpixError(fail.status, fail.code ?? "injected failure");
    }
    if (provider === "stripe") return stripeApi.handle(req);
    return provider === "mercadopago" ? mercadopago.handle(req) : openpix.handle(req);
  };

  server.on("request", (req: http.IncomingMessage, res: http.ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", async () => {
      const u = new URL(req.url ?? "/", url);
      const rawBody = Buffer.concat(chunks).toString("utf8");
      const base = { method: req.method ?? "GET", query: u.searchParams, headers: req.headers, rawBody };
      let answer: ApiResponse;
      try {
        const p = u.pathname;
        const pageAnswer = handlePage({ stripe, mercadopago, openpix }, { ...base, path: p }, p);
        if (pageAnswer) answer = pageAnswer;
        else if (p === "/_sandbox" || p.startsWith("/_sandbox/")) answer = await handleControl(control, info, { ...base, path: p.slice(9) });
        else if (p.startsWith("/mercadopago/")) answer = await providerApi("mercadopago", { ...base, path: p.slice(12) });
        else if (p.startsWith("/openpix/")) answer = await providerApi("openpix", { ...base, path: p.slice(8) });
        else if (p.startsWith("/v1/")) answer = await providerApi("stripe", { ...base, path: p });
        else if (p.startsWith("/pagerduty/")) answer = await receivers.handle("pagerduty", { ...base, path: p.slice(10) });
        else if (p.startsWith("/slack/")) answer = await receivers.handle("slack", { ...base, path: p.slice(6) });
        else answer = { status: 404, body: { error: `nothing at ${p}; see GET /_sandbox` } };
      } catch (err) {
        answer = { status: 500, body: { error: (err as Error).message } };
      }
      // reads change state too (lazy expiry); a snapshot is cheap next to a lost payment
      changed();
      log(`[sandbox] ${req.method} ${u.pathname} -> ${answer.status}`);
      if (res.destroyed) return; // the caller gave up (timeoutApi): the work above still happened, as it would at the provider
      const raw = answer.raw;
      res.writeHead(answer.status, { "content-type": raw ? "text/html; charset=utf-8" : "application/json", ...answer.headers });
      res.end(raw ?? JSON.stringify(answer.body));
    });
  });
  return sandbox;
}
