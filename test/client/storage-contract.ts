/**
 * The StateStorage contract (src/client/storage.ts) as a runner with no test
 * framework and no node:* import, so that the same cases run on files in Bun
 * and on IndexedDB in Chromium (test/client/storage.test.ts).
 */
import type { StateStorage } from "../../src/client/storage.ts";
import { runCases, type Case, type Outcome } from "../helpers/cases.ts";

export type { Outcome };

const same = (a: Uint8Array | null, b: Uint8Array) => a !== null && a.length === b.length && a.every((x, i) => x === b[i]);

const CASES: Case<StateStorage>[] = [
  ["a key never saved loads as null; removing it is not an error", async (s) => {
    await s.remove("never");
    return (await s.load("never")) === null ? true : "not null";
  }],
  ["saved bytes load back exactly (every byte value)", async (s) => {
    const b = Uint8Array.from({ length: 512 }, (_, i) => i & 0xff);
    await s.save("bytes", b);
    return same(await s.load("bytes"), b) ? true : "differ";
  }],
  ["a save replaces the whole value, also with a shorter one", async (s) => {
    await s.save("over", new Uint8Array(1000).fill(7));
    await s.save("over", Uint8Array.of(1, 2, 3));
    return same(await s.load("over"), Uint8Array.of(1, 2, 3)) ? true : "old bytes remain";
  }],
  ["keys are independent; remove forgets one only", async (s) => {
    await s.save("a.key", Uint8Array.of(1));
    await s.save("a.key.e2e", Uint8Array.of(2));
    await s.remove("a.key");
    const [a, e] = [await s.load("a.key"), await s.load("a.key.e2e")];
    return a === null && same(e, Uint8Array.of(2)) ? true : `a.key ${a}, a.key.e2e ${e}`;
  }],
  ["later changes to the array saved do not reach what was stored", async (s) => {
    const b = Uint8Array.of(9, 9);
    await s.save("copy", b);
    b[0] = 0;
    return same(await s.load("copy"), Uint8Array.of(9, 9)) ? true : "aliased";
  }],
  ["a 2 MiB value", async (s) => {
    const b = new Uint8Array(2 << 20);
    for (let i = 0; i < b.length; i += 4096) b[i] = (i >> 12) & 0xff;
    await s.save("big", b);
    return same(await s.load("big"), b) ? true : "differs";
  }],
  ["a key that is not a plain name is refused with the rule", async (s) => {
    for (const k of ["../x", "a/b", "", ".."]) {
      try {
        await s.save(k, Uint8Array.of(1));
        return `${JSON.stringify(k)} accepted`;
      } catch (e) {
        if (!(e instanceof TypeError) || !/use 1 to 200 of/.test(e.message)) return `${JSON.stringify(k)}: ${(e as Error).message}`;
      }
    }
    return true;
  }],
];

export function storageContract(s: StateStorage): Promise<Outcome[]> {
  return runCases(CASES, s);
}
