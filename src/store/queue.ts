/**
 * Per-device delivery queues: everything the server must not lose on its way
 * to a device (messages, sync copies, receipts) waits here from acceptance
 * until that device acknowledges it. A relay, not an archive: a row lives
 * only between "sent" and "delivered".
 */

export const ItemKind = {
  /** A message to one of the recipient's devices: its ack yields a "delivered" receipt. */
  MESSAGE: 0,
  /** A copy of a message to one of the sender's own other devices. */
  SYNC: 1,
  /** A receipt (delivered, read or expired) to one device. */
  RECEIPT: 2,
  /** A notice that items for this device expired unread. Exempt from expiry itself. */
  GAP: 3,
  /** A notice (group membership change, device linked or revoked, keys running low): queued so that it cannot be lost. */
  EVENT: 4,
  /** A group message to one member device: its ack yields a per-device `dlv` receipt to the sender. */
  GROUP: 5,
} as const;
export type ItemKind = (typeof ItemKind)[keyof typeof ItemKind];

export interface QueueItem {
  /** Unique within the shard and increasing in acceptance order: the device's drain order. */
  qid: number;
  account: string;
  device: number;
  kind: ItemKind;
  /** Who sent the message (for receipts of MESSAGE items). */
  fromAccount: string;
  fromDevice: number;
  /** Client message id ("" for receipts). */
  cid: string;
  seq: number;
  ts: number;
  /** The complete stanza body, `q` included, exactly as it goes on the wire. */
  body: Uint8Array;
}

/** What a resend of the same (sending device, client id) must get back: the original acceptance. */
export interface AcceptedRecord {
  sender: string;
  device: number;
  cid: string;
  to: string;
  seq: number;
  ts: number;
}

/** Items and bytes queued for one device (committed or buffered). */
export interface Usage {
  n: number;
  bytes: number;
}

/** One shard of the queue store, for the depth and age gauges. */
export interface ShardStat {
  /** Items queued (buffered or committed, not yet acknowledged). */
  depth: number;
  /** `ts` of the oldest item, or null when the shard is empty. */
  oldestTs: number | null;
}

/** Called once when an item can no longer be lost: committed, or acknowledged before its commit. */
export type OnDurable = () => void;

export interface DeliveryQueue {
  /** The next queue id for an account's shard; ids are never reused, also across restarts. */
  nextQid(account: string): number;
  /** Buffers an item for the next group commit. `onDurable` fires after that commit (or at its ack). */
  append(item: QueueItem, onDurable: OnDurable | null): void;
  /**
   * The device acknowledged `qid`. Returns the item (for receipts) or null if
   * it is not queued for that device (already acked, or not theirs).
   */
  ack(account: string, device: number, qid: number): QueueItem | null;
  /** Up to `limit` items for a device with qid > `after`, in qid order, committed or not. */
  fetch(account: string, device: number, after: number, limit: number): QueueItem[];
  /** Items queued for one device (for the health of a backlog; not on the hot path). */
  depth(account: string, device: number): number;
  /** Items and bytes queued for one device, kept in memory: cheap enough for every send (bounds). */
  usage(account: string, device: number): Usage;
  /**
   * Records an acceptance for deduplication, in the sender's shard, in the
   * same group commit as the items; `onDurable` fires once it is committed.
   */
  remember(rec: AcceptedRecord, onDurable: OnDurable | null): void;
  /** The acceptance of (sender, device, cid) if it is still remembered (buffered or committed). */
  recall(sender: string, device: number, cid: string): AcceptedRecord | null;
  /**
   * Deletes items older than `cutoff` (ms) and acceptances older than it, and
   * returns the expired items (bodies included) so their devices and senders
   * can be told. Expiry is never silent.
   */
  expire(cutoff: number): QueueItem[];
  /** Drops everything queued for a device (it was revoked). */
  dropDevice(account: string, device: number): number;
  /**
   * Depth and oldest item per shard (a backend without shards answers with
   * one), cheap enough for every metrics scrape: no scan of the items.
   */
  shardStats(): ShardStat[];
  /** Commits everything buffered now. */
  flush(): void;
  close(): void;
}
