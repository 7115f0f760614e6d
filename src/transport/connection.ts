/**
 * Per-connection state, in one class with every field set in the
 * constructor (one hidden class for all connections), and the outbound path.
 * The socket's handlers and the inbound path are src/transport/listener.ts.
 *
 * Outbound (src/protocol/outbound.ts, shared with the SDK and the load
 * generator): frames are appended to the connection's buffer and the buffer is
 * written with one `write()` per connection per event-loop turn (each
 * `write()` is one syscall in Bun, and Bun does not buffer the part the
 * kernel refused). Whatever the kernel does not take stays in the buffer and
 * goes out on `drain`. Past `outboundLimit` unsent bytes the connection is
 * closed as a slow consumer; its unacknowledged deliveries stay queued and are
 * delivered again on its next connection, so nothing is lost.
 */
import type { Socket } from "bun";
import { encodeBody } from "../protocol/codec.ts";
import { CLOSE_REASONS, CloseReason, type ErrorCode } from "../protocol/errors.ts";
import { FrameDecoder, HEADER_SIZE } from "../protocol/frame.ts";
import { FlushBatch, Outbound, type Sink } from "../protocol/outbound.ts";
import { LIMITS } from "../protocol/stanzas.ts";
import type { Session } from "../core/registry.ts";

export const ConnState = {
  HELLO: 0, // waiting for the client hello
  AUTH: 1, // hello done, waiting for auth / enroll / link
  LINKING: 2, // link request made, waiting for approval
  READY: 3,
  CLOSED: 4,
} as const;
export type ConnState = (typeof ConnState)[keyof typeof ConnState];

export type Transport = "tcp" | "tls" | "ws";
const TRANSPORTS: readonly Transport[] = ["tcp", "tls", "ws"];

/*
 * Conn's small fields, packed in one number (Conn.bits) behind accessors, and what only some connections need
 * in objects made when needed (PreLogin, SentLog, the listener's Backlog, the decoder's partial frame). JSC sizes
 * an object by its inline slots, 8 B each, in size classes (…, 160, 224, 256, 320 B): Conn had 33 fields and
 * took 320 B (a scratch count: 20 000 Conns, heapStats after Bun.gc(true)); at 26 it took 224, at 18 (17 now) it takes
 * 160. An idle connection is mostly Bun's socket and this object.
 */
const STATE = 7; // bits 0-2: ConnState
const RX = 1 << 3;
const TICKETS = 1 << 4;
const BEHIND = 1 << 5;
const PAUSED = 1 << 6;
const SENT_RIDES = 1 << 7;
const FLUSH_QUEUED = 1 << 8;
const CONFIRMS = 1 << 9;
const ACK_AHEAD = 1 << 10;
const TRANSPORT_SHIFT = 11; // bits 11-12: index in TRANSPORTS
const REASON_SHIFT = 13; // bits 13-17: 1 + index in CLOSE_REASONS, 0 while open
const REASON_MASK = 31 << REASON_SHIFT;
const ERRORS_SHIFT = 18; // bits 18-31: invalid frames received (limits.error_budget is at most ERRORS_MAX - 1)
export const ERRORS_MAX = (1 << (32 - ERRORS_SHIFT)) - 1;

/** What a connection needs only until it is ready: when it opened (the auth timeout), the nonce, a link request. */
class PreLogin {
  /** Fresh per connection; what the login proof signs. */
  nonce: Uint8Array | null = null;
  /** For a pending link request. */
  link: { code: string; pk: Uint8Array; name: string; expires: number } | null = null;
  constructor(readonly openedAt: number) {}
}

/**
 * A confirming connection's `sent` frames not yet confirmed (Conn.sentLog): `items[i]` is the (base + i)-th `sent`
 * written to it. Core keeps its Accepted records here (src/core/acceptances.ts sendSent).
 */
export class SentLog {
  items: object[] = [];
  constructor(
    /** `sent` frames written before items[0] (the log is compacted as confirmations come). */
    public base: number,
  ) {}
}

/**
 * What a Conn needs of its socket: a Bun TCP/TLS socket as is, or a WebSocket adapted to it
 * (src/transport/ws.ts), so both share one Conn, one outbound path and one pacing.
 */
export interface ConnSocket {
  /** Bytes of `bytes[byteOffset, byteOffset + byteLength)` taken (Bun's write() buffers nothing), or -1 when the socket is closed. */
  write(bytes: Uint8Array, byteOffset: number, byteLength: number): number;
  /** Writes `tail` (kept until sent) and closes. */
  end(tail?: Uint8Array): unknown;
  pause(): void;
  resume(): void;
  readonly readyState: number;
  readonly remoteAddress: string;
}

/**
 * Connections with unflushed output (src/protocol/outbound.ts): flushed at the
 * end of each read (the listener calls flushAll(), NATS's pcd) and otherwise by
 * one setImmediate.
 */
const batch = new FlushBatch();
export function flushAll(): void {
  batch.flushAll();
}
/** Holds the flush batch over a read or a pacing turn, whose end (releaseFlushes) flushes once: FlushBatch.hold. */
export function holdFlushes(): void {
  batch.hold();
}
export function releaseFlushes(): void {
  batch.release();
}

/** A `sent` frame (docs/PROTOCOL.md §5.2). */
export interface SentFrame { t: "sent"; id: string; to: string; seq: number; ts: number }

/** What every connection of a listener shares: one object, not three fields per connection. */
export interface ConnShared {
  maxFrame: number;
  /** Unsent bytes past which a connection is a slow consumer. */
  outboundLimit: number;
  /** Called once when the connection is closed for any reason. */
  onClosed(conn: Conn, reason: CloseReason): void;
  onOutBytes(n: number): void;
  onOutFrame(): void;
}

/**
 * A Conn is its own frame decoder (it extends FrameDecoder, and `decoder` is the Conn itself): one
 * object less per connection. The JS heap held 2.9 objects per idle connection (Conn, FrameDecoder,
 * Outbound; heap snapshot at 3 000 connections, 64 B for the decoder alone).
 */
export class Conn extends FrameDecoder implements Session, Sink {
  /** state, rx, tickets, behind, paused, sentRides, flushQueued, confirms, ackAhead, transport, closeReason, errors (the accessors below). */
  private bits: number;
  account = "";
  device = 0;
  /** Until the connection is ready (Sessions.ready drops it): openedAt, nonce, link. */
  private pre: PreLogin | null;
  /** When (ms) the last bytes were received; the idle sweep reads it. */
  lastSeen: number;
  /**
   * Deliveries pushed on this connection and not yet acknowledged. A count,
   * not a set: every item of the device with qid <= cursor that is still
   * queued was pushed on this connection (start() rewinds cursor to 0), so an
   * ack of a queued qid <= cursor is always one of ours. Saves a Set per
   * connection.
   */
  inflight = 0;
  /** Highest queue id pushed on this connection. */
  cursor = 0;
  /** Stanzas read and not yet handled, in order (the listener's pacing, TURN_MIN: its Backlog); null when none wait. */
  backlog: { items: unknown[]; head: number } | null = null;
  /**
   * On a confirming connection (`confirms`), every `sent` written to it and not yet confirmed, in order, until its
   * cumulative `ack {sc}` confirms them. Made at the first `sent` and given back by release() once all are
   * confirmed: null on an idle connection (an empty array per connection was one JS object of the five an idle
   * connection held), and then `sentHead` sent frames were written.
   */
  sentLog: SentLog | null = null;
  /**
   * Core's per-connection state (src/core/facts.ts ConnCore: this device's map of recent acceptances, the facts
   * about the peer it last wrote to and the sender it last acked), reached from here rather than looked up by
   * account per message. Opaque to transport; null until the connection sends or acks.
   */
  core: object | null = null;
  /** Count of `sent` frames confirmed (or dropped from tracking past SENT_LOG_MAX): the next one to confirm is this. */
  sentHead = 0;
  /**
   * On a `sentRides` connection, the last `sent` of this turn, not yet encoded: nothing was queued after it. Core's
   * delivery path folds it into the next frame if that is the message's own receipt (the usual case with a
   * confirming sender: one `ack` from the recipient releases both); anything else queued, and the flush, encode it first.
   */
  heldSent: SentFrame | null = null;

  /**
   * The outbound buffer (src/protocol/outbound.ts); it writes through this Conn, which counts the bytes.
   * Made at the first frame and given back by release() once everything went out: an idle connection holds
   * none (64 B each in a heap snapshot of 3 000 idle connections).
   */
  private out: Outbound | null = null;

  /** The frame decoder of this connection's byte stream: the Conn itself. */
  get decoder(): FrameDecoder {
    return this;
  }

  constructor(
    readonly socket: ConnSocket,
    transport: Transport,
    private readonly hooks: ConnShared,
    now: number,
  ) {
    // Before login a body is a hello, auth, enroll or link: bounded far below mf (§2.2); loggedIn() raises it.
    super(Math.min(LIMITS.preLoginFrame, hooks.maxFrame));
    this.bits = ConnState.HELLO | RX | (TRANSPORTS.indexOf(transport) << TRANSPORT_SHIFT);
    this.lastSeen = now;
    this.pre = new PreLogin(now);
  }

  /** When the connection opened (the auth timeout); 0 once it is ready (Sessions.ready drops what only a login needs). */
  get openedAt(): number {
    return this.pre === null ? 0 : this.pre.openedAt;
  }
  /** Fresh per connection; what the login proof signs. */
  get nonce(): Uint8Array | null {
    return this.pre === null ? null : this.pre.nonce;
  }
  set nonce(n: Uint8Array | null) {
    this.preLogin().nonce = n;
  }
  /** For a pending link request. */
  get link(): { code: string; pk: Uint8Array; name: string; expires: number } | null {
    return this.pre === null ? null : this.pre.link;
  }
  set link(l: { code: string; pk: Uint8Array; name: string; expires: number } | null) {
    this.preLogin().link = l;
  }
  private preLogin(): PreLogin {
    return (this.pre ??= new PreLogin(this.lastSeen));
  }
  /** Why the connection closed; null while it is open. */
  get closeReason(): CloseReason | null {
    const i = (this.bits & REASON_MASK) >> REASON_SHIFT;
    return i === 0 ? null : CLOSE_REASONS[i - 1]!;
  }
  private set closeReason(r: CloseReason) {
    this.bits = (this.bits & ~REASON_MASK) | ((CLOSE_REASONS.indexOf(r) + 1) << REASON_SHIFT);
  }
  /** Invalid frames received (the error budget). */
  get errors(): number {
    return this.bits >>> ERRORS_SHIFT;
  }
  set errors(n: number) {
    this.bits = (this.bits & ((1 << ERRORS_SHIFT) - 1)) | (Math.min(n, ERRORS_MAX) << ERRORS_SHIFT);
  }

  get state(): ConnState {
    return (this.bits & STATE) as ConnState;
  }
  set state(s: ConnState) {
    this.bits = (this.bits & ~STATE) | s;
  }
  get transport(): Transport {
    return TRANSPORTS[(this.bits >> TRANSPORT_SHIFT) & 3]!;
  }
  // The flags packed in `bits`: accessors on the prototype, one pair per entry of FLAG_BITS (below the class).
  /** False for a non-receiving session (`auth {rx: false}`): no deliveries, and it never replaces the device's receiving one. */
  declare rx: boolean;
  /** The client's hello asked for a resumption ticket in its `ready` (`hello {tk: true}`, docs/PROTOCOL.md §4.11). */
  declare tickets: boolean;
  /** Items may wait in the store beyond `cursor` (window was full): refill from the store, do not push directly. */
  declare behind: boolean;
  /** The socket is not being read (`socket.pause()`): its backlog is long. */
  declare paused: boolean;
  /** The client takes a `sent` riding on its own receipt (`hello {sr: true}`, docs/PROTOCOL.md §6.2). */
  declare sentRides: boolean;
  /** Listed in the flush batch of this turn (FlushBatch's mark). */
  declare flushQueued: boolean;
  /**
   * True while the listener handles an `ack` ahead of stanzas this connection sent before it (they wait in
   * `backlog`): the ack releases its items now, and what it makes happen for others (receipts) goes behind those
   * stanzas with `later`, since they can change it (a `contacts.add` or `block.add` of the sender, a first message
   * to it; docs/PROTOCOL.md §6.7).
   */
  declare ackAhead: boolean;
  /** A confirming client (`hello {sc: true}`, docs/PROTOCOL.md §6.2): its `sent` frames are logged in sentLog. */
  declare confirms: boolean;

  /** The peer's address, read when needed (rate limits, logs) rather than kept as a string per connection. */
  get remote(): string {
    return this.socket.remoteAddress;
  }

  /** The session is ready: from now on bodies up to `mf` are accepted, and what only a login needed (nonce, link request, the auth timeout) goes. */
  loggedIn(): void {
    this.maxFrame = this.hooks.maxFrame;
    this.pre = null;
  }

  get unsent(): number {
    return this.out === null ? 0 : this.out.unsent;
  }

  /**
   * Queues a `sent`: on a `sentRides` connection held unencoded (see heldSent) until the next frame or the flush, so
   * that its receipt, if that comes next in this turn, can carry it (one frame, `rcpt {sts}`, instead of two).
   */
  sendSent(s: SentFrame): void {
    if (!this.sentRides) return this.send(s);
    if (this.state === ConnState.CLOSED) return;
    if (this.heldSent !== null) this.releaseSent();
    this.heldSent = s;
    batch.add(this);
  }

  /** Encodes and queues the held `sent` (something else is queued after it, or the turn ends). */
  private releaseSent(): void {
    const s = this.heldSent!;
    this.heldSent = null;
    const out = this.outbound();
    this.appended(out, out.encodeFrame(s));
  }

  /**
   * Queues `body` (an encoded receipt: core decides it is the held `sent`'s own) with that `sent` riding on it as
   * `sts` (docs/PROTOCOL.md §6.2): one frame instead of two. False, with nothing queued, when none is held or the
   * body cannot take the field (withField); then send both as usual.
   */
  sendWithHeldSent(body: Uint8Array): boolean {
    const held = this.heldSent;
    if (held === null || this.state === ConnState.CLOSED) return false;
    const out = this.outbound();
    const n = out.frameWithField(body, "sts", held.ts);
    if (n < 0) return false;
    this.heldSent = null;
    this.appended(out, n);
    return true;
  }

  /** Runs `f` once the stanzas now held in `backlog` are handled (or dropped with a closed connection); only while `ackAhead`. */
  later(f: () => void): void {
    if (this.backlog === null) throw new Error("Conn.later: no held stanzas to wait for; run it now (check ackAhead first)");
    this.backlog.items.push(f);
  }

  /** Queues a stanza for this connection (encoded now, straight into the outbound buffer; written at the end of the turn). */
  send(stanza: object): void {
    if (this.state === ConnState.CLOSED) return;
    if (this.heldSent !== null) this.releaseSent(); // frames go out in the order they were queued
    if ((this.state as ConnState) === ConnState.CLOSED) return; // that closed it (a slow consumer)
    const out = this.outbound();
    this.appended(out, out.encodeFrame(stanza));
  }

  /** Queues an `err` frame (§5.2): a refused stanza or an expected failure, with the stanza's id and details when given. */
  sendError(code: ErrorCode, message: string, id?: string | number, detail?: unknown): void {
    const e: Record<string, unknown> = { t: "err", e: code, m: message };
    if (id !== undefined) e.id = id;
    if (detail !== undefined) e.x = detail;
    this.send(e);
  }

  /** Queues an already-encoded body. */
  sendBody(body: Uint8Array): void {
    if (this.state === ConnState.CLOSED) return;
    if (this.heldSent !== null) this.releaseSent(); // frames go out in the order they were queued
    this.queue(body, body.length);
  }

  private outbound(): Outbound {
    return (this.out ??= new Outbound(this, this.hooks.outboundLimit));
  }

  /** A frame of `n` body bytes was encoded into the outbound buffer: judged against the limit after the fact (Outbound.fits), as queue() judges one before. */
  private appended(out: Outbound, n: number): void {
    if (!out.fits(HEADER_SIZE + n)) {
      this.close(CloseReason.SLOW_CONSUMER, `more than ${this.hooks.outboundLimit} bytes unsent`);
      return;
    }
    this.hooks.onOutFrame();
    batch.add(this);
  }

  /**
   * Queues the frame whose body is `body[0, n)`; nothing more once room()'s write closed the connection (Bun can
   * run the socket's close inside a write).
   */
  private queue(body: Uint8Array, n: number): void {
    // Judged by what the kernel refused, not by what this turn buffered (Outbound.room writes
    // first): one read from a fast sender (or one refill) can queue more than the limit for a
    // device that reads at full speed (test/wire/flow.test.ts). A frame alone above the limit
    // (a delivery of up to mf bytes plus its fields, with the limit at its minimum of 64 KiB)
    // is let through when nothing else is unsent, or such a device could never receive it.
    const out = this.outbound();
    if (!out.room(HEADER_SIZE + n)) {
      this.close(CloseReason.SLOW_CONSUMER, `more than ${this.hooks.outboundLimit} bytes unsent`);
      return;
    }
    if (this.state === ConnState.CLOSED) return;
    out.frameFrom(body, n);
    this.hooks.onOutFrame();
    batch.add(this);
  }

  /**
   * Whether a queued delivery of `bodyLength` bytes should be pushed now.
   * Deliveries wait in the store anyway, so they are paced by the socket:
   * past half the outbound limit still unsent (after trying to write) they
   * stay queued and are pushed on `drain`. Without this a reconnecting
   * device with a backlog of a window's worth of items larger than the
   * limit was cut off as a slow consumer on every connection and could
   * never drain its queue. The other half of the limit is headroom for
   * frames that cannot wait in the store (sent, res, pong, pres).
   */
  hasRoomFor(bodyLength: number): boolean {
    return this.out === null || this.out.room(HEADER_SIZE + bodyLength, this.hooks.outboundLimit / 2);
  }

  /**
   * Drops the outbound buffer when nothing is unsent, and the sent log when every `sent` in it is confirmed (the
   * sweep calls it); the next frame or `sent` makes a new one.
   */
  release(): void {
    if (this.out !== null && this.out.unsent === 0 && !this.flushQueued) this.out = null;
    if (this.sentLog !== null && this.sentHead === this.sentLog.base + this.sentLog.items.length) this.sentLog = null;
  }

  /** Writes what is buffered; keeps what the kernel refused for `drain`. */
  flush(): void {
    if (this.heldSent !== null) this.releaseSent();
    this.out?.flush();
  }

  /**
   * The Sink the outbound buffer writes to: the socket, with the bytes counted. A closed
   * connection whose socket is gone takes nothing (-1: the rest can never go out).
   */
  write(bytes: Uint8Array, length: number): number {
    if (this.state === ConnState.CLOSED && this.closeReason !== null && this.socket.readyState !== 1) return -1;
    const n = this.socket.write(bytes, 0, length);
    if (n > 0) this.hooks.onOutBytes(n);
    return n;
  }

  /**
   * Sends a `close` frame with the reason, flushes, and ends the socket.
   * Idempotent: the first reason wins.
   */
  close(reason: CloseReason, message?: string, retryAfterMs?: number): void {
    if (this.state === ConnState.CLOSED) return;
    let tail: Uint8Array | null = null;
    if (reason === CloseReason.SLOW_CONSUMER) {
      // Its socket is full and our buffer may end in the middle of a frame the kernel took half of:
      // a close frame appended now would garble the stream. End without one; the client sees the
      // connection end and reconnects, and its unacknowledged items are delivered again.
      this.out?.clear();
      this.heldSent = null;
    } else {
      const frame: { t: "close"; r: string; m?: string; ra?: number } = { t: "close", r: reason };
      if (message) frame.m = clip(message, 256);
      if (retryAfterMs !== undefined) frame.ra = retryAfterMs;
      this.sendBody(encodeBody(frame));
      this.flush();
      // Bun's end(data) keeps what the kernel refuses, unlike write(): hand it a copy of the rest.
      // (sendBody may itself have closed the connection as a slow consumer, which releases the buffer.)
      tail = this.out?.tail() ?? null;
    }
    this.closed(reason);
    if (tail !== null) this.socket.end(tail);
    else this.socket.end();
  }

  /** Marks the connection closed without writing (the socket is already gone). */
  closed(reason: CloseReason): void {
    if (this.state === ConnState.CLOSED) return;
    this.state = ConnState.CLOSED;
    this.closeReason = reason;
    this.out?.clear();
    this.hooks.onClosed(this, reason);
  }
}

/** Conn's boolean flags: the bit of `bits` each accessor reads and sets. */
const FLAG_BITS = { rx: RX, tickets: TICKETS, behind: BEHIND, paused: PAUSED, sentRides: SENT_RIDES, flushQueued: FLUSH_QUEUED, ackAhead: ACK_AHEAD, confirms: CONFIRMS } as const;
for (const [name, bit] of Object.entries(FLAG_BITS)) {
  Object.defineProperty(Conn.prototype, name, {
    get(this: { bits: number }): boolean {
      return (this.bits & bit) !== 0;
    },
    set(this: { bits: number }, on: boolean): void {
      this.bits = on ? this.bits | bit : this.bits & ~bit;
    },
  });
}

const utf8 = new TextEncoder();
/** At most `max` UTF-8 bytes of `s`, cut at a character boundary (protocol texts are limited in bytes). */
function clip(s: string, max: number): string {
  if (s.length <= max / 3) return s; // cannot exceed max bytes
  let out = s.length > max ? s.slice(0, max) : s;
  while (utf8.encode(out).length > max) out = out.slice(0, -1);
  return out;
}
