/**
 * One TURN allocation (RFC 8656 §2.2): the client's 5-tuple, its relayed UDP
 * socket, the permissions (peer IPs) and channels installed on it, its
 * lifetime, and the caps on what it may relay.
 *
 * Why a sink: Bun's UDP socket takes its handlers when it is bound, and
 * `reload()` does not replace the data handler (found in the lost branch), so
 * the relayed socket's handler calls `sink.target`, set once the allocation
 * owning the socket exists (also for a socket reserved by EVEN-PORT before any
 * allocation holds it).
 */
import type { udp } from "bun";
import { parseIp } from "../../protocol/stun.ts";

export type RelaySocket = udp.Socket<"uint8array">;

export interface PeerSink {
  target: ((data: Uint8Array, port: number, address: string) => void) | null;
}

/** Bytes or packets a second, at most one second's worth saved up. Time in ms is passed in. */
export class Cap {
  private tokens: number;
  private last: number;
  constructor(private readonly rate: number, now: number) {
    this.tokens = rate;
    this.last = now;
  }
  take(n: number, now: number): boolean {
    if (this.rate <= 0) return true; // 0: no cap
    if (now > this.last) {
      this.tokens = Math.min(this.rate, this.tokens + ((now - this.last) * this.rate) / 1000);
      this.last = now;
    }
    if (this.tokens < n) return false;
    this.tokens -= n;
    return true;
  }
}

export const PERMISSION_MS = 300_000; // RFC 8656 §9: 5 minutes
export const CHANNEL_MS = 600_000; // RFC 8656 §12: 10 minutes

export interface Channel {
  number: number;
  address: string;
  port: number;
  expires: number;
}

export class Allocation {
  /** Peer IP (normalised text) -> expiry ms. */
  readonly permissions = new Map<string, number>();
  readonly channels = new Map<number, Channel>();
  /** `address|port` of a peer -> its channel. */
  readonly byPeer = new Map<string, Channel>();
  readonly pps: Cap;
  readonly bps: Cap;
  /** The last Allocate success, resent for a retransmitted request (same transaction id). */
  lastTid = "";
  lastResponse: Uint8Array | null = null;
  relayedIn = 0;
  relayedOut = 0;
  dropped = 0;

  constructor(
    readonly id: number,
    /** `address|port` of the client. */
    readonly client: string,
    readonly clientAddress: string,
    readonly clientPort: number,
    /** The device the credentials named (`account/device`), for quotas and revocation. */
    readonly device: string,
    readonly username: string,
    readonly key: Uint8Array,
    readonly socket: RelaySocket,
    readonly relayedAddress: string,
    /** Unix seconds: the credentials' expiry, beyond which no refresh may go. */
    readonly credentialExpires: number,
    public expires: number,
    caps: { pps: number; bps: number },
    now: number,
  ) {
    this.pps = new Cap(caps.pps, now);
    this.bps = new Cap(caps.bps, now);
  }

  /** A packet of `bytes` may pass the allocation's caps (each direction counts). */
  admit(bytes: number, now: number): boolean {
    if (this.pps.take(1, now) && this.bps.take(bytes, now)) return true;
    this.dropped++;
    return false;
  }

  permit(address: string, now: number): void {
    this.permissions.set(normalIp(address), now + PERMISSION_MS);
  }

  permitted(address: string, now: number): boolean {
    const e = this.permissions.get(normalIp(address));
    return e !== undefined && e > now;
  }

  /** Bind or refresh a channel; false when the number or the peer is bound otherwise (RFC 8656 §11.2). */
  bind(number: number, address: string, port: number, now: number): boolean {
    const peer = `${normalIp(address)}|${port}`;
    const had = this.channels.get(number);
    const other = this.byPeer.get(peer);
    if (had && `${had.address}|${had.port}` !== peer) return false;
    if (other && other.number !== number) return false;
    const ch: Channel = had ?? { number, address: normalIp(address), port, expires: 0 };
    ch.expires = now + CHANNEL_MS;
    this.channels.set(number, ch);
    this.byPeer.set(peer, ch);
    this.permit(address, now);
    return true;
  }

  channelTo(address: string, port: number, now: number): Channel | undefined {
    const ch = this.byPeer.get(`${normalIp(address)}|${port}`);
    return ch && ch.expires > now ? ch : undefined;
  }

  /** Drops expired permissions and channels. */
  sweep(now: number): void {
    for (const [ip, e] of this.permissions) if (e <= now) this.permissions.delete(ip);
    for (const [n, ch] of this.channels) {
      if (ch.expires <= now) {
        this.channels.delete(n);
        this.byPeer.delete(`${ch.address}|${ch.port}`);
      }
    }
  }

  close(): void {
    if (!this.socket.closed) this.socket.close();
  }
}

/** One text form per IP, so `::ffff:127.0.0.1` from the socket and `127.0.0.1` from an attribute match. */
export function normalIp(address: string): string {
  if (address.startsWith("::ffff:") && address.includes(".")) return address.slice(7);
  if (!address.includes(":")) return address;
  try {
    const b = parseIp(address).bytes;
    const g: string[] = [];
    for (let i = 0; i < 16; i += 2) g.push(((b[i]! << 8) | b[i + 1]!).toString(16));
    return g.join(":");
  } catch {
    return address;
  }
}

/** Loopback and unspecified addresses: refused as peers unless relay.allow_loopback (coturn's --allow-loopback-peers). */
export function isLoopback(address: string): boolean {
  const a = normalIp(address);
  return a.startsWith("127.") || a === "0.0.0.0" || a === "0:0:0:0:0:0:0:1" || a === "0:0:0:0:0:0:0:0";
}
