/**
 * The MediaIndex contract (one backend today: SQLite, its own file). Each case
 * reopens the file where it matters: what a restart (or kill -9) finds is what
 * the media service resumes from.
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { BlobState, SqliteMediaIndex, type MediaIndex, type NewBlob } from "../../src/store/media-index.ts";
import { tempDirs } from "../helpers/tmpdirs.ts";

const fresh = tempDirs("sb-media-index-");
const backends: { name: string; open(dir: string): MediaIndex }[] = [{ name: "sqlite", open: (dir) => new SqliteMediaIndex(join(dir, "media.db")) }];

const T0 = 1_700_000_000_000;
function blob(over: Partial<NewBlob> = {}): NewBlob {
  return {
    id: randomBytes(16).toString("base64url"), account: "alice", device: 1, size: 1000, created: T0,
    capExp: T0 + 3_600_000, expires: T0 + 86_400_000, tokHash: new Uint8Array(randomBytes(32)), recipients: 0, ...over,
  };
}

for (const b of backends) {
  describe(`MediaIndex contract: ${b.name}`, () => {
    test("a new blob is PARTIAL at offset 0; offsets and finish survive a reopen", () => {
      const dir = fresh();
      let ix = b.open(dir);
      const r = blob();
      ix.create(r);
      expect(ix.get(r.id)).toMatchObject({ state: BlobState.PARTIAL, offset: 0, size: 1000, account: "alice", device: 1, downloads: 0 });
      expect(ix.setOffset(r.id, 400)).toBe(true);
      expect(ix.setOffset(r.id, 1001)).toBe(false); // never past the declared size
      ix.close();
      ix = b.open(dir);
      expect(ix.get(r.id)!.offset).toBe(400);
      expect(Buffer.from(ix.get(r.id)!.tokHash).equals(Buffer.from(r.tokHash))).toBe(true);
      expect(ix.finish(r.id)).toBe(true);
      expect(ix.finish(r.id)).toBe(false);
      expect(ix.setOffset(r.id, 10)).toBe(false); // a finished blob has no offset to move
      expect(ix.get(r.id)).toMatchObject({ state: BlobState.DONE, offset: 1000 });
      ix.close();
    });

    test("an unknown id is null and not known", () => {
      const ix = b.open(fresh());
      expect(ix.get("AAAAAAAAAAAAAAAAAAAAAA")).toBeNull();
      expect(ix.known("AAAAAAAAAAAAAAAAAAAAAA")).toBe(false);
      ix.close();
    });

    test("usage: stored bytes exclude gone blobs; uploads and their bytes count from `since`", () => {
      const ix = b.open(fresh());
      const a = blob({ size: 100, created: T0 });
      const c = blob({ size: 200, created: T0 + 10 });
      const d = blob({ size: 400, created: T0 + 20 });
      for (const r of [a, c, d, blob({ account: "bob", size: 5000 })]) ix.create(r);
      expect(ix.usage("alice", T0)).toEqual({ storedBytes: 700, uploads: 3, uploadedBytes: 700, oldest: T0 });
      expect(ix.usage("alice", T0 + 10)).toEqual({ storedBytes: 700, uploads: 2, uploadedBytes: 600, oldest: T0 + 10 });
      expect(ix.gone(c.id, "expired", T0 + 30)).toBe(true);
      expect(ix.gone(c.id, "expired", T0 + 31)).toBe(false);
      expect(ix.usage("alice", T0)).toEqual({ storedBytes: 500, uploads: 3, uploadedBytes: 700, oldest: T0 });
      expect(ix.usage("carol", T0)).toEqual({ storedBytes: 0, uploads: 0, uploadedBytes: 0, oldest: null }); // a gone blob was still an upload that day
      expect(ix.ofAccount("alice").sort()).toEqual([a.id, d.id].sort());
      expect(ix.totals()).toEqual({ blobs: 3, bytes: 5500, partial: 3 });
      ix.close();
    });

    test("due: expired blobs (any live state) and unfinished uploads past their capability, oldest first", () => {
      const ix = b.open(fresh());
      const expired = blob({ created: T0, expires: T0 + 100 });
      const abandoned = blob({ created: T0 + 1, capExp: T0 + 50 });
      const finishedOld = blob({ created: T0 + 2, capExp: T0 + 50 }); // its capability ended, but it is finished: kept
      const live = blob({ created: T0 + 3 });
      for (const r of [expired, abandoned, finishedOld, live]) ix.create(r);
      ix.finish(expired.id);
      ix.finish(finishedOld.id);
      expect(ix.due(T0 + 99, 10).map((r) => r.id)).toEqual([abandoned.id]);
      expect(ix.due(T0 + 100, 10).map((r) => r.id)).toEqual([expired.id, abandoned.id]);
      expect(ix.due(T0 + 100, 1).map((r) => r.id)).toEqual([expired.id]);
      ix.close();
    });

    test("a tombstone stays (known, GONE with why) until cleared and pruned", () => {
      const ix = b.open(fresh());
      const r = blob();
      ix.create(r);
      ix.gone(r.id, "abandoned", T0 + 5);
      expect(ix.get(r.id)).toMatchObject({ state: BlobState.GONE, goneWhy: "abandoned", goneAt: T0 + 5 });
      expect(ix.due(T0 + 10 ** 9, 10)).toEqual([]);
      expect(ix.uncleared(10).map((x) => x.id)).toEqual([r.id]);
      expect(ix.prune(T0 + 100)).toBe(0); // bytes maybe still there: not pruned before cleared
      ix.cleared(r.id);
      expect(ix.uncleared(10)).toEqual([]);
      expect(ix.prune(T0 + 5)).toBe(0);
      expect(ix.prune(T0 + 6)).toBe(1);
      expect(ix.known(r.id)).toBe(false);
      ix.close();
    });

    test("downloads count only on finished blobs", () => {
      const ix = b.open(fresh());
      const r = blob({ recipients: 2 });
      ix.create(r);
      expect(ix.downloaded(r.id)).toBeNull();
      ix.finish(r.id);
      expect(ix.downloaded(r.id)!.downloads).toBe(1);
      expect(ix.downloaded(r.id)).toMatchObject({ downloads: 2, recipients: 2 });
      ix.close();
    });
  });
}
