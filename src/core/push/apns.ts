/**
 * APNs over HTTP/2 with token-based authentication (Apple, "Sending
 * notification requests to APNs"): one multiplexed session per provider, a
 * provider JWT (ES256; header kid, claims iss + iat) reused for 50 minutes
 * because Apple refuses tokens older than an hour and throttles ones renewed
 * more often than every 20 minutes (TooManyProviderTokenUpdates).
 */
import http2 from "node:http2";
import { createHash, type KeyObject } from "node:crypto";
import { privateKeyFromPem, signJwt } from "./jwt.ts";
import { commonOutcome, errorText, parseJson } from "./http.ts";
import type { PushJob, PushOutcome, PushProvider } from "./types.ts";

export interface ApnsConfig {
  /** The 10-character Team ID: the JWT's `iss`. */
  teamId: string;
  /** The signing key's Key ID: the JWT header's `kid`. */
  keyId: string;
  /** Contents of the AuthKey_<kid>.p8 file (PKCS#8 PEM, P-256). */
  privateKey: string;
  /** The app's bundle id (`apns-topic`); VoIP pushes go to `<topic>.voip`. */
  topic: string;
  /** Default https://api.push.apple.com; https://api.sandbox.push.apple.com for development builds. */
  baseUrl?: string;
  /** Extra trusted CA (PEM), for a local server in tests. */
  ca?: string;
  /** `apns-expiration` = now + this. Default 30 days (Signal's choice): a wake-up is worth delivering late. */
  ttlSeconds?: number;
  /** `apns-collapse-id`: one pending wake-up per device, whatever number were sent. Default "sb". */
  collapseId?: string;
  now?: () => number;
}

const TOKEN_REUSE_MS = 50 * 60_000;
/** Apple's device tokens are hex (64 chars today); checking keeps anything else out of the :path. */
const TOKEN_RE = /^[0-9a-fA-F]{16,200}$/;
/** 400 reasons that mean this token will never work (Signal treats the same set as unregistered). */
const INVALID_400 = new Set(["BadDeviceToken", "ExpiredToken", "Unregistered"]);

export class ApnsProvider implements PushProvider {
  readonly name = "apns" as const;
  private key: KeyObject;
  private session: http2.ClientHttp2Session | null = null;
  /** Sessions whose TLS + SETTINGS exchange finished (Bun's `session.connecting` stays false throughout, so we track it). */
  private connected = new WeakSet<http2.ClientHttp2Session>();
  private jwt: { token: string; at: number } | null = null;
  private now: () => number;
  private base: string;

  constructor(private cfg: ApnsConfig) {
    if (!cfg.teamId || !cfg.keyId || !cfg.topic) throw new Error("ApnsProvider: teamId, keyId and topic are required");
    this.key = privateKeyFromPem(cfg.privateKey, "ApnsProvider privateKey");
    this.now = cfg.now ?? Date.now;
    this.base = cfg.baseUrl ?? "https://api.push.apple.com";
  }

  /** The provider token, re-signed when older than 50 minutes or after APNs called it expired. */
  private bearer(): string {
    const now = this.now();
    if (this.jwt === null || now - this.jwt.at >= TOKEN_REUSE_MS) {
      const token = signJwt("ES256", { kid: this.cfg.keyId }, { iss: this.cfg.teamId, iat: Math.floor(now / 1000) }, this.key);
      this.jwt = { token, at: now };
    }
    return this.jwt.token;
  }

  private connect(): http2.ClientHttp2Session {
    if (this.session && !this.session.closed && !this.session.destroyed) return this.session;
    const s = http2.connect(this.base, this.cfg.ca ? { ca: this.cfg.ca } : {});
    // A session error fails its open streams (each resolves as a retry); the next send reconnects.
    s.on("error", () => {});
    s.on("connect", () => this.connected.add(s));
    s.on("close", () => {
      if (this.session === s) this.session = null;
    });
    s.on("goaway", () => {
      if (this.session === s) this.session = null;
    });
    this.session = s;
    return s;
  }

  send(job: PushJob, signal: AbortSignal): Promise<PushOutcome> {
    const t = job.target;
    if (t.provider !== "apns") throw new Error(`ApnsProvider got a ${t.provider} job`);
    if (!TOKEN_RE.test(t.token)) return Promise.resolve({ kind: "invalid-token", reason: "BadDeviceToken (not hex)", status: 0 });
    if (t.voip && job.urgency !== "ring") return Promise.resolve({ kind: "permanent", reason: "a VoIP token takes rings only" }); // pushJob refuses it too
    const ring = job.urgency === "ring";
    const type = t.voip ? "voip" : job.urgency === "silent" ? "background" : "alert";
    const headers: http2.OutgoingHttpHeaders = {
      ":method": "POST",
      ":path": `/3/device/${t.token}`,
      authorization: `bearer ${this.bearer()}`,
      "apns-topic": t.voip ? `${this.cfg.topic}.voip` : this.cfg.topic,
      "apns-push-type": type,
      // Apple requires 5 for background pushes; 10 wakes the device at once.
      "apns-priority": type === "background" ? "5" : "10",
      // A ring is now or never (0: APNs tries once and stores nothing); a wake-up is worth delivering late.
      "apns-expiration": ring ? "0" : String(Math.floor(this.now() / 1000) + (this.cfg.ttlSeconds ?? 30 * 86400)),
      // The stage's idempotency key as Apple's request id (a UUID): the same on every attempt, also after a crash.
      "apns-id": apnsId(job.id),
      "content-type": "application/json",
    };
    // One pending wake-up per device; a ring must not replace it (nor be replaced by it).
    if (!ring) headers["apns-collapse-id"] = this.cfg.collapseId ?? "sb";
    const body = JSON.stringify(apnsPayload(job, type));
    return new Promise<PushOutcome>((resolve) => {
      let done = false;
      const finish = (o: PushOutcome) => {
        if (done) return;
        done = true;
        signal.removeEventListener("abort", onAbort);
        resolve(o);
      };
      let session: http2.ClientHttp2Session;
      let req: http2.ClientHttp2Stream;
      const onAbort = () => {
        // A session still connecting when the timeout fires is a gateway that hangs: drop it, so the next send dials afresh.
        if (!this.connected.has(session)) {
          session.destroy();
          if (this.session === session) this.session = null;
        } else req.close(http2.constants.NGHTTP2_CANCEL);
        finish({ kind: "retry", reason: "timeout", afterMs: null });
      };
      try {
        session = this.connect();
        req = session.request(headers);
      } catch (e) {
        this.session = null;
        return finish({ kind: "retry", reason: `network: ${errorText(e)}`, afterMs: null });
      }
      if (signal.aborted) return onAbort();
      signal.addEventListener("abort", onAbort);
      let status = 0;
      let retryAfter: string | null = null;
      let text = "";
      req.setEncoding("utf8");
      req.on("response", (h) => {
        status = Number(h[":status"]);
        const ra = h["retry-after"];
        retryAfter = typeof ra === "string" ? ra : null;
      });
      req.on("data", (c: string) => {
        if (text.length < 64 * 1024) text += c;
      });
      req.on("end", () => finish(status ? this.classify(status, text, retryAfter) : { kind: "retry", reason: "no response", afterMs: null }));
      req.on("error", (e) => finish({ kind: "retry", reason: `network: ${errorText(e)}`, afterMs: null }));
      req.on("close", () => finish({ kind: "retry", reason: "stream closed", afterMs: null }));
      req.end(body);
    });
  }

  /** Apple's table of status codes and `reason` strings. */
  private classify(status: number, text: string, retryAfter: string | null): PushOutcome {
    const reason = String((parseJson(text) as { reason?: unknown } | null)?.reason ?? `HTTP ${status}`);
    const common = commonOutcome(status, retryAfter, this.now(), reason);
    if (common) return common;
    if (status === 410 || (status === 400 && INVALID_400.has(reason))) return { kind: "invalid-token", reason, status };
    if (status === 403 && reason === "ExpiredProviderToken") {
      this.jwt = null; // re-sign, then try again at once
      return { kind: "retry", reason, afterMs: 0, status };
    }
    // DeviceTokenNotForTopic, InvalidProviderToken, BadTopic...: our configuration is wrong, not the token, so keep it.
    return { kind: "permanent", reason, status };
  }

  async close(): Promise<void> {
    const s = this.session;
    this.session = null;
    if (!s || s.destroyed) return;
    if (!this.connected.has(s)) return void s.destroy(); // nothing in flight worth a graceful GOAWAY
    // Graceful close lets in-flight streams finish, but a peer that stopped answering must not hold close() forever.
    await new Promise<void>((r) => {
      const t = setTimeout(() => (s.destroy(), r()), 2000);
      s.close(() => (clearTimeout(t), r()));
    });
  }
}

/** A job key as a UUID (apns-id must be one): the first 16 bytes of its SHA-256, version and variant bits set (v8). */
export function apnsId(key: string): string {
  const b = createHash("sha256").update(key).digest().subarray(0, 16);
  b[6] = (b[6]! & 0x0f) | 0x80;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = b.toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * The whole body: `aps` and nothing from the message. Silent: content-available
 * only (Apple drops a background push that has an alert). VoIP: empty `aps`. Alert: a fixed
 * localizable key the app's bundle turns into "New message" (a ring to a device
 * with no VoIP token: "Incoming call"), mutable-content so the Notification
 * Service Extension can fetch and decrypt on the device.
 */
export function apnsPayload(job: PushJob, type: "background" | "alert" | "voip"): { aps: Record<string, unknown> } {
  if (type === "background") return { aps: { "content-available": 1 } };
  // PushKit hands the payload to the app, which must report a call to CallKit: there is nothing to display.
  if (type === "voip") return { aps: {} };
  if (job.urgency === "ring") return { aps: { alert: { "loc-key": "SB_INCOMING_CALL" }, "mutable-content": 1, sound: "default" } };
  const aps: Record<string, unknown> = { alert: { "loc-key": "SB_NEW_MESSAGE" }, "mutable-content": 1, sound: "default" };
  if (job.count !== undefined) aps.badge = job.count;
  return { aps };
}
