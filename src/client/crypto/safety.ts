/**
 * Safety numbers: 60 digits two people compare (or scan) to know that no one
 * sits between them. Signal's numeric fingerprint (libsignal
 * NumericFingerprintGenerator, version 0, 5200 iterations), adapted to our
 * identities:
 *
 *   keys   = the identity bytes (ik ‖ dh, 64 bytes) of every device of the
 *            account that published keys, sorted bytewise (unsigned), concatenated
 *   hash₀  = 0x0000 ‖ keys ‖ account name (UTF-8)
 *   hashᵢ₊₁ = SHA-512(hashᵢ ‖ keys), 5200 times
 *   half   = six 5-digit chunks: for each of the first 6 groups of 5 bytes of
 *            the final hash, (40-bit big-endian value mod 100000), zero-padded
 *   number = the two accounts' halves, the smaller (as a string) first
 *
 * Multi-device rule: the number covers all of an account's current devices
 * (libsignal's "logical identity with multiple physical keys": sorted
 * concatenation). It therefore changes when either side adds, removes or
 * re-keys a device, which is what a user must re-check: a new device is a new
 * party that can read the conversation.
 */
import { compareBytes, concat, utf8, type E2ECrypto } from "./primitives.ts";
import { identityBytes, type PublicIdentity } from "./x3dh.ts";

export const FINGERPRINT_ITERATIONS = 5200;
const VERSION = new Uint8Array(2); // 0x0000

/** One account's 30 digits, from raw key byte strings (any length) and its stable identifier. */
export async function fingerprintHalf(cx: E2ECrypto, stableId: string, keys: Uint8Array[], iterations = FINGERPRINT_ITERATIONS): Promise<string> {
  if (keys.length === 0) throw new Error("fingerprintHalf: no identity keys; an account needs at least one device with published keys");
  const sorted = [...keys].sort(compareBytes);
  const pub = concat(...sorted);
  let hash = concat(VERSION, pub, utf8(stableId));
  for (let i = 0; i < iterations; i++) hash = await cx.sha512(hash, pub);
  let out = "";
  for (let off = 0; off < 30; off += 5) {
    // 40 bits do not fit a 32-bit int: combine as a float (exact below 2^53).
    const lo = ((hash[off + 1]! << 24) | (hash[off + 2]! << 16) | (hash[off + 3]! << 8) | hash[off + 4]!) >>> 0;
    const v = hash[off]! * 2 ** 32 + lo;
    out += String(v % 100000).padStart(5, "0");
  }
  return out;
}

/** Combines two halves in the order both sides agree on. */
export function combineHalves(a: string, b: string): string {
  return a <= b ? a + b : b + a;
}

export interface AccountIdentity {
  account: string;
  devices: PublicIdentity[];
}

/** The 60-digit safety number between two accounts; both sides compute the same digits. */
export async function safetyNumber(cx: E2ECrypto, local: AccountIdentity, remote: AccountIdentity, iterations = FINGERPRINT_ITERATIONS): Promise<string> {
  const [a, b] = await Promise.all([
    fingerprintHalf(cx, local.account, local.devices.map(identityBytes), iterations),
    fingerprintHalf(cx, remote.account, remote.devices.map(identityBytes), iterations),
  ]);
  return combineHalves(a, b);
}

/** "12345 67890 ..." : twelve groups of five, as Signal shows it. */
export function formatSafetyNumber(n: string): string {
  return n.replace(/(\d{5})(?=\d)/g, "$1 ");
}
