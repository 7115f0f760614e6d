/**
 * The smallest browser app on the SDK's WebSocket wire (src/client/wire-ws.ts), bundled with
 * `bun build --target browser` (test/ws/browser.test.ts loads it in headless Chromium): log in
 * with a device key signed by WebCrypto's Ed25519, send one message, wait for its delivered
 * receipt. The SDK's full client does not run in a page yet (its keys use node:crypto,
 * docs/WEBSOCKET.md "Not done"); this proves the wire, the codec and the login proof do.
 */
import { WsWire } from "../src/client/wire-ws.ts";
import { proofTranscript } from "../src/protocol/auth.ts";
import { PROTOCOL_VERSION, type ServerStanza } from "../src/protocol/stanzas.ts";

export interface ProbeOptions {
  url: string;
  account: string;
  device: number;
  /** The device's Ed25519 private key, PKCS#8 DER, base64. */
  pkcs8: string;
  to: string;
  toDevices: number[];
  text: string;
}

export interface ProbeResult {
  /** Stanza kinds in the order they arrived. */
  kinds: string[];
  seq: number;
  delivered: { u: string; d: number; seq: number };
}

const b64 = (s: string): Uint8Array<ArrayBuffer> => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));

export async function probe(o: ProbeOptions): Promise<ProbeResult> {
  const key = await crypto.subtle.importKey("pkcs8", b64(o.pkcs8), { name: "Ed25519" }, false, ["sign"]);
  const kinds: string[] = [];
  let seq = 0;
  return new Promise<ProbeResult>((resolve, reject) => {
    const wire: WsWire = new WsWire(
      (s: ServerStanza) => {
        kinds.push(s.t);
        if (s.t === "hello") {
          const transcript = proofTranscript("auth", s.sid, s.nonce, o.account, o.device);
          crypto.subtle.sign("Ed25519", key, new Uint8Array(transcript)).then(
            (sig) => wire.send({ t: "auth", u: o.account, d: o.device, sig: new Uint8Array(sig) }),
            reject,
          );
        } else if (s.t === "ready") {
          const payload = new TextEncoder().encode(o.text);
          wire.send({ t: "msg", id: "browser-1", to: o.to, p: o.toDevices.map((d) => [d, payload]) });
        } else if (s.t === "sent") seq = s.seq;
        else if (s.t === "rcpt") {
          wire.send({ t: "ack", q: [s.q] });
          if (s.k === "dlv" && s.seq === seq) {
            wire.send({ t: "close", r: "client_quit" });
            resolve({ kinds, seq, delivered: { u: s.u, d: s.d, seq: s.seq } });
          }
        } else if (s.t === "err" || s.t === "close") reject(new Error(`server: ${JSON.stringify(s)}`));
      },
      (err) => reject(err ?? new Error("connection closed")),
    );
    wire.open({ url: o.url, host: "", port: 0 }).then(() => wire.send({ t: "hello", v: [PROTOCOL_VERSION], ua: "ws-probe" }), reject);
  });
}

(globalThis as { switchboardProbe?: typeof probe }).switchboardProbe = probe;
