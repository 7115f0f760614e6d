/**
 * accounts.db's schema steps (src/store/schema.ts runs them) and the module data its first version held, handed
 * over to the modules' files before step 2 drops it (SqliteAccountStore opens the file with them).
 */
import type { Database } from "bun:sqlite";
import { join } from "node:path";
import { addColumn, copyInto, type Migration } from "./schema.ts";

/**
 * Module data 3337863 kept in accounts.db, and the module file and table it
 * now lives in. Core knows these names only as history (what its own file
 * held at version 1); each table is created as its module's own schema
 * creates it (IF NOT EXISTS there keeps it). Copied before step 2 drops the
 * source, each file in one transaction of its own; a crash in between copies
 * again on the next start, and a mark or a time only moves up (max), so a
 * second copy changes nothing.
 */
const hasTable = (db: Database, t: string) => db.query("SELECT 1 AS x FROM sqlite_master WHERE type = 'table' AND name = ?").get(t) !== null;
const hasColumn = (db: Database, t: string, c: string) => db.query("SELECT 1 AS x FROM pragma_table_info(?) WHERE name = ?").get(t, c) !== null;

const HANDED_OVER: { file: string; holds: (db: Database) => boolean; create: string; copy: string }[] = [
  {
    file: "messaging.db",
    holds: (db) => hasTable(db, "read_marks") && db.query("SELECT 1 AS x FROM read_marks LIMIT 1").get() !== null,
    create: "CREATE TABLE IF NOT EXISTS m.read_marks (account TEXT NOT NULL, peer TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (account, peer))",
    copy: "INSERT INTO m.read_marks (account, peer, seq) SELECT account, peer, seq FROM main.read_marks WHERE true ON CONFLICT (account, peer) DO UPDATE SET seq = max(seq, excluded.seq)",
  },
  {
    file: "presence.db",
    holds: (db) => hasColumn(db, "accounts", "last_seen") && db.query("SELECT 1 AS x FROM accounts WHERE last_seen IS NOT NULL LIMIT 1").get() !== null,
    create: "CREATE TABLE IF NOT EXISTS m.last_seen (account TEXT PRIMARY KEY, ts INTEGER NOT NULL) WITHOUT ROWID",
    copy: "INSERT INTO m.last_seen (account, ts) SELECT name, last_seen FROM main.accounts WHERE last_seen IS NOT NULL ON CONFLICT (account) DO UPDATE SET ts = max(ts, excluded.ts)",
  },
];

/** Runs before the steps (after the backup), only on a file below the current version. */
export function handOver(db: Database, dataDir: string): void {
  for (const h of HANDED_OVER) if (h.holds(db)) copyInto(db, join(dataDir, h.file), [h.create, h.copy]);
}

/** accounts.db's schema steps (src/store/schema.ts): 1 = 3337863; 2 = module data handed over (handOver, run before it); 3 = operator controls; 4 = codes by account. */
export const ACCOUNTS_SCHEMA: readonly Migration[] = [
  (db) => {
    db.exec(`
      CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS accounts (
        name TEXT PRIMARY KEY, created INTEGER NOT NULL, next_device INTEGER NOT NULL DEFAULT 1, last_seen INTEGER);
      CREATE TABLE IF NOT EXISTS devices (
        account TEXT NOT NULL REFERENCES accounts(name), device INTEGER NOT NULL, pk BLOB NOT NULL UNIQUE,
        name TEXT NOT NULL, created INTEGER NOT NULL, revoked INTEGER, PRIMARY KEY (account, device));
      CREATE TABLE IF NOT EXISTS enroll_codes (
        hash BLOB PRIMARY KEY, account TEXT NOT NULL REFERENCES accounts(name), expires INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS seqs (conv TEXT PRIMARY KEY, hi INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS read_marks (account TEXT NOT NULL, peer TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (account, peer));
`);
    // Data directories made before key versions existed get the column here (cheap: SQLite adds it without a rewrite).
    addColumn("devices", "kv", "INTEGER NOT NULL DEFAULT 0")(db);
  },
  (db) => {
    db.exec("DROP TABLE IF EXISTS read_marks");
    if (hasColumn(db, "accounts", "last_seen")) db.exec("ALTER TABLE accounts DROP COLUMN last_seen");
  },
  // 3: operator controls: disabled accounts, and the names of deleted ones, reserved for the retention period.
  (db) => {
    addColumn("accounts", "disabled", "INTEGER")(db);
    db.exec("CREATE TABLE IF NOT EXISTS tombstones (name TEXT PRIMARY KEY, deleted INTEGER NOT NULL, until INTEGER NOT NULL)");
  },
  // 4: codes by account. A shard move reads and replaces an account's codes (exportRows, dropRows): without it each
  // was a scan of every code, so 20 000 accounts of one shard with a code each took 24 s to export and 20 s to
  // import again (the move timed out), against 0.1 and 0.3 s with it (one run each, test/cluster/move-rss.ts).
  (db) => db.exec("CREATE INDEX IF NOT EXISTS enroll_codes_by_account ON enroll_codes (account)"),
];
