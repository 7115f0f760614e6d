/**
 * Web Push: RFC 8030 delivery, RFC 8291 message encryption (aes128gcm,
 * RFC 8188 framing), RFC 8292 VAPID. Written on node:crypto (ECDH P-256,
 * HKDF-SHA-256, AES-128-GCM, ES256) rather than the `web-push` npm package:
 * it is ~150 lines, checked byte for byte against the RFC 8291 §5 vector,
 * and keeps the request on our own fetch with our timeout and no redirects.
 * Also serves UnifiedPush distributors, which speak the same protocol.
 */
import { createCipheriv, createECDH, createPrivateKey, hkdfSync, randomBytes, type ECDH, type KeyObject } from "node:crypto";
import { b64url, fromB64url, signJwt } from "./jwt.ts";
import { checkEndpoint } from "./ssrf.ts";
import { isAnswer, post, pushServiceOutcome } from "./http.ts";
import type { PushJob, PushOutcome, PushProvider } from "./types.ts";

/** The application server's VAPID key pair: `publicKey` the 65-byte point, `privateKey` the 32-byte scalar, both base64url. */
export interface VapidKeys {
  publicKey: string;
  privateKey: string;
}

export function generateVapidKeys(): VapidKeys {
  const e = createECDH("prime256v1");
  e.generateKeys();
  // getPrivateKey() drops leading zero bytes (21 of 5 000 scalars came out 31 bytes here): pad to the 32 RFC 8292 tools expect.
  const d = e.getPrivateKey();
  return { publicKey: b64url(e.getPublicKey()), privateKey: b64url(Buffer.concat([Buffer.alloc(32 - d.length), d])) };
}

/** A P-256 private KeyObject from a raw scalar and its public point (JWK is the one import that takes raw parts). */
export function p256PrivateKey(priv: Uint8Array, pub: Uint8Array): KeyObject {
  if (pub.length !== 65 || pub[0] !== 4) throw new Error("P-256 public key must be 65 bytes, uncompressed (0x04 || x || y)");
  return createPrivateKey({
    key: { kty: "EC", crv: "P-256", d: b64url(priv), x: b64url(pub.subarray(1, 33)), y: b64url(pub.subarray(33, 65)) },
    format: "jwk",
  });
}

const RECORD_SIZE = 4096;

/**
 * RFC 8291 §3.4: encrypt `plaintext` for a subscription (p256dh = `uaPublic`,
 * auth = `authSecret`) as one aes128gcm record. `salt` and `ephemeral` are for
 * the RFC's test vector only; in use both are fresh per message.
 */
export function encryptAes128gcm(plaintext: Uint8Array, uaPublic: Uint8Array, authSecret: Uint8Array, fixed?: { salt: Uint8Array; ephemeral: ECDH }): Buffer {
  if (uaPublic.length !== 65 || uaPublic[0] !== 4) throw new Error("p256dh must be a 65-byte uncompressed P-256 point");
  if (authSecret.length !== 16) throw new Error("auth secret must be 16 bytes");
  const as = fixed?.ephemeral ?? createECDH("prime256v1");
  if (!fixed) as.generateKeys();
  const asPublic = as.getPublicKey();
  const salt = fixed?.salt ?? randomBytes(16);
  const ecdhSecret = as.computeSecret(uaPublic);
  // IKM = HKDF(auth_secret, ecdh_secret, "WebPush: info" || 0x00 || ua_public || as_public, 32)
  const keyInfo = Buffer.concat([Buffer.from("WebPush: info\0"), uaPublic, asPublic]);
  const ikm = Buffer.from(hkdfSync("sha256", ecdhSecret, authSecret, keyInfo, 32));
  const cek = Buffer.from(hkdfSync("sha256", ikm, salt, Buffer.from("Content-Encoding: aes128gcm\0"), 16));
  const nonce = Buffer.from(hkdfSync("sha256", ikm, salt, Buffer.from("Content-Encoding: nonce\0"), 12));
  if (plaintext.length + 1 + 16 > RECORD_SIZE) throw new Error(`Web Push plaintext too large for one record: ${plaintext.length} bytes`);
  const c = createCipheriv("aes-128-gcm", cek, nonce);
  // 0x02: the last (and only) record's delimiter, RFC 8188 §2; no further padding.
  const ct = Buffer.concat([c.update(plaintext), c.update(Uint8Array.of(2)), c.final(), c.getAuthTag()]);
  const header = Buffer.alloc(21);
  Buffer.from(salt).copy(header, 0);
  header.writeUInt32BE(RECORD_SIZE, 16);
  header[20] = asPublic.length;
  return Buffer.concat([header, asPublic, ct]);
}

/**
 * RFC 8292 §3: `Authorization: vapid t=<JWT>, k=<public key>`. The JWT's aud is
 * the endpoint's origin, exp at most 24 h ahead (12 h here, as browsers'
 * services advise), sub a contact (mailto: or https:) for the push service.
 */
export function vapidAuthorization(endpoint: string, keys: VapidKeys, key: KeyObject, subject: string, now: number): string {
  const aud = new URL(endpoint).origin;
  const jwt = signJwt("ES256", { typ: "JWT" }, { aud, exp: Math.floor(now / 1000) + 12 * 3600, sub: subject }, key);
  return `vapid t=${jwt}, k=${keys.publicKey}`;
}

export interface WebPushConfig {
  vapid: VapidKeys;
  /** VAPID `sub`: "mailto:ops@example.org" or an https URL. */
  subject: string;
  /** TTL header (seconds the service may hold the message). Default 28 days. */
  ttlSeconds?: number;
  /** Topic header: the service keeps only the newest message per topic (RFC 8030 §5.4). Default "sb". */
  topic?: string;
  /** Allow http:// and private addresses. Tests only: a subscription's endpoint is chosen by the client. */
  allowInsecure?: boolean;
  now?: () => number;
}

export class WebPushProvider implements PushProvider {
  readonly name = "webpush" as const;
  private key: KeyObject;
  private now: () => number;

  constructor(private cfg: WebPushConfig) {
    if (!/^(mailto:|https:)/.test(cfg.subject)) throw new Error(`WebPushProvider: subject must be a mailto: or https: URL, got ${JSON.stringify(cfg.subject)}`);
    this.key = p256PrivateKey(fromB64url(cfg.vapid.privateKey), fromB64url(cfg.vapid.publicKey));
    this.now = cfg.now ?? Date.now;
  }

  async send(job: PushJob, signal: AbortSignal): Promise<PushOutcome> {
    const t = job.target;
    if (t.provider !== "webpush") throw new Error(`WebPushProvider got a ${t.provider} job`);
    const check = await checkEndpoint(t.endpoint, this.cfg.allowInsecure === true);
    if (!check.ok) return check.outcome;
    const uaPublic = fromB64url(t.p256dh);
    const auth = fromB64url(t.auth);
    if (uaPublic.length !== 65 || uaPublic[0] !== 4 || auth.length !== 16) return { kind: "invalid-token", reason: "subscription keys malformed", status: 0 };
    const body = encryptAes128gcm(Buffer.from(JSON.stringify(webPushMessage(job))), uaPublic, auth);
    const ring = job.urgency === "ring";
    const headers: Record<string, string> = {
      authorization: vapidAuthorization(t.endpoint, this.cfg.vapid, this.key, this.cfg.subject, this.now()),
      "content-encoding": "aes128gcm",
      "content-type": "application/octet-stream",
      // A ring: TTL 0, delivered now or dropped (RFC 8030 §5.2), and no Topic, so it replaces no pending wake-up.
      ttl: ring ? "0" : String(this.cfg.ttlSeconds ?? 28 * 86400),
      urgency: job.urgency === "silent" ? "normal" : "high",
    };
    if (!ring) headers.topic = this.cfg.topic ?? "sb";
    const a = await post(t.endpoint, headers, body, signal);
    if (!isAnswer(a)) return a;
    return pushServiceOutcome(a, this.now());
  }

  async close(): Promise<void> {}
}

/** The plaintext inside the encrypted body: a wake-up flag and at most a count (a ring: the flag and `ring`). */
export function webPushMessage(job: PushJob): { sb: 1; n?: number; alert?: 1; ring?: 1 } {
  if (job.urgency === "ring") return { sb: 1, ring: 1 };
  const m: { sb: 1; n?: number; alert?: 1 } = { sb: 1 };
  if (job.urgency === "alert") m.alert = 1;
  if (job.count !== undefined) m.n = job.count;
  return m;
}
