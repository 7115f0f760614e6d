/**
 * The CryptoProvider on node:crypto as Bun provides it: X25519, Ed25519,
 * HKDF-SHA256, HMAC-SHA256, SHA-256/512 and AES-256-GCM.
 *
 * Keys travel as raw bytes; node:crypto wants KeyObjects, and the conversion
 * costs an ASN.1 parse, so KeyObjects are cached per byte array (WeakMap:
 * they go when the bytes go).
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
import { CryptoError, ED25519_PKCS8_PREFIX, X25519_PKCS8_PREFIX, type CryptoProvider, type KeyPair } from "./provider.ts";

const hex = (s: string) => new Uint8Array(Buffer.from(s, "hex"));
// DER wrappers of raw keys (RFC 8410): fixed prefixes followed by the 32 key bytes.
const X25519_PKCS8 = X25519_PKCS8_PREFIX;
const X25519_SPKI = hex("302a300506032b656e032100");
const ED25519_PKCS8 = ED25519_PKCS8_PREFIX;
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

const asU8 = (b: Buffer): Uint8Array => new Uint8Array(b.buffer, b.byteOffset, b.length);

function digest(alg: "sha256" | "sha512", parts: readonly Uint8Array[]): Uint8Array {
  const h = createHash(alg);
  for (const p of parts) h.update(p);
  return asU8(h.digest());
}

export const nodeCrypto: CryptoProvider = {
  name: "node:crypto",

  generateDH() {
    const { publicKey, privateKey } = generateKeyPairSync("x25519");
    return pairFrom(publicKey, privateKey);
  },

  dhFromPrivate(priv) {
    const k = privateKeyObject(priv, X25519_PKCS8);
    return { pub: rawFromJwk(createPublicKey(k), "x"), priv };
  },

  dh(priv, pub) {
    try {
      return asU8(diffieHellman({ privateKey: privateKeyObject(priv, X25519_PKCS8), publicKey: publicKeyObject(pub, X25519_SPKI) }));
    } catch (e) {
      if (e instanceof CryptoError) throw e;
      throw new CryptoError("bad_key", `X25519 failed: ${(e as Error).message}`);
    }
  },

  generateSigning() {
    const { publicKey, privateKey } = generateKeyPairSync("ed25519");
    return pairFrom(publicKey, privateKey);
  },

  signingFromSeed(seed) {
    const k = privateKeyObject(seed, ED25519_PKCS8);
    return { pub: rawFromJwk(createPublicKey(k), "x"), priv: seed };
  },

  sign(priv, msg) {
    return new Uint8Array(nodeSign(null, msg, privateKeyObject(priv, ED25519_PKCS8)));
  },

  verify(pub, msg, sig) {
    try {
      return nodeVerify(null, msg, publicKeyObject(pub, ED25519_SPKI), sig);
    } catch {
      return false;
    }
  },

  sha256: (parts) => digest("sha256", parts),
  sha512: (parts) => digest("sha512", parts),

  hmacSha256(key, data) {
    return asU8(createHmac("sha256", key).update(data).digest());
  },

  hkdf(ikm, salt, info, length) {
    return new Uint8Array(hkdfSync("sha256", ikm, salt, info, length));
  },

  aeadEncrypt(key, nonce, plaintext, ad) {
    const c = createCipheriv("aes-256-gcm", key, nonce);
    c.setAAD(ad);
    const head = c.update(plaintext);
    const tail = c.final();
    const tag = c.getAuthTag();
    const out = new Uint8Array(head.length + tail.length + tag.length);
    out.set(head, 0);
    out.set(tail, head.length);
    out.set(tag, head.length + tail.length);
    return out;
  },

  aeadDecrypt(key, nonce, sealed, ad) {
    const TAG = 16;
    try {
      const d = createDecipheriv("aes-256-gcm", key, nonce);
      d.setAAD(ad);
      d.setAuthTag(sealed.subarray(sealed.length - TAG));
      const head = d.update(sealed.subarray(0, sealed.length - TAG));
      const tail = d.final();
      if (tail.length === 0) return asU8(head);
      const out = new Uint8Array(head.length + tail.length);
      out.set(head, 0);
      out.set(tail, head.length);
      return out;
    } catch {
      return null;
    }
  },

  aesCbcEncrypt(key, iv, plaintext) {
    const c = createCipheriv("aes-256-cbc", key, iv); // PKCS7 (setAutoPadding's default)
    return new Uint8Array(Buffer.concat([c.update(plaintext), c.final()]));
  },

  aesCbcDecrypt(key, iv, ciphertext) {
    try {
      const d = createDecipheriv("aes-256-cbc", key, iv);
      return new Uint8Array(Buffer.concat([d.update(ciphertext), d.final()]));
    } catch {
      return null;
    }
  },

  randomBytes(n) {
    return asU8(nodeRandomBytes(n));
  },

  equalBytes(a, b) {
    return timingSafeEqual(a, b);
  },
};
