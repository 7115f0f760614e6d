/**
 * The media index (issue 15, docs/MEDIA.md): one row per attachment blob, in
 * its own SQLite file (`<data>/media.db`), whatever `media.store` holds the
 * bytes. A row says who may write the blob (the capability: account, device,
 * declared size, expiry, token hash), how far the upload is (the offset known
 * durable in the staging file), its state, when it expires, and, for
 * `media.delete_after_download`, how many recipients it was declared for and
 * how many downloads finished.
 *
 * A blob that expired or was deleted keeps its row as a tombstone (state
 * GONE, with why and when) so its URL answers 410 and not 404, until the
 * tombstone is pruned (a retention after it went).
 */
import type { Database } from "bun:sqlite";
import { openVersioned } from "./schema.ts";
import type { Durability } from "./sqlite.ts";

export const BlobState = { PARTIAL: 0, DONE: 1, GONE: 2 } as const;
export type BlobState = (typeof BlobState)[keyof typeof BlobState];

/** Why a blob is gone: its retention ended, every declared recipient downloaded it, its account was deleted, or its upload was never finished. */
export type GoneWhy = "expired" | "downloaded" | "deleted" | "abandoned";

export interface BlobRow {
  id: string;
  account: string;
  device: number;
  /** Declared (and, when done, actual) size in bytes. */
  size: number;
  /** Bytes known durable in the staging file (size once done). */
  offset: number;
  state: BlobState;
  /** ms since epoch. */
  created: number;
  /** When the upload capability ends (ms): PATCH and HEAD with the token are refused after it; an unfinished upload is collected. */
  capExp: number;
  /** When the blob expires (ms): it answers 410 from then, and its bytes go at the next sweep. */
  expires: number;
  /** SHA-256 of the upload token (the token itself is never stored). */
  tokHash: Uint8Array;
  /** Recipient devices declared (delete after that many finished downloads), 0: not deleted on download. */
  recipients: number;
  downloads: number;
  goneWhy: GoneWhy | null;
  goneAt: number | null;
}

export type NewBlob = Omit<BlobRow, "offset" | "state" | "downloads" | "goneWhy" | "goneAt">;

export interface Usage {
  /** Bytes of the account's blobs that are not gone (declared sizes, unfinished uploads included). */
  storedBytes: number;
  /** Uploads the account began since `since`. */
  uploads: number;
  /** Declared bytes of those uploads. */
  uploadedBytes: number;
  /** When the oldest of those began (ms), null when none did: a daily limit frees up a day after it. */
  oldest: number | null;
}

export interface MediaIndex {
  create(row: NewBlob): void;
  get(id: string): BlobRow | null;
  /** Records a durable offset of an unfinished upload; false if it is not unfinished. */
  setOffset(id: string, offset: number): boolean;
  /** The last byte arrived and the blob is in its store: PARTIAL to DONE. False if it was not PARTIAL. */
  finish(id: string): boolean;
  /** One finished download; returns the row after it (null when the blob is not DONE). */
  downloaded(id: string): BlobRow | null;
  /** Marks the blob gone (a tombstone); false if it was gone already. */
  gone(id: string, why: GoneWhy, now: number): boolean;
  /** What an account holds and began since `since` (ms). */
  usage(account: string, since: number): Usage;
  /** Blobs due for collection at `now`: DONE or PARTIAL past `expires`, PARTIAL past `capExp`; oldest first. */
  due(now: number, limit: number): BlobRow[];
  /** GONE rows whose bytes may still be somewhere (the sweep removes them and then calls `cleared`). */
  uncleared(limit: number): BlobRow[];
  cleared(id: string): void;
  /** Deletes tombstones that went before `before`; returns how many. */
  prune(before: number): number;
  /** Ids of the account's blobs that are not gone. */
  ofAccount(account: string): string[];
  /** Is there a row (of any state) for this id? */
  known(id: string): boolean;
  totals(): { blobs: number; bytes: number; partial: number };
  close(): void;
}

export const MEDIA_SCHEMA = [
  `CREATE TABLE IF NOT EXISTS blobs (
     id TEXT PRIMARY KEY, account TEXT NOT NULL, device INTEGER NOT NULL,
     size INTEGER NOT NULL, off INTEGER NOT NULL DEFAULT 0, state INTEGER NOT NULL DEFAULT 0,
     created INTEGER NOT NULL, cap_exp INTEGER NOT NULL, expires INTEGER NOT NULL, tok BLOB NOT NULL,
     recipients INTEGER NOT NULL DEFAULT 0, downloads INTEGER NOT NULL DEFAULT 0,
     gone_why TEXT, gone_at INTEGER, cleared INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
   CREATE INDEX IF NOT EXISTS blobs_account ON blobs (account, created);
   CREATE INDEX IF NOT EXISTS blobs_live ON blobs (state, expires);
   CREATE INDEX IF NOT EXISTS blobs_gone ON blobs (cleared, gone_at) WHERE state = 2;`,
];

interface Raw {
  id: string; account: string; device: number; size: number; off: number; state: number; created: number; cap_exp: number; expires: number;
  tok: Uint8Array; recipients: number; downloads: number; gone_why: string | null; gone_at: number | null;
}

const row = (r: Raw | null): BlobRow | null =>
  r === null ? null : {
    id: r.id, account: r.account, device: r.device, size: r.size, offset: r.off, state: r.state as BlobState, created: r.created,
    capExp: r.cap_exp, expires: r.expires, tokHash: r.tok, recipients: r.recipients, downloads: r.downloads,
    goneWhy: r.gone_why as GoneWhy | null, goneAt: r.gone_at,
  };

export class SqliteMediaIndex implements MediaIndex {
  readonly db: Database;
  private q;

  constructor(path: string, durability: Durability = "process") {
    this.db = openVersioned(path, durability, MEDIA_SCHEMA);
    const p = (sql: string) => this.db.prepare(sql);
    this.q = {
      create: p("INSERT INTO blobs (id, account, device, size, created, cap_exp, expires, tok, recipients) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
      get: p("SELECT * FROM blobs WHERE id = ?"),
      setOffset: p("UPDATE blobs SET off = ? WHERE id = ? AND state = 0 AND ? <= size"),
      finish: p("UPDATE blobs SET state = 1, off = size WHERE id = ? AND state = 0"),
      downloaded: p("UPDATE blobs SET downloads = downloads + 1 WHERE id = ? AND state = 1"),
      gone: p("UPDATE blobs SET state = 2, gone_why = ?, gone_at = ?, cleared = 0 WHERE id = ? AND state <> 2"),
      stored: p("SELECT COALESCE(SUM(size), 0) AS n FROM blobs WHERE account = ? AND state <> 2"),
      began: p("SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS b, MIN(created) AS o FROM blobs WHERE account = ? AND created >= ?"),
      due: p("SELECT * FROM blobs WHERE (state IN (0, 1) AND expires <= ?1) OR (state = 0 AND cap_exp <= ?1) ORDER BY created LIMIT ?2"),
      uncleared: p("SELECT * FROM blobs WHERE state = 2 AND cleared = 0 LIMIT ?"),
      cleared: p("UPDATE blobs SET cleared = 1 WHERE id = ?"),
      prune: p("DELETE FROM blobs WHERE state = 2 AND cleared = 1 AND gone_at < ?"),
      ofAccount: p("SELECT id FROM blobs WHERE account = ? AND state <> 2"),
      known: p("SELECT 1 AS k FROM blobs WHERE id = ?"),
      totals: p("SELECT COUNT(*) AS blobs, COALESCE(SUM(size), 0) AS bytes, COALESCE(SUM(state = 0), 0) AS partial FROM blobs WHERE state <> 2"),
    };
  }

  create(r: NewBlob): void {
    if (!Number.isSafeInteger(r.size) || r.size < 0) throw new Error(`media index: size ${r.size} is not a byte count`);
    this.q.create.run(r.id, r.account, r.device, r.size, r.created, r.capExp, r.expires, r.tokHash, r.recipients);
  }

  get(id: string): BlobRow | null {
    return row(this.q.get.get(id) as Raw | null);
  }

  setOffset(id: string, offset: number): boolean {
    return this.q.setOffset.run(offset, id, offset).changes === 1;
  }

  finish(id: string): boolean {
    return this.q.finish.run(id).changes === 1;
  }

  downloaded(id: string): BlobRow | null {
    if (this.q.downloaded.run(id).changes !== 1) return null;
    return this.get(id);
  }

  gone(id: string, why: GoneWhy, now: number): boolean {
    return this.q.gone.run(why, now, id).changes === 1;
  }

  usage(account: string, since: number): Usage {
    const s = this.q.stored.get(account) as { n: number };
    const b = this.q.began.get(account, since) as { n: number; b: number; o: number | null };
    return { storedBytes: s.n, uploads: b.n, uploadedBytes: b.b, oldest: b.o };
  }

  due(now: number, limit: number): BlobRow[] {
    return (this.q.due.all(now, limit) as Raw[]).map((r) => row(r)!);
  }

  uncleared(limit: number): BlobRow[] {
    return (this.q.uncleared.all(limit) as Raw[]).map((r) => row(r)!);
  }

  cleared(id: string): void {
    this.q.cleared.run(id);
  }

  prune(before: number): number {
    return this.q.prune.run(before).changes;
  }

  ofAccount(account: string): string[] {
    return (this.q.ofAccount.all(account) as { id: string }[]).map((r) => r.id);
  }

  known(id: string): boolean {
    return this.q.known.get(id) !== null;
  }

  totals(): { blobs: number; bytes: number; partial: number } {
    return this.q.totals.get() as { blobs: number; bytes: number; partial: number };
  }

  close(): void {
    this.db.close();
  }
}
