// Helpers for webhook signatures; the same code runs in Deno (functions) and Node (tests).
// HMAC and SHA-256 go through node:crypto, which computes them on the spot: WebCrypto runs each call as
// an async op on another thread, and importKey + sign for every webhook cost the edge a tenth of its CPU
// (syscalls and thread hand-offs) under load. RSA stays on WebCrypto (OpenPIX: one key, imported once).
import { createHash, createHmac } from "node:crypto";

const enc = new TextEncoder();

export function fromBase64(s: string): Uint8Array<ArrayBuffer> {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** Compares without stopping at the first difference, so the time taken says nothing about the secret. */
export function timingSafeEqual(a: string, b: string): boolean {
  const x = enc.encode(a);
  const y = enc.encode(b);
  let diff = x.length ^ y.length;
  for (let i = 0; i < Math.max(x.length, y.length); i++) diff |= (x[i] ?? 0) ^ (y[i] ?? 0);
  return diff === 0;
}

export function hmacSha256Hex(secret: string, message: string): string {
  return createHmac("sha256", secret).update(message, "utf8").digest("hex");
}

export function sha256Hex(message: string): string {
  return createHash("sha256").update(message, "utf8").digest("hex");
}

export function sha256Bytes(data: Uint8Array): Uint8Array<ArrayBuffer> {
  return new Uint8Array(createHash("sha256").update(data).digest());
}

/** An RSA public key given as PEM, or as base64 of the PEM (how OpenPIX publishes it). */
export async function importRsaPublicKey(keyText: string): Promise<CryptoKey> {
  const pem = keyText.includes("-----BEGIN") ? keyText : new TextDecoder().decode(fromBase64(keyText.trim()));
  const body = pem.replace(/-----(BEGIN|END) PUBLIC KEY-----/g, "").replace(/\s+/g, "");
  return crypto.subtle.importKey("spki", fromBase64(body), { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, false, ["verify"]);
}

/** RSA-SHA256 (PKCS#1 v1.5) over the raw body, signature in base64. */
export async function verifyRsaSha256(key: CryptoKey, signatureB64: string, body: string): Promise<boolean> {
  let sig: Uint8Array<ArrayBuffer>;
  try {
    sig = fromBase64(signatureB64.trim());
  } catch {
    return false;
  }
  return crypto.subtle.verify("RSASSA-PKCS1-v1_5", key, sig, enc.encode(body));
}
