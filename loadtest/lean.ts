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
 * - server frames are scanned in place (`scanFrame`): only the fields the
 *   load generator needs are read (kind, q, id as a number, seq), nothing
 *   is allocated for `msg`, `sent`, `rcpt` and `pong`; any other kind goes
 *   through the project's codec (src/protocol/codec.ts);
 * - `msg`, `ack` and `ping` are encoded by hand straight into the
 *   connection's output buffer (the encoding is the one docs/PROTOCOL.md §10
 *   shows, checked against the codec by test/loadtest/loadtest.test.ts);
 * - every connection written to during a turn is flushed once, with one
 *   write() (Bun makes one syscall per write and does not buffer, see
 *   ../shared/notes/bun-platform.md), and acks collected during a read go out
 *   as one `ack` frame.
 */
import type { Socket } from "bun";
import { decodeBody, encodeBody } from "../src/protocol/codec.ts";
import { proofTranscript } from "../src/protocol/auth.ts";
import { sign, createPrivateKey, type KeyObject } from "node:crypto";

export const K_OTHER = 0;
export const K_MSG = 1;
export const K_SENT = 2;
export const K_RCPT = 3;
export const K_PONG = 4;
export const K_HELLO = 5;
export const K_READY = 6;
export const K_CLOSE = 7;
export const K_ERR = 8;

/** What scanFrame found. One instance is reused for every frame. */
export class Scanned {
  kind = K_OTHER;
  q = 0;
  /** The `id` field parsed as a decimal number, or -1 when absent or not all digits. */
  id = -1;
  seq = 0;
  /** `rcpt.k`: true for "dlv". */
  dlv = false;
  /** Offset and length of `p` (msg) inside the scanned buffer. */
  pOff = 0;
  pLen = 0;
}

// The scanner keeps its read position in a module variable: no tuple returns, no allocation.
let pos = 0;
const f64 = new Float64Array(1);
const f64b = new Uint8Array(f64.buffer);
const f32 = new Float32Array(1);
const f32b = new Uint8Array(f32.buffer);

function readNum(b: Uint8Array): number {
  const c = b[pos++]!;
  if (c < 0x80) return c;
  switch (c) {
    case 0xcc: return b[pos++]!;
    case 0xcd: { const v = (b[pos]! << 8) | b[pos + 1]!; pos += 2; return v; }
    case 0xce: { const v = ((b[pos]! << 24) | (b[pos + 1]! << 16) | (b[pos + 2]! << 8) | b[pos + 3]!) >>> 0; pos += 4; return v; }
    case 0xcf: case 0xd3: {
      const hi = ((b[pos]! << 24) | (b[pos + 1]! << 16) | (b[pos + 2]! << 8) | b[pos + 3]!) >>> 0;
      const lo = ((b[pos + 4]! << 24) | (b[pos + 5]! << 16) | (b[pos + 6]! << 8) | b[pos + 7]!) >>> 0;
      pos += 8;
      return hi * 4294967296 + lo;
    }
    case 0xcb:
      // big-endian float64
      for (let i = 0; i < 8; i++) f64b[7 - i] = b[pos + i]!;
      pos += 8;
      return f64[0]!;
    case 0xca:
      for (let i = 0; i < 4; i++) f32b[3 - i] = b[pos + i]!;
      pos += 4;
      return f32[0]!;
    case 0xd0: return (b[pos++]! << 24) >> 24;
    case 0xd1: { const v = ((b[pos]! << 8) | b[pos + 1]!) << 16 >> 16; pos += 2; return v; }
    case 0xd2: { const v = (b[pos]! << 24) | (b[pos + 1]! << 16) | (b[pos + 2]! << 8) | b[pos + 3]!; pos += 4; return v; }
    default:
      pos--;
      skip(b);
      return NaN;
  }
}

/** Length of a str or bin at pos; leaves pos at the first content byte. -1 if it is neither. */
function readLen(b: Uint8Array): number {
  const c = b[pos++]!;
  if (c >= 0xa0 && c <= 0xbf) return c & 0x1f;
  switch (c) {
    case 0xd9: case 0xc4: return b[pos++]!;
    case 0xda: case 0xc5: { const v = (b[pos]! << 8) | b[pos + 1]!; pos += 2; return v; }
    case 0xdb: case 0xc6: { const v = ((b[pos]! << 24) | (b[pos + 1]! << 16) | (b[pos + 2]! << 8) | b[pos + 3]!) >>> 0; pos += 4; return v; }
  }
  pos--;
  return -1;
}

/** Skips one msgpack value of any type. */
function skip(b: Uint8Array): void {
  const c = b[pos++]!;
  if (c < 0x80 || c >= 0xe0) return; // fixints
  if (c <= 0x8f) { for (let n = (c & 0x0f) * 2; n > 0; n--) skip(b); return; }
  if (c <= 0x9f) { for (let n = c & 0x0f; n > 0; n--) skip(b); return; }
  if (c <= 0xbf) { pos += c & 0x1f; return; }
  switch (c) {
    case 0xc0: case 0xc2: case 0xc3: return;
    case 0xc4: case 0xd9: pos += 1 + b[pos]!; return;
    case 0xc5: case 0xda: pos += 2 + ((b[pos]! << 8) | b[pos + 1]!); return;
    case 0xc6: case 0xdb: pos += 4 + (((b[pos]! << 24) | (b[pos + 1]! << 16) | (b[pos + 2]! << 8) | b[pos + 3]!) >>> 0); return;
    case 0xcc: case 0xd0: pos += 1; return;
    case 0xcd: case 0xd1: pos += 2; return;
    case 0xce: case 0xd2: case 0xca: pos += 4; return;
    case 0xcf: case 0xd3: case 0xcb: pos += 8; return;
    case 0xdc: { const n = (b[pos]! << 8) | b[pos + 1]!; pos += 2; for (let i = 0; i < n; i++) skip(b); return; }
    case 0xdd: { const n = ((b[pos]! << 24) | (b[pos + 1]! << 16) | (b[pos + 2]! << 8) | b[pos + 3]!) >>> 0; pos += 4; for (let i = 0; i < n; i++) skip(b); return; }
    case 0xde: { const n = (b[pos]! << 8) | b[pos + 1]!; pos += 2; for (let i = 0; i < 2 * n; i++) skip(b); return; }
    case 0xdf: { const n = ((b[pos]! << 24) | (b[pos + 1]! << 16) | (b[pos + 2]! << 8) | b[pos + 3]!) >>> 0; pos += 4; for (let i = 0; i < 2 * n; i++) skip(b); return; }
    case 0xd4: pos += 2; return;
    case 0xd5: pos += 3; return;
    case 0xd6: pos += 5; return;
    case 0xd7: pos += 9; return;
    case 0xd8: pos += 17; return;
    case 0xc7: pos += 2 + b[pos]!; return;
    case 0xc8: pos += 3 + ((b[pos]! << 8) | b[pos + 1]!); return;
    case 0xc9: pos += 5 + (((b[pos]! << 24) | (b[pos + 1]! << 16) | (b[pos + 2]! << 8) | b[pos + 3]!) >>> 0); return;
  }
  throw new Error(`lean: bad msgpack byte 0x${c.toString(16)}`);
}

/**
 * The value at pos as a decimal number: the digits after the id prefix (see setIdPrefix: everything up
 * to the last non-digit), or -1 when it is not a string or does not end in a digit.
 */
function readIdNum(b: Uint8Array): number {
  const n = readLen(b);
  if (n < 0) { skip(b); return -1; }
  let v = 0;
  let digits = 0;
  for (let i = 0; i < n; i++) {
    const d = b[pos + i]! - 48;
    if (d < 0 || d > 9) {
      v = 0;
      digits = 0;
    } else {
      v = v * 10 + d;
      digits++;
    }
  }
  pos += n;
  return digits > 0 ? v : -1;
}

/**
 * A prefix for every message id this process writes (`<prefix><n>`). Message ids must be unique per
 * sending device for the device's lifetime (docs/PROTOCOL.md §3: the server remembers them durably and
 * answers a known id with its original `sent`, delivering nothing), and identities from an --ids file
 * are reused across runs: each worker process takes a random prefix, so its numbers never repeat an
 * earlier run's ids. The prefix ends in a non-digit, which is where the scanner starts reading the number.
 */
let idPrefix = new Uint8Array(0);
export function setIdPrefix(prefix: string): void {
  if (!/^[a-z0-9]{0,8}[.]$|^$/.test(prefix)) throw new Error("lean: an id prefix is up to 8 of [a-z0-9] and a final '.'");
  idPrefix = te.encode(prefix);
}
/** A fresh random prefix such as "k3f9a0.". */
export function randomIdPrefix(): string {
  return `${Math.floor(Math.random() * 36 ** 6).toString(36).padStart(6, "0")}.`;
}

function kindOf(b: Uint8Array, off: number, n: number): number {
  const c0 = b[off]!;
  if (n === 3) {
    if (c0 === 0x6d && b[off + 1] === 0x73 && b[off + 2] === 0x67) return K_MSG; // msg
    if (c0 === 0x65 && b[off + 1] === 0x72 && b[off + 2] === 0x72) return K_ERR; // err
  } else if (n === 4) {
    if (c0 === 0x73 && b[off + 1] === 0x65) return K_SENT; // sent
    if (c0 === 0x72 && b[off + 1] === 0x63) return K_RCPT; // rcpt
    if (c0 === 0x70 && b[off + 1] === 0x6f) return K_PONG; // pong
  } else if (n === 5) {
    if (c0 === 0x68) return K_HELLO;
    if (c0 === 0x72) return K_READY;
    if (c0 === 0x63) return K_CLOSE;
  }
  return K_OTHER;
}

/**
 * Scans one frame body (b[start..end)) of the server. Fills `out` with the
 * hot fields of msg / sent / rcpt; other kinds only get `kind` (decode them
 * with the codec if you need them).
 */
export function scanFrame(b: Uint8Array, start: number, end: number, out: Scanned): void {
  pos = start;
  const h = b[pos++]!;
  let pairs: number;
  if (h >= 0x80 && h <= 0x8f) pairs = h & 0x0f;
  else if (h === 0xde) { pairs = (b[pos]! << 8) | b[pos + 1]!; pos += 2; }
  else { out.kind = K_OTHER; return; }
  out.kind = K_OTHER;
  out.q = 0;
  out.id = -1;
  out.seq = 0;
  out.dlv = false;
  out.pLen = 0;
  for (let i = 0; i < pairs && pos < end; i++) {
    const kl = readLen(b);
    if (kl < 0) { skip(b); skip(b); continue; }
    const ko = pos;
    pos += kl;
    const k0 = b[ko]!;
    if (kl === 1) {
      if (k0 === 0x74) { // t
        const n = readLen(b);
        out.kind = kindOf(b, pos, n);
        pos += n;
        if (out.kind === K_OTHER || out.kind >= K_HELLO) return; // the caller decodes these fully
        continue;
      }
      if (k0 === 0x71) { out.q = readNum(b); continue; } // q
      if (k0 === 0x70) { // p
        const n = readLen(b);
        if (n < 0) { skip(b); continue; }
        out.pOff = pos;
        out.pLen = n;
        pos += n;
        continue;
      }
      if (k0 === 0x6b) { // k: "dlv" | "read"
        const n = readLen(b);
        out.dlv = n === 3 && b[pos] === 0x64;
        pos += n;
        continue;
      }
    } else if (kl === 2 && k0 === 0x69 && b[ko + 1] === 0x64) { // id
      out.id = readIdNum(b);
      continue;
    } else if (kl === 3 && k0 === 0x73 && b[ko + 1] === 0x65 && b[ko + 2] === 0x71) { // seq
      out.seq = readNum(b);
      continue;
    }
    skip(b);
  }
}

// ---- hand encoding of the hot client frames ---------------------------------

const te = new TextEncoder();
/** fixmap(4) "t" "msg" "id" */
const MSG_HEAD = Uint8Array.from([0x84, 0xa1, 0x74, 0xa3, 0x6d, 0x73, 0x67, 0xa2, 0x69, 0x64]);
/** fixmap(4) "t" "gmsg" "id" */
const GMSG_HEAD = Uint8Array.from([0x84, 0xa1, 0x74, 0xa4, 0x67, 0x6d, 0x73, 0x67, 0xa2, 0x69, 0x64]);
/** fixmap(2) "t" "ack" "q" */
const ACK_HEAD = Uint8Array.from([0x82, 0xa1, 0x74, 0xa3, 0x61, 0x63, 0x6b, 0xa1, 0x71]);
/** fixmap(2) "t" "ping" "n" */
const PING_HEAD = Uint8Array.from([0x82, 0xa1, 0x74, 0xa4, 0x70, 0x69, 0x6e, 0x67, 0xa1, 0x6e]);

/** The constant part of `msg` frames from one sender to one recipient device: "to" <account> "p" [[device, bin ...]]. */
export function msgTemplate(to: string, device: number, payloadLen: number): Uint8Array {
  const acct = te.encode(to);
  if (acct.length > 31 || device > 127 || payloadLen > 255) throw new Error("lean: msgTemplate supports accounts < 32 bytes, devices < 128, payloads < 256 bytes");
  const t = new Uint8Array(3 + 1 + acct.length + 2 + 3 + 2);
  let o = 0;
  t[o++] = 0xa2; t[o++] = 0x74; t[o++] = 0x6f; // "to"
  t[o++] = 0xa0 | acct.length;
  t.set(acct, o); o += acct.length;
  t[o++] = 0xa1; t[o++] = 0x70; // "p"
  t[o++] = 0x91; t[o++] = 0x92; t[o++] = device; // [[device,
  t[o++] = 0xc4; t[o++] = payloadLen; // bin8
  return t;
}

/** The constant part of `gmsg` frames to one group: "g" <group id> "p" bin8 header. */
export function gmsgTemplate(g: string, payloadLen: number): Uint8Array {
  const gb = te.encode(g);
  if (gb.length > 31 || payloadLen > 255) throw new Error("lean: gmsgTemplate supports group ids < 32 bytes, payloads < 256 bytes");
  const t = new Uint8Array(2 + 1 + gb.length + 2 + 2);
  let o = 0;
  t[o++] = 0xa1; t[o++] = 0x67; // "g"
  t[o++] = 0xa0 | gb.length;
  t.set(gb, o); o += gb.length;
  t[o++] = 0xa1; t[o++] = 0x70; // "p"
  t[o++] = 0xc4; t[o++] = payloadLen; // bin8
  return t;
}

/** Output side of a connection: one growing buffer, written once per turn. */
const dirty: LeanConn[] = [];
let flushScheduled = false;
export function flushAll(): void {
  flushScheduled = false;
  for (let i = 0; i < dirty.length; i++) dirty[i]!.flush();
  dirty.length = 0;
}
function markDirty(c: LeanConn): void {
  if (c.isDirty) return;
  c.isDirty = true;
  dirty.push(c);
  if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(flushAll);
  }
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
}

export class LeanConn {
  socket: Socket<LeanConn> | null = null;
  state: "connecting" | "hello" | "auth" | "ready" | "closed" = "connecting";
  closeReason = "";
  /** `ra` of the server's `close` (retry after, ms), 0 when none was given. */
  closeRa = 0;
  isDirty = false;
  private out = new Uint8Array(256);
  private outLen = 0;
  /** Queue ids to acknowledge at the next flush. */
  private acks: number[] = [];
  /** Bytes of a frame split across reads. */
  private pend: Uint8Array | null = null;
  private loginResolve: ((ok: boolean) => void) | null = null;
  /** Which index this connection has in its worker (for the heartbeat spread). */
  index = 0;
  /** Role data for the scenario. */
  user: any = null;

  constructor(
    readonly account: string,
    readonly device: number,
    private key: KeyObject,
    private handlers: LeanHandlers,
  ) {}

  /**
   * Connects, exchanges hellos and logs in; resolves true on `ready`, false on any failure.
   * With `timeoutMs`, a login that has not reached `ready` by then is cut (reason `login_timeout`).
   */
  async login(t: LoginTarget, timeoutMs = 0): Promise<boolean> {
    const done = new Promise<boolean>((r) => (this.loginResolve = r));
    let timer: ReturnType<typeof setTimeout> | null = null;
    if (timeoutMs > 0) {
      timer = setTimeout(() => {
        if (this.state === "ready" || this.state === "closed") return;
        this.closeReason ||= "login_timeout";
        this.socket?.terminate();
        this.state = "closed";
        this.finishLogin(false);
      }, timeoutMs);
      void done.then(() => clearTimeout(timer!));
    }
    try {
      this.socket = await Bun.connect<LeanConn>({
        hostname: t.host,
        port: t.port,
        tls: t.ca ? { ca: t.ca, serverName: "localhost" } : undefined,
        data: this,
        socket: SOCKET_HANDLERS,
      });
    } catch (e) {
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
    this.sendObject({ t: "hello", v: [1], ua: "switchboard-loadtest/1" });
    this.flush();
    return done;
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
      if (this.state === "ready") {
        scanFrame(b, off + 4, end, scanned);
        const k = scanned.kind;
        if (k === K_MSG || k === K_SENT || k === K_RCPT || k === K_PONG) this.handlers.onFrame(this, scanned, b);
        else this.other(b.subarray(off + 4, end));
      } else this.other(b.subarray(off + 4, end));
      off = end;
      if (this.state === "closed") return;
    }
    if (off < len) this.pend = b.slice(off);
  }

  /** Frames off the hot path: decoded with the project's codec. */
  private other(body: Uint8Array): void {
    const s = decodeBody(body) as Record<string, any>;
    switch (s.t) {
      case "hello":
        if (this.state !== "hello") return;
        this.state = "auth";
        this.sendObject({
          t: "auth", u: this.account, d: this.device,
          sig: new Uint8Array(sign(null, proofTranscript("auth", s.sid, s.nonce, this.account, this.device), this.key)),
        });
        this.flush();
        return;
      case "ready":
        this.state = "ready";
        this.finishLogin(true);
        return;
      case "close":
        this.closeReason = s.r;
        if (typeof s.ra === "number") this.closeRa = s.ra;
        return;
      case "err":
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
    this.state = "closed";
    if (!this.closeReason) this.closeReason = "peer_closed";
    if (was !== "ready") this.finishLogin(false);
    else this.handlers.onClose(this, this.closeReason);
  }

  private reserve(n: number): void {
    const need = this.outLen + n;
    if (need <= this.out.length) return;
    const grown = new Uint8Array(Math.max(need, this.out.length * 2));
    grown.set(this.out.subarray(0, this.outLen));
    this.out = grown;
  }

  /** Any stanza, through the codec (hello, auth, close). */
  sendObject(o: object): void {
    const body = encodeBody(o);
    this.reserve(4 + body.length);
    writeU32(this.out, this.outLen, body.length);
    this.out.set(body, this.outLen + 4);
    this.outLen += 4 + body.length;
    markDirty(this);
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
    this.reserve(4 + bodyLen);
    const o = this.out;
    let p = this.outLen;
    writeU32(o, p, bodyLen);
    p += 4;
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
    this.outLen = p + payload.length;
    markDirty(this);
  }

  ack(q: number): void {
    this.acks.push(q);
    markDirty(this);
  }

  ping(n: number): void {
    this.reserve(4 + PING_HEAD.length + 5);
    const o = this.out;
    let p = this.outLen;
    writeU32(o, p, PING_HEAD.length + 5);
    p += 4;
    o.set(PING_HEAD, p);
    p += PING_HEAD.length;
    o[p++] = 0xce;
    writeU32(o, p, n >>> 0);
    this.outLen = p + 4;
    markDirty(this);
  }

  private encodeAcks(): void {
    const acks = this.acks;
    for (let start = 0; start < acks.length; start += 1024) {
      const n = Math.min(1024, acks.length - start);
      const bodyLen = ACK_HEAD.length + (n <= 15 ? 1 : 3) + n * 9;
      this.reserve(4 + bodyLen);
      const o = this.out;
      let p = this.outLen + 4;
      o.set(ACK_HEAD, p);
      p += ACK_HEAD.length;
      if (n <= 15) o[p++] = 0x90 | n;
      else { o[p++] = 0xdc; o[p++] = n >>> 8; o[p++] = n & 0xff; }
      for (let i = start; i < start + n; i++) {
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
      writeU32(o, this.outLen, p - this.outLen - 4);
      this.outLen = p;
    }
    acks.length = 0;
  }

  /** Writes everything queued with one write(); keeps what the kernel refused for `drain`. */
  flush(): void {
    this.isDirty = false;
    if (this.acks.length) this.encodeAcks();
    if (this.outLen === 0 || this.socket === null || this.state === "closed") return;
    const n = this.socket.write(this.out.subarray(0, this.outLen));
    if (n <= 0) return;
    if (n === this.outLen) this.outLen = 0;
    else {
      this.out.copyWithin(0, n, this.outLen);
      this.outLen -= n;
    }
  }

  /** Unsent bytes (a backlog here means the server is not reading). */
  get unsent(): number {
    return this.outLen;
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

function writeU32(o: Uint8Array, p: number, v: number): void {
  o[p] = v >>> 24;
  o[p + 1] = (v >>> 16) & 0xff;
  o[p + 2] = (v >>> 8) & 0xff;
  o[p + 3] = v & 0xff;
}

const SOCKET_HANDLERS = {
  binaryType: "uint8array" as const,
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
