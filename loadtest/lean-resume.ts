/**
 * Reconnects as the SDK makes them (docs/PROTOCOL.md §4.11), for the lean client (lean.ts), when switched on
 * with leanResume (reconnect-storm --tickets on, --tls-sessions on): each device's ticket from its last
 * `ready`, sent as `resume` in the hello's write, and its TLS session from its last connection, offered at the
 * next. Off (the default) every login is a full one, as against a server from before tickets. Counted for the
 * report: resumes that logged in, tickets refused (then `auth`), TLS handshakes that resumed.
 */
import { createHmac } from "node:crypto";
import { resumeTranscript } from "../src/protocol/auth.ts";

export const resumeOpts = { tickets: false, tlsSessions: false };
export const resumeStats = { resumed: 0, refused: 0, tlsResumed: 0 };

interface LeanTicket { tk: Uint8Array; tks: Uint8Array; tke: number; sid: string; serverTs: number; at: number; last: number }
const tickets = new Map<string, LeanTicket>();
const tlsSessions = new Map<string, Uint8Array>();
const idOf = (account: string, device: number) => `${account}\u0000${device}`;

export function leanResume(o: { tickets: boolean; tlsSessions: boolean }): void {
  Object.assign(resumeOpts, o);
}

/** The `resume` for this device's ticket (made as src/client/ticket.ts makes it), or null without a live one. */
export function resumeFrame(account: string, device: number): object | null {
  const t = tickets.get(idOf(account, device));
  if (t === undefined) return null;
  const now = t.serverTs + Math.floor(performance.now() - t.at);
  if (now >= t.tke - 1000) return null;
  const ts = (t.last = Math.max(now, t.last + 1));
  const mac = new Uint8Array(createHmac("sha256", t.tks).update(resumeTranscript(t.sid, account, device, ts)).digest());
  return { t: "resume", u: account, d: device, tk: t.tk, ts, mac };
}

/** At `ready`: keeps its ticket (server id `sid` from the hello) and the connection's TLS session. */
export function keepResume(account: string, device: number, ready: Record<string, any>, sid: string, socket: unknown): void {
  const id = idOf(account, device);
  if (ready.tk !== undefined) tickets.set(id, { tk: ready.tk, tks: ready.tks, tke: ready.tke, sid, serverTs: ready.ts, at: performance.now(), last: 0 });
  if (resumeOpts.tlsSessions && socket !== null && typeof socket === "object" && "getSession" in socket) {
    const tls = socket as { getSession(): Uint8Array | undefined; isSessionReused(): boolean };
    if (tls.isSessionReused()) resumeStats.tlsResumed++;
    const sess = tls.getSession();
    if (sess) tlsSessions.set(id, sess);
  }
}

export function dropTicket(account: string, device: number): void {
  tickets.delete(idOf(account, device));
}

/** The TLS session to offer at the next connection of this device, or null. */
export function tlsOffer(account: string, device: number, tls: boolean): Uint8Array | null {
  return tls && resumeOpts.tlsSessions ? (tlsSessions.get(idOf(account, device)) ?? null) : null;
}
