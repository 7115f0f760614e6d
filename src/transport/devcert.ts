/**
 * Self-signed development TLS certificate, built without openssl or any npm
 * package: an ECDSA P-256 key from node:crypto, an X.509 v3 certificate
 * assembled by a tiny ASN.1 DER writer, signed with ecdsa-with-SHA256.
 *
 * For development only: the certificate is its own issuer, so clients must be
 * told to trust it explicitly (e.g. `tls: { ca: cert }`).
 */
import { generateKeyPairSync, randomBytes, sign, type KeyObject } from "node:crypto";
import { isIP } from "node:net";
import { chmod, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { concat } from "../protocol/bytes.ts";

export interface DevCert {
  /** PKCS#8 private key, PEM. */
  key: string;
  /** X.509 certificate, PEM. */
  cert: string;
}

export interface DevCertOptions {
  /** Subject and issuer CN. Default "switchboard-dev". */
  commonName?: string;
  /** Extra DNS subjectAltNames, in addition to "localhost". */
  altNames?: string[];
  /** Extra IP subjectAltNames, in addition to 127.0.0.1 and ::1. */
  ips?: string[];
  /** Validity in days from now. Default 825 (the maximum many clients accept). */
  days?: number;
}

export const DEV_KEY_FILE = "dev-key.pem";
export const DEV_CERT_FILE = "dev-cert.pem";

// ---------------------------------------------------------------------------
// Minimal ASN.1 DER writer
// ---------------------------------------------------------------------------

const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  SEQUENCE: 0x30,
  SET: 0x31,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
} as const;

function derLength(len: number): Uint8Array {
  if (len < 0x80) return Uint8Array.of(len);
  const bytes: number[] = [];
  for (let n = len; n > 0; n = Math.floor(n / 256)) bytes.unshift(n & 0xff);
  return Uint8Array.of(0x80 | bytes.length, ...bytes);
}

/** Tag-length-value with an arbitrary (single-byte) tag. */
function tlv(tag: number, content: Uint8Array): Uint8Array {
  return concat(Uint8Array.of(tag), derLength(content.length), content);
}

function seq(...items: Uint8Array[]): Uint8Array {
  return tlv(TAG.SEQUENCE, concat(...items));
}

function set(...items: Uint8Array[]): Uint8Array {
  return tlv(TAG.SET, concat(...items));
}

/** INTEGER from unsigned big-endian bytes (minimal encoding, kept positive). */
function integerFromBytes(bytes: Uint8Array): Uint8Array {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start++;
  let body = bytes.subarray(start);
  if (body.length === 0) body = Uint8Array.of(0);
  if ((body[0]! & 0x80) !== 0) body = concat(Uint8Array.of(0), body);
  return tlv(TAG.INTEGER, body);
}

function integer(n: number): Uint8Array {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`DER integer out of range: ${n}`);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return integerFromBytes(Uint8Array.from(bytes));
}

function boolean(v: boolean): Uint8Array {
  return tlv(TAG.BOOLEAN, Uint8Array.of(v ? 0xff : 0x00));
}

function oid(dotted: string): Uint8Array {
  const arcs = dotted.split(".").map((s) => {
    if (!/^\d+$/.test(s)) throw new Error(`bad OID: ${dotted}`);
    return Number(s);
  });
  if (arcs.length < 2) throw new Error(`bad OID: ${dotted}`);
  const out: number[] = [];
  const first = arcs[0]! * 40 + arcs[1]!;
  for (const arc of [first, ...arcs.slice(2)]) {
    const chunk: number[] = [arc & 0x7f];
    for (let v = Math.floor(arc / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift((v & 0x7f) | 0x80);
    out.push(...chunk);
  }
  return tlv(TAG.OID, Uint8Array.from(out));
}

function bitString(bytes: Uint8Array, unusedBits = 0): Uint8Array {
  return tlv(TAG.BIT_STRING, concat(Uint8Array.of(unusedBits), bytes));
}

function octetString(bytes: Uint8Array): Uint8Array {
  return tlv(TAG.OCTET_STRING, bytes);
}

function utf8String(s: string): Uint8Array {
  return tlv(TAG.UTF8_STRING, new TextEncoder().encode(s));
}

/** Context-specific, constructed, EXPLICIT [n]. */
function explicit(n: number, inner: Uint8Array): Uint8Array {
  return tlv(0xa0 | n, inner);
}

/** Context-specific, primitive, IMPLICIT [n]. */
function implicitPrimitive(n: number, content: Uint8Array): Uint8Array {
  return tlv(0x80 | n, content);
}

/** RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050; seconds, Zulu. */
function time(d: Date): Uint8Array {
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  const year = d.getUTCFullYear();
  const rest =
    p(d.getUTCMonth() + 1) + p(d.getUTCDate()) + p(d.getUTCHours()) + p(d.getUTCMinutes()) + p(d.getUTCSeconds()) + "Z";
  const ascii = (s: string) => new TextEncoder().encode(s);
  if (year >= 1950 && year < 2050) return tlv(TAG.UTC_TIME, ascii(p(year % 100) + rest));
  return tlv(TAG.GENERALIZED_TIME, ascii(p(year, 4) + rest));
}

// ---------------------------------------------------------------------------
// Certificate pieces
// ---------------------------------------------------------------------------

const OID_ECDSA_WITH_SHA256 = "1.2.840.10045.4.3.2";
const OID_COMMON_NAME = "2.5.4.3";
const OID_SUBJECT_ALT_NAME = "2.5.29.17";
const OID_BASIC_CONSTRAINTS = "2.5.29.19";
const OID_KEY_USAGE = "2.5.29.15";
const OID_EXT_KEY_USAGE = "2.5.29.37";
const OID_KP_SERVER_AUTH = "1.3.6.1.5.5.7.3.1";

function name(commonName: string): Uint8Array {
  return seq(set(seq(oid(OID_COMMON_NAME), utf8String(commonName))));
}

function extension(id: string, critical: boolean, value: Uint8Array): Uint8Array {
  return critical ? seq(oid(id), boolean(true), octetString(value)) : seq(oid(id), octetString(value));
}

function parseIPv4(s: string): number[] {
  const parts = s.split(".").map(Number);
  if (parts.length !== 4 || parts.some((n) => !Number.isInteger(n) || n < 0 || n > 255)) {
    throw new Error(`bad IPv4 address: ${s}`);
  }
  return parts;
}

function parseIPv6(input: string): number[] {
  let s = input.replace(/%.*$/, ""); // drop zone id
  let tail: number[] = [];
  const lastColon = s.lastIndexOf(":");
  if (s.slice(lastColon + 1).includes(".")) {
    // embedded IPv4 (e.g. ::ffff:1.2.3.4)
    tail = parseIPv4(s.slice(lastColon + 1));
    s = s.slice(0, lastColon + 1) + "0:0";
  }
  const halves = s.split("::");
  if (halves.length > 2) throw new Error(`bad IPv6 address: ${input}`);
  const groups = (h: string | undefined) => (h ? h.split(":") : []);
  const head = groups(halves[0]);
  const back = groups(halves[1]);
  const fill = halves.length === 2 ? 8 - head.length - back.length : 0;
  if (fill < 0) throw new Error(`bad IPv6 address: ${input}`);
  const all = [...head, ...Array<string>(fill).fill("0"), ...back];
  if (all.length !== 8) throw new Error(`bad IPv6 address: ${input}`);
  const bytes: number[] = [];
  for (const g of all) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw new Error(`bad IPv6 address: ${input}`);
    const v = parseInt(g, 16);
    bytes.push(v >> 8, v & 0xff);
  }
  if (tail.length) bytes.splice(12, 4, ...tail);
  return bytes;
}

function ipBytes(ip: string): Uint8Array {
  const kind = isIP(ip.replace(/%.*$/, ""));
  if (kind === 4) return Uint8Array.from(parseIPv4(ip));
  if (kind === 6) return Uint8Array.from(parseIPv6(ip));
  throw new Error(`not an IP address: ${ip}`);
}

function dnsName(n: string): Uint8Array {
  // dNSName is an IA5String: ASCII only (punycode for IDNs).
  if (!n || !/^[\x21-\x7e]+$/.test(n)) throw new Error(`bad DNS name for subjectAltName: ${JSON.stringify(n)}`);
  return implicitPrimitive(2, new TextEncoder().encode(n));
}

function uniq<T>(xs: readonly T[]): T[] {
  return [...new Set(xs)];
}

function toPem(label: string, der: Uint8Array): string {
  const b64 = Buffer.from(der).toString("base64");
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

/** Positive, non-zero, exactly 16 octets (top bit clear, next bit set). */
function serialNumber(): Uint8Array {
  const bytes = new Uint8Array(randomBytes(16));
  bytes[0] = (bytes[0]! & 0x7f) | 0x40;
  return bytes;
}

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

export function generateDevCert(opts: DevCertOptions = {}): DevCert {
  const commonName = opts.commonName ?? "switchboard-dev";
  const days = opts.days ?? 825;
  if (!(days > 0) || !Number.isFinite(days)) throw new RangeError(`days must be a positive number, got ${days}`);
  const dnsNames = uniq(["localhost", ...(opts.altNames ?? [])]);
  const ips = uniq(["127.0.0.1", "::1", ...(opts.ips ?? [])]);

  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  const spki = new Uint8Array(publicKey.export({ type: "spki", format: "der" }));

  // X.509 times carry whole seconds only.
  const nowSec = Math.floor(Date.now() / 1000);
  const notBefore = new Date((nowSec - 3600) * 1000);
  const notAfter = new Date((nowSec + Math.round(days * 86400)) * 1000);

  const sigAlg = seq(oid(OID_ECDSA_WITH_SHA256)); // parameters MUST be absent (RFC 5758)
  const subject = name(commonName);

  const san = seq(...dnsNames.map(dnsName), ...ips.map((ip) => implicitPrimitive(7, ipBytes(ip))));
  const extensions = seq(
    extension(OID_SUBJECT_ALT_NAME, false, san),
    // cA defaults to FALSE, and DER omits defaults: an empty SEQUENCE.
    extension(OID_BASIC_CONSTRAINTS, true, seq()),
    // digitalSignature = bit 0: one byte 0b1000_0000 with 7 unused bits.
    extension(OID_KEY_USAGE, true, bitString(Uint8Array.of(0x80), 7)),
    extension(OID_EXT_KEY_USAGE, false, seq(oid(OID_KP_SERVER_AUTH))),
  );

  const tbs = seq(
    explicit(0, integer(2)), // v3
    integerFromBytes(serialNumber()),
    sigAlg,
    subject, // issuer
    seq(time(notBefore), time(notAfter)),
    subject, // subject
    spki,
    explicit(3, extensions),
  );

  const signature = new Uint8Array(sign("sha256", tbs, privateKey as KeyObject)); // DER Ecdsa-Sig-Value
  const certificate = seq(tbs, sigAlg, bitString(signature));

  return {
    key: privateKey.export({ type: "pkcs8", format: "pem" }) as string,
    cert: toPem("CERTIFICATE", certificate),
  };
}

async function readIfExists(path: string): Promise<string | null> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw err;
  }
}

/** Write via a temp file + rename so a crash never leaves a half-written PEM. */
async function writeAtomic(path: string, data: string, mode: number): Promise<void> {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  await writeFile(tmp, data, { mode });
  await chmod(tmp, mode); // writeFile's mode is filtered by the umask
  await rename(tmp, path);
}

/**
 * Reuse `dir/dev-key.pem` + `dir/dev-cert.pem` if both exist; otherwise create
 * `dir`, generate a fresh pair and write it (key 0600, cert 0644).
 */
export async function loadOrCreateDevCert(
  dir: string,
): Promise<DevCert & { created: boolean; keyPath: string; certPath: string }> {
  const keyPath = join(dir, DEV_KEY_FILE);
  const certPath = join(dir, DEV_CERT_FILE);

  const [key, cert] = await Promise.all([readIfExists(keyPath), readIfExists(certPath)]);
  if (key !== null && cert !== null) return { key, cert, created: false, keyPath, certPath };

  await mkdir(dir, { recursive: true });
  const fresh = generateDevCert();
  await writeAtomic(keyPath, fresh.key, 0o600);
  await writeAtomic(certPath, fresh.cert, 0o644);
  return { ...fresh, created: true, keyPath, certPath };
}

/**
 * The server's certificate for its TLS listeners (tls.port, ws.tls_port): tls.cert and tls.key when
 * both are set, else the development one under `dataDir`/tls (made on first use; `onCreated` is told).
 */
export async function serverCertificate(
  tls: { cert: string; key: string },
  dataDir: string,
  onCreated: (certPath: string) => void,
): Promise<{ key: string; cert: string }> {
  if (tls.cert && tls.key) return { cert: await readFile(tls.cert, "utf8"), key: await readFile(tls.key, "utf8") };
  const dev = await loadOrCreateDevCert(join(dataDir, "tls"));
  if (dev.created) onCreated(dev.certPath);
  return { key: dev.key, cert: dev.cert };
}

/** BoringSSL's SSL_OP_NO_TLSv1_3 (the same bit as OpenSSL's), for Bun's `tls.secureOptions`. */
const SSL_OP_NO_TLSV1_3 = 0x20000000;

/**
 * The TLS port's handshake settings (tls.max_version, tls.groups) as Bun.listen's `tls` options. Bun 1.4.5 takes
 * `secureOptions` and `ecdhCurve` on Bun.listen although its types list only the first (checked: a client then
 * sees TLSv1.2, resp. the X25519 or P-256 key share the setting names).
 */
export function tlsTuning(tls: { maxVersion: "1.3" | "1.2"; groups: string }): { secureOptions?: number; ecdhCurve?: string } {
  const o: { secureOptions?: number; ecdhCurve?: string } = {};
  if (tls.maxVersion === "1.2") o.secureOptions = SSL_OP_NO_TLSV1_3;
  if (tls.groups !== "") o.ecdhCurve = tls.groups;
  return o;
}
