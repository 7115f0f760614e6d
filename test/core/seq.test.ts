/**
 * SeqAllocator (src/core/seq.ts) on a real accounts.db: nextOf(a, b), the messaging module's path that builds no
 * key string, and next(conv(a, b)) hand out one conversation's numbers from one counter, and forget() (a shard
 * move brought the conversation's row) makes both read the row again.
 */
import { expect, test } from "bun:test";
import { SeqAllocator } from "../../src/core/seq.ts";
import { SqliteAccountStore } from "../../src/store/accounts.ts";
import { SqliteSeqStore } from "../../src/store/seqs.ts";
import { prng } from "../helpers/prng.ts";
import { tempDirs } from "../helpers/tmpdirs.ts";

const fresh = tempDirs("sb-seq-");

function open() {
  const accounts = new SqliteAccountStore(fresh());
  const store = new SqliteSeqStore(accounts.db);
  return { accounts, store, seqs: new SeqAllocator(store, 4) }; // blocks of 4: the runs below cross many
}

test("nextOf in either direction and next(conv) share one counter: 1, 2, 3, ... with no number twice, across blocks", () => {
  const { accounts, seqs } = open();
  const seed = (Math.random() * 2 ** 32) >>> 0;
  const rnd = prng(seed);
  const got: number[] = [];
  for (let i = 0; i < 200; i++) {
    const r = rnd();
    got.push(r < 0.4 ? seqs.nextOf("alice", "bob") : r < 0.8 ? seqs.nextOf("bob", "alice") : seqs.next(SeqAllocator.conv("alice", "bob")));
  }
  if (got.some((n, i) => n !== i + 1)) console.error(`seed ${seed}`);
  expect(got).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
  expect(seqs.latest(SeqAllocator.conv("bob", "alice"))).toBe(200);
  // Another conversation of the same account has its own counter.
  expect([seqs.nextOf("alice", "carol"), seqs.nextOf("carol", "alice")]).toEqual([1, 2]);
  accounts.close();
});

test("after forget (the row came from another node, with a higher bound) nextOf continues above that bound", () => {
  const { accounts, store, seqs } = open();
  const conv = SeqAllocator.conv("alice", "bob");
  for (let i = 1; i <= 3; i++) expect(seqs.nextOf("alice", "bob")).toBe(i);
  // What a move's import does: the conversation's stored bound is now the other node's (it numbered up to 1000).
  expect(store.reserveSeq(conv, 1000)).toBe(1004);
  seqs.forget(conv);
  const after = [seqs.nextOf("bob", "alice"), seqs.next(conv), seqs.nextOf("alice", "bob")];
  expect(after).toEqual([1005, 1006, 1007]);
  accounts.close();
});
