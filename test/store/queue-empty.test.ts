/**
 * A device with nothing queued is answered from memory, not from its shard file (issue 20: no queue read at a
 * login with an empty queue), and the fact is right after a restart. The proof that no read happened: a row
 * written into the file behind the store's back (a second SQLite connection) for a device that had nothing
 * at open is not seen by fetch, while a device that had rows at open is read as always; reopened, the store
 * finds the row.
 */
import { Database } from "bun:sqlite";
import { join } from "node:path";
import { describe, expect, test } from "bun:test";
import { hashName } from "../../src/core/hash.ts";
import { Metrics } from "../../src/core/metrics.ts";
import { SqliteDeliveryQueue } from "../../src/store/queue-sqlite.ts";
import { ItemKind, type DeliveryQueue, type QueueItem } from "../../src/store/queue.ts";
import { tempDirs } from "../helpers/tmpdirs.ts";

const SHARDS = 4;
type Committer = "inline" | "worker";
const open = (dir: string, committer: Committer) =>
  new SqliteDeliveryQueue(dir, { shards: SHARDS, commitMs: 1000, commitRows: 10_000, durability: "process", committer }, new Metrics());
const shardFile = (dir: string, account: string) => join(dir, "queues", `shard-${String(hashName(account) % SHARDS).padStart(3, "0")}.db`);

function item(q: DeliveryQueue, account: string, device: number, n: number): QueueItem {
  return {
    qid: q.nextQid(account), account, device, kind: ItemKind.MESSAGE, fromAccount: "sender", fromDevice: 1, conv: account,
    cid: `m${n}`, seq: n, ts: Date.now(), body: new Uint8Array([n & 255, 1, 2, 3]),
  };
}

/** A row the store did not write (as a foreign writer would); the store must not have read it if it answers []. */
function behindTheBack(dir: string, account: string, device: number, qid: number): void {
  const db = new Database(shardFile(dir, account));
  db.run("PRAGMA busy_timeout = 5000");
  db.run(
    "INSERT INTO items (qid, account, device, kind, from_account, from_device, cid, seq, ts, body, conv) VALUES (?, ?, ?, ?, 'sender', 1, 'x', 1, ?, ?, ?)",
    [qid, account, device, ItemKind.MESSAGE, Date.now(), new Uint8Array([9]), account],
  );
  db.close();
}

// Wherever the commits run (queue.committer): the reads are the main thread's connection's either way.
for (const committer of ["worker", "inline"] as const) describe(`empty queues are answered without a read (commits ${committer})`, () => {
  const fresh = tempDirs("sb-qempty-");

  test("a device empty at open is not read; a device with rows is; after a reopen both are right", () => {
    const dir = fresh();
    let q = open(dir, committer);
    q.append(item(q, "full", 1, 1), null);
    q.append(item(q, "full", 1, 2), null);
    q.flush();
    q.close();

    q = open(dir, committer);
    const qid = q.nextQid("empty") + 1000;
    behindTheBack(dir, "empty", 1, qid);
    behindTheBack(dir, "full", 1, q.nextQid("full") + 1000);
    expect(q.fetch("empty", 1, 0, 10)).toEqual([]); // empty at open and nothing appended since: no read
    expect(q.fetch("full", 1, 0, 10).map((i) => i.cid)).toEqual(["m1", "m2", "x"]); // had rows: read from the file
    // What this process appends is found (and acked away) without the file.
    const mine = item(q, "empty", 2, 3);
    q.append(mine, null);
    expect(q.fetch("empty", 2, 0, 10).map((i) => i.cid)).toEqual(["m3"]);
    expect(q.ack("empty", 2, mine.qid)).not.toBeNull();
    expect(q.fetch("empty", 2, 0, 10)).toEqual([]);
    q.flush();
    q.close();

    // Reopened (a restart): the fact is rebuilt from the file, so the row written behind the back is found.
    q = open(dir, committer);
    expect(q.fetch("empty", 1, 0, 10).map((i) => i.qid)).toEqual([qid]);
    expect(q.usage("empty", 1).n).toBe(1);
    expect(q.ack("empty", 1, qid)).not.toBeNull();
    expect(q.fetch("empty", 1, 0, 10)).toEqual([]);
    expect(q.fetch("empty", 2, 0, 10)).toEqual([]);
    q.close();
  });

  test("once every item of a device with rows at open is acked, it reads no more", () => {
    const dir = fresh();
    let q = open(dir, committer);
    const a = item(q, "gone", 1, 1);
    q.append(a, null);
    q.flush();
    q.close();
    q = open(dir, committer);
    expect(q.fetch("gone", 1, 0, 10).map((i) => i.qid)).toEqual([a.qid]);
    expect(q.ack("gone", 1, a.qid)).not.toBeNull();
    q.flush();
    behindTheBack(dir, "gone", 1, a.qid + 1000);
    expect(q.fetch("gone", 1, 0, 10)).toEqual([]); // its usage is exact now: zero, so no read
    q.close();
  });
});
