/**
 * The Switchboard SDK: one device's session with a server, over TCP or TLS.
 *
 * - Logs in with the device key (auth), or enrolls / links a new device.
 * - `send()` addresses one payload to each current device of the recipient
 *   and a sync copy to each of our other devices; when the server answers
 *   `devices_mismatch` it refetches the device lists and retries by itself.
 *   It resolves on `sent` (the server holds the message durably).
 * - Incoming messages and receipts are acknowledged after the handlers ran
 *   (at-least-once), duplicates are dropped by (sender, device, id), and each
 *   conversation's messages are emitted in sequence order.
 * - Groups: `createGroup()` and the other group calls, `sendGroup()` (one
 *   payload the server fans out to every member device), and `group` events
 *   for membership changes (in the group's sequence order).
 * - Heartbeats find a dead server; reconnects use jittered exponential
 *   backoff and resend every message not yet `sent` (the server deduplicates).
 *
 * @example
 * const c = new SwitchboardClient({ host: "127.0.0.1", port: 5222, key: readKeyFile("alice.key") });
 * c.on("message", (m) => console.log(m.from, new TextDecoder().decode(m.payload)));
 * await c.connect();
 * await c.send("bob", "hello");
 */
import type { Socket } from "bun";
import { decodeBody, encodeBody } from "../protocol/codec.ts";
import { FrameDecoder } from "../protocol/frame.ts";
import { FlushBatch, Outbound, type Sink } from "../protocol/outbound.ts";
import { proofTranscript } from "../protocol/auth.ts";
import { isGroupId, validateServer, PROTOCOL_VERSION, type Evt, type HelloS, type MsgS, type Rcpt, type ServerStanza } from "../protocol/stanzas.ts";
import { keyFromFile, signProof, type DeviceKey, type KeyFile } from "./keys.ts";
import { TypedEmitter } from "./emitter.ts";

export interface ConnectOptions {
  host: string;
  port: number;
  tls?: boolean | { ca?: string; serverName?: string; rejectUnauthorized?: boolean };
  /** How long to wait for the server's hello before giving up on a connection (default 10 000 ms). */
  helloTimeoutMs?: number;
}

export interface ClientOptions extends ConnectOptions {
  key: KeyFile;
  /** Reconnect after a drop (default true). */
  reconnect?: boolean;
  /** Acknowledge deliveries after the handlers ran (default true). With false, call `ack()` yourself. */
  autoAck?: boolean;
  /** Ping interval override in ms (default: what the server announces). */
  pingMs?: number;
  userAgent?: string;
  /**
   * false: a non-receiving session (docs/PROTOCOL.md §4.3) for one-shot work: it sends and gets
   * the answers to its own requests, is delivered nothing, and never evicts the device's
   * receiving session (a chat open elsewhere) nor is evicted by it. Default true.
   */
  rx?: boolean;
}

export interface Message {
  /** The other party of the conversation, or the group id for a group message. */
  conversation: string;
  from: string;
  fromDevice: number;
  to: string;
  id: string;
  seq: number;
  ts: number;
  payload: Uint8Array;
  /** A copy of a message one of our own other devices sent. */
  sync: boolean;
  q: number;
}

export interface Receipt {
  /**
   * dlv: delivered to that device; read: read up to seq; exp: expired unread on the server, never delivered there;
   * full: (groups) not queued for that device because its queue was at its bound.
   */
  kind: "dlv" | "read" | "exp" | "full";
  /** The account and device that received or read. */
  account: string;
  device: number;
  /** The conversation, from our side. */
  with: string;
  seq: number;
  id?: string;
  ts: number;
  q: number;
}

export interface Sent {
  id: string;
  to: string;
  seq: number;
  ts: number;
}

export class ServerError extends Error {
  constructor(readonly code: string, message: string, readonly detail?: unknown) {
    super(`${code}: ${message}`);
    this.name = "ServerError";
  }
}

/** A membership change of a group we are (or were, for our own removal) in. */
export interface GroupEvent {
  op: "create" | "add" | "remove" | "leave" | "promote" | "demote" | "rename";
  group: string;
  seq: number;
  by: string;
  /** The accounts the change is about (all members for `create`). */
  members: string[];
  name?: string;
  ts: number;
}

/** One of our own account's devices was linked or revoked. */
export interface DeviceEvent {
  op: "linked" | "revoked";
  account: string;
  device: number;
  name?: string;
  ts: number;
}

export interface GroupInfo {
  g: string;
  name: string;
  created: number;
  creator: string;
  members: { u: string; admin: boolean; since: number }[];
}

type Events = {
  ready: [{ account: string; device: number }];
  message: [Message];
  receipt: [Receipt];
  sent: [Sent];
  typing: [{ account: string; device: number; state: "typing" | "paused" }];
  /** `count` messages or receipts for this device expired on the server before it came to take them. */
  gap: [{ count: number; ts: number }];
  group: [GroupEvent];
  device: [DeviceEvent];
  /** This device's one-time prekeys run low on the server (`count` left): upload more. */
  keys: [{ op: "low"; count: number; ts: number }];
  error: [ServerError];
  close: [{ reason: string; message?: string; willReconnect: boolean }];
  reconnecting: [{ attempt: number; delayMs: number }];
};

const HELLO_TIMEOUT_MS = 10_000;

/** Reasons after which reconnecting cannot help. */
const FINAL_REASONS = new Set(["auth_failed", "revoked", "replaced", "unsupported_version", "client_quit"]);

/** SDK connections flush together once per microtask: an application's sends of one turn go out in one write. */
const flushes = new FlushBatch(queueMicrotask);

/**
 * A framed connection: hello exchange done, then frames in and out. Output
 * is batched per turn into one write by the shared outbound buffer, which
 * keeps whatever the kernel refuses for `drain` (Bun's write() does not buffer).
 */
class Wire implements Sink {
  socket: Socket<undefined> | null = null;
  private decoder = new FrameDecoder(16 * 1024 * 1024);
  private out = new Outbound(this);
  flushQueued = false;
  closed = false;

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
        data: (_s, chunk: Uint8Array) => {
          try {
            this.decoder.feed(chunk, (body) => {
              const v = validateServer(decodeBody(body));
              if (v.ok) this.onStanza(v.stanza);
              else this.onStanza({ t: "err", e: "bad_server_frame", m: v.message });
            });
          } catch (e) {
            this.kill(e as Error);
          }
        },
        drain: () => this.flush(),
        // Bun.connect resolves before the TLS handshake; writes made before it return 0 and stay
        // buffered here, so flush once it is done, and fail loudly when it is not.
        handshake: (_s, ok, authErr) => {
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
  write(bytes: Uint8Array): number {
    return this.socket ? this.socket.write(bytes) : 0;
  }

  flush(): void {
    if (this.closed) return;
    this.out.flush();
  }

  end(): void {
    this.flush();
    this.socket?.end();
  }

  kill(err?: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.out.clear();
    this.socket?.terminate();
    this.onClose(err);
  }
}

/** Connects, exchanges hellos, and returns the wire plus the server hello. Used by login, enroll and link. */
async function handshake(o: ConnectOptions, onStanza: (s: ServerStanza) => void, onClose: (err?: Error) => void, ua?: string): Promise<{ wire: Wire; hello: HelloS }> {
  let resolveHello!: (h: HelloS) => void;
  let rejectHello!: (e: Error) => void;
  const got = new Promise<HelloS>((res, rej) => ((resolveHello = res), (rejectHello = rej)));
  let phase: "hello" | "open" = "hello";
  const wire = new Wire(
    (s) => {
      if (phase === "hello") {
        if (s.t === "hello") {
          phase = "open";
          resolveHello(s);
        } else if (s.t === "err") rejectHello(new ServerError(s.e, s.m));
        else if (s.t === "close") rejectHello(new ServerError(s.r, s.m ?? "closed during hello", s.ra !== undefined ? { retry_ms: s.ra } : undefined));
        return;
      }
      onStanza(s);
    },
    (err) => {
      if (phase === "hello") rejectHello(err ?? new Error("connection closed during hello"));
      else onClose(err);
    },
  );
  await wire.open(o);
  wire.send(ua ? { t: "hello", v: [PROTOCOL_VERSION], ua } : { t: "hello", v: [PROTOCOL_VERSION] });
  // A server that accepts the connection but never answers must not hang the client: give up and let it reconnect.
  const ms = o.helloTimeoutMs ?? HELLO_TIMEOUT_MS;
  const timer = setTimeout(() => wire.kill(new Error(`no hello from ${o.host}:${o.port} within ${ms} ms`)), ms);
  try {
    const hello = await got;
    return { wire, hello };
  } finally {
    clearTimeout(timer);
  }
}

/** Waits for `ready` (or an error) after an enroll/link/auth frame. */
function awaitReady(
  o: ConnectOptions,
  build: (hello: HelloS) => object,
  onOther?: (s: ServerStanza) => void,
): Promise<{ account: string; device: number }> {
  return new Promise((resolve, reject) => {
    let wire: Wire | null = null;
    let failure: ServerError | null = null;
    handshake(
      o,
      (s) => {
        if (s.t === "ready") {
          resolve({ account: s.u, device: s.d });
          wire?.send({ t: "close", r: "client_quit" });
          wire?.end();
        } else if (s.t === "err") failure ??= new ServerError(s.e, s.m, s.x);
        else if (s.t === "close") reject(failure ?? new ServerError(s.r, s.m ?? "closed"));
        else onOther?.(s);
      },
      (err) => reject(failure ?? err ?? new Error("connection closed")),
    ).then(({ wire: w, hello }) => {
      wire = w;
      w.send(build(hello));
    }, reject);
  });
}

/** Enrolls a new device with a one-time code; returns the key file to keep. */
export async function enrollDevice(o: ConnectOptions & { account: string; code: string; name?: string; key: DeviceKey }): Promise<{ account: string; device: number }> {
  return awaitReady(o, (h) => ({
    t: "enroll", u: o.account, code: o.code, pk: o.key.publicKey, name: o.name ?? "device",
    sig: signProof(o.key, proofTranscript("enroll", h.sid, h.nonce, o.account, 0)),
  }));
}

/** Asks to link a new device; `onCode` shows the code to approve from an existing device. Resolves when approved. */
export async function linkDevice(
  o: ConnectOptions & { account: string; name?: string; key: DeviceKey; onCode: (code: string, expires: number) => void },
): Promise<{ account: string; device: number }> {
  return awaitReady(
    o,
    (h) => ({
      t: "link", u: o.account, pk: o.key.publicKey, name: o.name ?? "device",
      sig: signProof(o.key, proofTranscript("link", h.sid, h.nonce, o.account, 0)),
    }),
    (s) => {
      if (s.t === "linkcode") o.onCode(s.code, s.exp);
    },
  );
}

interface Outgoing {
  to: string;
  /** A group message: one payload, fanned out by the server. */
  group: boolean;
  id: string;
  payload: Uint8Array | ((device: number, account: string) => Uint8Array);
  resolve: (s: Sent) => void;
  reject: (e: Error) => void;
  retries: number;
}

let idCounter = 0;
/** A client message id: unique per device without coordination. */
export function newMessageId(): string {
  return `${Date.now().toString(36)}-${(idCounter++).toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

const DEDUP_KEEP = 10_000;

export class SwitchboardClient extends TypedEmitter<Events> {
  readonly account: string;
  readonly device: number;
  private key: DeviceKey;
  private wire: Wire | null = null;
  private iqs = new Map<number, { resolve: (r: any) => void; reject: (e: Error) => void }>();
  private iqId = 0;
  private outgoing = new Map<string, Outgoing>();
  private deviceCache = new Map<string, number[]>();
  /** Key versions of the devices in deviceCache, by account (0: no keys published). */
  private kvCache = new Map<string, Map<number, number>>();
  private seen = new Set<string>();
  /** autoAck: false only: queue id -> dedup key of deliveries emitted and not yet acknowledged by the application. */
  private unackedKeys = new Map<number, string>();
  private lastSeq = new Map<string, number>();
  private pingTimer: ReturnType<typeof setInterval> | null = null;
  private lastHeard = 0;
  private attempts = 0;
  private stopped = false;
  private readyWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private pendingAcks: number[] = [];
  private ackScheduled = false;
  isReady = false;
  /** Server hello of the current connection. */
  hello: HelloS | null = null;

  constructor(readonly opts: ClientOptions) {
    super();
    this.account = opts.key.account;
    this.device = opts.key.device;
    this.key = keyFromFile(opts.key);
  }

  /** Connects and logs in; resolves when the session is ready. Rejects on a final failure (bad key, revoked). */
  connect(): Promise<void> {
    this.stopped = false;
    const p = new Promise<void>((resolve, reject) => this.readyWaiters.push({ resolve, reject }));
    void this.dial();
    return p;
  }

  private async dial(): Promise<void> {
    let failure: ServerError | null = null;
    let closeReason: { r: string; m?: string; ra?: number } | null = null;
    try {
      const { wire, hello } = await handshake(
        this.opts,
        (s) => {
          if (s.t === "err" && !this.isReady && s.id === undefined) failure ??= new ServerError(s.e, s.m, s.x);
          if (s.t === "close") closeReason = { r: s.r, m: s.m, ra: s.ra };
          this.onStanza(s);
        },
        () => this.onDrop(failure, closeReason),
        this.opts.userAgent,
      );
      this.wire = wire;
      this.hello = hello;
      this.lastHeard = Date.now();
      const sig = signProof(this.key, proofTranscript("auth", hello.sid, hello.nonce, this.account, this.device));
      wire.send(this.opts.rx === false ? { t: "auth", u: this.account, d: this.device, sig, rx: false } : { t: "auth", u: this.account, d: this.device, sig });
    } catch (e) {
      this.onDrop(e instanceof ServerError ? e : null, null, e as Error);
    }
  }

  private onDrop(failure: ServerError | null, close: { r: string; m?: string; ra?: number } | null, err?: Error): void {
    const wasReady = this.isReady;
    this.isReady = false;
    this.wire = null;
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = null;
    for (const [, w] of this.iqs) w.reject(new Error("connection closed"));
    this.iqs.clear();
    const reason = close?.r ?? failure?.code ?? (err ? "connect_error" : "peer_closed");
    const final = this.stopped || FINAL_REASONS.has(reason) || (!wasReady && failure !== null && FINAL_REASONS.has(failure.code));
    // A login turned away for load (try_again) is retried after the server's delay, also with reconnect: false.
    const willReconnect = !final && (this.opts.reconnect !== false || (reason === "try_again" && !wasReady));
    this.emit("close", { reason, message: close?.m ?? failure?.message ?? err?.message, willReconnect });
    if (!willReconnect) {
      const e = failure ?? new ServerError(reason, close?.m ?? err?.message ?? "connection closed");
      for (const w of this.readyWaiters.splice(0)) w.reject(e);
      if (!this.stopped) for (const [, o] of this.outgoing) o.reject(e);
      if (!this.stopped) this.outgoing.clear();
      return;
    }
    // Full jitter, capped: a server restart does not bring every client back in the same millisecond.
    // The server's retry-after (close `ra`, or `x.retry_ms` of the err before it) is a floor (§4.8): wait it plus up to 10 %.
    const ra = close?.ra ?? (failure?.detail as { retry_ms?: number } | undefined)?.retry_ms;
    const delay = typeof ra === "number" ? ra * (1 + Math.random() / 10) : Math.min(30_000, 250 * 2 ** Math.min(this.attempts, 7)) * (0.5 + Math.random() / 2);
    this.attempts++;
    this.emit("reconnecting", { attempt: this.attempts, delayMs: Math.round(delay) });
    setTimeout(() => {
      if (!this.stopped) void this.dial();
    }, delay);
  }

  private onStanza(s: ServerStanza): void {
    this.lastHeard = Date.now();
    switch (s.t) {
      case "ready": {
        this.isReady = true;
        this.attempts = 0;
        const pingMs = this.opts.pingMs ?? (this.hello?.pi ?? 30) * 1000;
        this.pingTimer = setInterval(() => this.heartbeat(pingMs), pingMs);
        this.emit("ready", { account: s.u, device: s.d });
        for (const w of this.readyWaiters.splice(0)) w.resolve();
        for (const o of this.outgoing.values()) this.transmit(o); // resend what was not `sent`; the server dedups
        return;
      }
      case "msg":
        return this.onMessage(s);
      case "rcpt":
        return this.onReceipt(s);
      case "gap":
        this.emit("gap", { count: s.n, ts: s.ts });
        if (this.opts.autoAck !== false) this.queueAck(s.q);
        return;
      case "evt":
        return this.onEvent(s);
      case "sent": {
        const o = this.outgoing.get(s.id);
        const sent: Sent = { id: s.id, to: s.to, seq: s.seq, ts: s.ts };
        if (o) {
          this.outgoing.delete(s.id);
          o.resolve(sent);
        }
        this.emit("sent", sent);
        return;
      }
      case "res": {
        const w = this.iqs.get(s.id);
        if (!w) return;
        this.iqs.delete(s.id);
        if (s.ok) w.resolve(s.r);
        else w.reject(new ServerError(s.e ?? "internal", s.m ?? "", s.x));
        return;
      }
      case "err":
        return this.onError(s.e, s.m, s.id, s.x);
      case "pres":
        return this.emit("typing", { account: s.u, device: s.d, state: s.s });
      case "pong":
      case "hello":
      case "linkcode":
      case "close":
        return;
    }
  }

  private onError(code: string, message: string, id?: string | number, detail?: unknown): void {
    const o = typeof id === "string" ? this.outgoing.get(id) : undefined;
    if (o) {
      if ((code === "devices_mismatch" || code === "devices_stale") && o.retries < 3 && !o.group) {
        o.retries++;
        this.forgetDevices(o.to);
        this.forgetDevices(this.account);
        void this.prepareAndTransmit(o);
        return;
      }
      this.outgoing.delete(o.id);
      o.reject(new ServerError(code, message, detail));
      return;
    }
    this.emit("error", new ServerError(code, message, detail));
  }

  private onMessage(s: MsgS): void {
    const key = `${s.from}\u0000${s.fd}\u0000${s.id}`;
    const conversation = isGroupId(s.to) || s.from === this.account ? s.to : s.from;
    if (this.seen.has(key)) {
      this.queueAck(s.q); // a redelivery of something we already handled: ack again, emit nothing
      return;
    }
    this.handled(key, s.q);
    const last = this.lastSeq.get(conversation) ?? 0;
    if (s.seq > last) this.lastSeq.set(conversation, s.seq);
    this.emit("message", { conversation, from: s.from, fromDevice: s.fd, to: s.to, id: s.id, seq: s.seq, ts: s.ts, payload: s.p, sync: s.sync === true, q: s.q });
    if (this.opts.autoAck !== false) this.queueAck(s.q);
  }

  private onReceipt(s: Rcpt): void {
    const key = `r\u0000${s.k}\u0000${s.u}\u0000${s.d}\u0000${s.w}\u0000${s.seq}`;
    if (this.seen.has(key)) return this.queueAck(s.q);
    this.handled(key, s.q);
    const r: Receipt = { kind: s.k, account: s.u, device: s.d, with: s.w, seq: s.seq, ts: s.ts, q: s.q };
    if (s.id !== undefined) r.id = s.id;
    this.emit("receipt", r);
    if (this.opts.autoAck !== false) this.queueAck(s.q);
  }

  private onEvent(s: Evt): void {
    const key = `e\u0000${s.k}\u0000${s.g ?? s.u ?? ""}\u0000${s.seq ?? s.d ?? ""}\u0000${s.op}\u0000${s.ts}`;
    if (this.seen.has(key)) return this.queueAck(s.q);
    this.handled(key, s.q);
    if (s.k === "grp" && s.g !== undefined && s.seq !== undefined) {
      const ev: GroupEvent = { op: s.op as GroupEvent["op"], group: s.g, seq: s.seq, by: s.by ?? "", members: s.m ?? [], ts: s.ts };
      if (s.name !== undefined) ev.name = s.name;
      this.emit("group", ev);
    } else if (s.k === "dev" && s.u !== undefined && s.d !== undefined) {
      this.deviceCache.delete(s.u); // our own device list changed
      const ev: DeviceEvent = { op: s.op as DeviceEvent["op"], account: s.u, device: s.d, ts: s.ts };
      if (s.name !== undefined) ev.name = s.name;
      this.emit("device", ev);
    } else if (s.k === "keys") {
      this.emit("keys", { op: "low", count: s.n ?? 0, ts: s.ts });
    }
    if (this.opts.autoAck !== false) this.queueAck(s.q);
  }

  /**
   * Marks a delivery as handled, so that a redelivery is acknowledged and
   * not emitted again. With autoAck, that is now (the handlers ran, the ack
   * follows). Without it, only when the application acknowledges: until
   * then a redelivery (after a reconnect) is emitted again, at least once,
   * rather than acknowledged by the SDK behind the application's back.
   */
  private handled(key: string, q: number): void {
    if (this.opts.autoAck !== false) this.remember(key);
    else this.unackedKeys.set(q, key);
  }

  private remember(key: string): void {
    this.seen.add(key);
    if (this.seen.size > DEDUP_KEEP) this.seen.delete(this.seen.values().next().value!);
  }

  /** Acknowledges deliveries (only needed with autoAck: false). Batched into one `ack` per turn. */
  ack(...qs: number[]): void {
    for (const q of qs) {
      const key = this.unackedKeys.get(q);
      if (key !== undefined) {
        this.unackedKeys.delete(q);
        this.remember(key);
      }
      this.queueAck(q);
    }
  }

  private queueAck(q: number): void {
    this.pendingAcks.push(q);
    if (!this.ackScheduled) {
      this.ackScheduled = true;
      queueMicrotask(() => {
        this.ackScheduled = false;
        // Acks for a connection that is gone are dropped: the server redelivers those items anyway.
        const wire = this.wire;
        while (this.pendingAcks.length) {
          const q = this.pendingAcks.splice(0, 1024);
          wire?.send({ t: "ack", q });
        }
      });
    }
  }

  private heartbeat(pingMs: number): void {
    if (!this.wire) return;
    // Two intervals without a byte from the server: it is gone (or the path is), reconnect.
    if (Date.now() - this.lastHeard > 2 * pingMs + 1000) {
      this.wire.kill(new Error("server missed its pongs"));
      return;
    }
    this.wire.send({ t: "ping" });
  }

  /** Sends an iq request; resolves with `r` or rejects with a ServerError. */
  request<T = any>(op: string, args?: Record<string, unknown>): Promise<T> {
    if (!this.wire || !this.isReady) return Promise.reject(new Error(`request ${op}: not connected; await connect() first`));
    const id = (this.iqId = (this.iqId + 1) >>> 0);
    return new Promise<T>((resolve, reject) => {
      this.iqs.set(id, { resolve, reject });
      this.wire!.send(args ? { t: "iq", id, op, a: args } : { t: "iq", id, op });
    });
  }

  /** Current device ids of an account (cached until a send is refused with devices_mismatch). */
  async devices(account: string): Promise<number[]> {
    const cached = this.deviceCache.get(account);
    if (cached) return cached;
    const r = await this.request<{ devices: { d: number; kv?: number }[] }>("devices", { u: account });
    const ids = r.devices.map((d) => d.d);
    this.deviceCache.set(account, ids);
    this.kvCache.set(account, new Map(r.devices.map((d) => [d.d, d.kv ?? 0])));
    return ids;
  }

  /**
   * The key version of a device as last fetched (0: none published). Sends
   * name it, so that a payload encrypted for keys the device has since
   * replaced is refused (`devices_stale`) instead of being undecryptable.
   */
  keyVersion(account: string, device: number): number {
    return this.kvCache.get(account)?.get(device) ?? 0;
  }

  /** Forgets the cached device lists (e.g. after the application fetched fresh key bundles). */
  forgetDevices(account?: string): void {
    if (account === undefined) {
      this.deviceCache.clear();
      this.kvCache.clear();
    } else {
      this.deviceCache.delete(account);
      this.kvCache.delete(account);
    }
  }

  /**
   * Sends a message and resolves when the server holds it durably (`sent`).
   * `payload` is the same bytes for every device, or a function giving each
   * device its own (what end-to-end encryption needs).
   */
  send(to: string, payload: Uint8Array | string | ((device: number, account: string) => Uint8Array), opts: { id?: string } = {}): Promise<Sent> {
    const id = opts.id ?? newMessageId();
    if (this.outgoing.has(id)) return Promise.reject(new Error(`send: message id ${id} is already in flight; use a new id`));
    const bytes = typeof payload === "string" ? new TextEncoder().encode(payload) : payload;
    return new Promise<Sent>((resolve, reject) => {
      const o: Outgoing = { to, group: false, id, payload: bytes, resolve, reject, retries: 0 };
      this.outgoing.set(id, o);
      if (this.isReady) void this.prepareAndTransmit(o);
      // else: sent on the next `ready`
    });
  }

  /**
   * Sends one payload to a group (under end-to-end encryption, a sender-key
   * ciphertext); the server queues it for every device of every member.
   * Resolves on `sent`; rejects with not_member, unknown_group, queue_full.
   */
  sendGroup(group: string, payload: Uint8Array | string, opts: { id?: string } = {}): Promise<Sent> {
    if (!isGroupId(group)) return Promise.reject(new Error(`sendGroup: ${JSON.stringify(group)} is not a group id (they start with #); use send() for accounts`));
    const id = opts.id ?? newMessageId();
    if (this.outgoing.has(id)) return Promise.reject(new Error(`sendGroup: message id ${id} is already in flight; use a new id`));
    const bytes = typeof payload === "string" ? new TextEncoder().encode(payload) : payload;
    return new Promise<Sent>((resolve, reject) => {
      const o: Outgoing = { to: group, group: true, id, payload: bytes, resolve, reject, retries: 0 };
      this.outgoing.set(id, o);
      if (this.isReady) this.transmit(o);
    });
  }

  /** Creates a group with us as its admin; resolves with its id. */
  async createGroup(name: string, members: string[] = []): Promise<{ g: string; seq: number }> {
    return this.request("group.create", members.length ? { name, m: members } : { name });
  }
  addMembers(group: string, members: string[]): Promise<{ seq: number; m: string[] }> {
    return this.request("group.add", { g: group, m: members });
  }
  removeMembers(group: string, members: string[]): Promise<{ seq: number; m: string[] }> {
    return this.request("group.remove", { g: group, m: members });
  }
  promote(group: string, members: string[]): Promise<{ seq: number; m: string[] }> {
    return this.request("group.promote", { g: group, m: members });
  }
  demote(group: string, members: string[]): Promise<{ seq: number; m: string[] }> {
    return this.request("group.demote", { g: group, m: members });
  }
  leaveGroup(group: string): Promise<{ seq: number }> {
    return this.request("group.leave", { g: group });
  }
  renameGroup(group: string, name: string): Promise<{ seq: number }> {
    return this.request("group.rename", { g: group, name });
  }
  groupInfo(group: string): Promise<GroupInfo> {
    return this.request("group.info", { g: group });
  }
  groups(): Promise<{ groups: { g: string; name: string; n: number }[] }> {
    return this.request("group.list");
  }
  /** Of our message `seq` in `group`: how many members (n) have it on a device, and how many read it. */
  messageState(group: string, seq: number): Promise<{ g: string; seq: number; id: string; n: number; delivered: number; read: number }> {
    return this.request("group.state", { g: group, seq });
  }

  private async prepareAndTransmit(o: Outgoing): Promise<void> {
    try {
      await this.devices(o.to);
      if (o.to !== this.account) await this.devices(this.account);
      this.transmit(o);
    } catch (e) {
      if (e instanceof ServerError) {
        this.outgoing.delete(o.id);
        o.reject(e);
      } // else: the connection dropped; `ready` will retransmit
    }
  }

  private transmit(o: Outgoing): void {
    if (o.group) {
      if (!this.wire || !this.isReady) return; // sent on the next `ready`
      const mf = this.hello?.mf ?? Infinity;
      if (!this.wire.send({ t: "gmsg", id: o.id, g: o.to, p: o.payload as Uint8Array }, mf)) {
        this.outgoing.delete(o.id);
        o.reject(new ServerError("frame_too_large", `message ${o.id} is larger than the server accepts (${mf} bytes per frame)`));
      }
      return;
    }
    const to = this.deviceCache.get(o.to);
    const own = this.deviceCache.get(this.account);
    if (!to || (o.to !== this.account && !own) || !this.wire || !this.isReady) {
      if (this.isReady) void this.prepareAndTransmit(o);
      return;
    }
    const payloadFor = (d: number, acct: string) => (typeof o.payload === "function" ? o.payload(d, acct) : o.payload);
    const self = o.to === this.account;
    // The key version goes along when known, so that the server can refuse a payload made for replaced keys.
    const entry = (d: number, acct: string) => {
      const kv = this.keyVersion(acct, d);
      return kv ? [d, payloadFor(d, acct), kv] : [d, payloadFor(d, acct)];
    };
    const p = to.filter((d) => !(self && d === this.device)).map((d) => entry(d, o.to));
    const frame: Record<string, unknown> = { t: "msg", id: o.id, to: o.to, p };
    if (!self) {
      const s = own!.filter((d) => d !== this.device).map((d) => entry(d, this.account));
      if (s.length) frame.s = s;
    }
    // Refused here when it would exceed the server's `mf`: the server would close the connection
    // (frame_too_large), and the resend after every reconnect would close it again, forever
    // (each reconnect reached `ready` and reset the backoff: a tight reconnect loop).
    const mf = this.hello?.mf ?? Infinity;
    if (!this.wire.send(frame, mf)) {
      this.outgoing.delete(o.id);
      o.reject(new ServerError("frame_too_large", `message ${o.id} is larger than the server accepts (${mf} bytes per frame)`));
    }
  }

  /** Marks everything up to `seq` in the conversation with `peer` as read. */
  markRead(peer: string, seq: number): void {
    this.wire?.send({ t: "read", u: peer, seq });
  }

  typing(to: string, state: "typing" | "paused" = "typing"): void {
    this.wire?.send({ t: "pres", to, s: state });
  }

  /** Messages accepted by `send()` and not yet `sent`. */
  get unsent(): number {
    return this.outgoing.size;
  }

  /** Closes the session for good (no reconnect). */
  async close(): Promise<void> {
    this.stopped = true;
    const w = this.wire;
    if (!w) return;
    const done = new Promise<void>((res) => this.on("close", () => res()));
    w.send({ t: "close", r: "client_quit" });
    w.end();
    await Promise.race([done, new Promise((r) => setTimeout(r, 2000))]);
    w.kill();
  }

  /** Cuts the connection as if the network failed (tests, reconnect storms). */
  dropConnection(): void {
    this.wire?.kill(new Error("dropped by the application"));
  }
}
