/**
 * A WebSocket client's framing (RFC 6455) over a socket the caller owns, for
 * the test harness's RawConn: the upgrade request, masked client frames,
 * unmasked server frames, ping answered with pong, the close frame kept.
 *
 * Why not Bun's WebSocket client: it reads whatever arrives and cannot pause,
 * and tests of flow control need a reader that stops reading (the TCP
 * socket's `pause()`), as a busy browser tab does. Not a general client: no
 * extensions (the server has compression off), no text messages sent.
 */
import { concat } from "../../src/client/crypto/bytes.ts";
import { FrameDecoder, HARD_MAX_FRAME } from "../../src/protocol/frame.ts";

const OP_CONT = 0x0, OP_TEXT = 0x1, OP_BINARY = 0x2, OP_CLOSE = 0x8, OP_PING = 0x9, OP_PONG = 0xa;

export class WsFraming {
  /** The server's close frame, once it came. */
  closeFrame: { code: number; reason: string } | null = null;
  /** Text messages the server sent (none should come: the protocol is binary). */
  readonly texts: string[] = [];
  private upgraded = false;
  private closeSent = false;
  private head = "";
  private onUpgrade: ((err?: Error) => void) | null = null;
  private inbuf: Uint8Array = new Uint8Array(0);
  private fragments: Uint8Array[] = [];
  /** Bytes the socket did not take yet (Bun's write() does not buffer). */
  private unsent: Uint8Array = new Uint8Array(0);
  /** Cuts `sendStream` bytes into protocol frames; each body becomes one message. */
  private cutter = new FrameDecoder(HARD_MAX_FRAME);

  constructor(
    private readonly onMessage: (body: Uint8Array) => void,
    private readonly write: (bytes: Uint8Array) => number,
  ) {}

  /** Sends the upgrade request and resolves on `101 Switching Protocols`. */
  upgrade(host: string): Promise<void> {
    const key = Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString("base64");
    const req = `GET / HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`;
    return new Promise((resolve, reject) => {
      this.onUpgrade = (err) => (err ? reject(err) : resolve());
      this.out(new TextEncoder().encode(req));
    });
  }

  /** Bytes from the socket. */
  feed(chunk: Uint8Array): void {
    if (!this.upgraded) {
      this.head += Buffer.from(chunk).toString("latin1");
      const end = this.head.indexOf("\r\n\r\n");
      if (end < 0) return;
      const status = this.head.slice(0, this.head.indexOf("\r\n"));
      if (!/^HTTP\/1\.1 101/.test(status)) return this.onUpgrade?.(new Error(`WebSocket upgrade refused: ${status}`));
      this.upgraded = true;
      chunk = new Uint8Array(Buffer.from(this.head.slice(end + 4), "latin1"));
      this.head = "";
      this.onUpgrade?.();
    }
    this.inbuf = this.inbuf.length ? concat(this.inbuf, chunk) : chunk.slice();
    this.parse();
  }

  private parse(): void {
    for (;;) {
      const b = this.inbuf;
      if (b.length < 2) return;
      let len = b[1]! & 0x7f;
      let off = 2;
      if (len === 126) {
        if (b.length < 4) return;
        len = (b[2]! << 8) | b[3]!;
        off = 4;
      } else if (len === 127) {
        if (b.length < 10) return;
        len = Number(new DataView(b.buffer, b.byteOffset + 2, 8).getBigUint64(0));
        off = 10;
      }
      if (b[1]! & 0x80) throw new Error("WsFraming: the server masked a frame (RFC 6455 §5.1 forbids it)");
      if (b.length < off + len) return;
      const fin = (b[0]! & 0x80) !== 0;
      const op = b[0]! & 0x0f;
      const payload = b.subarray(off, off + len);
      this.inbuf = b.subarray(off + len);
      this.frame(fin, op, payload);
    }
  }

  private frame(fin: boolean, op: number, payload: Uint8Array): void {
    if (op === OP_PING) return this.sendFrame(OP_PONG, payload);
    if (op === OP_PONG) return;
    if (op === OP_CLOSE) {
      const code = payload.length >= 2 ? (payload[0]! << 8) | payload[1]! : 1005;
      this.closeFrame = { code, reason: new TextDecoder().decode(payload.subarray(2)) };
      if (!this.closeSent) this.close(code === 1005 ? 1000 : code); // the answer RFC 6455 §5.5.1 asks for
      return;
    }
    if (op === OP_BINARY || op === OP_TEXT || op === OP_CONT) {
      this.fragments.push(payload.slice());
      if (!fin) return;
      const whole = this.fragments.length === 1 ? this.fragments[0]! : concat(...this.fragments);
      const text = op === OP_TEXT;
      this.fragments = [];
      if (text) this.texts.push(new TextDecoder().decode(whole));
      else this.onMessage(whole);
    }
  }

  /** Protocol bytes (length-prefixed frames, possibly split): each completed frame's body is sent as one binary message. */
  sendStream(bytes: Uint8Array): number {
    this.cutter.feed(bytes, (body) => this.sendFrame(OP_BINARY, body));
    return bytes.length;
  }

  /** One binary message as it is, whatever its content (tests of what the server does with odd bodies). */
  sendMessage(body: Uint8Array, text = false): void {
    this.sendFrame(text ? OP_TEXT : OP_BINARY, body);
  }

  close(code: number): void {
    if (this.closeSent) return;
    this.closeSent = true;
    this.sendFrame(OP_CLOSE, new Uint8Array([code >> 8, code & 0xff]));
  }

  private sendFrame(op: number, payload: Uint8Array): void {
    const n = payload.length;
    const ext = n < 126 ? 0 : n < 65536 ? 2 : 8;
    const f = new Uint8Array(2 + ext + 4 + n);
    f[0] = 0x80 | op;
    f[1] = 0x80 | (ext === 0 ? n : ext === 2 ? 126 : 127);
    const dv = new DataView(f.buffer);
    if (ext === 2) dv.setUint16(2, n);
    else if (ext === 8) dv.setBigUint64(2, BigInt(n));
    const mask = crypto.getRandomValues(new Uint8Array(4));
    f.set(mask, 2 + ext);
    const at = 6 + ext;
    for (let i = 0; i < n; i++) f[at + i] = payload[i]! ^ mask[i & 3]!;
    this.out(f);
  }

  private out(bytes: Uint8Array): void {
    if (this.unsent.length) {
      this.unsent = concat(this.unsent, bytes);
      return;
    }
    const w = this.write(bytes);
    if (w >= 0 && w < bytes.length) this.unsent = bytes.slice(w);
  }

  /** The socket's drain: sends what it did not take before. */
  drain(): void {
    const rest = this.unsent;
    if (!rest.length) return;
    const w = this.write(rest);
    this.unsent = w >= 0 ? rest.slice(w) : new Uint8Array(0);
  }
}
