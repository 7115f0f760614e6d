/**
 * A connection end to end, as NATS's client.go owns one: the socket
 * handlers, frame reassembly and body decoding, validation, the error
 * budget, one flush per read and the close reason of every way a connection
 * ends. What a valid stanza means is not decided here: each one goes to the
 * `StanzaHandler` (src/core/dispatch.ts), which answers through the Conn.
 */
import type { Socket, SocketHandler } from "bun";
import { decodeBody } from "../protocol/codec.ts";
import { CloseReason, ErrorCode, ProtocolError } from "../protocol/errors.ts";
import { validateClient, type ClientStanza } from "../protocol/stanzas.ts";
import { Conn, ConnState, flushAll, type ConnShared, type Transport } from "./connection.ts";
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
}

export interface ListenerOptions {
  maxFrame: number;
  outboundLimit: number;
  /** Non-fatal protocol errors a connection may make; one more closes it. */
  errorBudget: number;
}

export class Connections {
  /** Open connections (a closed Conn leaves at once; its socket may still be flushing, see `openSockets`). */
  readonly all = new Set<Conn>();
  /** Sockets whose close event has not come yet. */
  openSockets = 0;
  /** When the current read arrived: a complete frame in it marks its connection active (§4.1). */
  private readAt = 0;
  private readonly shared: ConnShared;

  constructor(
    private readonly opts: ListenerOptions,
    private readonly handler: StanzaHandler,
    private readonly m: TransportCounters,
  ) {
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
        // Date.now(), not a coarse clock: the auth timeout must not fire early either.
        const conn = new Conn(socket, transport, this.shared, Date.now());
        socket.data = conn;
        this.all.add(conn);
        this.openSockets++;
        this.m.opened[transport].inc();
        this.handler.opened(conn);
      },
      data: (socket: Socket<Conn>, chunk: Uint8Array) => this.read(socket.data, chunk),
      drain: (socket: Socket<Conn>) => {
        const conn = socket.data;
        conn.flush();
        this.handler.drained(conn);
      },
      close: (socket: Socket<Conn>, err?: Error) => {
        const conn = socket.data;
        if (!conn) return;
        this.openSockets--;
        conn.closed(err ? CloseReason.SOCKET_ERROR : CloseReason.PEER_CLOSED);
        this.all.delete(conn);
      },
      error: (socket: Socket<Conn>, err: Error) => {
        log.debug("socket error", { err, remote: socket.remoteAddress });
      },
      handshake: (socket: Socket<Conn>, success: boolean) => {
        if (!success && socket.data) {
          socket.data.closed(CloseReason.TLS_ERROR);
          socket.end();
        }
      },
    };
  }

  private read(conn: Conn, chunk: Uint8Array): void {
    if (conn.state === ConnState.CLOSED) return;
    this.m.bytesIn.inc(chunk.length);
    // The real time, not the sweep's coarse clock: that one lags by up to a sweep interval,
    // so a connection was reaped up to a sweep early, e.g. after 2.0 s of silence with
    // it = 3 s (§4.1: "never before it"; test/wire/timers.test.ts). One Date.now() per read;
    // frame() stamps it on the connection, so only complete frames count as activity.
    this.readAt = Date.now();
    try {
      conn.decoder.feed(chunk, (body) => this.frame(conn, body));
    } catch (e) {
      if (e instanceof ProtocolError) {
        conn.sendError(e.code, e.message);
        conn.close(e.code === ErrorCode.FRAME_TOO_LARGE ? CloseReason.FRAME_TOO_LARGE : CloseReason.PROTOCOL_ERROR, e.message);
      } else {
        log.error("frame handling crashed", { err: e as Error, stack: (e as Error).stack });
        conn.close(CloseReason.PROTOCOL_ERROR, "internal error");
      }
    }
    flushAll(); // every connection this read touched is flushed once (NATS's pcd)
  }

  /** One frame body: decoded, validated, handed on. Protocol errors that are not fatal cost one unit of the error budget. */
  private frame(conn: Conn, body: Uint8Array): void {
    if (conn.state === ConnState.CLOSED) return;
    // Activity is a complete frame, not a byte: a 16 MiB header followed by a byte a second
    // kept a connection (and its mf-sized scratch buffer) alive forever. So a frame must
    // complete within the idle timeout of the previous one.
    conn.lastSeen = this.readAt;
    this.m.framesIn.inc();
    let decoded: unknown;
    try {
      decoded = decodeBody(body);
    } catch (e) {
      return this.reject(conn, (e as ProtocolError).code ?? ErrorCode.BAD_FRAME, (e as Error).message);
    }
    const v = validateClient(decoded);
    if (!v.ok) return this.reject(conn, v.code, v.message, v.id);
    this.handler.stanza(conn, v.stanza);
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
