/**
 * The SDK's recipient-side dedup state (src/client/dedup.ts) is bounded by counts: the recent keys of any
 * conversation, the last keys of each conversation, and a least-recently-used cap on conversations. A flood in one
 * conversation does not evict another's keys (it did with the old global FIFO of 10 000).
 */
import { expect, test } from "bun:test";
import { CONVERSATIONS, DeliveryDedup, PER_CONVERSATION, RECENT } from "../../src/client/dedup.ts";

test("a flood in one conversation keeps the other conversations' keys, within the bound", () => {
  const d = new DeliveryDedup();
  d.add("carol", "c1");
  for (let i = 0; i < 20_000; i++) d.add("alice", `a${i}`);
  expect(d.has("carol", "c1")).toBe(true);
  // Alice's recent keys are kept, her old ones are not: the flood is bounded by her own window.
  expect(d.has("alice", "a19999")).toBe(true);
  expect(d.has("alice", `a${20_000 - RECENT}`)).toBe(true);
  expect(d.has("alice", `a${20_000 - RECENT - 1}`)).toBe(false);
  expect(d.size).toEqual({ conversations: 2, keys: RECENT + PER_CONVERSATION + 1 });
});

test("a key is found under its conversation beyond the recent window, and not under another", () => {
  const d = new DeliveryDedup();
  d.add("bob", "b1");
  for (let i = 0; i < RECENT; i++) d.add(`x${i % 100}`, `x${i}`);
  expect(d.has("bob", "b1")).toBe(true);
  expect(d.has("zed", "b1")).toBe(false);
});

test("conversations beyond the cap are forgotten least recently used first; the state never exceeds the bound", () => {
  const d = new DeliveryDedup();
  const bound = RECENT + PER_CONVERSATION * CONVERSATIONS;
  let max = 0;
  for (let round = 0; round < 3; round++) {
    for (let c = 0; c < CONVERSATIONS * 2; c++) {
      for (let k = 0; k < PER_CONVERSATION + 5; k++) d.add(`c${c}`, `c${c}-${round}-${k}`);
      if (c % 9 === 0) d.add("kept", `kept-${round}-${c}`); // used all along: never the least recently used
      max = Math.max(max, d.size.keys);
    }
  }
  expect(max).toBe(bound);
  expect(d.size).toEqual({ conversations: CONVERSATIONS, keys: bound });
  // 114 adds a round: the first of the last round is within its own window, long out of the recent one.
  expect(d.has("kept", "kept-2-0")).toBe(true);
  expect(d.has("kept", "kept-0-0")).toBe(false); // 228 adds back: beyond its own window
  expect(d.has("c0", "c0-2-0")).toBe(false); // c0 was used early in the last round: forgotten, and beyond RECENT
  expect(d.has(`c${CONVERSATIONS * 2 - 1}`, `c${CONVERSATIONS * 2 - 1}-2-5`)).toBe(true);
});
