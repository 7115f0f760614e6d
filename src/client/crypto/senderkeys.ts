/**
 * Sender Keys for groups (as Signal's group messaging: one symmetric chain
 * and one signing key per (group, sender device), handed to each member
 * device once through the pairwise Double Ratchet session; then every group
 * message is encrypted once, whatever the number of members).
 *
 *   chain step   (ck', seed) = (HMAC-SHA256(ck, 0x02), HMAC-SHA256(ck, 0x01))   (as the ratchet)
 *   message keys = HKDF-SHA256(seed, 0³², SK_INFO, 80) → cipher key 32 ‖ (unused 32) ‖ iv 16
 *   message      = 0x01 ‖ key id (u32 BE) ‖ iteration (u32 BE) ‖ AES-256-GCM(ct ‖ tag) ‖ Ed25519 signature (64)
 *   AEAD ad and signed bytes are prefixed with the context "group id ‖ 0 ‖ account ‖ 0 ‖ device", so a
 *   message cannot be replayed into another group or passed off as another member's.
 *
 * Distribution message (sent 1:1 inside the pairwise session):
 *   msgpack {g: group, i: key id, n: iteration, ck: chain key at n, k: signing public key}
 * A member can decrypt from iteration n on, never what came before it joined.
 *
 * Rotation: a new key (new id, chain and signing key) after a member leaves,
 * distributed to the remaining member devices; the departed member holds only
 * the old chain. Receivers keep the last few keys of each sender so that
 * messages under the previous key still in flight decrypt.
 *
 * Deviation from Signal: Signal signs with a Curve25519 key (XEdDSA); we use Ed25519.
 */
import { concat, samePublic, u32be, utf8, type E2ECrypto, type KeyPair } from "./primitives.ts";
import { kdfCk, messageKeys } from "./ratchet.ts";
import { pack, unpack } from "./envelope.ts";

export const SK_INFO = "Switchboard_SenderKey_v1";
export const SENDER_KEY_VERSION = 1;
export const SENDER_MAX_SKIP = 1000;
export const SENDER_MAX_STORED = 2000;
/** Keys kept per (group, sender device): the current one and a few before it. */
export const SENDER_STATES_KEPT = 5;
const HEAD = 9;
const SIG = 64;

export interface SenderKeyState {
  id: number;
  iter: number;
  ck: Uint8Array;
  /** Signing key; `priv` only in our own states. */
  sig: { pub: Uint8Array; priv?: Uint8Array };
  /** Seeds of skipped iterations, oldest first. */
  skipped: Map<number, Uint8Array>;
}

export interface Distribution {
  g: string;
  id: number;
  iter: number;
  ck: Uint8Array;
  pub: Uint8Array;
}

export type GroupDecryptResult = { ok: true; plaintext: Uint8Array } | { ok: false; reason: string };

export async function createSenderKey(cx: E2ECrypto): Promise<SenderKeyState> {
  const id = new DataView(cx.randomBytes(4).buffer).getUint32(0);
  const s: KeyPair = await cx.generateSigning();
  return { id, iter: 0, ck: cx.randomBytes(32), sig: { pub: s.pub, priv: s.priv }, skipped: new Map() };
}

export function distributionBytes(g: string, s: SenderKeyState): Uint8Array {
  return pack({ g, i: s.id, n: s.iter, ck: s.ck, k: s.sig.pub });
}

export function parseDistribution(b: Uint8Array): Distribution | null {
  const v = unpack(b) as Record<string, unknown> | undefined;
  if (!v || typeof v !== "object") return null;
  const { g, i, n, ck, k } = v;
  const u32 = (x: unknown): x is number => typeof x === "number" && Number.isInteger(x) && x >= 0 && x <= 0xffffffff;
  if (typeof g !== "string" || !u32(i) || !u32(n) || !(ck instanceof Uint8Array) || ck.length !== 32 || !(k instanceof Uint8Array) || k.length !== 32) return null;
  return { g, id: i, iter: n, ck, pub: k };
}

/**
 * Installs a received distribution into a sender's list of states (newest
 * first). A repeat of a key we hold is ignored: a redelivered distribution
 * must not rewind the chain (that would let old messages be replayed), and
 * the state we hold can already derive every later iteration.
 */
export function installDistribution(states: SenderKeyState[], d: Distribution): SenderKeyState[] {
  const existing = states.find((s) => s.id === d.id);
  if (existing && samePublic(existing.sig.pub, d.pub)) return states;
  const fresh: SenderKeyState = { id: d.id, iter: d.iter, ck: d.ck, sig: { pub: d.pub }, skipped: new Map() };
  return [fresh, ...states.filter((s) => s.id !== d.id)].slice(0, SENDER_STATES_KEPT);
}

export function senderContext(g: string, u: string, d: number): Uint8Array {
  return utf8(`${g}\u0000${u}\u0000${d}`);
}

async function keysFor(cx: E2ECrypto, seed: Uint8Array) {
  const k = await messageKeys(cx, seed, SK_INFO);
  return { key: k.cipherKey, nonce: k.iv.subarray(0, 12) };
}

/** Encrypts and signs one group message with our own state, which moves on (once the message is made). */
export async function senderEncrypt(cx: E2ECrypto, s: SenderKeyState, plaintext: Uint8Array, ctx: Uint8Array): Promise<Uint8Array> {
  if (!s.sig.priv) throw new Error("senderEncrypt: this is another member's sender key; encrypt with our own");
  if (s.iter >= 0xffffffff) throw new Error("senderEncrypt: chain exhausted; rotate the sender key");
  const [next, seed] = await kdfCk(cx, s.ck);
  const head = new Uint8Array(HEAD);
  head[0] = SENDER_KEY_VERSION;
  head.set(u32be(s.id), 1);
  head.set(u32be(s.iter), 5);
  const { key, nonce } = await keysFor(cx, seed);
  const body = concat(head, await cx.aeadEncrypt(key, nonce, plaintext, concat(ctx, head)));
  const sig = await cx.sign(s.sig.priv, concat(ctx, body));
  s.ck = next;
  s.iter++;
  return concat(body, sig);
}

/**
 * Verifies and decrypts a group message from one sender; the matching state
 * moves on only when the message verified and decrypted. Reasons:
 * `bad_message`, `bad_version`, `no_sender_key` (we hold no key with that id:
 * ask the sender for its distribution), `bad_signature`, `duplicate`,
 * `too_many_skipped`, `bad_mac`.
 */
export async function senderDecrypt(cx: E2ECrypto, states: SenderKeyState[], msg: Uint8Array, ctx: Uint8Array): Promise<GroupDecryptResult> {
  if (!(msg instanceof Uint8Array) || msg.length < HEAD + 16 + SIG) return { ok: false, reason: "bad_message" };
  if (msg[0] !== SENDER_KEY_VERSION) return { ok: false, reason: "bad_version" };
  const v = new DataView(msg.buffer, msg.byteOffset, msg.length);
  const id = v.getUint32(1);
  const iter = v.getUint32(5);
  const s = states.find((x) => x.id === id);
  if (!s) return { ok: false, reason: "no_sender_key" };
  const body = msg.subarray(0, msg.length - SIG);
  if (!(await cx.verify(s.sig.pub, concat(ctx, body), msg.subarray(msg.length - SIG)))) return { ok: false, reason: "bad_signature" };
  const head = msg.subarray(0, HEAD);
  const sealed = msg.subarray(HEAD, msg.length - SIG);
  const ad = concat(ctx, head);

  if (iter < s.iter) {
    const seed = s.skipped.get(iter);
    if (!seed) return { ok: false, reason: "duplicate" };
    const { key, nonce } = await keysFor(cx, seed);
    const pt = await cx.aeadDecrypt(key, nonce, sealed, ad);
    if (!pt) return { ok: false, reason: "bad_mac" };
    s.skipped.delete(iter);
    return { ok: true, plaintext: pt };
  }
  if (iter - s.iter > SENDER_MAX_SKIP) return { ok: false, reason: "too_many_skipped" };
  let ck = s.ck;
  const add: [number, Uint8Array][] = [];
  for (let i = s.iter; i < iter; i++) {
    const [next, seed] = await kdfCk(cx, ck);
    add.push([i, seed]);
    ck = next;
  }
  const [next, seed] = await kdfCk(cx, ck);
  const { key, nonce } = await keysFor(cx, seed);
  const pt = await cx.aeadDecrypt(key, nonce, sealed, ad);
  if (!pt) return { ok: false, reason: "bad_mac" };
  for (const [i, sd] of add) s.skipped.set(i, sd);
  while (s.skipped.size > SENDER_MAX_STORED) s.skipped.delete(s.skipped.keys().next().value!);
  s.ck = next;
  s.iter = iter + 1;
  return { ok: true, plaintext: pt };
}

export interface SenderKeyData {
  id: number;
  n: number;
  ck: Uint8Array;
  k: Uint8Array;
  sk?: Uint8Array;
  skip: [number, Uint8Array][];
}

export function senderKeyToData(s: SenderKeyState): SenderKeyData {
  const d: SenderKeyData = { id: s.id, n: s.iter, ck: s.ck, k: s.sig.pub, skip: [...s.skipped] };
  if (s.sig.priv) d.sk = s.sig.priv;
  return d;
}

export function senderKeyFromData(d: SenderKeyData): SenderKeyState {
  const sig: SenderKeyState["sig"] = { pub: d.k };
  if (d.sk) sig.priv = d.sk;
  return { id: d.id, iter: d.n, ck: d.ck, sig, skipped: new Map(d.skip) };
}
