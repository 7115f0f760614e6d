/**
 * The relay's side of the long-term credential mechanism (RFC 8489 §9.2)
 * with TURN REST usernames: stateless nonces, and the key of a request found
 * by recomputing the password from the username with each active secret.
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { checkIntegrity, longTermKey, type StunMessage } from "../../protocol/stun.ts";
import { parseTurnUsername, turnPassword } from "../../protocol/turn-rest.ts";

/** A nonce lives this long; then the client gets 438 Stale Nonce and retries with the new one. */
export const NONCE_MS = 600_000;

export class Nonces {
  private readonly key = randomBytes(32);

  /** `<ms hex>.<mac>`: the relay keeps no table of nonces; it checks its own MAC and the age. */
  issue(now: number): string {
    const t = Math.floor(now).toString(16);
    return `${t}.${this.mac(t)}`;
  }

  /** "ok", "stale" (ours, too old), or "bad" (not ours). */
  check(nonce: string, now: number): "ok" | "stale" | "bad" {
    const dot = nonce.indexOf(".");
    if (dot <= 0) return "bad";
    const t = nonce.slice(0, dot);
    const want = Buffer.from(this.mac(t));
    const got = Buffer.from(nonce.slice(dot + 1));
    if (want.length !== got.length || !timingSafeEqual(want, got)) return "bad";
    return now - parseInt(t, 16) > NONCE_MS ? "stale" : "ok";
  }

  private mac(t: string): string {
    return createHmac("sha256", this.key).update(t).digest("base64url").slice(0, 16);
  }
}

export type AuthResult =
  | { ok: true; username: string; device: string; expires: number; key: Uint8Array }
  | { ok: false; reason: "malformed" | "expired" | "wrong" };

/** Checks a request's TURN REST username and MESSAGE-INTEGRITY against every active secret. */
export function authenticate(m: StunMessage, username: string, realm: string, secrets: readonly string[], nowSec: number): AuthResult {
  const u = parseTurnUsername(username);
  if (!u) return { ok: false, reason: "malformed" };
  if (u.expires <= nowSec) return { ok: false, reason: "expired" };
  for (const s of secrets) {
    const key = longTermKey(username, realm, turnPassword(s, username));
    if (checkIntegrity(m, key)) return { ok: true, username, device: u.device, expires: u.expires, key };
  }
  return { ok: false, reason: "wrong" };
}

/**
 * The control message by which the server tells relays that a device is
 * revoked: a JSON body signed with HMAC-SHA256 under a calls secret, within a
 * minute of its `ts` (so a captured one cannot be replayed later).
 */
export interface RevokeMessage {
  device: string;
  ts: number;
}

export const CONTROL_SIGNATURE_HEADER = "x-switchboard-signature";

export function signControl(secret: string, body: string): string {
  return createHmac("sha256", secret).update(body).digest("hex");
}

export function verifyControl(secrets: readonly string[], body: string, signature: string, nowMs: number): RevokeMessage | null {
  const sig = Buffer.from(signature, "utf8");
  const ok = secrets.some((s) => {
    const want = Buffer.from(signControl(s, body), "utf8");
    return want.length === sig.length && timingSafeEqual(want, sig);
  });
  if (!ok) return null;
  let m: unknown;
  try {
    m = JSON.parse(body);
  } catch {
    return null;
  }
  const r = m as Partial<RevokeMessage>;
  if (typeof r?.device !== "string" || typeof r.ts !== "number" || Math.abs(nowMs - r.ts) > 60_000) return null;
  return { device: r.device, ts: r.ts };
}
