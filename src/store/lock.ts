/**
 * One server per data directory. Two servers on one directory each keep
 * their own in-memory state over the same files (buffered queue items,
 * sequence blocks, usage counts, live connections), so live delivery
 * breaks, sequence numbers go out of order and gauges go negative; nothing
 * about the files would tell them apart.
 *
 * The lock is an OS lock that dies with the process: `lock.db` is opened
 * with SQLite's `locking_mode=EXCLUSIVE` and an exclusive transaction is
 * begun and held for the life of the process. SQLite takes it as an fcntl
 * lock, which the kernel drops when the process exits, however it exits,
 * `kill -9` included: no stale lock to clean up, and no pid to trust (a pid
 * can be reused). `lock.pid` next to it only names the holder in the
 * message a second server gets.
 */
import { Database } from "bun:sqlite";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface DirLock {
  /** Lets go of the directory (at the end of a clean shutdown; an exit does it too). */
  release(): void;
}

export type LockResult = { ok: true; lock: DirLock } | { ok: false; holder: number | null; message: string };

export function lockDataDir(dataDir: string): LockResult {
  mkdirSync(dataDir, { recursive: true });
  const path = join(dataDir, "lock.db");
  const pidFile = join(dataDir, "lock.pid");
  const db = new Database(path, { create: true });
  try {
    db.exec("PRAGMA busy_timeout = 0"); // the answer is wanted now: held or not
    db.exec("PRAGMA locking_mode = EXCLUSIVE");
    db.exec("BEGIN EXCLUSIVE");
    // A write makes SQLite keep the exclusive lock until the transaction ends, which it never does.
    db.exec("CREATE TABLE IF NOT EXISTS held (pid INTEGER)");
  } catch (e) {
    db.close();
    if (!/locked|busy/i.test((e as Error).message)) throw e;
    let holder: number | null = null;
    try {
      holder = Number.parseInt(readFileSync(pidFile, "utf8"), 10) || null;
    } catch {}
    return {
      ok: false,
      holder,
      message: `data directory ${dataDir} is in use by another switchboard server${holder !== null ? ` (pid ${holder})` : ""}; stop it first, or give this one its own --data-dir`,
    };
  }
  writeFileSync(pidFile, `${process.pid}\n`);
  return {
    ok: true,
    lock: {
      release() {
        db.exec("ROLLBACK");
        db.close();
      },
    },
  };
}
