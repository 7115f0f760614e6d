/**
 * The SDK's wire layer: one socket (TCP or TLS), framing both ways, and the
 * shared outbound buffer. It knows stanzas only as msgpack bodies it
 * validates; what they mean is the session's business (session.ts).
 */
import type { Socket } from "bun";
import { decodeBody, encodeBody } from "../protocol/codec.ts";
import { ClientCode } from "../protocol/errors.ts";
import { FrameDecoder, HARD_MAX_FRAME } from "../protocol/frame.ts";
import { FlushBatch, Outbound, type Sink } from "../protocol/outbound.ts";
import { validateServer, type ServerStanza } from "../protocol/stanzas.ts";
import type { ConnectOptions } from "./types.ts";

/** SDK connections flush together once per microtask: an application's sends of one turn go out in one write. */
const flushes = new FlushBatch(queueMicrotask);

/**
 * A framed connection. Output is batched per turn into one write by the
 * shared outbound buffer, which keeps whatever the kernel refuses for
 * `drain` (Bun's write() does not buffer).
 */
export class Wire implements Sink {
  socket: Socket<undefined> | null = null;
  /** Frames from the server up to the protocol's hard maximum (its `mf` bounds what we send, not what it sends). */
  private decoder = new FrameDecoder(HARD_MAX_FRAME);
  private out = new Outbound(this);
  flushQueued = false;
  closed = false;
  /**
   * TLS session resumption: the session to offer (from the previous connection's `tlsSession`), and this
   * connection's, taken once the server's first bytes came (TLS 1.3 sends its tickets after the handshake).
   * A resumed handshake skips the certificate and its signature, the dearest part of a TLS reconnect.
   */
  offerTlsSession: Uint8Array | null = null;
  tlsSession: Uint8Array | null = null;
  /** The TLS handshake resumed the offered session (Bun's isSessionReused). */
  tlsResumed = false;

  constructor(
    private onStanza: (s: ServerStanza) => void,
    private onClose: (err?: Error) => void,
  ) {}

  async open(o: ConnectOptions): Promise<void> {
    // `true`, not `{}`: Bun treats an empty options object as plain TCP.
    const tls = o.tls === true ? true : o.tls === false || o.tls === undefined ? undefined : o.tls;
    this.socket = await Bun.connect({
      hostname: o.host,
      port: o.port,
      tls: tls as any,
      socket: {
        binaryType: "uint8array",
        open: (s) => {
          if (tls !== undefined && this.offerTlsSession !== null) s.setSession(this.offerTlsSession);
        },
        data: (s, chunk: Uint8Array) => {
          if (tls !== undefined && this.tlsSession === null) this.tlsSession = (s.getSession() as unknown as Uint8Array | undefined) ?? null;
          try {
            this.decoder.feed(chunk, (body) => {
              const v = validateServer(decodeBody(body));
              if (v.ok) this.onStanza(v.stanza);
              else this.onStanza({ t: "err", e: ClientCode.BAD_SERVER_FRAME, m: v.message });
            });
          } catch (e) {
            this.kill(e as Error);
          }
        },
        drain: () => this.flush(),
        // Bun.connect resolves before the TLS handshake; writes made before it return 0 and stay
        // buffered here, so flush once it is done, and fail loudly when it is not.
        handshake: (s, ok, authErr) => {
          this.tlsResumed = s.isSessionReused();
          if (ok) this.flush();
          else this.kill(new Error(`TLS handshake failed: ${authErr?.message ?? "certificate not trusted"}`));
        },
        close: (_s, err) => {
          if (this.closed) return;
          this.closed = true;
          this.out.clear();
          this.onClose(err);
        },
        error: () => {},
        connectError: () => {},
      },
    });
  }

  /** Queues a stanza. Returns false, queuing nothing, when its body is larger than `maxBody`. */
  send(stanza: object, maxBody = Infinity): boolean {
    if (this.closed) return true;
    const body = encodeBody(stanza);
    if (body.length > maxBody) return false;
    this.out.frame(body);
    flushes.add(this);
    return true;
  }

  /** The outbound buffer's sink: the socket once it is open (writes before that are kept). */
  write(bytes: Uint8Array, length: number): number {
    return this.socket ? this.socket.write(bytes, 0, length) : 0;
  }

  flush(): void {
    if (this.closed) return;
    this.out.flush();
  }

  /** Flushes and ends the socket (a clean close, after a `close` frame). */
  end(): void {
    this.flush();
    this.socket?.end();
  }

  /** Cuts the connection at once; `onClose` runs now, with `err`. */
  kill(err?: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.out.clear();
    this.socket?.terminate();
    this.onClose(err);
  }
}
