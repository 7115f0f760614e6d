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
