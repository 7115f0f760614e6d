/**
 * The messaging module's own store (messaging.db, from ctx.database; nothing
 * outside this module reads it): 1:1 read marks, per reader and peer, the
 * highest sequence number the reader has read in their conversation.
 *
 * Data directories of 3337863 kept these rows in accounts.db; core hands
 * them over into this file, under the same table, before this module first
 * opens it (accounts.db's schema step 2).
 *
 * Cost: one single-row upsert per `read` that moves a mark forward (about
 * 25 µs at synchronous=NORMAL); a `read` at or below the mark writes nothing.
 */
import type { Database, Statement } from "bun:sqlite";

/** messaging.db's schema steps, applied by core (ctx.database): 1 = read marks. */
export const MESSAGING_SCHEMA = [
  "CREATE TABLE IF NOT EXISTS read_marks (account TEXT NOT NULL, peer TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (account, peer))",
];

export interface ReadMarks {
  /** Moves a read marker forward; returns false when `seq` is not above the stored one. */
  advance(account: string, peer: string, seq: number): boolean;
  /** The marker of `account` in its conversation with `peer`; 0 when it never read there. */
  get(account: string, peer: string): number;
  /** Deletes every marker of `account`, its own and those of others about it (the account was deleted); returns how many. */
  dropAccount(account: string): number;
}

export class SqliteReadMarks implements ReadMarks {
  private q: Record<"get" | "advance" | "drop", Statement>;

  constructor(db: Database) {
    this.q = {
      get: db.prepare("SELECT seq FROM read_marks WHERE account = ? AND peer = ?"),
      advance: db.prepare(
        "INSERT INTO read_marks (account, peer, seq) VALUES (?, ?, ?) ON CONFLICT (account, peer) DO UPDATE SET seq = excluded.seq WHERE excluded.seq > seq",
      ),
      drop: db.prepare("DELETE FROM read_marks WHERE account = ?1 OR peer = ?1"),
    };
  }

  advance(account: string, peer: string, seq: number): boolean {
    return this.q.advance.run(account, peer, seq).changes > 0;
  }

  get(account: string, peer: string): number {
    const r = this.q.get.get(account, peer) as { seq: number } | null;
    return r ? r.seq : 0;
  }

  dropAccount(account: string): number {
    return this.q.drop.run(account).changes;
  }
}
