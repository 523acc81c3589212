// OpenPIX (Woovi) charges under /openpix: create, read by correlationID or globalID, refund, expiry,
// and webhooks signed with RSA-SHA256 over the raw body (x-webhook-signature).
import { randomUUID, sign, type KeyObject } from "node:crypto";
import type { SandboxEvent } from "./types.ts";
import { SandboxError } from "./types.ts";
import type { ApiRequest, ApiResponse } from "./util.ts";
import { header, hex, parseJson, pixBrCode } from "./util.ts";

type Obj = Record<string, unknown>;
interface Charge extends Obj {
  correlationID: string;
  globalID: string;
  status: "ACTIVE" | "COMPLETED" | "EXPIRED";
  value: number;
  expiresDate: string;
}

const DEFAULT_EXPIRES_IN = 86_400;
const err = (status: number, error: string): ApiResponse => ({ status, body: { error } });
export const openpixError = err;

export class OpenPix {
  readonly charges = new Map<string, Charge>(); // by correlationID
  private byGlobalId = new Map<string, string>();
  private refunds = new Map<string, Obj[]>(); // by charge correlationID
  private pixKey = randomUUID();
  private company = { id: hex(12), name: "Reserve Connect Sandbox", taxID: "12345678000199" };

  constructor(
    private appId: string,
    private apiBase: string,
    private publicKeyPem: string,
    private emitEvent: (e: SandboxEvent) => void,
    private webhookUrl: () => string | null,
  ) {}

  handle(req: ApiRequest): ApiResponse {
    const seg = req.path.split("/").filter(Boolean); // ["api", "v1", "charge", id?, "refund"?]
    if (req.method === "GET" && req.path === "/api/v1/webhook/public-keys") {
      // unauthenticated, as the real one; keys rotate there, so receivers should fetch rather than hard-code
      return { status: 200, body: { public_keys: [{ key_identifier: "sandbox", is_current: true, key: this.publicKeyPem }] } };
    }
    if (header(req.headers, "authorization") !== this.appId) return err(401, "appID inválido");
    if (seg[0] !== "api" || seg[1] !== "v1" || seg[2] !== "charge") return err(404, `rota ${req.method} ${req.path} não encontrada`);
    const parsed = parseJson(req.rawBody);
    if (!parsed.ok) return err(400, "JSON inválido");
    const body = (parsed.value ?? {}) as Obj;
    if (req.method === "POST" && seg.length === 3) return this.create(body, req.query.get("return_existing") === "true");
    const charge = seg[3] ? this.find(decodeURIComponent(seg[3])) : undefined;
    if (!charge) return err(404, "Cobrança não encontrada");
    if (req.method === "GET" && seg.length === 4) return { status: 200, body: { charge: this.read(charge) } };
    if (seg[4] === "refund" && seg.length === 5) {
      if (req.method === "GET") return { status: 200, body: { refunds: this.refunds.get(charge.correlationID) ?? [] } };
      if (req.method === "POST") return this.refund(charge, body);
    }
    return err(404, `rota ${req.method} ${req.path} não encontrada`);
  }

  /**
   * A correlationID already used answers with an error unless `?return_existing=true`, which returns the
   * existing charge (woovibr/n8n-nodes-woovi WOOVI_API_ROUTES.md; correlationID is Woovi's idempotency key).
   * The exact error text of the real API is not documented; this one is the sandbox's.
   */
  private create(b: Obj, returnExisting: boolean): ApiResponse {
    if (typeof b.correlationID !== "string" || b.correlationID === "") return err(400, "correlationID é obrigatório");
    if (!Number.isInteger(b.value) || (b.value as number) <= 0) return err(400, "value deve ser um inteiro positivo em centavos");
    if (b.comment !== undefined && String(b.comment).length > 140) return err(400, "comment deve ter no máximo 140 caracteres");
    const existing = this.charges.get(b.correlationID);
    if (existing && returnExisting) return { status: 200, body: { charge: this.read(existing), correlationID: existing.correlationID, brCode: existing.brCode } };
    if (existing) return err(400, "Já existe uma cobrança com esse correlationID");
    const expiresIn = b.expiresIn === undefined ? DEFAULT_EXPIRES_IN : Number(b.expiresIn);
    if (!Number.isInteger(expiresIn) || expiresIn <= 0) return err(400, "expiresIn deve ser um inteiro positivo em segundos");
    const now = Date.now();
    const expiresAt = typeof b.expiresDate === "string" && !Number.isNaN(Date.parse(b.expiresDate)) ? Date.parse(b.expiresDate) : now + expiresIn * 1000;
    const transactionID = hex(16);
    const paymentLinkID = randomUUID();
    const globalID = Buffer.from(`Charge:${hex(12)}`).toString("base64");
    const brCode = pixBrCode(b.value as number, this.pixKey, transactionID);
    const charge: Charge = {
      customer: b.customer ?? null, value: b.value as number, comment: (b.comment as string) ?? "", identifier: transactionID,
      correlationID: b.correlationID, paymentLinkID, transactionID, status: "ACTIVE", giftbackAppliedValue: 0,
      discount: 0, valueWithDiscount: b.value, expiresDate: new Date(expiresAt).toISOString(), type: "DYNAMIC",
      createdAt: new Date(now).toISOString(), additionalInfo: b.additionalInfo ?? [], updatedAt: new Date(now).toISOString(),
      brCode, expiresIn: Math.round((expiresAt - now) / 1000), pixKey: this.pixKey,
      paymentLinkUrl: `${this.apiBase}/pay/${paymentLinkID}`, qrCodeImage: `${this.apiBase}/openpix/charge/brcode/image/${paymentLinkID}.png`,
      globalID, paymentMethods: { pix: { method: "PIX_COB", status: "ACTIVE", value: b.value, txId: transactionID, brCode, transactionID, identifier: transactionID } },
    };
    this.charges.set(charge.correlationID, charge);
    this.byGlobalId.set(globalID, charge.correlationID);
    return { status: 200, body: { charge: structuredClone(charge), correlationID: charge.correlationID, brCode } };
  }

  find(id: string): Charge | undefined {
    return this.charges.get(id) ?? this.charges.get(this.byGlobalId.get(id) ?? "");
  }

  read(c: Charge): Charge {
    this.expireIfDue(c);
    return structuredClone(c);
  }

  get(id: string): Charge {
    const c = this.find(id);
    if (!c) throw new SandboxError(404, `no OpenPIX charge ${id}`);
    return c;
  }

  sweep(now = Date.now()): void {
    for (const c of this.charges.values()) this.expireIfDue(c, now);
  }

  expireIfDue(c: Charge, now = Date.now()): void {
    if (c.status === "ACTIVE" && Date.parse(c.expiresDate) <= now) this.markExpired(c);
  }

  expireNow(id: string): Charge {
    const c = this.get(id);
    if (c.status !== "ACTIVE") throw new SandboxError(409, `charge ${id} is ${c.status}, not ACTIVE`);
    c.expiresDate = new Date().toISOString();
    this.markExpired(c);
    return structuredClone(c);
  }

  pay(id: string, afterExpiry = false): Charge {
    const c = this.get(id);
    this.expireIfDue(c);
    if (c.status === "EXPIRED" && !afterExpiry) throw new SandboxError(409, `charge ${id} expired at ${c.expiresDate}; pass afterExpiry to pay anyway`);
    if (c.status === "COMPLETED") throw new SandboxError(409, `charge ${id} is already COMPLETED`);
    const now = new Date().toISOString();
    Object.assign(c, { status: "COMPLETED", paidAt: now, updatedAt: now, endToEndId: `E${hex(15)}`.slice(0, 32) });
    (c.paymentMethods as { pix: Obj }).pix.status = "COMPLETED";
    const payer = { name: "Hóspede Sandbox", taxID: { taxID: "12345678909", type: "BR:CPF" }, correlationID: randomUUID() };
    const pix = { customer: c.customer, payer, charge: structuredClone(c), time: now, value: c.value, transactionID: c.transactionID,
      infoPagador: null, endToEndId: c.endToEndId, type: "PAYMENT", globalID: Buffer.from(`PixTransaction:${hex(12)}`).toString("base64") };
    this.notify("OPENPIX:CHARGE_COMPLETED", { charge: structuredClone(c), pix, company: this.company, account: {} });
    return structuredClone(c);
  }

  private refund(c: Charge, b: Obj): ApiResponse {
    if (typeof b.correlationID !== "string" || b.correlationID === "") return err(400, "correlationID do reembolso é obrigatório");
    const list = this.refunds.get(c.correlationID) ?? [];
    const same = list.find((r) => r.correlationID === b.correlationID);
    if (same) return { status: 200, body: { refund: same } };
    if (this.read(c).status !== "COMPLETED") return err(400, "Cobrança não está paga");
    const refunded = list.reduce((s, r) => s + (r.value as number), 0);
    const remaining = c.value - refunded;
    const value = b.value === undefined ? remaining : b.value;
    if (!Number.isInteger(value) || (value as number) <= 0) return err(400, "value deve ser um inteiro positivo em centavos");
    if ((value as number) > remaining) return err(400, "Valor do reembolso maior que o valor disponível da cobrança");
    const now = new Date().toISOString();
    const refund: Obj = { status: "IN_PROCESSING", value, correlationID: b.correlationID, endToEndId: `D${hex(15)}`.slice(0, 32), time: now,
      ...(b.comment ? { comment: b.comment } : {}) };
    list.push(refund);
    this.refunds.set(c.correlationID, list);
    const answer = structuredClone(refund);
    // the sandbox's PIX network confirms at once; the API answer still shows IN_PROCESSING, as the docs do
    refund.status = "CONFIRMED";
    const partial = (value as number) < c.value;
    const refundTransaction = { value, time: now, endToEndId: refund.endToEndId, status: "CONFIRMED", type: "REFUND", createdAt: now, partial,
      globalID: Buffer.from(`PixTransaction:${hex(12)}`).toString("base64"), correlationID: refund.correlationID };
    const originalTransaction = { value: c.value, time: c.paidAt, endToEndId: c.endToEndId, status: "CONFIRMED", type: "PAYMENT",
      charge: { correlationID: c.correlationID, globalID: c.globalID } };
    this.notify("PIX_TRANSACTION_REFUND_SENT_CONFIRMED", { refundTransaction, originalTransaction, company: this.company, account: {} });
    // deprecated but still documented, and what older handlers listen to
    this.notify("OPENPIX:TRANSACTION_REFUND_RECEIVED", { charge: structuredClone(c), pixQrCode: null,
      pix: { ...refundTransaction, charge: { correlationID: c.correlationID } }, company: this.company, account: {} });
    return { status: 200, body: { refund: answer } };
  }

  private markExpired(c: Charge): void {
    Object.assign(c, { status: "EXPIRED", updatedAt: new Date().toISOString() });
    (c.paymentMethods as { pix: Obj }).pix.status = "EXPIRED";
    this.notify("OPENPIX:CHARGE_EXPIRED", { charge: structuredClone(c), company: this.company, account: {} });
  }

  private notify(event: string, rest: Obj): void {
    const body = { event, ...rest };
    this.emitEvent({ provider: "openpix", id: `opx_evt_${hex(10)}`, type: event, url: this.webhookUrl(), body,
      raw: JSON.stringify(body), createdAt: new Date().toISOString() });
  }
}

/** x-webhook-signature: base64 RSA-SHA256 (PKCS#1 v1.5) over the exact bytes sent. */
export function signOpenPix(raw: string, privateKey: KeyObject): Record<string, string> {
  return { "x-webhook-signature": sign("sha256", Buffer.from(raw), privateKey).toString("base64") };
}
