/**
 * The outbound buffer of one connection, shared by the server's transport,
 * the SDK and the load generator. No I/O: it is handed something that writes.
 *
 * Why it exists (docs: /work/shared/notes/bun-platform.md §1, §3):
 * - Bun's `write()` does not buffer. It returns how many bytes the kernel
 *   accepted (possibly part of them, or 0), or -1 when the socket is closed;
 *   the rest must be kept and written again on `drain`.
 * - Each `write()` is one syscall (~4.4 µs fixed cost, no corking), so frames
 *   are appended here and written with one `write()` per flush: echo with one
 *   write per frame measured ~115–150k frames per server CPU-second, with all
 *   frames of a read in one write ~1.6–1.8M.
 *
 * Frames are appended whole (header and body); what the kernel refuses stays
 * at the front, so the buffer may start in the middle of a frame but always
 * ends at a frame boundary. Past `limit` unsent bytes `room()` says no: what
 * to do then (close a slow consumer, wait for `drain`) is the caller's call.
 */
import { takesField } from "./codec.ts";
import { encodeValueInto, encodeWithEntryInto, type EncodeTarget } from "./encoder.ts";
import { HEADER_SIZE, writeHeader } from "./frame.ts";

/**
 * Writes `bytes[0, length)`; returns how many were accepted (0..length), or -1 when the connection is closed. A Bun
 * Socket's `write(bytes, 0, length)` is one: the length goes with the buffer, so a flush makes no `subarray` view
 * (1 % of the server's samples at `pairs --pairs 500 --rate 9000`, BENCHMARKS.md "hot3").
 */
export interface Sink {
  write(bytes: Uint8Array, length: number): number;
}

/**
 * Output buffers are pooled: an idle connection holds none (that is most of
 * the density budget: ~1 KB of server RSS per idle plain-TCP connection), a
 * busy one borrows one for a turn and gives it back once all of it is written.
 *
 * Two sizes. A turn's first frames go into a SMALL buffer, moved to a 16 KiB one only when they outgrow it
 * (one copy of < 2 KiB). Each pool keeps what the busiest turn borrowed at once, and a pacing turn writes to
 * every connection it serves before its one flush: with 16 KiB buffers only, a login storm of 15 000 (hello
 * and ready, ~100-300 B each) left 128 of them, 2 MiB, in the pool of an idle server (~140 B per idle
 * connection of `idle --conns 15000`, BENCHMARKS.md memory4); 128 small ones are 256 KiB.
 */
const POOL_BUF = 16 * 1024;
const SMALL_BUF = 2 * 1024;
const POOL_MAX = 256;
const pool: Uint8Array[] = [];
const small: Uint8Array[] = [];
function borrow(min: number): Uint8Array {
  if (min <= SMALL_BUF) return small.pop() ?? new Uint8Array(SMALL_BUF);
  if (min <= POOL_BUF) return pool.pop() ?? new Uint8Array(POOL_BUF);
  return new Uint8Array(1 << Math.ceil(Math.log2(min)));
}
function giveBack(b: Uint8Array): void {
  if (b.length === SMALL_BUF) {
    if (small.length < POOL_MAX) small.push(b);
  } else if (b.length === POOL_BUF && pool.length < POOL_MAX) pool.push(b);
}

/** Buffers held for reuse, by size (what a past turn borrowed at once and gave back): for tests and memory probes. */
export function pooledBuffers(): { small: number; large: number } {
  return { small: small.length, large: pool.length };
}

export class Outbound implements EncodeTarget {
  private buf: Uint8Array | null = null;
  private len = 0;

  /**
   * @param sink where flush() writes (held, not wrapped: a Bun Socket or an
   *   object that already exists, so a connection costs no extra closure).
   * @param limit unsent bytes above which `room()` refuses a frame.
   */
  constructor(
    private readonly sink: Sink,
    readonly limit: number = Infinity,
  ) {}

  /** Bytes queued and not yet accepted by the sink (for slow-consumer checks and the unsent-bytes gauges). */
  get unsent(): number {
    return this.len;
  }

  /**
   * Whether `size` more bytes fit within `budget` unsent bytes (default: the
   * limit). Judged by what the sink refused, not by what one turn queued: when
   * over, it flushes first and judges again, because one read from a fast
   * sender (or one refill) can queue more than the limit for a peer that reads
   * at full speed, which was then cut off as a slow consumer before a single
   * write was tried (test/wire/flow.test.ts). A frame alone above the budget is
   * let through when nothing else is unsent, or a peer could never receive it.
   */
  room(size: number, budget: number = this.limit): boolean {
    if (this.len + size <= budget) return true;
    this.flush();
    return this.len === 0 || this.len + size <= budget;
  }

  /** Appends one frame (header + `body`). No limit check: call `room()` first where the limit matters. */
  frame(body: Uint8Array): void {
    this.frameFrom(body, body.length);
  }

  /**
   * Appends one frame whose body is `src[0, n)`. For a body that is kept elsewhere (a queued delivery); one that
   * is not is encoded in place (encodeFrame).
   */
  frameFrom(src: Uint8Array, n: number): void {
    const out = this.reserve(HEADER_SIZE + n);
    writeHeader(out, this.len, n);
    out.set(n === src.length ? src : src.subarray(0, n), this.len + HEADER_SIZE);
    this.len += HEADER_SIZE + n;
  }

  /**
   * Appends one frame whose body is `v`, encoded in place (src/protocol/encoder.ts encodeValueInto): a frame that
   * is not kept (`sent`, `res`, `err`...) gets no body of its own and no copy of one (encoding into the encoder's
   * scratch and copying it here took a `subarray` and a `set` per frame, 0.41 samples per 1 000 messages at
   * `pairs --pairs 10 --window 16`, BENCHMARKS.md "hot3"). Returns the body's length. No limit check: see fits().
   */
  encodeFrame(v: object): number {
    const at = this.len;
    const end = encodeValueInto(v, this.reserve(HEADER_SIZE + 64), at + HEADER_SIZE, this); // 64: a guess, grown as needed
    return this.seal(at, end);
  }

  /** encodeFrame of withField(body, key, value) (codec.ts): -1, nothing appended, where withField gives null. */
  frameWithField(body: Uint8Array, key: string, value: unknown): number {
    if (!takesField(body)) return -1;
    const at = this.len;
    const end = encodeWithEntryInto(body, key, value, this.reserve(HEADER_SIZE + body.length + 16), at + HEADER_SIZE, this);
    return this.seal(at, end);
  }

  private seal(at: number, end: number): number {
    const n = end - at - HEADER_SIZE;
    writeHeader(this.buf!, at, n);
    this.len = end;
    return n;
  }

  /** EncodeTarget: a larger buffer holding this one's first `keep` bytes (an encode in place outgrew it). */
  grow(keep: number, need: number): Uint8Array {
    const old = this.buf!;
    const grown = borrow(Math.max(need, old.length * 2));
    grown.set(old.subarray(0, keep));
    giveBack(old);
    return (this.buf = grown);
  }

  /**
   * After appending a frame of `size` bytes (encodeFrame), with more than the limit unsent: whether to keep it,
   * by room()'s rule judged after the append. It writes first; then yes if what the sink refused is within the
   * limit, or no more than that frame (everything before it went out: a frame alone above the limit goes).
   */
  fits(size: number): boolean {
    if (this.len <= this.limit) return true;
    this.flush();
    return this.len <= size || this.len <= this.limit;
  }

  /**
   * Makes room for `n` more bytes and returns the buffer: the caller writes
   * them at `unsent` onwards and then calls `commit(n)`. For encoders that
   * write frames in place (the load generator's templates).
   */
  reserve(n: number): Uint8Array {
    const need = this.len + n;
    let out = this.buf;
    if (out === null) out = this.buf = borrow(need);
    else if (out.length < need) {
      const grown = borrow(Math.max(need, out.length * 2));
      grown.set(out.subarray(0, this.len));
      giveBack(out);
      out = this.buf = grown;
    }
    return out;
  }

  /** Counts `n` bytes written in place after `reserve()` as queued. */
  commit(n: number): void {
    this.len += n;
  }

  /**
   * Writes what is queued with one `write()`; keeps what the sink refused for
   * the next flush (on `drain`). Returns the bytes written, or -1 when the
   * sink is closed (everything queued is dropped then: it can never go out).
   */
  flush(): number {
    if (this.len === 0 || this.buf === null) return 0;
    const written = this.sink.write(this.buf, this.len);
    if (this.buf === null) return written; // the sink cleared us while writing (its close handler ran): nothing left to keep
    if (written < 0) {
      this.clear();
      return -1;
    }
    if (written >= this.len) this.clear();
    else if (written > 0) {
      this.buf.copyWithin(0, written, this.len);
      this.len -= written;
    }
    return written;
  }

  /** A copy of the unsent bytes, or null when there are none (for Bun's `end(data)`, which keeps what it is given). */
  tail(): Uint8Array | null {
    return this.len > 0 && this.buf !== null ? this.buf.slice(0, this.len) : null;
  }

  /** Drops everything unsent and gives the buffer back to the pool. */
  clear(): void {
    if (this.buf !== null) giveBack(this.buf);
    this.buf = null;
    this.len = 0;
  }
}

/** Something with output to flush once per turn; `flushQueued` is its own flag, so that it is listed once. */
export interface Flushable {
  flushQueued: boolean;
  flush(): unknown;
}

/**
 * The connections written to during a turn, flushed together: at the end of
 * each read (the server calls `flushAll()` itself, NATS's pcd) and otherwise
 * by one scheduled callback (`setImmediate` manages ~1M turns/s).
 */
export class FlushBatch {
  private items: Flushable[] = [];
  /** A scheduled callback is pending (until it runs: an explicit flushAll meanwhile does not make another one needed). */
  private scheduled = false;
  /** hold() calls not yet released: their caller flushes at its end, so nothing needs scheduling meanwhile. */
  private depth = 0;
  /** The flush of the last release() is queued as a microtask and has not run yet. */
  private ending = false;
  private readonly run = (): void => {
    this.scheduled = false;
    this.flushAll();
  };
  private readonly end = (): void => {
    this.ending = false;
    this.flushAll();
  };

  constructor(private readonly schedule: (fn: () => void) => unknown = setImmediate) {}

  /** Lists `c` for the next flushAll() (once per turn however often it is called). */
  add(c: Flushable): void {
    if (c.flushQueued) return;
    c.flushQueued = true;
    this.items.push(c);
    if (!this.scheduled && this.depth === 0 && !this.ending) {
      this.scheduled = true;
      this.schedule(this.run);
    }
  }

  /**
   * Until the matching release() and the microtasks queued before it have run, what is listed waits for its flush
   * instead of a scheduled callback: the server holds the batch over each read and each pacing turn. The flush is a
   * microtask, not at release itself, so that what the read set off for its microtasks goes in the same write: the
   * durable callbacks of a write-back hit (src/store/queue-sqlite.ts `later`: the sender's `sent` and the receipt it
   * rides on, §6.2) run in one queued during the read. Without the hold every read that wrote scheduled a
   * setImmediate that found nothing to flush (the read's flushAll had cleared the mark), and the receipt of a paced
   * message went out from a setImmediate of its own, a loop phase later: two callbacks per message, counted in
   * test/transport/flush-hold.test.ts (80 for 40 messages; none with the hold).
   */
  hold(): void {
    this.depth++;
  }

  /** Ends a hold(); the outermost one queues the flush of everything listed (a microtask: see hold). */
  release(): void {
    if (this.depth === 0) throw new Error("FlushBatch.release without hold(): call hold() before the work whose end flushes");
    if (--this.depth === 0 && !this.ending) {
      this.ending = true;
      queueMicrotask(this.end);
    }
  }

  flushAll(): void {
    const items = this.items;
    // By index: a flush may list another connection (it then goes out in this same pass).
    // One that throws does not keep the others (still marked as listed) from ever being flushed again.
    let failure: unknown = null;
    for (let i = 0; i < items.length; i++) {
      const c = items[i]!;
      c.flushQueued = false;
      try {
        c.flush();
      } catch (e) {
        failure ??= e;
      }
    }
    items.length = 0;
    if (failure !== null) throw failure;
  }
}
