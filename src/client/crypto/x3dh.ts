/**
 * X3DH key agreement (Signal's specification, revision 1), adapted to
 * Switchboard's device identity.
 *
 * Identity of a device (separate from its login key):
 *   ik  Ed25519 signing key pair
 *   dh  X25519 key pair, the identity key of X3DH's DH1 and DH2
 *   dhs Ed25519 signature by ik over dh's 32 public bytes
 * Signed prekey: {id, k: X25519 public key, s: Ed25519 signature by ik over k}.
 * One-time prekeys: [[id, k], ...].
 *
 * Deviation from the spec: X3DH uses one Curve25519 identity key for both
 * signing (XEdDSA) and DH. We do not implement XEdDSA; instead the identity is
 * the pair (ik, dh) and ik certifies dh with `dhs`. The security argument is
 * the same as long as both signatures are checked: dh and spk are bound to ik,
 * and ik ‖ dh is what the safety number shows. The signed messages are the
 * raw 32 key bytes, without a context label (the key directory verifies the
 * same bytes); a dh signature could pass as an spk signature and vice versa,
 * which gains an attacker nothing since it would need the private key of
 * whichever key it substitutes.
 *
 *   DH1 = DH(dh_A, spk_B)   DH2 = DH(ek_A, dh_B)   DH3 = DH(ek_A, spk_B)   DH4 = DH(ek_A, otk_B)
 *   SK  = HKDF-SHA256(ikm = 0xFF³² ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4], salt = 0³², info = X3DH_INFO, 32)
 *   AD  = "SB-E2E-1" ‖ ik_A ‖ dh_A ‖ ik_B ‖ dh_B ‖ u8 len ‖ account_A ‖ u32 device_A ‖ u8 len ‖ account_B ‖ u32 device_B
 *
 * AD carries the account names and device ids besides the identity keys (the
 * spec allows "additional information such as usernames"): the server stamps
 * who a message is from, and with the addresses in AD it cannot relabel one
 * device's messages as another's without decryption failing.
 */
import { concat, u32be, utf8, type E2ECrypto, type KeyPair } from "./primitives.ts";

export const X3DH_INFO = "Switchboard_X3DH_v1";
const F = new Uint8Array(32).fill(0xff);
const ZERO32 = new Uint8Array(32);
const AD_LABEL = utf8("SB-E2E-1");

/** A device's long-term E2E identity (private). */
export interface IdentityKeys {
  ik: KeyPair;
  dh: KeyPair;
  dhs: Uint8Array;
}

/** The public part of an identity, as the server and peers see it. */
export interface PublicIdentity {
  ik: Uint8Array;
  dh: Uint8Array;
}

export interface SignedPreKey {
  id: number;
  kp: KeyPair;
  s: Uint8Array;
  created: number;
}

/** A prekey bundle of one device, as `keys.fetch` returns it. */
export interface Bundle {
  d?: number;
  kv?: number;
  ik: Uint8Array;
  dh: Uint8Array;
  dhs: Uint8Array;
  spk: { id: number; k: Uint8Array; s: Uint8Array };
  otk?: { id: number; k: Uint8Array };
}

export interface Address {
  u: string;
  d: number;
}

export async function generateIdentity(cx: E2ECrypto): Promise<IdentityKeys> {
  const ik = await cx.generateSigning();
  const d = await cx.generateDH();
  return { ik, dh: d, dhs: await cx.sign(ik.priv, d.pub) };
}

export async function generateSignedPreKey(cx: E2ECrypto, identity: IdentityKeys, id: number, now = Date.now()): Promise<SignedPreKey> {
  const kp = await cx.generateDH();
  return { id, kp, s: await cx.sign(identity.ik.priv, kp.pub), created: now };
}

/**
 * Key version of a device identity: the first 4 bytes of SHA-256(ik ‖ dh) as
 * a big-endian uint32, and 1 where that is 0 (0 means "no keys published").
 */
export async function keyVersion(cx: E2ECrypto, ik: Uint8Array, dhPub: Uint8Array): Promise<number> {
  return kvFromDigest(await cx.sha256(ik, dhPub));
}

/** The key version of a SHA-256 digest (separate so that the 0 → 1 rule can be tested). */
export function kvFromDigest(h: Uint8Array): number {
  const v = ((h[0]! << 24) | (h[1]! << 16) | (h[2]! << 8) | h[3]!) >>> 0;
  return v === 0 ? 1 : v;
}

/** ik ‖ dh: the 64 bytes that identify a device, in AD and in safety numbers. */
export function identityBytes(id: PublicIdentity): Uint8Array {
  return concat(id.ik, id.dh);
}

function addressBytes(a: Address): Uint8Array {
  const name = utf8(a.u);
  if (name.length > 255) throw new Error(`account name too long: ${a.u}`);
  return concat(Uint8Array.of(name.length), name, u32be(a.d));
}

/** X3DH associated data: initiator first, then responder. */
export function associatedData(initiator: PublicIdentity, initiatorAddr: Address, responder: PublicIdentity, responderAddr: Address): Uint8Array {
  return concat(AD_LABEL, initiator.ik, initiator.dh, responder.ik, responder.dh, addressBytes(initiatorAddr), addressBytes(responderAddr));
}

const is32 = (b: unknown): b is Uint8Array => b instanceof Uint8Array && b.length === 32;
const is64 = (b: unknown): b is Uint8Array => b instanceof Uint8Array && b.length === 64;
const isId = (n: unknown): n is number => typeof n === "number" && Number.isInteger(n) && n >= 0 && n <= 0xffffffff;

/** Checks shapes and both signatures of a bundle; a reason when it fails. */
export async function checkBundle(cx: E2ECrypto, b: Bundle): Promise<string | null> {
  if (!b || !is32(b.ik) || !is32(b.dh) || !is64(b.dhs) || !b.spk || !isId(b.spk.id) || !is32(b.spk.k) || !is64(b.spk.s)) return "bad_bundle";
  if (b.otk !== undefined && b.otk !== null && (!isId(b.otk.id) || !is32(b.otk.k))) return "bad_bundle";
  if (!(await cx.verify(b.ik, b.dh, b.dhs))) return "bad_signature";
  if (!(await cx.verify(b.ik, b.spk.k, b.spk.s))) return "bad_signature";
  return null;
}

function deriveSk(cx: E2ECrypto, parts: Uint8Array[]): Promise<Uint8Array> {
  return cx.hkdf(concat(F, ...parts), ZERO32, X3DH_INFO, 32);
}

export interface InitiatorResult {
  sk: Uint8Array;
  ad: Uint8Array;
  /** Our ephemeral public key (the "base key" of the session). */
  ek: Uint8Array;
  spkId: number;
  otkId?: number;
  remote: PublicIdentity;
}

/**
 * Alice's side: verifies Bob's bundle and derives SK. Throws CryptoError
 * (from dh) only for keys that passed the signature check yet are unusable.
 * Returns a reason string for a bundle that fails the checks.
 */
export async function x3dhInitiate(cx: E2ECrypto, self: IdentityKeys, selfAddr: Address, bundle: Bundle, remoteAddr: Address): Promise<InitiatorResult | string> {
  const bad = await checkBundle(cx, bundle);
  if (bad) return bad;
  const ek = await cx.generateDH();
  const parts = await Promise.all([cx.dh(self.dh.priv, bundle.spk.k), cx.dh(ek.priv, bundle.dh), cx.dh(ek.priv, bundle.spk.k)]);
  if (bundle.otk) parts.push(await cx.dh(ek.priv, bundle.otk.k));
  const remote = { ik: bundle.ik, dh: bundle.dh };
  const r: InitiatorResult = {
    sk: await deriveSk(cx, parts),
    ad: associatedData({ ik: self.ik.pub, dh: self.dh.pub }, selfAddr, remote, remoteAddr),
    ek: ek.pub,
    spkId: bundle.spk.id,
    remote,
  };
  if (bundle.otk) r.otkId = bundle.otk.id;
  return r;
}

/** Bob's side, given the prekeys Alice named and her identity and ephemeral key from the prekey message. */
export async function x3dhRespond(
  cx: E2ECrypto, self: IdentityKeys, selfAddr: Address, spk: KeyPair, otk: KeyPair | null,
  remote: PublicIdentity, remoteAddr: Address, ek: Uint8Array,
): Promise<{ sk: Uint8Array; ad: Uint8Array }> {
  const parts = await Promise.all([cx.dh(spk.priv, remote.dh), cx.dh(self.dh.priv, ek), cx.dh(spk.priv, ek)]);
  if (otk) parts.push(await cx.dh(otk.priv, ek));
  return { sk: await deriveSk(cx, parts), ad: associatedData(remote, remoteAddr, { ik: self.ik.pub, dh: self.dh.pub }, selfAddr) };
}
