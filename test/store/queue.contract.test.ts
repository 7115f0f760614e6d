/**
 * The DeliveryQueue contract. Every backend runs this suite by passing a
 * factory for itself (Hono's common.case.test); today there is one, SQLite.
 */
import { describe, expect, test } from "bun:test";
import { Metrics } from "../../src/core/metrics.ts";
import { ItemKind, type DeliveryQueue, type QueueItem } from "../../src/store/queue.ts";
import { SqliteDeliveryQueue } from "../../src/store/queue-sqlite.ts";
import { hashName } from "../../src/core/hash.ts";
import { tempDirs } from "../helpers/tmpdirs.ts";

interface Backend {
  name: string;
  /** Opens (or reopens, with the same `dir`) a queue. */
  open(dir: string, opts?: { commitRows?: number; commitMs?: number }): DeliveryQueue;
  /** Which file (or other unit of commit) an account's queues are in. */
  shardOf(account: string): number;
}

const backends: Backend[] = [
  {
    name: "sqlite",
    open: (dir, o = {}) =>
      new SqliteDeliveryQueue(dir, { shards: 4, commitMs: o.commitMs ?? 1000, commitRows: o.commitRows ?? 10_000, durability: "process", committer: "inline" }, new Metrics()),
    shardOf: (account) => hashName(account) % 4,
  },
  {
    // The same store with its commits on the commit Worker (queue.committer = "worker"): flush() blocks until the
    // Worker has committed, so every promise below holds as it does inline.
    name: "sqlite, commits in a Worker",
    open: (dir, o = {}) =>
      new SqliteDeliveryQueue(
        dir,
        { shards: 4, commitMs: o.commitMs ?? 1000, commitRows: o.commitRows ?? 10_000, durability: "process", committer: "worker" },
        new Metrics(),
      ),
    shardOf: (account) => hashName(account) % 4,
  },
];

function item(q: DeliveryQueue, account: string, device: number, n: number): QueueItem {
  return {
    qid: q.nextQid(account), account, device, kind: ItemKind.MESSAGE, fromAccount: "sender", fromDevice: 1, conv: account,
    cid: `m${n}`, seq: n, ts: 1000 + n, body: new Uint8Array([n & 255, 1, 2, 3]),
  };
}

for (const b of backends) {
  describe(`DeliveryQueue contract: ${b.name}`, () => {
    const fresh = tempDirs("sb-queue-");

    test("qids increase and are never reused across a reopen", () => {
      const dir = fresh();
      let q = b.open(dir);
      const a = [q.nextQid("alice"), q.nextQid("alice"), q.nextQid("alice")];
      expect(a[0]! < a[1]! && a[1]! < a[2]!).toBe(true);
      const it = item(q, "alice", 1, 1);
      q.append(it, null);
      q.close();
      q = b.open(dir);
      expect(q.nextQid("alice")).toBeGreaterThan(it.qid);
      q.close();
    });

    test("recordsOf (shard moves): every durable record of the senders, in any file, none of others", async () => {
      const dir = fresh();
      let q = b.open(dir);
      const recs = ["a1", "a2", "a3"].map((cid, i) => ({ sender: i < 2 ? "mover" : "other", device: 1, cid, to: `r${i}`, seq: i + 1, ts: 5 }));
      await Promise.all(recs.map((r) => new Promise<void>((resolve) => q.release(q.begin(r, resolve)))).concat([Promise.resolve(q.flush())]));
      q.close();
      q = b.open(dir);
      expect(q.recordsOf(["mover"]).map((r) => r.cid).sort()).toEqual(["a1", "a2"]);
      expect(q.recordsOf(["mover", "other"]).length).toBe(3);
      expect(q.recordsOf(["nobody"])).toEqual([]);
      q.close();
    });

    test("fetch returns a device's items in qid order, committed or not, and only that device's", () => {
      const q = b.open(fresh());
      const items = Array.from({ length: 10 }, (_, i) => item(q, "bob", 1 + (i % 2), i));
      for (const it of items.slice(0, 6)) q.append(it, null);
      q.flush(); // the first six committed, the rest still buffered
      for (const it of items.slice(6)) q.append(it, null);
      const dev1 = q.fetch("bob", 1, 0, 100);
      expect(dev1.map((i) => i.cid)).toEqual(["m0", "m2", "m4", "m6", "m8"]);
      expect(q.fetch("bob", 1, dev1[1]!.qid, 2).map((i) => i.cid)).toEqual(["m4", "m6"]);
      expect(q.fetch("bob", 3, 0, 100)).toEqual([]);
      expect(q.usage("bob", 2).n).toBe(5);
      q.close();
    });

    test("an acceptance's record commits with its last buffered copy; an ack before the commit (write-back hit) settles a copy", () => {
      const dir = fresh();
      let q = b.open(dir);
      let durable = 0;
      const rec = { sender: "sender", device: 1, cid: "c-1", to: "carol", seq: 1, ts: 1001 };
      const acc = q.begin(rec, () => durable++);
      const a = item(q, "carol", 1, 1);
      const c = item(q, "carol", 2, 1);
      q.append(a, acc);
      q.append(c, acc);
      q.release(acc);
      expect(q.ack("carol", 1, a.qid)?.cid).toBe("m1"); // never written
      expect(durable).toBe(0); // c is still only buffered
      expect(q.recall("sender", 1, "c-1")).toBeNull(); // in flight: not the store's to answer
      q.flush();
      expect(durable).toBe(1);
      expect(q.recall("sender", 1, "c-1")).toEqual(rec);
      q.close();
      q = b.open(dir);
      expect(q.fetch("carol", 1, 0, 10)).toEqual([]);
      expect(q.fetch("carol", 2, 0, 10).map((i) => i.qid)).toEqual([c.qid]);
      expect(q.recall("sender", 1, "c-1")).toEqual(rec);
      expect(q.recall("sender", 2, "c-1")).toBeNull();
      expect(q.recall("sender", 1, "c-2")).toBeNull();
      q.close();
    });

    test("a confirming sender's record: durable at the last ack, written only if unconfirmed a window later, gone once confirmed", async () => {
      const dir = fresh();
      const q = b.open(dir, { commitMs: 20 });
      let durable = 0;
      const rec = (cid: string) => ({ sender: "sender", device: 1, cid, to: "carol", seq: 1, ts: 1001 });
      // Confirmed before the commit: no row ever.
      const quick = q.begin(rec("quick"), () => durable++, true);
      const a = item(q, "carol", 1, 1);
      q.append(a, quick);
      q.release(quick);
      q.ack("carol", 1, a.qid); // write-back hit: every copy delivered
      await Bun.sleep(0); // durable callbacks run at the end of the turn
      expect(durable).toBe(1); // `sent` may go now, before any commit
      q.confirm(quick);
      // Not confirmed: written once a whole window has passed.
      const late = q.begin(rec("late"), () => durable++, true);
      const c = item(q, "carol", 1, 2);
      q.append(c, late);
      q.release(late);
      q.ack("carol", 1, c.qid);
      await Bun.sleep(0);
      expect(durable).toBe(2);
      expect(q.recall("sender", 1, "late")).toBeNull(); // waiting in memory (the caller answers resends from its own)
      const deadline = Date.now() + 10_000;
      while (q.recall("sender", 1, "late") === null && Date.now() < deadline) await Bun.sleep(5);
      expect(q.recall("sender", 1, "late")).toEqual(rec("late"));
      expect(q.recall("sender", 1, "quick")).toBeNull();
      const crashed = b.open(dir); // what a restart would find now
      expect(crashed.recall("sender", 1, "late")).toEqual(rec("late"));
      expect(crashed.recall("sender", 1, "quick")).toBeNull();
      crashed.close();
      q.confirm(late);
      q.flush();
      expect(q.recall("sender", 1, "late")).toBeNull();
      q.close();
      const reopened = b.open(dir);
      expect(reopened.recall("sender", 1, "late")).toBeNull();
      reopened.close();
    });

    test("a confirming sender's record not confirmed at shutdown is written; its TTL expires it, the retention does not", () => {
      const dir = fresh();
      let q = b.open(dir);
      const r = { sender: "s", device: 1, cid: "never", to: "carol", seq: 1, ts: 5000 };
      const acc = q.begin(r, () => {}, true);
      q.release(acc); // no copies (all on other nodes, say): durable at once
      q.close(); // a clean stop writes what waits
      q = b.open(dir);
      expect(q.recall("s", 1, "never")).toEqual(r);
      q.expire(1000, 4000); // retention cutoff before it, TTL cutoff before it: kept
      expect(q.recall("s", 1, "never")).toEqual(r);
      q.expire(1000, 6000); // the TTL cutoff past it
      expect(q.recall("s", 1, "never")).toBeNull();
      q.close();
    });

    test("a record is never durable before a copy: copies in two shards, one shard commits, then a crash", async () => {
      const dir = fresh();
      const q = b.open(dir, { commitRows: 2, commitMs: 60_000 });
      // Two recipients whose queues are in different shards (if the backend has shards at all).
      const x = "ua";
      const y = ["ub", "uc", "ud", "ue", "uf", "ug"].find((n) => b.shardOf(n) !== b.shardOf(x))!;
      let durable = 0;
      const rec = { sender: "sender", device: 1, cid: "two-shards", to: "#g", seq: 1, ts: 1001 };
      const acc = q.begin(rec, () => durable++);
      q.append(item(q, x, 1, 1), acc);
      q.append(item(q, y, 1, 2), acc);
      q.release(acc);
      q.append(item(q, x, 1, 3), null); // x's shard reaches commit_rows and commits; y's copy is still buffered
      // What a restart would find now, if the process died here (with the Worker, once x's commit is in the file).
      let after = b.open(dir);
      for (let i = 0; i < 2000 && after.fetch(x, 1, 0, 10).length === 0; i++) (after.close(), await Bun.sleep(5), (after = b.open(dir)));
      expect(after.fetch(x, 1, 0, 10).length).toBeGreaterThanOrEqual(1);
      expect(after.recall("sender", 1, "two-shards")).toBeNull();
      after.close();
      expect(durable).toBe(0);
      q.flush();
      expect(durable).toBe(1);
      const later = b.open(dir);
      expect(later.recall("sender", 1, "two-shards")).toEqual(rec);
      expect(later.fetch(y, 1, 0, 10).length).toBe(1);
      later.close();
      q.close();
    });

    test("every copy acknowledged before its commit: the record is written alone; a hold keeps it back until released", () => {
      const q = b.open(fresh());
      const fired: string[] = [];
      const acc = q.begin({ sender: "s", device: 1, cid: "held", to: "dora", seq: 1, ts: 1001 }, () => fired.push("held"));
      const it = item(q, "dora", 1, 1);
      q.append(it, acc);
      q.hold(acc); // a copy elsewhere (another node)
      q.release(acc); // the fan-out is done
      q.ack("dora", 1, it.qid);
      q.flush();
      expect(fired).toEqual([]); // the held piece is not durable yet
      q.release(acc);
      expect(fired).toEqual([]); // released: the record goes into the next commit
      q.flush();
      expect(fired).toEqual(["held"]);
      expect(q.recall("s", 1, "held")?.to).toBe("dora");
      q.close();
    });

    test("commit_rows triggers a commit without waiting for the timer; its durable callbacks run at the end of the turn", async () => {
      const dir = fresh();
      const q = b.open(dir, { commitRows: 3, commitMs: 60_000 });
      let durable = 0;
      const acc = q.begin({ sender: "s", device: 1, cid: "rows", to: "dave", seq: 1, ts: 1001 }, () => durable++);
      q.append(item(q, "dave", 1, 0), acc);
      q.release(acc);
      for (let i = 1; i < 3; i++) q.append(item(q, "dave", 1, i), null); // the third row commits, inside append
      expect(durable).toBe(0); // not from inside append: the caller may be half-way through a fan-out
      // A second reader sees only what is committed (with the Worker, once its commit is in the file).
      let other = b.open(dir);
      for (let i = 0; i < 2000 && other.fetch("dave", 1, 0, 10).length === 0; i++) (other.close(), await Bun.sleep(5), (other = b.open(dir)));
      expect(other.fetch("dave", 1, 0, 10).length).toBe(3);
      expect(other.recall("s", 1, "rows")?.to).toBe("dave");
      other.close();
      await Promise.resolve(); // inline: at the end of the turn; with the Worker: when its reply comes
      for (let i = 0; durable === 0 && i < 2000; i++) await Bun.sleep(5);
      expect(durable).toBe(1);
      q.close();
    });

    test("setCommitGuard's before runs ahead of every commit it guards, inside append (commit_rows) and at flush, before anything is written", () => {
      const dir = fresh();
      const q = b.open(dir, { commitRows: 2, commitMs: 60_000 });
      // What a reader of the file sees when `before` runs: the node links keep their items in the outbox there, so
      // nothing a commit makes durable (an ack whose receipt is queued on a link) is durable without them.
      const seen: number[] = [];
      const other = b.open(dir);
      q.setCommitGuard(() => true, () => seen.push(other.fetch("erin", 1, 0, 10).length));
      q.append(item(q, "erin", 1, 0), null);
      expect(seen).toEqual([]);
      q.append(item(q, "erin", 1, 1), null); // commit_rows: a commit cut inside append
      expect(seen).toEqual([0]);
      q.append(item(q, "erin", 1, 2), null);
      q.flush();
      expect(seen.length).toBe(2);
      expect(seen[1]!).toBeLessThan(3); // ran before the flush's own commit
      q.flush(); // nothing buffered: no commit, no call
      expect(seen.length).toBe(2);
      other.close();
      q.close();
    });

    test("an ack deletes durably; an ack from another device or a repeated ack does nothing", () => {
      const dir = fresh();
      let q = b.open(dir);
      const its = [item(q, "erin", 1, 1), item(q, "erin", 1, 2), item(q, "erin", 2, 3)];
      for (const it of its) q.append(it, null);
      q.flush();
      expect(q.ack("erin", 2, its[0]!.qid)).toBeNull(); // not device 2's
      expect(q.ack("mallory", 1, its[0]!.qid)).toBeNull(); // not mallory's
      expect(q.ack("erin", 1, its[0]!.qid)?.cid).toBe("m1");
      expect(q.ack("erin", 1, its[0]!.qid)).toBeNull(); // already acked
      // Acked but its delete not yet committed: fetch must not hand it out again.
      expect(q.fetch("erin", 1, 0, 10).map((i) => i.cid)).toEqual(["m2"]);
      q.close();
      q = b.open(dir);
      expect(q.fetch("erin", 1, 0, 10).map((i) => i.cid)).toEqual(["m2"]);
      expect(q.fetch("erin", 2, 0, 10).map((i) => i.cid)).toEqual(["m3"]);
      q.close();
    });

    test("an item acked just after its commit is found once, also when the ack repeats after the next commit", () => {
      const q = b.open(fresh());
      const it = item(q, "hank", 1, 1);
      q.append(it, null);
      q.flush();
      expect(q.ack("hank", 2, it.qid)).toBeNull();
      expect(q.ack("hank", 1, it.qid)?.cid).toBe("m1");
      expect(q.ack("hank", 1, it.qid)).toBeNull();
      q.flush();
      expect(q.ack("hank", 1, it.qid)).toBeNull();
      expect(q.fetch("hank", 1, 0, 10)).toEqual([]);
      q.close();
    });

    test("dropDevice removes a revoked device's items, buffered and committed", () => {
      const q = b.open(fresh());
      q.append(item(q, "frank", 1, 1), null);
      q.flush();
      q.append(item(q, "frank", 1, 2), null);
      q.append(item(q, "frank", 2, 3), null);
      expect(q.dropDevice("frank", 1)).toBe(2);
      expect(q.fetch("frank", 1, 0, 10)).toEqual([]);
      expect(q.fetch("frank", 2, 0, 10).length).toBe(1);
      q.close();
    });

    test("usage counts items and bytes per device, buffered or committed, across a reopen", () => {
      const dir = fresh();
      let q = b.open(dir);
      const its = [item(q, "ivy", 1, 1), item(q, "ivy", 1, 2), item(q, "ivy", 2, 3)];
      for (const it of its) q.append(it, null);
      expect(q.usage("ivy", 1)).toEqual({ n: 2, bytes: 8 });
      q.flush();
      q.ack("ivy", 1, its[0]!.qid);
      expect(q.usage("ivy", 1)).toEqual({ n: 1, bytes: 4 });
      q.close();
      q = b.open(dir);
      expect(q.usage("ivy", 1)).toEqual({ n: 1, bytes: 4 });
      expect(q.usage("ivy", 2)).toEqual({ n: 1, bytes: 4 });
      expect(q.usage("ivy", 3)).toEqual({ n: 0, bytes: 0 });
      q.close();
    });

    test("expire deletes old items and acceptances, returns the items, and keeps gap notices", () => {
      const q = b.open(fresh());
      const old = item(q, "lea", 1, 1);
      old.ts = 100;
      const gap = { ...item(q, "lea", 1, 2), kind: ItemKind.GAP, ts: 100 };
      const young = item(q, "lea", 1, 3);
      young.ts = 10_000;
      for (const it of [old, gap, young]) q.append(it, null);
      for (const [cid, seq, ts] of [["old", 1, 100], ["young", 2, 10_000]] as const) q.release(q.begin({ sender: "lea", device: 1, cid, to: "x", seq, ts }, () => {}));
      const expired = q.expire(5000);
      expect(expired.map((i) => i.cid)).toEqual(["m1"]);
      expect(q.fetch("lea", 1, 0, 10).map((i) => i.cid)).toEqual(["m2", "m3"]);
      expect(q.usage("lea", 1).n).toBe(2);
      expect(q.recall("lea", 1, "old")).toBeNull();
      expect(q.recall("lea", 1, "young")?.seq).toBe(2);
      q.close();
    });

    test("shardStats: depth and oldest item summed over shards, buffered or committed, kept through acks, expiry, drops and a reopen", () => {
      const dir = fresh();
      let q = b.open(dir);
      const total = (qq: DeliveryQueue) => qq.shardStats().reduce((n, s) => n + s.depth, 0);
      const oldest = (qq: DeliveryQueue) => Math.min(...qq.shardStats().map((s) => s.oldestTs ?? Infinity));
      expect(q.shardStats().length).toBeGreaterThanOrEqual(1);
      expect(total(q)).toBe(0);
      expect(q.shardStats().every((s) => s.oldestTs === null)).toBe(true);
      const its = ["nia", "oto", "pim", "quy", "rex"].flatMap((a, i) => [item(q, a, 1, 2 * i), item(q, a, 2, 2 * i + 1)]);
      its[3]!.ts = 50; // not the first appended: the oldest is found by ts, not by order
      for (const it of its.slice(0, 6)) q.append(it, null);
      expect(total(q)).toBe(6); // all buffered
      expect(oldest(q)).toBe(50);
      q.flush();
      for (const it of its.slice(6)) q.append(it, null);
      expect(total(q)).toBe(10);
      expect(oldest(q)).toBe(50);
      q.ack("nia", 1, its[0]!.qid); // committed
      q.ack("rex", 2, its[9]!.qid); // buffered (write-back hit)
      q.ack("rex", 2, its[9]!.qid); // repeated: no change
      q.ack("nia", 1, its[1]!.qid); // not this device's: no change
      expect(total(q)).toBe(8);
      expect(q.dropDevice("pim", 1)).toBe(1);
      expect(total(q)).toBe(7);
      q.close();
      q = b.open(dir);
      expect(total(q)).toBe(7);
      expect(oldest(q)).toBe(50);
      expect(q.expire(60).map((i) => i.cid)).toEqual(["m3"]);
      expect(total(q)).toBe(6);
      expect(oldest(q)).toBe(1000 + 1);
      q.ack("nia", 2, its[1]!.qid); // the oldest, committed: it stops counting at once, before its delete is committed
      expect(total(q)).toBe(5);
      expect(oldest(q)).toBe(1000 + 2);
      q.close();
    });

    test("bodies come back byte for byte", () => {
      const dir = fresh();
      let q = b.open(dir);
      const it = item(q, "gina", 1, 7);
      it.body = new Uint8Array(4096).map((_, i) => (i * 31) & 255);
      q.append(it, null);
      q.close();
      q = b.open(dir);
      const [back] = q.fetch("gina", 1, 0, 1);
      expect(Buffer.from(back!.body).equals(Buffer.from(it.body))).toBe(true);
      expect({ ...back!, body: null }).toEqual({ ...it, body: null });
      q.close();
    });
  });
}
