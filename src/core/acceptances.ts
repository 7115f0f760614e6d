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
import { ConnState, SentLog, type Conn } from "../transport/connection.ts";
import { connCore, type ConnCore } from "./facts.ts";

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
  /** The map of its device that holds it, and the rotation (Acceptances.epoch) it was added in: delete() finds it with no lookup by account. */
  bucket?: Map<string, Accepted>;
  epoch?: number;
}

/**
 * Unconfirmed `sent` frames one confirming connection may have outstanding; past it the oldest are no longer
 * tracked (their records stay until queue.dedup_ttl). The SDK confirms once per turn, so a well-behaved client
 * has at most its send window outstanding; this only bounds what a client that never confirms can make us hold.
 */
export const SENT_LOG_MAX = 4096;

/** What Acceptances reads and keeps on a connection: its device, and (in its ConnCore) its young map with that map's epoch. */
export type DeviceCache = Pick<Conn, "account" | "device" | "core">;

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
  if (to.confirms) logSent(to, a);
}

/**
 * A `sent` made on another node (a forwarded `gmsg`'s, relayed in an `x` item) written to a confirming connection
 * here: nothing to release here when it is confirmed (the record is the group's node's), but the client counts it
 * among its `sent` frames, so it takes its place in the log (without it the cumulative `ack {sc}` counted more
 * than this node had written, and was refused bad_field: every SDK group send through a remote group's node).
 */
export const RELAYED_SENT = Object.freeze({ relayed: true });

/** Logs one `sent` written to a confirming connection (§6.2: its cumulative confirmation counts them, in order). */
export function logSent(to: Conn, item: object): void {
  const log = (to.sentLog ??= new SentLog(to.sentHead));
  if (log.base + log.items.length - to.sentHead >= SENT_LOG_MAX) {
    to.sentHead++; // the oldest is no longer tracked: its record stays until queue.dedup_ttl
    compactSentLog(to);
  }
  log.items.push(item);
}

/** Drops the confirmed front of a connection's sent log once it is long (one splice per SENT_LOG_MAX/4 confirmations, not per one). */
export function compactSentLog(conn: Conn): void {
  const log = conn.sentLog!;
  const done = conn.sentHead - log.base;
  if (done < SENT_LOG_MAX / 4 && done * 2 < log.items.length) return;
  log.items.splice(0, done);
  log.base = conn.sentHead;
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

  /** Removes `a` from `ids` (a map of this generation) if it is the held one. */
  deleteIn(ids: Map<string, Accepted>, a: Accepted): void {
    if (this.live !== 0 && ids.get(a.id) === a) (ids.delete(a.id), this.live--);
  }

  /** The map of (account, device), made if absent. Never removed while the generation lives: a reference to it stays valid. */
  bucket(account: string, device: number): Map<string, Accepted> {
    let ids = this.byDevice.get(account, device);
    if (ids === undefined) this.byDevice.set(account, device, (ids = new Map()));
    return ids;
  }

  addIn(ids: Map<string, Accepted>, a: Accepted): void {
    const before = ids.size;
    ids.set(a.id, a);
    this.live += ids.size - before;
    this.size++;
  }
}

export class Acceptances {
  // Keyed (account, device) then id, not by one `${account}\u0000${device}\u0000${id}` string: three lookups
  // per message (resend check, add, afterSent) each flattened and hashed such a rope (src/store/by-device.ts).
  private young = new Generation();
  private old = new Generation();
  /**
   * Rotations so far: the young generation's identity. A connection keeps its own device's map of the young
   * generation (ConnCore.acceptIds) with the epoch it was taken in, so its resend check and its add do no lookup by
   * account (with 1 000 accounts those lookups cost 1.5-2.5x their share at 20, cache misses: BENCHMARKS.md
   * collapse). A number, not the Generation itself, so an idle connection holds at most its device's map of a
   * dropped generation, never the whole one. Nothing else invalidates it: the maps are per process and a
   * generation never removes a device's map; a connection's account and device never change.
   */
  epoch = 0;

  constructor(private max = 100_000) {}

  get(account: string, device: number, id: string): Accepted | undefined {
    return this.young.get(account, device, id) ?? this.old.get(account, device, id);
  }

  /** get() for the connection's own device, its young map reached from the connection. */
  getFor(conn: DeviceCache, id: string): Accepted | undefined {
    const core = conn.core as ConnCore | null;
    const ids = core !== null && core.acceptEpoch === this.epoch ? (core.acceptIds as Map<string, Accepted>) : this.young.live === 0 ? undefined : this.cache(conn);
    return ids?.get(id) ?? this.old.get(conn.account, conn.device, id);
  }

  private cache(conn: DeviceCache): Map<string, Accepted> {
    const ids = this.young.bucket(conn.account, conn.device);
    const core = connCore(conn);
    core.acceptIds = ids;
    core.acceptEpoch = this.epoch;
    return ids;
  }

  /** Adds `a`; `conn` is its sender's connection (a.account and a.device are its own), when there is one. */
  add(a: Accepted, conn?: DeviceCache): void {
    if (this.young.size >= this.max / 2) {
      this.old = this.young;
      this.young = new Generation();
      this.epoch++;
    }
    const core = conn === undefined ? null : (conn.core as ConnCore | null);
    const ids =
      conn === undefined
        ? this.young.bucket(a.account, a.device)
        : core !== null && core.acceptEpoch === this.epoch
          ? (core.acceptIds as Map<string, Accepted>)
          : this.cache(conn);
    this.young.addIn(ids, a);
    a.bucket = ids;
    a.epoch = this.epoch;
  }

  /** Forgets `a` (its sender confirmed its `sent`: no resend can come). A Map delete, no lookup by account. */
  delete(a: Accepted): void {
    if (a.bucket === undefined) return; // never added
    if (a.epoch === this.epoch) this.young.deleteIn(a.bucket, a);
    else if (a.epoch === this.epoch - 1) this.old.deleteIn(a.bucket, a);
    // older: its generation was dropped whole
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
