/**
 * The in-memory acceptances (src/core/acceptances.ts): two generations, an empty one not asked. Every held
 * acceptance is found whichever generation holds it, and a deleted one is not, across rotations.
 */
import { expect, test } from "bun:test";
import { Acceptances, type Accepted } from "../../src/core/acceptances.ts";

const acc = (account: string, device: number, id: string): Accepted => ({ to: "peer", seq: 1, ts: 0, remaining: 1, account, device, id });

test("found in either generation until deleted; a generation emptied by deletes answers nothing, and fills again", () => {
  const r = new Acceptances(4); // the young generation rotates at 2 additions
  const a1 = acc("al", 1, "m1");
  const a2 = acc("al", 2, "m2");
  r.add(a1);
  r.add(a2); // young: a1, a2
  const b1 = acc("bo", 1, "m1");
  r.add(b1); // rotated: old a1, a2; young b1
  expect(r.get("al", 1, "m1")).toBe(a1);
  expect(r.get("al", 2, "m2")).toBe(a2);
  expect(r.get("bo", 1, "m1")).toBe(b1);
  expect(r.get("al", 1, "m2")).toBeUndefined(); // another device's id
  r.delete(a1);
  expect(r.get("al", 1, "m1")).toBeUndefined();
  expect(r.get("al", 2, "m2")).toBe(a2); // the old generation still holds one
  r.delete(a1); // twice: counted once
  expect(r.get("al", 2, "m2")).toBe(a2);
  r.delete(a2); // the old generation is empty now
  expect(r.get("al", 2, "m2")).toBeUndefined();
  expect(r.get("bo", 1, "m1")).toBe(b1);
  // A replaced entry (same device and id) counts once: deleting the newer leaves the generation empty.
  const b1again = acc("bo", 1, "m1");
  r.add(b1again); // young: b1 replaced by b1again (2 additions: rotates at the next add)
  expect(r.get("bo", 1, "m1")).toBe(b1again);
  r.delete(b1); // not the held one: nothing deleted
  expect(r.get("bo", 1, "m1")).toBe(b1again);
  r.delete(b1again);
  expect(r.get("bo", 1, "m1")).toBeUndefined();
  const c = acc("cy", 3, "m9");
  r.add(c); // rotated: old is the emptied generation, young c
  expect(r.get("cy", 3, "m9")).toBe(c);
  r.add(acc("cy", 3, "m10"));
  r.add(acc("cy", 3, "m11")); // rotated again: c now in old, found
  expect(r.get("cy", 3, "m9")).toBe(c);
  expect(r.get("cy", 3, "m10")?.id).toBe("m10");
});

test("a connection's own map (getFor, add with conn) follows the rotations: nothing lands in a dropped generation", () => {
  const r = new Acceptances(4); // rotates at 2 additions
  const c = { account: "al", device: 1, core: null };
  const a1 = acc("al", 1, "m1");
  r.add(a1, c);
  r.add(acc("bo", 1, "b1")); // young G0 full
  expect(r.getFor(c, "m1")).toBe(a1);
  const fresh = { account: "al", device: 1, core: null }; // another session of the device
  expect(r.getFor(fresh, "m1")).toBe(a1);
  expect(r.getFor({ account: "al", device: 2, core: null }, "m1")).toBeUndefined();
  const a2 = acc("al", 1, "m2");
  r.add(a2, c); // rotated: old G0, young G1; c's map of G0 is stale
  r.add(acc("bo", 1, "b2"));
  r.add(acc("bo", 1, "b3")); // rotated: old G1, young G2; G0 dropped
  expect(r.get("al", 1, "m2")).toBe(a2); // added to G1, not to the stale map of G0
  expect(r.getFor(c, "m2")).toBe(a2);
  expect(r.get("al", 1, "m1")).toBeUndefined(); // G0 dropped
  expect(r.getFor(c, "m1")).toBeUndefined();
  const a3 = acc("al", 1, "m3");
  r.add(a3, c);
  expect(r.getFor(c, "m3")).toBe(a3);
  expect(r.getFor(fresh, "m3")).toBe(a3); // fresh's map of G0 is stale: refreshed
  r.delete(a1); // from the dropped generation: nothing
  r.delete(a2); // in old, by its bucket
  expect(r.get("al", 1, "m2")).toBeUndefined();
  expect(r.get("bo", 1, "b2")).toBeDefined(); // a1's delete did not count against G1
  r.delete(a3); // in young
  expect(r.getFor(c, "m3")).toBeUndefined();
  expect(r.get("bo", 1, "b3")).toBeDefined();
});
