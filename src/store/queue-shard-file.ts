/**
 * The file side of one delivery-queue shard (queue-shard.ts): the schema
 * steps, the prepared statements, and the cold queries (the start-up scans,
 * the retention deletes, the counts for the gauges). Split from queue-shard.ts
 * (files under src/ stay ≤ 500 lines) along the line between what is on disk
 * and what the shard buffers in memory: Shard (write-back buffer, group
 * commit, commit guard, disk-fault retry) extends this class. Its statements
 * are therefore own fields of the shard object, assigned once here: the hot
 * path reads `this.insert` exactly as before, with no extra object, lookup or
 * call per message.
 */
import type { Database, Statement } from "bun:sqlite";
import type { Durability } from "./sqlite.ts";
import { addColumn, openVersioned } from "./schema.ts";
import type { BloomFilter } from "./bloom.ts";
import type { QueueItem } from "./queue.ts";
import { DROP_SQL } from "./queue-commit.ts";
import { ByDevice } from "./by-device.ts";

export class ShardFile {
  readonly db: Database;
  protected select: Statement;
  protected dropStmt: Statement;
  protected selectAccepted: Statement;
  protected selectUnconfirmed: Statement;
  /** Count and bytes of a device's rows below a qid (the first one of a commit in flight, which may or may not be visible yet). */
  protected usageStmt: Statement;
  protected oldestStmt: Statement;
  /**
   * Devices that had committed items when the file was opened and whose usage the shard has not loaded since.
   * With the shard's usage map (exact for every device it has loaded) this answers "may the device have
   * anything queued?" without a read: a device in neither has nothing, so a login with an empty queue reads
   * nothing (ShardReads.fetch), also after a restart. Built at open from the items_by_device index alone (no bodies).
   */
  protected unloaded = new ByDevice<true>();
  /** Rows of `unconfirmed` (counted at open, then kept): the durable part of the bounded dedup state, for the gauge. */
  unconfirmedRows = 0;

  constructor(
    protected readonly path: string,
    durability: Durability,
  ) {
    // Schema steps (src/store/schema.ts): 1 = 3337863, 2 = items carry their conversation.
    this.db = openVersioned(path, durability, [
      `
      CREATE TABLE IF NOT EXISTS items (
        qid INTEGER PRIMARY KEY, account TEXT NOT NULL, device INTEGER NOT NULL, kind INTEGER NOT NULL,
        from_account TEXT NOT NULL, from_device INTEGER NOT NULL, cid TEXT NOT NULL, seq INTEGER NOT NULL,
        ts INTEGER NOT NULL, body BLOB NOT NULL, conv TEXT NOT NULL DEFAULT '');
      CREATE INDEX IF NOT EXISTS items_by_device ON items (account, device, qid);
      CREATE INDEX IF NOT EXISTS items_by_ts ON items (ts);
      CREATE TABLE IF NOT EXISTS accepted (
        sender TEXT NOT NULL, device INTEGER NOT NULL, cid TEXT NOT NULL, to_account TEXT NOT NULL,
        seq INTEGER NOT NULL, ts INTEGER NOT NULL, PRIMARY KEY (sender, device, cid)) WITHOUT ROWID;
      CREATE INDEX IF NOT EXISTS accepted_by_ts ON accepted (ts);
    `,
      // Files from before items carried their conversation: the column is added, empty for old rows (readers fall back).
      addColumn("items", "conv", "TEXT NOT NULL DEFAULT ''"),
      // 3: records of confirming senders (Vouch.home) not confirmed within a commit window; deleted once confirmed,
      // expired after queue.dedup_ttl. A table of their own, so that neither the delete nor the TTL sweep touches
      // the `accepted` rows old clients' records keep for the whole retention.
      `
      CREATE TABLE IF NOT EXISTS unconfirmed (
        sender TEXT NOT NULL, device INTEGER NOT NULL, cid TEXT NOT NULL, to_account TEXT NOT NULL,
        seq INTEGER NOT NULL, ts INTEGER NOT NULL, PRIMARY KEY (sender, device, cid)) WITHOUT ROWID;
      CREATE INDEX IF NOT EXISTS unconfirmed_by_ts ON unconfirmed (ts);
    `,
    ]);
    // The commit's statements are ShardWriter's (queue-commit.ts), prepared on whichever connection commits.
    this.selectAccepted = this.db.prepare(
      "SELECT sender, device, cid, to_account AS \"to\", seq, ts FROM accepted WHERE sender = ? AND device = ? AND cid = ?",
    );
    this.selectUnconfirmed = this.db.prepare(
      "SELECT sender, device, cid, to_account AS \"to\", seq, ts FROM unconfirmed WHERE sender = ? AND device = ? AND cid = ?",
    );
    // Only `unconfirmed` is counted at open: a COUNT of `accepted` (old clients' rows, kept a month) read its whole
    // index before the server listened, 0.5 s for 5.9 million rows in 8 shards (BENCHMARKS.md 2026-12-03 12:40).
    this.unconfirmedRows = this.rowsOf("unconfirmed");
    this.usageStmt = this.db.prepare("SELECT COUNT(*) AS n, COALESCE(SUM(length(body)), 0) AS bytes FROM items WHERE account = ? AND device = ? AND qid < ?");
    this.select = this.db.prepare(
      "SELECT qid, account, device, kind, from_account AS fromAccount, from_device AS fromDevice, conv, cid, seq, ts, body FROM items WHERE account = ? AND device = ? AND qid > ? ORDER BY qid LIMIT ?",
    );
    this.dropStmt = this.db.prepare(DROP_SQL);
    this.oldestStmt = this.db.prepare("SELECT qid, ts FROM items ORDER BY ts LIMIT ?"); // items_by_ts: an index walk of a few rows
    for (const r of this.db.query("SELECT DISTINCT account, device FROM items").iterate() as IterableIterator<{ account: string; device: number }>) {
      this.unloaded.set(r.account, r.device, true);
    }
  }

  /** The highest qid in the file (0 when empty): the floor of Shard.nextQid after a restart. */
  protected maxQid(): number {
    return (this.db.query("SELECT MAX(qid) AS m FROM items").get() as { m: number | null }).m ?? 0;
  }

  /** Items in the file, counted once at open (the shard keeps its depth exact from then on). */
  protected countItems(): number {
    return (this.db.query("SELECT COUNT(*) AS n FROM items").get() as { n: number }).n;
  }

  /** Adds every stored acceptance key to `bloom` (when the queue rebuilds the filter). */
  addKeysTo(bloom: BloomFilter): void {
    for (const table of ["accepted", "unconfirmed"]) {
      for (const r of this.db.query(`SELECT sender, device, cid FROM ${table}`).iterate() as IterableIterator<{ sender: string; device: number; cid: string }>) {
        bloom.add3(r.sender, r.device, r.cid);
      }
    }
    this.keysLoaded = true;
  }

  /**
   * Every stored acceptance key is in the queue's Bloom filter (the start-up load, loadKeysStep, is done). Until
   * then a recall in this shard cannot trust the filter's "certainly not" and reads the tables (two point lookups).
   */
  keysLoaded = false;
  /** Where the start-up load stands: the table it reads, and the last key it added (primary-key order). */
  private loadAt: { table: 0 | 1; after: [string, number, string] | null } = { table: 0, after: null };

  /**
   * Adds up to `limit` more stored keys to `bloom`, in primary-key order, one chunk per call so the start-up load
   * of a month of old clients' records (about a second per million rows in one scan) runs between other work
   * instead of before the server listens. Keys committed meanwhile are added by the commit itself, wherever they
   * sort. True once the shard is loaded.
   */
  loadKeysStep(bloom: BloomFilter, limit: number): boolean {
    while (!this.keysLoaded && limit > 0) {
      const table = this.loadAt.table === 0 ? "accepted" : "unconfirmed";
      const after = this.loadAt.after;
      const rows = (
        after === null
          ? this.db.query(`SELECT sender, device, cid FROM ${table} ORDER BY sender, device, cid LIMIT ?`).all(limit)
          : this.db.query(`SELECT sender, device, cid FROM ${table} WHERE (sender, device, cid) > (?, ?, ?) ORDER BY sender, device, cid LIMIT ?`).all(...after, limit)
      ) as { sender: string; device: number; cid: string }[];
      for (const r of rows) bloom.add3(r.sender, r.device, r.cid);
      limit -= rows.length;
      const last = rows[rows.length - 1];
      if (last !== undefined && limit === 0) this.loadAt.after = [last.sender, last.device, last.cid];
      else if (this.loadAt.table === 0) this.loadAt = { table: 1, after: null };
      else this.keysLoaded = true;
    }
    return this.keysLoaded;
  }

  /** Stored acceptance records (both tables): the dedup state on disk. */
  dedupRows(): { accepted: number; unconfirmed: number } {
    return { accepted: this.rowsOf("accepted"), unconfirmed: this.rowsOf("unconfirmed") };
  }

  private rowsOf(table: "accepted" | "unconfirmed"): number {
    return (this.db.query(`SELECT COUNT(*) AS n FROM ${table}`).get() as { n: number }).n;
  }

  /** Whether the file holds anything a sweep with these cutoffs would delete: three index probes (the ts indexes), no write. */
  protected fileHasExpired(cutoff: number, unconfirmedCutoff: number): boolean {
    return (
      this.db.query("SELECT 1 AS x FROM items WHERE ts < ? AND kind != 3 LIMIT 1").get(cutoff) !== null ||
      this.db.query("SELECT 1 AS x FROM accepted WHERE ts < ? LIMIT 1").get(cutoff) !== null ||
      this.db.query("SELECT 1 AS x FROM unconfirmed WHERE ts < ? LIMIT 1").get(unconfirmedCutoff) !== null
    );
  }

  /**
   * Deletes, in one transaction, the items and `accepted` records older than `cutoff` and the `unconfirmed`
   * records older than `unconfirmedCutoff`; returns the deleted items (unsorted). Throws what SQLite throws
   * (Shard.expire tells a refusing disk from a bug).
   */
  protected deleteExpired(cutoff: number, unconfirmedCutoff: number): QueueItem[] {
    return this.db.transaction(() => {
      const rows = this.db
        .query(
          // Gap notices (kind 3) never expire: they are the signal that something did.
          "DELETE FROM items WHERE ts < ? AND kind != 3 RETURNING qid, account, device, kind, from_account AS fromAccount, from_device AS fromDevice, conv, cid, seq, ts, body",
        )
        .all(cutoff) as QueueItem[];
      this.db.run("DELETE FROM accepted WHERE ts < ?", [cutoff]);
      this.unconfirmedRows -= this.db.run("DELETE FROM unconfirmed WHERE ts < ?", [unconfirmedCutoff]).changes;
      return rows;
    })();
  }
}
