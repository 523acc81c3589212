// The pages a person uses: MercadoPago's ticket_url, OpenPIX's paymentLinkUrl and QR image, and a pay page
// for a Stripe PaymentIntent (what Stripe.js would show). Each shows the real QR of the copy-and-paste PIX
// code and a button that moves the payment as the provider would, webhook and all. The link itself is the
// capability (MercadoPago's hash, OpenPIX's paymentLinkID, the PaymentIntent's client_secret), as with
// the real ones: no API key is asked for.
import type { MercadoPago } from "./mercadopago.ts";
import type { OpenPix } from "./openpix.ts";
import type { StripeState } from "./stripe.ts";
import { SandboxError } from "./types.ts";
import type { ApiRequest, ApiResponse } from "./util.ts";
import { escapeHtml, qrPng, qrPngBase64 } from "./util.ts";

type Obj = Record<string, unknown>;

export interface PageDeps {
  stripe: StripeState;
  mercadopago: MercadoPago;
  openpix: OpenPix;
}

const money = (minor: number, currency: string) =>
  new Intl.NumberFormat("pt-BR", { style: "currency", currency: currency.toUpperCase() }).format(minor / 100);

function page(title: string, body: string, status = 200): ApiResponse {
  const html = `<!doctype html><html lang="pt-BR"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title><style>
body{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem;color:#1a1a1a}
h1{font-size:1.3rem}.amount{font-size:2rem;font-weight:600;margin:.5rem 0}.status{display:inline-block;padding:.2rem .6rem;border-radius:1rem;background:#eee}
.status.ok{background:#d3f5dc}.status.bad{background:#fbd9d9}img.qr{width:16rem;height:16rem;image-rendering:pixelated;display:block;margin:1rem 0}
textarea{width:100%;font-family:monospace;font-size:.8rem}button{font-size:1rem;padding:.6rem 1.2rem;margin:.3rem .3rem .3rem 0;border-radius:.4rem;border:1px solid #888;cursor:pointer}
button.primary{background:#0a7d32;color:#fff;border-color:#0a7d32}.note{color:#666;font-size:.85rem}
</style></head><body>${body}<p class="note">Provider sandbox — nothing here moves real money.</p></body></html>`;
  return { status, body: null, raw: html, headers: { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" } };
}

const notFound = (what: string) => page("Not found", `<h1>Not found</h1><p>${escapeHtml(what)}</p>`, 404);
const seeOther = (location: string): ApiResponse => ({ status: 303, body: null, raw: "", headers: { location } });

function statusBadge(status: string, ok: string[], bad: string[]): string {
  const cls = ok.includes(status) ? "ok" : bad.includes(status) ? "bad" : "";
  return `<span class="status ${cls}" data-status="${escapeHtml(status)}">${escapeHtml(status)}</span>`;
}

function pixBlock(code: string, qrBase64: string): string {
  return `<img class="qr" alt="QR code PIX" src="data:image/png;base64,${qrBase64}">
<label for="code">PIX copia e cola</label><textarea id="code" rows="4" readonly>${escapeHtml(code)}</textarea>`;
}

/** Handles a page route, or answers undefined when the path is not one. */
export function handlePage(d: PageDeps, req: ApiRequest, path: string): ApiResponse | undefined {
  try {
    let m = /^\/mercadopago\/payments\/(\d+)\/ticket(\/pay)?$/.exec(path);
    if (m) return mercadopagoTicket(d, req, Number(m[1]), !!m[2]);
    m = /^\/openpix\/pay\/([0-9a-f-]{36})(\/pay)?$/.exec(path);
    if (m) return openpixLink(d, req, m[1]!, !!m[2]);
    m = /^\/openpix\/openpix\/charge\/brcode\/image\/([0-9a-f-]{36})\.png$/.exec(path);
    if (m) {
      const c = d.openpix.byPaymentLink(m[1]!);
      if (!c) return { status: 404, body: { error: "Cobrança não encontrada" } };
      return { status: 200, body: null, raw: qrPng(c.brCode as string), headers: { "content-type": "image/png", "cache-control": "max-age=3600" } };
    }
    m = /^\/pay\/stripe\/(pi_[A-Za-z0-9]+)(\/confirm)?$/.exec(path);
    if (m) return stripePay(d, req, m[1]!, !!m[2]);
    return undefined;
  } catch (err) {
    if (err instanceof SandboxError) return page("Cannot do that", `<h1>Cannot do that</h1><p>${escapeHtml(err.message)}</p>`, err.status);
    throw err;
  }
}

function form(req: ApiRequest): URLSearchParams {
  return new URLSearchParams(req.method === "POST" ? req.rawBody : "");
}

function mercadopagoTicket(d: PageDeps, req: ApiRequest, id: number, pay: boolean): ApiResponse {
  const p = d.mercadopago.payments.get(id);
  const ticket = p && (((p.point_of_interaction as Obj).transaction_data as Obj).ticket_url as string);
  const hash = req.query.get("hash") ?? form(req).get("hash");
  if (!p || !ticket || new URL(ticket).searchParams.get("hash") !== hash) return notFound("Este link de pagamento não existe.");
  if (pay) {
    if (req.method !== "POST") return { status: 405, body: { error: "POST to pay" }, headers: { allow: "POST" } };
    d.mercadopago.pay(id, { afterExpiry: form(req).get("after_expiry") === "1" });
    return seeOther(ticket);
  }
  const view = d.mercadopago.read(id);
  const data = (view.point_of_interaction as Obj).transaction_data as Obj;
  const pending = view.status === "pending";
  const expired = view.status === "cancelled" && view.status_detail === "expired";
  return page(`Mercado Pago — PIX ${id}`, `<h1>Pagamento PIX</h1>
<p>${escapeHtml(view.description ?? "")}</p><div class="amount">${money(Math.round(view.transaction_amount * 100), String(view.currency_id))}</div>
<p>Status: ${statusBadge(view.status, ["approved"], ["cancelled", "rejected", "refunded"])} <span class="note">${escapeHtml(view.status_detail)}</span></p>
${pending ? pixBlock(data.qr_code as string, data.qr_code_base64 as string) : ""}
${pending || expired ? `<form method="post" action="/mercadopago/payments/${id}/ticket/pay">
<input type="hidden" name="hash" value="${escapeHtml(hash)}">${expired ? '<input type="hidden" name="after_expiry" value="1">' : ""}
<button class="primary" type="submit">${expired ? "Pagar mesmo assim (expirado)" : "Pagar no app do banco"}</button></form>` : ""}
<p class="note">Vence em ${escapeHtml(view.date_of_expiration)}</p>`);
}

function openpixLink(d: PageDeps, req: ApiRequest, linkId: string, pay: boolean): ApiResponse {
  const c = d.openpix.byPaymentLink(linkId);
  if (!c) return notFound("Cobrança não encontrada.");
  if (pay) {
    if (req.method !== "POST") return { status: 405, body: { error: "POST to pay" }, headers: { allow: "POST" } };
    d.openpix.pay(c.correlationID, { afterExpiry: form(req).get("after_expiry") === "1" });
    return seeOther(c.paymentLinkUrl as string);
  }
  const view = d.openpix.read(c);
  const active = view.status === "ACTIVE";
  return page(`Woovi — ${view.correlationID}`, `<h1>Cobrança PIX</h1><p>${escapeHtml(view.comment ?? "")}</p>
<div class="amount">${money(view.value, "BRL")}</div>
<p>Status: ${statusBadge(view.status, ["COMPLETED"], ["EXPIRED"])}</p>
${active ? pixBlock(view.brCode as string, qrPngBase64(view.brCode as string)) : ""}
${active || view.status === "EXPIRED" ? `<form method="post" action="/openpix/pay/${linkId}/pay">
${view.status === "EXPIRED" ? '<input type="hidden" name="after_expiry" value="1">' : ""}
<button class="primary" type="submit">${view.status === "EXPIRED" ? "Pagar mesmo assim (expirada)" : "Pagar no app do banco"}</button></form>` : ""}
<p class="note">Expira em ${escapeHtml(view.expiresDate)}</p>`);
}

function stripePay(d: PageDeps, req: ApiRequest, piId: string, confirm: boolean): ApiResponse {
  const pi = d.stripe.intents.get(piId);
  const secret = req.query.get("client_secret") ?? form(req).get("client_secret");
  if (!pi || pi.client_secret !== secret) return notFound("No such PaymentIntent for this client secret.");
  const back = `/pay/stripe/${piId}?client_secret=${encodeURIComponent(secret!)}`;
  if (confirm) {
    if (req.method !== "POST") return { status: 405, body: { error: "POST to confirm" }, headers: { allow: "POST" } };
    const outcome = form(req).get("outcome");
    if (outcome !== "succeeded" && outcome !== "declined" && outcome !== "processing") {
      return page("Cannot do that", "<h1>Choose a card</h1>", 400);
    }
    d.stripe.confirm(piId, outcome);
    return seeOther(back);
  }
  const open = pi.status === "requires_payment_method" || pi.status === "requires_confirmation";
  const err = pi.last_payment_error as Obj | null;
  return page(`Pay ${piId}`, `<h1>Card payment</h1><p>${escapeHtml(pi.description ?? "")}</p>
<div class="amount">${money(pi.amount as number, pi.currency as string)}</div>
<p>Status: ${statusBadge(pi.status as string, ["succeeded"], ["canceled"])}</p>
${err ? `<p class="status bad">${escapeHtml(err.message)} (${escapeHtml(err.decline_code ?? err.code)})</p>` : ""}
${open ? `<form method="post" action="/pay/stripe/${piId}/confirm"><input type="hidden" name="client_secret" value="${escapeHtml(secret)}">
<button class="primary" type="submit" name="outcome" value="succeeded">Pay with 4242 4242 4242 4242</button>
<button type="submit" name="outcome" value="declined">Pay with 4000 0000 0000 0002 (declined)</button>
<button type="submit" name="outcome" value="processing">Pay with a card that settles later</button></form>` : ""}`);
}

/** The pay page of a PaymentIntent (Stripe has no hosted page for one; Stripe.js would show this). */
export const stripePayUrl = (base: string, pi: Obj) =>
  `${base}/pay/stripe/${pi.id}?client_secret=${encodeURIComponent(pi.client_secret as string)}`;
