/**
 * A small msgpack encoder for what the server sends: plain objects of
 * strings, numbers, booleans, null, Uint8Array and arrays. It writes the same
 * bytes msgpackr writes with our options (smallest header for each value,
 * integers above 32 bits as float64, undefined fields left out, undefined in
 * arrays as nil), so docs/PROTOCOL.md's test vectors hold for both; the
 * tests check that on random values. About 15x faster than msgpackr for a
 * delivered message (loadtest/microbench.ts), which matters because every
 * message is encoded three times (delivery, sent, receipt). No I/O.
 */

/**
 * Where an encode writes: the scratch buffer (encodeValue copies the result out), or, during encodeValueInto, a
 * buffer of the caller's (an outbound buffer: the frame is encoded where it is sent from). Multi-byte fields are
 * written byte by byte rather than through a DataView, so that the target can be any Uint8Array.
 */
let buf: Uint8Array = new Uint8Array(64 * 1024);
let pos = 0;
/** During encodeValueInto: asked for a larger buffer when the value outgrows the caller's. */
let target: EncodeTarget | null = null;
const utf8 = new TextEncoder();
const f64 = new Float64Array(1);
const f64Bytes = new Uint8Array(f64.buffer);
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** A caller's buffer that an encode may outgrow (src/protocol/outbound.ts Outbound). */
export interface EncodeTarget {
  /** A buffer of at least `need` bytes holding this one's first `keep` (the encode goes on there). */
  grow(keep: number, need: number): Uint8Array;
}

function room(n: number): void {
  if (pos + n <= buf.length) return;
  if (target !== null) {
    buf = target.grow(pos, pos + n);
    return;
  }
  const grown = new Uint8Array(Math.max(buf.length * 2, pos + n));
  grown.set(buf.subarray(0, pos));
  buf = grown;
}

/** Big-endian 16 and 32 bits at `p` (a Uint8Array store keeps the low 8 bits, so negative int16/int32 come out in two's complement). */
function w16(p: number, v: number): void {
  buf[p] = v >> 8;
  buf[p + 1] = v;
}
function w32(p: number, v: number): void {
  buf[p] = v >>> 24;
  buf[p + 1] = v >>> 16;
  buf[p + 2] = v >>> 8;
  buf[p + 3] = v;
}

function header(n: number, fix: number, fixMax: number, c16: number, c32: number): void {
  room(5);
  if (n < fixMax) buf[pos++] = fix | n;
  else if (n < 0x10000) {
    buf[pos++] = c16;
    w16(pos, n);
    pos += 2;
  } else {
    buf[pos++] = c32;
    w32(pos, n);
    pos += 4;
  }
}

function str(s: string): void {
  const len = s.length;
  // ASCII fast path: one byte per char, written while checked (one pass over the string, not a check and then a
  // copy); the header goes in front once every char was ASCII, else the bytes are overwritten by the UTF-8 path.
  if (len < 256) {
    room(2 + len);
    let p = len < 32 ? pos + 1 : pos + 2;
    let i = 0;
    for (; i < len; i++) {
      const c = s.charCodeAt(i);
      if (c > 0x7f) break;
      buf[p++] = c;
    }
    if (i === len) {
      if (len < 32) buf[pos] = 0xa0 | len;
      else {
        buf[pos] = 0xd9;
        buf[pos + 1] = len;
      }
      pos = p;
      return;
    }
  }
  const bytes = utf8.encode(s);
  const n = bytes.length;
  room(5 + n);
  if (n < 32) buf[pos++] = 0xa0 | n;
  else sized(n, 0xd9, 0xda, 0xdb);
  buf.set(bytes, pos);
  pos += n;
}

/** The 8-, 16- or 32-bit length header of a str or bin (room already made). */
function sized(n: number, c8: number, c16: number, c32: number): void {
  if (n < 0x100) {
    buf[pos++] = c8;
    buf[pos++] = n;
  } else if (n < 0x10000) {
    buf[pos++] = c16;
    w16(pos, n);
    pos += 2;
  } else {
    buf[pos++] = c32;
    w32(pos, n);
    pos += 4;
  }
}

function num(v: number): void {
  room(9);
  if (Number.isInteger(v)) {
    if (v >= 0) {
      if (v < 0x80) {
        buf[pos++] = v;
        return;
      }
      if (v < 0x100) {
        buf[pos++] = 0xcc;
        buf[pos++] = v;
        return;
      }
      if (v < 0x10000) {
        buf[pos++] = 0xcd;
        w16(pos, v);
        pos += 2;
        return;
      }
      if (v <= 0xffffffff) {
        buf[pos++] = 0xce;
        w32(pos, v);
        pos += 4;
        return;
      }
    } else {
      if (v >= -0x20) {
        buf[pos++] = v & 0xff;
        return;
      }
      if (v >= -0x80) {
        buf[pos++] = 0xd0;
        buf[pos++] = v;
        return;
      }
      if (v >= -0x8000) {
        buf[pos++] = 0xd1;
        w16(pos, v);
        pos += 2;
        return;
      }
      if (v >= -0x80000000) {
        buf[pos++] = 0xd2;
        w32(pos, v);
        pos += 4;
        return;
      }
    }
  }
  buf[pos++] = 0xcb;
  f64[0] = v;
  for (let i = 0; i < 8; i++) buf[pos + i] = f64Bytes[LITTLE_ENDIAN ? 7 - i : i]!;
  pos += 8;
}

function value(v: unknown): void {
  switch (typeof v) {
    case "string":
      return str(v);
    case "number":
      return num(v);
    case "boolean":
      room(1);
      buf[pos++] = v ? 0xc3 : 0xc2;
      return;
    case "undefined":
      room(1);
      buf[pos++] = 0xc0;
      return;
    case "object": {
      if (v === null) {
        room(1);
        buf[pos++] = 0xc0;
        return;
      }
      if (v instanceof Uint8Array) {
        const n = v.length;
        room(5 + n);
        sized(n, 0xc4, 0xc5, 0xc6);
        buf.set(v, pos);
        pos += n;
        return;
      }
      if (Array.isArray(v)) {
        header(v.length, 0x90, 16, 0xdc, 0xdd);
        for (let i = 0; i < v.length; i++) value(v[i]);
        return;
      }
      // One pass over the fields (each read once), not a count and then a write: the header's byte is kept and
      // filled in after; a map of 16 or more (none that the server sends) moves its entries up for a longer one.
      const o = v as Record<string, unknown>;
      room(1);
      const at = pos++;
      let n = 0;
      for (const k in o) {
        const x = o[k];
        if (x === undefined) continue;
        n++;
        str(k);
        value(x);
      }
      if (n < 16) buf[at] = 0x80 | n;
      else {
        const extra = n < 0x10000 ? 2 : 4;
        room(extra);
        buf.copyWithin(at + 1 + extra, at + 1, pos);
        pos += extra;
        buf[at] = extra === 2 ? 0xde : 0xdf;
        if (extra === 2) w16(at + 1, n);
        else w32(at + 1, n);
      }
      return;
    }
    default:
      throw new TypeError(`encoder: cannot encode a ${typeof v}; stanzas hold strings, numbers, booleans, null, Uint8Array, arrays and plain objects`);
  }
}

/** Encodes one value; returns a fresh copy (safe to keep). */
export function encodeValue(v: unknown): Uint8Array {
  pos = 0;
  value(v);
  return buf.slice(0, pos);
}

/**
 * Encodes one value into `into` from `at` on and returns where it ends; `into` is the caller's (an outbound buffer),
 * which `t` grows when the value needs more room (then the bytes are in the buffer `t` handed out). For a frame that
 * is not kept: no body of its own, and no copy of one into the buffer it is sent from.
 */
export function encodeValueInto(v: unknown, into: Uint8Array, at: number, t: EncodeTarget): number {
  const scratchBuf = buf;
  buf = into;
  pos = at;
  target = t;
  try {
    value(v);
    return pos;
  } finally {
    buf = scratchBuf;
    target = null;
  }
}

/**
 * `map` (an encoded fixmap of up to 14 entries: the caller checks) with one more entry `key: v` written after its
 * last, the header counting it; a fresh copy. Built in the scratch buffer, so one allocation: encoding the entry as
 * a map of its own and splicing it on (a temporary object, a second encoding and copy, a `subarray`) cost 3.7 % of the
 * server's samples at `pairs --pairs 10 --window 16`, where nearly every receipt carries its message's `sent`.
 */
export function encodeWithEntry(map: Uint8Array, key: string, v: unknown): Uint8Array {
  pos = 0;
  withEntry(map, key, v);
  return buf.slice(0, pos);
}

/** encodeWithEntry into the caller's buffer (see encodeValueInto): returns where it ends. */
export function encodeWithEntryInto(map: Uint8Array, key: string, v: unknown, into: Uint8Array, at: number, t: EncodeTarget): number {
  const scratchBuf = buf;
  buf = into;
  pos = at;
  target = t;
  try {
    withEntry(map, key, v);
    return pos;
  } finally {
    buf = scratchBuf;
    target = null;
  }
}

function withEntry(map: Uint8Array, key: string, v: unknown): void {
  const at = pos;
  room(map.length);
  buf.set(map, at);
  buf[at] = map[0]! + 1;
  pos = at + map.length;
  str(key);
  value(v);
}
