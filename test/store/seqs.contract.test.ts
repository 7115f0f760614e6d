/**
 * The SeqStore contract (src/store/seqs.ts): per-conversation reservations
 * only grow, also across a reopen, so core/seq.ts never issues a number twice.
 * Every backend runs it through its factory.
 */
import { describe, expect, test } from "bun:test";
import { SqliteAccountStore } from "../../src/store/accounts.ts";
import { SqliteSeqStore, type SeqStore } from "../../src/store/seqs.ts";
import { tempDirs } from "../helpers/tmpdirs.ts";

/** A backend: opens the store of a data directory; `close` closes what it opened. */
const backends: { name: string; open: (dir: string) => SeqStore & { close(): void } }[] = [
  {
    name: "sqlite",
    open: (dir) => {
      const accounts = new SqliteAccountStore(dir);
      const seqs = new SqliteSeqStore(accounts.db);
      return { reserveSeq: (conv, block) => seqs.reserveSeq(conv, block), close: () => accounts.close() };
    },
  },
];

for (const b of backends) {
  describe(`SeqStore contract: ${b.name}`, () => {
    const fresh = tempDirs("sb-seqs-");

    test("sequence reservations only grow, across reopen", () => {
      const dir = fresh();
      let s = b.open(dir);
      expect(s.reserveSeq("a\u0000b", 100)).toBe(100);
      expect(s.reserveSeq("a\u0000b", 100)).toBe(200);
      expect(s.reserveSeq("a\u0000c", 10)).toBe(10);
      s.close();
      s = b.open(dir);
      expect(s.reserveSeq("a\u0000b", 100)).toBe(300);
      s.close();
    });

    test("a reservation of 0 reads the bound and reserves nothing", () => {
      const s = b.open(fresh());
      expect(s.reserveSeq("a\u0000b", 0)).toBe(0);
      expect(s.reserveSeq("a\u0000b", 5)).toBe(5);
      expect(s.reserveSeq("a\u0000b", 0)).toBe(5);
      s.close();
    });
  });
}
