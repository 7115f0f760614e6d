/**
 * A strict msgpack decoder for frame bodies: the profile of
 * docs/PROTOCOL.md §3, refused where a general decoder would guess.
 *
 * - Strings must be valid UTF-8 (`bad_field`): a lenient decoder replaces bad
 *   bytes with U+FFFD, so two client ids that differ only in invalid bytes
 *   became the same id and the second message was answered with the first
 *   one's `sent` and never delivered.
 * - Integers must lie within ±(2^53 − 1) (`bad_field`): anything decoded must
 *   be exactly representable and encodable back (a BigInt was neither, and an
 *   echoed one crashed the frame handler).
 * - Map keys must be strings and must not repeat (`bad_frame`): with "last one
 *   wins", a check that read the first copy saw another stanza than the
 *   handler that read the last.
 * - Extension types are refused (`bad_frame`); the protocol uses none.
 * - Nesting deeper than MAX_DEPTH is refused (`bad_frame`), so a body of
 *   16 MiB of array headers cannot exhaust the stack.
 *
 * Cost (loadtest/microbench-decode.ts, on a loaded 2-core VM, so ±50%): a
 * 1:1 `msg` body 0.9-1.6 µs against msgpackr's 0.7-1.1 µs, an `ack` 0.2 µs
 * for both; small fields alone (a short string, a bin, a float) cost the same
 * as msgpackr's or less. Short ASCII strings, nearly every field, take a byte
 * check and one flat copy (`ascii` below), no TextDecoder; longer ones one
 * fatal TextDecoder call. No I/O.
 */
import { ErrorCode, ProtocolError } from "./errors.ts";

/** Deepest nesting of arrays and maps accepted (a stanza needs 4; an iq argument a few more). */
export const MAX_DEPTH = 32;
/** Strings up to this many bytes take the ASCII fast path when they are ASCII. */
const SHORT_STRING = 32;

const strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

let src: Uint8Array = new Uint8Array(0);
let pos = 0;
/** Where the body ends in `src` (a frame's body is a span of the chunk it arrived in). */
let lim = 0;
/**
 * Floats are read through an 8-byte scratch, not a DataView per body: `ts`
 * and large `q` arrive as float64 (§3), so most bodies have one, and a
 * DataView per body doubled the cost of decoding an `ack`.
 */
const f64 = new Float64Array(1);
const f32 = new Float32Array(f64.buffer, 0, 1);
const scratch = new Uint8Array(f64.buffer);
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function float(n: 4 | 8): number {
  need(n);
  for (let i = 0; i < n; i++) scratch[LITTLE_ENDIAN ? n - 1 - i : i] = src[pos + i]!;
  pos += n;
  return n === 8 ? f64[0]! : f32[0]!;
}

const badFrame = (m: string) => new ProtocolError(ErrorCode.BAD_FRAME, m);

function need(n: number): void {
  if (pos + n > lim) throw badFrame("body is not valid msgpack: truncated");
}

function u8(): number {
  need(1);
  return src[pos++]!;
}
function u16(): number {
  need(2);
  const v = (src[pos]! << 8) | src[pos + 1]!;
  pos += 2;
  return v;
}
function u32(): number {
  need(4);
  const v = ((src[pos]! << 24) | (src[pos + 1]! << 16) | (src[pos + 2]! << 8) | src[pos + 3]!) >>> 0;
  pos += 4;
  return v;
}

function int64(signed: boolean): number {
  const hi = signed ? u32() | 0 : u32();
  const lo = u32();
  // |hi| < 2^21 keeps hi * 2^32 + lo exact; then the exact bound.
  const v = hi * 0x100000000 + lo;
  if (hi > 0x1fffff || hi < -0x200000 || v > Number.MAX_SAFE_INTEGER || v < -Number.MAX_SAFE_INTEGER) {
    throw new ProtocolError(ErrorCode.BAD_FIELD, "an integer is outside ±(2^53 − 1), which this protocol does not carry");
  }
  return v;
}

function str(n: number): string {
  need(n);
  const start = pos;
  pos += n;
  if (n <= SHORT_STRING) {
    const end = start + n;
    for (let i = start; i < end; i++) if (src[i]! > 0x7f) return utf8(start, n);
    switch (n) {
      case 0: return "";
      case 1: return ONE_CHAR[src[start]!]!;
      case 2: case 3: return tiny(start, n);
      default: return ascii(src, start, end);
    }
  }
  return utf8(start, n);
}

/**
 * Strings of one to three ASCII bytes (every map key of a stanza, `t`'s value, short account names) come from a
 * table instead of a fresh string each: a new string used as a property key or Map key is hashed and looked up
 * in the engine's atom table first, and the decoder's `fromCharCode` calls were 2.4 % of the server's samples at
 * `pairs --pairs 10 --window 16`. One character: all 128. Two or three: a direct-mapped cache of 4 096 slots
 * keyed by the bytes (a slot holds the last string that hashed there; its bytes are compared before use).
 */
const ONE_CHAR: string[] = Array.from({ length: 128 }, (_, b) => String.fromCharCode(b));
const TINY_SLOTS = 4096;
const tinyCodes = new Int32Array(TINY_SLOTS).fill(-1);
const tinyStrings: string[] = new Array<string>(TINY_SLOTS).fill("");
function tiny(start: number, n: 2 | 3): string {
  const b0 = src[start]!;
  const b1 = src[start + 1]!;
  // 7 bits a byte (ASCII) and the length above them: distinct for every string of 2 or 3 ASCII bytes.
  const code = n === 2 ? (2 << 21) | (b0 << 7) | b1 : (3 << 21) | (b0 << 14) | (b1 << 7) | src[start + 2]!;
  const slot = Math.imul(code, 0x9e3779b1) >>> 20; // the top 12 bits of a multiplicative hash
  if (tinyCodes[slot] === code) return tinyStrings[slot]!;
  const s = n === 2 ? String.fromCharCode(b0, b1) : String.fromCharCode(b0, b1, src[start + 2]!);
  tinyCodes[slot] = code;
  tinyStrings[slot] = s;
  return s;
}

/**
 * Bytes already checked to be ASCII, as one flat string. Not `s += fromCharCode(b)`: that builds a
 * rope, and ids and account names are Map keys downstream (dedup, directory, usage), where hashing
 * first flattens it: a 17-byte id cost 250-300 ns decoded and looked up that way against 45-65 ns
 * through Buffer's latin1Slice (/tmp microbenchmark, taskset -c 1, Bun 1.4.5). latin1 equals ASCII
 * for these bytes.
 */
// No Buffer in a browser (the SDK's WebSocket wire runs there): the loop below is the fallback.
const latin1Slice = typeof Buffer === "undefined" ? undefined : (Buffer.prototype as unknown as { latin1Slice?: (this: Uint8Array, start: number, end: number) => string }).latin1Slice;
function ascii(b: Uint8Array, start: number, end: number): string {
  if (latin1Slice !== undefined) return latin1Slice.call(b, start, end);
  let s = "";
  for (let i = start; i < end; i++) s += String.fromCharCode(b[i]!);
  return s;
}

function utf8(start: number, n: number): string {
  try {
    return strict.decode(src.subarray(start, start + n));
  } catch {
    throw new ProtocolError(ErrorCode.BAD_FIELD, "a string is not valid UTF-8");
  }
}

function bin(n: number): Uint8Array {
  need(n);
  // A copy: the body is a view of the frame decoder's buffer, reused once the frame callback returns.
  const b = src.slice(pos, pos + n);
  pos += n;
  return b;
}

/** A count of entries, each at least one byte (two for a map entry): refused at once when the body cannot hold them. */
function count(n: number, perEntry: number): number {
  if (n * perEntry > lim - pos) throw badFrame("body is not valid msgpack: truncated");
  return n;
}

function array(n: number, depth: number): unknown[] {
  count(n, 1);
  const out = new Array<unknown>(n);
  for (let i = 0; i < n; i++) out[i] = value(depth);
  return out;
}

function map(n: number, depth: number): Record<string, unknown> {
  count(n, 2);
  const out: Record<string, unknown> = {};
  for (let i = 0; i < n; i++) {
    const k = key();
    // Decoded values are never undefined: a defined value is a repeat or an inherited name (toString), told apart by hasOwn.
    if (out[k] !== undefined && Object.prototype.hasOwnProperty.call(out, k)) throw badFrame(`map key ${JSON.stringify(k.slice(0, 32))} repeated`);
    const v = value(depth);
    // "__proto__" as a plain assignment would set the prototype instead of adding a key.
    if (k === "__proto__") Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true });
    else out[k] = v;
  }
  return out;
}

function key(): string {
  const b = u8();
  if ((b & 0xe0) === 0xa0) return str(b & 0x1f);
  if (b === 0xd9) return str(u8());
  if (b === 0xda) return str(u16());
  if (b === 0xdb) return str(u32());
  throw badFrame("map keys must be strings");
}

function value(depth: number): unknown {
  const b = u8();
  if (b < 0x80) return b; // positive fixint
  if (b >= 0xe0) return b - 0x100; // negative fixint
  if (b < 0x90) return map(b & 0x0f, nest(depth));
  if (b < 0xa0) return array(b & 0x0f, nest(depth));
  if (b < 0xc0) return str(b & 0x1f);
  switch (b) {
    case 0xc0: return null;
    case 0xc2: return false;
    case 0xc3: return true;
    case 0xc4: return bin(u8());
    case 0xc5: return bin(u16());
    case 0xc6: return bin(u32());
    case 0xca: return float(4);
    case 0xcb: return float(8);
    case 0xcc: return u8();
    case 0xcd: return u16();
    case 0xce: return u32();
    case 0xcf: return int64(false);
    case 0xd0: return (u8() << 24) >> 24;
    case 0xd1: return (u16() << 16) >> 16;
    case 0xd2: return u32() | 0;
    case 0xd3: return int64(true);
    case 0xd9: return str(u8());
    case 0xda: return str(u16());
    case 0xdb: return str(u32());
    case 0xdc: return array(u16(), nest(depth));
    case 0xdd: return array(u32(), nest(depth));
    case 0xde: return map(u16(), nest(depth));
    case 0xdf: return map(u32(), nest(depth));
    case 0xc1: throw badFrame("body is not valid msgpack: byte 0xc1 is never used");
    default: // 0xc7-0xc9 ext 8/16/32, 0xd4-0xd8 fixext
      throw badFrame("msgpack extension types are not part of this protocol");
  }
}

function nest(depth: number): number {
  if (depth >= MAX_DEPTH) throw badFrame(`nested deeper than ${MAX_DEPTH} arrays or maps`);
  return depth + 1;
}

/** Decodes exactly one msgpack value filling `body`; throws a non-fatal ProtocolError (bad_frame or bad_field) otherwise. */
export function decodeValue(body: Uint8Array): unknown {
  return decodeValueAt(body, 0, body.length);
}

/**
 * decodeValue of the body at `buf[start, end)`, with no view made of it: the server decodes each frame where it lies
 * in its read's chunk (FrameDecoder.scan), and a `subarray` per frame was 1.4-2 % of its samples at
 * `pairs --pairs 10 --window 16`.
 */
export function decodeValueAt(buf: Uint8Array, start: number, end: number): unknown {
  src = buf;
  pos = start;
  lim = end;
  try {
    const v = value(0);
    if (pos !== end) throw badFrame(`body is not valid msgpack: ${end - pos} bytes after the value`);
    return v;
  } finally {
    src = EMPTY; // hold no frame buffer between calls
  }
}

const EMPTY: Uint8Array = new Uint8Array(0);
