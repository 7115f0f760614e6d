/**
 * Acceptance: the one pipeline every message goes through on its way in,
 * whatever module accepts it (messaging for 1:1, groups for fan-out). It
 * alone owns:
 * - dedup: a resend of the same (sending device, client id) gets the
 *   original answer, from memory (Acceptances) or from the store's record;
 * - durability: the copies are appended with one store Acceptance, whose
 *   record commits with (or after) the last of them (DeliveryQueue.begin);
 * - `sent`: once that record is durable, to the connection that asked;
 * - what must wait for `sent` (receipts), so a sender sees sent, then dlv;
 * - the trace of the acceptance and of its durability;
 * - fan-out of an item to every device of an account.
 * A module decides only who gets a copy and which receipts go out.
 *
 * For a cluster: a copy forwarded to another node is one more piece of the
 * same acceptance (`Send.hold`, then `release` when that node confirms it
 * durable); nothing else changes.
 */
import type { Acceptance, AcceptedRecord, DeliveryQueue } from "../store/queue.ts";
import type { Conn } from "../transport/connection.ts";
import { Acceptances, compactSentLog, RELAYED_SENT, sendSent, type Accepted } from "./acceptances.ts";
import type { Delivery, EnqueueMeta } from "./delivery.ts";
import type { Directory } from "./directory.ts";
import type { Registry } from "./registry.ts";
import type { Trace } from "./trace.ts";

/** Acceptances kept in memory for resends that come soon (src/core/acceptances.ts). */
const DEDUP_MAX = 100_000;

/** A stanza to queue: `q` is filled in per copy. */
export type Stanza = { t: string; q: number; [field: string]: unknown };

/** One copy for a device on another node: the home node gives it its queue id. */
export type ForwardedCopy = [account: string, device: number, kind: EnqueueMeta["kind"], stanza: Stanza];

/**
 * Cluster mode (src/core/cluster/forward.ts): where copies and items for
 * accounts homed on another node go. Null on a single node, where a copy pays
 * one null check.
 */
export interface Forward {
  /** The node `account` is homed on when that is not this node; null when it is this one. */
  remoteHome(account: string): string | null;
  /** One message's copies for accounts homed on `node`; resolves once that node has them durable. */
  copies(node: string, rec: AcceptedRecord, copies: ForwardedCopy[]): Promise<void>;
  /** An item (a receipt, an event) for every device of `account` but `except`, queued on its home `node` (`keep`: Accept.toDevices). */
  toDevices(node: string, account: string, meta: EnqueueMeta, stanza: Stanza, except: number, keep: boolean): void;
}

/** One accepted message on its way to its copies. */
export class Send {
  constructor(
    private delivery: Delivery,
    private queue: DeliveryQueue,
    private acc: Acceptance,
    private meta: Omit<EnqueueMeta, "kind">,
    private fwd: Forward | null = null,
  ) {}

  /** Copies for accounts homed on other nodes, by node: forwarded as one item per node at `release`. */
  private out: Map<string, ForwardedCopy[]> | null = null;

  /** The meta of this message's copies, by kind: one object per kind, not per copy (a fan-out has a thousand). */
  private metas: (EnqueueMeta | undefined)[] = [];

  /** Queues one copy of the message for one device (kind MESSAGE, SYNC or GROUP). */
  copy(account: string, device: number, kind: EnqueueMeta["kind"], stanza: Stanza): void {
    if (this.fwd !== null) {
      const node = this.fwd.remoteHome(account);
      if (node !== null) {
        const out = (this.out ??= new Map());
        const list = out.get(node);
        if (list) list.push([account, device, kind, stanza]);
        else out.set(node, [[account, device, kind, stanza]]);
        return;
      }
    }
    const meta = (this.metas[kind] ??= { ...this.meta, kind });
    this.delivery.enqueue(account, device, meta, stanza, this.acc);
  }

  /** One more piece made durable outside this node's store (a copy forwarded to another node); `release` it once confirmed. */
  hold(): void {
    this.queue.hold(this.acc);
  }

  /**
   * A held piece is durable, or (the hold every Send starts with) every copy is queued. Copies for other nodes go
   * out now, each node's as one more held piece, released when that node has them durable (so `sent` waits for it).
   */
  release(): void {
    if (this.out !== null) {
      const out = this.out;
      this.out = null;
      const m = this.meta;
      const rec: AcceptedRecord = { sender: m.fromAccount, device: m.fromDevice, cid: m.cid, to: m.conv ?? "", seq: m.seq, ts: m.ts };
      for (const [node, copies] of out) {
        this.queue.hold(this.acc);
        void this.fwd!.copies(node, rec, copies).then(() => this.queue.release(this.acc));
      }
    }
    this.queue.release(this.acc);
  }
}

export class Accept {
  private recent = new Acceptances(DEDUP_MAX);
  /** Set by the server in cluster mode (ClusterNode.forward); null on a single node. */
  forward: Forward | null = null;

  constructor(
    private delivery: Delivery,
    private queue: DeliveryQueue,
    private directory: Directory,
    private registry: Registry<Conn>,
    private trace: Trace,
  ) {}

  /**
   * A resend of an id this device sent before: answered with the original
   * `sent` (now, or when it becomes durable) and true. False for a new id.
   * Client ids are unique per sending device across conversations (§4).
   */
  resend(conn: Conn, id: string): boolean {
    const seen = this.recent.getFor(conn, id);
    if (seen !== undefined) {
      if (seen.remaining === 0) sendSent(seen, this.registry, conn);
      else seen.origin = conn; // it goes out when durable, to the connection that asked last
      return true;
    }
    // Not in memory: it may have been accepted before a restart, or long ago (kept for the retention period).
    const stored = this.queue.recall(conn.account, conn.device, id);
    if (stored === null) return false;
    sendSent({ ...stored, remaining: 0, account: conn.account, device: conn.device, id }, this.registry, conn);
    return true;
  }

  /**
   * Accepts a new message from `conn` to `to` (an account or a group) with
   * its sequence number: queue its copies with `copy`, then `release` the
   * Send. `sent` goes out when the record and every copy are durable.
   */
  accept(conn: Conn, id: string, to: string, seq: number, ts: number): Send {
    // One piece: the acceptance record, which the store makes durable with (or after) the last copy.
    const a: Accepted = { to, seq, ts, remaining: 1, account: conn.account, device: conn.device, id, origin: conn };
    this.recent.add(a, conn);
    this.trace.accepted(conn.account, conn.device, id, to, seq, ts); // before the copies are queued: they are matched to it
    // A confirming sender (§6.2) gets `sent` once the copies are durable or delivered; its record is kept only until
    // it confirms that `sent` (lazily: written only if the confirmation is late), not for the whole retention.
    const acc = this.queue.begin(
      { sender: conn.account, device: conn.device, cid: id, to, seq, ts },
      Acceptances.onDurable(a, (a) => {
        this.trace.durable(a.account, a.device, a.id);
        sendSent(a, this.registry);
      }),
      conn.confirms,
    );
    a.acc = acc;
    return new Send(this.delivery, this.queue, acc, { fromAccount: conn.account, fromDevice: conn.device, conv: to, cid: id, seq, ts }, this.forward);
  }

  /**
   * Whether state keyed by `key` (a group id) lives on this node: its shard's home is this node. Always true on a
   * single node. A group is created with an id homed where it is created, and lives there (forward.ts).
   */
  homedHere(key: string): boolean {
    return this.forward === null || this.forward.remoteHome(key) === null;
  }

  /**
   * `ack {sc: n}` from a confirming connection: it holds the first `n` `sent` frames written to it (a cumulative
   * count, §6.2). Their records are released: forgotten in memory, never written if still waiting, deleted if
   * written. False (nothing done) when `n` counts more `sent` frames than were written to this connection.
   */
  confirm(conn: Conn, n: number): boolean {
    if (!conn.confirms) return true; // not a confirming connection: nothing is tracked, nothing to release
    // No log: every `sent` written was confirmed and the sweep gave the log back (Conn.release).
    const log = conn.sentLog;
    if (n > (log === null ? conn.sentHead : log.base + log.items.length)) return false;
    for (let g = conn.sentHead; g < n; g++) {
      const a = log!.items[g - log!.base] as Accepted;
      if ((a as object) === RELAYED_SENT) continue; // its record is on the group's node
      if (a.acc !== undefined) this.queue.confirm(a.acc);
      else this.queue.forget({ sender: a.account, device: a.device, cid: a.id, to: a.to, seq: a.seq, ts: a.ts });
      this.recent.delete(a);
    }
    if (n > conn.sentHead) {
      conn.sentHead = n;
      compactSentLog(conn);
    }
    return true;
  }

  /** Runs `f` now, or once the `sent` of (account, device, id) is out if it is not yet (a write-back hit can be acked before its commit). */
  afterSent(account: string, device: number, id: string, f: () => void): void {
    this.recent.afterSent(account, device, id, f);
  }

  /**
   * Queues one item (a receipt, an event, a notice) to every current device
   * of `account` but `except`. The same stanza object serves every copy.
   * `ids`: the account's current devices when the caller has them (src/core/facts.ts). `keep` false: nothing durable here implies it (a `dlv` of a copy acknowledged before it was written, whose
   * ack no row records), so on its way to another node it needs no outbox row (docs/CLUSTER.md, "The cost of a
   * crossing message"); on this node it is queued as always.
   */
  toDevices(account: string, meta: EnqueueMeta, stanza: Stanza, except = 0, keep = true, ids?: readonly number[]): void {
    if (this.forward !== null) {
      const node = this.forward.remoteHome(account);
      if (node !== null) return this.forward.toDevices(node, account, meta, stanza, except, keep); // its home knows its devices
    }
    // `ids`: the account's devices as the caller resolved them this epoch (src/core/facts.ts), spared a lookup.
    for (const d of ids ?? this.directory.deviceIds(account) ?? []) if (d !== except) this.delivery.enqueue(account, d, meta, stanza, null);
  }

  /** Queues one item (an event, a notice) to one device of `account`. */
  toDevice(account: string, device: number, meta: EnqueueMeta, stanza: Stanza): void {
    this.delivery.enqueue(account, device, meta, stanza, null);
  }
}
