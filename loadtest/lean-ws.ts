/**
 * The lean client's socket over WebSocket (`--transport ws`): Bun's WebSocket
 * client behind the three calls LeanConn makes of a socket (write, end,
 * terminate). Each protocol frame is one binary message (docs/PROTOCOL.md
 * §2.1.1), so `write()` cuts the Outbound's length-prefixed frames back into
 * bodies and sends each; the WebSocket buffers what the kernel refuses
 * (`bufferedAmount`), so every byte counts as taken, unlike Bun.connect's
 * write(). Inbound, each message is one frame body, handed to LeanConn.body().
 */
import { HEADER_SIZE } from "../src/protocol/frame.ts";

/** What LeanConn needs of its socket (a Bun Socket has it too). */
export interface LeanSocket {
  /** Writes `bytes[byteOffset, byteOffset + byteLength)` (Bun's Socket.write). */
  write(bytes: Uint8Array, byteOffset: number, byteLength: number): number;
  end(): void;
  terminate(): void;
}

export interface WsOwner {
  /** One frame body; `b` valid only during the call. */
  body(b: Uint8Array): void;
  socketClosed(): void;
  closeReason: string;
}

export class WsLink implements LeanSocket {
  private constructor(private readonly ws: WebSocket) {}

  /** Opens ws://host:port/ for `owner`; rejects if it does not open. */
  static open(url: string, owner: WsOwner, after: () => void): Promise<WsLink> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.binaryType = "arraybuffer";
      let opened = false;
      ws.onopen = () => {
        opened = true;
        resolve(new WsLink(ws));
      };
      ws.onerror = () => {
        if (!opened) reject(new Error(`cannot open ${url}`));
        else if (!owner.closeReason) owner.closeReason = "socket_error";
      };
      ws.onmessage = (ev) => {
        if (typeof ev.data === "string") return; // never sent by the server (the protocol is binary)
        owner.body(new Uint8Array(ev.data as ArrayBuffer));
        after();
      };
      ws.onclose = () => {
        if (opened) owner.socketClosed();
      };
    });
  }

  write(bytes: Uint8Array, byteOffset: number, byteLength: number): number {
    if (this.ws.readyState !== 1) return -1;
    const view = new DataView(bytes.buffer, bytes.byteOffset + byteOffset, byteLength);
    const base = byteOffset;
    let off = 0;
    while (off + HEADER_SIZE <= byteLength) {
      const end = off + HEADER_SIZE + view.getUint32(off);
      if (end > byteLength) break; // Outbound writes whole frames; kept for safety
      this.ws.send(bytes.subarray(base + off + HEADER_SIZE, base + end));
      off = end;
    }
    return off;
  }

  end(): void {
    this.ws.close(1000, "client_quit");
  }

  /** As a network failure would: Bun's client has terminate(); close() elsewhere. */
  terminate(): void {
    const w = this.ws as WebSocket & { terminate?: () => void };
    if (typeof w.terminate === "function") w.terminate();
    else w.close();
  }
}
