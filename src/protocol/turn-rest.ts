/**
 * TURN REST credentials (draft-uberti-behave-turn-rest, what coturn's
 * `use-auth-secret` checks): the username is `expiry:device` (expiry in Unix
 * seconds), the password base64(HMAC-SHA1(secret, username)). Nothing is
 * stored anywhere: the relay, ours or coturn, recomputes the password from the
 * username and the shared secret, so the chat server and the relays need only
 * the secret in common.
 *
 * Rotation: the operator configures two secrets, the first issues, both
 * verify; after the longest TTL has passed the old one can be dropped.
 * No I/O.
 */
import { createHmac } from "node:crypto";

export interface TurnCredentials {
  username: string;
  password: string;
  /** Unix seconds after which the relay refuses the credentials. */
  expires: number;
}

/** `device` names the device the relay ties the allocation to (`account/device`); it must not contain ':'. */
export function issueTurnCredentials(secret: string, device: string, nowSec: number, ttlSec: number): TurnCredentials {
  if (!secret) throw new Error("issueTurnCredentials: empty secret; set calls.secret");
  if (device.includes(":")) throw new Error(`issueTurnCredentials: device id ${JSON.stringify(device)} must not contain ':'`);
  const expires = Math.floor(nowSec) + Math.max(1, Math.floor(ttlSec));
  const username = `${expires}:${device}`;
  return { username, password: turnPassword(secret, username), expires };
}

export function turnPassword(secret: string, username: string): string {
  return createHmac("sha1", secret).update(username).digest("base64");
}

/** The expiry and device of a TURN REST username, or null when it has not that shape. */
export function parseTurnUsername(username: string): { expires: number; device: string } | null {
  const i = username.indexOf(":");
  if (i <= 0) return null;
  const t = username.slice(0, i);
  if (!/^\d{1,12}$/.test(t)) return null;
  const device = username.slice(i + 1);
  if (!device) return null;
  return { expires: Number(t), device };
}

/** Comma-separated setting (`calls.secret = "new,old"`) to the list of active secrets, issuing one first. */
export function parseSecrets(setting: string): string[] {
  return setting
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .slice(0, 2);
}
