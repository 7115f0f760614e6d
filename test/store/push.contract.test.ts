/**
 * The PushJobStore contract. Every backend runs this suite through a factory
 * (as the queue's does); today there is one, SQLite, riding on the queue's
 * group commit. The commit tests read the shard file through a second,
 * independent connection: what it sees is what a crash at that moment leaves.
 */
import { describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { join } from "node:path";
import { Metrics } from "../../src/core/metrics.ts";
import { hashName } from "../../src/core/hash.ts";
import { ItemKind, type QueueItem } from "../../src/store/queue.ts";
import { SqliteDeliveryQueue } from "../../src/store/queue-sqlite.ts";
import { PushStage, type PushJobStore } from "../../src/store/push.ts";
import { SqlitePushJobs } from "../../src/store/push-sqlite.ts";
import { tempDirs } from "../helpers/tmpdirs.ts";

const SHARDS = 4;

interface Opened {
  queue: SqliteDeliveryQueue;
  jobs: PushJobStore & { setFilter(f: ((it: QueueItem) => boolean) | null): void };
  /** What a crash now would leave of a device's job: read from the file by another connection. */
  onDisk(account: string, device: number): { n: number; id: string } | null;
  close(): void;
}

// The jobs ride the queue's commits wherever they run: on the event loop, or in the commit Worker (queue.committer).
const backends: { name: string; open(dir: string): Opened }[] = (["inline", "worker"] as const).map((committer) => ({
  name: `sqlite (in the queue's shard files, commits ${committer})`,
  open(dir: string): Opened {
    const queue = new SqliteDeliveryQueue(dir, { shards: SHARDS, commitMs: 60_000, commitRows: 100_000, durability: "process", committer }, new Metrics());
    const jobs = new SqlitePushJobs(SHARDS);
    queue.ride(jobs);
    return {
      queue, jobs,
      onDisk(account, device) {
        const db = new Database(join(dir, "queues", `shard-${String(hashName(account) % SHARDS).padStart(3, "0")}.db`), { readonly: true });
        try {
          return (db.query("SELECT n, id FROM push_jobs WHERE account = ? AND device = ?").get(account, device) as { n: number; id: string } | null) ?? null;
        } finally {
          db.close();
        }
      },
      close: () => queue.close(),
    };
  },
}));

let n = 0;
function item(q: SqliteDeliveryQueue, account: string, device: number, kind: ItemKind = ItemKind.MESSAGE): QueueItem {
  n++;
  return { qid: q.nextQid(account), account, device, kind, fromAccount: "alice", fromDevice: 1, conv: "alice", cid: `m${n}`, seq: n, ts: Date.now(), body: new Uint8Array([1, 2, 3]) };
}

for (const b of backends) {
  describe(`PushJobStore contract: ${b.name}`, () => {
    const fresh = tempDirs("sb-push-");

    test("a job is durable in the same commit as the items that asked for it, never before; items collapse into one job", () => {
      const s = b.open(fresh());
      s.jobs.setFilter((it) => it.kind === ItemKind.MESSAGE);
      for (let i = 0; i < 10; i++) s.queue.append(item(s.queue, "bob", 1), null);
      s.queue.append(item(s.queue, "bob", 1, ItemKind.RECEIPT), null);
      expect(s.onDisk("bob", 1)).toBeNull(); // buffered items: a crash now loses them and their wake-up together
      s.queue.flush();
      const first = s.onDisk("bob", 1);
      expect(first?.n).toBe(10); // the receipt did not count
      for (let i = 0; i < 5; i++) s.queue.append(item(s.queue, "bob", 1), null);
      s.queue.flush();
      expect(s.onDisk("bob", 1)).toEqual({ n: 15, id: first!.id }); // collapsed: same job, same key
      expect(s.jobs.count()).toBe(1);
      s.close();
    });

    test("jobsOf and putJobs (a shard move): rows as they are, replaced, committed at once; later items collapse into them", () => {
      const dir = fresh();
      const s = b.open(dir);
      s.jobs.setFilter((it) => it.kind === ItemKind.MESSAGE);
      s.jobs.open({ account: "mover", device: 1, n: 2 }, 1000);
      const j = s.jobs.get("mover", 1)!;
      expect(s.jobs.advance("mover", 1, j.id, PushStage.SILENT, PushStage.ALERT, 5000, 1200)).toBe(true);
      const rows = s.jobs.jobsOf([{ account: "mover", device: 1 }, { account: "mover", device: 2 }]);
      expect(rows).toEqual([{ ...j, stage: PushStage.ALERT, due: 5000, sentAt: 1200 }]);
      const t = b.open(fresh());
      t.jobs.setFilter((it) => it.kind === ItemKind.MESSAGE);
      t.jobs.open({ account: "mover", device: 1, n: 7 }, 900); // what a failed earlier move left: replaced
      t.jobs.putJobs(rows);
      expect(t.onDisk("mover", 1)).toEqual({ n: 2, id: j.id }); // on disk before any commit
      t.queue.append(item(t.queue, "mover", 1), null);
      t.queue.flush();
      expect(t.jobs.get("mover", 1)).toEqual({ ...rows[0]!, n: 3 }); // collapsed: same id, stage and due
      s.close();
      t.close();
    });

    test("limitsOf (a shard move): the limits of the devices asked for, as saved, none for a device without", () => {
      const s = b.open(fresh());
      const row = { account: "mover", device: 1, silentAt: 5000, alertTokens: 1.5, alertAt: 6000 };
      s.jobs.saveLimits(row);
      s.jobs.saveLimits({ ...row, account: "other" });
      expect(s.jobs.limitsOf([{ account: "mover", device: 1 }, { account: "mover", device: 2 }])).toEqual([row]);
      s.close();
    });

    test("items acknowledged before their commit (write-back hits) and items the filter refuses write no job", () => {
      const s = b.open(fresh());
      s.jobs.setFilter((it) => it.account !== "online");
      const it = item(s.queue, "carol", 1);
      s.queue.append(it, null);
      s.queue.ack("carol", 1, it.qid);
      s.queue.append(item(s.queue, "online", 1), null);
      s.queue.flush();
      expect(s.jobs.count()).toBe(0);
      s.jobs.setFilter(null);
      s.queue.append(item(s.queue, "dave", 1), null);
      s.queue.flush();
      expect(s.jobs.count()).toBe(0);
      s.close();
    });

    test("close of a device in a file that never held a job runs no statement; a job from a commit, open, putJobs or an earlier run is closed", () => {
      const dir = fresh();
      const shardFile = (account: string) => join(dir, "queues", `shard-${String(hashName(account) % SHARDS).padStart(3, "0")}.db`);
      // A row written behind the store's back (a second connection) into a file that had no job at open: close()
      // answers null and leaves it, which proves it ran no DELETE (every login calls it: PushService.connected).
      let s = b.open(dir);
      const foreign = new Database(shardFile("ghost"));
      foreign.run("PRAGMA busy_timeout = 5000");
      foreign.run(`INSERT INTO push_jobs (account, device, id, created, due, stage, n) VALUES ('ghost', 1, 'x', 1, 1, ${PushStage.SILENT}, 1)`);
      foreign.close();
      expect(s.jobs.close("ghost", 1)).toBeNull();
      expect(s.onDisk("ghost", 1)).toEqual({ n: 1, id: "x" });
      // A job the store wrote, in each of its ways, is closed as before.
      s.jobs.setFilter((it) => it.kind === ItemKind.MESSAGE);
      s.queue.append(item(s.queue, "erin", 1), null);
      s.queue.flush();
      expect(s.jobs.close("erin", 1)?.n).toBe(1);
      s.jobs.open({ account: "fay", device: 1, n: 2 }, 1000);
      expect(s.jobs.close("fay", 1)?.n).toBe(2);
      s.jobs.putJobs([{ account: "gil", device: 1, id: "g", created: 1, due: 1, stage: PushStage.SILENT, n: 3, attempts: 0, sentAt: 0 }]);
      expect(s.jobs.close("gil", 1)?.n).toBe(3);
      s.close();
      // Reopened, the file holds the foreign row: it is seen and closed.
      s = b.open(dir);
      expect(s.jobs.close("ghost", 1)?.id).toBe("x");
      expect(s.onDisk("ghost", 1)).toBeNull();
      s.close();
    });

    test("jobs survive a reopen; due lists the earliest first and honours the limit", () => {
      const dir = fresh();
      let s = b.open(dir);
      for (const [i, a] of ["a1", "a2", "a3"].entries()) s.jobs.open({ account: a, device: 1, n: 1 }, 1000 + i);
      s.close();
      s = b.open(dir);
      expect(s.jobs.due(999, 10)).toEqual([]);
      expect(s.jobs.due(5000, 2).map((j) => j.account)).toEqual(["a1", "a2"]);
      const j = s.jobs.get("a3", 1)!;
      expect(j).toMatchObject({ stage: PushStage.SILENT, n: 1, attempts: 0, sentAt: 0, created: 1002, due: 1002 });
      s.close();
    });

    test("expired lists jobs opened at or before a time, open or done, oldest first, across shards, up to the limit", () => {
      const s = b.open(fresh());
      for (const [i, a] of ["e1", "e2", "e3", "e4", "e5"].entries()) s.jobs.open({ account: a, device: 1, n: 1 }, 1000 + i);
      const done = s.jobs.get("e2", 1)!;
      expect(s.jobs.advance("e2", 1, done.id, PushStage.SILENT, PushStage.DONE, 9999, 1500)).toBe(true);
      expect(s.jobs.expired(999, 10)).toEqual([]);
      expect(s.jobs.expired(1002, 10).map((j) => j.account)).toEqual(["e1", "e2", "e3"]);
      expect(s.jobs.expired(9000, 2).map((j) => j.account)).toEqual(["e1", "e2"]);
      s.close();
    });

    test("handOver leases the job (due, attempts + 1) and writes the charged limits with it; without limits, only the lease", () => {
      const dir = fresh();
      let s = b.open(dir);
      s.jobs.open({ account: "h1", device: 1, n: 1 }, 100);
      const j = s.jobs.get("h1", 1)!;
      expect(s.jobs.handOver("h1", 1, j.id, 5000, { account: "h1", device: 1, silentAt: 100, alertTokens: 0, alertAt: 0 })).toBe(true);
      expect(s.jobs.handOver("h1", 1, j.id, 9000, null)).toBe(true);
      expect(s.jobs.handOver("h1", 1, "not-its-id", 1, null)).toBe(false);
      s.close();
      s = b.open(dir); // what a crash leaves
      expect(s.jobs.get("h1", 1)).toMatchObject({ id: j.id, due: 9000, attempts: 2 });
      expect(s.jobs.due(8999, 10)).toEqual([]);
      expect(s.jobs.limits(0)).toEqual([{ account: "h1", device: 1, silentAt: 100, alertTokens: 0, alertAt: 0 }]);
      s.close();
    });

    test("limits outlive jobs and reopens; limits(since) and dropLimits(before) by the later of the two times", () => {
      const dir = fresh();
      let s = b.open(dir);
      s.jobs.saveLimits({ account: "l1", device: 1, silentAt: 5000, alertTokens: 1.5, alertAt: 0 });
      s.jobs.saveLimits({ account: "l2", device: 2, silentAt: 0, alertTokens: 0.25, alertAt: 7000 });
      s.jobs.saveLimits({ account: "l1", device: 1, silentAt: 6000, alertTokens: 2, alertAt: 100 }); // replaces
      s.jobs.open({ account: "l1", device: 1, n: 1 }, 10);
      s.jobs.close("l1", 1);
      s.close();
      s = b.open(dir);
      const all = s.jobs.limits(0).sort((x, y) => x.account.localeCompare(y.account));
      expect(all).toEqual([
        { account: "l1", device: 1, silentAt: 6000, alertTokens: 2, alertAt: 100 },
        { account: "l2", device: 2, silentAt: 0, alertTokens: 0.25, alertAt: 7000 },
      ]);
      expect(s.jobs.limits(6000).map((r) => r.account)).toEqual(["l2"]);
      s.jobs.dropLimits(6000);
      expect(s.jobs.limits(0).map((r) => r.account)).toEqual(["l2"]);
      s.close();
    });

    test("advance moves a job only from the stage that was sent (a repeated result changes nothing); postpone and close by id", () => {
      const s = b.open(fresh());
      s.jobs.open({ account: "bob", device: 2, n: 3 }, 100);
      const j = s.jobs.get("bob", 2)!;
      expect(s.jobs.advance("bob", 2, j.id, PushStage.SILENT, PushStage.ALERT, 500, 200)).toBe(true);
      expect(s.jobs.advance("bob", 2, j.id, PushStage.SILENT, PushStage.ALERT, 900, 300)).toBe(false);
      expect(s.jobs.get("bob", 2)).toMatchObject({ stage: PushStage.ALERT, due: 500, sentAt: 200 });
      expect(s.jobs.due(499, 10)).toEqual([]);
      expect(s.jobs.postpone("bob", 2, j.id, 800, true)).toBe(true);
      expect(s.jobs.get("bob", 2)).toMatchObject({ due: 800, attempts: 1 });
      expect(s.jobs.postpone("bob", 2, "other-id", 1, true)).toBe(false);
      expect(s.jobs.advance("bob", 2, j.id, PushStage.ALERT, PushStage.DONE, 800, 850)).toBe(true);
      expect(s.jobs.due(10_000, 10)).toEqual([]); // done: nothing more to send
      s.jobs.open({ account: "bob", device: 2, n: 4 }, 900);
      expect(s.jobs.get("bob", 2)).toMatchObject({ stage: PushStage.DONE, n: 7, id: j.id }); // still collapses until closed
      expect(s.jobs.close("bob", 2, "other-id")).toBeNull();
      expect(s.jobs.close("bob", 2, j.id)?.n).toBe(7);
      expect(s.jobs.get("bob", 2)).toBeNull();
      expect(s.jobs.close("bob", 2)).toBeNull();
      s.close();
    });

    test("a commit that rolls back takes its jobs with it", () => {
      const s = b.open(fresh());
      let calls = 0;
      s.jobs.setFilter(() => {
        if (++calls === 2) throw new Error("boom inside the commit");
        return true;
      });
      s.queue.append(item(s.queue, "eve", 1), null);
      s.queue.append(item(s.queue, "eve", 1), null);
      expect(() => s.queue.flush()).toThrow("boom");
      expect(s.onDisk("eve", 1)).toBeNull();
      s.jobs.setFilter(null);
      try {
        s.close();
      } catch {
        // the queue's own handling of a failed commit is its contract suite's business
      }
    });
  });
}
