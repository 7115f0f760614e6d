/**
 * The SQLite backend of DeliveryQueue: a fixed number of shard files, each
 * account in the shard its name hashes to, with write-back batching.
 *
 * Group commit: appends and deletes are buffered per shard and written in one
 * transaction per window (queue.commit_ms, or queue.commit_rows rows, which
 * comes first). A device that acknowledges an item before its commit removes
 * it from the buffer, and it is never written at all: the write-back hit.
 * With online recipients that ack at once, most rows never touch the disk.
 *
 * Acceptance records (dedup) and the copies they vouch for: a message's
 * copies may sit in several shard files, which commit separately, so no
 * single transaction can hold them all. The record therefore goes into the
 * commit of the last shard that still buffers copies of its message (or, if
 * none does, alone into the sender's shard), and `sent` waits for that
 * commit. A record found after a crash thus always has every copy committed
 * or delivered behind it; a crash before leaves no record, and the resend is
 * accepted again (PROTOCOL.md §6.4, the rare case). Recall looks in every
 * shard, behind one Bloom filter, so a new id still costs no SELECT.
 *
 * The filter is filled after the start, a chunk at a time (loadKeys), not by a scan before the server listens:
 * old clients' records stay a month, about a second of scan per million rows. Until a shard is loaded, recall
 * reads its tables whatever the filter says (two primary-key lookups per new id and unloaded shard), so no
 * record is missed. Not "on the first recall": every new id is a recall, and a miss asks every shard, so the
 * first message would have paid the whole scan.
 */
import { join } from "node:path";
import type { Database } from "bun:sqlite";
import type { Metrics } from "../core/metrics.ts";
import type { Durability } from "./sqlite.ts";
import { BloomFilter } from "./bloom.ts";
import type { StorageAlarm } from "./errors.ts";
import { hashName } from "../core/hash.ts";
import type { Acceptance, AcceptedRecord, DeliveryQueue, QueueItem, ShardStat, Usage } from "./queue.ts";
import { Shard, type ShardStats } from "./queue-shard.ts";
import { Vouch, type CommitRider } from "./queue-vouch.ts";
import { InlineCommitter, type Committer } from "./queue-commit.ts";
import { WorkerCommitter } from "./queue-commit-pool.ts";
import { log } from "../core/log.ts";

export type { CommitRider, RiderOut } from "./queue-vouch.ts";

/** Stored keys the start-up load adds per turn (loadKeys). */
const KEYS_PER_CHUNK = 10_000;

export class SqliteDeliveryQueue implements DeliveryQueue {
  private shards: Shard[];
  /** Where the shards' commits run: this thread, or the commit Worker (queue.committer, queue-commit.ts). */
  private committer: Committer;
  /** Committed acceptance keys of every shard: a record may be in any of them (the last to commit its copies). */
  private seenAccepted = new BloomFilter();
  /** Shards whose stored keys are not all in the filter yet (loadKeys), and the timer of the next chunk. */
  private loading: Shard[] = [];
  private loadTimer: ReturnType<typeof setTimeout> | null = null;
  /** Records released by their sender's confirmation (`ack {sc}`, §6.2): shows that clients confirm, one per `sent` they hold. */
  private released: { inc(n?: number): void };
  /** Durable callbacks of commits made from inside append/ack, run once at the end of the turn. */
  private due: Vouch[] = [];
  private readonly later = (vs: Vouch[]): void => {
    if (vs.length === 0) return;
    if (this.due.length === 0) queueMicrotask(this.runDue);
    for (const v of vs) this.due.push(v);
  };
  private readonly runDue = (): void => {
    // Callbacks may append (receipts) and so queue more: each batch runs in its own microtask.
    const vs = this.due;
    this.due = [];
    for (const v of vs) v.onDurable();
  };

  constructor(
    dataDir: string,
    /** `committer` has no default here: the server's is queue.committer's (src/core/config.ts), and a test says which it exercises. */
    opts: { shards: number; commitMs: number; commitRows: number; durability: Durability; committer: "inline" | "worker" },
    metrics: Metrics,
    /** Raised while a shard cannot commit (disk full, I/O error); the batches wait in memory and are retried. */
    alarm: StorageAlarm | null = null,
  ) {
    const stats: ShardStats = {
      commits: metrics.counter("switchboard_queue_commits_total", "Group commits of the delivery queues."),
      rowsWritten: metrics.counter("switchboard_queue_rows_written_total", "Queue rows written to disk."),
      writeBackHits: metrics.counter(
        "switchboard_queue_write_back_hits_total",
        "Queue items acknowledged before their commit, so never written.",
      ),
      commitLatency: metrics.histogram("switchboard_queue_commit_seconds", "Duration of one group commit."),
      batchRows: metrics.histogram("switchboard_queue_commit_batch_rows", "Rows (inserts, deletes, acceptances) in one group commit.", undefined, 1),
    };
    this.released = metrics.counter("switchboard_dedup_released_total", "Acceptance records released by their sender's confirmation of the sent (ack sc, docs/PROTOCOL.md §6.2): forgotten in memory, never written, or deleted.");
    const restarts = metrics.counter("switchboard_queue_committer_restarts_total", "Commit Worker threads that died and were replaced (queue.committer = worker).");
    this.committer =
      opts.committer === "worker"
        ? new WorkerCommitter(opts.durability, (why) => {
            restarts.inc();
            log.error("queue commit worker replaced; its batches in flight are committed again", { why });
          })
        : new InlineCommitter();
    this.shards = [];
    for (let i = 0; i < opts.shards; i++) {
      this.shards.push(new Shard(i, join(dataDir, "queues", `shard-${String(i).padStart(3, "0")}.db`), opts.durability, opts.commitMs, opts.commitRows, stats, this.seenAccepted, this.later, alarm, this.committer));
    }
    this.loading = [...this.shards];
    this.loadTimer = setTimeout(this.loadKeys, 0);
    metrics.gauge("switchboard_dedup_shards_loading", "Queue shards whose stored acceptance keys are still being loaded after the start (recall reads their tables meanwhile).", () => this.loading.length);
    metrics.gauge("switchboard_dedup_unconfirmed_records", "Acceptance records of confirming senders stored because their sent was not confirmed within a commit window (deleted on confirmation, expired after queue.dedup_ttl).", () =>
      this.shards.reduce((n, s) => n + s.unconfirmedRows, 0),
    );
    metrics.gauge("switchboard_dedup_lazy_records", "Acceptance records of confirming senders in memory, waiting one commit window for the confirmation.", () =>
      this.shards.reduce((n, s) => n + s.lazyCount(), 0),
    );
    metrics.gauge("switchboard_queue_buffered_items", "Queue items accepted and not yet committed.", () =>
      this.shards.reduce((n, s) => n + s.pendingCount(), 0),
    );
  }

  /** Loads one chunk of stored keys (10 000: ~10 ms at the scan's second per million), then yields to other work. */
  private readonly loadKeys = (): void => {
    this.loadTimer = null;
    let budget = KEYS_PER_CHUNK;
    while (budget > 0 && this.loading.length > 0) {
      const s = this.loading[0]!;
      const before = this.seenAccepted.added;
      if (s.loadKeysStep(this.seenAccepted, budget)) this.loading.shift();
      budget -= Math.max(1, this.seenAccepted.added - before);
    }
    if (this.loading.length > 0) this.loadTimer = setTimeout(this.loadKeys, 0);
  };

  /** Stored acceptance keys still to be loaded after the start: shards not yet loaded (0 once recall trusts the filter). */
  get shardsLoading(): number {
    return this.loading.length;
  }

  private shard(account: string): Shard {
    return this.shards[hashName(account) % this.shards.length]!;
  }

  setCommitGuard(writable: ((account: string) => boolean) | null, before?: () => void): void {
    for (const s of this.shards) (s.guard = writable), (s.beforeCut = before ?? null);
  }

  nextQid(account: string): number {
    return this.shard(account).nextQid();
  }
  append(item: QueueItem, acc: Acceptance | null): void {
    this.shard(item.account).append(item, acc as Vouch | null);
  }
  ack(account: string, device: number, qid: number): QueueItem | null {
    return this.shard(account).ack(account, device, qid);
  }
  fetch(account: string, device: number, after: number, limit: number): QueueItem[] {
    return this.shard(account).fetch(account, device, after, limit);
  }
  usage(account: string, device: number): Usage {
    return this.shard(account).usage(account, device);
  }
  begin(rec: AcceptedRecord, onDurable: () => void, confirming: boolean | "peer" = false): Acceptance {
    return new Vouch(rec, onDurable, confirming ? this.shard(rec.sender) : null, confirming === "peer");
  }
  confirm(acc: Acceptance): void {
    const v = acc as Vouch;
    if (v.confirmed) return;
    v.confirmed = true;
    if (!v.peer) this.released.inc();
    if (v.row) v.home!.unrow(v.rec); // written because the confirmation came late: deleted now
    else if (v.home === null && v.written) this.unrowAnywhere(v.rec); // a record written before `sent` (its `sent` reached a confirming connection)
  }
  forget(rec: AcceptedRecord): void {
    this.released.inc();
    this.unrowAnywhere(rec);
  }
  private unrowAnywhere(rec: AcceptedRecord): void {
    const maybe = this.seenAccepted.mightHave3(rec.sender, rec.device, rec.cid);
    if (!maybe && this.loading.length === 0) return;
    // Rare (a resend answered from the store, then confirmed): the record may be in any shard, as recall looks.
    for (const s of this.shards) if (maybe || !s.keysLoaded) s.unrow(rec);
  }
  hold(acc: Acceptance): void {
    const v = acc as Vouch;
    if (v.written) throw new Error("DeliveryQueue.hold: the acceptance's record is written already; hold pieces before releasing the last one");
    v.open++;
  }
  release(acc: Acceptance): void {
    this.shard(acc.rec.sender).settle(acc as Vouch);
  }
  recall(sender: string, device: number, cid: string): AcceptedRecord | null {
    const maybe = this.seenAccepted.mightHave3(sender, device, cid);
    if (!maybe && this.loading.length === 0) return null;
    // The sender's shard first: the record is there whenever all copies were delivered before their commit.
    // A shard still loading its keys is read whatever the filter says.
    const home = this.shard(sender);
    let r = maybe || !home.keysLoaded ? home.recall(sender, device, cid) : null;
    for (let i = 0; r === null && i < this.shards.length; i++) {
      const s = this.shards[i]!;
      if (s !== home && (maybe || !s.keysLoaded)) r = s.recall(sender, device, cid);
    }
    return r;
  }
  recordsOf(senders: readonly string[]): AcceptedRecord[] {
    const out: AcceptedRecord[] = [];
    for (const s of this.shards) {
      for (const table of ["accepted", "unconfirmed"]) {
        const q = s.db.query<AcceptedRecord, [string]>(`SELECT sender, device, cid, to_account AS "to", seq, ts FROM ${table} WHERE sender = ?`);
        for (const n of senders) out.push(...q.all(n));
      }
    }
    return out;
  }
  expire(cutoff: number, unconfirmedCutoff = cutoff): QueueItem[] {
    const out: QueueItem[] = [];
    for (const s of this.shards) out.push(...s.expire(cutoff, unconfirmedCutoff));
    this.rebuildFilter();
    return out;
  }

  /**
   * The Bloom filter never forgets, and confirmed records leave their bits behind: once the keys added are far
   * more than the records stored, it is rebuilt from the tables (a scan of what is stored, which with confirming
   * senders is little), so false positives (each a SELECT per shard) do not creep up.
   */
  private rebuildFilter(): void {
    let rows = 0;
    for (const s of this.shards) rows += s.unconfirmedRows;
    if (this.loading.length > 0) return; // the start-up load is still adding keys: clearing now would lose them
    if (this.seenAccepted.added < 100_000 || this.seenAccepted.added < 4 * (rows + this.legacyRows())) return;
    this.seenAccepted.clear();
    for (const s of this.shards) s.addKeysTo(this.seenAccepted);
  }

  /** Rows of the `accepted` tables (records of clients that do not confirm, kept for the retention), counted only when a rebuild is considered. */
  private legacyRows(): number {
    let n = 0;
    for (const s of this.shards) n += s.dedupRows().accepted;
    return n;
  }

  /** The dedup state: records in memory waiting for a commit, rows of confirming senders, rows kept for the retention. */
  dedupState(): { lazy: number; unconfirmed: number; accepted: number } {
    let lazy = 0;
    let unconfirmed = 0;
    for (const s of this.shards) (lazy += s.lazyCount()), (unconfirmed += s.unconfirmedRows);
    return { lazy, unconfirmed, accepted: this.legacyRows() };
  }
  dropDevice(account: string, device: number): number {
    return this.shard(account).dropDevice(account, device);
  }
  /**
   * Another file the main thread writes (accounts.db, a module's file): with queue.committer = worker its WAL
   * checkpoints (and their fsync) run in the commit Worker, once a second, instead of inside one of its commits.
   */
  offloadCheckpoints(db: Database, path: string): void {
    this.committer.offload(db, path);
    this.offloaded.push(path);
  }
  /** The files given to offloadCheckpoints, in order (test/core/offload-files.test.ts: every file the server writes). */
  readonly offloaded: string[] = [];
  /** Writes `rider`'s rows in every commit of every shard, in the commit's transaction (see CommitRider). */
  ride(rider: CommitRider): void {
    this.shards.forEach((s, i) => {
      rider.attach(i, s.db);
      s.riders = [...s.riders, rider];
    });
  }
  shardStats(): ShardStat[] {
    return this.shards.map((s) => s.stat());
  }
  flush(): void {
    // A second round if a shard has something again: with the Worker, a reply taken while flushing one shard can settle
    // a record whose last copies were in flight into a shard flushed before it (Shard.complete). After the first round
    // nothing is in flight, so two are enough (and a shard whose disk or lease refuses stays buffered: no loop).
    for (const s of this.shards) s.flush();
    if (this.shards.some((s) => s.buffered())) for (const s of this.shards) s.flush();
  }
  close(): void {
    if (this.loadTimer !== null) clearTimeout(this.loadTimer);
    this.loadTimer = null;
    this.loading = [];
    // What waits for the end of the turn runs now: its receipts still go into the files.
    this.flush();
    while (this.due.length) this.runDue();
    this.flush(); // the receipts those callbacks queued
    this.committer.close(); // the Worker's connections close (and checkpoint) before this thread's
    for (const s of this.shards) s.close();
  }
}
