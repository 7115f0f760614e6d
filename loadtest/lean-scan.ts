/**
 * The lean client's reader: server frames scanned in place for the few
 * fields the load generator needs (kind, q, id as a number, seq, rcpt.k, p),
 * with nothing allocated for `msg`, `sent`, `rcpt` and `pong` (see lean.ts
 * for why). Checked against the project's encoder by
 * test/loadtest/loadtest.test.ts.
 */

export const K_OTHER = 0;
export const K_MSG = 1;
export const K_SENT = 2;
export const K_RCPT = 3;
export const K_PONG = 4;
export const K_HELLO = 5;
export const K_READY = 6;
export const K_CLOSE = 7;
export const K_ERR = 8;

/** What scanFrame found. One instance is reused for every frame. */
export class Scanned {
  kind = K_OTHER;
  q = 0;
  /** The `id` field parsed as a decimal number, or -1 when absent or not all digits. */
  id = -1;
  seq = 0;
  /** `rcpt.k`: true for "dlv". */
  dlv = false;
  /** `rcpt.sts`: this receipt is also its message's `sent` (hello `sr`, docs/PROTOCOL.md §6.2); -1 when absent. */
  sts = -1;
  /** Offset and length of `p` (msg) inside the scanned buffer. */
  pOff = 0;
  pLen = 0;
}

// The scanner keeps its read position in a module variable: no tuple returns, no allocation.
let pos = 0;
const f64 = new Float64Array(1);
const f64b = new Uint8Array(f64.buffer);
const f32 = new Float32Array(1);
const f32b = new Uint8Array(f32.buffer);

function readNum(b: Uint8Array): number {
  const c = b[pos++]!;
  if (c < 0x80) return c;
  switch (c) {
    case 0xcc: return b[pos++]!;
    case 0xcd: { const v = (b[pos]! << 8) | b[pos + 1]!; pos += 2; return v; }
    case 0xce: { const v = ((b[pos]! << 24) | (b[pos + 1]! << 16) | (b[pos + 2]! << 8) | b[pos + 3]!) >>> 0; pos += 4; return v; }
    case 0xcf: case 0xd3: {
      const hi = ((b[pos]! << 24) | (b[pos + 1]! << 16) | (b[pos + 2]! << 8) | b[pos + 3]!) >>> 0;
      const lo = ((b[pos + 4]! << 24) | (b[pos + 5]! << 16) | (b[pos + 6]! << 8) | b[pos + 7]!) >>> 0;
      pos += 8;
      return hi * 4294967296 + lo;
    }
    case 0xcb:
      // big-endian float64
      for (let i = 0; i < 8; i++) f64b[7 - i] = b[pos + i]!;
      pos += 8;
      return f64[0]!;
    case 0xca:
      for (let i = 0; i < 4; i++) f32b[3 - i] = b[pos + i]!;
      pos += 4;
      return f32[0]!;
    case 0xd0: return (b[pos++]! << 24) >> 24;
    case 0xd1: { const v = ((b[pos]! << 8) | b[pos + 1]!) << 16 >> 16; pos += 2; return v; }
    case 0xd2: { const v = (b[pos]! << 24) | (b[pos + 1]! << 16) | (b[pos + 2]! << 8) | b[pos + 3]!; pos += 4; return v; }
    default:
      pos--;
      skip(b);
      return NaN;
  }
}

/** Length of a str or bin at pos; leaves pos at the first content byte. -1 if it is neither. */
function readLen(b: Uint8Array): number {
  const c = b[pos++]!;
  if (c >= 0xa0 && c <= 0xbf) return c & 0x1f;
  switch (c) {
    case 0xd9: case 0xc4: return b[pos++]!;
    case 0xda: case 0xc5: { const v = (b[pos]! << 8) | b[pos + 1]!; pos += 2; return v; }
    case 0xdb: case 0xc6: { const v = ((b[pos]! << 24) | (b[pos + 1]! << 16) | (b[pos + 2]! << 8) | b[pos + 3]!) >>> 0; pos += 4; return v; }
  }
  pos--;
  return -1;
}

/** Skips one msgpack value of any type. */
function skip(b: Uint8Array): void {
  const c = b[pos++]!;
  if (c < 0x80 || c >= 0xe0) return; // fixints
  if (c <= 0x8f) { for (let n = (c & 0x0f) * 2; n > 0; n--) skip(b); return; }
  if (c <= 0x9f) { for (let n = c & 0x0f; n > 0; n--) skip(b); return; }
  if (c <= 0xbf) { pos += c & 0x1f; return; }
  switch (c) {
    case 0xc0: case 0xc2: case 0xc3: return;
    case 0xc4: case 0xd9: pos += 1 + b[pos]!; return;
    case 0xc5: case 0xda: pos += 2 + ((b[pos]! << 8) | b[pos + 1]!); return;
    case 0xc6: case 0xdb: pos += 4 + (((b[pos]! << 24) | (b[pos + 1]! << 16) | (b[pos + 2]! << 8) | b[pos + 3]!) >>> 0); return;
    case 0xcc: case 0xd0: pos += 1; return;
    case 0xcd: case 0xd1: pos += 2; return;
    case 0xce: case 0xd2: case 0xca: pos += 4; return;
    case 0xcf: case 0xd3: case 0xcb: pos += 8; return;
    case 0xdc: { const n = (b[pos]! << 8) | b[pos + 1]!; pos += 2; for (let i = 0; i < n; i++) skip(b); return; }
    case 0xdd: { const n = ((b[pos]! << 24) | (b[pos + 1]! << 16) | (b[pos + 2]! << 8) | b[pos + 3]!) >>> 0; pos += 4; for (let i = 0; i < n; i++) skip(b); return; }
    case 0xde: { const n = (b[pos]! << 8) | b[pos + 1]!; pos += 2; for (let i = 0; i < 2 * n; i++) skip(b); return; }
    case 0xdf: { const n = ((b[pos]! << 24) | (b[pos + 1]! << 16) | (b[pos + 2]! << 8) | b[pos + 3]!) >>> 0; pos += 4; for (let i = 0; i < 2 * n; i++) skip(b); return; }
    case 0xd4: pos += 2; return;
    case 0xd5: pos += 3; return;
    case 0xd6: pos += 5; return;
    case 0xd7: pos += 9; return;
    case 0xd8: pos += 17; return;
    case 0xc7: pos += 2 + b[pos]!; return;
    case 0xc8: pos += 3 + ((b[pos]! << 8) | b[pos + 1]!); return;
    case 0xc9: pos += 5 + (((b[pos]! << 24) | (b[pos + 1]! << 16) | (b[pos + 2]! << 8) | b[pos + 3]!) >>> 0); return;
  }
  throw new Error(`lean: bad msgpack byte 0x${c.toString(16)}`);
}

/**
 * The value at pos as a decimal number: the digits after the id prefix (see setIdPrefix: everything up
 * to the last non-digit), or -1 when it is not a string or does not end in a digit.
 */
function readIdNum(b: Uint8Array): number {
  const n = readLen(b);
  if (n < 0) { skip(b); return -1; }
  let v = 0;
  let digits = 0;
  for (let i = 0; i < n; i++) {
    const d = b[pos + i]! - 48;
    if (d < 0 || d > 9) {
      v = 0;
      digits = 0;
    } else {
      v = v * 10 + d;
      digits++;
    }
  }
  pos += n;
  return digits > 0 ? v : -1;
}

function kindOf(b: Uint8Array, off: number, n: number): number {
  const c0 = b[off]!;
  if (n === 3) {
    if (c0 === 0x6d && b[off + 1] === 0x73 && b[off + 2] === 0x67) return K_MSG; // msg
    if (c0 === 0x65 && b[off + 1] === 0x72 && b[off + 2] === 0x72) return K_ERR; // err
  } else if (n === 4) {
    if (c0 === 0x73 && b[off + 1] === 0x65) return K_SENT; // sent
    if (c0 === 0x72 && b[off + 1] === 0x63) return K_RCPT; // rcpt
    if (c0 === 0x70 && b[off + 1] === 0x6f) return K_PONG; // pong
  } else if (n === 5) {
    if (c0 === 0x68) return K_HELLO;
    if (c0 === 0x72) return K_READY;
    if (c0 === 0x63) return K_CLOSE;
  }
  return K_OTHER;
}

/**
 * Scans one frame body (b[start..end)) of the server. Fills `out` with the
 * hot fields of msg / sent / rcpt; other kinds only get `kind` (decode them
 * with the codec if you need them).
 */
export function scanFrame(b: Uint8Array, start: number, end: number, out: Scanned): void {
  pos = start;
  const h = b[pos++]!;
  let pairs: number;
  if (h >= 0x80 && h <= 0x8f) pairs = h & 0x0f;
  else if (h === 0xde) { pairs = (b[pos]! << 8) | b[pos + 1]!; pos += 2; }
  else { out.kind = K_OTHER; return; }
  out.kind = K_OTHER;
  out.q = 0;
  out.id = -1;
  out.seq = 0;
  out.dlv = false;
  out.sts = -1;
  out.pLen = 0;
  for (let i = 0; i < pairs && pos < end; i++) {
    const kl = readLen(b);
    if (kl < 0) { skip(b); skip(b); continue; }
    const ko = pos;
    pos += kl;
    const k0 = b[ko]!;
    if (kl === 1) {
      if (k0 === 0x74) { // t
        const n = readLen(b);
        out.kind = kindOf(b, pos, n);
        pos += n;
        if (out.kind === K_OTHER || out.kind >= K_HELLO) return; // the caller decodes these fully
        continue;
      }
      if (k0 === 0x71) { out.q = readNum(b); continue; } // q
      if (k0 === 0x70) { // p
        const n = readLen(b);
        if (n < 0) { skip(b); continue; }
        out.pOff = pos;
        out.pLen = n;
        pos += n;
        continue;
      }
      if (k0 === 0x6b) { // k: "dlv" | "read"
        const n = readLen(b);
        out.dlv = n === 3 && b[pos] === 0x64;
        pos += n;
        continue;
      }
    } else if (kl === 2 && k0 === 0x69 && b[ko + 1] === 0x64) { // id
      out.id = readIdNum(b);
      continue;
    } else if (kl === 3 && k0 === 0x73 && b[ko + 1] === 0x65 && b[ko + 2] === 0x71) { // seq
      out.seq = readNum(b);
      continue;
    } else if (kl === 3 && k0 === 0x73 && b[ko + 1] === 0x74 && b[ko + 2] === 0x73) { // sts
      out.sts = readNum(b);
      continue;
    }
    skip(b);
  }
}
