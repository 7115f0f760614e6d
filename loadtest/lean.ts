/**
 * A lean protocol client for load generation: no SDK, no validation, no
 * promises or events on the hot path.
 *
 * Why not the SDK: the SDK decodes every server frame with msgpackr and runs
 * the validator, allocates a Message object and an event per delivery, keeps
 * a dedup Set of strings, and schedules acks through a microtask per turn.
 * That is the right thing for an application and several microseconds per
 * frame too many for a generator that must push a few hundred thousand
 * frames per second from one core. Here:
 *
 * - server frames are scanned in place (`scanFrame`, ./lean-scan.ts): only
 *   the fields the load generator needs are read (kind, q, id as a number,
 *   seq), nothing is allocated for `msg`, `sent`, `rcpt` and `pong`; any
 *   other kind goes through the project's codec (src/protocol/codec.ts);
 * - `msg`, `ack` and `ping` are encoded by hand straight into the
 *   connection's output buffer (the constant heads, the templates and the id
 *   prefix are in ./lean-encode.ts), without validation (the encoding is the
 *   one docs/PROTOCOL.md §10 shows, checked against the codec and the
 *   validator by test/loadtest/loadtest.test.ts);
 * - the output buffer and the once-per-turn flush are the project's own
 *   (src/protocol/outbound.ts, as in the server and the SDK): every
 *   connection written to during a turn is flushed once, with one write()
 *   (Bun makes one syscall per write and does not buffer, see
 *   ../shared/notes/bun-platform.md), and acks collected during a read go out
 *   as one `ack` frame.
 */
import type { Socket } from "bun";
import { decodeBody, encodeBody } from "../src/protocol/codec.ts";
import { proofTranscript } from "../src/protocol/auth.ts";
import { HEADER_SIZE, writeHeader } from "../src/protocol/frame.ts";
import { FlushBatch, Outbound, type Sink } from "../src/protocol/outbound.ts";
import { sign, createPrivateKey, type KeyObject } from "node:crypto";
import { dropTicket, keepResume, resumeFrame, resumeOpts, resumeStats, tlsOffer } from "./lean-resume.ts";

/**
 * What the hello offers beyond resumption. `confirm` false (pairs --confirm off): no `sc`, so the server keeps an
 * `accepted` row per message for the retention, as for a client from before §6.2's confirmation (the A/B of the
 * bounded dedup state, BENCHMARKS.md).
 */
export const helloOpts = { confirm: true };
import { K_MSG, K_PONG, K_RCPT, K_SENT, Scanned, scanFrame } from "./lean-scan.ts";
import { WsLink, type LeanSocket } from "./lean-ws.ts";
import { ACK_HEAD, ACK_SC_HEAD, f64, f64b, GMSG_HEAD, idPrefix, MSG_HEAD, PING_HEAD, SC_KEY, writeU32 } from "./lean-encode.ts";

export { K_OTHER, K_MSG, K_SENT, K_RCPT, K_PONG, K_HELLO, K_READY, K_CLOSE, K_ERR, Scanned, scanFrame } from "./lean-scan.ts";
export { gmsgTemplate, msgTemplate, randomIdPrefix, setIdPrefix } from "./lean-encode.ts";

/** The connections written to during a turn: flushed after each read, or by one setImmediate. */
const batch = new FlushBatch();
/** Flushes every connection written to since the last flush (the workers call it after their timers' bursts). */
export function flushAll(): void {
  batch.flushAll();
}

export interface LeanHandlers {
  /** A scanned msg / sent / rcpt / pong frame. `b` is valid only during the call. */
  onFrame(c: LeanConn, s: Scanned, b: Uint8Array): void;
  /** A READY connection ended. */
  onClose(c: LeanConn, reason: string): void;
  /** An `err` on a READY connection (the load generator sends nothing that should cause one). */
  onError(c: LeanConn, code: string, message: string): void;
  /** Any other decoded frame on a READY connection (res, evt, ...); queued ones are already acknowledged. */
  onOther?(c: LeanConn, s: Record<string, any>): void;
}

const scanned = new Scanned();

export interface LoginTarget {
  host: string;
  port: number;
  /** PEM of the CA to trust (TLS), or undefined for plain TCP. */
  ca?: string;
  /** A WebSocket port (ws://host:port/, lean-ws.ts) rather than TCP. */
  ws?: boolean;
}

/**
 * Cluster mode (docs/PROTOCOL.md §4.10): each account's home node from its last `redirect`, dialled first by later
 * logins of this process (as the SDK remembers it); forgotten when a dial of it fails.
 */
const homes = new Map<string, { host: string; port: number }>();

/** The home a redirect named for this account, if any (tests). */
export function rememberedHome(account: string): { host: string; port: number } | undefined {
  return homes.get(account);
}

export class LeanConn implements Sink {
  socket: LeanSocket | null = null;
  state: "connecting" | "hello" | "auth" | "ready" | "closed" = "connecting";
  closeReason = "";
  /** `ra` of the server's `close` (retry after, ms), 0 when none was given. */
  closeRa = 0;
  /** Listed in the turn's flush batch. */
  flushQueued = false;
  private out = new Outbound(this);
  /** Queue ids to acknowledge at the next flush. */
  private acks: number[] = [];
  /**
   * The server asked for confirmations of `sent` (its hello's `sc`, docs/PROTOCOL.md §6.2): `sent` frames received
   * on this connection, and how many the server was told of. The count rides on the next flush's `ack`.
   */
  private confirms = false;
  private sentHeld = 0;
  private sentTold = 0;
  /** Bytes of a frame split across reads. */
  private pend: Uint8Array | null = null;
  private loginResolve: ((ok: boolean) => void) | null = null;
  /** Which index this connection has in its worker (for the heartbeat spread). */
  index = 0;
  /** Role data for the scenario. */
  user: any = null;
  /** The `redirect` of this login attempt, followed when its `close redirect` ends the connection. */
  private redirectTo: { host: string; port: number } | null = null;
  private redirects = 0;
  /** A `resume` went out with the hello; the hello is kept to sign its nonce if the ticket is refused. */
  private resuming = false;
  private hello: { sid: string; nonce: Uint8Array } | null = null;
  /** Over TLS; the TLS session offered at connect (SOCKET_HANDLERS.open), when --tls-sessions is on. */
  private tls = false;
  offerTls: Uint8Array | null = null;

  constructor(
    readonly account: string,
    readonly device: number,
    private key: KeyObject,
    private handlers: LeanHandlers,
  ) {}

  /**
   * Connects, exchanges hellos and logs in; resolves true on `ready`, false on any failure.
   * With `timeoutMs`, a login that has not reached `ready` by then is cut (reason `login_timeout (<state it stuck in>)`).
   */
  async login(t: LoginTarget, timeoutMs = 0): Promise<boolean> {
    const done = new Promise<boolean>((r) => (this.loginResolve = r));
    let timer: ReturnType<typeof setTimeout> | null = null;
    if (timeoutMs > 0) {
      timer = setTimeout(() => {
        if (this.state === "ready" || this.state === "closed") return;
        // Where it stuck: connecting (the TCP connect never completed), hello (connected, no hello from the server),
        // auth (the hello came, no ready).
        this.closeReason ||= `login_timeout (${this.state})`;
        this.socket?.terminate();
        this.state = "closed";
        this.finishLogin(false);
      }, timeoutMs);
      void done.then(() => clearTimeout(timer!));
    }
    const home = homes.get(this.account);
    const to: LoginTarget = home ? { host: home.host, port: home.port } : t; // a redirect names a plain TCP port
    try {
      this.socket = to.ws
        ? await WsLink.open(`ws://${to.host}:${to.port}/`, this, flushAll)
        : await Bun.connect<LeanConn>({
            hostname: to.host,
            port: to.port,
            tls: to.ca ? { ca: to.ca, serverName: "localhost" } : undefined,
            data: ((this.tls = to.ca !== undefined), (this.offerTls = tlsOffer(this.account, this.device, this.tls)), this), // before Bun's open
            socket: SOCKET_HANDLERS,
          });
    } catch (e) {
      if (home) homes.delete(this.account); // the next attempt asks the address it was given again
      this.state = "closed";
      this.closeReason ||= `connect: ${(e as Error).message}`;
      this.finishLogin(false);
      return done;
    }
    if (this.state === "closed") {
      // The login timed out while connecting.
      this.socket.terminate();
      return done;
    }
    this.state = "hello";
    this.sendObject({ t: "hello", v: [1], ua: "switchboard-loadtest/1", ...(helloOpts.confirm ? { sc: true } : {}), sr: true, ...(resumeOpts.tickets ? { tk: true } : {}) });
    const r = resumeOpts.tickets ? resumeFrame(this.account, this.device) : null;
    if ((this.resuming = r !== null)) this.sendObject(r!);
    this.flush();
    return done;
  }

  private auth(sid: string, nonce: Uint8Array): void {
    this.sendObject({ t: "auth", u: this.account, d: this.device, sig: new Uint8Array(sign(null, proofTranscript("auth", sid, nonce, this.account, this.device), this.key)) });
    this.flush();
  }

  private finishLogin(ok: boolean): void {
    const r = this.loginResolve;
    this.loginResolve = null;
    r?.(ok);
  }

  /** Frames from the server, reassembled. */
  feed(chunk: Uint8Array): void {
    let b = chunk;
    if (this.pend !== null) {
      const merged = new Uint8Array(this.pend.length + chunk.length);
      merged.set(this.pend);
      merged.set(chunk, this.pend.length);
      b = merged;
      this.pend = null;
    }
    const len = b.length;
    let off = 0;
    while (off + 4 <= len) {
      const size = ((b[off]! << 24) | (b[off + 1]! << 16) | (b[off + 2]! << 8) | b[off + 3]!) >>> 0;
      const end = off + 4 + size;
      if (end > len) break;
      this.frame(b, off + 4, end);
      off = end;
      if (this.state === "closed") return;
    }
    if (off < len) this.pend = b.slice(off);
  }

  /** One WebSocket message: a whole frame body (lean-ws.ts). */
  body(b: Uint8Array): void {
    if (this.state !== "closed") this.frame(b, 0, b.length);
  }

  /** The frame body b[start, end). */
  private frame(b: Uint8Array, start: number, end: number): void {
    if (this.state === "ready") {
      scanFrame(b, start, end, scanned);
      const k = scanned.kind;
      if (k === K_RCPT && scanned.sts >= 0) {
        // The receipt is also its message's `sent` (hello `sr`): handled as that `sent` first, with the same id and seq.
        scanned.kind = K_SENT;
        this.frameReady(K_SENT, b, start, end);
        scanned.kind = K_RCPT;
      }
      this.frameReady(k, b, start, end);
    } else this.other(b.subarray(start, end));
  }

  /** One scanned frame of a ready session, as kind `k`. */
  private frameReady(k: number, b: Uint8Array, start: number, end: number): void {
    if (k === K_SENT && this.confirms) {
      this.sentHeld++; // held once the handler below has seen it; confirmed with this read's flush
      batch.add(this);
    }
    if (k === K_MSG || k === K_SENT || k === K_RCPT || k === K_PONG) this.handlers.onFrame(this, scanned, b);
    else this.other(b.subarray(start, end));
  }

  /** Frames off the hot path: decoded with the project's codec. */
  private other(body: Uint8Array): void {
    const s = decodeBody(body) as Record<string, any>;
    switch (s.t) {
      case "hello":
        if (this.state !== "hello") return;
        this.state = "auth";
        this.confirms = s.sc === true; // a server from before the confirmation does not ask for it
        this.hello = { sid: s.sid, nonce: s.nonce }; // the ticket of the ready is for this sid
        if (!this.resuming) this.auth(s.sid, s.nonce);
        return;
      case "ready":
        this.state = "ready";
        if (this.resuming) resumeStats.resumed++;
        this.resuming = false;
        if (resumeOpts.tickets || resumeOpts.tlsSessions) keepResume(this.account, this.device, s, this.hello?.sid ?? "", this.tls ? this.socket : null);
        this.finishLogin(true);
        return;
      case "close":
        this.closeReason = s.r;
        if (typeof s.ra === "number") this.closeRa = s.ra;
        return;
      case "redirect":
        if (this.state === "ready") return;
        this.redirectTo = { host: String(s.host), port: Number(s.port) };
        homes.set(this.account, this.redirectTo);
        return;
      case "err":
        if (s.e === "ticket_refused" && this.resuming && this.hello !== null) {
          resumeStats.refused++;
          dropTicket(this.account, this.device);
          this.resuming = false;
          this.auth(this.hello.sid, this.hello.nonce);
          return;
        }
        if (this.state !== "ready") {
          if (!this.closeReason) this.closeReason = `err ${s.e}: ${s.m}`;
          return;
        }
        this.handlers.onError(this, String(s.e), String(s.m));
        return;
      case "gap":
        // Items for this device expired unread (retention): a loss signal, counted as an error by the scenario.
        if (typeof s.q === "number") this.ack(s.q);
        if (this.state === "ready") this.handlers.onError(this, "gap", `${s.n} items expired`);
        return;
      default:
        // res, evt, pres, linkcode and kinds this generator does not know: anything queued (with a q) is still acknowledged.
        if (this.state === "ready") {
          if (typeof s.q === "number") this.ack(s.q);
          this.handlers.onOther?.(this, s);
        }
        return;
    }
  }

  socketClosed(): void {
    if (this.state === "closed") return;
    const was = this.state;
    if (was !== "ready" && this.closeReason === "redirect" && this.redirectTo !== null && this.redirects < 3) {
      // Log in again at the home node, on the same object; the caller's login() resolves with that outcome.
      const to = this.redirectTo;
      this.redirects++;
      this.redirectTo = null;
      this.state = "connecting";
      this.closeReason = "";
      this.pend = null;
      this.out.clear();
      const resolve = this.loginResolve;
      void this.login(to).then((ok) => resolve?.(ok));
      return;
    }
    this.state = "closed";
    if (!this.closeReason) this.closeReason = "peer_closed";
    if (was !== "ready") this.finishLogin(false);
    else this.handlers.onClose(this, this.closeReason);
  }

  /** Any stanza, through the codec (hello, auth, close). */
  sendObject(o: object): void {
    this.out.frame(encodeBody(o));
    batch.add(this);
  }

  /**
   * Queues `msg {id: <n in decimal>, to, p: [[device, payload]]}` with a
   * template from msgTemplate(); the payload is `payloadLen` bytes of `fill`.
   */
  sendMsg(id: number, template: Uint8Array, payload: Uint8Array): void {
    this.idFrame(MSG_HEAD, id, template, payload);
  }

  /** Queues `gmsg {id: <n in decimal>, g, p}` with a template from gmsgTemplate(). */
  sendGmsg(id: number, template: Uint8Array, payload: Uint8Array): void {
    this.idFrame(GMSG_HEAD, id, template, payload);
  }

  private idFrame(head: Uint8Array, id: number, template: Uint8Array, payload: Uint8Array): void {
    let idLen = 1; // digits; not Math.log10, whose rounding at powers of ten is the engine's to choose
    for (let v = id; v >= 10; v = Math.floor(v / 10)) idLen++;
    const strLen = idPrefix.length + idLen;
    const bodyLen = head.length + 1 + strLen + template.length + payload.length;
    const o = this.out.reserve(HEADER_SIZE + bodyLen);
    const start = this.out.unsent;
    let p = start;
    writeHeader(o, p, bodyLen);
    p += HEADER_SIZE;
    o.set(head, p);
    p += head.length;
    o[p++] = 0xa0 | strLen; // fixstr: prefix (≤ 9) + digits (≤ 16) stays below 32
    o.set(idPrefix, p);
    p += idPrefix.length;
    let v = id;
    for (let i = idLen - 1; i >= 0; i--) {
      o[p + i] = 48 + (v % 10);
      v = Math.floor(v / 10);
    }
    p += idLen;
    o.set(template, p);
    p += template.length;
    o.set(payload, p);
    this.out.commit(p + payload.length - start);
    batch.add(this);
  }

  ack(q: number): void {
    this.acks.push(q);
    batch.add(this);
  }

  ping(n: number): void {
    const size = HEADER_SIZE + PING_HEAD.length + 5;
    const o = this.out.reserve(size);
    let p = this.out.unsent;
    writeHeader(o, p, PING_HEAD.length + 5);
    p += HEADER_SIZE;
    o.set(PING_HEAD, p);
    p += PING_HEAD.length;
    o[p++] = 0xce;
    writeU32(o, p, n >>> 0);
    this.out.commit(size);
    batch.add(this);
  }

  private encodeAcks(): void {
    const acks = this.acks;
    const sc = this.sentHeld;
    const tell = sc !== this.sentTold;
    this.sentTold = sc;
    if (acks.length === 0) {
      if (!tell) return;
      const size = ACK_SC_HEAD.length + SC_KEY.length + 5;
      const o = this.out.reserve(HEADER_SIZE + size);
      let p = this.out.unsent;
      writeHeader(o, p, size);
      p += HEADER_SIZE;
      o.set(ACK_SC_HEAD, p);
      p += ACK_SC_HEAD.length;
      o.set(SC_KEY, p);
      p += SC_KEY.length;
      o[p++] = 0xce;
      writeU32(o, p, sc >>> 0);
      this.out.commit(HEADER_SIZE + size);
      return;
    }
    for (let first = 0; first < acks.length; first += 1024) {
      const n = Math.min(1024, acks.length - first);
      const withSc = tell && first + n === acks.length; // the count rides on the last ack frame
      const bodyMax = ACK_HEAD.length + (n <= 15 ? 1 : 3) + n * 9 + (withSc ? SC_KEY.length + 5 : 0);
      const o = this.out.reserve(HEADER_SIZE + bodyMax);
      const start = this.out.unsent;
      let p = start + HEADER_SIZE;
      o.set(ACK_HEAD, p);
      if (withSc) o[p] = 0x83; // fixmap(3): t, q, sc
      p += ACK_HEAD.length;
      if (n <= 15) o[p++] = 0x90 | n;
      else { o[p++] = 0xdc; o[p++] = n >>> 8; o[p++] = n & 0xff; }
      for (let i = first; i < first + n; i++) {
        const q = acks[i]!;
        if (q < 4294967296) { o[p++] = 0xce; writeU32(o, p, q); p += 4; }
        else {
          // float64, as the reference server writes large integers (docs/PROTOCOL.md §3)
          f64[0] = q;
          o[p++] = 0xcb;
          for (let j = 0; j < 8; j++) o[p + j] = f64b[7 - j]!;
          p += 8;
        }
      }
      if (withSc) {
        o.set(SC_KEY, p);
        p += SC_KEY.length;
        o[p++] = 0xce;
        writeU32(o, p, sc >>> 0);
        p += 4;
      }
      writeHeader(o, start, p - start - HEADER_SIZE);
      this.out.commit(p - start);
    }
    acks.length = 0;
  }

  /** Writes everything queued with one write(); keeps what the kernel refused for `drain`. */
  flush(): void {
    if (this.acks.length || this.sentHeld !== this.sentTold) this.encodeAcks();
    if (this.socket === null || this.state === "closed") return;
    this.out.flush();
  }

  /** Sink of its Outbound: only called by flush(), with a socket. */
  write(bytes: Uint8Array, length: number): number {
    return this.socket!.write(bytes, 0, length);
  }

  /** Unsent bytes (a backlog here means the server is not reading). */
  get unsent(): number {
    return this.out.unsent;
  }

  /** A copy of what is queued and not yet written (the frames, header and body). */
  queued(): Uint8Array {
    return this.out.tail() ?? new Uint8Array(0);
  }

  /** Cuts the connection at once, without a `close` frame, as a network failure would. */
  terminate(): void {
    if (this.state === "closed" || this.socket === null) return;
    this.closeReason ||= "terminated";
    this.socket.terminate();
  }

  quit(): void {
    if (this.state === "closed" || this.socket === null) return;
    this.sendObject({ t: "close", r: "client_quit" });
    this.flush();
    this.state = "closed";
    this.closeReason = "client_quit";
    this.socket.end();
  }
}

const SOCKET_HANDLERS = {
  binaryType: "uint8array" as const,
  open(s: Socket<LeanConn>) {
    if (s.data.offerTls !== null) s.setSession(s.data.offerTls);
  },
  // Bun resumes an offered session only on a socket with a handshake handler; writes before it wait for this flush.
  handshake(s: Socket<LeanConn>) {
    s.data.flush();
  },
  data(s: Socket<LeanConn>, chunk: Uint8Array) {
    s.data.feed(chunk);
    flushAll();
  },
  drain(s: Socket<LeanConn>) {
    s.data.flush();
  },
  close(s: Socket<LeanConn>) {
    s.data.socketClosed();
  },
  error(s: Socket<LeanConn>, e: Error) {
    if (!s.data.closeReason) s.data.closeReason = `socket_error: ${e.message}`;
  },
  connectError(s: Socket<LeanConn>, e: Error) {
    if (!s.data.closeReason) s.data.closeReason = `connect_error: ${e.message}`;
  },
};

/** RFC 8032 seed (32 bytes) -> node KeyObject, via the PKCS#8 prefix of docs/PROTOCOL.md §10.2. */
const PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");
export function keyFromSeed(seed: Uint8Array): KeyObject {
  return createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, seed]), format: "der", type: "pkcs8" });
}
