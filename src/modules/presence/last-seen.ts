/**
 * Last seen, per account: when its last device went offline. The presence
 * module's own data, in presence.db (ctx.database). Data directories of
 * 3337863 kept it as a column of core's accounts.db; core hands it over into
 * this file's `last_seen` table, created as step 1 below creates it, before
 * this module first opens the file.
 */
import type { Database, Statement } from "bun:sqlite";

/** presence.db's schema steps, applied by core (ctx.database): 1 = last seen. */
export const LAST_SEEN_SCHEMA = ["CREATE TABLE IF NOT EXISTS last_seen (account TEXT PRIMARY KEY, ts INTEGER NOT NULL) WITHOUT ROWID"];

export class SqliteLastSeen {
  private q: Record<"get" | "set" | "drop", Statement>;

  constructor(db: Database) {
    this.q = {
      get: db.prepare("SELECT ts FROM last_seen WHERE account = ?"),
      set: db.prepare("INSERT INTO last_seen (account, ts) VALUES (?, ?) ON CONFLICT (account) DO UPDATE SET ts = excluded.ts"),
      drop: db.prepare("DELETE FROM last_seen WHERE account = ?"),
    };
  }

  /** Null when the account was never seen going offline. */
  get(account: string): number | null {
    const r = this.q.get.get(account) as { ts: number } | null;
    return r ? r.ts : null;
  }

  set(account: string, ts: number): void {
    this.q.set.run(account, ts);
  }

  /** The account was deleted. */
  drop(account: string): void {
    this.q.drop.run(account);
  }
}
