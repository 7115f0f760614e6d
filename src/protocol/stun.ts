/**
 * STUN (RFC 8489) and the TURN (RFC 8656) parts of it a relay needs: the
 * message header, attributes, XOR-encoded addresses, MESSAGE-INTEGRITY
 * (HMAC-SHA1 with the long-term key MD5(user:realm:pass)), FINGERPRINT,
 * ERROR-CODE and ChannelData framing. No I/O: bytes in, values out.
 *
 * Checked against the RFC 5769 vectors (test/protocol/stun.test.ts).
 */
import { createHash, createHmac, timingSafeEqual } from "node:crypto";

export const MAGIC = 0x2112a442;
export const HEADER = 20;

export const Method = {
  Binding: 0x001,
  Allocate: 0x003,
  Refresh: 0x004,
  Send: 0x006,
  Data: 0x007,
  CreatePermission: 0x008,
  ChannelBind: 0x009,
} as const;

export const Class = { Request: 0, Indication: 1, Success: 2, Error: 3 } as const;
export type StunClass = (typeof Class)[keyof typeof Class];

export const Attr = {
  MappedAddress: 0x0001,
  Username: 0x0006,
  MessageIntegrity: 0x0008,
  ErrorCode: 0x0009,
  UnknownAttributes: 0x000a,
  ChannelNumber: 0x000c,
  Lifetime: 0x000d,
  XorPeerAddress: 0x0012,
  Data: 0x0013,
  Realm: 0x0014,
  Nonce: 0x0015,
  XorRelayedAddress: 0x0016,
  RequestedAddressFamily: 0x0017,
  EvenPort: 0x0018,
  RequestedTransport: 0x0019,
  DontFragment: 0x001a,
  XorMappedAddress: 0x0020,
  ReservationToken: 0x0022,
  Priority: 0x0024,
  UseCandidate: 0x0025,
  Software: 0x8022,
  Fingerprint: 0x8028,
  IceControlled: 0x8029,
  IceControlling: 0x802a,
} as const;

/** RFC 8656 §6.1 / RFC 8489 §14.8 codes a relay answers with. */
export const StunError = {
  TryAlternate: 300,
  BadRequest: 400,
  Unauthorized: 401,
  Forbidden: 403,
  UnknownAttribute: 420,
  AllocationMismatch: 437,
  StaleNonce: 438,
  WrongCredentials: 441,
  UnsupportedTransport: 442,
  AllocationQuotaReached: 486,
  ServerError: 500,
  InsufficientCapacity: 508,
} as const;

export interface Address {
  family: 4 | 6;
  address: string;
  port: number;
}

export interface StunAttr {
  type: number;
  value: Uint8Array;
}

export interface StunMessage {
  method: number;
  cls: StunClass;
  /** 12 bytes. */
  tid: Uint8Array;
  attrs: StunAttr[];
  /** Set by decode: the bytes, and where MESSAGE-INTEGRITY / FINGERPRINT started (-1: absent). */
  raw?: Uint8Array;
  integrityAt?: number;
  fingerprintAt?: number;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

export function messageType(method: number, cls: number): number {
  return (method & 0x000f) | ((method & 0x0070) << 1) | ((method & 0x0f80) << 2) | ((cls & 1) << 4) | ((cls & 2) << 7);
}

/** First byte 0 or 1 (the top two bits zero) and the magic cookie: the demultiplexing test of RFC 7983. */
export function isStun(b: Uint8Array): boolean {
  return b.length >= HEADER && b[0]! < 4 && b[4] === 0x21 && b[5] === 0x12 && b[6] === 0xa4 && b[7] === 0x42;
}

/** ChannelData messages start with a channel number 0x4000–0x7FFF (first two bits 01). */
export function isChannelData(b: Uint8Array): boolean {
  return b.length >= 4 && (b[0]! & 0xc0) === 0x40;
}

/** Parse one STUN message; null when the bytes are not a well-formed one (callers drop those silently, RFC 8489 §6.3). */
export function decode(b: Uint8Array): StunMessage | null {
  if (!isStun(b)) return null;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const t = dv.getUint16(0);
  const len = dv.getUint16(2);
  if (len % 4 !== 0 || HEADER + len > b.length) return null;
  const method = (t & 0x000f) | ((t & 0x00e0) >> 1) | ((t & 0x3e00) >> 2);
  const cls = (((t >> 4) & 1) | ((t >> 7) & 2)) as StunClass;
  const attrs: StunAttr[] = [];
  let off = HEADER;
  const end = HEADER + len;
  let integrityAt = -1;
  let fingerprintAt = -1;
  while (off < end) {
    if (off + 4 > end) return null;
    const type = dv.getUint16(off);
    const alen = dv.getUint16(off + 2);
    if (off + 4 + alen > end) return null;
    // After MESSAGE-INTEGRITY only FINGERPRINT counts; after FINGERPRINT nothing (RFC 8489 §14.5, §14.7).
    if (fingerprintAt >= 0) return null;
    if (type === Attr.Fingerprint) fingerprintAt = off;
    if (integrityAt < 0 || type === Attr.Fingerprint) {
      if (type === Attr.MessageIntegrity) integrityAt = off;
      attrs.push({ type, value: b.subarray(off + 4, off + 4 + alen) });
    }
    off += 4 + ((alen + 3) & ~3);
  }
  if (off !== end) return null;
  return { method, cls, tid: b.subarray(8, 20), attrs, raw: b.subarray(0, end), integrityAt, fingerprintAt };
}

export function attr(m: StunMessage, type: number): Uint8Array | undefined {
  for (const a of m.attrs) if (a.type === type) return a.value;
  return undefined;
}

export function attrString(m: StunMessage, type: number): string | undefined {
  const v = attr(m, type);
  return v === undefined ? undefined : dec.decode(v);
}

export function attrU32(m: StunMessage, type: number): number | undefined {
  const v = attr(m, type);
  if (v === undefined || v.length < 4) return undefined;
  return new DataView(v.buffer, v.byteOffset, 4).getUint32(0);
}

export interface EncodeOptions {
  /** Add MESSAGE-INTEGRITY with this HMAC-SHA1 key (long-term: longTermKey(); short-term: the password's bytes). */
  key?: Uint8Array;
  fingerprint?: boolean;
}

/** Encode a message; MESSAGE-INTEGRITY and FINGERPRINT, when asked for, are computed and appended last. */
export function encode(m: Pick<StunMessage, "method" | "cls" | "tid" | "attrs">, opts: EncodeOptions = {}): Uint8Array {
  if (m.tid.length !== 12) throw new RangeError(`stun.encode: tid must be 12 bytes, got ${m.tid.length}`);
  let size = HEADER;
  for (const a of m.attrs) size += 4 + ((a.value.length + 3) & ~3);
  const full = size + (opts.key ? 24 : 0) + (opts.fingerprint ? 8 : 0);
  const out = new Uint8Array(full);
  const dv = new DataView(out.buffer);
  dv.setUint16(0, messageType(m.method, m.cls));
  dv.setUint32(4, MAGIC);
  out.set(m.tid, 8);
  let off = HEADER;
  for (const a of m.attrs) {
    dv.setUint16(off, a.type);
    dv.setUint16(off + 2, a.value.length);
    out.set(a.value, off + 4);
    off += 4 + ((a.value.length + 3) & ~3);
  }
  if (opts.key) {
    dv.setUint16(2, off + 24 - HEADER);
    const mac = createHmac("sha1", opts.key).update(out.subarray(0, off)).digest();
    dv.setUint16(off, Attr.MessageIntegrity);
    dv.setUint16(off + 2, 20);
    out.set(mac, off + 4);
    off += 24;
  }
  if (opts.fingerprint) {
    dv.setUint16(2, off + 8 - HEADER);
    const crc = (crc32(out.subarray(0, off)) ^ 0x5354554e) >>> 0;
    dv.setUint16(off, Attr.Fingerprint);
    dv.setUint16(off + 2, 4);
    dv.setUint32(off + 4, crc);
    off += 8;
  }
  dv.setUint16(2, off - HEADER);
  return out;
}

/** RFC 8489 §9.2.2 long-term key: MD5(username ":" realm ":" SASLprep(password)). */
export function longTermKey(username: string, realm: string, password: string): Uint8Array {
  return new Uint8Array(createHash("md5").update(`${username}:${realm}:${saslPrep(password)}`).digest());
}

/**
 * The parts of SASLprep (RFC 4013) a password meets in practice: characters
 * "commonly mapped to nothing" removed, non-ASCII spaces made spaces, NFKC.
 * TURN REST passwords are base64, so this only matters for static users.
 */
export function saslPrep(s: string): string {
  return s
    .replace(/[\u00ad\u034f\u1806\u180b-\u180d\u200b-\u200d\u2060\ufe00-\ufe0f\ufeff]/g, "")
    .replace(/[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]/g, " ")
    .normalize("NFKC");
}

/** True when the message carries a MESSAGE-INTEGRITY that matches `key`. */
export function checkIntegrity(m: StunMessage, key: Uint8Array): boolean {
  if (!m.raw || m.integrityAt === undefined || m.integrityAt < 0) return false;
  const at = m.integrityAt;
  const head = m.raw.slice(0, at);
  new DataView(head.buffer).setUint16(2, at + 24 - HEADER);
  const mac = createHmac("sha1", key).update(head).digest();
  const got = m.raw.subarray(at + 4, at + 24);
  return got.length === 20 && timingSafeEqual(mac, got);
}

/** True when there is no FINGERPRINT, or it matches; false only for a wrong one. */
export function checkFingerprint(m: StunMessage): boolean {
  if (!m.raw || m.fingerprintAt === undefined || m.fingerprintAt < 0) return true;
  const at = m.fingerprintAt;
  const dv = new DataView(m.raw.buffer, m.raw.byteOffset, m.raw.byteLength);
  return ((crc32(m.raw.subarray(0, at)) ^ 0x5354554e) >>> 0) === dv.getUint32(at + 4);
}

// ---- addresses -------------------------------------------------------------

export function parseIp(address: string): { family: 4 | 6; bytes: Uint8Array } {
  if (address.includes(":")) return { family: 6, bytes: parseIpv6(address) };
  const parts = address.split(".").map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) throw new RangeError(`not an IP address: ${address}`);
  return { family: 4, bytes: new Uint8Array(parts) };
}

function parseIpv6(a: string): Uint8Array {
  const out = new Uint8Array(16);
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(a);
  let s = a;
  let tail: Uint8Array | undefined;
  if (v4) {
    tail = parseIp(v4[1]!).bytes;
    s = a.slice(0, -v4[1]!.length) + "0:0";
  }
  const [left, right, extra] = s.split("::");
  if (extra !== undefined) throw new RangeError(`not an IPv6 address: ${a}`);
  const l = left ? left.split(":") : [];
  const r = right !== undefined && right !== "" ? right.split(":") : [];
  const groups = right === undefined ? l : [...l, ...Array(8 - l.length - r.length).fill("0"), ...r];
  if (groups.length !== 8) throw new RangeError(`not an IPv6 address: ${a}`);
  groups.forEach((g: string, i: number) => {
    const n = parseInt(g, 16);
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw new RangeError(`not an IPv6 address: ${a}`);
    out[i * 2] = n >> 8;
    out[i * 2 + 1] = n & 0xff;
  });
  if (tail) out.set(tail, 12);
  return out;
}

export function formatIp(family: 4 | 6, b: Uint8Array): string {
  if (family === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  const g: string[] = [];
  for (let i = 0; i < 16; i += 2) g.push(((b[i]! << 8) | b[i + 1]!).toString(16));
  // Longest run of zero groups (length ≥ 2) becomes "::" (RFC 5952).
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== "0") { i++; continue; }
    let j = i;
    while (j < 8 && g[j] === "0") j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
    i = j;
  }
  if (best < 0) return g.join(":");
  return `${g.slice(0, best).join(":")}::${g.slice(best + bestLen).join(":")}`;
}

/** XOR-MAPPED / XOR-PEER / XOR-RELAYED-ADDRESS value (RFC 8489 §14.2). */
export function xorAddress(a: Address, tid: Uint8Array): Uint8Array {
  const { family, bytes } = parseIp(a.address);
  const out = new Uint8Array(4 + bytes.length);
  const dv = new DataView(out.buffer);
  out[1] = family === 4 ? 1 : 2;
  dv.setUint16(2, a.port ^ (MAGIC >>> 16));
  const pad = xorPad(tid);
  for (let i = 0; i < bytes.length; i++) out[4 + i] = bytes[i]! ^ pad[i]!;
  return out;
}

export function readXorAddress(v: Uint8Array | undefined, tid: Uint8Array): Address | null {
  if (!v || v.length < 8) return null;
  const family = v[1] === 1 ? 4 : v[1] === 2 ? 6 : 0;
  if (family === 0 || v.length !== (family === 4 ? 8 : 20)) return null;
  const port = ((v[2]! << 8) | v[3]!) ^ (MAGIC >>> 16);
  const pad = xorPad(tid);
  const ip = new Uint8Array(family === 4 ? 4 : 16);
  for (let i = 0; i < ip.length; i++) ip[i] = v[4 + i]! ^ pad[i]!;
  return { family, address: formatIp(family, ip), port };
}

function xorPad(tid: Uint8Array): Uint8Array {
  const pad = new Uint8Array(16);
  new DataView(pad.buffer).setUint32(0, MAGIC);
  pad.set(tid, 4);
  return pad;
}

// ---- small attribute values -------------------------------------------------

export function u32(n: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n >>> 0);
  return out;
}

export function text(s: string): Uint8Array {
  return enc.encode(s);
}

export function errorCode(code: number, reason: string): Uint8Array {
  const r = enc.encode(reason);
  const out = new Uint8Array(4 + r.length);
  out[2] = Math.floor(code / 100) & 7;
  out[3] = code % 100;
  out.set(r, 4);
  return out;
}

export function readErrorCode(m: StunMessage): { code: number; reason: string } | null {
  const v = attr(m, Attr.ErrorCode);
  if (!v || v.length < 4) return null;
  return { code: (v[2]! & 7) * 100 + v[3]!, reason: dec.decode(v.subarray(4)) };
}

/** CHANNEL-NUMBER: the number in the first two bytes, two reserved (RFC 8656 §18.1). */
export function channelNumber(n: number): Uint8Array {
  return new Uint8Array([n >> 8, n & 0xff, 0, 0]);
}

export function readChannelNumber(m: StunMessage): number | undefined {
  const v = attr(m, Attr.ChannelNumber);
  return v && v.length === 4 ? (v[0]! << 8) | v[1]! : undefined;
}

// ---- ChannelData -------------------------------------------------------------

/** ChannelData (RFC 8656 §12.4): channel, length, data; padded to 4 bytes (required over TCP, harmless on UDP). */
export function encodeChannelData(channel: number, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + ((data.length + 3) & ~3));
  out[0] = channel >> 8;
  out[1] = channel & 0xff;
  out[2] = data.length >> 8;
  out[3] = data.length & 0xff;
  out.set(data, 4);
  return out;
}

export function decodeChannelData(b: Uint8Array): { channel: number; data: Uint8Array } | null {
  if (!isChannelData(b)) return null;
  const channel = (b[0]! << 8) | b[1]!;
  const len = (b[2]! << 8) | b[3]!;
  if (channel > 0x7fff || 4 + len > b.length) return null;
  return { channel, data: b.subarray(4, 4 + len) };
}

// ---- CRC-32 (IEEE, as zlib) ---------------------------------------------------

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32(b: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < b.length; i++) c = CRC_TABLE[(c ^ b[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
