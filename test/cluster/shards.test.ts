/** Home shards and rendezvous assignment: stable, balanced, and moving only what a membership change must move. */
import { describe, expect, test } from "bun:test";
import { Assignment, DEFAULT_SHARDS, shardOf } from "../../src/core/cluster/shards.ts";
import { hashName } from "../../src/core/hash.ts";
import { prng } from "../helpers/prng.ts";

function owners(a: Assignment): string[] {
  return Array.from({ length: a.shardCount }, (_, s) => a.ownerOf(s)!);
}

describe("shards", () => {
  test("an account's shard is FNV-1a mod 4096: fixed values, independent of the node count", () => {
    expect(shardOf("alice")).toBe(hashName("alice") % 4096);
    // Pinned so that a change of hash (which would re-home every account) cannot pass unnoticed.
    expect([shardOf("alice"), shardOf("bob"), shardOf("")]).toEqual([999, 212, 3525]);
    expect(shardOf("alice", 16)).toBe(hashName("alice") % 16);
  });

  test("3 nodes get 4096 shards within 5 % of a third each; the answer does not depend on the order of the list", () => {
    const a = new Assignment(["n1", "n2", "n3"]);
    const counts = new Map<string, number>();
    for (const o of owners(a)) counts.set(o, (counts.get(o) ?? 0) + 1);
    expect([...counts.keys()].sort()).toEqual(["n1", "n2", "n3"]);
    for (const c of counts.values()) expect(Math.abs(c - DEFAULT_SHARDS / 3)).toBeLessThan(DEFAULT_SHARDS * 0.05);
    expect(owners(new Assignment(["n3", "n1", "n2", "n1"]))).toEqual(owners(a));
    expect(new Assignment([]).ownerOf(7)).toBeNull();
  });

  test("a node leaving moves only its shards; a node joining takes only shards it now wins, about 1/N", () => {
    const seed = Date.now() >>> 0;
    const rnd = prng(seed);
    try {
      for (let round = 0; round < 5; round++) {
        const n = 2 + Math.floor(rnd() * 6);
        const ids = Array.from({ length: n }, (_, i) => `node-${Math.floor(rnd() * 1e6)}-${i}`);
        const full = owners(new Assignment(ids));
        const gone = ids[Math.floor(rnd() * n)]!;
        const less = owners(new Assignment(ids.filter((id) => id !== gone)));
        full.forEach((o, s) => {
          if (o !== gone) expect(less[s]).toBe(o);
          else expect(less[s]).not.toBe(gone);
        });
        const joined = owners(new Assignment([...ids, "newcomer"]));
        let moved = 0;
        full.forEach((o, s) => {
          if (joined[s] !== o) {
            expect(joined[s]).toBe("newcomer");
            moved++;
          }
        });
        expect(Math.abs(moved - DEFAULT_SHARDS / (n + 1))).toBeLessThan(DEFAULT_SHARDS * 0.05);
      }
    } catch (e) {
      console.error(`shards rendezvous test failed with seed ${seed}`);
      throw e;
    }
  });
});
