/**
 * A connection end to end, as NATS's client.go owns one: the socket
 * handlers, frame reassembly and body decoding, validation, the error
 * budget, one flush per read and the close reason of every way a connection
 * ends. What a valid stanza means is not decided here: each one goes to the
 * `StanzaHandler` (src/core/dispatch.ts), which answers through the Conn.
 *
 * Inbound pacing (issue 20, "no collapse"): the server takes on only as much
 * work per event-loop turn as it can finish while the items it pushes can
 * still be acknowledged before their group commit. At most a budget of
 * stanzas (acks excepted) is handled per turn (TURN_MIN); the rest wait, decoded and
 * validated, in their connection's backlog, in order, and are handled in
 * later turns (round robin over connections). Acks are never held: an item
 * acknowledged before its commit is never written (the write-back hit); the
 * receipts of an ack that overtook held stanzas wait in its place (Conn.later),
 * since those stanzas can decide them. A connection with BACKLOG_PAUSE stanzas
 * waiting stops being read (`socket.pause()`) until half of them are done, so an overload
 * waits in the clients' TCP buffers instead of in server memory. Measured at
 * `pairs --pairs 500 --window 8` (BENCHMARKS.md, 2026-12-02 "speed"): without
 * it every read of a turn was handled at once, a turn took longer than the
 * 5 ms commit window, and 99.8 % of queue items were inserted and deleted again.
 */
import type { Socket, SocketHandler } from "bun";
import { scanAck } from "../protocol/ack-scan.ts";
import { decodeBodyAt } from "../protocol/codec.ts";
import { CloseReason, ErrorCode, ProtocolError } from "../protocol/errors.ts";
import { validateClient, type ClientStanza } from "../protocol/stanzas.ts";
import { Conn, ConnState, flushAll, holdFlushes, releaseFlushes, type ConnShared, type ConnSocket, type Transport } from "./connection.ts";
import { log } from "../core/log.ts";

/** What the core does with connections: admit them, act on their stanzas, refill them on drain. */
export interface StanzaHandler {
  /** A connection was accepted; the handler may close it at once (shutdown, admission control). */
  opened(conn: Conn): void;
  /** One valid stanza, in order. */
  stanza(conn: Conn, s: ClientStanza): void;
  /** The socket took everything buffered: output that waited for room may go now. */
  drained(conn: Conn): void;
  /** The connection closed, for any reason; called once. */
  closed(conn: Conn, reason: CloseReason): void;
}

/** Counters the transport keeps (src/core/metrics.ts provides them). */
export interface TransportCounters {
  framesIn: { inc(n?: number): void };
  bytesIn: { inc(n?: number): void };
  framesOut: { inc(n?: number): void };
  bytesOut: { inc(n?: number): void };
  /** Invalid frames received. */
  errors: { inc(n?: number): void };
  opened: Record<Transport, { inc(n?: number): void }>;
  /** TLS handshakes done, by whether they resumed a session the client offered (its previous connection's). */
  tlsHandshakes?: { full: { inc(n?: number): void }; resumed: { inc(n?: number): void } };
  /** Stanzas that waited in a backlog for a later turn instead of being handled when read (refusals included). */
  held: { inc(n?: number): void };
  /** Connections no longer read because their backlog reached BACKLOG_PAUSE. */
  paused: { inc(n?: number): void };
  /** Paused connections read again: their backlog fell to half of BACKLOG_PAUSE. */
  resumed: { inc(n?: number): void };
}

export interface ListenerOptions {
  maxFrame: number;
  outboundLimit: number;
  /** Non-fatal protocol errors a connection may make; one more closes it. */
  errorBudget: number;
  /** Longest an event-loop turn should take while stanzas wait (TURN_MIN); default 1.25 ms. */
  turnMs?: number;
}

/**
 * Stanzas (acks excepted) handled per event-loop turn before the rest waits in a backlog: adapted while
 * backlogs last, halved when the listener's own work since the previous turn (its reads and that turn, wall
 * time inside them) exceeded `turnMs` (a quarter of the commit window by default, so an item pushed in one
 * turn is acked one or two turns later, before its commit), raised by TURN_MIN when it did not (nextBudget).
 * Wall time, not a count: on a shared core the same count took 2-4× as long (500 pairs, another process on the
 * core: hit rate 73 % at 32, 31 % at 256 per turn); a preemption inside that work still counts. The gap between
 * turns is not used: on a shared core it was mostly waiting for the CPU, and a server 23-32 % busy (`pairs --pairs
 * 500 --rate 4500`) sat at TURN_MIN, held 41 173 of 41 444 stanzas, p90 146 ms (BENCHMARKS.md "paced2").
 */
export const TURN_MIN = 16;
export const TURN_MAX = 1024;
/** Stanzas waiting in one connection's backlog past which its socket is no longer read (TCP backpressure). */
export const BACKLOG_PAUSE = 256;

/** The next turn's budget from this one's and the listener's own work (ms) since the previous turn (TURN_MIN). */
export function nextBudget(budget: number, workMs: number, turnMs: number): number {
  return workMs > turnMs ? Math.max(TURN_MIN, budget >> 1) : Math.min(TURN_MAX, budget + TURN_MIN);
}

/** A frame refused when it was read, while earlier stanzas of its connection waited: answered in its place in the order. */
class Refused {
  constructor(readonly code: ErrorCode, readonly message: string, readonly id?: string | number) {}
}
/**
 * What a backlog holds: the connection's stanzas in the order they arrived, and what an ack handled ahead of them
 * left to run in its place (Conn.later: its receipts), run even if the connection closes first.
 */
export type Held = ClientStanza | Refused | (() => void);
/** A connection's held stanzas (Conn.backlog), from `head` on: one object, made when a first stanza waits. */
type Backlog = { items: Held[]; head: number };

export class Connections {
  /** Open connections (a closed Conn leaves at once; its socket may still be flushing, see `openSockets`). */
  readonly all = new Set<Conn>();
  /** Sockets whose close event has not come yet. */
  openSockets = 0;
  /** When the current read arrived: a complete frame in it marks its connection active (§4.1). */
  private readAt = 0;
  private readonly shared: ConnShared;
  /** The connection whose chunk is being fed (one frame callback for all reads, not a closure per read). */
  private feeding: Conn | null = null;
  private readonly onFrame = (buf: Uint8Array, start: number, end: number): void => this.frame(this.feeding!, buf, start, end);
  /** Stanzas handled since the last turn (the next is queued at half the budget, not at its end: BENCHMARKS.md "commitw"), and how many a turn may handle (TURN_MIN). */
  private used = 0;
  private budget = 128;
  /** Whether the last turn left stanzas waiting (a chain of busy turns: only then is the budget adapted). */
  private chained = false;
  /** Wall time (ms) in this listener's reads and turn since the last turn began: its own work, not the gaps. */
  private work = 0;
  /**
   * Connections with a backlog, in the order they got it, from `waitingHead` on: a queue, so a turn walks only the
   * ones it serves. Copying the unserved rest into a new array per turn was 2.1 % of the server's samples at `pairs
   * --pairs 500 --window 8`, under 0.1 % at 10 pairs (BENCHMARKS.md 2026-12-03 10:32).
   */
  private waiting: Conn[] = [];
  private waitingHead = 0;
  private turnQueued = false;
  private readonly turn = (): void => {
    this.turnQueued = false;
    const start = performance.now();
    if (this.chained) this.budget = nextBudget(this.budget, this.work, this.turnMs);
    this.used = 0;
    holdFlushes();
    try {
      this.runBacklogs();
    } finally {
      releaseFlushes();
    }
    this.chained = this.waitingHead < this.waiting.length;
    if (this.chained) this.queueTurn();
    this.work = performance.now() - start; // the next cycle's work begins with this turn's
  };
  private readonly turnMs: number;

  constructor(
    private readonly opts: ListenerOptions,
    private readonly handler: StanzaHandler,
    private readonly m: TransportCounters,
  ) {
    this.turnMs = opts.turnMs ?? 1.25;
    this.shared = {
      maxFrame: opts.maxFrame,
      outboundLimit: opts.outboundLimit,
      onClosed: (conn, reason) => {
        this.all.delete(conn);
        this.handler.closed(conn, reason);
      },
      onOutBytes: (n) => m.bytesOut.inc(n),
      onOutFrame: () => m.framesOut.inc(),
    };
  }

  /** The socket handlers of one listener. */
  handlers(transport: Transport): SocketHandler<Conn> {
    return {
      binaryType: "uint8array",
      open: (socket: Socket<Conn>) => {
        // A fresh object per socket: Bun.listen({data}) would share one.
        const conn = this.conn(socket, transport);
        socket.data = conn;
        this.adopt(conn);
      },
      data: (socket: Socket<Conn>, chunk: Uint8Array) => this.read(socket.data, chunk),
      drain: (socket: Socket<Conn>) => this.drained(socket.data),
      close: (socket: Socket<Conn>, err?: Error) => {
        if (socket.data) this.hangup(socket.data, err ? CloseReason.SOCKET_ERROR : CloseReason.PEER_CLOSED);
      },
      error: (socket: Socket<Conn>, err: Error) => {
        log.debug("socket error", { err, remote: socket.remoteAddress });
      },
      handshake: (socket: Socket<Conn>, success: boolean) => {
        if (success) (socket.isSessionReused() ? this.m.tlsHandshakes?.resumed : this.m.tlsHandshakes?.full)?.inc();
        if (!success && socket.data) {
          socket.data.closed(CloseReason.TLS_ERROR);
          socket.end();
        }
      },
    };
  }

  /*
   * The seam for sockets that are not Bun TCP/TLS sockets (src/transport/ws.ts): the same Conn,
   * pacing, outbound path and close reasons, driven by the other socket's events.
   */

  /** A Conn on `socket` (attach it to the socket, then adopt() it). */
  conn(socket: ConnSocket, transport: Transport): Conn {
    // Date.now(), not a coarse clock: the auth timeout must not fire early either.
    return new Conn(socket, transport, this.shared, Date.now());
  }

  /** The connection is open: counted, and handed to the core (which may close it at once). */
  adopt(conn: Conn): void {
    this.all.add(conn);
    this.openSockets++;
    this.m.opened[conn.transport].inc();
    this.handler.opened(conn);
  }

  /** The socket took what was buffered. */
  drained(conn: Conn): void {
    conn.flush();
    this.handler.drained(conn);
  }

  /** The socket is gone (its close event); `reason` unless the connection was closed already. */
  hangup(conn: Conn, reason: CloseReason): void {
    this.openSockets--;
    // What the peer sent before it hung up is handled, as it would have been without pacing.
    if (conn.backlog !== null && conn.state !== ConnState.CLOSED) {
      this.guarded(conn, Infinity);
      flushAll();
    }
    conn.closed(reason);
    this.all.delete(conn);
  }

  /**
   * One whole frame body from a message-based socket (a WebSocket message): checked against the
   * connection's current maximum as the frame decoder checks a length, then handled as a frame.
   */
  message(conn: Conn, body: Uint8Array): void {
    if (conn.state === ConnState.CLOSED) return;
    this.m.bytesIn.inc(body.length);
    this.readAt = Date.now();
    holdFlushes();
    try {
      if (body.length > conn.decoder.maxFrame) {
        this.fail(conn, new ProtocolError(ErrorCode.FRAME_TOO_LARGE, `frame of ${body.length} bytes exceeds the maximum of ${conn.decoder.maxFrame}`, true));
      } else {
        try {
          this.frame(conn, body, 0, body.length);
        } catch (e) {
          this.fail(conn, e);
        }
      }
    } finally {
      releaseFlushes();
    }
  }

  /** A protocol violation found by the socket's own layer (a text WebSocket message): closes as the decoder's would. */
  violation(conn: Conn, e: ProtocolError): void {
    if (conn.state !== ConnState.CLOSED) this.fail(conn, e), flushAll();
  }

  private read(conn: Conn, chunk: Uint8Array): void {
    if (conn.state === ConnState.CLOSED) return;
    this.m.bytesIn.inc(chunk.length);
    // The real time, not the sweep's coarse clock: that one lags by up to a sweep interval,
    // so a connection was reaped up to a sweep early, e.g. after 2.0 s of silence with
    // it = 3 s (§4.1: "never before it"; test/wire/timers.test.ts). One Date.now() per read;
    // frame() stamps it on the connection, so only complete frames count as activity.
    this.readAt = Date.now();
    // Timed only in a chain of busy turns, the only time the next turn reads `work`: paced reads rarely are (clock
    // reads were 1.7 % of the server's perf samples at `pairs --pairs 500 --rate 9000`, BENCHMARKS.md "hot3").
    const timed = this.chained;
    const start = timed ? performance.now() : 0;
    this.feeding = conn;
    holdFlushes(); // nothing scheduled for what this read lists: its end flushes it
    try {
      conn.decoder.scan(chunk, this.onFrame);
    } catch (e) {
      this.fail(conn, e);
    } finally {
      this.feeding = null;
      releaseFlushes(); // every connection this read touched is flushed once (NATS's pcd)
      if (timed) this.work += performance.now() - start;
    }
  }

  /** A protocol error thrown closes the connection with its code, anything else as an internal error. */
  private fail(conn: Conn, e: unknown): void {
    if (e instanceof ProtocolError) {
      // A fatal framing error ends the stream here; what came before it is still handled, as without pacing.
      if (conn.backlog !== null) this.guarded(conn, Infinity);
      conn.sendError(e.code, e.message);
      conn.close(e.code === ErrorCode.FRAME_TOO_LARGE ? CloseReason.FRAME_TOO_LARGE : CloseReason.PROTOCOL_ERROR, e.message);
    } else {
      log.error("frame handling crashed", { err: e as Error, stack: (e as Error).stack });
      conn.close(CloseReason.PROTOCOL_ERROR, "internal error");
    }
  }

  /** runBacklog, with what it throws handled as a read's would be. */
  private guarded(conn: Conn, budget: number): void {
    try {
      this.runBacklog(conn, budget);
    } catch (e) {
      this.fail(conn, e);
    }
  }

  /** One frame body (`buf[start, end)`): decoded, validated, handed on (or held, see TURN_MIN). Protocol errors that are not fatal cost one unit of the error budget. */
  private frame(conn: Conn, buf: Uint8Array, start: number, end: number): void {
    if (conn.state === ConnState.CLOSED) return;
    // Activity is a complete frame, not a byte: a 16 MiB header followed by a byte a second
    // kept a connection (and its mf-sized scratch buffer) alive forever. So a frame must
    // complete within the idle timeout of the previous one.
    conn.lastSeen = this.readAt;
    this.m.framesIn.inc();
    // Two frames in three are acks: read from their bytes when of the usual form (scanAck), else decoded and validated.
    let s: ClientStanza | null = scanAck(buf, start, end);
    if (s === null) {
      let decoded: unknown;
      try {
        decoded = decodeBodyAt(buf, start, end);
      } catch (e) {
        return this.refuse(conn, (e as ProtocolError).code ?? ErrorCode.BAD_FRAME, (e as Error).message);
      }
      const v = validateClient(decoded);
      if (!v.ok) return this.refuse(conn, v.code, v.message, v.id);
      s = v.stanza;
    }
    if (s.t === "ack") {
      // Never held: its items are released at once (a write-back hit is never written). Ahead of held stanzas only
      // once ready, and then its receipts wait in the backlog in its place (Conn.ackAhead): a held contacts.add,
      // block.add or first message decides whether the sender gets one (else a receipt went out before a block, or
      // was dropped as a stranger's after a contacts.add: loadtest pairs, BENCHMARKS.md 2026-12-03 11:13).
      if (conn.backlog === null) return this.handler.stanza(conn, s);
      if (conn.state === ConnState.READY) {
        conn.ackAhead = true;
        try {
          return this.handler.stanza(conn, s);
        } finally {
          conn.ackAhead = false;
        }
      }
    } else if (conn.backlog === null && this.used < this.budget) {
      if (++this.used === this.budget >> 1) this.queueTurn(); // that turn resets `used` after this poll: see `used`
      return this.handler.stanza(conn, s);
    }
    this.hold(conn, s);
  }

  /** A refusal goes out now, or in its place after the stanzas its connection has waiting. */
  private refuse(conn: Conn, code: ErrorCode, message: string, id?: string | number): void {
    if (conn.backlog === null) this.reject(conn, code, message, id);
    else this.hold(conn, new Refused(code, message, id));
  }

  private hold(conn: Conn, h: Held): void {
    let b = conn.backlog as Backlog | null;
    if (b === null) {
      b = conn.backlog = { items: [], head: 0 };
      this.waiting.push(conn);
    }
    b.items.push(h);
    this.m.held.inc();
    if (!conn.paused && b.items.length - b.head >= BACKLOG_PAUSE) {
      conn.paused = true;
      conn.socket.pause();
      this.m.paused.inc();
    }
    this.queueTurn();
  }

  private queueTurn(): void {
    if (this.turnQueued) return;
    this.turnQueued = true;
    setImmediate(this.turn);
  }

  /** One turn's share of the backlogs, round robin: served from the head until the budget is spent; one served in part goes to the back. */
  private runBacklogs(): void {
    const q = this.waiting;
    let i = this.waitingHead;
    while (i < q.length && this.used < this.budget) {
      const conn = q[i]!;
      q[i++] = undefined as unknown as Conn; // not kept alive by the queue once served
      if (conn.backlog === null) continue;
      if (conn.state === ConnState.CLOSED) {
        this.dropBacklog(conn); // a closed connection's stanzas are never handled
        continue;
      }
      this.guarded(conn, this.budget - this.used);
      // Left with stanzas only when the budget ran out (or it closed meanwhile: dropped at its next turn).
      if (conn.backlog !== null) q.push(conn);
    }
    if (i === q.length) {
      this.waiting = [];
      this.waitingHead = 0;
    } else if (i > 1024 && i * 2 > q.length) {
      // Served entries are dropped once they are the larger part: each connection is copied O(1) times on the average.
      this.waiting = q.slice(i);
      this.waitingHead = 0;
    } else this.waitingHead = i;
  }

  /** Handles up to `budget` of `conn`'s held stanzas (refusals are free); resumes its socket once half is done. */
  private runBacklog(conn: Conn, budget: number): void {
    const b = conn.backlog as Backlog;
    const items = b.items;
    let n = 0;
    while (b.head < items.length && n < budget) {
      if (conn.state === ConnState.CLOSED) break;
      const h = items[b.head]!;
      items[b.head++] = undefined as unknown as Held; // not kept alive until the backlog empties
      if (h instanceof Refused) this.reject(conn, h.code, h.message, h.id);
      else if (typeof h === "function") h(); // an earlier ack's receipts: not a stanza, not counted
      else {
        n++;
        this.used++;
        this.handler.stanza(conn, h);
      }
    }
    const left = items.length - b.head;
    if (conn.state === ConnState.CLOSED) this.dropBacklog(conn);
    else if (left === 0) conn.backlog = null;
    if (conn.paused && left <= BACKLOG_PAUSE / 2 && conn.state !== ConnState.CLOSED) {
      conn.paused = false;
      conn.socket.resume();
      this.m.resumed.inc();
    }
  }

  /** Handles every held stanza now (a shutdown commits what was accepted; what is held has not been yet). */
  settle(): void {
    while (this.waitingHead < this.waiting.length) {
      const list = this.waiting;
      const head = this.waitingHead;
      this.waiting = [];
      this.waitingHead = 0;
      for (let i = head; i < list.length; i++) {
        const conn = list[i]!;
        if (conn.backlog !== null) {
          if (conn.state !== ConnState.CLOSED) this.guarded(conn, Infinity);
          else this.dropBacklog(conn);
        }
      }
    }
    flushAll();
  }

  /**
   * A closed connection's backlog: its stanzas are dropped (never answered; the client resends what got no `sent`),
   * but what its acks left to run (Conn.later) runs, since those items are gone from the queue already.
   */
  private dropBacklog(conn: Conn): void {
    const b = conn.backlog as Backlog;
    conn.backlog = null;
    for (let i = b.head; i < b.items.length; i++) {
      const h = b.items[i];
      if (typeof h === "function") h();
    }
  }

  /** Answers a refused stanza with `err` and charges the error budget; past it the connection closes (§2.3). */
  reject(conn: Conn, code: ErrorCode, message: string, id?: string | number): void {
    this.m.errors.inc();
    conn.sendError(code, message, id);
    if (++conn.errors > this.opts.errorBudget) {
      conn.sendError(ErrorCode.TOO_MANY_ERRORS, `more than ${this.opts.errorBudget} invalid frames`);
      conn.close(CloseReason.PROTOCOL_ERROR, "too many invalid frames");
    }
  }

  /** Stanzas a turn may handle now (TURN_MIN..TURN_MAX): the inbound pacing's current budget. */
  turnBudget(): number {
    return this.budget;
  }

  /** Stanzas read and not yet handled, all connections (the pacing's backlog). */
  held(): number {
    let n = 0;
    for (let i = this.waitingHead; i < this.waiting.length; i++) {
      const c = this.waiting[i]!;
      if (c.backlog !== null) n += c.backlog.items.length - c.backlog.head;
    }
    return n;
  }

  count(t: Transport): number {
    let n = 0;
    for (const c of this.all) if (c.transport === t) n++;
    return n;
  }

  unsent(): { max: number; total: number } {
    let max = 0;
    let total = 0;
    for (const c of this.all) {
      const u = c.unsent;
      total += u;
      if (u > max) max = u;
    }
    return { max, total };
  }
}
