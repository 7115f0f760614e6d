/** The SQLite epoch fence: epochs only grow, a write commits only at the current epoch, and a stale owner's write is refused even through its own handle on the file. */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ShardFence } from "../../src/core/cluster/fence.ts";

const dir = mkdtempSync(join(tmpdir(), "sb-fence-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function withSeqs(f: ShardFence): (shard: number, epoch: number, node: string) => ReturnType<ShardFence["write"]> {
  f.db.exec("CREATE TABLE IF NOT EXISTS seqs (shard INTEGER, seq INTEGER, epoch INTEGER, PRIMARY KEY (shard, seq))");
  return (shard, epoch, node) =>
    f.write(shard, epoch, node, (db) => {
      const n = db.query<{ n: number }, [number]>("SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM seqs WHERE shard = ?").get(shard)!.n;
      db.query("INSERT INTO seqs VALUES (?, ?, ?)").run(shard, n, epoch);
      return n;
    });
}

describe("ShardFence", () => {
  test("claim only raises the epoch; write needs exactly the claimed epoch and node", () => {
    const f = new ShardFence(join(dir, "a.sqlite"));
    const write = withSeqs(f);
    expect(f.epoch(7)).toBe(0);
    expect(write(7, 1, "a")).toEqual({ ok: false, reason: "not-claimed", current: 0 });
    expect(f.claim(7, 3, "a").ok).toBe(true);
    expect(f.claim(7, 3, "b")).toEqual({ ok: false, reason: "stale-epoch", current: 3 }); // a Redis that lost its counters
    expect(f.claim(7, 2, "b").ok).toBe(false);
    expect(write(7, 3, "a")).toEqual({ ok: true, value: 1 });
    expect(write(7, 3, "b")).toEqual({ ok: false, reason: "not-claimed", current: 3 });
    expect(write(7, 4, "a")).toEqual({ ok: false, reason: "not-claimed", current: 3 });
    expect(write(7, 2, "a")).toEqual({ ok: false, reason: "stale-epoch", current: 3 });
    f.observe([{ shard: 7, epoch: 5, node: "c" }, { shard: 8, epoch: 1, node: "c" }]);
    expect(write(7, 3, "a")).toEqual({ ok: false, reason: "stale-epoch", current: 5 });
    f.observe([{ shard: 7, epoch: 4, node: "d" }]); // lower: ignored
    expect(f.epoch(7)).toBe(5);
    expect(f.epoch(8)).toBe(1);
    f.close();
  });

  test("two handles on one file (two processes' view of moved shard data): the old owner's write after the new claim is refused and rolls back", () => {
    const path = join(dir, "b.sqlite");
    const oldOwner = new ShardFence(path);
    const newOwner = new ShardFence(path);
    const writeOld = withSeqs(oldOwner);
    const writeNew = withSeqs(newOwner);
    expect(oldOwner.claim(1, 1, "old").ok).toBe(true);
    expect(writeOld(1, 1, "old")).toEqual({ ok: true, value: 1 });
    expect(newOwner.claim(1, 2, "new").ok).toBe(true);
    expect(writeOld(1, 1, "old")).toEqual({ ok: false, reason: "stale-epoch", current: 2 });
    expect(writeNew(1, 2, "new")).toEqual({ ok: true, value: 2 });
    // A failing write body rolls the whole transaction back.
    expect(() => newOwner.write(1, 2, "new", (db) => {
      db.query("INSERT INTO seqs VALUES (1, 3, 2)").run();
      throw new Error("boom");
    })).toThrow("boom");
    expect(newOwner.db.query("SELECT seq, epoch FROM seqs WHERE shard = 1 ORDER BY seq").all()).toEqual([{ seq: 1, epoch: 1 }, { seq: 2, epoch: 2 }]);
    oldOwner.close();
    newOwner.close();
  });
});
