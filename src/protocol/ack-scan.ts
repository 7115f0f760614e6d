/**
 * The inbound `ack` read straight from its bytes (issue 20 target 3: "a scanning decoder for inbound msg and
 * ack"). Two of the three frames a device sends per message are acks (the recipient's of the message, the
 * sender's of its receipt), and the general path made a map, interned its keys, made the array, then walked the
 * schema over it (validate) and wrapped the result. Here the bytes are matched against what an ack is, and the
 * stanza is built as the general decoder would build it (the same keys, in the same order).
 *
 * It accepts only what the general path accepts, and gives up (null) on anything else, which then takes the
 * general path with its exact refusals: a fixmap of `t: "ack"` first, then `q` (an array of 1..LIMITS.acks
 * integers, each a positive fixint, uint 8/16/32 or an integral float64 within 0..2^53 − 1, the forms our
 * encoder and msgpackr write) and/or `sc` (the same forms), once each, nothing after. Anything unusual (another
 * key, a repeat, nil, uint64, a negative or fractional number, no `q` and no `sc`) is the general path's to
 * judge. No I/O; test/protocol/ack-scan.test.ts checks it against decode + validate.
 */
import type { Ack } from "./stanzas.ts";
import { LIMITS } from "./stanzas.ts";

const f64 = new Float64Array(1);
const f64Bytes = new Uint8Array(f64.buffer);
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Where the last number read ended (scanUint's second result, kept here rather than in an object per call). */
let next = 0;

/** A non-negative safe integer at `buf[p]`, or -1 (not one of the forms above, or past `end`); sets `next`. */
function scanUint(buf: Uint8Array, p: number, end: number): number {
  if (p >= end) return -1;
  const b = buf[p]!;
  if (b < 0x80) {
    next = p + 1;
    return b;
  }
  switch (b) {
    case 0xcc:
      if (p + 2 > end) return -1;
      next = p + 2;
      return buf[p + 1]!;
    case 0xcd:
      if (p + 3 > end) return -1;
      next = p + 3;
      return (buf[p + 1]! << 8) | buf[p + 2]!;
    case 0xce:
      if (p + 5 > end) return -1;
      next = p + 5;
      return ((buf[p + 1]! << 24) | (buf[p + 2]! << 16) | (buf[p + 3]! << 8) | buf[p + 4]!) >>> 0;
    case 0xcb: {
      // Queue ids above 2^32 arrive as float64 (§3): integral and within ±(2^53 − 1), else the general path refuses.
      if (p + 9 > end) return -1;
      for (let i = 0; i < 8; i++) f64Bytes[LITTLE_ENDIAN ? 7 - i : i] = buf[p + 1 + i]!;
      const v = f64[0]!;
      if (!Number.isSafeInteger(v) || v < 0) return -1;
      next = p + 9;
      return v;
    }
    default:
      return -1;
  }
}

/** The `ack` at `buf[start, end)` (one frame body), or null: not an ack, or one for the general path to judge. */
export function scanAck(buf: Uint8Array, start: number, end: number): Ack | null {
  // fixmap of 2 or 3 entries, then "t": "ack" (a1 74 a3 61 63 6b).
  if (end - start < 9) return null;
  const h = buf[start]!;
  if (h !== 0x82 && h !== 0x83) return null;
  if (buf[start + 1] !== 0xa1 || buf[start + 2] !== 0x74 || buf[start + 3] !== 0xa3 || buf[start + 4] !== 0x61 || buf[start + 5] !== 0x63 || buf[start + 6] !== 0x6b) return null;
  let p = start + 7;
  const out: Ack = { t: "ack" };
  for (let i = h & 0x0f; i > 1; i--) {
    if (p + 2 > end) return null;
    if (buf[p] === 0xa1 && buf[p + 1] === 0x71) {
      // "q": fixarray or array16 of queue ids
      if (out.q !== undefined) return null;
      p += 2;
      if (p >= end) return null;
      const a = buf[p]!;
      let n: number;
      if (a > 0x90 && a <= 0x9f) {
        n = a & 0x0f;
        p += 1;
      } else if (a === 0xdc && p + 3 <= end) {
        n = (buf[p + 1]! << 8) | buf[p + 2]!;
        p += 3;
      } else return null;
      if (n < 1 || n > LIMITS.acks) return null;
      const q = new Array<number>(n);
      for (let k = 0; k < n; k++) {
        const v = scanUint(buf, p, end);
        if (v < 0) return null;
        q[k] = v;
        p = next;
      }
      out.q = q;
    } else if (buf[p] === 0xa2 && buf[p + 1] === 0x73 && p + 2 < end && buf[p + 2] === 0x63) {
      // "sc": the cumulative count of `sent` frames confirmed
      if (out.sc !== undefined) return null;
      const v = scanUint(buf, p + 3, end);
      if (v < 0) return null;
      out.sc = v;
      p = next;
    } else return null;
  }
  return p === end ? out : null;
}
