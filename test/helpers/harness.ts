/**
 * Test harness: real server processes on ephemeral ports with their own data
 * directories, real sockets, and send/expect helpers (NATS's setupConn).
 *
 * @example
 * const srv = await startServer();
 * const alice = await srv.newDevice("alice");
 * const c = await srv.client(alice);
 * const raw = await srv.raw(); await raw.hello(); raw.send({ t: "ping", n: 1 }); await raw.expect("pong");
 */
import type { Subprocess, Socket } from "bun";
import { mkdtempSync, rmSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { decodeBody, encodeFrame } from "../../src/protocol/codec.ts";
import { FrameDecoder } from "../../src/protocol/frame.ts";
import { proofTranscript } from "../../src/protocol/auth.ts";
import { validateServer, type HelloS, type ServerStanza } from "../../src/protocol/stanzas.ts";
import { SqliteAccountStore } from "../../src/store/accounts.ts";
import { enrollDevice, SwitchboardClient, type ClientOptions } from "../../src/client/client.ts";
import { WsFraming } from "./ws-framing.ts";
import { generateDeviceKey, keyToFile, signProof, keyFromFile, type KeyFile } from "../../src/client/keys.ts";

export const ROOT = resolve(import.meta.dir, "../..");
export const BUN = process.execPath;
export const MAIN = join(ROOT, "src/cli/main.ts");

/** How a test connects: TCP, TLS, or WebSocket (ws.port, docs/WEBSOCKET.md; every test server has one). */
export type Transport = "tcp" | "tls" | "ws" | "wss";

export interface TestServer {
  tcp: number;
  tls: number;
  ws: number;
  /** The WebSocket-over-TLS port (ws.tls_port). */
  wss: number;
  http: number;
  dataDir: string;
  proc: Subprocess;
  /** The dev certificate, to trust in TLS clients. */
  ca(): string;
  /** Creates an account and returns its one-time enrollment code. */
  addUser(name: string): string;
  /** Creates the account if needed and enrolls one more device (the first by code, later ones by code too). */
  newDevice(account: string, name?: string): Promise<KeyFile>;
  /** A connected SDK client; `setup` runs before it connects, to attach handlers that must not miss early events. */
  client(kf: KeyFile, opts?: Partial<ClientOptions> & { tlsTransport?: boolean; transport?: Transport; setup?: (c: SwitchboardClient) => unknown }): Promise<SwitchboardClient>;
  raw(transport?: Transport): Promise<RawConn>;
  /** GET on the HTTP port. */
  http_get(path: string): Promise<{ status: number; text: string }>;
  metric(name: string, labels?: string): Promise<number>;
  stop(): Promise<number>;
  kill9(): Promise<void>;
  /** Starts a new server process on the same data directory (ports change). */
  /** Starts it again on its data dir; `env`: variables added for that process only (test hooks, e.g. SB_TEST_KILL_AT). */
  restart(extraArgs?: string[], env?: Record<string, string>): Promise<void>;
  cleanup(): void;
}

async function spawnServer(dataDir: string, args: string[], env?: Record<string, string>): Promise<{ proc: Subprocess; tcp: number; tls: number; ws: number; wss: number; http: number }> {
  const proc = Bun.spawn([BUN, MAIN, "serve", "--data-dir", dataDir, "--tcp-port", "0", "--tls-port", "0", "--ws-port", "0", "--ws-tls-port", "0", "--http-port", "0", "--log-level", "warn", ...args], {
    stdout: "pipe",
    stderr: "inherit",
    cwd: ROOT,
    ...(env ? { env: { ...process.env, ...env } } : {}),
  });
  const reader = (proc.stdout as ReadableStream<Uint8Array>).getReader();
  let buf = "";
  const dec = new TextDecoder();
  while (!buf.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`server exited before listening (exit ${await proc.exited}); args ${args.join(" ")}`);
    buf += dec.decode(value);
  }
  reader.releaseLock();
  const line = JSON.parse(buf.split("\n")[0]!);
  return { proc, tcp: line.tcp, tls: line.tls, ws: line.ws, wss: line.wss, http: line.http };
}

export async function startServer(opts: { args?: string[]; dataDir?: string } = {}): Promise<TestServer> {
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), "sb-test-"));
  let args = opts.args ?? [];
  let s = await spawnServer(dataDir, args);
  const codes = new Map<string, string>();
  const srv: TestServer = {
    get tcp() { return s.tcp; },
    get tls() { return s.tls; },
    get ws() { return s.ws; },
    get wss() { return s.wss; },
    get http() { return s.http; },
    get proc() { return s.proc; },
    dataDir,
    ca: () => readFileSync(join(dataDir, "tls", "dev-cert.pem"), "utf8"),
    addUser(name) {
      const store = new SqliteAccountStore(dataDir);
      try {
        const r = store.accountExists(name) ? store.newEnrollCode(name, 3600) : store.createAccount(name, 3600);
        if (!r.ok) throw new Error(r.message);
        codes.set(name, r.value.code);
        return r.value.code;
      } finally {
        store.close();
      }
    },
    async newDevice(account, name = "test") {
      const code = srv.addUser(account);
      const key = generateDeviceKey();
      const r = await enrollDevice({ host: "127.0.0.1", port: s.tcp, account, code, key, name });
      return keyToFile(key, r.account, r.device);
    },
    async client(kf, o = {}) {
      const { tlsTransport: tlsOpt, transport, setup, ...rest } = o;
      const tlsTransport = tlsOpt || transport === "tls";
      if (transport === "ws") rest.url ??= `ws://127.0.0.1:${s.ws}/`;
      if (transport === "wss") {
        rest.url ??= `wss://127.0.0.1:${s.wss}/`;
        rest.tls ??= { ca: srv.ca() };
      }
      const c = new SwitchboardClient({
        host: "127.0.0.1",
        port: tlsTransport ? s.tls : s.tcp,
        tls: tlsTransport ? { ca: srv.ca(), serverName: "localhost" } : undefined,
        key: kf,
        ...rest,
      });
      await setup?.(c);
      await c.connect();
      return c;
    },
    raw: (transport = "tcp") =>
      transport === "ws" ? RawConn.open(s.ws, undefined, true) : transport === "wss" ? RawConn.open(s.wss, srv.ca(), true) : RawConn.open(transport === "tls" ? s.tls : s.tcp, transport === "tls" ? srv.ca() : undefined),
    async http_get(path) {
      const r = await fetch(`http://127.0.0.1:${s.http}${path}`);
      return { status: r.status, text: await r.text() };
    },
    async metric(name, labels = "") {
      const { text } = await srv.http_get("/metrics");
      const line = text.split("\n").find((l) => l.startsWith(`${name}${labels} `) || (labels === "" && l.startsWith(`${name} `)));
      if (!line) throw new Error(`metric ${name}${labels} not found`);
      return Number(line.split(" ").pop());
    },
    async stop() {
      s.proc.kill("SIGTERM");
      return await s.proc.exited;
    },
    async kill9() {
      s.proc.kill("SIGKILL");
      await s.proc.exited;
    },
    async restart(extra, env) {
      if (extra) args = extra;
      s = await spawnServer(dataDir, args, env);
    },
    cleanup() {
      try {
        s.proc.kill("SIGKILL");
      } catch {}
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return srv;
}

/**
 * A raw protocol connection with send/expect helpers; no SDK in the way. Over WebSocket it is a
 * WebSocket client of its own on a TCP socket (ws-framing.ts), so that `socket.pause()` stops
 * reading exactly as it does for TCP (Bun's WebSocket client cannot pause), and the same test
 * bodies run over every transport: `send` and `sendBytes` take protocol frames, and over WS each
 * whole frame's body goes out as one binary message.
 */
export class RawConn {
  socket!: Socket<undefined>;
  /** The WebSocket layer when opened over WS; null over TCP and TLS. */
  ws: WsFraming | null = null;
  private decoder = new FrameDecoder(16 * 1024 * 1024);
  private inbox: ServerStanza[] = [];
  private waiters: { match: (s: ServerStanza) => boolean; resolve: (s: ServerStanza) => void }[] = [];
  closed = false;
  private closeWaiters: (() => void)[] = [];
  serverHello: HelloS | null = null;
  /** Every stanza received, in order. */
  readonly received: ServerStanza[] = [];

  static async open(port: number, ca?: string, ws = false): Promise<RawConn> {
    const c = new RawConn();
    if (ws) c.ws = new WsFraming((body) => c.frame(body), (bytes) => c.socket.write(bytes));
    // Bun.connect resolves before the TLS handshake is done, and a write() then returns 0
    // and drops the bytes (Bun does not buffer): wait for the handshake before handing out
    // a TLS connection, or the first frame (the hello) is silently lost.
    let handshaken!: (ok: boolean) => void;
    const handshake = new Promise<boolean>((r) => (handshaken = r));
    c.socket = await Bun.connect({
      hostname: "127.0.0.1",
      port,
      tls: ca ? { ca, serverName: "localhost" } : undefined,
      socket: {
        binaryType: "uint8array",
        data: (_s, chunk: Uint8Array) => (c.ws ? c.ws.feed(chunk) : c.feed(chunk)),
        handshake: (_s, ok) => handshaken(ok),
        drain: () => c.ws?.drain(),
        close: () => {
          c.closed = true;
          handshaken(false);
          for (const w of c.closeWaiters.splice(0)) w();
        },
        error: () => {},
      },
    });
    if (ca && !(await handshake)) throw new Error("RawConn: TLS handshake failed");
    if (c.ws) await c.ws.upgrade(`127.0.0.1:${port}`);
    return c;
  }

  private feed(chunk: Uint8Array): void {
    this.decoder.feed(chunk, (body) => this.frame(body));
  }

  private frame(body: Uint8Array): void {
    const v = validateServer(decodeBody(body));
    if (!v.ok) throw new Error(`server sent an invalid frame: ${v.message}`);
    const s = v.stanza;
    this.received.push(s);
    const i = this.waiters.findIndex((w) => w.match(s));
    if (i >= 0) this.waiters.splice(i, 1)[0]!.resolve(s);
    else this.inbox.push(s);
  }

  send(stanza: object): void {
    this.sendBytes(encodeFrame(stanza));
  }

  /** Protocol bytes (length-prefixed frames, possibly split); over WS each completed frame goes out as one message. */
  sendBytes(bytes: Uint8Array): number {
    if (this.ws) return this.ws.sendStream(bytes);
    return this.socket.write(bytes);
  }

  /** The next stanza of this kind (or matching the predicate), from what arrived already or what arrives next. */
  expect<T extends ServerStanza["t"]>(kind: T | ((s: ServerStanza) => boolean), timeoutMs = 10_000): Promise<Extract<ServerStanza, { t: T }>> {
    const match = typeof kind === "function" ? kind : (s: ServerStanza) => s.t === kind;
    const i = this.inbox.findIndex(match);
    if (i >= 0) return Promise.resolve(this.inbox.splice(i, 1)[0] as any);
    return new Promise((resolve, reject) => {
      const w = { match, resolve: resolve as (s: ServerStanza) => void };
      this.waiters.push(w);
      setTimeout(() => {
        const j = this.waiters.indexOf(w);
        if (j >= 0) {
          this.waiters.splice(j, 1);
          // A close frame is shown whole: its reason is usually the answer to "why not".
          const last = this.received.slice(-5).map((s) => (s.t === "close" || s.t === "err" ? s : s.t));
          reject(new Error(`expected ${typeof kind === "string" ? kind : "a matching stanza"}; got ${JSON.stringify(last)}${this.closed ? " and the connection closed" : ""}`));
        }
      }, timeoutMs);
    });
  }

  /** Resolves when the server closes the connection. */
  waitClosed(timeoutMs = 10_000): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.closeWaiters.push(resolve);
      setTimeout(() => reject(new Error("connection still open")), timeoutMs);
    });
  }

  async hello(): Promise<HelloS> {
    this.send({ t: "hello", v: [1] });
    this.serverHello = (await this.expect("hello")) as HelloS;
    return this.serverHello;
  }

  /** hello + auth as the device of a key file. */
  async login(kf: KeyFile): Promise<void> {
    const h = this.serverHello ?? (await this.hello());
    const key = keyFromFile(kf);
    this.send({ t: "auth", u: kf.account, d: kf.device, sig: signProof(key, proofTranscript("auth", h.sid, h.nonce, kf.account, kf.device)) });
    await this.expect("ready");
  }

  end(): void {
    if (this.ws) this.ws.close(1000);
    this.socket.end();
  }
}

/** Resolves when `cond()` holds, polling; rejects with `what` after the timeout. Not a timing assertion: a bound on waiting. */
export async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(10);
  }
}
