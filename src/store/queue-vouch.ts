/**
 * The acceptance of the SQLite queue (Vouch: the pieces a message's record
 * still waits for), the buffered item (Pending) and the commit-rider seam
 * (CommitRider). Split from queue-sqlite.ts (issue 11: files under ~500
 * lines); shared by the shards (queue-shard.ts) and the facade.
 */
import type { Database } from "bun:sqlite";
import type { AcceptedRecord, Acceptance, QueueItem } from "./queue.ts";

/**
 * Rows of another store written in the same transaction as a shard's batch
 * (push jobs: src/store/push-sqlite.ts), so that they are durable exactly
 * when the items are. Attached with SqliteDeliveryQueue.ride.
 */
export interface CommitRider {
  /** Once per shard file, before its next commit: create tables, prepare statements. */
  attach(shard: number, db: Database): void;
  /** Inside the commit's transaction, after the batch's rows: the items this commit writes. Must not throw for data reasons. */
  write(shard: number, items: Iterable<QueueItem>, now: number): void;
}

export function* itemsOf(batch: Map<number, Pending>): Iterable<QueueItem> {
  for (const p of batch.values()) yield p.item;
}

/** This backend's acceptance: the pieces its record still waits for. */
export class Vouch implements Acceptance {
  /** Copies buffered in some shard, plus holds (the caller's during the fan-out, pieces on other nodes). */
  open = 1;
  /** The record is in a commit (buffered for the next one, or committed): never written twice. */
  written = false;
  /** Scratch of a commit: which commit counted this acceptance's copies last, and how many were in it. */
  mark = 0;
  here = 0;
  constructor(readonly rec: AcceptedRecord, readonly onDurable: () => void) {}
}

export interface Pending {
  item: QueueItem;
  vouch: Vouch | null;
  /** The shard's timer round when it was appended (Shard.round). */
  round: number;
}
