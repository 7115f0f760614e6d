import { expect, test } from "bun:test";
import { BloomFilter } from "../../src/store/bloom.ts";

test("a Bloom filter never says no to a key it was given, and mostly says no to others", () => {
  const f = new BloomFilter(20, 3);
  for (let i = 0; i < 50_000; i++) f.add(`alice\u00001\u0000m${i}`);
  for (let i = 0; i < 50_000; i++) expect(f.mightHave(`alice\u00001\u0000m${i}`)).toBe(true);
  let fp = 0;
  for (let i = 0; i < 50_000; i++) if (f.mightHave(`bob\u00002\u0000x${i}`)) fp++;
  // 50k keys in 2^20 bits with 3 probes: about 0.2 % expected; allow a wide margin, this is not a timing test.
  expect(fp).toBeLessThan(2_500);
});

test("misuse: an impossible size throws with the allowed range", () => {
  expect(() => new BloomFilter(40)).toThrow(/5\.\.31/);
});

test("add3/mightHave3 set and test the same bits as the joined key (the queue mixes both across restarts)", () => {
  const f = new BloomFilter(16, 3);
  const g = new BloomFilter(16, 3);
  const devices = [0, 1, 9, 10, 99, 1234567, 2 ** 31 - 1, Number.MAX_SAFE_INTEGER];
  for (const d of devices) for (let i = 0; i < 200; i++) {
    f.add3(`acct${i}`, d, `id-${i}-é`);
    g.add(`acct${i}\u0000${d}\u0000id-${i}-é`);
  }
  for (const d of devices) for (let i = 0; i < 200; i++) {
    expect(g.mightHave3(`acct${i}`, d, `id-${i}-é`)).toBe(true);
    expect(f.mightHave(`acct${i}\u0000${d}\u0000id-${i}-é`)).toBe(true);
  }
  // Same bits: every answer to an absent key agrees too.
  for (let i = 0; i < 5000; i++) expect(f.mightHave3("other", i, `x${i}`)).toBe(g.mightHave(`other\u0000${i}\u0000x${i}`));
});
