/**
 * Schema versions of the SQLite files. Each file records its version in
 * `PRAGMA user_version` (a field of the file header: no table, read for
 * free). A store lists its migrations; step i takes a file from version i to
 * i+1, and the version a server writes is the number of steps.
 *
 * - Version 1 is the schema as of 3337863, the first release, whose files
 *   carry user_version 0: step 1 is written with `IF NOT EXISTS` and column
 *   checks, so on such a file it changes nothing but the version, and on an
 *   empty file it creates everything.
 * - A file at an older version is first copied beside itself
 *   (`FILE.vN.bak`, by `VACUUM INTO`: a consistent copy even with a WAL),
 *   then migrated in one transaction with its new version: a crash or a
 *   failing step leaves it at the old version, as it was.
 * - A file at a newer version than this server knows stops the start with a
 *   message: an older server would misread a newer schema, and silently.
 * - A file that is not a database, or is corrupt where the open reads it,
 *   stops the start with a message naming the file and what to do.
 * - A step that must write another file (core's accounts.db handing module
 *   data over to the modules' files) runs as `before`: after the backup,
 *   before the transaction (SQLite refuses ATTACH inside one), idempotent,
 *   and writing only the other file (copyInto), so the file it reads is
 *   still as it was until its own transaction commits.
 */
import type { Database } from "bun:sqlite";
import { existsSync, rmSync } from "node:fs";
import { openDatabase, type Durability } from "./sqlite.ts";
import { fileTruncated } from "./errors.ts";

/** One step: SQL to run, or a function for steps that must look first (a column that may already exist). */
export type Migration = string | ((db: Database) => void);

/** What SQLite says of a file that is damaged (SQLITE_CORRUPT, SQLITE_NOTADB). */
const DAMAGED = /SQLITE_CORRUPT|SQLITE_NOTADB|malformed|not a database/i;

/** A file found damaged, named in the message; never named again as the file of whoever was opening it. */
class DamagedFile extends Error {}

export function damagedFileMessage(path: string, e: Error): string {
  return `${path} is damaged (${e.message}); stop here and keep the file for inspection. Restore the data directory from a backup (switchboard restore DIR), or move this file aside to start it empty (its data is lost)`;
}

export function schemaVersion(db: Database): number {
  return (db.query("PRAGMA user_version").get() as { user_version: number }).user_version;
}

/** Opens `path` (see openDatabase) and brings it to the version `steps` describe, or throws saying why it cannot. */
export function openVersioned(path: string, durability: Durability, steps: readonly Migration[], before?: (db: Database) => void): Database {
  let db: Database | null = null;
  const cut = fileTruncated(path); // a file cut short reads fine until a query reaches its missing pages
  if (cut !== null) throw new Error(damagedFileMessage(path, new Error(cut)));
  try {
    db = openDatabase(path, durability);
    migrate(db, path, steps, before);
    return db;
  } catch (e) {
    db?.close();
    if (e instanceof DamagedFile) throw e;
    if (DAMAGED.test(`${(e as { code?: string }).code ?? ""} ${(e as Error).message}`)) throw new Error(damagedFileMessage(path, e as Error));
    throw e;
  }
}

/** Brings an open file to the version `steps` describe (see above); throws if it is newer. */
export function migrate(db: Database, path: string, steps: readonly Migration[], before?: (db: Database) => void): void {
  const target = steps.length;
  const at = schemaVersion(db);
  if (at === target) return;
  if (at > target) {
    throw new Error(
      `${path} has schema version ${at}, newer than this server's ${target}: a newer switchboard wrote it. Run that version (or a later one), or restore a backup taken before the upgrade`,
    );
  }
  const hasTables = (db.query("SELECT COUNT(*) AS n FROM sqlite_master").get() as { n: number }).n > 0;
  if (hasTables) {
    const bak = `${path}.v${at}.bak`;
    if (existsSync(bak)) rmSync(bak); // left by an attempt that failed: the file is still at version `at`
    db.run("VACUUM INTO ?", [bak]);
  }
  before?.(db);
  // IMMEDIATE: a CLI opening the same file at the same moment waits, then finds the new version and does nothing.
  db.transaction(() => {
    for (let v = schemaVersion(db); v < target; v++) {
      const step = steps[v]!;
      if (typeof step === "string") db.exec(step);
      else step(db);
    }
    db.exec(`PRAGMA user_version = ${target}`);
  }).immediate();
}

/** A step that adds a column unless the table has it already (files written between two versions). */
export function addColumn(table: string, column: string, decl: string): (db: Database) => void {
  return (db) => {
    const cols = db.query(`PRAGMA table_info(${table})`).all() as { name: string }[];
    if (!cols.some((c) => c.name === column)) db.exec(`ALTER TABLE ${table} ADD COLUMN ${column} ${decl}`);
  };
}

/**
 * Runs `sql` in one transaction with `path` attached as `m` (created if
 * missing): a copy from this file into another. Only `m` may be written;
 * WAL makes a transaction over two files atomic per file, not across them,
 * so a caller that later deletes the source does it in a transaction of its
 * own, after this one has committed.
 */
export function copyInto(db: Database, path: string, sql: readonly string[]): void {
  const cut = fileTruncated(path);
  if (cut !== null) throw new DamagedFile(damagedFileMessage(path, new Error(cut)));
  let attached = false;
  try {
    db.run("ATTACH DATABASE ? AS m", [path]);
    attached = true;
    db.transaction(() => {
      for (const q of sql) db.exec(q);
    }).immediate();
  } catch (e) {
    // The other file is the damaged one: name it, not the file that was being migrated.
    if (DAMAGED.test(`${(e as { code?: string }).code ?? ""} ${(e as Error).message}`)) throw new DamagedFile(damagedFileMessage(path, e as Error));
    throw e;
  } finally {
    if (attached) db.exec("DETACH DATABASE m");
  }
}
