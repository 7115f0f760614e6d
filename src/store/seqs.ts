/**
 * Sequence number reservations, per conversation: the upper bound of the
 * block each conversation last reserved (core/seq.ts hands the numbers out).
 * Core's fact, not a module's: every conversation's numbers (1:1 and group)
 * come from one allocator, and the guarantee that a number is never issued
 * twice, across crashes, is a property of the acceptance pipeline that
 * clients rely on (docs/PROTOCOL.md §6), whatever module accepted the
 * message. The rows stay in accounts.db's `seqs` table, where 3337863 put
 * them, so no migration ever moves them (a move is where a crash could lose
 * a bound and reissue a number).
 */
import type { Database, Statement } from "bun:sqlite";

export interface SeqStore {
  /** Reserves `block` more sequence numbers for a conversation; returns the new upper bound (0 reserves none and reads it). */
  reserveSeq(conv: string, block: number): number;
}

export class SqliteSeqStore implements SeqStore {
  private reserve: Statement;

  /** `db`: accounts.db, opened by SqliteAccountStore (which creates the `seqs` table). */
  constructor(db: Database) {
    this.reserve = db.prepare("INSERT INTO seqs (conv, hi) VALUES (?, ?) ON CONFLICT (conv) DO UPDATE SET hi = hi + excluded.hi RETURNING hi");
  }

  reserveSeq(conv: string, block: number): number {
    return (this.reserve.get(conv, block) as { hi: number }).hi;
  }
}
