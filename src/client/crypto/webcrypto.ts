/**
 * The AsyncCryptoProvider on WebCrypto (`crypto.subtle`): X25519, Ed25519,
 * HKDF-SHA256, HMAC-SHA256, SHA-256/512 and AES-256-GCM, all native in
 * current Chromium (and in Bun, where the tests also run it). No node:*
 * import: this file bundles for the browser as it is.
 *
 * Keys travel as raw bytes, as in provider.ts; WebCrypto wants CryptoKeys,
 * imported from raw (public) or PKCS#8 (private: a fixed DER prefix and the 32
 * key bytes, RFC 8410) and cached per byte array (WeakMap: they go when the
 * bytes go), so a ratchet that reuses a key does not import it each time.
 */
import type { AsyncCryptoProvider } from "./async.ts";
import { concat } from "./bytes.ts";
import { CryptoError, ED25519_PKCS8_PREFIX, X25519_PKCS8_PREFIX, type KeyPair } from "./provider.ts";

const subtle = (): SubtleCrypto => {
  const s = globalThis.crypto?.subtle;
  if (!s) throw new Error("webCrypto: crypto.subtle is not available (a browser serves it only to secure contexts: https or localhost)");
  return s;
};

/** A copy on a plain ArrayBuffer, which is what WebCrypto's BufferSource accepts. */
const bytes = (u: Uint8Array): Uint8Array<ArrayBuffer> => new Uint8Array(u);

function fromB64u(s: string): Uint8Array {
  const b = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4));
  return Uint8Array.from(b, (c) => c.charCodeAt(0));
}

function pkcs8(prefix: Uint8Array, raw: Uint8Array): Uint8Array<ArrayBuffer> {
  if (raw.length !== 32) throw new CryptoError("bad_key", `private key must be 32 bytes, got ${raw.length}`);
  const der = new Uint8Array(prefix.length + 32);
  der.set(prefix, 0);
  der.set(raw, prefix.length);
  return der;
}

type Alg = "X25519" | "Ed25519";
const cache = new WeakMap<Uint8Array, CryptoKey>();

async function privateKey(alg: Alg, raw: Uint8Array): Promise<CryptoKey> {
  let k = cache.get(raw);
  if (!k) {
    k = await subtle().importKey("pkcs8", pkcs8(alg === "X25519" ? X25519_PKCS8_PREFIX : ED25519_PKCS8_PREFIX, raw), { name: alg }, true, alg === "X25519" ? ["deriveBits"] : ["sign"]);
    cache.set(raw, k);
  }
  return k;
}

async function publicKey(alg: Alg, raw: Uint8Array): Promise<CryptoKey> {
  let k = cache.get(raw);
  if (!k) {
    if (raw.length !== 32) throw new CryptoError("bad_key", `public key must be 32 bytes, got ${raw.length}`);
    try {
      k = await subtle().importKey("raw", bytes(raw), { name: alg }, true, alg === "X25519" ? [] : ["verify"]);
    } catch (e) {
      throw new CryptoError("bad_key", `not a valid public key: ${(e as Error).message}`);
    }
    cache.set(raw, k);
  }
  return k;
}

/** The raw public key and private bytes of a private CryptoKey (its JWK has both). */
async function pairOf(alg: Alg, k: CryptoKey): Promise<KeyPair> {
  const jwk = await subtle().exportKey("jwk", k);
  const kp = { pub: fromB64u(jwk.x!), priv: fromB64u(jwk.d!) };
  cache.set(kp.priv, k);
  return kp;
}

async function generate(alg: Alg): Promise<KeyPair> {
  const kp = (await subtle().generateKey({ name: alg }, true, alg === "X25519" ? ["deriveBits"] : ["sign", "verify"])) as unknown as CryptoKeyPair;
  return pairOf(alg, kp.privateKey);
}

export const webCrypto: AsyncCryptoProvider = {
  name: "webcrypto",

  generateDH: () => generate("X25519"),
  async dhFromPrivate(priv) {
    return { pub: (await pairOf("X25519", await privateKey("X25519", priv))).pub, priv };
  },
  async dh(priv, pub) {
    const [k, p] = await Promise.all([privateKey("X25519", priv), publicKey("X25519", pub)]);
    try {
      return new Uint8Array(await subtle().deriveBits({ name: "X25519", public: p }, k, 256));
    } catch (e) {
      // WebCrypto refuses an all-zero result itself (a low-order point), as primitives.ts does for node:crypto.
      throw new CryptoError("bad_key", `X25519 failed: ${(e as Error).message}`);
    }
  },

  generateSigning: () => generate("Ed25519"),
  async signingFromSeed(seed) {
    return { pub: (await pairOf("Ed25519", await privateKey("Ed25519", seed))).pub, priv: seed };
  },
  async sign(priv, msg) {
    return new Uint8Array(await subtle().sign("Ed25519", await privateKey("Ed25519", priv), bytes(msg)));
  },
  async verify(pub, msg, sig) {
    try {
      return await subtle().verify("Ed25519", await publicKey("Ed25519", pub), bytes(sig), bytes(msg));
    } catch {
      return false;
    }
  },

  async sha256(parts) {
    return new Uint8Array(await subtle().digest("SHA-256", concat(...parts) as Uint8Array<ArrayBuffer>));
  },
  async sha512(parts) {
    return new Uint8Array(await subtle().digest("SHA-512", concat(...parts) as Uint8Array<ArrayBuffer>));
  },
  async hmacSha256(key, data) {
    // An empty HMAC key is refused by importKey; HMAC pads any key with zeros to the block size, so one zero byte is the same key.
    const k = await subtle().importKey("raw", key.length ? bytes(key) : new Uint8Array(1), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    return new Uint8Array(await subtle().sign("HMAC", k, bytes(data)));
  },
  async hkdf(ikm, salt, info, length) {
    const k = await subtle().importKey("raw", bytes(ikm), "HKDF", false, ["deriveBits"]);
    // An empty salt is HashLen zero bytes (RFC 5869 §2.2); said explicitly rather than trusting each engine.
    const s = salt.length ? bytes(salt) : new Uint8Array(32);
    return new Uint8Array(await subtle().deriveBits({ name: "HKDF", hash: "SHA-256", salt: s, info: bytes(info) }, k, length * 8));
  },

  async aeadEncrypt(key, nonce, plaintext, ad) {
    const k = await subtle().importKey("raw", bytes(key), "AES-GCM", false, ["encrypt"]);
    return new Uint8Array(await subtle().encrypt({ name: "AES-GCM", iv: bytes(nonce), additionalData: bytes(ad), tagLength: 128 }, k, bytes(plaintext)));
  },
  async aeadDecrypt(key, nonce, sealed, ad) {
    const k = await subtle().importKey("raw", bytes(key), "AES-GCM", false, ["decrypt"]);
    try {
      return new Uint8Array(await subtle().decrypt({ name: "AES-GCM", iv: bytes(nonce), additionalData: bytes(ad), tagLength: 128 }, k, bytes(sealed)));
    } catch {
      return null;
    }
  },

  async aesCbcEncrypt(key, iv, plaintext) {
    const k = await subtle().importKey("raw", bytes(key), "AES-CBC", false, ["encrypt"]);
    return new Uint8Array(await subtle().encrypt({ name: "AES-CBC", iv: bytes(iv) }, k, bytes(plaintext))); // PKCS7, as WebCrypto always pads
  },
  async aesCbcDecrypt(key, iv, ciphertext) {
    const k = await subtle().importKey("raw", bytes(key), "AES-CBC", false, ["decrypt"]);
    try {
      return new Uint8Array(await subtle().decrypt({ name: "AES-CBC", iv: bytes(iv) }, k, bytes(ciphertext)));
    } catch {
      return null;
    }
  },

  randomBytes(n) {
    const out = new Uint8Array(n);
    // getRandomValues fills at most 65 536 bytes per call.
    for (let o = 0; o < n; o += 65536) globalThis.crypto.getRandomValues(out.subarray(o, Math.min(n, o + 65536)));
    return out;
  },
  equalBytes(a, b) {
    let acc = a.length ^ b.length;
    for (let i = 0; i < a.length && i < b.length; i++) acc |= a[i]! ^ b[i]!;
    return acc === 0;
  },
};
