/**
 * The WebSocket transport over real sockets (src/transport/ws.ts, docs/WEBSOCKET.md):
 * a real server process with ws.port set, Bun's WebSocket client for raw frames,
 * and the SDK over WS (src/client/wire-ws.ts) talking to an SDK client over TCP.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { decodeBody, encodeBody } from "../../src/protocol/codec.ts";
import { proofTranscript } from "../../src/protocol/auth.ts";
import { PROTOCOL_VERSION } from "../../src/protocol/stanzas.ts";
import { keyFromFile, signProof, type KeyFile } from "../../src/client/keys.ts";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { collect, dec, freePort } from "../wire/util.ts";

let srv: TestServer;
let wsPort: number;
const url = () => `ws://127.0.0.1:${wsPort}/`;

beforeAll(async () => {
  wsPort = await freePort();
  srv = await startServer({ args: ["--ws-port", String(wsPort)] });
});
afterAll(() => srv?.cleanup());

/** A raw WebSocket: every message decoded, the close code and reason kept. */
class RawWs {
  readonly got: any[] = [];
  close: { code: number; reason: string } | null = null;
  private waiters: (() => void)[] = [];
  private constructor(readonly ws: WebSocket) {
    ws.binaryType = "arraybuffer";
    ws.onmessage = (ev) => {
      this.got.push(typeof ev.data === "string" ? { text: ev.data } : decodeBody(new Uint8Array(ev.data as ArrayBuffer)));
      this.wake();
    };
    ws.onclose = (ev) => {
      this.close = { code: ev.code, reason: ev.reason };
      this.wake();
    };
  }
  static open(): Promise<RawWs> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url());
      ws.onopen = () => resolve(new RawWs(ws));
      ws.onerror = () => reject(new Error(`cannot open ${url()}`));
    });
  }
  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
  send(stanza: object): void {
    this.ws.send(encodeBody(stanza));
  }
  /** Waits until `pred` holds (each message or close re-checks it); fails with what arrived after 10 s. */
  async until(pred: () => boolean, what: string): Promise<void> {
    const end = Date.now() + 10_000;
    while (!pred()) {
      if (Date.now() > end) throw new Error(`${what}: got ${JSON.stringify(this.got)} close ${JSON.stringify(this.close)}`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 200);
      });
    }
  }
  async expect(t: string): Promise<any> {
    await this.until(() => this.got.some((s) => s.t === t), `expected ${t}`);
    return this.got.find((s) => s.t === t);
  }
  async closed(): Promise<{ code: number; reason: string }> {
    await this.until(() => this.close !== null, "expected the WebSocket to close");
    return this.close!;
  }
  async login(kf: KeyFile): Promise<void> {
    this.send({ t: "hello", v: [PROTOCOL_VERSION] });
    const h = await this.expect("hello");
    const sig = signProof(keyFromFile(kf), proofTranscript("auth", h.sid, h.nonce, kf.account, kf.device));
    this.send({ t: "auth", u: kf.account, d: kf.device, sig });
    await this.expect("ready");
  }
}

describe("WebSocket transport", () => {
  test("a raw WS client logs in, pings, and a clean close is code 1000 with reason client_quit", async () => {
    const kf = await srv.newDevice("wsraw");
    const c = await RawWs.open();
    await c.login(kf);
    c.send({ t: "ping", n: 7 });
    expect(await c.expect("pong")).toMatchObject({ t: "pong", n: 7 });
    c.send({ t: "close", r: "client_quit" });
    expect(await c.closed()).toEqual({ code: 1000, reason: "client_quit" });
  });

  test("a body that is not msgpack gets err bad_frame and the connection stays usable", async () => {
    const c = await RawWs.open();
    c.ws.send(new Uint8Array([0xc1])); // 0xc1 is never valid msgpack
    const e = await c.expect("err");
    expect(e.e).toBe("bad_frame");
    c.send({ t: "hello", v: [PROTOCOL_VERSION] });
    await c.expect("hello");
    c.ws.close();
  });

  test("a text message is a protocol error: err bad_frame, close protocol_error, WS code 1002", async () => {
    const c = await RawWs.open();
    c.ws.send("hello");
    const close = await c.closed();
    expect(close).toEqual({ code: 1002, reason: "protocol_error" });
    expect(c.got.find((s) => s.t === "err")?.e).toBe("bad_frame");
    expect(c.got.find((s) => s.t === "close")?.r).toBe("protocol_error");
  });

  test("a frame over the pre-login maximum is refused: err + close frame_too_large, WS code 1009", async () => {
    const c = await RawWs.open();
    c.ws.send(encodeBody({ t: "hello", v: [PROTOCOL_VERSION], ua: "x".repeat(8000) })); // pre-login bound: 4096
    expect(await c.closed()).toEqual({ code: 1009, reason: "frame_too_large" });
    expect(c.got.find((s) => s.t === "err")?.e).toBe("frame_too_large");
    expect(c.got.find((s) => s.t === "close")?.r).toBe("frame_too_large");
  });

  test("after login, a message over mf (64 KiB) is refused by the WebSocket layer with code 1009", async () => {
    const kf = await srv.newDevice("wsbig");
    const before = await srv.metric("switchboard_closes_total", '{reason="frame_too_large"}');
    const c = await RawWs.open();
    await c.login(kf);
    c.ws.send(new Uint8Array(65536 + 1));
    const close = await c.closed();
    expect(close.code).toBe(1009);
    // The server recorded it as frame_too_large, not as a peer that went away.
    await waitFor(async () => (await srv.metric("switchboard_closes_total", '{reason="frame_too_large"}')) === before + 1, "closes by frame_too_large");
  });

  test("SDK over WS and SDK over TCP: a 1:1 message each way with delivered and read receipts", async () => {
    const kw = await srv.newDevice("wsweb");
    const kt = await srv.newDevice("wstcp");
    const w = await srv.client(kw, { url: url() });
    const t = await srv.client(kt);
    const cw = collect(w);
    const ct = collect(t);
    const s1 = await w.send("wstcp", "from the browser");
    await waitFor(() => ct.messages.length === 1, "the TCP device gets the WS device's message");
    expect(dec(ct.messages[0]!.payload)).toBe("from the browser");
    expect(ct.messages[0]).toMatchObject({ from: "wsweb", fromDevice: 1, seq: s1.seq });
    await waitFor(() => cw.receipts.some((r) => r.kind === "dlv" && r.seq === s1.seq), "a delivered receipt over WS");
    t.markRead("wsweb", s1.seq);
    await waitFor(() => cw.receipts.some((r) => r.kind === "read" && r.seq === s1.seq), "a read receipt over WS");

    const s2 = await t.send("wsweb", "from the terminal");
    await waitFor(() => cw.messages.length === 1, "the WS device gets the TCP device's message");
    expect(dec(cw.messages[0]!.payload)).toBe("from the terminal");
    await waitFor(() => ct.receipts.some((r) => r.kind === "dlv" && r.seq === s2.seq), "a delivered receipt over TCP");
    // Polled: the earlier tests' WS connections end on the server when it reads their close (one is closed without
    // waiting), which nothing here orders before this reading; then w alone is left.
    await waitFor(async () => (await srv.metric("switchboard_connections", '{transport="ws"}')) === 1, "one WS connection (w) counted");
    await Promise.all([w.close(), t.close()]);
    expect(cw.errors).toEqual([]);
    expect(ct.errors).toEqual([]);
  });

  test("a message sent while the WS device is offline is queued and delivered when it connects", async () => {
    const kw = await srv.newDevice("wsoff");
    const kt = await srv.newDevice("wsoffsender");
    const t = await srv.client(kt);
    const sent = await t.send("wsoff", "while you were away");
    const w = await srv.client(kw, { url: url() });
    const cw = collect(w);
    await waitFor(() => cw.messages.length === 1, "the queued message over WS");
    expect(cw.messages[0]!.seq).toBe(sent.seq);
    await Promise.all([w.close(), t.close()]);
  });

  test("2000 messages from TCP arrive over WS once each and in order (many frames per flush)", async () => {
    const kw = await srv.newDevice("wsbulk");
    const kt = await srv.newDevice("wsbulksender");
    const w = await srv.client(kw, { url: url() });
    const t = await srv.client(kt);
    const cw = collect(w);
    const N = 2000;
    const sends: Promise<unknown>[] = [];
    for (let i = 0; i < N; i++) sends.push(t.send("wsbulk", `n${i}|${"x".repeat(i % 700)}`));
    await Promise.all(sends);
    await waitFor(() => cw.messages.length >= N, `${N} messages over WS`, 60_000);
    expect(cw.messages.length).toBe(N);
    expect(cw.messages.map((m) => dec(m.payload).split("|")[0])).toEqual(Array.from({ length: N }, (_, i) => `n${i}`));
    await Promise.all([w.close(), t.close()]);
  });

  test("a burst of 3000 pings in one go (inbound pacing, possibly ws.pause()) is answered in full and in order", async () => {
    const kf = await srv.newDevice("wsburst");
    const c = await RawWs.open();
    await c.login(kf);
    const N = 3000;
    for (let n = 1; n <= N; n++) c.send({ t: "ping", n });
    await c.until(() => c.got.filter((s) => s.t === "pong").length >= N, `${N} pongs`);
    expect(c.got.filter((s) => s.t === "pong").map((s) => s.n)).toEqual(Array.from({ length: N }, (_, i) => i + 1));
    c.ws.close();
  });

  test("the TLS twin (ws.tls_port): wss:// with the server's certificate trusted logs in; untrusted, the handshake fails", async () => {
    const untrusted = await new Promise<string>((resolve) => {
      const ws = new WebSocket(`wss://127.0.0.1:${srv.wss}/`);
      ws.onopen = () => {
        ws.close();
        resolve("open");
      };
      ws.onerror = (e) => resolve(String((e as ErrorEvent).message ?? "error"));
    });
    expect(untrusted).toContain("certificate");
    const kf = await srv.newDevice("wssdev");
    const before = await srv.metric("switchboard_connections_opened_total", '{transport="ws"}');
    const c = await srv.client(kf, { transport: "wss" });
    expect(c.isReady).toBe(true);
    expect(await srv.metric("switchboard_connections_opened_total", '{transport="ws"}')).toBe(before + 1); // counted as ws
    await c.close();
  });

  test("a plain HTTP request to the WS port gets 426 naming the protocol", async () => {
    const r = await fetch(`http://127.0.0.1:${wsPort}/`);
    expect(r.status).toBe(426);
    expect(await r.text()).toContain("WebSocket");
  });
});

describe("ws.origins", () => {
  let so: TestServer;
  let port: number;
  beforeAll(async () => {
    port = await freePort();
    so = await startServer({ args: ["--ws-port", String(port), "--ws-origins", "https://chat.example, https://other.example"] });
  });
  afterAll(() => so?.cleanup());

  const opens = (origin?: string) =>
    new Promise<boolean>((resolve) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/`, origin ? ({ headers: { Origin: origin } } as any) : undefined);
      ws.onopen = () => {
        ws.close();
        resolve(true);
      };
      ws.onerror = () => resolve(false);
    });

  test("a listed origin and a client without Origin may open; another origin gets 403 before any frame", async () => {
    expect(await opens("https://chat.example")).toBe(true);
    expect(await opens("https://other.example")).toBe(true);
    expect(await opens()).toBe(true);
    expect(await opens("https://evil.example")).toBe(false);
    const r = await fetch(`http://127.0.0.1:${port}/`, {
      headers: { Origin: "https://evil.example", Upgrade: "websocket", Connection: "Upgrade", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13" },
    });
    expect(r.status).toBe(403);
    expect(await r.text()).toContain("ws.origins");
    // The SDK (no Origin) logs in through the list.
    const kf = await so.newDevice("originsdk");
    const c = await so.client(kf, { url: `ws://127.0.0.1:${port}/` });
    await c.close();
  });
});


describe("ws.http_path: the transport on the HTTP port", () => {
  let sh: TestServer;
  beforeAll(async () => {
    sh = await startServer({ args: ["--ws-http-path", "/ws"] });
  });
  afterAll(() => sh?.cleanup());

  test("an SDK client at ws://host:http_port/ws messages a TCP device; the port's other paths are served as before", async () => {
    const kw = await sh.newDevice("httpws");
    const kt = await sh.newDevice("httpwsfriend");
    const before = await sh.metric("switchboard_connections_opened_total", '{transport="ws"}');
    const w = await sh.client(kw, { url: `ws://127.0.0.1:${sh.http}/ws` });
    const t = await sh.client(kt);
    const ct = collect(t);
    const s = await w.send("httpwsfriend", "over the HTTP port");
    await waitFor(() => ct.messages.length === 1, "the message over the HTTP port's WebSocket");
    expect(ct.messages[0]).toMatchObject({ from: "httpws", seq: s.seq });
    expect(dec(ct.messages[0]!.payload)).toBe("over the HTTP port");
    expect(await sh.metric("switchboard_connections_opened_total", '{transport="ws"}')).toBe(before + 1);
    expect((await sh.http_get("/healthz")).status).toBe(200);
    const plain = await sh.http_get("/ws");
    expect(plain.status).toBe(426);
    expect((await sh.http_get("/wsx")).status).toBe(404); // only the path itself upgrades
    await Promise.all([w.close(), t.close()]);
  });
});
