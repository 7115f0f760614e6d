/**
 * The byte strings a device signs to prove it holds its key. Binding the
 * purpose, the server id and the connection's fresh nonce makes a proof
 * useless for any other login, any other server or any later connection.
 * No I/O; the signature itself is Ed25519 (RFC 8032) over these bytes.
 */
import { concat } from "./bytes.ts";

export type ProofPurpose = "auth" | "enroll" | "link";

const enc = new TextEncoder();

/**
 * `"switchboard/1/" purpose 0x00 sid 0x00 nonce(32 bytes) 0x00 account 0x00 device(uint32 BE)`
 *
 * `device` is 0 for enroll and link, where the server has not assigned one yet.
 */
export function proofTranscript(purpose: ProofPurpose, sid: string, nonce: Uint8Array, account: string, device: number): Uint8Array {
  if (nonce.length !== 32) throw new RangeError(`proofTranscript: nonce must be 32 bytes, got ${nonce.length}`);
  return joined(PREFIX[purpose], sid, [nonce, enc.encode(account)], device, []);
}

/**
 * A resumption ticket (docs/PROTOCOL.md §4.11) is 16 opaque bytes to the client: the server's key id (uint32 BE),
 * its expiry and issue time (uint32 BE each, seconds since the epoch) and 4 random bytes. Its secret is the server's HMAC over
 * ticketSecretInput under that key; the client proves it holds the secret without a round trip first.
 */
export const TICKET_BYTES = 16;

/** `"switchboard/1/ticket" 0x00 sid 0x00 account 0x00 device(uint32 BE) tk(16)`: what the server MACs into a ticket's secret. */
export function ticketSecretInput(sid: string, account: string, device: number, tk: Uint8Array): Uint8Array {
  return joined(PREFIX.ticket, sid, [enc.encode(account)], device, [tk]);
}

/**
 * `"switchboard/1/resume" 0x00 sid 0x00 account 0x00 device(uint32 BE) ts(uint64 BE)`: what `resume.mac` is
 * the HMAC-SHA256 of, under the ticket's secret. `ts` (ms, server time as the client estimates it) is what
 * makes each proof one of a kind: the server takes a device's proofs only in increasing `ts` (§4.11).
 */
export function resumeTranscript(sid: string, account: string, device: number, ts: number): Uint8Array {
  const t = new Uint8Array(8);
  new DataView(t.buffer).setBigUint64(0, BigInt(ts), false);
  return joined(PREFIX.resume, sid, [enc.encode(account)], device, [t]);
}

/**
 * The purposes' prefixes and the last server id, encoded once: a server makes two or three transcripts per resumed
 * login, always with its own sid, and encoding them each time was a third of a transcript's cost (login-storm profile).
 */
const PREFIX: Record<ProofPurpose | "ticket" | "resume", Uint8Array> = {
  auth: enc.encode("switchboard/1/auth"), enroll: enc.encode("switchboard/1/enroll"), link: enc.encode("switchboard/1/link"),
  ticket: enc.encode("switchboard/1/ticket"), resume: enc.encode("switchboard/1/resume"),
};
let lastSid = "";
let lastSidBytes = new Uint8Array(0);

/** prefix 0x00 sid 0x00, each of `parts` followed by 0x00, then the device (uint32 BE), then `tail` as it is. */
function joined(prefix: Uint8Array, sid: string, parts: Uint8Array[], device: number, tail: Uint8Array[]): Uint8Array {
  if (sid !== lastSid) {
    lastSidBytes = enc.encode(sid);
    lastSid = sid;
  }
  const d = new Uint8Array(4);
  new DataView(d.buffer).setUint32(0, device >>> 0, false);
  const all: Uint8Array[] = [prefix, ZERO, lastSidBytes, ZERO];
  for (const p of parts) all.push(p, ZERO);
  all.push(d);
  for (const t of tail) all.push(t);
  return concat(...all);
}
const ZERO = new Uint8Array(1);
