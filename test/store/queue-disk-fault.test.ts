/**
 * The SQLite queue when its file cannot grow (issue 17), on a real SQLITE_FULL:
 * the shard file is held to `PRAGMA max_page_count` (as test/store/errors.test.ts
 * does), reached through the commit-rider seam every shard offers.
 * - a commit that fails raises the alarm and keeps the batch; nothing is durable;
 * - dropping a device then (a device revoked, an account deleted: already
 *   durable in accounts.db) does not throw: its buffered copies go at once
 *   (their acceptance settles as an ack would settle it), nothing of it is
 *   fetched any more, and its committed rows are deleted by the first commit
 *   that succeeds, which also clears the alarm and makes the rest durable;
 * - after a reopen the dropped device has nothing, the others all they had.
 * Both places a commit runs (queue.committer): the limit is a rider's statement, so it holds on the connection that
 * commits (the main thread's inline, the Worker's own with the Worker).
 */
import { afterAll, expect, test } from "bun:test";
import type { Database } from "bun:sqlite";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Metrics } from "../../src/core/metrics.ts";
import { StorageAlarm } from "../../src/store/errors.ts";
import { ItemKind, type QueueItem } from "../../src/store/queue.ts";
import { SqliteDeliveryQueue } from "../../src/store/queue-sqlite.ts";

const root = mkdtempSync(join(tmpdir(), "sb-queue-fault-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const open = (dir: string, committer: "inline" | "worker", alarm: StorageAlarm | null) =>
  new SqliteDeliveryQueue(dir, { shards: 1, commitMs: 60_000, commitRows: 10_000, durability: "process", committer }, new Metrics(), alarm);

function item(q: SqliteDeliveryQueue, account: string, device: number, n: number): QueueItem {
  return {
    qid: q.nextQid(account), account, device, kind: ItemKind.MESSAGE, fromAccount: "alice", fromDevice: 1, conv: "alice",
    cid: `m${n}`, seq: n, ts: 1000 + n, body: new Uint8Array(4000).fill(n & 255),
  };
}

for (const committer of ["inline", "worker"] as const) test(`a device dropped while the shard cannot commit: no throw, gone from fetch at once, deleted by the first commit that succeeds (commits ${committer})`, () => {
  const dir = join(root, committer);
  const alarm = new StorageAlarm();
  const q = open(dir, committer, alarm);
  let db: Database | null = null;
  let limit = 1073741823;
  // In every commit's transaction, on the connection that commits (riders' statements run first).
  q.ride({ attach: (_shard, d) => void (db = d), write: (_s, _items, _now, out) => out.run(`PRAGMA max_page_count = ${limit}`, []) });
  for (let n = 1; n <= 3; n++) q.append(item(q, "bob", 1, n), null);
  q.append(item(q, "carol", 1, 4), null);
  q.flush();
  expect(alarm.active).toBe(false);

  // The file may not grow: the next commit (new 4 KB rows) fails with SQLITE_FULL and is rolled back whole.
  limit = (db!.query("PRAGMA page_count").get() as { page_count: number }).page_count;
  let durable = 0;
  const acc = q.begin({ sender: "alice", device: 1, to: "bob", cid: "m5", seq: 5, ts: 1005 }, () => durable++);
  q.append(item(q, "bob", 1, 5), acc);
  q.append(item(q, "bob", 1, 6), acc);
  q.append(item(q, "carol", 1, 7), null);
  q.release(acc);
  q.flush();
  expect(alarm.active).toBe(true);
  expect(alarm.first()?.cause).toBe("disk_full");
  expect(durable).toBe(0);

  // The drop: its two buffered copies go now; the three committed rows wait for a commit.
  expect(q.dropDevice("bob", 1)).toBe(2);
  expect(q.fetch("bob", 1, 0, 100)).toEqual([]);
  expect(q.fetch("carol", 1, 0, 100).map((i) => i.seq)).toEqual([4, 7]);
  q.flush(); // still refused: carol's item 7 needs a new page
  expect(alarm.active).toBe(true);
  expect(durable).toBe(0);

  // Space again: one commit deletes bob's rows, writes carol's item and the acceptance record, clears the alarm.
  limit = 1073741823;
  q.flush();
  expect(alarm.active).toBe(false);
  expect(durable).toBe(1);
  expect(q.shardStats()[0]!.depth).toBe(2);
  expect(q.usage("bob", 1)).toEqual({ n: 0, bytes: 0 });
  q.close();

  const again = open(dir, committer, null);
  expect(again.fetch("bob", 1, 0, 100)).toEqual([]);
  expect(again.fetch("carol", 1, 0, 100).map((i) => i.seq)).toEqual([4, 7]);
  expect(again.recall("alice", 1, "m5")).toMatchObject({ to: "bob", seq: 5 });
  expect(again.shardStats()[0]!.depth).toBe(2);
  again.close();
});
