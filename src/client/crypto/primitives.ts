/**
 * Cryptographic primitives for end-to-end encryption: X25519, Ed25519,
 * HKDF-SHA256, HMAC-SHA256, SHA-256/512 and AES-256-GCM, over an
 * AsyncCryptoProvider (async.ts): node:crypto in Bun and Node (node.ts
 * through `asyncOf`), WebCrypto in browsers (webcrypto.ts). Every E2E
 * operation awaits, since `crypto.subtle` is asynchronous only (issue 18).
 *
 * `e2eCrypto(provider)` wraps a provider with the checks that are the same
 * for every implementation (the low-order X25519 result, lengths, UTF-8
 * info strings), once. Each E2EDevice holds one: two devices in one process
 * may use different implementations (the interop tests do).
 *
 * Cost of being asynchronous (measured on node:crypto, one core, Bun 1.4.5):
 * a promise per operation, a few per ratchet message, against the 40 µs an
 * X25519 agreement takes; node:crypto stays the default outside browsers for
 * its speed (X25519 26k/s vs WebCrypto 20k/s, HMAC-SHA256 1.2M/s vs 110k/s,
 * AES-256-GCM of 100 B 790k/s vs 100k/s; docs/E2E.md).
 *
 * Keys travel as raw bytes (32-byte X25519 and Ed25519 public keys and
 * private scalars/seeds, 64-byte signatures). No node:* import here: this
 * file bundles for the browser.
 */
import type { AsyncCryptoProvider } from "./async.ts";
import { CryptoError, PROVIDER_OPS, type KeyPair } from "./provider.ts";
import { concat } from "./bytes.ts";

export { CryptoError, type KeyPair } from "./provider.ts";
export type { AsyncCryptoProvider } from "./async.ts";
export { concat } from "./bytes.ts";

export const AEAD_TAG = 16;

const te = new TextEncoder();

/**
 * The E2E code's view of a provider: its operations with the shared checks (below), hashes over parts, and HKDF
 * taking its info as a string too.
 */
export interface E2ECrypto extends Omit<AsyncCryptoProvider, "name" | "sha256" | "sha512" | "hkdf"> {
  readonly provider: AsyncCryptoProvider;
  /**
   * X25519(priv, pub). Rejects with CryptoError for a public key that is not
   * 32 bytes or whose result is all zero (a low-order point: RFC 7748 §6.1
   * says to check, since such a "shared secret" is known to everyone).
   */
  dh(priv: Uint8Array, pub: Uint8Array): Promise<Uint8Array>;
  sha256(...parts: Uint8Array[]): Promise<Uint8Array>;
  sha512(...parts: Uint8Array[]): Promise<Uint8Array>;
  /** HKDF-SHA256 (RFC 5869). An empty salt means 32 zero bytes, as the RFC says. */
  hkdf(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array | string, length: number): Promise<Uint8Array>;
  // AES-256-GCM: every key the E2E code gives is used for exactly one message (a ratchet message key, a sender-key
  // message key), so a nonce derived with the key is never reused under it. aeadDecrypt: null when the tag does not
  // verify; verify: false (never a rejection) for a malformed key or signature; equalBytes: false for other lengths.
}

const wrapped = new WeakMap<AsyncCryptoProvider, E2ECrypto>();

/** The E2ECrypto of `p` (one per provider). Throws, naming them, when `p` lacks operations. */
export function e2eCrypto(p: AsyncCryptoProvider): E2ECrypto {
  let cx = wrapped.get(p);
  if (cx) return cx;
  const missing = PROVIDER_OPS.filter((op) => typeof (p as unknown as Record<string, unknown>)[op] !== "function");
  if (missing.length) throw new TypeError(`${p.name ?? "the provider"} lacks ${missing.join(", ")}; implement every operation of AsyncCryptoProvider (src/client/crypto/async.ts)`);
  cx = {
    provider: p,
    generateDH: () => p.generateDH(),
    dhFromPrivate: (priv) => p.dhFromPrivate(priv),
    async dh(priv, pub) {
      if (!(pub instanceof Uint8Array) || pub.length !== 32) throw new CryptoError("bad_key", `public key must be 32 bytes, got ${pub?.length}`);
      const out = await p.dh(priv, pub);
      let acc = 0;
      for (let i = 0; i < out.length; i++) acc |= out[i]!;
      if (acc === 0) throw new CryptoError("bad_key", "X25519 with a low-order public key");
      return out;
    },
    generateSigning: () => p.generateSigning(),
    signingFromSeed: (seed) => p.signingFromSeed(seed),
    sign: (priv, msg) => p.sign(priv, msg),
    async verify(pub, msg, sig) {
      if (!(sig instanceof Uint8Array) || sig.length !== 64 || !(pub instanceof Uint8Array) || pub.length !== 32) return false;
      return p.verify(pub, msg, sig);
    },
    sha256: (...parts) => p.sha256(parts),
    sha512: (...parts) => p.sha512(parts),
    hmacSha256: (key, data) => p.hmacSha256(key, data),
    hkdf: (ikm, salt, info, length) => p.hkdf(ikm, salt, typeof info === "string" ? te.encode(info) : info, length),
    aeadEncrypt: (key, nonce, plaintext, ad) => p.aeadEncrypt(key, nonce, plaintext, ad),
    async aeadDecrypt(key, nonce, sealed, ad) {
      if (sealed.length < AEAD_TAG) return null;
      return p.aeadDecrypt(key, nonce, sealed, ad);
    },
    aesCbcEncrypt: (key, iv, plaintext) => p.aesCbcEncrypt(key, iv, plaintext),
    async aesCbcDecrypt(key, iv, ciphertext) {
      if (ciphertext.length === 0 || ciphertext.length % 16 !== 0) return null;
      return p.aesCbcDecrypt(key, iv, ciphertext);
    },
    randomBytes: (n) => p.randomBytes(n),
    equalBytes: (a, b) => a.length === b.length && p.equalBytes(a, b),
  };
  wrapped.set(p, cx);
  return cx;
}

// ---- bytes (no crypto) -------------------------------------------------------

/** Unsigned lexicographic order of byte strings. */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

/** Equality that is not constant-time: for public values only (keys, ids). */
export function samePublic(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/** Lower-case hex (no Buffer: bundles for the browser). */
export function toHex(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i++) s += HEX[b[i]!];
  return s;
}

export function u32be(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n >>> 0);
  return b;
}

export function utf8(s: string): Uint8Array {
  return te.encode(s);
}
