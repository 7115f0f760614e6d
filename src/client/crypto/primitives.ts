/**
 * Cryptographic primitives for end-to-end encryption, on node:crypto as Bun
 * provides it: X25519, Ed25519, HKDF-SHA256, HMAC-SHA256, SHA-256/512 and
 * AES-256-GCM.
 *
 * Why node:crypto and not WebCrypto (crypto.subtle): both work in Bun 1.4.5,
 * but node:crypto is synchronous and faster for what a ratchet does many
 * times per message (measured on one core: X25519 agreement 26k/s vs 20k/s,
 * HMAC-SHA256 1.2M/s vs 110k/s, AES-256-GCM of 100 B 790k/s vs 100k/s; see
 * docs/E2E.md). Synchronous also means a message is decrypted and the new
 * ratchet state saved before the delivery is acknowledged, with no await in
 * between.
 *
 * Keys travel as raw bytes (32-byte X25519 and Ed25519 public keys and
 * private scalars/seeds, 64-byte signatures). node:crypto wants KeyObjects;
 * the conversion costs an ASN.1 parse, so KeyObjects are cached per byte
 * array (WeakMap: they go when the bytes go).
 */
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  randomBytes as nodeRandomBytes,
  sign as nodeSign,
  timingSafeEqual,
  verify as nodeVerify,
  type KeyObject,
} from "node:crypto";

/** A key pair as raw bytes: `pub` 32 bytes, `priv` the 32-byte X25519 scalar or Ed25519 seed. */
export interface KeyPair {
  pub: Uint8Array;
  priv: Uint8Array;
}

/** A malformed or unusable key from the other side (bad length, low-order point). Callers turn it into `{ok:false}`. */
export class CryptoError extends Error {
  constructor(readonly reason: string, message: string) {
    super(message);
    this.name = "CryptoError";
  }
}

const hex = (s: string) => new Uint8Array(Buffer.from(s, "hex"));
// DER wrappers of raw keys (RFC 8410): fixed prefixes followed by the 32 key bytes.
const X25519_PKCS8 = hex("302e020100300506032b656e04220420");
const X25519_SPKI = hex("302a300506032b656e032100");
const ED25519_PKCS8 = hex("302e020100300506032b657004220420");
const ED25519_SPKI = hex("302a300506032b6570032100");

const keyCache = new WeakMap<Uint8Array, KeyObject>();

function wrap(prefix: Uint8Array, raw: Uint8Array): Buffer {
  const b = Buffer.allocUnsafe(prefix.length + 32);
  b.set(prefix, 0);
  b.set(raw, prefix.length);
  return b;
}

function privateKeyObject(raw: Uint8Array, prefix: Uint8Array): KeyObject {
  let k = keyCache.get(raw);
  if (!k) {
    if (raw.length !== 32) throw new CryptoError("bad_key", `private key must be 32 bytes, got ${raw.length}`);
    k = createPrivateKey({ key: wrap(prefix, raw), format: "der", type: "pkcs8" });
    keyCache.set(raw, k);
  }
  return k;
}

function publicKeyObject(raw: Uint8Array, prefix: Uint8Array): KeyObject {
  let k = keyCache.get(raw);
  if (!k) {
    if (raw.length !== 32) throw new CryptoError("bad_key", `public key must be 32 bytes, got ${raw.length}`);
    try {
      k = createPublicKey({ key: wrap(prefix, raw), format: "der", type: "spki" });
    } catch (e) {
      throw new CryptoError("bad_key", `not a valid public key: ${(e as Error).message}`);
    }
    keyCache.set(raw, k);
  }
  return k;
}

function rawFromJwk(k: KeyObject, field: "x" | "d"): Uint8Array {
  const jwk = k.export({ format: "jwk" }) as { x: string; d?: string };
  return new Uint8Array(Buffer.from(field === "x" ? jwk.x : jwk.d!, "base64url"));
}

function pairFrom(publicKey: KeyObject, privateKey: KeyObject): KeyPair {
  const jwk = privateKey.export({ format: "jwk" }) as { x: string; d: string };
  const kp = { pub: new Uint8Array(Buffer.from(jwk.x, "base64url")), priv: new Uint8Array(Buffer.from(jwk.d, "base64url")) };
  keyCache.set(kp.priv, privateKey);
  keyCache.set(kp.pub, publicKey);
  return kp;
}

// ---- X25519 -----------------------------------------------------------------

export function generateDH(): KeyPair {
  const { publicKey, privateKey } = generateKeyPairSync("x25519");
  return pairFrom(publicKey, privateKey);
}

/** The X25519 key pair of a 32-byte private scalar (clamping is X25519's own). */
export function dhFromPrivate(priv: Uint8Array): KeyPair {
  const k = privateKeyObject(priv, X25519_PKCS8);
  return { pub: rawFromJwk(createPublicKey(k), "x"), priv };
}

/**
 * X25519(priv, pub). Throws CryptoError for a public key that is not 32
 * bytes or whose result is all zero (a low-order point: RFC 7748 §6.1 says
 * to check, since such a "shared secret" is known to everyone).
 */
export function dh(priv: Uint8Array, pub: Uint8Array): Uint8Array {
  let out: Buffer;
  try {
    out = diffieHellman({ privateKey: privateKeyObject(priv, X25519_PKCS8), publicKey: publicKeyObject(pub, X25519_SPKI) });
  } catch (e) {
    if (e instanceof CryptoError) throw e;
    throw new CryptoError("bad_key", `X25519 failed: ${(e as Error).message}`);
  }
  let acc = 0;
  for (let i = 0; i < out.length; i++) acc |= out[i]!;
  if (acc === 0) throw new CryptoError("bad_key", "X25519 with a low-order public key");
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

// ---- Ed25519 ----------------------------------------------------------------

export function generateSigning(): KeyPair {
  const { publicKey, privateKey } = generateKeyPairSync("ed25519");
  return pairFrom(publicKey, privateKey);
}

/** The Ed25519 key pair of a 32-byte seed (RFC 8032 private key). */
export function signingFromSeed(seed: Uint8Array): KeyPair {
  const k = privateKeyObject(seed, ED25519_PKCS8);
  return { pub: rawFromJwk(createPublicKey(k), "x"), priv: seed };
}

export function sign(priv: Uint8Array, msg: Uint8Array): Uint8Array {
  return new Uint8Array(nodeSign(null, msg, privateKeyObject(priv, ED25519_PKCS8)));
}

/** Ed25519 verification; false (never a throw) for a malformed key or signature. */
export function verify(pub: Uint8Array, msg: Uint8Array, sig: Uint8Array): boolean {
  if (!(sig instanceof Uint8Array) || sig.length !== 64 || !(pub instanceof Uint8Array) || pub.length !== 32) return false;
  try {
    return nodeVerify(null, msg, publicKeyObject(pub, ED25519_SPKI), sig);
  } catch {
    return false;
  }
}

// ---- hashes, MAC, KDF ---------------------------------------------------------

const asU8 = (b: Buffer): Uint8Array => new Uint8Array(b.buffer, b.byteOffset, b.length);

export function sha256(...parts: Uint8Array[]): Uint8Array {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return asU8(h.digest());
}

export function sha512(...parts: Uint8Array[]): Uint8Array {
  const h = createHash("sha512");
  for (const p of parts) h.update(p);
  return asU8(h.digest());
}

export function hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array {
  return asU8(createHmac("sha256", key).update(data).digest());
}

/** HKDF-SHA256 (RFC 5869). An empty salt means 32 zero bytes, as the RFC says. */
export function hkdf(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array | string, length: number): Uint8Array {
  const i = typeof info === "string" ? new TextEncoder().encode(info) : info;
  return new Uint8Array(hkdfSync("sha256", ikm, salt, i, length));
}

// ---- AEAD -------------------------------------------------------------------

export const AEAD_TAG = 16;

/**
 * AES-256-GCM. Every key this module is given is used for exactly one
 * message (a ratchet message key, a sender-key message key), so a nonce
 * derived with the key is never reused under it.
 */
export function aeadEncrypt(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, ad: Uint8Array): Uint8Array {
  const c = createCipheriv("aes-256-gcm", key, nonce);
  c.setAAD(ad);
  const head = c.update(plaintext);
  const tail = c.final();
  const tag = c.getAuthTag();
  const out = new Uint8Array(head.length + tail.length + AEAD_TAG);
  out.set(head, 0);
  out.set(tail, head.length);
  out.set(tag, head.length + tail.length);
  return out;
}

/** The plaintext, or null when the tag does not verify (tampered, wrong key, wrong associated data). */
export function aeadDecrypt(key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array, ad: Uint8Array): Uint8Array | null {
  if (sealed.length < AEAD_TAG) return null;
  try {
    const d = createDecipheriv("aes-256-gcm", key, nonce);
    d.setAAD(ad);
    d.setAuthTag(sealed.subarray(sealed.length - AEAD_TAG));
    const head = d.update(sealed.subarray(0, sealed.length - AEAD_TAG));
    const tail = d.final();
    if (tail.length === 0) return asU8(head);
    const out = new Uint8Array(head.length + tail.length);
    out.set(head, 0);
    out.set(tail, head.length);
    return out;
  } catch {
    return null;
  }
}

// ---- bytes ------------------------------------------------------------------

export function randomBytes(n: number): Uint8Array {
  return asU8(nodeRandomBytes(n));
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Constant-time equality (for secrets and MACs); false for different lengths. */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Unsigned lexicographic order of byte strings. */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

export function toHex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.length).toString("hex");
}

export function u32be(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n >>> 0);
  return b;
}

export function utf8(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}
