/**
 * The start-up load of acceptance keys (src/store/queue-sqlite.ts loadKeys): the queue opens without scanning its
 * `accepted` tables, answers recalls exactly while shards are still loading (their tables are read), loads the
 * keys a chunk at a time after the start, and then misses none (a key skipped by the chunked scan would make
 * recall answer null for a stored record).
 */
import { expect, test } from "bun:test";
import { Metrics } from "../../src/core/metrics.ts";
import { SqliteDeliveryQueue } from "../../src/store/queue-sqlite.ts";
import { ItemKind } from "../../src/store/queue.ts";
import { hashName } from "../../src/core/hash.ts";
import { tempDirs } from "../helpers/tmpdirs.ts";

const fresh = tempDirs("sb-keys-load-");
const open = (dir: string, committer: "inline" | "worker") =>
  new SqliteDeliveryQueue(dir, { shards: 4, commitMs: 1000, commitRows: 100_000, durability: "process", committer }, new Metrics());

// Wherever the commits run (queue.committer): the load reads the main thread's connection either way.
for (const committer of ["worker", "inline"] as const) test(`recall is exact before, during and after the chunked load of 25 000 stored keys (commits ${committer})`, async () => {
  const dir = fresh();
  let q = open(dir, committer);
  const recs = [];
  // One sender: every record without copies commits in its shard, so that shard needs several chunks.
  for (let i = 0; i < 25_000; i++) recs.push({ sender: "old", device: 1, cid: `c${i}`, to: "bob", seq: i + 1, ts: 1000 + i });
  for (const r of recs) q.release(q.begin(r, () => {}));
  // A record in another shard than its sender's: it commits with its last copy, in the recipient's shard.
  let carol = "carol";
  for (let i = 0; hashName(carol) % 4 === hashName("old") % 4; i++) carol = `carol${i}`;
  const far = { sender: "old", device: 2, cid: "far", to: carol, seq: 1, ts: 5 };
  const acc = q.begin(far, () => {});
  const qid = q.nextQid(carol);
  q.append({ account: carol, device: 1, qid, kind: ItemKind.MESSAGE, fromAccount: "old", fromDevice: 2, conv: "", cid: "far", seq: 1, ts: 5, body: new Uint8Array([1]) }, acc);
  q.release(acc);
  q.flush();
  q.close();

  q = open(dir, committer);
  expect(q.shardsLoading).toBe(4); // nothing scanned while opening
  expect(q.recall("old", 2, "far")).toEqual(far); // read from the tables: the filter is still empty
  expect(q.recall("old", 1, "c24999")).toEqual(recs[24_999]!);
  expect(q.recall("old", 1, "new")).toBeNull();
  let seenPartial = false;
  const deadline = Date.now() + 60_000;
  while (q.shardsLoading > 0 && Date.now() < deadline) {
    if (q.shardsLoading < 4) seenPartial = true;
    await Bun.sleep(0);
  }
  expect(q.shardsLoading).toBe(0);
  expect(seenPartial).toBe(true); // loaded over several turns, not in one
  let missing = 0;
  for (const r of recs) if (q.recall(r.sender, r.device, r.cid) === null) missing++;
  expect(missing).toBe(0);
  expect(q.recall("old", 2, "far")).toEqual(far);
  expect(q.recall("old", 1, "new")).toBeNull();
  q.close();
});
