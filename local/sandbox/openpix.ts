// OpenPIX (Woovi) charges under /openpix: create, read by correlationID or globalID, list, refund, expiry,
// and webhooks signed with RSA-SHA256 over the raw body (x-webhook-signature), in the recorded shapes
// (tests/fixtures/providers/openpix): charge.fee and payer once paid, pix.status, refunds confirmed by
// endToEndId only, either event naming (OPENPIX: or the current woovi:), deliveries without `event`.
import { randomUUID, sign, type KeyObject } from "node:crypto";
import type { SandboxEvent } from "./types.ts";
import { SandboxError } from "./types.ts";
import type { ApiRequest, ApiResponse } from "./util.ts";
import { header, hex, parseJson, pixBrCode } from "./util.ts";

type Obj = Record<string, unknown>;
export interface Charge extends Obj {
  correlationID: string;
  globalID: string;
  status: "ACTIVE" | "COMPLETED" | "EXPIRED";
  value: number;
  expiresDate: string;
}

const DEFAULT_EXPIRES_IN = 86_400;
const MAX_LIST_LIMIT = 100;
/** The sandbox's PIX price: 0.80% with a R$0.50 minimum (Woovi's published rate for PIX received). */
export const OPENPIX_FEE = { percent: 0.8, minimum: 50 };
export const openpixFee = (value: number) => Math.max(OPENPIX_FEE.minimum, Math.round((value * OPENPIX_FEE.percent) / 100));
const err = (status: number, error: string): ApiResponse => ({ status, body: { error } });
export const openpixError = err;

export type OpenPixNaming = "openpix" | "woovi";

export interface OpenPixSnapshot {
  charges: Charge[];
  refunds: [string, Obj[]][];
  paidE2e: [string, string][];
  pixKey: string;
  accountId: string;
  company: Obj;
}

export class OpenPix {
  readonly charges = new Map<string, Charge>(); // by correlationID
  private byGlobalId = new Map<string, string>();
  private byLinkId = new Map<string, string>();
  private refunds = new Map<string, Obj[]>(); // by charge correlationID
  /** the endToEndId of each paid charge's PIX (the charge object itself does not carry it) */
  private paidE2e = new Map<string, string>();
  private pixKey: string = randomUUID();
  private accountId: string = randomUUID();
  private company: Obj = { id: hex(12), name: "Reserve Connect Sandbox", taxID: "12345678000199" };
  /** `woovi:CHARGE_COMPLETED` (Woovi's current docs and dashboard) or the older `OPENPIX:CHARGE_COMPLETED` */
  naming: OpenPixNaming;
  /** send charge events without their `event` field, as webhooks registered without an event type get them */
  withoutEvent = false;

  constructor(
    private appId: string,
    private apiBase: string,
    private publicKeyPem: string,
    private emitEvent: (e: SandboxEvent) => void,
    private webhookUrl: () => string | null,
    naming: OpenPixNaming = "openpix",
  ) {
    this.naming = naming;
  }

  snapshot(): OpenPixSnapshot {
    return { charges: [...this.charges.values()], refunds: [...this.refunds], paidE2e: [...this.paidE2e], pixKey: this.pixKey, accountId: this.accountId, company: this.company };
  }

  restore(s: OpenPixSnapshot): void {
    for (const c of s.charges) this.index(c);
    for (const [k, v] of s.refunds) this.refunds.set(k, v);
    for (const [k, v] of s.paidE2e) this.paidE2e.set(k, v);
    this.pixKey = s.pixKey;
    this.accountId = s.accountId;
    this.company = s.company;
  }

  private index(c: Charge): void {
    this.charges.set(c.correlationID, c);
    this.byGlobalId.set(c.globalID, c.correlationID);
    this.byLinkId.set(c.paymentLinkID as string, c.correlationID);
  }

  byPaymentLink(id: string): Charge | undefined {
    return this.charges.get(this.byLinkId.get(id) ?? "");
  }

  handle(req: ApiRequest): ApiResponse {
    const seg = req.path.split("/").filter(Boolean); // ["api", "v1", "charge", id?, "refund"?]
    if (req.method === "GET" && req.path === "/api/v1/webhook/public-keys") {
      // unauthenticated, as the real one; keys rotate there, so receivers should fetch rather than hard-code
      return { status: 200, body: { public_keys: [{ key_identifier: "sandbox", is_current: true, key: this.publicKeyPem }] } };
    }
    if (header(req.headers, "authorization") !== this.appId) return err(401, "appID inválido");
    if (seg[0] !== "api" || seg[1] !== "v1" || seg[2] !== "charge") return err(404, `rota ${req.method} ${req.path} não encontrada`);
    if (req.method === "GET" && seg.length === 3) return this.list(req.query);
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
   * GET /api/v1/charge?start=&end=&status=&customer=&skip=&limit=: start/end (RFC 3339) bound createdAt,
   * newest first; answers {pageInfo {skip, limit, totalCount, hasPreviousPage, hasNextPage}, charges}.
   */
  private list(q: URLSearchParams): ApiResponse {
    const skip = q.has("skip") ? Number(q.get("skip")) : 0;
    const limit = q.has("limit") ? Number(q.get("limit")) : 10;
    if (!Number.isInteger(skip) || skip < 0) return err(400, "skip deve ser um inteiro não negativo");
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIST_LIMIT) return err(400, `limit deve ser um inteiro entre 1 e ${MAX_LIST_LIMIT}`);
    const start = q.has("start") ? Date.parse(q.get("start")!) : undefined;
    const end = q.has("end") ? Date.parse(q.get("end")!) : undefined;
    if (Number.isNaN(start) || Number.isNaN(end)) return err(400, "start e end devem ser datas RFC 3339");
    const status = q.get("status");
    if (status !== null && !["ACTIVE", "COMPLETED", "EXPIRED"].includes(status)) return err(400, "status deve ser ACTIVE, COMPLETED ou EXPIRED");
    const customer = q.get("customer");
    this.sweep();
    const all = [...this.charges.values()].filter((c) => {
      const t = Date.parse(c.createdAt as string);
      if (start !== undefined && t < start) return false;
      if (end !== undefined && t > end) return false;
      if (status !== null && c.status !== status) return false;
      if (customer !== null && (c.customer as Obj | null)?.correlationID !== customer) return false;
      return true;
    }).sort((a, b) => Date.parse(b.createdAt as string) - Date.parse(a.createdAt as string));
    const charges = all.slice(skip, skip + limit).map((c) => structuredClone(c));
    return { status: 200, body: { pageInfo: { skip, limit, totalCount: all.length, hasPreviousPage: skip > 0,
      hasNextPage: skip + limit < all.length }, charges } };
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
    const charge = this.newCharge({ correlationID: b.correlationID, value: b.value as number, comment: (b.comment as string) ?? "",
      customer: (b.customer as Obj) ?? null, additionalInfo: (b.additionalInfo as Obj[]) ?? [], now, expiresAt });
    return { status: 200, body: { charge: structuredClone(charge), correlationID: charge.correlationID, brCode: charge.brCode } };
  }

  private newCharge(o: { correlationID: string; value: number; comment: string; customer: Obj | null; additionalInfo: Obj[]; now: number; expiresAt: number }): Charge {
    const transactionID = hex(16);
    const paymentLinkID = randomUUID();
    const globalID = Buffer.from(`Charge:${hex(12)}`).toString("base64");
    const brCode = pixBrCode(o.value, this.pixKey, transactionID);
    const qrCodeImage = `${this.apiBase}/openpix/charge/brcode/image/${paymentLinkID}.png`;
    const charge: Charge = {
      customer: o.customer, value: o.value, comment: o.comment, identifier: transactionID, correlationID: o.correlationID,
      paymentLinkID, transactionID, status: "ACTIVE", additionalInfo: o.additionalInfo, discount: 0, valueWithDiscount: o.value,
      expiresDate: new Date(o.expiresAt).toISOString(), type: "DYNAMIC", createdAt: new Date(o.now).toISOString(),
      updatedAt: new Date(o.now).toISOString(), payer: null, ensureSameTaxID: false, brCode,
      expiresIn: Math.round((o.expiresAt - o.now) / 1000), pixKey: this.pixKey,
      paymentLinkUrl: `${this.apiBase}/pay/${paymentLinkID}`, qrCodeImage, globalID,
      paymentMethods: { pix: { method: "PIX_COB", txId: transactionID, value: o.value, status: "ACTIVE", brCode, transactionID,
        identifier: transactionID, qrCodeImage } },
    };
    this.index(charge);
    return charge;
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

  sweep(now = Date.now()): boolean {
    let changed = false;
    for (const c of this.charges.values()) {
      if (c.status !== "ACTIVE") continue;
      this.expireIfDue(c, now);
      changed ||= c.status !== "ACTIVE";
    }
    return changed;
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

  /**
   * The guest pays the PIX. `value` makes the charge complete for another amount than it asked for (the
   * mismatch our side must catch); `notify: false` completes it without a webhook.
   */
  pay(id: string, opts: { afterExpiry?: boolean; value?: number; notify?: boolean } = {}): Charge {
    const c = this.get(id);
    this.expireIfDue(c);
    if (c.status === "EXPIRED" && !opts.afterExpiry) throw new SandboxError(409, `charge ${id} expired at ${c.expiresDate}; pass afterExpiry to pay anyway`);
    if (c.status === "COMPLETED") throw new SandboxError(409, `charge ${id} is already COMPLETED`);
    if (opts.value !== undefined && !(Number.isInteger(opts.value) && opts.value > 0)) throw new SandboxError(400, "value must be a positive integer (centavos)");
    const pix = this.complete(c, opts.value);
    if (opts.notify !== false) this.notifyCharge("CHARGE_COMPLETED", { charge: structuredClone(c), pix, company: this.company, account: { environment: "TESTING" } });
    return structuredClone(c);
  }

  private complete(c: Charge, value?: number): Obj {
    const now = new Date().toISOString();
    if (value !== undefined) Object.assign(c, { value, valueWithDiscount: value });
    const fee = openpixFee(c.value);
    const payer = { name: "Hóspede Sandbox", taxID: { taxID: "12345678909", type: "BR:CPF" }, correlationID: randomUUID() };
    const endToEndId = `E54811417${now.replace(/\D/g, "").slice(0, 12)}${hex(6)}`;
    this.paidE2e.set(c.correlationID, endToEndId);
    Object.assign(c, { status: "COMPLETED", paidAt: now, updatedAt: now, fee, payer });
    Object.assign((c.paymentMethods as { pix: Obj }).pix, { status: "COMPLETED", fee, value: c.value });
    const { paymentMethods: _methods, ...charge } = structuredClone(c);
    return { customer: c.customer, payer, charge, value: c.value, time: now, endToEndId, transactionID: c.transactionID,
      infoPagador: "Reserve Connect sandbox", status: "CONFIRMED", type: "PAYMENT", createdAt: now,
      globalID: Buffer.from(`PixTransaction:${hex(12)}`).toString("base64") };
  }

  /** A PIX OpenPIX received and we were never told of: COMPLETED at once, no webhook. */
  unnotifiedCharge(o: { value: number; correlationID?: string; comment?: string }): Charge {
    if (!(Number.isInteger(o.value) && o.value > 0)) throw new SandboxError(400, "value must be a positive integer (centavos)");
    const correlationID = o.correlationID ?? randomUUID();
    if (this.charges.has(correlationID)) throw new SandboxError(409, `charge ${correlationID} already exists`);
    const now = Date.now();
    const c = this.newCharge({ correlationID, value: o.value, comment: o.comment ?? "", customer: null, additionalInfo: [], now,
      expiresAt: now + DEFAULT_EXPIRES_IN * 1000 });
    this.complete(c);
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
    const refund: Obj = { status: "IN_PROCESSING", value, correlationID: b.correlationID, endToEndId: `D54811417${now.replace(/\D/g, "").slice(0, 12)}${hex(6)}`, time: now,
      ...(b.comment ? { comment: b.comment } : {}) };
    list.push(refund);
    this.refunds.set(c.correlationID, list);
    const answer = structuredClone(refund);
    // the sandbox's PIX network confirms at once; the API answer still shows IN_PROCESSING, as the docs do
    refund.status = "CONFIRMED";
    const partial = (value as number) + refunded < c.value;
    const woovi = { psp: { id: "54811417", name: "WOOVI IP LTDA." }, account: { branch: "0001", account: "00000000000000000221", accountType: "TRAN" },
      holder: { taxID: { taxID: this.company.taxID, type: "BR:CNPJ" } } };
    const payerParty = { psp: { id: "18236120", name: "NU PAGAMENTOS - IP" }, account: { branch: "0001", account: "12345678", accountType: "TRAN" },
      holder: { name: (c.payer as Obj | null)?.name ?? null, taxID: (c.payer as Obj | null)?.taxID ?? null } };
    // as recorded: the refund and the original payment are named by their endToEndIds only (no charge, no correlationID)
    const refundTransaction = { value, time: now, endToEndId: refund.endToEndId, status: "CONFIRMED", type: "REFUND",
      debitParty: { pixKey: { pixKey: this.pixKey, type: "RANDOM" }, ...woovi }, creditParty: payerParty, createdAt: now, partial,
      globalID: Buffer.from(`PixTransaction:${hex(12)}`).toString("base64") };
    const originalTransaction = { payer: c.payer, value: c.value, time: c.paidAt, endToEndId: this.paidE2e.get(c.correlationID) ?? null, status: "CONFIRMED", type: "PAYMENT",
      debitParty: payerParty, creditParty: { pixKey: { pixKey: this.pixKey, type: "RANDOM" }, ...woovi }, createdAt: c.paidAt,
      globalID: Buffer.from(`PixTransaction:${hex(12)}`).toString("base64") };
    // refund events name the company and the Woovi account as the recorded one does
    this.notify("PIX_TRANSACTION_REFUND_SENT_CONFIRMED", { refundTransaction, originalTransaction,
      company: { id: this.company.id, name: this.company.name, nameFriendly: this.company.name, correlationID: this.accountId },
      account: { id: this.accountId.replace(/-/g, "").slice(0, 24), name: "Conta Sandbox", status: "OPEN", code: "54811417", branch: "0001", account: "00000000000000000221" } });
    // deprecated but still documented, and what older handlers listen to
    this.notifyCharge("TRANSACTION_REFUND_RECEIVED", { charge: structuredClone(c), pixQrCode: null,
      pix: { value, time: now, endToEndId: refund.endToEndId, status: "CONFIRMED", type: "REFUND", createdAt: now, partial,
        charge: { correlationID: c.correlationID } }, company: this.company, account: {} });
    return { status: 200, body: { refund: answer } };
  }

  private markExpired(c: Charge): void {
    Object.assign(c, { status: "EXPIRED", updatedAt: new Date().toISOString() });
    (c.paymentMethods as { pix: Obj }).pix.status = "EXPIRED";
    this.notifyCharge("CHARGE_EXPIRED", { charge: structuredClone(c), company: this.company, account: {} });
  }

  /** A charge event under the current naming, or without `event` when that switch is on. */
  private notifyCharge(name: string, rest: Obj): void {
    const event = `${this.naming === "woovi" ? "woovi" : "OPENPIX"}:${name}`;
    this.notify(event, rest, this.withoutEvent);
  }

  private notify(event: string, rest: Obj, omitEvent = false): void {
    const body = omitEvent ? rest : { event, ...rest };
    this.emitEvent({ provider: "openpix", id: `opx_evt_${hex(10)}`, type: event, url: this.webhookUrl(), body,
      raw: JSON.stringify(body), createdAt: new Date().toISOString() });
  }
}

/** x-webhook-signature: base64 RSA-SHA256 (PKCS#1 v1.5) over the exact bytes sent. */
export function signOpenPix(raw: string, privateKey: KeyObject): Record<string, string> {
  return { "x-webhook-signature": sign("sha256", Buffer.from(raw), privateKey).toString("base64") };
}
