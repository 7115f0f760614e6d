/**
 * Known answers for an AsyncCryptoProvider (src/client/crypto/async.ts), as
 * data and a runner with no test framework and no node:* import, so that the
 * same checks run in Bun (test/client/crypto-async.test.ts) and, bundled, in
 * Chromium. The vectors are the ones test/client/crypto.test.ts holds the
 * synchronous providers to (RFC 5869, 4231, 7748, 8032, FIPS 180-2) plus
 * AES-256-GCM from the GCM specification's test case 16, AES-256-CBC from
 * NIST SP 800-38A F.2.5.
 */
import type { AsyncCryptoProvider } from "../../src/client/crypto/async.ts";
import { CryptoError } from "../../src/client/crypto/provider.ts";
import { runCases, type Case, type Outcome } from "../helpers/cases.ts";

const h = (s: string) => Uint8Array.from(s.replace(/\s+/g, "").match(/../g) ?? [], (b) => parseInt(b, 16));
const hx = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const utf8 = (s: string) => new TextEncoder().encode(s);

export type Answer = Outcome;

/** `true`, or what differed (for the failure message). */
const eq = (got: string, want: string) => (got === want ? true : `${got} != ${want}`);

async function rejectsBadKey(f: () => Promise<unknown>): Promise<boolean> {
  try {
    const r = await f();
    // An implementation may hand the all-zero result back for primitives.ts to refuse (node:crypto does).
    return r instanceof Uint8Array && r.every((b) => b === 0);
  } catch (e) {
    return e instanceof CryptoError && e.reason === "bad_key";
  }
}

const CHECKS: Case<AsyncCryptoProvider>[] = [
  ["SHA-256, FIPS 180-2 'abc'", async (p) => eq(hx(await p.sha256([utf8("a"), utf8("bc")])), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")],
  ["SHA-512, FIPS 180-2 'abc'", async (p) => eq(hx(await p.sha512([utf8("abc")])), "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f")],
  ["HMAC-SHA256, RFC 4231 test case 2", async (p) => eq(hx(await p.hmacSha256(utf8("Jefe"), utf8("what do ya want for nothing?"))), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")],
  ["HKDF-SHA256, RFC 5869 test case 1", async (p) => eq(hx(await p.hkdf(h("0b".repeat(22)), h("000102030405060708090a0b0c"), h("f0f1f2f3f4f5f6f7f8f9"), 42)), "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")],
  ["HKDF-SHA256, RFC 5869 test case 3 (empty salt and info)", async (p) => eq(hx(await p.hkdf(h("0b".repeat(22)), new Uint8Array(0), new Uint8Array(0), 42)), "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8")],
  ["X25519, RFC 7748 §6.1", async (p) => {
    const aPriv = h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
    const bPriv = h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
    const a = await p.dhFromPrivate(aPriv);
    const b = await p.dhFromPrivate(bPriv);
    const got = [hx(a.pub), hx(b.pub), hx(await p.dh(aPriv, b.pub)), hx(await p.dh(bPriv, a.pub))].join(" ");
    const shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";
    return eq(got, `8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f ${shared} ${shared}`);
  }],
  ["X25519: a generated pair agrees with itself; low-order and short public keys are refused", async (p) => {
    const a = await p.generateDH(), b = await p.generateDH();
    if (hx(await p.dh(a.priv, b.pub)) !== hx(await p.dh(b.priv, a.pub))) return "the two sides disagree";
    if (!(await rejectsBadKey(() => p.dh(a.priv, new Uint8Array(32))))) return "u = 0 accepted";
    if (!(await rejectsBadKey(() => p.dh(a.priv, Uint8Array.of(1, ...new Uint8Array(31)))))) return "u = 1 accepted";
    return (await rejectsBadKey(() => p.dh(a.priv, new Uint8Array(31)))) ? true : "a 31-byte key accepted";
  }],
  ["Ed25519, RFC 8032 §7.1 test 1", async (p) => {
    const k = await p.signingFromSeed(h("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"));
    const sig = await p.sign(k.priv, new Uint8Array(0));
    const got = `${hx(k.pub)} ${hx(sig)} ${await p.verify(k.pub, new Uint8Array(0), sig)} ${await p.verify(k.pub, Uint8Array.of(0), sig)}`;
    return eq(got, "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b true false");
  }],
  ["Ed25519, RFC 8032 §7.1 test 2 (one-byte message)", async (p) => {
    const k = await p.signingFromSeed(h("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"));
    return eq(`${hx(k.pub)} ${hx(await p.sign(k.priv, h("72")))}`, "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c 92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00");
  }],
  ["Ed25519: generated keys sign and verify; malformed keys and signatures verify false, never throw", async (p) => {
    const k = await p.generateSigning();
    const sig = await p.sign(k.priv, utf8("x"));
    const got = [await p.verify(k.pub, utf8("x"), sig), await p.verify(new Uint8Array(31), utf8("x"), sig), await p.verify(k.pub, utf8("x"), sig.subarray(0, 63)), await p.verify(new Uint8Array(32).fill(0xff), utf8("x"), sig)];
    return eq(got.join(" "), "true false false false");
  }],
  ["AES-256-GCM, GCM spec test case 16 (with AD)", async (p) => {
    const key = h("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
    const iv = h("cafebabefacedbaddecaf888");
    const pt = h("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39");
    const ad = h("feedfacedeadbeeffeedfacedeadbeefabaddad2");
    const sealed = await p.aeadEncrypt(key, iv, pt, ad);
    const opened = await p.aeadDecrypt(key, iv, sealed, ad);
    const ct = "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662";
    const tag = "76fc6ece0f4e1768cddf8853bb2d551b";
    return eq(`${hx(sealed)} ${opened ? hx(opened) : null}`, `${ct}${tag} ${hx(pt)}`);
  }],
  ["AES-256-GCM: a flipped bit, other AD or another key opens to null", async (p) => {
    const key = p.randomBytes(32), nonce = p.randomBytes(12), ad = utf8("ad");
    const sealed = await p.aeadEncrypt(key, nonce, utf8("hello"), ad);
    const t = sealed.slice();
    t[0]! ^= 1;
    const got = [await p.aeadDecrypt(key, nonce, t, ad), await p.aeadDecrypt(key, nonce, sealed, utf8("other")), await p.aeadDecrypt(p.randomBytes(32), nonce, sealed, ad)];
    return got.every((x) => x === null) ? true : "a tampered seal opened";
  }],
  ["AES-256-CBC, NIST SP 800-38A F.2.5 (four blocks), then the PKCS7 block; bad padding opens to null", async (p) => {
    const key = h("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4");
    const iv = h("000102030405060708090a0b0c0d0e0f");
    const pt = h("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710");
    const ct = await p.aesCbcEncrypt(key, iv, pt);
    const back = await p.aesCbcDecrypt(key, iv, ct);
    const bad = await p.aesCbcDecrypt(key, iv, new Uint8Array(16)); // decrypts to a last byte that is no PKCS7 padding
    return eq(`${hx(ct)} ${back ? hx(back) : null} ${bad}`, `f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d39f23369a9d9bacfa530e26304231461b2eb05e2c39be9fcda6c19078c6a9d1b3f461796d6b0d6b2e0c2a72b4d80e644 ${hx(pt)} null`);
  }],
  ["random bytes and constant-time equality", async (p) => {
    const r = p.randomBytes(70000);
    if (r.length !== 70000 || r.subarray(65536).every((b) => b === 0)) return "randomBytes past 65 536 bytes";
    return eq(`${p.equalBytes(h("0102"), h("0102"))} ${p.equalBytes(h("0102"), h("0103"))}`, "true false");
  }],
];

export function knownAnswers(p: AsyncCryptoProvider): Promise<Answer[]> {
  return runCases(CHECKS, p);
}
