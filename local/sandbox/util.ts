import { randomBytes } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";
import { deflateSync } from "node:zlib";
import QRCode from "qrcode";

export interface ApiRequest {
  method: string;
  path: string; // without the provider prefix
  query: URLSearchParams;
  headers: IncomingHttpHeaders;
  rawBody: string;
}

export interface ApiResponse {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
  /** a page or an image, sent as is (body is then ignored); content-type from headers, else HTML */
  raw?: string | Buffer;
}

const ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/** Stripe-looking ids (`pi_3Q...`): prefix plus random base62. */
export function randomId(prefix: string, length = 24): string {
  const bytes = randomBytes(length);
  let out = "";
  for (let i = 0; i < length; i++) out += ALNUM[bytes[i]! % 62];
  return `${prefix}${out}`;
}

export function hex(bytes: number): string {
  return randomBytes(bytes).toString("hex");
}

export function unixSeconds(ms = Date.now()): number {
  return Math.floor(ms / 1000);
}

/** MercadoPago writes dates in the seller's local offset (Brazil, -03:00) with milliseconds. */
export function brDate(ms: number): string {
  return new Date(ms - 3 * 3600_000).toISOString().replace("Z", "-03:00");
}

export function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * Decodes Stripe's form encoding (`metadata[k]=v`, `expand[0]=x`, `expand[]=x`) into nested objects
 * and arrays, the inverse of what stripe-node's stringifyRequestData produces.
 */
export function parseStripeForm(input: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [rawKey, value] of new URLSearchParams(input)) {
    const m = /^([^[\]]+)((?:\[[^\]]*\])*)$/.exec(rawKey);
    const path = m ? [m[1]!, ...[...m[2]!.matchAll(/\[([^\]]*)\]/g)].map((x) => x[1]!)] : [rawKey];
    let cur: Record<string, unknown> | unknown[] = out;
    for (let i = 0; i < path.length; i++) {
      const seg = path[i]!;
      const last = i === path.length - 1;
      const key: string | number = Array.isArray(cur) ? (seg === "" ? cur.length : Number(seg)) : seg;
      const container = cur as Record<string | number, unknown>;
      if (last) {
        container[key] = value;
      } else {
        if (container[key] === undefined) container[key] = /^\d*$/.test(path[i + 1]!) ? [] : {};
        cur = container[key] as Record<string, unknown> | unknown[];
      }
    }
  }
  return out;
}

/** Arrays written with indices can come out sparse; Stripe treats them as lists. */
export function asList(v: unknown): string[] {
  if (v === undefined) return [];
  if (Array.isArray(v)) return v.filter((x) => x !== undefined).map(String);
  if (typeof v === "object" && v !== null) return Object.values(v).map(String);
  return [String(v)];
}

export function parseJson(raw: string): { ok: true; value: unknown } | { ok: false } {
  if (raw.trim() === "") return { ok: true, value: {} };
  try {
    return { ok: true, value: JSON.parse(raw) };
  } catch {
    return { ok: false };
  }
}

function crc16(payload: string): string {
  let crc = 0xffff;
  for (const ch of Buffer.from(payload, "utf8")) {
    crc ^= ch << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc.toString(16).toUpperCase().padStart(4, "0");
}

function tlv(id: string, value: string): string {
  return `${id}${String(value.length).padStart(2, "0")}${value}`;
}

/** A well-formed PIX "copia e cola" (EMV BR Code with CRC16), so apps that parse it do not choke. */
export function pixBrCode(centavos: number, pixKey: string, txid: string): string {
  const body =
    tlv("00", "01") +
    tlv("26", tlv("00", "br.gov.bcb.pix") + tlv("01", pixKey)) +
    tlv("52", "0000") +
    tlv("53", "986") +
    tlv("54", (centavos / 100).toFixed(2)) +
    tlv("58", "BR") +
    tlv("59", "RESERVE CONNECT") +
    tlv("60", "RIO DE JANEIRO") +
    tlv("62", tlv("05", txid.slice(0, 25)));
  const withCrcTag = `${body}6304`;
  return withCrcTag + crc16(withCrcTag);
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function pngChunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
  let crc = 0xffffffff;
  for (const b of body) crc = CRC_TABLE[(crc ^ b) & 0xff]! ^ (crc >>> 8);
  const tail = Buffer.alloc(4);
  tail.writeUInt32BE((crc ^ 0xffffffff) >>> 0);
  return Buffer.concat([len, body, tail]);
}

/**
 * The QR code of `text` as a PNG (8-bit grayscale, `scale` pixels a module, a 4-module quiet zone), made
 * synchronously from the qrcode library's module matrix: what a bank app scans from the guest's screen.
 */
export function qrPng(text: string, scale = 6): Buffer {
  const { modules } = QRCode.create(text, { errorCorrectionLevel: "M" });
  const margin = 4;
  const side = (modules.size + 2 * margin) * scale;
  const rows = Buffer.alloc((side + 1) * side, 0xff);
  for (let y = 0; y < side; y++) {
    rows[y * (side + 1)] = 0; // filter: none
    const my = Math.floor(y / scale) - margin;
    for (let x = 0; x < side; x++) {
      const mx = Math.floor(x / scale) - margin;
      const dark = my >= 0 && mx >= 0 && my < modules.size && mx < modules.size && modules.get(my, mx);
      if (dark) rows[y * (side + 1) + 1 + x] = 0;
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(side, 0);
  ihdr.writeUInt32BE(side, 4);
  ihdr.set([8, 0, 0, 0, 0], 8); // 8-bit, grayscale, deflate, no filter, no interlace
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), pngChunk("IHDR", ihdr),
    pngChunk("IDAT", deflateSync(rows)), pngChunk("IEND", Buffer.alloc(0))]);
}

/** Base64 QR PNGs by text: a payment's code is drawn once however often it is read. */
const qrCache = new Map<string, string>();
export function qrPngBase64(text: string): string {
  let v = qrCache.get(text);
  if (v === undefined) {
    v = qrPng(text).toString("base64");
    if (qrCache.size > 5_000) qrCache.clear();
    qrCache.set(text, v);
  }
  return v;
}

export function escapeHtml(s: unknown): string {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
