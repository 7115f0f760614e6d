/**
 * The SDK's side of resumption tickets (docs/PROTOCOL.md §4.11): keep the ticket of the last `ready`, and
 * make the `resume` the next connection sends in the same write as its hello. WebCrypto's HMAC, so the
 * browser entry has it too (no node:crypto).
 */
import { resumeTranscript } from "../protocol/auth.ts";
import type { Ready } from "../protocol/stanzas.ts";

export interface Ticket {
  tk: Uint8Array;
  /** The secret; never sent. */
  tks: Uint8Array;
  /** expiry, ms (server time) */
  tke: number;
  /** The server (hello `sid`) it is for: part of the proof. */
  sid: string;
  /** Server time at `ready` and the monotonic clock then: `ts` estimates server time from them, so a step of the wall clock here changes nothing. */
  serverTs: number;
  at: number;
  /** The last `ts` used: each proof's is later (the server takes a device's proofs in increasing ts only). */
  last: number;
}

/** The ticket a `ready` carries, or null. */
export function ticketOf(r: Ready, sid: string): Ticket | null {
  if (r.tk === undefined || r.tks === undefined || r.tke === undefined) return null;
  return { tk: r.tk, tks: r.tks, tke: r.tke, sid, serverTs: r.ts, at: performance.now(), last: 0 };
}

/** The `resume` frame for this ticket, or null when it has (nearly) expired. Uses up one `ts`. */
export async function resumeFrame(t: Ticket, account: string, device: number, rx: boolean): Promise<object | null> {
  const now = t.serverTs + Math.floor(performance.now() - t.at);
  if (now >= t.tke - 1000) return null;
  const ts = Math.max(now, t.last + 1);
  t.last = ts;
  const key = await crypto.subtle.importKey("raw", t.tks as Uint8Array<ArrayBuffer>, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, resumeTranscript(t.sid, account, device, ts) as Uint8Array<ArrayBuffer>));
  return rx ? { t: "resume", u: account, d: device, tk: t.tk, ts, mac } : { t: "resume", u: account, d: device, tk: t.tk, ts, mac, rx: false };
}
