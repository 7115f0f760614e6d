/**
 * One shard file of the SQLite delivery queue (queue-sqlite.ts): its schema
 * and statements, the write-back buffer, the group commit with its timer
 * rounds, the commit guard and the disk-fault retry. Split from
 * queue-sqlite.ts (issue 11: files under ~500 lines) with no change: the
 * same class, called directly by the facade (no extra indirection per
 * message). The file side (schema steps, prepared statements, start-up scans,
 * retention deletes) is in queue-shard-file.ts, the in-memory state and the
 * reads in queue-shard-reads.ts: base classes of Shard, so the statements and
 * buffers stay own fields of the shard (see there). Where the commit's
 * transaction runs (this thread or the commit Worker) is the Committer's
 * (queue-commit.ts); with the Worker a commit is in flight until its reply.
 */
import type { Counter, Histogram } from "../core/metrics.ts";
import type { Durability } from "./sqlite.ts";
import type { BloomFilter } from "./bloom.ts";
import { COMMIT_RETRY_MS, storageCause, type StorageAlarm } from "./errors.ts";
import { ItemKind, type AcceptedRecord, type QueueItem } from "./queue.ts";
import type { CommitRider, LazyHome, Pending, Vouch } from "./queue-vouch.ts";
import { ShardReads, type InFlight } from "./queue-shard-reads.ts";
import { toError, type CommitDone, type CommitError, type Committer, type RiderOp } from "./queue-commit.ts";

const RECENT_BATCHES = 4;

/** Commits so far, all shards: stamps Vouch.mark. */
let flushes = 0;

export interface ShardStats {
  commits: Counter;
  rowsWritten: Counter;
  writeBackHits: Counter;
  commitLatency: Histogram;
  batchRows: Histogram;
}

export class Shard extends ShardReads implements LazyHome {
  /** Acked items that are committed already: deleted in the next commit. */
  private deletes: number[] = [];
  /**
   * The last few committed batches, newest first. Under load a device often
   * acks just after its item was committed; finding the item here saves a
   * SELECT per ack (measured at about 17% of server CPU when saturated).
   * Bounded: RECENT_BATCHES batches of at most commit_rows items.
   */
  private recent: Map<number, QueueItem>[] = [];
  private timer: ReturnType<typeof setTimeout> | null = null;
  /** Records whose copies are all durable already, waiting for the next commit. */
  private accepted: Vouch[] = [];
  /** Confirmed records that have a row here (`unconfirmed`, or `accepted` from a resend answered from the store): deleted in the next commit. */
  private unrows: AcceptedRecord[] = [];
  /** A commit failed on the disk: the batch is back in the buffers and only the retry timer commits (storage alarm). */
  private failing = false;
  /** Cluster mode (DeliveryQueue.setCommitGuard): may this batch be written now? Null on a single node. */
  guard: ((account: string) => boolean) | null = null;
  /** Cluster mode: run before a batch is cut (DeliveryQueue.setCommitGuard's `before`). */
  beforeCut: (() => void) | null = null;
  /** Commit riders and this shard's number for them (SqliteDeliveryQueue.ride). */
  riders: readonly CommitRider[] = [];
  /** A flush came while a commit was in flight: its reply commits what waits then. */
  private again = false;

  constructor(
    /** This shard's number (the committer's and the riders' index). */
    readonly index: number,
    path: string,
    durability: Durability,
    private commitMs: number,
    private commitRows: number,
    private stats: ShardStats,
    /** Every committed acceptance key of all shards (shared): most new ids skip the SELECTs. */
    private seenAccepted: BloomFilter,
    /** Runs the durable callbacks of these records at the end of the turn. */
    private later: (vs: Vouch[]) => void,
    private alarm: StorageAlarm | null,
    private committer: Committer,
  ) {
    super(path, durability);
    committer.add(index, this.db, path);
    // The acceptance keys are not scanned here: the queue loads them after the start, a chunk at a time
    // (SqliteDeliveryQueue.loadKeys; about a second per million rows of old clients' `accepted`).
    this.lastQid = this.maxQid();
    this.items = this.countItems();
  }

  append(item: QueueItem, vouch: Vouch | null): void {
    const u = this.usage(item.account, item.device);
    u.n++;
    u.bytes += item.body.length;
    this.items++;
    if (vouch !== null) vouch.open++;
    this.pending.set(item.qid, { item, vouch, round: this.round });
    this.schedule();
  }

  /**
   * One piece of `v` is durable; when it was the last, the record goes into this shard's next commit, or for a
   * confirming sender (`v.home`) `sent` goes out at the end of the turn and the record waits lazily in its home.
   */
  settle(v: Vouch): void {
    if (--v.open !== 0 || v.written) return;
    v.written = true;
    if (v.lazy) {
      v.home!.lazy(v);
      this.later([v]);
      return;
    }
    this.accepted.push(v);
    this.schedule();
  }

  lazy(v: Vouch): void {
    v.round = this.round;
    this.lazies.push(v);
    this.schedule();
  }

  unrow(rec: AcceptedRecord): void {
    this.unrows.push(rec);
    this.schedule();
  }

  /** Items and `accepted` records older than `cutoff`, and `unconfirmed` records older than `unconfirmedCutoff`. */
  expire(cutoff: number, unconfirmedCutoff = cutoff): QueueItem[] {
    if (!this.failing && !this.buffersHaveExpired(cutoff, unconfirmedCutoff) && !this.fileHasExpired(cutoff, unconfirmedCutoff)) {
      // The usual sweep: nothing is that old. No commit is forced and nothing written, so the event loop waits for
      // neither (with the Worker, the flush below would block on its replies).
      this.usages.deleteWhere((u) => u.n <= 0);
      return [];
    }
    this.flush();
    if (this.failing) return []; // retention waits for the disk: expiring later loses nothing
    let rows: QueueItem[];
    try {
      rows = this.deleteExpired(cutoff, unconfirmedCutoff);
    } catch (e) {
      if (storageCause(e) === null) throw e;
      return []; // the disk refused the deletes: the next sweep tries again
    }
    rows.sort((a, b) => a.qid - b.qid);
    this.items -= rows.length;
    for (const r of rows) {
      this.unuse(r);
      for (const batch of this.recent) batch.delete(r.qid);
    }
    // Forget usage entries that are empty, so the map only holds devices with something queued.
    this.usages.deleteWhere((u) => u.n <= 0);
    return rows;
  }

  /** Whether a buffered item or record is older than a sweep's cutoffs (a walk of at most a few commits' worth). */
  private buffersHaveExpired(cutoff: number, unconfirmedCutoff: number): boolean {
    const old = (m: Map<number, Pending>) => {
      for (const { item } of m.values()) if (item.ts < cutoff && item.kind !== ItemKind.GAP) return true;
      return false;
    };
    const f = this.inflight;
    return (
      old(this.pending) || this.accepted.some((v) => v.rec.ts < cutoff) || this.lazies.some((v) => v.rec.ts < unconfirmedCutoff) ||
      (f !== null && (old(f.live) || f.accepted.some((v) => v.rec.ts < cutoff) || f.lazyWrite.some((v) => v.rec.ts < unconfirmedCutoff)))
    );
  }

  ack(account: string, device: number, qid: number): QueueItem | null {
    const p = this.pending.get(qid);
    if (p) {
      if (p.item.account !== account || p.item.device !== device) return null;
      this.pending.delete(qid);
      this.unuse(p.item);
      this.items--;
      this.stats.writeBackHits.inc();
      if (p.vouch !== null) this.settle(p.vouch); // acknowledged before it was written: as durable as it needs to be
      p.item.unwritten = true;
      return p.item;
    }
    if (this.deleting.has(qid)) return null;
    let row: QueueItem | null = null;
    const f = this.inflight;
    const q = f === null ? undefined : f.live.get(qid);
    if (q !== undefined) {
      // In a commit in flight: it is deleted in the next one, which the Worker runs after it.
      if (q.item.account !== account || q.item.device !== device) return null;
      f!.live.delete(qid);
      row = q.item;
    }
    for (let i = 0; i < this.recent.length && row === null; i++) {
      const r = this.recent[i]!.get(qid);
      if (r !== undefined && r.account === account && r.device === device) {
        this.recent[i]!.delete(qid); // a second ack must not find it again
        row = r;
      }
    }
    row ??= this.db.query(
      "SELECT qid, account, device, kind, from_account AS fromAccount, from_device AS fromDevice, conv, cid, seq, ts, body FROM items WHERE qid = ?",
    ).get(qid) as QueueItem | null;
    if (row === null || row.account !== account || row.device !== device) return null;
    this.unuse(row);
    this.items--;
    this.deleting.add(qid);
    this.deletes.push(qid);
    this.schedule();
    return row;
  }

  dropDevice(account: string, device: number): number {
    // Commit first: buffered items become rows (and their senders' `sent` can go out), so one DELETE covers all.
    this.flush();
    for (const batch of this.recent) for (const [qid, it] of batch) if (it.account === account && it.device === device) batch.delete(qid);
    this.usages.delete(account, device);
    if (!this.failing) {
      try {
        const n = this.dropStmt.run(account, device).changes;
        this.items -= n;
        return n;
      } catch (e) {
        if (!this.diskFault(e)) throw e;
      }
    }
    // The disk refuses writes (issue 17): the revocation is already durable in accounts.db, so the drop must not
    // fail now. The device's buffered copies go (settled as an ack settles them: nothing can reach the device any
    // more) and its committed rows are deleted in the first commit that succeeds. Nothing fetches a revoked device.
    let n = 0;
    for (const [qid, p] of this.pending) {
      if (p.item.account !== account || p.item.device !== device) continue;
      this.pending.delete(qid);
      this.items--;
      n++;
      if (p.vouch !== null) this.settle(p.vouch);
    }
    this.drops.push({ account, device });
    return n;
  }

  private schedule(): void {
    if (this.failing) return; // the retry timer commits: no commit forced mid-fan-out against a failing disk
    if (this.pending.size + this.deletes.length + this.accepted.length >= this.commitRows) {
      // Reached from inside append/ack, in the middle of the caller's work (a fan-out loop): commit now, but
      // the durable callbacks (`sent`, receipts held for it) wait for the end of the turn, so they never re-enter
      // module code half-way through a message.
      this.flush(true);
      return;
    }
    if (this.timer === null) {
      this.timer = setTimeout(this.onTimer, this.commitMs);
    }
  }

  /**
   * Timer commits so far. A timer commit writes only the items appended before the previous one; the
   * younger ones stay buffered for the next: every item gets at least one whole commit window to be
   * acknowledged, and so never written. Committing everything, an item appended just before the timer
   * fired had almost no time: with acks arriving in about a millisecond (500 pairs, window 8) a fifth
   * of the items were written and deleted again. `sent` of a message whose copies are not acknowledged
   * now comes after one to two windows (5-10 ms by default) instead of up to one; what every other
   * flush (commit_rows, shutdown, expiry, a dropped device) commits is unchanged: everything.
   */
  private round = 0;
  private readonly onTimer = (): void => this.flush(false, true);
  /** A retry after a refused commit (disk, lease): everything, without blocking on the Worker (callbacks at the end of the turn). */
  private readonly onRetry = (): void => this.flush(true);

  /**
   * Commits what is buffered (with `timer`, the items older than the last timer commit: `round`);
   * durable callbacks run now, or with `defer` once at the end of the turn.
   */
  flush(defer = false, timer = false): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.inflight !== null) {
      if (timer || defer) {
        this.again = true; // one commit in flight per shard: its reply commits what waits now
        return;
      }
      this.committer.wait(this.index); // a flush that must be done when it returns (shutdown, expiry, a dropped device)
    }
    if (
      this.pending.size === 0 && this.deletes.length === 0 && this.accepted.length === 0 && this.drops.length === 0 &&
      this.lazies.length === 0 && this.unrows.length === 0
    ) {
      if (this.failing) this.recovered(); // all that waited was acknowledged before it could be written
      return;
    }
    // Lazy records: confirmed ones are done (no row ever); a timer or commit_rows commit writes those that have
    // waited a whole window (as it does items), every other flush (shutdown, expiry) all that are unconfirmed.
    let lazyWrite: Vouch[] = [];
    if (this.lazies.length !== 0) {
      const keep: Vouch[] = [];
      const young = this.round;
      const partial = timer || defer;
      for (const v of this.lazies) {
        if (v.confirmed) continue;
        (partial && v.round === young ? keep : lazyWrite).push(v);
      }
      this.lazies = keep;
    }
    const unrows = this.unrows;
    if (unrows.length !== 0) this.unrows = [];
    let batch = this.pending;
    this.pending = new Map();
    if (timer && !this.failing) {
      const young = this.round++;
      const old = new Map<number, Pending>();
      for (const [qid, p] of batch) (p.round === young ? this.pending : old).set(qid, p);
      batch = old;
    }
    if ((this.pending.size > 0 || this.lazies.length > 0) && !this.failing) this.timer = setTimeout(this.onTimer, this.commitMs);
    if (
      batch.size === 0 && this.deletes.length === 0 && this.accepted.length === 0 && this.drops.length === 0 &&
      lazyWrite.length === 0 && unrows.length === 0
    ) {
      if (this.failing && this.pending.size === 0) this.recovered();
      return;
    }
    const deletes = this.deletes;
    const accepted = this.accepted;
    const drops = this.drops;
    this.deletes = [];
    this.accepted = [];
    if (drops.length !== 0) this.drops = [];
    // Copies per acceptance in this batch, counted on the acceptances themselves: a Map per commit measured
    // 17.7 against 16.9 µs of store CPU per message (3 rows each, medians of 3); counted in place, the cost
    // is within noise. An acceptance with nothing open but these rides along: its record commits with its
    // last copies, so no crash can leave the record without them.
    const mine: Vouch[] = [];
    const mark = ++flushes;
    for (const p of batch.values()) {
      const v = p.vouch;
      if (v === null) continue;
      if (v.mark !== mark) (v.mark = mark), (v.here = 0), mine.push(v);
      v.here++;
      v.wrote = true;
    }
    // A confirming sender's acceptance whose last copies are here needs no row in this commit (lightDone): `sent`
    // goes out after it, and the record waits lazily in its home shard.
    const lightDone: Vouch[] = [];
    const here: number[] = [];
    for (const v of mine) {
      here.push(v.here);
      if (v.open === v.here && !v.written) {
        v.written = true;
        (v.lazy ? lightDone : accepted).push(v);
      }
    }
    const sync = !(timer || defer);
    const f: InFlight = { batch, live: batch, deletes, accepted, drops, lazyWrite, unrows, mine, here, lightDone, defer, sync, t0: 0 };
    this.beforeCut?.();
    if (this.guard !== null && !this.guardAllows(batch, lazyWrite.length === 0 ? accepted : accepted.concat(lazyWrite))) {
      // A shard of this batch cannot be proven ours (a lapsed lease): nothing of it becomes durable, so no `sent`;
      // it waits, whole, for the lease to be proven again, as a batch the disk refused does.
      this.undo(f);
      if (this.timer === null) this.timer = setTimeout(this.onRetry, COMMIT_RETRY_MS);
      return;
    }
    const items: QueueItem[] = [];
    for (const p of batch.values()) items.push(p.item);
    const now = Date.now();
    const ops: RiderOp[] = [];
    const out = { run: (sql: string, args: RiderOp[1]) => void ops.push([sql, args]) };
    for (const rider of this.riders) rider.write(this.index, items, now, out);
    if (this.committer.async) {
      f.live = new Map(batch); // acks while it is in flight take their items out of this one (ack)
      this.inflight = f;
    }
    f.t0 = performance.now();
    this.committer.commit(
      this.index,
      { items, deletes, drops, accepted: accepted.map((v) => v.rec), unconfirmed: lazyWrite.map((v) => v.rec), unrows, ops },
      (r, inWait) => this.complete(f, r, inWait),
    );
    if (sync && this.inflight === f) this.committer.wait(this.index);
  }

  /** The result of commit `f`: its bookkeeping and its durable callbacks, or, when the disk refused it, its undo. */
  private complete(f: InFlight, r: CommitDone | CommitError, inWait: boolean): void {
    if (this.inflight === f) this.inflight = null;
    if ("message" in r) {
      // The disk refused (full, I/O error): SQLite rolled the whole transaction back, so the batch goes
      // back into the buffers as it was (nothing was made durable, so no `sent`) and is tried again.
      this.again = false;
      if (this.timer !== null) (clearTimeout(this.timer), (this.timer = null)); // diskFault arms the retry instead
      const e = (r as { cause?: unknown }).cause ?? toError(r);
      if (!this.diskFault(e)) throw e;
      this.undo(f); // kept young items have the higher qids: order holds
      return;
    }
    if (this.failing) this.recovered();
    this.items -= r.dropped;
    for (const d of f.drops) this.usages.delete(d.account, d.device); // a usage() asked meanwhile counted the doomed rows
    for (const qid of f.deletes) this.deleting.delete(qid);
    const committed = new Map<number, QueueItem>();
    for (const [qid, p] of f.live) committed.set(qid, p.item);
    this.recent.unshift(committed);
    if (this.recent.length > RECENT_BATCHES) this.recent.pop();
    this.stats.commits.inc();
    this.stats.rowsWritten.inc(f.batch.size);
    this.stats.commitLatency.record((performance.now() - f.t0) * 1000);
    this.stats.batchRows.record(f.batch.size + f.deletes.length + f.accepted.length);
    for (let i = 0; i < f.mine.length; i++) {
      const v = f.mine[i]!;
      v.open -= f.here[i]!;
      // Its last pieces were in another shard's commit cut while this one was in flight (the Worker): that shard
      // could not know these would be durable, so the record (or a confirming sender's `sent`) follows from here.
      if (v.open === 0 && !v.written) (v.open = 1), this.settle(v);
    }
    for (const { rec: r } of f.accepted) this.seenAccepted.add3(r.sender, r.device, r.cid);
    this.unconfirmedRows += f.lazyWrite.length - r.unrowed;
    for (const v of f.lazyWrite) {
      v.row = true;
      this.seenAccepted.add3(v.rec.sender, v.rec.device, v.rec.cid);
      // Confirmed while this commit was in flight (the Worker): confirm saw no row yet, so it asked for no delete.
      if (v.confirmed) this.unrow(v.rec);
    }
    for (const v of f.lightDone) v.home!.lazy(v);
    const durable = f.lightDone.length === 0 ? f.accepted : f.accepted.concat(f.lightDone);
    // Inside another flush's wait, callbacks wait for the end of the turn (they may append), as a commit_rows commit's do.
    if (f.defer || (inWait && !f.sync)) this.later(durable);
    else for (const v of durable) v.onDurable();
    if (this.again) {
      this.again = false;
      if (inWait) this.timer ??= setTimeout(this.onTimer, 0); // the flush that waits commits its own part only
      else this.flush(false, true);
    }
  }

  /** Commit `f` goes back into the buffers as it was cut (nothing of it became durable), before what came since. */
  private undo(f: InFlight): void {
    if (f.live !== f.batch) {
      // Acknowledged while in flight: as if acknowledged while buffered (never written, the copy settles).
      for (const [qid, p] of f.batch) {
        if (f.live.has(qid)) continue;
        f.batch.delete(qid);
        this.deleting.delete(qid);
        const at = this.deletes.indexOf(qid);
        if (at >= 0) this.deletes.splice(at, 1);
        this.stats.writeBackHits.inc();
        if (p.vouch !== null) this.settle(p.vouch);
      }
    }
    for (const [qid, p] of this.pending) f.batch.set(qid, p); // young items a timer commit kept back: order holds
    this.pending = f.batch;
    this.deletes = f.deletes.concat(this.deletes);
    this.accepted = f.accepted.concat(this.accepted);
    this.drops = f.drops.concat(this.drops);
    for (const v of f.lightDone) v.written = false;
    if (f.lazyWrite.length !== 0) this.lazies = f.lazyWrite.concat(this.lazies);
    if (f.unrows.length !== 0) this.unrows = f.unrows.concat(this.unrows);
  }

  private guardAllows(batch: Map<number, Pending>, accepted: Vouch[]): boolean {
    const ok = this.guard!;
    let last = "";
    for (const { item } of batch.values()) {
      if (item.account === last) continue; // a device's items come in runs: one check per run
      if (!ok((last = item.account))) return false;
    }
    for (const { rec } of accepted) if (!ok(rec.sender)) return false;
    return true;
  }

  /** A commit failed: true, with the alarm raised and a retry armed, when the disk is the cause (src/store/errors.ts). */
  private diskFault(e: unknown): boolean {
    const cause = storageCause(e);
    if (cause === null) return false;
    this.failing = true;
    this.alarm?.raise(this.path, cause, (e as Error).message);
    if (this.timer === null) this.timer = setTimeout(this.onRetry, COMMIT_RETRY_MS);
    return true;
  }

  private recovered(): void {
    this.failing = false;
    this.alarm?.clear(this.path);
  }

  /** Something waits for a commit (after a sync flush, only what another shard's reply settled here meanwhile). */
  buffered(): boolean {
    return this.pending.size + this.deletes.length + this.accepted.length + this.drops.length + this.lazies.length + this.unrows.length !== 0;
  }

  /** After the queue's last flush and its committer's close. */
  close(): void {
    this.db.close();
  }
}
