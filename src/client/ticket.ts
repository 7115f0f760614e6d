/**
 * The SDK's side of resumption tickets (docs/PROTOCOL.md §4.11): keep the ticket of the last `ready`, and
 * make the `resume` the next connection sends in the same write as its hello. WebCrypto's HMAC, so the
 * browser entry has it too (no node:crypto).
 */
import { resumeTranscript, TICKET_BYTES } from "../protocol/auth.ts";
import type { Ready } from "../protocol/stanzas.ts";
import type { StateStorage } from "./storage.ts";

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

/** The ticket a `ready` carries, or null. `prev`: the ticket before it, whose newest ts the next proof must pass. */
export function ticketOf(r: Ready, sid: string, prev: Ticket | null): Ticket | null {
  if (r.tk === undefined || r.tks === undefined || r.tke === undefined) return null;
  // The proof just accepted may have had a ts ahead of the server's clock (our estimate ran fast): the next
  // one, estimated from this ready's ts, must still be later than it.
  return { tk: r.tk, tks: r.tks, tke: r.tke, sid, serverTs: r.ts, at: performance.now(), last: prev?.last ?? 0 };
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

/**
 * Where a ticket outlives the process (ClientOptions.ticketSlot): one record, replaced atomically. The CLI
 * keeps it in a file next to the key file (`KEY.ticket`, mode 0600, storage-file.ts fileSlot); a page in a
 * record of its StateStorage (ticketSlot below). The secret in it logs the device in as well as its key does.
 */
export interface TicketSlot {
  load(): Promise<Uint8Array | null>;
  save(bytes: Uint8Array): Promise<void>;
  remove(): Promise<void>;
}

/** A TicketSlot in one record of a StateStorage (IndexedDB in a browser, files elsewhere), e.g. `ticketSlot(indexedDbStorage(), "me.ticket")`. */
export function ticketSlot(storage: StateStorage, key: string): TicketSlot {
  return { load: () => storage.load(key), save: (b) => storage.save(key, b), remove: () => storage.remove(key) };
}

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
function unhex(s: unknown, bytes: number): Uint8Array | null {
  if (typeof s !== "string" || !new RegExp(`^[0-9a-f]{${bytes * 2}}$`).test(s)) return null;
  return Uint8Array.from(s.match(/../g)!, (h) => parseInt(h, 16));
}

/**
 * The stored form (JSON, version 1). The monotonic clock does not survive the process, so what is kept of the
 * clock is the offset of the server's clock from this device's wall clock, as estimated now; after a restart
 * the estimate of server time is the wall clock plus that offset. A step of the wall clock between the two
 * processes moves it by as much: past ±10 s the server refuses the proof (ticket_refused) and the SDK signs
 * with the device key on the same connection. `last` (the newest ts used) is kept too: the server takes a
 * device's proofs in increasing ts only, and a new process's estimate may come out just below it.
 * `server` (where it was got: host:port or URL) and the device: a ticket is only offered to where it came from.
 */
export function encodeTicket(t: Ticket, account: string, device: number, server: string): Uint8Array {
  const off = t.serverTs + Math.floor(performance.now() - t.at) - Date.now();
  const rec = { v: 1, u: account, d: device, server, sid: t.sid, tk: hex(t.tk), tks: hex(t.tks), tke: t.tke, off, last: t.last };
  return new TextEncoder().encode(JSON.stringify(rec));
}

/** The stored ticket for this device and server, or null when it is for another, unreadable or damaged (then the login signs). */
export function decodeTicket(bytes: Uint8Array, account: string, device: number, server: string): Ticket | null {
  let r: Record<string, unknown>;
  try {
    r = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    return null;
  }
  if (r === null || typeof r !== "object" || r.v !== 1 || r.u !== account || r.d !== device || r.server !== server || typeof r.sid !== "string") return null;
  const tk = unhex(r.tk, TICKET_BYTES);
  const tks = unhex(r.tks, 32);
  const ok = (n: unknown): n is number => typeof n === "number" && Number.isSafeInteger(n);
  if (tk === null || tks === null || !ok(r.tke) || !ok(r.off) || !ok(r.last)) return null;
  return { tk, tks, tke: r.tke, sid: r.sid, serverTs: Date.now() + r.off, at: performance.now(), last: r.last };
}
