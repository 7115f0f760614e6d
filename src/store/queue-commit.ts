/**
 * Where a shard's group commit runs (issue 20, target 4: the event loop never
 * waits for the disk). A Shard (queue-shard.ts) decides what a commit holds on
 * the main thread, as before, and hands the batch to a Committer:
 * - InlineCommitter (queue.committer = "inline"): the transaction runs at once on
 *   the shard's own connection, on the main thread; `done` is called before
 *   commit() returns. The behaviour of every commit before the Worker existed.
 * - WorkerCommitter (queue-commit-pool.ts, "worker"): the batch is posted to one
 *   Worker thread that holds its own connection to every shard file, commits
 *   there, and replies; `done` runs when the reply arrives, so `sent` still waits
 *   for the commit to be durable, but the main thread does other work meanwhile.
 * Both run the same statements in the same order through ShardWriter, so what is
 * on disk after a commit does not depend on where it ran.
 */
import type { Database, SQLQueryBindings, Statement } from "bun:sqlite";
import type { AcceptedRecord, QueueItem } from "./queue.ts";

/** One statement a commit rider (queue-vouch.ts CommitRider) wants in the commit's transaction. */
export type RiderOp = [sql: string, args: SQLQueryBindings[]];

/** What one commit writes, in this order. Plain data: it is posted to the Worker as it is (items as columns, see packItems). */
export interface CommitBatch {
  items: QueueItem[];
  deletes: number[];
  drops: { account: string; device: number }[];
  accepted: AcceptedRecord[];
  unconfirmed: AcceptedRecord[];
  unrows: AcceptedRecord[];
  ops: RiderOp[];
}

/** Rows changed that the shard's counters need: items of dropped devices, `unconfirmed` rows deleted. */
export interface CommitDone {
  dropped: number;
  unrowed: number;
}

/** A failed commit as the Worker reports it: enough for storageCause (errors.ts) to tell a disk fault from a bug. */
export interface CommitError {
  message: string;
  code?: string;
  errno?: number;
}

export function commitError(e: unknown): CommitError {
  const { message, code, errno } = e as { message?: unknown; code?: unknown; errno?: unknown };
  return {
    message: typeof message === "string" ? message : String(e),
    ...(typeof code === "string" ? { code } : {}),
    ...(typeof errno === "number" ? { errno } : {}),
  };
}

/** The inverse of commitError on the main thread: an Error with the SQLite code and errno, as bun:sqlite throws them. */
export function toError(c: CommitError): Error {
  return Object.assign(new Error(c.message), c.code === undefined ? {} : { code: c.code }, c.errno === undefined ? {} : { errno: c.errno });
}

export const ITEM_INSERT_SQL =
  "INSERT OR IGNORE INTO items (qid, account, device, kind, from_account, from_device, cid, seq, ts, body, conv) VALUES (?,?,?,?,?,?,?,?,?,?,?)";
export const DROP_SQL = "DELETE FROM items WHERE account = ? AND device = ?";

/** The write statements of one shard file on one connection, and the commit itself. */
export class ShardWriter {
  private insert: Statement;
  private del: Statement;
  private drop: Statement;
  private insertAccepted: Statement;
  private insertUnconfirmed: Statement;
  private deleteUnconfirmed: Statement;
  private deleteAccepted: Statement;
  /** Riders' statements by their SQL (a handful: push upserts, cluster outbox rows). */
  private riderStmts = new Map<string, Statement>();

  constructor(
    readonly db: Database,
    /** BEGIN IMMEDIATE: on the Worker's connection, whose file the main thread's connection also writes (push jobs, expiry). */
    private immediate = false,
  ) {
    this.insert = db.prepare(ITEM_INSERT_SQL);
    this.del = db.prepare("DELETE FROM items WHERE qid = ?");
    this.drop = db.prepare(DROP_SQL);
    this.insertAccepted = db.prepare("INSERT OR IGNORE INTO accepted (sender, device, cid, to_account, seq, ts) VALUES (?,?,?,?,?,?)");
    this.insertUnconfirmed = db.prepare("INSERT OR IGNORE INTO unconfirmed (sender, device, cid, to_account, seq, ts) VALUES (?,?,?,?,?,?)");
    this.deleteUnconfirmed = db.prepare("DELETE FROM unconfirmed WHERE sender = ? AND device = ? AND cid = ?");
    this.deleteAccepted = db.prepare("DELETE FROM accepted WHERE sender = ? AND device = ? AND cid = ?");
  }

  /** One transaction; throws what SQLite throws (nothing of the batch is then durable). */
  apply(b: CommitBatch): CommitDone {
    const done: CommitDone = { dropped: 0, unrowed: 0 };
    const tx = this.db.transaction(() => {
      // Riders first: their rows do not depend on the batch's, and a rider's statement then governs the whole
      // transaction (test/store/queue-worker.test.ts limits the file's size on the Worker's connection that way).
      for (const [sql, args] of b.ops) {
        let s = this.riderStmts.get(sql);
        if (s === undefined) this.riderStmts.set(sql, (s = this.db.prepare(sql)));
        s.run(...args);
      }
      for (const i of b.items) this.insert.run(i.qid, i.account, i.device, i.kind, i.fromAccount, i.fromDevice, i.cid, i.seq, i.ts, i.body, i.conv);
      for (const qid of b.deletes) this.del.run(qid);
      // After the deletes: a row acked before its device was dropped is counted once (by the ack).
      for (const d of b.drops) done.dropped += this.drop.run(d.account, d.device).changes;
      for (const r of b.accepted) this.insertAccepted.run(r.sender, r.device, r.cid, r.to, r.seq, r.ts);
      for (const r of b.unconfirmed) this.insertUnconfirmed.run(r.sender, r.device, r.cid, r.to, r.seq, r.ts);
      for (const r of b.unrows) {
        done.unrowed += this.deleteUnconfirmed.run(r.sender, r.device, r.cid).changes;
        this.deleteAccepted.run(r.sender, r.device, r.cid);
      }
    });
    (this.immediate ? tx.immediate : tx)();
    return done;
  }
}

/**
 * Runs a shard's commits. `done` gets the result or the error, and `inWait` (true when it runs inside wait(), that is
 * inside some caller's synchronous flush, so its durable callbacks must wait for the end of the turn).
 */
export interface Committer {
  /** Whether done may run after commit() returns (the Worker): the shard then keeps the batch readable as in flight. */
  readonly async: boolean;
  /** Opens shard `index`'s connection (the file's schema is already in place). */
  add(index: number, db: Database, path: string): void;
  commit(index: number, batch: CommitBatch, done: (r: CommitDone | CommitError, inWait: boolean) => void): void;
  /** Another SQLite file the main thread writes: its WAL checkpoints run where the commits do (the Worker) or stay as they are (inline). */
  offload(db: Database, path: string): void;
  /** Blocks until shard `index` has no commit in flight (its done has run). Cold paths only: flush, expiry, close. */
  wait(index: number): void;
  close(): void;
}

export class InlineCommitter implements Committer {
  readonly async = false;
  private writers: ShardWriter[] = [];
  add(index: number, db: Database): void {
    this.writers[index] = new ShardWriter(db);
  }
  commit(index: number, batch: CommitBatch, done: (r: CommitDone | CommitError, inWait: boolean) => void): void {
    let r: CommitDone | CommitError;
    try {
      r = this.writers[index]!.apply(batch);
    } catch (e) {
      r = Object.assign(commitError(e), { cause: e });
    }
    done(r, false);
  }
  offload(): void {} // SQLite's own automatic checkpoints, on the event loop
  wait(): void {}
  close(): void {}
}

/** Items as columns (numbers, strings, one buffer of bodies): posting them costs about half of posting the objects. */
export interface PackedItems {
  nums: Float64Array;
  strs: string[];
  bodies: Uint8Array;
  lens: Uint32Array;
}

export function packItems(items: QueueItem[]): PackedItems {
  const n = items.length;
  const nums = new Float64Array(n * 6);
  const strs = new Array<string>(n * 4);
  const lens = new Uint32Array(n);
  let total = 0;
  for (const it of items) total += it.body.length;
  const bodies = new Uint8Array(total);
  let o = 0;
  for (let j = 0; j < n; j++) {
    const it = items[j]!;
    const b = j * 6;
    (nums[b] = it.qid), (nums[b + 1] = it.device), (nums[b + 2] = it.kind), (nums[b + 3] = it.fromDevice), (nums[b + 4] = it.seq), (nums[b + 5] = it.ts);
    const s = j * 4;
    (strs[s] = it.account), (strs[s + 1] = it.fromAccount), (strs[s + 2] = it.cid), (strs[s + 3] = it.conv);
    bodies.set(it.body, o);
    o += lens[j] = it.body.length;
  }
  return { nums, strs, bodies, lens };
}

export function unpackItems(p: PackedItems): QueueItem[] {
  const out: QueueItem[] = [];
  let o = 0;
  for (let j = 0; j < p.lens.length; j++) {
    const b = j * 6;
    const s = j * 4;
    const len = p.lens[j]!;
    out.push({
      qid: p.nums[b]!, device: p.nums[b + 1]!, kind: p.nums[b + 2]! as QueueItem["kind"], fromDevice: p.nums[b + 3]!, seq: p.nums[b + 4]!, ts: p.nums[b + 5]!,
      account: p.strs[s]!, fromAccount: p.strs[s + 1]!, cid: p.strs[s + 2]!, conv: p.strs[s + 3]!,
      body: p.bodies.subarray(o, o + len),
    });
    o += len;
  }
  return out;
}
