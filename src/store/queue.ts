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
  /** The conversation a message copy belongs to: the message's `to` (an account or a group id); "" for other kinds. */
  conv: string;
  /** Client message id ("" for receipts). */
  cid: string;
  seq: number;
  ts: number;
  /** The complete stanza body, `q` included, exactly as it goes on the wire. */
  body: Uint8Array;
  /** Set on the item `ack` returns when it was acknowledged before it was written (a write-back hit): no row records the ack. */
  unwritten?: true;
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

/**
 * An acceptance in the making: the dedup record of one message and the
 * copies it vouches for. The record becomes durable only together with, or
 * after, the last of those copies, never before one of them: a record that
 * survives a crash (and answers a resend with `sent`) always has every copy
 * behind it. See DeliveryQueue.begin.
 */
export interface Acceptance {
  readonly rec: AcceptedRecord;
}

export interface DeliveryQueue {
  /** The next queue id for an account's shard; ids are never reused, also across restarts. */
  nextQid(account: string): number;
  /**
   * Buffers an item for the next group commit. With an acceptance, the item
   * is one of the copies it vouches for (begin).
   */
  append(item: QueueItem, acc: Acceptance | null): void;
  /**
   * The device acknowledged `qid`. Returns the item (for receipts) or null if
   * it is not queued for that device (already acked, or not theirs).
   */
  ack(account: string, device: number, qid: number): QueueItem | null;
  /** Up to `limit` items for a device with qid > `after`, in qid order, committed or not. */
  fetch(account: string, device: number, after: number, limit: number): QueueItem[];
  /** Items and bytes queued for one device, kept in memory: cheap enough for every send (bounds). */
  usage(account: string, device: number): Usage;
  /**
   * Starts an acceptance: its copies are then appended with it, and the
   * caller releases its own hold once all are appended. The record is written
   * in the same commit as the last copy still buffered, in whichever shard
   * that is (or alone, if every copy was acknowledged before its commit or
   * was made durable elsewhere), and `onDurable` fires after that commit:
   * that is when `sent` may go out. A crash before it leaves no record, so a
   * resend is accepted again; a crash after it finds every copy committed
   * (or already delivered).
   */
  begin(rec: AcceptedRecord, onDurable: () => void, confirming?: boolean | "peer"): Acceptance;
  /**
   * `"peer"` (copies a node link brought here: src/core/cluster/forward.ts): as without it (the record commits with
   * the copies, `onDurable` after) as soon as one copy is written; when every copy was acknowledged before its commit,
   * as a confirming sender's (lazy), `confirm` being the peer's word that it will not send the item again. Its
   * confirmations are not counted as the senders' (switchboard_dedup_released_total).
   *
   * With `confirming` (the sender confirms the `sent` it gets: docs/PROTOCOL.md §6.2), `onDurable` fires as soon as
   * every copy is durable or acknowledged, and the record is written only if the sender has not confirmed by the
   * next commit but one (then to be deleted on confirmation, or after queue.dedup_ttl): a crash before that write
   * leaves no record, and a resend the client makes is accepted anew (the recipient's SDK drops the second copy).
   *
   * confirm: the sender holds this acceptance's `sent`; its record is not needed any more.
   */
  confirm(acc: Acceptance): void;
  /** The sender holds the `sent` of a record this store answered a resend with (recall): delete it. */
  forget(rec: AcceptedRecord): void;
  /** One more piece the record waits for that this store does not hold (a copy on another node); `release` it once durable there. */
  hold(acc: Acceptance): void;
  /** A piece held with `hold` (or the hold `begin` starts with) is durable, or the caller has appended every copy. */
  release(acc: Acceptance): void;
  /** The acceptance of (sender, device, cid) if its record is durable (in-flight ones are the caller's to know). */
  recall(sender: string, device: number, cid: string): AcceptedRecord | null;
  /**
   * Every durable acceptance record of these senders (both tables), for a cluster shard move: one indexed
   * look-up per shard file per sender. Records still in memory (a commit window) are not among them.
   */
  recordsOf(senders: readonly string[]): AcceptedRecord[];
  /**
   * Deletes items older than `cutoff` (ms) and acceptances older than it (those of confirming senders, unconfirmed,
   * older than `unconfirmedCutoff`), and
   * returns the expired items (bodies included) so their devices and senders
   * can be told. Expiry is never silent.
   */
  expire(cutoff: number, unconfirmedCutoff?: number): QueueItem[];
  /** Drops everything queued for a device (it was revoked). */
  dropDevice(account: string, device: number): number;
  /**
   * Depth and oldest item per shard (a backend without shards answers with
   * one), cheap enough for every metrics scrape: no scan of the items.
   */
  shardStats(): ShardStat[];
  /** Commits everything buffered now. */
  flush(): void;
  /**
   * Cluster mode: every commit first asks `writable` about each account it would write (a queue row's account, an
   * acceptance record's sender); on any false the whole batch stays buffered, nothing of it durable (no `sent`),
   * and is tried again. Null (the default) checks nothing. `before` runs before each commit is cut (the node links
   * keep what they queued in their outbox first: src/core/cluster/link.ts keepNow).
   */
  setCommitGuard(writable: ((account: string) => boolean) | null, before?: () => void): void;
  close(): void;
}
