/**
 * The delivery queue with its commits on the commit Worker (queue.committer = "worker", src/store/queue-commit*.ts),
 * beyond the contract suite (test/store/queue.contract.test.ts runs every promise of the store against it too):
 * - a commit in flight when the Worker dies is committed by its replacement: the durable callback (`sent`) comes
 *   once, after the rows are on disk, and a reopen finds every item and the record;
 * - acks of items in a commit in flight are not lost: the items are deleted by the next commit, never fetched again;
 * - the main thread's connection never checkpoints: the Worker's does (the WAL does not grow without bound);
 * - a commit the Worker's disk refuses (a real SQLITE_FULL) goes back into the buffers whole, as inline, also
 *   with an ack made while it was in flight, and the retry commits it once;
 * - a retention sweep with nothing old forces no commit; other files' checkpoints run in the Worker too;
 * - a confirming sender's record confirmed while the commit writing its lazy row is in flight: the row is deleted.
 */
import { expect, test } from "bun:test";
import type { Worker } from "node:worker_threads";
import type { Database } from "bun:sqlite";
import { statSync } from "node:fs";
import { join } from "node:path";
import { Metrics } from "../../src/core/metrics.ts";
import { StorageAlarm } from "../../src/store/errors.ts";
import { openDatabase } from "../../src/store/sqlite.ts";
import { ItemKind, type QueueItem } from "../../src/store/queue.ts";
import { SqliteDeliveryQueue } from "../../src/store/queue-sqlite.ts";
import { tempDirs } from "../helpers/tmpdirs.ts";

const fresh = tempDirs("sb-queue-worker-");
const open = (dir: string, metrics = new Metrics(), commitRows = 3) =>
  new SqliteDeliveryQueue(dir, { shards: 1, commitMs: 60_000, commitRows, durability: "process", committer: "worker" }, metrics);

function item(q: SqliteDeliveryQueue, account: string, n: number): QueueItem {
  return {
    qid: q.nextQid(account), account, device: 1, kind: ItemKind.MESSAGE, fromAccount: "s", fromDevice: 1, conv: account,
    cid: `m${n}`, seq: n, ts: 1000 + n, body: new Uint8Array(200).fill(n & 255),
  };
}

/** The queue's Worker thread: the test ends it as a crash would (the queue must not know it was a test). */
const workerOf = (q: SqliteDeliveryQueue) => (q as unknown as { committer: { worker: Worker } }).committer.worker;

async function until(ok: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 2000 && !ok(); i++) await Bun.sleep(5);
  if (!ok()) throw new Error(`gave up waiting: ${what}`);
}

test("a commit in flight when the Worker dies is committed by the next one; sent once, after the rows are durable", async () => {
  const dir = fresh();
  const metrics = new Metrics();
  const q = open(dir, metrics);
  let durable = 0;
  const acc = q.begin({ sender: "s", device: 1, cid: "c1", to: "bob", seq: 1, ts: 1001 }, () => durable++);
  const first = workerOf(q);
  q.append(item(q, "bob", 0), acc);
  q.release(acc);
  q.append(item(q, "bob", 1), null);
  q.append(item(q, "bob", 2), null); // commit_rows: the commit is posted, in flight
  void first.terminate(); // before or after it committed: either way the batch is posted again
  await until(() => durable === 1, "the durable callback");
  // Its reply may have come before the thread ended: then the replacement follows the exit.
  await until(() => workerOf(q) !== first, "the Worker replaced");
  expect(metrics.render()).toContain("switchboard_queue_committer_restarts_total 1");
  await Bun.sleep(50);
  expect(durable).toBe(1);
  const other = open(dir); // what a restart would find: every row once, and the record
  expect(other.fetch("bob", 1, 0, 10).map((i) => i.cid)).toEqual(["m0", "m1", "m2"]);
  expect(other.recall("s", 1, "c1")?.to).toBe("bob");
  other.close();
  q.close();
});

test("acks of items in a commit in flight: deleted by the next commit, never fetched or acked twice", async () => {
  const dir = fresh();
  const q = open(dir);
  const items = [item(q, "carol", 0), item(q, "carol", 1), item(q, "carol", 2)];
  for (const it of items) q.append(it, null); // the third posts the commit
  // Whatever the Worker has done by now, the items are in flight or committed, and an ack finds each once.
  expect(q.ack("carol", 1, items[0]!.qid)?.cid).toBe("m0");
  expect(q.ack("carol", 1, items[0]!.qid)).toBeNull();
  expect(q.fetch("carol", 1, 0, 10).map((i) => i.cid)).toEqual(["m1", "m2"]);
  expect(q.usage("carol", 1).n).toBe(2);
  q.flush();
  expect(q.ack("carol", 1, items[0]!.qid)).toBeNull();
  const other = open(dir);
  expect(other.fetch("carol", 1, 0, 10).map((i) => i.cid)).toEqual(["m1", "m2"]);
  other.close();
  q.close();
});

test("the WAL is checkpointed by the Worker's connection (the main thread's never checkpoints)", () => {
  const dir = fresh();
  const q = open(dir, new Metrics(), 100);
  // About 8 MB through the WAL, well past the automatic checkpoint's 1000 pages (4 MB): without a checkpoint the
  // WAL would hold all of it; with the Worker's PASSIVE checkpoints it is reused from the start.
  for (let round = 0; round < 400; round++) {
    const its = Array.from({ length: 100 }, (_, i) => item(q, "dave", round * 100 + i));
    for (const it of its) q.append(it, null);
    q.flush();
    for (const it of its) q.ack("dave", 1, it.qid);
    q.flush();
  }
  const wal = statSync(join(dir, "queues", "shard-000.db-wal")).size;
  expect(wal).toBeLessThan(6 * 1024 * 1024);
  q.close();
});

test("a commit the Worker's disk refuses: alarm raised, nothing durable, an ack made while it was in flight holds; the retry commits the rest once", async () => {
  const dir = fresh();
  const alarm = new StorageAlarm();
  const q = new SqliteDeliveryQueue(dir, { shards: 1, commitMs: 60_000, commitRows: 3, durability: "process", committer: "worker" }, new Metrics(), alarm);
  // A real SQLITE_FULL on the Worker's own connection: a rider's statement holds the file to `limit` pages in every
  // commit (riders run first in the transaction), as test/store/queue-disk-fault.test.ts does on the inline one.
  let limit = 1073741823;
  let db: Database | null = null;
  q.ride({ attach: (_s, d) => void (db = d), write: (_s, _items, _now, out) => out.run(`PRAGMA max_page_count = ${limit}`, []) });
  q.append(item(q, "erin", 0), null);
  q.flush();
  limit = (db!.query("PRAGMA page_count").get() as { page_count: number }).page_count;
  let durable = 0;
  const acc = q.begin({ sender: "s", device: 1, cid: "full", to: "erin", seq: 1, ts: 1001 }, () => durable++);
  const big = [1, 2, 3].map((n) => ({ ...item(q, "erin", n), body: new Uint8Array(8000).fill(n) }));
  for (const it of big) q.append(it, acc); // the third posts the commit; it will not fit
  q.release(acc);
  expect(q.ack("erin", 1, big[1]!.qid)?.cid).toBe("m2"); // acknowledged while in flight
  await until(() => alarm.active, "the storage alarm");
  expect(alarm.first()?.cause).toBe("disk_full");
  expect(durable).toBe(0);
  expect(q.fetch("erin", 1, 0, 10).map((i) => i.cid)).toEqual(["m0", "m1", "m3"]); // m2 stays acknowledged
  expect(q.ack("erin", 1, big[1]!.qid)).toBeNull();
  limit = 1073741823; // space again: the retry (COMMIT_RETRY_MS) commits
  await until(() => durable === 1, "the durable callback after the retry");
  expect(alarm.active).toBe(false);
  const other = open(dir);
  expect(other.fetch("erin", 1, 0, 10).map((i) => i.cid)).toEqual(["m0", "m1", "m3"]);
  expect(other.recall("s", 1, "full")?.to).toBe("erin");
  other.close();
  q.close();
});

test("a retention sweep with nothing old enough forces no commit (the event loop waits for no reply); one with something old expires it", () => {
  const dir = fresh();
  const metrics = new Metrics();
  const q = open(dir, metrics, 10_000);
  const commits = () => Number(/^switchboard_queue_commits_total (\d+)$/m.exec(metrics.render())?.[1] ?? "0");
  const now = Date.now();
  const young = { ...item(q, "gus", 1), ts: now };
  q.append(young, null);
  q.flush();
  const before = commits();
  q.append({ ...item(q, "gus", 2), ts: now }, null); // buffered
  expect(q.expire(now - 86_400_000)).toEqual([]);
  expect(commits()).toBe(before); // the buffered item is still only buffered
  expect(q.shardStats()[0]!.depth).toBe(2);
  const old = { ...item(q, "gus", 3), ts: now - 2 * 86_400_000 };
  q.append(old, null);
  expect(q.expire(now - 86_400_000).map((i) => i.cid)).toEqual(["m3"]);
  expect(commits()).toBeGreaterThan(before);
  expect(q.fetch("gus", 1, 0, 10).map((i) => i.cid)).toEqual(["m1", "m2"]);
  q.close();
});

test("another file the main thread writes (accounts.db, a module's) is checkpointed by the Worker: its main connection never checkpoints", async () => {
  const dir = fresh();
  const q = open(dir);
  const path = join(dir, "other.db");
  const db = openDatabase(path);
  db.exec("CREATE TABLE t (b BLOB)");
  q.offloadCheckpoints(db, path);
  // 2 MB in 500 small commits, under the 1000 pages (4 MB) of SQLite's own automatic checkpoint anyway: the rows
  // reach the file itself only through a checkpoint, and this connection runs none.
  const ins = db.prepare("INSERT INTO t VALUES (?)");
  for (let i = 0; i < 500; i++) ins.run(new Uint8Array(4000).fill(i & 255));
  await until(() => statSync(path).size > 1024 * 1024, "the rows checkpointed into other.db");
  expect((db.query("SELECT COUNT(*) AS n FROM t").get() as { n: number }).n).toBe(500);
  q.close();
  db.close();
});

test("a lazy record confirmed while the commit that writes its row is in flight: the row is deleted by the next commit", async () => {
  const dir = fresh();
  const q = open(dir);
  // The shard's timer commits, run by hand: the record is written by the second, as a window's timers would do it.
  const shard = (q as unknown as { shards: { onTimer(): void }[] }).shards[0]!;
  const rec = { sender: "s", device: 1, cid: "late", to: "hal", seq: 1, ts: Date.now() };
  let durable = 0;
  const acc = q.begin(rec, () => durable++, true);
  const it = item(q, "hal", 0);
  q.append(it, acc);
  q.release(acc);
  q.ack("hal", 1, it.qid); // write-back hit: `sent` may go, the record waits lazily in its home shard
  await Bun.sleep(0); // durable callbacks run at the end of the turn
  expect(durable).toBe(1);
  shard.onTimer(); // it has not waited a whole window yet: kept
  shard.onTimer(); // now it has: its row is in this commit, posted to the Worker and in flight
  // The sender confirms before the reply is taken (the reply can only come in a later turn, or in a wait): the
  // record is not needed; the row the commit writes must not stay (in the lean client's pairs --confirm on it did,
  // about one in five messages on a busy machine, until the retention's month).
  q.confirm(acc);
  q.flush();
  expect(q.recall("s", 1, "late")).toBeNull();
  q.close();
  const other = open(dir);
  expect(other.recall("s", 1, "late")).toBeNull();
  other.close();
});
