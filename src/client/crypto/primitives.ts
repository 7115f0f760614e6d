/**
 * Cryptographic primitives for end-to-end encryption: X25519, Ed25519,
 * HKDF-SHA256, HMAC-SHA256, SHA-256/512 and AES-256-GCM, by default on
 * node:crypto as Bun provides it.
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
 * private scalars/seeds, 64-byte signatures).
 *
 * The operations go to the active CryptoProvider (provider.ts; node.ts is the
 * default), so that another implementation can be put in with `useCrypto()`
 * (issue 18: browsers). The checks that are the same for every
 * implementation are made here, once.
 */
import { nodeCrypto } from "./node.ts";
import { CryptoError, PROVIDER_OPS, type CryptoProvider, type KeyPair } from "./provider.ts";

export { CryptoError, type CryptoProvider, type KeyPair } from "./provider.ts";

let active: CryptoProvider = nodeCrypto;

/** Every implementation there is, for tests that hold each to the same known answers. */
export const CRYPTO_PROVIDERS: readonly CryptoProvider[] = [nodeCrypto];

/**
 * Makes `p` the implementation every E2E operation uses from now on (set it
 * before any key is made: keys are raw bytes, so they work across
 * implementations, but one process should not mix them). Returns the one it replaces.
 */
export function useCrypto(p: CryptoProvider): CryptoProvider {
  const missing = PROVIDER_OPS.filter((op) => typeof (p as unknown as Record<string, unknown>)[op] !== "function");
  if (missing.length) throw new TypeError(`useCrypto: ${p.name ?? "the provider"} lacks ${missing.join(", ")}; implement every operation of CryptoProvider (src/client/crypto/provider.ts)`);
  const was = active;
  active = p;
  return was;
}

/** The implementation in use. */
export function cryptoProvider(): CryptoProvider {
  return active;
}

// ---- X25519 -----------------------------------------------------------------

export function generateDH(): KeyPair {
  return active.generateDH();
}

/** The X25519 key pair of a 32-byte private scalar (clamping is X25519's own). */
export function dhFromPrivate(priv: Uint8Array): KeyPair {
  return active.dhFromPrivate(priv);
}

/**
 * X25519(priv, pub). Throws CryptoError for a public key that is not 32
 * bytes or whose result is all zero (a low-order point: RFC 7748 §6.1 says
 * to check, since such a "shared secret" is known to everyone).
 */
export function dh(priv: Uint8Array, pub: Uint8Array): Uint8Array {
  const out = active.dh(priv, pub);
  let acc = 0;
  for (let i = 0; i < out.length; i++) acc |= out[i]!;
  if (acc === 0) throw new CryptoError("bad_key", "X25519 with a low-order public key");
  return out;
}

// ---- Ed25519 ----------------------------------------------------------------

export function generateSigning(): KeyPair {
  return active.generateSigning();
}

/** The Ed25519 key pair of a 32-byte seed (RFC 8032 private key). */
export function signingFromSeed(seed: Uint8Array): KeyPair {
  return active.signingFromSeed(seed);
}

export function sign(priv: Uint8Array, msg: Uint8Array): Uint8Array {
  return active.sign(priv, msg);
}

/** Ed25519 verification; false (never a throw) for a malformed key or signature. */
export function verify(pub: Uint8Array, msg: Uint8Array, sig: Uint8Array): boolean {
  if (!(sig instanceof Uint8Array) || sig.length !== 64 || !(pub instanceof Uint8Array) || pub.length !== 32) return false;
  return active.verify(pub, msg, sig);
}

// ---- hashes, MAC, KDF ---------------------------------------------------------

export function sha256(...parts: Uint8Array[]): Uint8Array {
  return active.sha256(parts);
}

export function sha512(...parts: Uint8Array[]): Uint8Array {
  return active.sha512(parts);
}

export function hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array {
  return active.hmacSha256(key, data);
}

/** HKDF-SHA256 (RFC 5869). An empty salt means 32 zero bytes, as the RFC says. */
export function hkdf(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array | string, length: number): Uint8Array {
  return active.hkdf(ikm, salt, typeof info === "string" ? new TextEncoder().encode(info) : info, length);
}

// ---- AEAD -------------------------------------------------------------------

export const AEAD_TAG = 16;

/**
 * AES-256-GCM. Every key this module is given is used for exactly one
 * message (a ratchet message key, a sender-key message key), so a nonce
 * derived with the key is never reused under it.
 */
export function aeadEncrypt(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, ad: Uint8Array): Uint8Array {
  return active.aeadEncrypt(key, nonce, plaintext, ad);
}

/** The plaintext, or null when the tag does not verify (tampered, wrong key, wrong associated data). */
export function aeadDecrypt(key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array, ad: Uint8Array): Uint8Array | null {
  if (sealed.length < AEAD_TAG) return null;
  return active.aeadDecrypt(key, nonce, sealed, ad);
}

// ---- bytes ------------------------------------------------------------------

export function randomBytes(n: number): Uint8Array {
  return active.randomBytes(n);
}

/** Constant-time equality (for secrets and MACs); false for different lengths. */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && active.equalBytes(a, b);
}

export { concat } from "./bytes.ts";

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
