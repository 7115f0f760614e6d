/** Opening a SQLite file the way every store here wants it. */
import { Database } from "bun:sqlite";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";

export type Durability = "process" | "power";

/**
 * WAL, with `synchronous` chosen from the durability level:
 * - "process" (NORMAL): a commit is in the WAL in the OS page cache before it
 *   returns, so `kill -9` of the process loses nothing committed; power loss
 *   may lose the last commits. About 10x faster for small transactions.
 * - "power" (FULL): fsync on every commit; survives power loss.
 */
export function openDatabase(path: string, durability: Durability = "process"): Database {
  mkdirSync(dirname(path), { recursive: true });
  const db = new Database(path, { create: true, strict: true });
  // First: the journal_mode switch itself needs a lock (and WAL recovery after a crash), and without a busy
  // handler it fails at once with "database is locked" if another connection (the CLI) holds one just then.
  db.exec("PRAGMA busy_timeout = 5000"); // the CLI writes accounts while the server runs
  db.exec("PRAGMA journal_mode = WAL");
  db.exec(`PRAGMA synchronous = ${durability === "power" ? "FULL" : "NORMAL"}`);
  db.exec("PRAGMA foreign_keys = ON");
  return db;
}
