/**
 * The CryptoProvider's operations as promises (issue 18): what WebCrypto can
 * offer, since `crypto.subtle` is asynchronous only. webcrypto.ts implements
 * it for browsers; `asyncOf` adapts the synchronous node:crypto provider, so
 * code written against this interface runs on both.
 *
 * The X3DH / ratchet / Sender Keys / safety-number code runs on it
 * (primitives.ts `e2eCrypto`); known answers in Bun and in Chromium:
 * test/client/crypto-async.test.ts.
 *
 * The contract is provider.ts's: raw-byte keys, CryptoError("bad_key") for a
 * malformed key from the other side, `verify` false rather than a throw,
 * `aeadDecrypt` null for a tag that does not verify. Random bytes and
 * constant-time equality stay synchronous (getRandomValues is).
 */
import type { CryptoProvider, KeyPair } from "./provider.ts";

export interface AsyncCryptoProvider {
  readonly name: string;
  generateDH(): Promise<KeyPair>;
  dhFromPrivate(priv: Uint8Array): Promise<KeyPair>;
  /** X25519(priv, pub); like provider.ts, unchecked for a low-order result where the implementation allows it. */
  dh(priv: Uint8Array, pub: Uint8Array): Promise<Uint8Array>;
  generateSigning(): Promise<KeyPair>;
  signingFromSeed(seed: Uint8Array): Promise<KeyPair>;
  sign(priv: Uint8Array, msg: Uint8Array): Promise<Uint8Array>;
  verify(pub: Uint8Array, msg: Uint8Array, sig: Uint8Array): Promise<boolean>;
  sha256(parts: readonly Uint8Array[]): Promise<Uint8Array>;
  sha512(parts: readonly Uint8Array[]): Promise<Uint8Array>;
  hmacSha256(key: Uint8Array, data: Uint8Array): Promise<Uint8Array>;
  hkdf(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, length: number): Promise<Uint8Array>;
  aeadEncrypt(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, ad: Uint8Array): Promise<Uint8Array>;
  aeadDecrypt(key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array, ad: Uint8Array): Promise<Uint8Array | null>;
  aesCbcEncrypt(key: Uint8Array, iv: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array>;
  aesCbcDecrypt(key: Uint8Array, iv: Uint8Array, ciphertext: Uint8Array): Promise<Uint8Array | null>;
  randomBytes(n: number): Uint8Array;
  equalBytes(a: Uint8Array, b: Uint8Array): boolean;
}

/** A synchronous provider (node:crypto) behind the asynchronous interface; a throw becomes a rejection. */
export function asyncOf(p: CryptoProvider): AsyncCryptoProvider {
  const lift =
    <A extends unknown[], R>(f: (...a: A) => R) =>
    async (...a: A): Promise<R> =>
      f.apply(p, a);
  return {
    name: `${p.name} (async)`,
    generateDH: lift(p.generateDH),
    dhFromPrivate: lift(p.dhFromPrivate),
    dh: lift(p.dh),
    generateSigning: lift(p.generateSigning),
    signingFromSeed: lift(p.signingFromSeed),
    sign: lift(p.sign),
    verify: lift(p.verify),
    sha256: lift(p.sha256),
    sha512: lift(p.sha512),
    hmacSha256: lift(p.hmacSha256),
    hkdf: lift(p.hkdf),
    aeadEncrypt: lift(p.aeadEncrypt),
    aeadDecrypt: lift(p.aeadDecrypt),
    aesCbcEncrypt: lift(p.aesCbcEncrypt),
    aesCbcDecrypt: lift(p.aesCbcDecrypt),
    randomBytes: (n) => p.randomBytes(n),
    equalBytes: (a, b) => p.equalBytes(a, b),
  };
}
