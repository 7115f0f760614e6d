/**
 * Framing: a 4-byte big-endian unsigned length, then that many bytes of
 * msgpack body. No I/O here, so tests can feed bytes split at every offset.
 *
 * The decoder hands out views of the chunk it was fed (no copy) and copies
 * only a frame that straddles two chunks, into a scratch buffer owned by the
 * decoder. The length is checked against the maximum as soon as the four
 * header bytes are known, before any body byte is buffered.
 */
import { ErrorCode, ProtocolError } from "./errors.ts";

export const HEADER_SIZE = 4;
/** Default and upper bound of the negotiable maximum body size. */
export const DEFAULT_MAX_FRAME = 64 * 1024;
export const HARD_MAX_FRAME = 16 * 1024 * 1024;

/** A scratch buffer above this size is released once its frame is done, so an idle connection keeps none. */
const KEEP_SCRATCH_BYTES = 512;

/**
 * A frame split across chunks, its bytes so far. Kept between frames (with `have` 0) while its buffer is small, so
 * a connection whose frames often straddle reads does not make a buffer per frame; an idle one that never had a
 * split frame holds none (one object instead of three fields on every decoder: the server's Conn is its decoder).
 */
class Partial {
  /** How many bytes of the pending frame (header included) are in `buf`. */
  have = 0;
  /** Total size (header + body) of the pending frame, or 0 while its header is incomplete. */
  need = 0;
  constructor(public buf: Uint8Array) {}
}

export class FrameDecoder {
  /** The frame pending across chunks, if any; null when none is pending and no small buffer is kept. */
  private part: Partial | null = null;

  private max: number;

  constructor(maxFrame: number = DEFAULT_MAX_FRAME) {
    this.max = checkedMax(maxFrame);
  }

  /** The largest body accepted; may change between frames (the server raises it at login). */
  get maxFrame(): number {
    return this.max;
  }

  set maxFrame(n: number) {
    this.max = checkedMax(n);
  }

  /** True when part of a frame is buffered (useful to tell a clean end of stream from a cut one). */
  get pending(): boolean {
    return this.part !== null && this.part.have > 0;
  }

  /**
   * Feed one chunk; calls `onFrame` once per complete body, in order. The body
   * view is valid only during the call. Throws a fatal ProtocolError when a
   * length exceeds `maxFrame`; frames before it in the chunk were delivered.
   */
  feed(chunk: Uint8Array, onFrame: (body: Uint8Array) => void): void {
    this.scan(chunk, (buf, start, end) => onFrame(buf.subarray(start, end)));
  }

  /**
   * feed(), each body handed on as where it lies (`buf[start, end)`: the chunk, or the decoder's scratch for a
   * frame split across chunks) instead of as a view: the server decodes it there (decodeBodyAt), so no view is made
   * per frame. The span is valid only during the call.
   */
  scan(chunk: Uint8Array, onSpan: (buf: Uint8Array, start: number, end: number) => void): void {
    let off = 0;
    const len = chunk.length;
    const p = this.part;
    if (p !== null && p.have > 0) {
      off = this.continuePending(p, chunk, onSpan);
      if (off < 0) return; // chunk fully consumed into the pending frame
    }
    while (off + HEADER_SIZE <= len) {
      // Unrolled big-endian read; `>>> 0` keeps it unsigned.
      const size = ((chunk[off]! << 24) | (chunk[off + 1]! << 16) | (chunk[off + 2]! << 8) | chunk[off + 3]!) >>> 0;
      this.check(size);
      const end = off + HEADER_SIZE + size;
      if (end > len) break;
      onSpan(chunk, off + HEADER_SIZE, end);
      off = end;
    }
    if (off < len) this.stash(chunk, off);
  }

  /** Returns the offset in `chunk` after the completed pending frame, or -1 if the chunk was all consumed. */
  private continuePending(p: Partial, chunk: Uint8Array, onSpan: (buf: Uint8Array, start: number, end: number) => void): number {
    let off = 0;
    let scratch = p.buf;
    if (p.need === 0) {
      // Header incomplete: top it up to 4 bytes first.
      const take = Math.min(HEADER_SIZE - p.have, chunk.length);
      scratch.set(chunk.subarray(0, take), p.have);
      p.have += take;
      off = take;
      if (p.have < HEADER_SIZE) return -1;
      const size = ((scratch[0]! << 24) | (scratch[1]! << 16) | (scratch[2]! << 8) | scratch[3]!) >>> 0;
      this.check(size);
      p.need = HEADER_SIZE + size;
      if (scratch.length < p.need) {
        const grown = new Uint8Array(p.need);
        grown.set(scratch.subarray(0, HEADER_SIZE));
        p.buf = scratch = grown;
      }
    }
    const take = Math.min(p.need - p.have, chunk.length - off);
    scratch.set(chunk.subarray(off, off + take), p.have);
    p.have += take;
    off += take;
    if (p.have < p.need) return -1;
    const need = p.need;
    p.have = 0;
    p.need = 0;
    if (scratch.length > KEEP_SCRATCH_BYTES) this.part = null;
    onSpan(scratch, HEADER_SIZE, need);
    return off;
  }

  private stash(chunk: Uint8Array, off: number): void {
    const rest = chunk.length - off;
    let need = 0;
    let size = HEADER_SIZE;
    if (rest >= HEADER_SIZE) {
      // The header is complete (and was checked in the loop); reserve the whole frame.
      const body =
        ((chunk[off]! << 24) | (chunk[off + 1]! << 16) | (chunk[off + 2]! << 8) | chunk[off + 3]!) >>> 0;
      need = size = HEADER_SIZE + body;
    }
    let p = this.part;
    if (p === null) p = this.part = new Partial(new Uint8Array(Math.max(size, 64)));
    else if (p.buf.length < size) p.buf = new Uint8Array(Math.max(size, 64));
    p.buf.set(chunk.subarray(off), 0);
    p.have = rest;
    p.need = need;
  }

  private check(size: number): void {
    if (size > this.max) {
      throw new ProtocolError(
        ErrorCode.FRAME_TOO_LARGE,
        `frame of ${size} bytes exceeds the maximum of ${this.max}`,
        true,
      );
    }
  }
}

function checkedMax(n: number): number {
  if (!Number.isInteger(n) || n < 1 || n > HARD_MAX_FRAME) {
    throw new RangeError(`FrameDecoder: maxFrame must be an integer in 1..${HARD_MAX_FRAME}, got ${n}`);
  }
  return n;
}

/** Writes the 4-byte length header of a `size`-byte body into `out` at `off`. */
export function writeHeader(out: Uint8Array, off: number, size: number): void {
  out[off] = size >>> 24;
  out[off + 1] = (size >>> 16) & 0xff;
  out[off + 2] = (size >>> 8) & 0xff;
  out[off + 3] = size & 0xff;
}

/** A whole frame (header + body) in a new buffer. For tests and tools; the server writes headers in place. */
export function frame(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + body.length);
  writeHeader(out, 0, body.length);
  out.set(body, HEADER_SIZE);
  return out;
}
