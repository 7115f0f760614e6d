/**
 * Recent acceptances of sends, for the acceptance service (src/core/accept.ts):
 * what a resend of the same (sending device, client id) must get back, and
 * whether it is durable yet. Older acceptances are recalled from the queue store,
 * which keeps them for the whole retention period, across restarts; this
 * is the in-memory front for the common case, a resend after a reconnect.
 *
 * Two generations instead of one map with oldest-first eviction: deleting
 * a Map's first key over and over leaves tombstones that every later
 * `keys().next()` walks (measured 23 µs per message at 100 000 entries).
 * When the young map is full it becomes the old one and the old one is
 * dropped whole: O(1), and at least max/2 recent acceptances remain.
 */

import type { Registry } from "./registry.ts";
import type { Acceptance } from "../store/queue.ts";
import { ByDevice } from "../store/by-device.ts";
import { ConnState, type Conn } from "../transport/connection.ts";

export interface Accepted {
  /** The recipient account or the group. */
  to: string;
  seq: number;
  ts: number;
  /**
   * 1 until the acceptance record is durable, then 0 and `sent` goes out. One piece is enough: the store
   * writes the record with or after the last of the copies (DeliveryQueue.begin), never before one.
   */
  remaining: number;
  account: string;
  device: number;
  id: string;
  /** Work that must wait for `sent` (receipts), so the sender always sees sent, then delivered. */
  after?: (() => void)[];
  /**
   * The connection that sent it, until `sent` is out: the answer goes there, so a non-receiving
   * session (§4.3) gets its own `sent`. Cleared once used, so no closed connection is held.
   */
  origin?: Conn;
  /** The store's acceptance, confirmed when the sender confirms this `sent` (§6.2); absent for a record recalled from the store. */
  acc?: Acceptance;
}

/**
 * Unconfirmed `sent` frames one confirming connection may have outstanding; past it the oldest are no longer
 * tracked (their records stay until queue.dedup_ttl). The SDK confirms once per turn, so a well-behaved client
 * has at most its send window outstanding; this only bounds what a client that never confirms can make us hold.
 */
export const SENT_LOG_MAX = 4096;

/**
 * Sends `sent` for an acceptance: to `conn` when given (a resend answered from dedup goes to
 * the connection that resent), else to the originating connection while it is open, else to
 * the device's receiving session (the sender reconnected: it resends and is answered anyway).
 */
export function sendSent(a: Accepted, registry: Registry<Conn>, conn?: Conn): void {
  const origin = a.origin;
  a.origin = undefined;
  const to = conn ?? (origin !== undefined && origin.state !== ConnState.CLOSED ? origin : registry.get(a.account, a.device));
  if (to === undefined) return;
  to.sendSent({ t: "sent", id: a.id, to: a.to, seq: a.seq, ts: a.ts });
  if (to.sentLog !== null) {
    // Every `sent` this connection is written, in order: its cumulative confirmation counts them (§6.2).
    const log = to.sentLog as Accepted[];
    if (to.sentBase + log.length - to.sentHead >= SENT_LOG_MAX) {
      to.sentHead++; // the oldest is no longer tracked: its record stays until queue.dedup_ttl
      compactSentLog(to);
    }
    log.push(a);
  }
}

/** Drops the confirmed front of a connection's sent log once it is long (one splice per SENT_LOG_MAX/4 confirmations, not per one). */
export function compactSentLog(conn: Conn): void {
  const done = conn.sentHead - conn.sentBase;
  if (done < SENT_LOG_MAX / 4 && done * 2 < conn.sentLog!.length) return;
  conn.sentLog!.splice(0, done);
  conn.sentBase = conn.sentHead;
}

/** One generation: per (account, device), that device's acceptances by client id. */
class Generation {
  readonly byDevice = new ByDevice<Map<string, Accepted>>();
  /** Acceptances added (the rotation's measure). */
  size = 0;
  /** Acceptances still held: with confirming senders (§6.2) the old generation empties soon after a rotation. */
  live = 0;

  get(account: string, device: number, id: string): Accepted | undefined {
    // An empty generation is not asked: every new id missed in both, two lookups by account each (per message
    // twice: the resend check and afterSent), which cost more the more accounts the maps hold (BENCHMARKS.md collapse).
    return this.live === 0 ? undefined : this.byDevice.get(account, device)?.get(id);
  }

  delete(account: string, device: number, id: string, a: Accepted): void {
    if (this.live === 0) return;
    const ids = this.byDevice.get(account, device);
    if (ids !== undefined && ids.get(id) === a) (ids.delete(id), this.live--);
  }

  add(account: string, device: number, id: string, a: Accepted): void {
    let ids = this.byDevice.get(account, device);
    if (ids === undefined) this.byDevice.set(account, device, (ids = new Map()));
    const before = ids.size;
    ids.set(id, a);
    this.live += ids.size - before;
    this.size++;
  }
}

export class Acceptances {
  // Keyed (account, device) then id, not by one `${account}\u0000${device}\u0000${id}` string: three lookups
  // per message (resend check, add, afterSent) each flattened and hashed such a rope (src/store/by-device.ts).
  private young = new Generation();
  private old = new Generation();

  constructor(private max = 100_000) {}

  get(account: string, device: number, id: string): Accepted | undefined {
    return this.young.get(account, device, id) ?? this.old.get(account, device, id);
  }

  add(a: Accepted): void {
    if (this.young.size >= this.max / 2) {
      this.old = this.young;
      this.young = new Generation();
    }
    this.young.add(a.account, a.device, a.id, a);
  }

  /** Forgets `a` (its sender confirmed its `sent`: no resend can come). A Map delete, no eviction walk. */
  delete(a: Accepted): void {
    this.young.delete(a.account, a.device, a.id, a);
    this.old.delete(a.account, a.device, a.id, a);
  }

  /** The callback each durable piece calls; the last one sends `sent` and releases what waited for it. */
  static onDurable(a: Accepted, sent: (a: Accepted) => void): () => void {
    return () => {
      if (--a.remaining !== 0) return;
      sent(a);
      if (a.after) for (const f of a.after.splice(0)) f();
    };
  }

  /** Runs `f` now, or once `sent` is out if that acceptance is not durable yet (a write-back hit can be acked before its commit). */
  afterSent(account: string, device: number, id: string, f: () => void): void {
    const a = this.get(account, device, id);
    if (a !== undefined && a.remaining > 0) (a.after ??= []).push(f);
    else f();
  }
}
