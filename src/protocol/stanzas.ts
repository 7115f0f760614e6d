/**
 * Stanza kinds, their fields and limits, and the validator that every frame
 * passes before any handler sees it. docs/PROTOCOL.md §5 is the prose of this
 * file; keep the two in step.
 *
 * Field names are short on purpose: they are repeated in every frame.
 */
import { TICKET_BYTES } from "./auth.ts";
import { ErrorCode } from "./errors.ts";

export const PROTOCOL_VERSION = 1;
export const SUPPORTED_VERSIONS: readonly number[] = [1];

export const LIMITS = {
  /** Account names: 1..32 bytes of [a-z0-9_.-], starting with a letter or digit. */
  accountName: 32,
  /** Client message ids: 1..64 bytes of UTF-8. */
  clientId: 64,
  deviceName: 64,
  userAgent: 64,
  code: 64,
  op: 32,
  reason: 32,
  text: 256,
  /** Most payload entries in one `msg` (recipient plus sync copies). */
  payloads: 64,
  /** Group names: at most 64 bytes of UTF-8. */
  groupName: 64,
  /** Most accounts named in one group operation. */
  groupBatch: 256,
  /** Most queue ids in one `ack`. */
  acks: 1024,
  versions: 8,
  /** Device ids are 1..2^31-1. */
  maxDevice: 0x7fffffff,
  /** The largest body accepted before login (hello, auth, enroll, link are a few hundred bytes); `mf` applies from `ready`. */
  preLoginFrame: 4096,
  /** The longest string id an `err` echoes. */
  echoId: 256,
} as const;

export const ACCOUNT_NAME_RE = /^[a-z0-9][a-z0-9_.-]{0,31}$/;
/** Group ids are server-assigned: `#` and 1..31 of [a-z0-9] (32 bytes at most, as account names). The `#` keeps them apart from account names. */
export const GROUP_ID_RE = /^#[a-z0-9]{1,31}$/;
/** A conversation: an account (1:1) or a group. */
export const PEER_RE = /^(?:#[a-z0-9]{1,31}|[a-z0-9][a-z0-9_.-]{0,31})$/;
export const isGroupId = (s: string): boolean => s.charCodeAt(0) === 35; // "#"

/**
 * One payload per addressed device. The optional third element is the key
 * version the sender encrypted for (docs/PROTOCOL.md §6.6): when present and
 * no longer the device's, the send is refused with `devices_stale`.
 */
export type Payloads = ([device: number, payload: Uint8Array] | [device: number, payload: Uint8Array, kv: number])[];

// ---- client to server ------------------------------------------------------

/** `sc: true`: this client confirms the `sent` frames it gets (`ack {sc}`, docs/PROTOCOL.md §6.2). */
/** `sr: true`: this client takes a `sent` riding on its own `dlv` receipt (`rcpt {sts}`, docs/PROTOCOL.md §6.2). */
export interface HelloC { t: "hello"; v: number[]; ua?: string; sc?: boolean; tk?: boolean; sr?: boolean }
/** `rx: false` asks for a non-receiving session (§4.3): it sends and gets its own answers, takes no deliveries, replaces no one. */
export interface Auth { t: "auth"; u: string; d: number; sig: Uint8Array; rx?: boolean }
/**
 * A login with a resumption ticket (docs/PROTOCOL.md §4.11): `tk` the ticket from an earlier `ready`, `ts` the
 * client's estimate of server time (ms), `mac` HMAC-SHA256 under the ticket's secret over resumeTranscript.
 */
export interface Resume { t: "resume"; u: string; d: number; tk: Uint8Array; ts: number; mac: Uint8Array; rx?: boolean }
export interface Enroll { t: "enroll"; u: string; code: string; pk: Uint8Array; sig: Uint8Array; name?: string }
export interface Link { t: "link"; u: string; pk: Uint8Array; sig: Uint8Array; name?: string }
export interface MsgC { t: "msg"; id: string; to: string; p: Payloads; s?: Payloads }
/** `q`: queue ids processed; `sc`: how many `sent` frames this connection has received and holds (cumulative, §6.2). At least one of the two. */
export interface Ack { t: "ack"; q?: number[]; sc?: number }
/** A group message: one opaque payload (a sender-key ciphertext) that the server fans out to every member device. */
export interface GMsg { t: "gmsg"; id: string; g: string; p: Uint8Array }
/** "Read up to `seq`" in a conversation: `u` is the peer account or a group id. */
export interface Read { t: "read"; u: string; seq: number }
export interface PresC { t: "pres"; to: string; s: "typing" | "paused" }
export interface Iq { t: "iq"; id: number; op: string; a?: Record<string, unknown> }
export interface Ping { t: "ping"; n?: number }
export interface Close { t: "close"; r: string; m?: string; ra?: number }

/**
 * Call signaling (docs/PROTOCOL.md §6.13), ephemeral: `c` the caller's call id, `to` the other account, `p` one
 * opaque (end-to-end encrypted) payload per addressed device, `td` one device of `to` (after the answer),
 * `g` the group a group call's offer belongs to (shed before 1:1 calls).
 */
export type CallKind = "offer" | "answer" | "ice" | "hangup" | "busy" | "reject";
export interface CallC { t: "call"; c: string; to: string; k: CallKind; p?: Payloads; td?: number; g?: string }

export type ClientStanza = HelloC | Auth | Resume | Enroll | Link | MsgC | GMsg | Ack | Read | PresC | Iq | Ping | Close | CallC;

// ---- server to client ------------------------------------------------------

/**
 * `sc: true` answers a client hello's `sc: true`: confirm `sent` frames with `ack {sc}` on this connection (§6.2).
 * `dd: true`: the server deletes a blob once its declared recipient devices downloaded it (media.upload {n}, §6.12).
 */
export interface HelloS { t: "hello"; v: number; sid: string; nonce: Uint8Array; mf: number; pi: number; it: number; sc?: boolean; dd?: boolean }
/** `tk`, `tks`, `tke`: a resumption ticket, its secret and its expiry (ms), when the client's hello said `tk: true` (§4.11). */
export interface Ready { t: "ready"; u: string; d: number; ts: number; tk?: Uint8Array; tks?: Uint8Array; tke?: number }
export interface LinkCode { t: "linkcode"; code: string; exp: number }
/**
 * A message delivered to one device. `q` is its place in that device's queue, to be acknowledged.
 * `to` is the recipient account, or the group id for a group message.
 */
export interface MsgS {
  t: "msg"; q: number; id: string; from: string; fd: number; to: string; seq: number; ts: number; p: Uint8Array; sync?: boolean;
}
export interface Sent { t: "sent"; id: string; to: string; seq: number; ts: number }
/**
 * A receipt delivered to one device; queued and acknowledged like a message.
 * `exp`: the message `id`/`seq` to device `u`/`d` expired unread (retention), so it was never delivered there.
 * `full`: a group message `id`/`seq` was not queued for device `u`/`d` because that device's queue is at its bound.
 */
/** `sts`: this frame is also the `sent` of message `id` (to `w`, `seq`), accepted at `sts` (hello `sr`, §6.2). */
export interface Rcpt { t: "rcpt"; q: number; k: "dlv" | "read" | "exp" | "full"; u: string; d: number; w: string; seq: number; id?: string; ts: number; sts?: number }
/** `n` items queued for this device expired before it came to take them (an explicit gap: they are lost to it). */
export interface Gap { t: "gap"; q: number; n: number; ts: number }
export interface PresS { t: "pres"; u: string; d: number; s: "typing" | "paused" }
/**
 * Presence of an account this device subscribed to (docs/PROTOCOL.md §6.10): each frame is
 * the whole view, and an absent field is one this device may not see. `end`: the
 * subscription ended (`privacy`: the rules no longer allow it; `lease`: not renewed).
 */
export interface Pst { t: "pst"; u: string; online?: boolean; ls?: number; end?: "privacy" | "lease" }
/**
 * A queued notice, acknowledged like a message. `k` says what about:
 * `grp` a group change (`g`, `seq`, `op`, `by`, `m`, `name`), `dev` one of
 * the account's devices was linked or revoked (`u`, `d`, `op`, `name`),
 * `keys` this device's one-time prekeys run low (`n` left), `call` a call
 * from `u`/`d` (id `c`, group `g`) that was not answered (`op: "missed"`).
 */
export interface Evt {
  t: "evt"; q: number; k: "grp" | "dev" | "keys" | "call"; ts: number;
  op?: string; g?: string; seq?: number; by?: string; m?: string[]; name?: string; u?: string; d?: number; n?: number; c?: string;
}
export interface Res { t: "res"; id: number; ok: boolean; r?: unknown; e?: string; m?: string; x?: Record<string, unknown> }
export interface Pong { t: "pong"; n?: number }
export interface Err { t: "err"; e: string; m: string; id?: string | number; x?: unknown }

/**
 * Cluster mode (§4.10): this node is not the home of the account that tried to log in. Reconnect to `host`:`port`
 * and remember it as the account's home for `ttl` seconds; a `close redirect` follows.
 */
/** `ws`: the home's WebSocket URL, when it has one (a WebSocket client dials it instead of host:port). */
export interface Redirect { t: "redirect"; host: string; port: number; ttl: number; ws?: string }

/**
 * A call signal from `u`/`d`, never queued (a device that is not connected gets a push and, if it connects while
 * the call still rings, the offer then). `stop`: stop ringing, `w` says why (answered elsewhere, rejected, busy,
 * hangup, timeout; a `stop` to the caller for a timeout names no `d`). `p`: the payload made for this device.
 */
export interface CallS { t: "call"; c: string; u: string; d?: number; k: CallKind | "stop"; p?: Uint8Array; w?: string; g?: string; ts: number }

export type ServerStanza = HelloS | Ready | LinkCode | MsgS | Sent | Rcpt | Gap | PresS | Pst | Evt | Res | Pong | Err | Close | Redirect | CallS;

// ---- validation ------------------------------------------------------------

/** Field types the validator knows. Each carries its own limits. */
type FieldType =
  | { k: "str"; max: number; min?: number; re?: RegExp; oneOf?: readonly string[] }
  | { k: "uint"; max?: number; min?: number }
  | { k: "bool" }
  | { k: "bin"; len?: number; max?: number }
  | { k: "uints"; min: number; max: number }
  | { k: "strs"; max: number; re: RegExp }
  | { k: "payloads"; min: number; max: number }
  | { k: "map" };

type Schema = Record<string, [type: FieldType, required: boolean]>;

const str = (max: number, extra: Partial<{ min: number; re: RegExp; oneOf: readonly string[] }> = {}): FieldType => ({ k: "str", max, ...extra });
const uint = (max?: number, min?: number): FieldType => ({ k: "uint", max, min });
const account = str(LIMITS.accountName, { re: ACCOUNT_NAME_RE });
const peer = str(LIMITS.accountName, { re: PEER_RE });
const group = str(LIMITS.accountName, { re: GROUP_ID_RE });
const device = uint(LIMITS.maxDevice, 1);
const bin = (len?: number, max?: number): FieldType => ({ k: "bin", len, max });

const CALL_KINDS: readonly CallKind[] = ["offer", "answer", "ice", "hangup", "busy", "reject"];

/** Client-to-server schemas: what the server accepts. */
export const CLIENT_SCHEMAS: Record<ClientStanza["t"], Schema> = {
  hello: { v: [{ k: "uints", min: 1, max: LIMITS.versions }, true], ua: [str(LIMITS.userAgent), false], sc: [{ k: "bool" }, false], tk: [{ k: "bool" }, false], sr: [{ k: "bool" }, false] },
  auth: { u: [account, true], d: [device, true], sig: [bin(64), true], rx: [{ k: "bool" }, false] },
  resume: { u: [account, true], d: [device, true], tk: [bin(TICKET_BYTES), true], ts: [uint(), true], mac: [bin(32), true], rx: [{ k: "bool" }, false] },
  enroll: {
    u: [account, true], code: [str(LIMITS.code, { min: 1 }), true], pk: [bin(32), true], sig: [bin(64), true],
    name: [str(LIMITS.deviceName), false],
  },
  link: { u: [account, true], pk: [bin(32), true], sig: [bin(64), true], name: [str(LIMITS.deviceName), false] },
  msg: {
    id: [str(LIMITS.clientId, { min: 1 }), true], to: [account, true],
    // min 0: an empty `p` is answered by the messaging rules (no_devices or devices_mismatch), not as a malformed field.
    p: [{ k: "payloads", min: 0, max: LIMITS.payloads }, true], s: [{ k: "payloads", min: 0, max: LIMITS.payloads }, false],
  },
  gmsg: { id: [str(LIMITS.clientId, { min: 1 }), true], g: [group, true], p: [bin(), true] },
  // `q` or `sc` or both (checked by dispatch: the schema language has no "one of").
  ack: { q: [{ k: "uints", min: 1, max: LIMITS.acks }, false], sc: [uint(), false] },
  read: { u: [peer, true], seq: [uint(), true] },
  pres: { to: [account, true], s: [str(8, { oneOf: ["typing", "paused"] }), true] },
  iq: { id: [uint(0xffffffff), true], op: [str(LIMITS.op, { min: 1 }), true], a: [{ k: "map" }, false] },
  ping: { n: [uint(0xffffffff), false] },
  close: { r: [str(LIMITS.reason), true], m: [str(LIMITS.text), false], ra: [uint(), false] },
  call: {
    c: [str(LIMITS.clientId, { min: 1 }), true], to: [account, true], k: [str(8, { oneOf: CALL_KINDS }), true],
    p: [{ k: "payloads", min: 0, max: LIMITS.payloads }, false], td: [device, false], g: [group, false],
  },
};

/** Server-to-client schemas: what the SDK accepts. */
export const SERVER_SCHEMAS: Record<ServerStanza["t"], Schema> = {
  hello: {
    v: [uint(), true], sid: [str(128, { min: 1 }), true], nonce: [bin(32), true], mf: [uint(), true], pi: [uint(), true], it: [uint(), true],
    sc: [{ k: "bool" }, false], dd: [{ k: "bool" }, false],
  },
  ready: { u: [account, true], d: [device, true], ts: [uint(), true], tk: [bin(TICKET_BYTES), false], tks: [bin(32), false], tke: [uint(), false] },
  linkcode: { code: [str(LIMITS.code), true], exp: [uint(), true] },
  msg: {
    q: [uint(), true], id: [str(LIMITS.clientId, { min: 1 }), true], from: [account, true], fd: [device, true], to: [peer, true],
    seq: [uint(), true], ts: [uint(), true], p: [bin(undefined, 1 << 24), true], sync: [{ k: "bool" }, false],
  },
  sent: { id: [str(LIMITS.clientId, { min: 1 }), true], to: [peer, true], seq: [uint(), true], ts: [uint(), true] },
  rcpt: {
    q: [uint(), true], k: [str(4, { oneOf: ["dlv", "read", "exp", "full"] }), true], u: [account, true], d: [device, true], w: [peer, true],
    seq: [uint(), true], id: [str(LIMITS.clientId, { min: 1 }), false], ts: [uint(), true], sts: [uint(), false],
  },
  gap: { q: [uint(), true], n: [uint(), true], ts: [uint(), true] },
  pres: { u: [account, true], d: [device, true], s: [str(8, { oneOf: ["typing", "paused"] }), true] },
  pst: { u: [account, true], online: [{ k: "bool" }, false], ls: [uint(), false], end: [str(8, { oneOf: ["privacy", "lease"] }), false] },
  evt: {
    q: [uint(), true], k: [str(4, { oneOf: ["grp", "dev", "keys", "call"] }), true], ts: [uint(), true], op: [str(LIMITS.op), false],
    g: [group, false], seq: [uint(), false], by: [account, false], m: [{ k: "strs", max: 1024, re: ACCOUNT_NAME_RE }, false],
    name: [str(LIMITS.groupName), false], u: [account, false], d: [device, false], n: [uint(), false],
    c: [str(LIMITS.clientId), false],
  },
  res: { id: [uint(0xffffffff), true], ok: [{ k: "bool" }, true], e: [str(LIMITS.reason), false], m: [str(LIMITS.text), false], x: [{ k: "map" }, false] },
  pong: { n: [uint(0xffffffff), false] },
  err: { e: [str(LIMITS.reason), true], m: [str(LIMITS.text), true] },
  close: { r: [str(LIMITS.reason), true], m: [str(LIMITS.text), false], ra: [uint(), false] },
  redirect: { host: [str(255, { min: 1 }), true], port: [uint(65535, 1), true], ttl: [uint(), true] },
  call: {
    c: [str(LIMITS.clientId, { min: 1 }), true], u: [account, true], d: [device, false], k: [str(8, { oneOf: [...CALL_KINDS, "stop"] }), true],
    p: [bin(undefined, 1 << 16), false], w: [str(LIMITS.reason), false], g: [group, false], ts: [uint(), true],
  },
};

export type Invalid = { ok: false; code: ErrorCode; message: string; id?: string | number };

/**
 * The `id` an `err` may echo (§2.3): a string of at most 256 bytes (so an id
 * refused for being a little over 64 bytes is still named) or a safe integer,
 * else none. Whatever else a stanza carries as `id` (a map, an array, a long
 * string) is not sent back: an `ack` with a 10 000-deep map as `id` was
 * echoed verbatim.
 */
export function echoableId(v: unknown): string | number | undefined {
  if (typeof v === "string") return v.length <= LIMITS.echoId && byteLength(v) <= LIMITS.echoId ? v : undefined;
  return typeof v === "number" && Number.isSafeInteger(v) ? v : undefined;
}
export type Valid<T> = { ok: true; stanza: T };

const utf8 = new TextEncoder();
/** UTF-8 byte length without allocating for the ASCII case. */
function byteLength(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0x7f) return utf8.encode(s).length;
  }
  return n;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== "object" || Array.isArray(v) || v instanceof Uint8Array) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function checkField(v: unknown, type: FieldType): string | null {
  switch (type.k) {
    case "str": {
      if (typeof v !== "string") return "must be a string";
      const n = byteLength(v);
      if (n > type.max) return `must be at most ${type.max} bytes`;
      if (type.min !== undefined && n < type.min) return `must be at least ${type.min} bytes`;
      if (type.re && !type.re.test(v)) return `must match ${type.re.source}`;
      if (type.oneOf && !type.oneOf.includes(v)) return `must be one of ${type.oneOf.join(", ")}`;
      return null;
    }
    case "uint":
      if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) return "must be a non-negative integer";
      if (type.max !== undefined && v > type.max) return `must be at most ${type.max}`;
      if (type.min !== undefined && v < type.min) return `must be at least ${type.min}`;
      return null;
    case "bool":
      return typeof v === "boolean" ? null : "must be a boolean";
    case "bin":
      if (!(v instanceof Uint8Array)) return "must be binary (msgpack bin)";
      if (type.len !== undefined && v.length !== type.len) return `must be exactly ${type.len} bytes`;
      if (type.max !== undefined && v.length > type.max) return `must be at most ${type.max} bytes`;
      return null;
    case "uints": {
      if (!Array.isArray(v)) return "must be an array of non-negative integers";
      if (v.length < type.min || v.length > type.max) return `must hold ${type.min}..${type.max} entries`;
      for (const x of v) if (typeof x !== "number" || !Number.isSafeInteger(x) || x < 0) return "must be an array of non-negative integers";
      return null;
    }
    case "strs": {
      if (!Array.isArray(v) || v.length > type.max) return `must be an array of at most ${type.max} strings`;
      for (const x of v) if (typeof x !== "string" || !type.re.test(x)) return `entries must match ${type.re.source}`;
      return null;
    }
    case "payloads": {
      if (!Array.isArray(v)) return "must be an array of [device, bin] pairs";
      if (v.length < type.min || v.length > type.max) return `must hold ${type.min}..${type.max} pairs`;
      for (const pair of v) {
        if (!Array.isArray(pair) || (pair.length !== 2 && pair.length !== 3)) return "must be an array of [device, bin] or [device, bin, kv] entries";
        const d = pair[0];
        if (typeof d !== "number" || !Number.isInteger(d) || d < 1 || d > LIMITS.maxDevice) return "device ids must be integers 1..2^31-1";
        if (!(pair[1] instanceof Uint8Array)) return "payloads must be binary (msgpack bin)";
        if (pair.length === 3) {
          const kv = pair[2];
          if (typeof kv !== "number" || !Number.isInteger(kv) || kv < 0 || kv > 0xffffffff) return "key versions must be integers 0..2^32-1";
        }
      }
      return null;
    }
    case "map":
      return isPlainObject(v) ? null : "must be a map";
  }
}

/**
 * Checks a decoded body against the schemas of one direction. Unknown extra
 * fields are ignored (forward compatibility); missing or ill-typed known
 * fields are not. Returns the stanza typed, or the error to send.
 */
export function validate<T extends { t: string }>(body: unknown, schemas: Record<string, Schema>): Valid<T> | Invalid {
  if (!isPlainObject(body)) return { ok: false, code: ErrorCode.BAD_FRAME, message: "frame body must be a msgpack map" };
  const t = body.t;
  if (typeof t !== "string") return { ok: false, code: ErrorCode.BAD_FIELD, message: "field t (kind) must be a string" };
  const schema = Object.prototype.hasOwnProperty.call(schemas, t) ? schemas[t] : undefined;
  // The id to echo is worked out only for a refusal (a scan of a `msg` id's bytes per frame otherwise).
  if (!schema) return { ok: false, code: ErrorCode.UNKNOWN_KIND, message: `unknown stanza kind ${JSON.stringify(t.slice(0, 32))}`, id: echoableId(body.id) };
  for (const name in schema) {
    const [type, required] = schema[name]!;
    const v = body[name];
    if (v === undefined || v === null) {
      if (required) return { ok: false, code: ErrorCode.BAD_FIELD, message: `${t}.${name} is required`, id: echoableId(body.id) };
      // Nil counts as absent (§3): drop it, so that no handler ever sees a null where it expects a value or nothing.
      if (v === null) delete body[name];
      continue;
    }
    const problem = checkField(v, type);
    if (problem !== null) return { ok: false, code: ErrorCode.BAD_FIELD, message: `${t}.${name} ${problem}`, id: echoableId(body.id) };
  }
  return { ok: true, stanza: body as unknown as T };
}

export const validateClient = (body: unknown) => validate<ClientStanza>(body, CLIENT_SCHEMAS);
export const validateServer = (body: unknown) => validate<ServerStanza>(body, SERVER_SCHEMAS);

// ---- push registration (iq push.set, docs/PROTOCOL.md §5.5) -----------------

/**
 * A device's push endpoint, as `push.set` carries it (`p` names the kind).
 * apns: a hex device token (`voip` for a PushKit token); fcm: a registration
 * token; webpush: a subscription's endpoint and keys (RFC 8291; UnifiedPush
 * distributors hand out the same); webhook: an opaque token the operator's
 * own gateway understands.
 */
export type PushEndpoint =
  | { p: "apns"; token: string; topic?: string; voip?: boolean }
  | { p: "fcm"; token: string }
  | { p: "webpush"; endpoint: string; p256dh: string; auth: string }
  | { p: "webhook"; token: string };

export const PUSH_LIMITS = { token: 4096, endpoint: 2048, topic: 255 } as const;

const B64URL_RE = /^[A-Za-z0-9_-]+=*$/;
const b64urlBytes = (s: string): number => Math.floor((s.replace(/=+$/, "").length * 3) / 4);

/**
 * Checks `push.set`'s arguments (no I/O: whether a Web Push endpoint's host
 * is public is asked at registration by the push module, src/core/push/ssrf.ts).
 * Returns the endpoint with exactly the known fields, or what is wrong.
 */
export function validatePushEndpoint(a: Record<string, unknown>): { ok: true; e: PushEndpoint } | { ok: false; m: string } {
  const str = (k: string, max: number, re?: RegExp): string | string[] => {
    const v = a[k];
    if (typeof v !== "string" || v.length === 0) return [`push.set.${k} is required (a non-empty string)`];
    if (v.length > max) return [`push.set.${k} must be at most ${max} characters`];
    if (re && !re.test(v)) return [`push.set.${k} must match ${re.source}`];
    return v;
  };
  const fail = (m: string) => ({ ok: false as const, m });
  switch (a.p) {
    case "apns": {
      const token = str("token", 200, /^[0-9a-fA-F]{16,200}$/);
      if (Array.isArray(token)) return fail(token[0]!);
      const e: PushEndpoint = { p: "apns", token: token.toLowerCase() };
      if (a.topic !== undefined) {
        const topic = str("topic", PUSH_LIMITS.topic, /^[A-Za-z0-9.-]+$/);
        if (Array.isArray(topic)) return fail(topic[0]!);
        e.topic = topic;
      }
      if (a.voip !== undefined) {
        if (typeof a.voip !== "boolean") return fail("push.set.voip must be a boolean");
        if (a.voip) e.voip = true;
      }
      return { ok: true, e };
    }
    case "fcm": {
      const token = str("token", PUSH_LIMITS.token, /^[A-Za-z0-9_:.-]+$/);
      return Array.isArray(token) ? fail(token[0]!) : { ok: true, e: { p: "fcm", token } };
    }
    case "webhook": {
      const token = str("token", 512, /^[\x21-\x7e]+$/);
      return Array.isArray(token) ? fail(token[0]!) : { ok: true, e: { p: "webhook", token } };
    }
    case "webpush": {
      const endpoint = str("endpoint", PUSH_LIMITS.endpoint);
      if (Array.isArray(endpoint)) return fail(endpoint[0]!);
      let u: URL;
      try {
        u = new URL(endpoint);
      } catch {
        return fail("push.set.endpoint must be an absolute URL");
      }
      if (u.protocol !== "https:" && u.protocol !== "http:") return fail("push.set.endpoint must be an https URL");
      const p256dh = str("p256dh", 100, B64URL_RE);
      if (Array.isArray(p256dh)) return fail(p256dh[0]!);
      if (b64urlBytes(p256dh) !== 65) return fail("push.set.p256dh must be an uncompressed P-256 public key (65 bytes, base64url)");
      const auth = str("auth", 32, B64URL_RE);
      if (Array.isArray(auth)) return fail(auth[0]!);
      if (b64urlBytes(auth) !== 16) return fail("push.set.auth must be the 16-byte auth secret (base64url)");
      return { ok: true, e: { p: "webpush", endpoint, p256dh, auth } };
    }
    default:
      return fail(`push.set.p must be one of apns, fcm, webpush, webhook, got ${JSON.stringify(a.p)?.slice(0, 32)}`);
  }
}
