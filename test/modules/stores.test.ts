/**
 * Module-owned stores on their own files (opened as ctx.database opens
 * them: openVersioned with the module's schema): messaging's read marks,
 * presence's last seen. What the accounts store held for them until
 * schema step 2 of accounts.db (test/store/migration.test.ts checks the
 * hand-over of a 3337863 data directory).
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { openVersioned } from "../../src/store/schema.ts";
import { MESSAGING_SCHEMA, SqliteReadMarks } from "../../src/modules/messaging/store.ts";
import { LAST_SEEN_SCHEMA, SqliteLastSeen } from "../../src/modules/presence/last-seen.ts";
import { tempDirs } from "../helpers/tmpdirs.ts";

const fresh = tempDirs("sb-modstore-");

describe("module stores", () => {
  test("read markers only move forward; last seen round-trips", () => {
    const dir = fresh();
    const mdb = openVersioned(join(dir, "messaging.db"), "process", MESSAGING_SCHEMA);
    const pdb = openVersioned(join(dir, "presence.db"), "process", LAST_SEEN_SCHEMA);
    const marks = new SqliteReadMarks(mdb);
    const seen = new SqliteLastSeen(pdb);
    const s = {
      advanceReadMark: (a: string, p: string, seq: number) => marks.advance(a, p, seq),
      readMark: (a: string, p: string) => marks.get(a, p),
      lastSeen: (a: string) => seen.get(a),
      setLastSeen: (a: string, ts: number) => seen.set(a, ts),
    };
    expect(s.advanceReadMark("gus", "hal", 5)).toBe(true);
    expect(s.advanceReadMark("gus", "hal", 3)).toBe(false);
    expect(s.advanceReadMark("gus", "hal", 5)).toBe(false);
    expect(s.readMark("gus", "hal")).toBe(5);
    expect(s.lastSeen("gus")).toBeNull();
    s.setLastSeen("gus", 1234);
    expect(s.lastSeen("gus")).toBe(1234);
    mdb.close();
    pdb.close();
  });

  test("an account deleted: its marks (its own and others' about it) and its last seen go, nothing else", () => {
    const dir = fresh();
    const mdb = openVersioned(join(dir, "messaging.db"), "process", MESSAGING_SCHEMA);
    const pdb = openVersioned(join(dir, "presence.db"), "process", LAST_SEEN_SCHEMA);
    const marks = new SqliteReadMarks(mdb);
    const seen = new SqliteLastSeen(pdb);
    marks.advance("gus", "hal", 5);
    marks.advance("hal", "gus", 7);
    marks.advance("hal", "ivy", 9);
    seen.set("gus", 1);
    seen.set("hal", 2);
    expect(marks.dropAccount("gus")).toBe(2);
    seen.drop("gus");
    expect([marks.get("gus", "hal"), marks.get("hal", "gus"), marks.get("hal", "ivy")]).toEqual([0, 0, 9]);
    expect([seen.get("gus"), seen.get("hal")]).toEqual([null, 2]);
    mdb.close();
    pdb.close();
  });
});
