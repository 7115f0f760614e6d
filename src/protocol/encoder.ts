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

let buf = new Uint8Array(64 * 1024);
let view = new DataView(buf.buffer);
let pos = 0;
const utf8 = new TextEncoder();

function room(n: number): void {
  if (pos + n <= buf.length) return;
  const grown = new Uint8Array(Math.max(buf.length * 2, pos + n));
  grown.set(buf.subarray(0, pos));
  buf = grown;
  view = new DataView(buf.buffer);
}

function header(n: number, fix: number, fixMax: number, c16: number, c32: number): void {
  room(5);
  if (n < fixMax) buf[pos++] = fix | n;
  else if (n < 0x10000) {
    buf[pos++] = c16;
    view.setUint16(pos, n);
    pos += 2;
  } else {
    buf[pos++] = c32;
    view.setUint32(pos, n);
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
    view.setUint16(pos, n);
    pos += 2;
  } else {
    buf[pos++] = c32;
    view.setUint32(pos, n);
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
        view.setUint16(pos, v);
        pos += 2;
        return;
      }
      if (v <= 0xffffffff) {
        buf[pos++] = 0xce;
        view.setUint32(pos, v);
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
        view.setInt8(pos++, v);
        return;
      }
      if (v >= -0x8000) {
        buf[pos++] = 0xd1;
        view.setInt16(pos, v);
        pos += 2;
        return;
      }
      if (v >= -0x80000000) {
        buf[pos++] = 0xd2;
        view.setInt32(pos, v);
        pos += 4;
        return;
      }
    }
  }
  buf[pos++] = 0xcb;
  view.setFloat64(pos, v);
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
        if (extra === 2) view.setUint16(at + 1, n);
        else view.setUint32(at + 1, n);
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
 * Encodes one value into the scratch buffer and returns its length: the bytes are `scratch()[0, n)`, valid until
 * the next encode. For a frame copied at once into an outbound buffer: no fresh copy made and dropped per frame.
 */
export function encodeValueScratch(v: unknown): number {
  pos = 0;
  value(v);
  return pos;
}

/** The scratch buffer the last *Scratch call encoded into (it may have grown, so ask after encoding). */
export function scratch(): Uint8Array {
  return buf;
}

/**
 * `map` (an encoded fixmap of up to 14 entries: the caller checks) with one more entry `key: v` written after its
 * last, the header counting it; a fresh copy. Built in the scratch buffer, so one allocation: encoding the entry as
 * a map of its own and splicing it on (a temporary object, a second encoding and copy, a `subarray`) cost 3.7 % of the
 * server's samples at `pairs --pairs 10 --window 16`, where nearly every receipt carries its message's `sent`.
 */
export function encodeWithEntry(map: Uint8Array, key: string, v: unknown): Uint8Array {
  return buf.slice(0, encodeWithEntryScratch(map, key, v));
}

/** encodeWithEntry into the scratch buffer: returns the length (see encodeValueScratch). */
export function encodeWithEntryScratch(map: Uint8Array, key: string, v: unknown): number {
  pos = 0;
  room(map.length);
  buf.set(map, 0);
  buf[0] = map[0]! + 1;
  pos = map.length;
  str(key);
  value(v);
  return pos;
}
