/**
 * The acceptance of the SQLite queue (Vouch: the pieces a message's record
 * still waits for), the buffered item (Pending) and the commit-rider seam
 * (CommitRider). Split from queue-sqlite.ts (issue 11: files under ~500
 * lines); shared by the shards (queue-shard.ts) and the facade.
 */
import type { Database, SQLQueryBindings } from "bun:sqlite";
import type { AcceptedRecord, Acceptance, QueueItem } from "./queue.ts";

/**
 * Rows of another store written in the same transaction as a shard's batch
 * (push jobs: src/store/push-sqlite.ts), so that they are durable exactly
 * when the items are. Attached with SqliteDeliveryQueue.ride.
 *
 * A rider says what to write (`out.run(sql, args)`) and does not run it: the
 * commit may run on another thread with its own connection (queue.committer =
 * "worker", queue-commit.ts), where the statements run, in the commit's
 * transaction, before the batch's rows. So `write` decides on the main thread,
 * with the main thread's state, and the rows commit with the items or not at all.
 */
export interface CommitRider {
  /** Once per shard file, on the main thread's connection, before its next commit: create tables, prepare the statements of its own reads. */
  attach(shard: number, db: Database): void;
  /** Before each commit of `shard`: the items it writes; the rows to write with them go to `out`. Must not throw for data reasons. */
  write(shard: number, items: readonly QueueItem[], now: number, out: RiderOut): void;
}

/** Where a rider's statements for one commit go (a statement per distinct SQL text is prepared once per connection). */
export interface RiderOut {
  run(sql: string, args: SQLQueryBindings[]): void;
}

/**
 * This backend's acceptance: the pieces its record still waits for.
 *
 * A confirming sender's acceptance (`home` set: docs/PROTOCOL.md §6.2, "Confirming `sent`") has its record written
 * lazily: `sent` goes out as soon as every copy is durable or acknowledged, and the record waits in its home shard
 * (the sender's) for one to two commit windows; only if the sender has not confirmed the `sent` by then is it
 * written (table `unconfirmed`), and it is deleted once confirmed. The profile before this put one `accepted` row
 * per message at ~40 % of the server (BENCHMARKS.md, "speed" section).
 */
export class Vouch implements Acceptance {
  /** Copies buffered in some shard, plus holds (the caller's during the fan-out, pieces on other nodes). */
  open = 1;
  /** The record is in a commit (buffered for the next one, or committed): never written twice. */
  written = false;
  /** Scratch of a commit: which commit counted this acceptance's copies last, and how many were in it. */
  mark = 0;
  here = 0;
  /** The sender confirmed it holds the `sent` (its record is not needed any more). */
  confirmed = false;
  /** A lazy record is a row of its home shard's `unconfirmed` table (to delete once confirmed). */
  row = false;
  /** The home shard's timer round when the lazy record began waiting there (Shard.round). */
  round = 0;
  /** A commit wrote one of its copies (a `peer` acceptance's record is then written before `onDurable`, as without `home`). */
  wrote = false;
  constructor(
    readonly rec: AcceptedRecord,
    readonly onDurable: () => void,
    /** A confirming sender's acceptance: the shard its lazy record waits in; null for a record written before `sent`. */
    readonly home: LazyHome | null = null,
    /**
     * Copies a node link brought (DeliveryQueue.begin "peer"): lazy only while no copy was written. Why: one
     * `accepted` row per crossing message on its home and one per `d` item (CLUSTER.md "The cost of a crossing
     * message"), though the peer sends an item again only before it has the ack; once a copy is on disk the row
     * goes with it, so a retry after a restart of this node still finds it (recall).
     */
    readonly peer = false,
  ) {}

  /** Whether its record waits lazily (confirming, and for a peer's acceptance no copy written). */
  get lazy(): boolean {
    return this.home !== null && !(this.peer && this.wrote);
  }
}

/** Where a confirming sender's record waits (the sender's Shard). */
export interface LazyHome {
  /** Every copy is durable or acknowledged and `sent` is on its way: write the record only if unconfirmed at commit time. */
  lazy(v: Vouch): void;
  /** The record's row (or a row from an earlier process, when `v` is null) is not needed any more: delete it in the next commit. */
  unrow(rec: AcceptedRecord): void;
}

export interface Pending {
  item: QueueItem;
  vouch: Vouch | null;
  /** The shard's timer round when it was appended (Shard.round). */
  round: number;
}
