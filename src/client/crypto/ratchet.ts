/**
 * The Double Ratchet (Signal's specification, revision 4, "Double Ratchet
 * with header" in the clear: section 3, not the header-encryption variant).
 *
 *   KDF_RK(rk, dh_out) = HKDF-SHA256(ikm = dh_out, salt = rk, info = RK_INFO) → 64 bytes: rk' ‖ ck
 *   KDF_CK(ck)         = (ck' = HMAC-SHA256(ck, 0x02), seed = HMAC-SHA256(ck, 0x01))
 *   message keys       = HKDF-SHA256(ikm = seed, salt = 0³², info = MK_INFO) → 80 bytes:
 *                        cipher key 32 ‖ (mac key 32, unused) ‖ iv 16    (Signal's layout)
 *   ENCRYPT            = AES-256-GCM(cipher key, nonce = iv[0..12], ad = session AD ‖ header)
 *
 * The spec recommends AES-256-CBC + HMAC-SHA256 for ENCRYPT; any AEAD
 * qualifies, and GCM is one pass and about twice as fast here at 1 KB. Each
 * message key is used once, so the derived nonce never repeats under a key.
 * The 80-byte layout is kept so that the chain derivation can be checked
 * against libsignal's known answers (test/client/crypto.test.ts).
 *
 * Header (40 bytes, authenticated as associated data): the sender's current
 * ratchet public key (32) ‖ pn (uint32 BE: messages in its previous sending
 * chain) ‖ n (uint32 BE: this message's number in the current chain).
 *
 * Decryption is transactional: the state changes only once a message
 * authenticated, so a forged, tampered or replayed message leaves the session
 * as it was (the spec: "changes to the state object are discarded"). Every
 * operation awaits the provider (primitives.ts); the new state is computed
 * aside and committed in one synchronous stretch at the end, so a failed
 * attempt commits nothing. Callers must not run two operations on one state
 * at once (E2EDevice serialises them).
 */
import { CryptoError, concat, samePublic, toHex, type E2ECrypto, type KeyPair } from "./primitives.ts";

export const RK_INFO = "Switchboard_Ratchet_v1";
export const MK_INFO = "Switchboard_MessageKeys_v1";
/** Most message keys one incoming message may make us skip (derive and store). */
export const MAX_SKIP = 1000;
/** Most skipped message keys a session keeps; the oldest go first. */
export const MAX_STORED_SKIPPED = 2000;
/** Earlier remote ratchet keys remembered, to call a message of an old chain a replay rather than attempt a ratchet step with it. */
const OLD_CHAINS_KEPT = 8;
export const HEADER_LEN = 40;

const ZERO32 = new Uint8Array(32);
const ONE = Uint8Array.of(1);
const TWO = Uint8Array.of(2);

export interface RatchetState {
  /** Our current ratchet key pair. */
  dhs: KeyPair;
  /** Their current ratchet public key (null until we received from them, as the responder before the first message). */
  dhr: Uint8Array | null;
  rk: Uint8Array;
  /** Sending chain key (null for the responder until it received the first message). */
  cks: Uint8Array | null;
  ns: number;
  ckr: Uint8Array | null;
  nr: number;
  /** Messages in our previous sending chain. */
  pn: number;
  /** Skipped message-key seeds by `hex(ratchet key):n`, oldest first. */
  skipped: Map<string, Uint8Array>;
  /** Remote ratchet keys before `dhr`, newest last. */
  old: Uint8Array[];
}

export interface Header {
  dh: Uint8Array;
  pn: number;
  n: number;
}

export type DecryptResult = { ok: true; plaintext: Uint8Array } | { ok: false; reason: string };

// ---- KDFs (exported for the known-answer tests) -------------------------------

export async function kdfRk(cx: E2ECrypto, rk: Uint8Array, dhOut: Uint8Array, info: string = RK_INFO): Promise<[Uint8Array, Uint8Array]> {
  const out = await cx.hkdf(dhOut, rk, info, 64);
  return [out.slice(0, 32), out.slice(32, 64)];
}

/** One step of a symmetric chain: [next chain key, message-key seed]. */
export async function kdfCk(cx: E2ECrypto, ck: Uint8Array): Promise<[Uint8Array, Uint8Array]> {
  return Promise.all([cx.hmacSha256(ck, TWO), cx.hmacSha256(ck, ONE)]);
}

export async function messageKeys(cx: E2ECrypto, seed: Uint8Array, info: string = MK_INFO): Promise<{ cipherKey: Uint8Array; macKey: Uint8Array; iv: Uint8Array }> {
  const okm = await cx.hkdf(seed, ZERO32, info, 80);
  return { cipherKey: okm.subarray(0, 32), macKey: okm.subarray(32, 64), iv: okm.subarray(64, 80) };
}

async function seal(cx: E2ECrypto, seed: Uint8Array, plaintext: Uint8Array, ad: Uint8Array): Promise<Uint8Array> {
  const k = await messageKeys(cx, seed);
  return cx.aeadEncrypt(k.cipherKey, k.iv.subarray(0, 12), plaintext, ad);
}

async function open(cx: E2ECrypto, seed: Uint8Array, sealed: Uint8Array, ad: Uint8Array): Promise<Uint8Array | null> {
  const k = await messageKeys(cx, seed);
  return cx.aeadDecrypt(k.cipherKey, k.iv.subarray(0, 12), sealed, ad);
}

// ---- header -------------------------------------------------------------------

export function encodeHeader(h: Header): Uint8Array {
  const b = new Uint8Array(HEADER_LEN);
  b.set(h.dh, 0);
  const v = new DataView(b.buffer);
  v.setUint32(32, h.pn);
  v.setUint32(36, h.n);
  return b;
}

export function decodeHeader(b: Uint8Array): Header | null {
  if (!(b instanceof Uint8Array) || b.length !== HEADER_LEN) return null;
  const v = new DataView(b.buffer, b.byteOffset, b.length);
  return { dh: b.slice(0, 32), pn: v.getUint32(32), n: v.getUint32(36) };
}

// ---- initialisation (after X3DH) ----------------------------------------------

/** The X3DH initiator (Alice): her first ratchet key against Bob's signed prekey. */
export async function initInitiator(cx: E2ECrypto, sk: Uint8Array, remoteRatchetKey: Uint8Array): Promise<RatchetState> {
  const dhs = await cx.generateDH();
  const [rk, cks] = await kdfRk(cx, sk, await cx.dh(dhs.priv, remoteRatchetKey));
  return { dhs, dhr: remoteRatchetKey, rk, cks, ns: 0, ckr: null, nr: 0, pn: 0, skipped: new Map(), old: [] };
}

/** The X3DH responder (Bob): his signed prekey pair is his first ratchet key. */
export function initResponder(sk: Uint8Array, ourRatchetKey: KeyPair): RatchetState {
  return { dhs: ourRatchetKey, dhr: null, rk: sk, cks: null, ns: 0, ckr: null, nr: 0, pn: 0, skipped: new Map(), old: [] };
}

// ---- encrypt / decrypt ----------------------------------------------------------

/** Encrypts one message; the state moves on (once the ciphertext is made). `ad` is the session's associated data (X3DH). */
export async function ratchetEncrypt(cx: E2ECrypto, s: RatchetState, plaintext: Uint8Array, ad: Uint8Array): Promise<{ header: Uint8Array; ciphertext: Uint8Array }> {
  if (!s.cks) throw new Error("ratchetEncrypt: this session cannot send before it received a message (responder side); encrypt with the initiator's session");
  if (s.ns >= 0xffffffff) throw new Error("ratchetEncrypt: sending chain exhausted (2^32 messages); start a new session");
  const [ck, seed] = await kdfCk(cx, s.cks);
  const header = encodeHeader({ dh: s.dhs.pub, pn: s.pn, n: s.ns });
  const ciphertext = await seal(cx, seed, plaintext, concat(ad, header));
  s.cks = ck;
  s.ns++;
  return { header, ciphertext };
}

const skipKey = (dhPub: Uint8Array, n: number) => `${toHex(dhPub)}:${n}`;

/** Derives the seeds of messages [from, until) of a chain; returns the chain key at `until`. */
async function skipTo(cx: E2ECrypto, ck: Uint8Array, dhPub: Uint8Array, from: number, until: number, into: [string, Uint8Array][]): Promise<Uint8Array> {
  for (let i = from; i < until; i++) {
    const [next, seed] = await kdfCk(cx, ck);
    into.push([skipKey(dhPub, i), seed]);
    ck = next;
  }
  return ck;
}

function storeSkipped(s: RatchetState, add: [string, Uint8Array][]): void {
  for (const [k, v] of add) s.skipped.set(k, v);
  // Bounded: a peer (or a server dropping messages) cannot make us keep keys without limit; the oldest are the least likely to arrive.
  while (s.skipped.size > MAX_STORED_SKIPPED) s.skipped.delete(s.skipped.keys().next().value!);
}

/**
 * Decrypts one message. On failure the state is untouched and the reason is one of:
 * `bad_header`, `duplicate` (already decrypted, or its skipped key was dropped),
 * `too_many_skipped` (more than MAX_SKIP messages missing), `bad_key`,
 * `bad_mac` (tampered, forged, or not for this session).
 */
export async function ratchetDecrypt(cx: E2ECrypto, s: RatchetState, headerBytes: Uint8Array, ciphertext: Uint8Array, ad: Uint8Array): Promise<DecryptResult> {
  const h = decodeHeader(headerBytes);
  if (!h) return { ok: false, reason: "bad_header" };
  const fullAd = concat(ad, headerBytes);

  const key = s.skipped.size ? skipKey(h.dh, h.n) : "";
  const stored = key ? s.skipped.get(key) : undefined;
  if (stored) {
    const pt = await open(cx, stored, ciphertext, fullAd);
    if (!pt) return { ok: false, reason: "bad_mac" };
    s.skipped.delete(key);
    return { ok: true, plaintext: pt };
  }

  if (s.dhr && samePublic(h.dh, s.dhr)) {
    if (!s.ckr) return { ok: false, reason: "bad_mac" };
    if (h.n < s.nr) return { ok: false, reason: "duplicate" };
    if (h.n - s.nr > MAX_SKIP) return { ok: false, reason: "too_many_skipped" };
    const add: [string, Uint8Array][] = [];
    const ck = await skipTo(cx, s.ckr, h.dh, s.nr, h.n, add);
    const [next, seed] = await kdfCk(cx, ck);
    const pt = await open(cx, seed, ciphertext, fullAd);
    if (!pt) return { ok: false, reason: "bad_mac" };
    storeSkipped(s, add);
    s.ckr = next;
    s.nr = h.n + 1;
    return { ok: true, plaintext: pt };
  }

  // A new ratchet key: a DH ratchet step, computed aside and committed only if the message authenticates.
  if (s.old.some((o) => samePublic(o, h.dh))) return { ok: false, reason: "duplicate" };
  const add: [string, Uint8Array][] = [];
  if (s.ckr && s.dhr) {
    if (h.pn > s.nr + MAX_SKIP) return { ok: false, reason: "too_many_skipped" };
    await skipTo(cx, s.ckr, s.dhr, s.nr, h.pn, add);
  }
  if (h.n > MAX_SKIP || add.length + h.n > MAX_SKIP) return { ok: false, reason: "too_many_skipped" };
  let rk1: Uint8Array, ckr1: Uint8Array;
  try {
    [rk1, ckr1] = await kdfRk(cx, s.rk, await cx.dh(s.dhs.priv, h.dh));
  } catch (e) {
    if (e instanceof CryptoError) return { ok: false, reason: e.reason };
    throw e;
  }
  const ck = await skipTo(cx, ckr1, h.dh, 0, h.n, add);
  const [next, seed] = await kdfCk(cx, ck);
  const pt = await open(cx, seed, ciphertext, fullAd);
  if (!pt) return { ok: false, reason: "bad_mac" };
  // Our next ratchet key and sending chain, made before anything is committed.
  const dhs = await cx.generateDH();
  const [rk2, cks2] = await kdfRk(cx, rk1, await cx.dh(dhs.priv, h.dh));

  storeSkipped(s, add);
  if (s.dhr) {
    s.old.push(s.dhr);
    if (s.old.length > OLD_CHAINS_KEPT) s.old.shift();
  }
  s.pn = s.ns;
  s.ns = 0;
  s.dhr = h.dh;
  s.ckr = next;
  s.nr = h.n + 1;
  s.dhs = dhs;
  s.rk = rk2;
  s.cks = cks2;
  return { ok: true, plaintext: pt };
}

// ---- serialization ----------------------------------------------------------------

/** A plain, msgpack-friendly form of the state (byte arrays stay byte arrays). */
export interface RatchetStateData {
  dhs: [Uint8Array, Uint8Array];
  dhr: Uint8Array | null;
  rk: Uint8Array;
  cks: Uint8Array | null;
  ns: number;
  ckr: Uint8Array | null;
  nr: number;
  pn: number;
  sk: [string, Uint8Array][];
  old: Uint8Array[];
}

export function ratchetToData(s: RatchetState): RatchetStateData {
  return { dhs: [s.dhs.pub, s.dhs.priv], dhr: s.dhr, rk: s.rk, cks: s.cks, ns: s.ns, ckr: s.ckr, nr: s.nr, pn: s.pn, sk: [...s.skipped], old: [...s.old] };
}

export function ratchetFromData(d: RatchetStateData): RatchetState {
  return {
    dhs: { pub: d.dhs[0], priv: d.dhs[1] }, dhr: d.dhr ?? null, rk: d.rk, cks: d.cks ?? null, ns: d.ns,
    ckr: d.ckr ?? null, nr: d.nr, pn: d.pn, skipped: new Map(d.sk), old: d.old ?? [],
  };
}
