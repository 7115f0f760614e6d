/**
 * src/store/errors.ts on real SQLite files: what counts as a disk fault (a
 * real SQLITE_FULL from a file held to `PRAGMA max_page_count`), the alarm's
 * raise/clear bookkeeping, and the length check of a file cut short.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { mkdtempSync, rmSync, statSync, truncateSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { StorageAlarm, fileTruncated, storageCause, type StorageFault } from "../../src/store/errors.ts";

const dir = mkdtempSync(join(tmpdir(), "sb-store-errors-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function thrown(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  throw new Error("expected a throw");
}

describe("storageCause", () => {
  test("a real SQLITE_FULL is disk_full, and the transaction is rolled back whole; a constraint is not a disk fault", () => {
    const db = new Database(join(dir, "full.db"), { create: true, strict: true });
    db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)");
    db.exec(`PRAGMA max_page_count = ${(db.query("PRAGMA page_count").get() as { page_count: number }).page_count + 2}`);
    const ins = db.prepare("INSERT INTO t (b) VALUES (?)");
    const full = thrown(() => db.transaction(() => { for (let i = 0; i < 10; i++) ins.run(new Uint8Array(4000)); })());
    expect(storageCause(full)).toBe("disk_full");
    expect((db.query("SELECT COUNT(*) AS n FROM t").get() as { n: number }).n).toBe(0);
    expect(db.inTransaction).toBe(false);
    const dup = thrown(() => db.run("INSERT INTO t (id, b) VALUES (1, x''), (1, x'')"));
    expect(storageCause(dup)).toBeNull();
    db.close();
  });

  test("I/O errors by code or extended errno (SQLITE_IOERR_WRITE = 778); anything else is not one", () => {
    expect(storageCause({ code: "SQLITE_IOERR_WRITE", errno: 778 })).toBe("io_error");
    expect(storageCause({ errno: 10 })).toBe("io_error");
    expect(storageCause({ errno: 13 })).toBe("disk_full");
    for (const e of [null, undefined, "SQLITE_FULL", new Error("disk full"), { code: "SQLITE_CORRUPT", errno: 11 }]) expect(storageCause(e)).toBeNull();
  });
});

test("StorageAlarm: a fault per file, its first time kept, one notice per change, cleared by the file that raised it", () => {
  const heard: [string, StorageFault | null][] = [];
  const a = new StorageAlarm((file, f) => heard.push([file, f]));
  expect(a.active).toBe(false);
  a.raise("s1", "disk_full", "full", 100);
  a.raise("s1", "disk_full", "full", 200); // the same fault again: no news
  a.raise("s2", "io_error", "eio", 150);
  expect(a.active).toBe(true);
  expect(a.first()).toMatchObject({ file: "s1", since: 100 });
  expect(heard.map(([f, x]) => [f, x?.cause ?? null])).toEqual([["s1", "disk_full"], ["s2", "io_error"]]);
  expect(a.clear("s1")).toBe(true);
  expect(a.clear("s1")).toBe(false);
  expect(a.first()).toMatchObject({ file: "s2" });
  a.clear("s2");
  expect(a.active).toBe(false);
  expect(heard.at(-1)).toEqual(["s2", null]);
});

test("fileTruncated: a whole file is fine, one cut short is named with both lengths; no file, or not a database, is for SQLite to say", () => {
  const path = join(dir, "cut.db");
  const db = new Database(path, { create: true });
  db.exec("PRAGMA journal_mode = WAL; CREATE TABLE t (b BLOB)");
  const ins = db.prepare("INSERT INTO t VALUES (?)");
  db.transaction(() => { for (let i = 0; i < 20; i++) ins.run(new Uint8Array(4000)); })();
  db.exec("PRAGMA wal_checkpoint(TRUNCATE)"); // every page in the file itself, the WAL empty (as after a clean stop)
  db.close();
  expect(fileTruncated(path)).toBeNull();
  const size = statSync(path).size;
  truncateSync(path, 8192);
  expect(fileTruncated(path)).toBe(`the file has 8192 bytes, its header says ${size / 4096} pages of 4096 (${size} bytes): it is truncated`);
  expect(fileTruncated(join(dir, "none.db"))).toBeNull();
  const junk = join(dir, "junk.db");
  Bun.write(junk, "not a database at all, but long enough to have a header of a hundred bytes: ".repeat(3));
  expect(fileTruncated(junk)).toBeNull();
});
