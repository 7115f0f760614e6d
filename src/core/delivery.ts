/**
 * The one delivery path. Everything a device must not miss (a message, a
 * sync copy, a receipt) is enqueued here: it goes into the device's queue
 * (group-committed), and if the device is online with room in its window it
 * is pushed at once, without waiting for the commit. An item leaves the queue
 * only when its device acknowledges it; whatever is unacknowledged when a
 * connection drops goes out again on the next one, in queue order.
 *
 * Flow control: at most `window` unacknowledged items per connection. When
 * the window is full the connection is marked `behind`, and later items wait
 * in the store until acks make room (refill reads them back in qid order).
 */
import { encodeBody } from "../protocol/codec.ts";
import { ItemKind, type Acceptance, type DeliveryQueue, type QueueItem, type Usage } from "../store/queue.ts";
import { ConnState, type Conn } from "../transport/connection.ts";
import type { Registry } from "./registry.ts";
import type { Counter } from "./metrics.ts";
import type { Trace } from "./trace.ts";

/** Modules name item kinds and read items through core, not the store (modules never import src/store/). */
export { ItemKind, type QueueItem };

/** What the caller says about an item; the queue adds where it goes, its qid and its body. */
export type EnqueueMeta = Pick<QueueItem, "kind" | "fromAccount" | "fromDevice" | "cid" | "seq" | "ts"> & { conv?: string };

export interface DeliveryStats {
  pushed: Counter;
  acked: Counter;
}

export class Delivery {
  /** Cluster mode (cluster/bounds.ts): the usage of a device homed on another node, as its home states it; null on one node. */
  remoteUsage: ((account: string, device: number) => Usage | null) | null = null;
  /** Cluster mode: told of every item queued here, so that a device at its bound is announced to the peers. */
  afterEnqueue: ((account: string, device: number) => void) | null = null;

  constructor(
    private queue: DeliveryQueue,
    private registry: Registry<Conn>,
    private window: number,
    private stats: DeliveryStats,
    private onAcked: (item: QueueItem, conn: Conn) => void,
    /** Delivery traces (src/core/trace.ts); null when tracing is off, so the hot path pays one null check. */
    private trace: Trace | null = null,
  ) {}

  /**
   * Enqueues one item for one device. `stanza` is completed with its `q`
   * and encoded once; the same bytes are pushed and stored. `acc`: the
   * acceptance this item is a copy of (DeliveryQueue.begin), if any.
   */
  enqueue(account: string, device: number, meta: EnqueueMeta, stanza: { t: string; q: number; [field: string]: unknown }, acc: Acceptance | null): number {
    const qid = this.queue.nextQid(account);
    stanza.q = qid;
    const body = encodeBody(stanza);
    const item: QueueItem = {
      qid, account, device, kind: meta.kind, fromAccount: meta.fromAccount, fromDevice: meta.fromDevice,
      conv: meta.conv ?? "", cid: meta.cid, seq: meta.seq, ts: meta.ts, body,
    };
    this.queue.append(item, acc);
    if (this.trace !== null) this.trace.enqueued(item);
    if (this.afterEnqueue !== null) this.afterEnqueue(account, device);
    const conn = this.registry.get(account, device);
    if (conn !== undefined && conn.state === ConnState.READY) {
      if (!conn.behind && conn.inflight < this.window) this.push(conn, item);
      else conn.behind = true;
    }
    return qid;
  }

  private push(conn: Conn, item: QueueItem): void {
    conn.inflight++;
    conn.cursor = item.qid;
    const held = conn.heldSent;
    // The message's own receipt right after its `sent` (one ack from the recipient released both): one frame,
    // the receipt with `sts`, instead of two (hello `sr`, docs/PROTOCOL.md §6.2), encoded straight into the
    // connection's buffer (Conn.sendWithHeldSent). Only a 1:1 receipt names the message's `to` as its `w` (a
    // group's names the group; its fromAccount is the member).
    const rides = held !== null && item.kind === ItemKind.RECEIPT && item.cid === held.id && item.seq === held.seq && item.fromAccount === held.to;
    if (!rides || !conn.sendWithHeldSent(item.body)) conn.sendBody(item.body);
    this.stats.pushed.inc();
    if (this.trace !== null) this.trace.pushed(item);
  }

  /** A session became ready: send what waits for it. */
  start(conn: Conn): void {
    conn.inflight = 0;
    conn.cursor = 0;
    conn.behind = true;
    this.refill(conn);
  }

  /** The device acknowledged some queue ids. Unknown or foreign ids are ignored. */
  ack(conn: Conn, qids: readonly number[]): void {
    // Acked ahead of stanzas the device sent before the ack (inbound pacing held them): the items are released now
    // (no commit for a write-back hit), their receipts after those stanzas, which can change who gets one (§6.7).
    let later: QueueItem[] | null = null;
    for (let i = 0; i < qids.length; i++) {
      const qid = qids[i]!;
      // The queue checks that the item is this device's; ids from an earlier connection are still its to ack.
      const item = this.queue.ack(conn.account, conn.device, qid);
      if (item !== null) {
        if (qid <= conn.cursor) conn.inflight--;
        this.stats.acked.inc();
        if (this.trace !== null) this.trace.acked(item);
        if (conn.ackAhead) (later ??= []).push(item);
        else this.onAcked(item, conn);
      }
    }
    if (later !== null) {
      const items = later;
      conn.later(() => {
        for (let i = 0; i < items.length; i++) this.onAcked(items[i]!, conn);
      });
    }
    if (conn.behind) this.refill(conn);
  }

  /**
   * Retention: deletes items older than `cutoff` and tells each device how
   * many it lost, with a `gap` item of its own (queued and acknowledged like
   * any other, so the signal itself cannot be lost). Returns the expired
   * items so that their senders can be told too.
   */
  expire(cutoff: number, unconfirmedCutoff = cutoff): QueueItem[] {
    const expired = this.queue.expire(cutoff, unconfirmedCutoff);
    const perDevice = new Map<string, { account: string; device: number; n: number }>();
    for (const it of expired) {
      if (this.trace !== null) this.trace.expired(it);
      const conn = this.registry.get(it.account, it.device);
      if (conn !== undefined && it.qid <= conn.cursor && conn.inflight > 0) conn.inflight--; // it will never be acked now
      const key = `${it.account}\u0000${it.device}`;
      const e = perDevice.get(key);
      if (e) e.n++;
      else perDevice.set(key, { account: it.account, device: it.device, n: 1 });
    }
    const ts = Date.now();
    for (const { account, device, n } of perDevice.values()) {
      this.enqueue(account, device, { kind: ItemKind.GAP, fromAccount: account, fromDevice: device, cid: "", seq: 0, ts }, { t: "gap", q: 0, n, ts }, null);
    }
    return expired;
  }

  /** Items and bytes queued for one device (a module's bounds check). */
  usage(account: string, device: number): Usage {
    return (this.remoteUsage !== null ? this.remoteUsage(account, device) : null) ?? this.queue.usage(account, device);
  }

  /** Drops everything queued for a device (it was revoked); returns how many items. */
  dropDevice(account: string, device: number): number {
    return this.queue.dropDevice(account, device);
  }

  /** Pushes what waits in the store, as far as the window and the socket allow; also called on `drain`. */
  refill(conn: Conn): void {
    if (conn.state !== ConnState.READY) return;
    const room = this.window - conn.inflight;
    if (room <= 0) return;
    const items = this.queue.fetch(conn.account, conn.device, conn.cursor, room);
    for (const it of items) {
      // Paced by the socket (Conn.hasRoomFor): the rest goes out on drain; still `behind` until then.
      if (!conn.hasRoomFor(it.body.length)) return;
      this.push(conn, it);
    }
    if (items.length < room) conn.behind = false;
  }
}

