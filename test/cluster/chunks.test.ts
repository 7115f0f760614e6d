/**
 * rows.ts chunkShard: a shard's shipment cut into chunks that each fit the limit as really encoded (encodeBody,
 * what the link sends), items whole and in drain order, the rows, acceptance records and modules' rows in the
 * first chunk only, every chunk under its own import key, an item bigger than the limit alone in its chunk.
 * Random item sizes: the seed is printed in the test name (rerun with SB_SEED=...).
 */
import { describe, expect, test } from "bun:test";
import { chunkShard, type ShardData } from "../../src/core/cluster/rows.ts";
import { encodeBody } from "../../src/protocol/codec.ts";
import type { QueueItem } from "../../src/store/queue.ts";

const SEED = Number(process.env.SB_SEED ?? Date.now() % 1_000_000);
function rng(seed: number): () => number {
  let x = seed || 1;
  return () => ((x = (x * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
}

function shipment(sizes: number[]): ShardData {
  const items = sizes.map((n, i) => ({
    qid: i + 1, account: "alice", device: 1 + (i % 2), kind: "message", fromAccount: "bob", fromDevice: 1, conv: "alice",
    cid: `m${i}`, seq: i + 1, ts: 1_700_000_000_000 + i, body: new Uint8Array(n).fill(i % 251),
  })) as unknown as QueueItem[];
  return {
    shard: 7, from: "n1.abcd1234", epoch: 3, names: ["alice", "bob"], replace: true, modules: { keys: [{ a: "alice", k: "x".repeat(500) }] },
    rows: { accounts: [{ name: "alice" }, { name: "bob" }], devices: [{ account: "alice", device: 1 }, { account: "alice", device: 2 }], codes: [], seqs: [{ conv: "alice", hi: 9 }] },
    items, records: [{ sender: "alice", device: 1, cid: "r1", to: "bob", seq: 4, ts: 1 }] as ShardData["records"],
  };
}

describe(`chunkShard (seed ${SEED}; rerun with SB_SEED=${SEED})`, () => {
  const rand = rng(SEED);
  test("chunks fit the limit as encoded; items whole, in order; rows first; one key each", () => {
    const limit = 64 * 1024;
    const d = shipment(Array.from({ length: 300 }, () => Math.floor(rand() * 6000)));
    const cs = chunkShard(d, limit);
    expect(cs.length).toBeGreaterThan(5);
    for (const c of cs) expect(encodeBody(c.d).length).toBeLessThanOrEqual(limit);
    for (const c of cs) expect(c.bytes).toBeGreaterThanOrEqual(encodeBody(c.d).length); // the measure is an upper bound
    expect(cs.flatMap((c) => c.d.items)).toEqual(d.items);
    expect(cs.map((c) => c.index)).toEqual(cs.map((_, i) => i));
    expect(cs[0]!.d).toMatchObject({ rows: d.rows, records: d.records, modules: d.modules, replace: true, from: d.from });
    for (const c of cs.slice(1)) {
      expect(c.d).toMatchObject({ shard: 7, epoch: 3, names: d.names, records: [], replace: false, rows: { accounts: [], devices: [], codes: [], seqs: [] } });
      expect(c.d.modules).toBeUndefined();
    }
    expect(new Set(cs.map((c) => c.d.from)).size).toBe(cs.length);
  });

  test("a shipment under the limit is one chunk, the shipment itself; an item over it goes alone", () => {
    const small = shipment([10, 20, 30]);
    expect(chunkShard(small, 1 << 20).map((c) => c.d)).toEqual([small]);
    const cs = chunkShard(shipment([100, 50_000, 100]), 8 * 1024);
    expect(cs.map((c) => c.d.items.map((it) => it.body.length))).toEqual([[100], [50_000], [100]]);
    const none = shipment([]);
    expect(chunkShard(none, 1024).map((c) => c.d)).toEqual([none]);
  });
});
