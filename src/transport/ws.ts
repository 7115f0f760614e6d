/**
 * The WebSocket transport (issue 18): Bun.serve's WebSocket (uWebSockets) on
 * its own port (`ws.port`, off by default). Each binary message is one frame
 * body of the same protocol, so a WebSocket connection is an ordinary Conn:
 * the same validation, error budget, pacing, outbound buffer, slow-consumer
 * limit and close reasons as TCP (src/transport/listener.ts). Only the socket
 * differs, and `WsSocket` adapts it to what a Conn writes to:
 *
 * - Outbound: the Conn's buffer holds length-prefixed frames (one write per
 *   turn, as on TCP); `write()` cuts it back into bodies and sends each as one
 *   message. `send()` returning -1 (Bun buffered it: backpressure) stops the
 *   write there, and no write sends anything while uWS still buffers bytes;
 *   the rest stays in our buffer until `drain`, where the outbound limit
 *   applies as on TCP. 0 (dropped: the socket is closing) is
 *   "closed": whatever was not sent is not delivered and stays in the device's
 *   queue until acknowledged, so it is delivered again on the next connection.
 * - Inbound: a message over the connection's current maximum (the pre-login
 *   bound, then `mf`) is refused like an oversized length prefix; uWS itself
 *   refuses anything over `maxPayloadLength` (= mf) before we see it, with
 *   close code 1009. A text message is a protocol error (the protocol is binary).
 * - Close: the `close` stanza goes out first, as on TCP, then the WebSocket
 *   close with a code from WS_CLOSE_CODES and the CloseReason as its reason text.
 *
 * No topics (durable traffic must not go through Bun's publish buffers, which
 * drop), no compression (per-socket deflate costs ~16 KB per connection).
 */
import type { Server, ServerWebSocket, WebSocketHandler } from "bun";
import { CloseReason, ErrorCode, ProtocolError } from "../protocol/errors.ts";
import { HEADER_SIZE } from "../protocol/frame.ts";
import { ConnState, type Conn, type ConnSocket } from "./connection.ts";
import type { Connections } from "./listener.ts";

/**
 * WebSocket close codes (RFC 6455 §7.4) for our close reasons; the reason text is always the
 * CloseReason itself, so a browser, which sees only code and reason, learns the same as a TCP client.
 * 4000-4999 are the application's: reasons with no standard code.
 */
export const WS_CLOSE_CODES: Record<CloseReason, number> = {
  [CloseReason.CLIENT_QUIT]: 1000,
  [CloseReason.PEER_CLOSED]: 1000,
  [CloseReason.SERVER_SHUTDOWN]: 1001,
  [CloseReason.PROTOCOL_ERROR]: 1002,
  [CloseReason.FRAME_TOO_LARGE]: 1009,
  [CloseReason.UNSUPPORTED_VERSION]: 4001,
  [CloseReason.AUTH_FAILED]: 4002,
  [CloseReason.AUTH_TIMEOUT]: 4003,
  [CloseReason.RATE_LIMITED]: 4004,
  [CloseReason.IDLE_TIMEOUT]: 4005,
  [CloseReason.SLOW_CONSUMER]: 1008,
  [CloseReason.REPLACED]: 4006,
  [CloseReason.REVOKED]: 4007,
  [CloseReason.SOCKET_ERROR]: 1011,
  [CloseReason.TLS_ERROR]: 1015,
  [CloseReason.TRY_AGAIN]: 1013,
  [CloseReason.REDIRECT]: 4008,
  [CloseReason.ACCOUNT_DISABLED]: 4009,
  [CloseReason.KICKED]: 4010,
};

/** A ServerWebSocket as the socket of a Conn. One per connection, set at upgrade (ws.data). */
export class WsSocket implements ConnSocket {
  ws: ServerWebSocket<WsSocket> | null = null;
  conn: Conn | null = null;

  /** The peer's address, read from the socket when asked for (rate limits after failures, logs), not kept per connection. */
  get remoteAddress(): string {
    return this.ws?.remoteAddress ?? "";
  }

  get readyState(): number {
    return this.ws?.readyState ?? 0;
  }

  /**
   * Sends the whole frames at the start of `bytes` (the outbound buffer always starts at a frame
   * boundary, because only whole frames are ever reported written) and returns the bytes they took.
   */
  write(bytes: Uint8Array, byteOffset: number, byteLength: number): number {
    return this.frames(byteOffset === 0 && byteLength === bytes.length ? bytes : bytes.subarray(byteOffset, byteOffset + byteLength), true);
  }

  /** Sends whole frames from `bytes`; with `paced`, stops after the first one Bun had to buffer. */
  private frames(bytes: Uint8Array, paced: boolean): number {
    const ws = this.ws;
    if (ws === null) return 0;
    if (ws.readyState !== 1) return -1;
    // Still waiting for a drain: uWS takes every send() into its own buffer and only reports
    // backpressure, so sending on would move our whole outbound buffer into uWS's (where the
    // slow-consumer limit cannot see it) until its backpressureLimit drops a frame and closes the
    // socket. Measured before this check (test/wire/flow.test.ts over WS): 600 x 64 KiB pushed at a
    // paused reader and never a slow_consumer; a late reader's backlog closed by uWS instead of drained.
    if (paced && ws.getBufferedAmount() > 0) return 0;
    // One cork for the batch: outside Bun's own handlers (a flush from a timer or setImmediate),
    // each send would otherwise be its own syscall.
    return ws.cork(() => {
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      let off = 0;
      while (off + HEADER_SIZE <= bytes.length) {
        const end = off + HEADER_SIZE + view.getUint32(off);
        if (end > bytes.length) break; // cannot happen (Outbound appends whole frames); kept for safety
        const r = ws.send(bytes.subarray(off + HEADER_SIZE, end), false);
        if (r === 0) return off === 0 ? -1 : off; // dropped: the socket is closing
        off = end;
        if (r === -1 && paced) break; // buffered by Bun: wait for drain
      }
      return off;
    });
  }

  /** Sends the rest of the outbound buffer (the `close` stanza), then the WebSocket close. */
  end(tail?: Uint8Array): void {
    const ws = this.ws;
    if (ws === null || ws.readyState !== 1) return;
    if (tail !== undefined) this.frames(tail, false); // the last frames: Bun keeps them until the close
    const reason = this.conn?.closeReason ?? CloseReason.PEER_CLOSED;
    ws.close(WS_CLOSE_CODES[reason] ?? 1000, reason);
  }

  pause(): void {
    this.ws?.pause();
  }

  resume(): void {
    this.ws?.resume();
  }
}

export interface WsListenOptions {
  host: string;
  port: number;
  maxFrame: number;
  /** Seconds without a message before uWS closes the socket; the sweep's idle timeout (§4.1) applies first. */
  idleTimeout: number;
  /** Origins allowed to upgrade (ws.origins); empty: any. */
  origins: readonly string[];
  /** PEM key and certificate: the TLS twin (wss://, ws.tls_port). */
  tls?: { key: string; cert: string };
}

/** ws.origins as a list: comma-separated, blanks dropped. */
export function parseOrigins(setting: string): string[] {
  return setting.split(",").map((o) => o.trim()).filter((o) => o !== "");
}

/** The `websocket` handler of Bun.serve for `conns`. */
export function wsHandler(conns: Connections, maxFrame: number, idleTimeout: number): WebSocketHandler<WsSocket> {
  return {
    maxPayloadLength: maxFrame,
    // Bun's own buffer is bounded by the outbound buffer's pacing (we stop at the first -1), so its
    // limit only has to be larger than a frame; past it a send is dropped, and that closes.
    backpressureLimit: Math.max(1024 * 1024, 2 * maxFrame),
    closeOnBackpressureLimit: true,
    perMessageDeflate: false,
    // The protocol has its own ping (§4.1); uWS's idle close is only a backstop (0..960 s).
    idleTimeout: Math.min(960, idleTimeout),
    sendPings: true,
    open(ws) {
      const s = ws.data;
      s.ws = ws;
      const conn = conns.conn(s, "ws");
      s.conn = conn;
      conns.adopt(conn);
    },
    message(ws, msg) {
      const conn = ws.data.conn!;
      if (typeof msg === "string") {
        return conns.violation(conn, new ProtocolError(ErrorCode.BAD_FRAME, "text WebSocket messages are not part of the protocol: send each frame body as one binary message", true));
      }
      conns.message(conn, msg);
    },
    drain(ws) {
      const conn = ws.data.conn;
      if (conn && conn.state !== ConnState.CLOSED) conns.drained(conn);
    },
    close(ws, code, reason) {
      const conn = ws.data.conn;
      if (!conn) return;
      conns.hangup(conn, hangupReason(code, reason));
    },
  };
}

/**
 * Why the socket ended, from the close event. uWS refuses a message over maxPayloadLength itself:
 * the peer gets 1009, and our handler sees 1006 with "Received too big message" (Bun 1.4.5, probed).
 */
export function hangupReason(code: number, reason: string): CloseReason {
  if (code === 1009 || (code === 1006 && /too big/i.test(reason))) return CloseReason.FRAME_TOO_LARGE;
  return code === 1006 ? CloseReason.SOCKET_ERROR : CloseReason.PEER_CLOSED;
}

/**
 * Upgrades a request to the transport: undefined once upgraded, else the refusal. With an Origin
 * allow-list, a browser page of another origin is refused (403) before any frame: a browser sends
 * its page's Origin on every WebSocket, and without the list any site a user visits could open one.
 * A request that is not an upgrade gets 426.
 */
export function wsUpgrade(origins: readonly string[]): (req: Request, server: Server<WsSocket>) => Response | undefined {
  const allowed = new Set(origins);
  return (req, server) => {
    // No Origin: not a browser (the SDK in Bun or Node), which could send any Origin anyway.
    const origin = req.headers.get("origin");
    if (allowed.size > 0 && origin !== null && !allowed.has(origin)) {
      return new Response(`origin ${JSON.stringify(origin)} is not in ws.origins\n`, { status: 403 });
    }
    if (server.upgrade(req, { data: new WsSocket() })) return undefined;
    return new Response("this speaks the Switchboard protocol over WebSocket (docs/PROTOCOL.md)\n", { status: 426, headers: { upgrade: "websocket" } });
  };
}

/** Opens the WebSocket listener: upgrades on any path, everything else is 426 (wsUpgrade). */
export function listenWs(conns: Connections, o: WsListenOptions): Server<WsSocket> {
  const upgrade = wsUpgrade(o.origins);
  return Bun.serve<WsSocket>({
    hostname: o.host,
    port: o.port,
    ...(o.tls ? { tls: o.tls } : {}),
    fetch: upgrade,
    websocket: wsHandler(conns, o.maxFrame, o.idleTimeout),
  });
}

/**
 * The URL WebSocket clients reach a node at, by default (cluster.advertise_ws, sent in redirects): its ws.port,
 * else its ws.tls_port, else ws.http_path on http.tls_port, then on http.port, on `host` (the advertised one); null without WebSocket.
 */
export function wsUrlOf(host: string, bound: { ws?: number | undefined; wss?: number | undefined; https?: number | null; http: number | null; path: string }): string | null {
  if (bound.ws !== undefined) return `ws://${host}:${bound.ws}/`;
  if (bound.wss !== undefined) return `wss://${host}:${bound.wss}/`;
  // The HTTPS twin before plain http.port: http.port is on by default, http.tls_port only when asked for.
  if (bound.path && bound.https != null) return `wss://${host}:${bound.https}${bound.path}`;
  if (bound.path && bound.http !== null) return `ws://${host}:${bound.http}${bound.path}`;
  return null;
}
