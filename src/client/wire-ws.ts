/**
 * The SDK's WebSocket wire: the same stanzas as wire.ts, each frame body one
 * binary WebSocket message (docs/PROTOCOL.md, "WebSocket"). Uses the global
 * WebSocket, so it runs unchanged in Bun, Node 22+ and browsers. Chosen by
 * handshake.ts when ConnectOptions.url is a ws:// or wss:// URL.
 *
 * No outbound buffer of its own: a WebSocket keeps what it cannot send yet
 * (`bufferedAmount`), and the messages of one turn are not worth batching
 * here, since each is its own WebSocket frame anyway.
 */
import { decodeBody, encodeBody } from "../protocol/codec.ts";
import { ClientCode } from "../protocol/errors.ts";
import { validateServer, type ServerStanza } from "../protocol/stanzas.ts";
import { ClientError, type ConnectOptions } from "./types.ts";

/** True when `url` names a WebSocket endpoint (the wire handshake.ts picks for it). */
export function isWsUrl(url: string | undefined): url is string {
  return url !== undefined && /^wss?:\/\//i.test(url);
}

export class WsWire {
  private ws: WebSocket | null = null;
  closed = false;
  /** The server's close code and reason text, once it closed (the reason is a CloseReason). */
  closeCode: number | null = null;
  closeText = "";

  constructor(
    private onStanza: (s: ServerStanza) => void,
    private onClose: (err?: Error) => void,
  ) {}

  /** Resolves once the WebSocket is open; rejects with connect_error when it never opens. */
  open(o: ConnectOptions): Promise<void> {
    const url = o.url!;
    return new Promise((resolve, reject) => {
      let opened = false;
      // Bun's WebSocket takes TLS options (a CA to trust for wss://) as a second argument; a browser's
      // takes protocols there, so nothing is passed unless the caller gave TLS options.
      const ws = typeof o.tls === "object" ? new WebSocket(url, { tls: o.tls } as unknown as string[]) : new WebSocket(url);
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      ws.onopen = () => {
        opened = true;
        resolve();
      };
      ws.onmessage = (ev: MessageEvent) => {
        if (this.closed) return;
        if (typeof ev.data === "string") {
          this.onStanza({ t: "err", e: ClientCode.BAD_SERVER_FRAME, m: "text WebSocket message from the server" });
          return;
        }
        try {
          const v = validateServer(decodeBody(new Uint8Array(ev.data as ArrayBuffer)));
          if (v.ok) this.onStanza(v.stanza);
          else this.onStanza({ t: "err", e: ClientCode.BAD_SERVER_FRAME, m: v.message });
        } catch (e) {
          this.kill(e as Error);
        }
      };
      ws.onerror = () => {
        if (!opened) reject(new ClientError(ClientCode.CONNECT_ERROR, `cannot open WebSocket ${url}`));
      };
      ws.onclose = (ev: CloseEvent) => {
        this.closeCode = ev.code;
        this.closeText = ev.reason;
        if (!opened) {
          reject(new ClientError(ClientCode.CONNECT_ERROR, `WebSocket ${url} closed before it opened (${ev.code})`));
          return;
        }
        if (this.closed) return;
        this.closed = true;
        this.onClose();
      };
    });
  }

  /** Sends a stanza as one message. Returns false, sending nothing, when its body is larger than `maxBody`. */
  send(stanza: object, maxBody = Infinity): boolean {
    if (this.closed || this.ws === null || this.ws.readyState !== 1) return true;
    const body = encodeBody(stanza);
    if (body.length > maxBody) return false;
    this.ws.send(body);
    return true;
  }

  flush(): void {}

  /** A clean close, after a `close` stanza (the server answers it and closes). */
  end(): void {
    this.ws?.close(1000, "client_quit");
  }

  /** Cuts the connection at once; `onClose` runs now, with `err`. */
  kill(err?: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.ws?.close();
    this.onClose(err);
  }
}
