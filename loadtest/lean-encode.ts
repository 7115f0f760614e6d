/**
 * The hand encoding of the lean client's hot frames (see lean.ts): the
 * message-id prefix, the constant msgpack heads of `msg`, `gmsg`, `ack` and
 * `ping`, and the per-recipient templates the workers build once. Split from
 * lean.ts (files ≤ 500 lines) along the line between the bytes a frame is
 * made of (here, no state but the id prefix) and the connection that writes
 * them into its output buffer (LeanConn.idFrame, ping, flush in lean.ts).
 * LeanConn reads these as imported module constants, as it read them as its
 * own module's before: nothing per frame is added.
 */
import { writeHeader } from "../src/protocol/frame.ts";

const te = new TextEncoder();

/**
 * A prefix for every message id this process writes (`<prefix><n>`). Message ids must be unique per
 * sending device for the device's lifetime (docs/PROTOCOL.md §3: the server remembers them durably and
 * answers a known id with its original `sent`, delivering nothing), and identities from an --ids file
 * are reused across runs: each worker process takes a random prefix, so its numbers never repeat an
 * earlier run's ids. The prefix ends in a non-digit, which is where the scanner starts reading the number.
 */
export let idPrefix = new Uint8Array(0);
export function setIdPrefix(prefix: string): void {
  if (!/^[a-z0-9]{0,8}[.]$|^$/.test(prefix)) throw new Error("lean: an id prefix is up to 8 of [a-z0-9] and a final '.'");
  idPrefix = te.encode(prefix);
}
/** A fresh random prefix such as "k3f9a0.". */
export function randomIdPrefix(): string {
  return `${Math.floor(Math.random() * 36 ** 6).toString(36).padStart(6, "0")}.`;
}

export const f64 = new Float64Array(1);
export const f64b = new Uint8Array(f64.buffer);
/** fixmap(4) "t" "msg" "id" */
export const MSG_HEAD = Uint8Array.from([0x84, 0xa1, 0x74, 0xa3, 0x6d, 0x73, 0x67, 0xa2, 0x69, 0x64]);
/** fixmap(4) "t" "gmsg" "id" */
export const GMSG_HEAD = Uint8Array.from([0x84, 0xa1, 0x74, 0xa4, 0x67, 0x6d, 0x73, 0x67, 0xa2, 0x69, 0x64]);
/** fixmap(2) "t" "ack" "q" */
export const ACK_HEAD = Uint8Array.from([0x82, 0xa1, 0x74, 0xa3, 0x61, 0x63, 0x6b, 0xa1, 0x71]);
/** "sc" (the count of `sent` frames held, docs/PROTOCOL.md §6.2), after the ids or alone. */
export const SC_KEY = Uint8Array.from([0xa2, 0x73, 0x63]);
/** fixmap(2) "t" "ack": an ack carrying only "sc". */
export const ACK_SC_HEAD = Uint8Array.from([0x82, 0xa1, 0x74, 0xa3, 0x61, 0x63, 0x6b]);
/** fixmap(2) "t" "ping" "n" */
export const PING_HEAD = Uint8Array.from([0x82, 0xa1, 0x74, 0xa4, 0x70, 0x69, 0x6e, 0x67, 0xa1, 0x6e]);

/** The constant part of `msg` frames from one sender to one recipient device: "to" <account> "p" [[device, bin ...]]. */
export function msgTemplate(to: string, device: number, payloadLen: number): Uint8Array {
  const acct = te.encode(to);
  if (acct.length > 31 || device > 127 || payloadLen > 255) throw new Error("lean: msgTemplate supports accounts < 32 bytes, devices < 128, payloads < 256 bytes");
  const t = new Uint8Array(3 + 1 + acct.length + 2 + 3 + 2);
  let o = 0;
  t[o++] = 0xa2; t[o++] = 0x74; t[o++] = 0x6f; // "to"
  t[o++] = 0xa0 | acct.length;
  t.set(acct, o); o += acct.length;
  t[o++] = 0xa1; t[o++] = 0x70; // "p"
  t[o++] = 0x91; t[o++] = 0x92; t[o++] = device; // [[device,
  t[o++] = 0xc4; t[o++] = payloadLen; // bin8
  return t;
}

/** The constant part of `gmsg` frames to one group: "g" <group id> "p" bin8 header. */
export function gmsgTemplate(g: string, payloadLen: number): Uint8Array {
  const gb = te.encode(g);
  if (gb.length > 31 || payloadLen > 255) throw new Error("lean: gmsgTemplate supports group ids < 32 bytes, payloads < 256 bytes");
  const t = new Uint8Array(2 + 1 + gb.length + 2 + 2);
  let o = 0;
  t[o++] = 0xa1; t[o++] = 0x67; // "g"
  t[o++] = 0xa0 | gb.length;
  t.set(gb, o); o += gb.length;
  t[o++] = 0xa1; t[o++] = 0x70; // "p"
  t[o++] = 0xc4; t[o++] = payloadLen; // bin8
  return t;
}

/** A big-endian u32 (ping's counter, an ack's queue id): the frame header's encoding. */
export const writeU32 = writeHeader;
