/**
 * The synchronous form of the crypto operations, as node:crypto offers them
 * (node.ts), and the shared shapes (KeyPair, CryptoError). The E2E code runs
 * on the asynchronous form (async.ts: WebCrypto is asynchronous only);
 * `asyncOf` lifts a provider of this interface onto it.
 *
 * What an implementation must do (test/client/crypto-vectors.ts holds every
 * implementation to the same known answers, in Bun and in Chromium):
 * - keys are raw bytes: 32-byte X25519 and Ed25519 public keys, 32-byte
 *   X25519 private scalars and Ed25519 seeds, 64-byte signatures;
 * - a malformed key from the other side throws CryptoError("bad_key"), and
 *   `verify` returns false for anything malformed rather than throwing;
 * - `aeadDecrypt` returns null when the tag does not verify.
 * Checks that do not depend on the implementation (the low-order X25519
 * result, lengths) are made once, in primitives.ts.
 */

/** A key pair as raw bytes: `pub` 32 bytes, `priv` the 32-byte X25519 scalar or Ed25519 seed. */
export interface KeyPair {
  pub: Uint8Array;
  priv: Uint8Array;
}

/** DER prefixes of raw private keys in PKCS#8 (RFC 8410): the prefix, then the 32 key bytes. */
export const X25519_PKCS8_PREFIX = Uint8Array.of(0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20);
export const ED25519_PKCS8_PREFIX = Uint8Array.of(0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20);

/** A malformed or unusable key from the other side (bad length, low-order point). Callers turn it into `{ok:false}`. */
export class CryptoError extends Error {
  constructor(readonly reason: string, message: string) {
    super(message);
    this.name = "CryptoError";
  }
}

export interface CryptoProvider {
  /** For messages and test names ("node:crypto"). */
  readonly name: string;
  // X25519
  generateDH(): KeyPair;
  /** The key pair of a 32-byte private scalar (clamping is X25519's own). */
  dhFromPrivate(priv: Uint8Array): KeyPair;
  /** X25519(priv, pub), unchecked for a low-order result (primitives.ts checks). */
  dh(priv: Uint8Array, pub: Uint8Array): Uint8Array;
  // Ed25519
  generateSigning(): KeyPair;
  /** The key pair of a 32-byte seed (RFC 8032 private key). */
  signingFromSeed(seed: Uint8Array): KeyPair;
  sign(priv: Uint8Array, msg: Uint8Array): Uint8Array;
  /** Called with a 32-byte key and a 64-byte signature only; false for an invalid key or signature. */
  verify(pub: Uint8Array, msg: Uint8Array, sig: Uint8Array): boolean;
  // Hashes, MAC, KDF
  sha256(parts: readonly Uint8Array[]): Uint8Array;
  sha512(parts: readonly Uint8Array[]): Uint8Array;
  hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array;
  /** HKDF-SHA256 (RFC 5869); an empty salt means 32 zero bytes, as the RFC says. */
  hkdf(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Uint8Array;
  // AES-256-GCM with a 16-byte tag appended
  aeadEncrypt(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, ad: Uint8Array): Uint8Array;
  /** Called with at least a tag's worth of bytes; null when the tag does not verify. */
  aeadDecrypt(key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array, ad: Uint8Array): Uint8Array | null;
  // AES-256-CBC with PKCS7 padding: the attachment scheme's cipher (media-format.ts), with HMAC-SHA256 over it
  aesCbcEncrypt(key: Uint8Array, iv: Uint8Array, plaintext: Uint8Array): Uint8Array;
  /** null when the padding is not PKCS7 (authenticate first: the scheme checks its HMAC before decrypting). */
  aesCbcDecrypt(key: Uint8Array, iv: Uint8Array, ciphertext: Uint8Array): Uint8Array | null;
  // Bytes
  randomBytes(n: number): Uint8Array;
  /** Constant-time equality of two byte strings of the same length. */
  equalBytes(a: Uint8Array, b: Uint8Array): boolean;
}

/** The operations every implementation has (what `useCrypto` checks). */
export const PROVIDER_OPS = [
  "generateDH", "dhFromPrivate", "dh", "generateSigning", "signingFromSeed", "sign", "verify",
  "sha256", "sha512", "hmacSha256", "hkdf", "aeadEncrypt", "aeadDecrypt", "aesCbcEncrypt", "aesCbcDecrypt", "randomBytes", "equalBytes",
] as const satisfies readonly Exclude<keyof CryptoProvider, "name">[];
// Every operation of the interface is listed: a new one left out of PROVIDER_OPS fails to compile here.
const listsAll: [Exclude<keyof CryptoProvider, "name" | (typeof PROVIDER_OPS)[number]>] extends [never] ? true : never = true;
void listsAll;
