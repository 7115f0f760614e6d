/**
 * The byte strings a device signs to prove it holds its key. Binding the
 * purpose, the server id and the connection's fresh nonce makes a proof
 * useless for any other login, any other server or any later connection.
 * No I/O; the signature itself is Ed25519 (RFC 8032) over these bytes.
 */
import { concat, putU32 } from "./bytes.ts";

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
  const out = new Uint8Array(bound(PREFIX.ticket, sid, account, tk.length));
  return out.slice(0, writeTicketSecretInput(out, 0, sid, account, device, tk));
}

/**
 * `"switchboard/1/resume" 0x00 sid 0x00 account 0x00 device(uint32 BE) ts(uint64 BE)`: what `resume.mac` is
 * the HMAC-SHA256 of, under the ticket's secret. `ts` (ms, server time as the client estimates it) is what
 * makes each proof one of a kind: the server takes a device's proofs only in increasing `ts` (§4.11).
 */
export function resumeTranscript(sid: string, account: string, device: number, ts: number): Uint8Array {
  const out = new Uint8Array(bound(PREFIX.resume, sid, account, 8));
  return out.slice(0, writeResumeTranscript(out, 0, sid, account, device, ts));
}

/**
 * ticketSecretInput written into `out` from `at`; returns where it ends. The server's resume path writes both
 * transcripts into one kept buffer (src/core/hmac.ts): allocating them (seven parts concatenated, a DataView per
 * integer) was ~5 % of a bare reconnect's samples (BENCHMARKS.md "reconnect3"). Throws if `out` may be too short:
 * size it with transcriptBound.
 */
export function writeTicketSecretInput(out: Uint8Array, at: number, sid: string, account: string, device: number, tk: Uint8Array): number {
  at = head(out, at, PREFIX.ticket, sid, account, device, tk.length);
  out.set(tk, at);
  return at + tk.length;
}

/** resumeTranscript written into `out` from `at`; returns where it ends (see writeTicketSecretInput). */
export function writeResumeTranscript(out: Uint8Array, at: number, sid: string, account: string, device: number, ts: number): number {
  if (!Number.isSafeInteger(ts) || ts < 0) throw new RangeError(`resumeTranscript: ts must be a non-negative integer (ms), got ${ts}`);
  at = head(out, at, PREFIX.resume, sid, account, device, 8);
  const hi = Math.floor(ts / 0x1_0000_0000);
  putU32(out, at, hi);
  putU32(out, at + 4, ts - hi * 0x1_0000_0000);
  return at + 8;
}

/** Bytes enough for either transcript of `sid` and `account` (a UTF-16 unit is at most 3 bytes of UTF-8). */
export function transcriptBound(sid: string, account: string): number {
  return Math.max(bound(PREFIX.ticket, sid, account, TICKET_BYTES), bound(PREFIX.resume, sid, account, 8));
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
  putU32(d, 0, device >>> 0);
  const all: Uint8Array[] = [prefix, ZERO, lastSidBytes, ZERO];
  for (const p of parts) all.push(p, ZERO);
  all.push(d);
  for (const t of tail) all.push(t);
  return concat(...all);
}
const ZERO = new Uint8Array(1);

function bound(prefix: Uint8Array, sid: string, account: string, tail: number): number {
  return prefix.length + 3 * sid.length + 3 * account.length + 3 + 4 + tail;
}

/** prefix 0x00 sid 0x00 account 0x00 device(uint32 BE), written from `at`, checked to leave room for `tail` bytes. */
function head(out: Uint8Array, at: number, prefix: Uint8Array, sid: string, account: string, device: number, tail: number): number {
  if (at + bound(prefix, sid, account, tail) > out.length) throw new RangeError(`auth transcript: ${out.length - at} bytes of room, want ${bound(prefix, sid, account, tail)} (size it with transcriptBound)`);
  if (sid !== lastSid) {
    lastSidBytes = enc.encode(sid);
    lastSid = sid;
  }
  out.set(prefix, at);
  at += prefix.length;
  out[at++] = 0;
  out.set(lastSidBytes, at);
  at += lastSidBytes.length;
  out[at++] = 0;
  at = utf8(out, at, account);
  out[at++] = 0;
  putU32(out, at, device >>> 0);
  return at + 4;
}

/** `s` as UTF-8 from `at` (account names are ASCII: a byte per unit, no encoder call); returns the end. */
function utf8(out: Uint8Array, at: number, s: string): number {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0x7f) return at - i + enc.encodeInto(s, out.subarray(at - i)).written;
    out[at++] = c;
  }
  return at;
}

