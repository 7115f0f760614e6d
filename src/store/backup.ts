/**
 * Backup and restore of a data directory.
 *
 * A backup is taken by the CLI with its own read-only connection to each
 * database (`VACUUM INTO`), not by the server: in WAL mode a reader sees one
 * consistent snapshot of its file while the server keeps committing, so the
 * copy needs nothing from the server, and the server's event loop, which
 * would be blocked for the whole copy if its own connection ran it (VACUUM
 * is synchronous), keeps serving. Only committed rows are copied: a message
 * is acknowledged (`sent`) only once committed, so every message
 * acknowledged before the backup began is in it. The files are copied one
 * after another, each consistent in itself; a row written between two files'
 * snapshots (an account created during the backup) may be in one and not the
 * other, which the server tolerates (queued items of an unknown device
 * expire unread).
 *
 * A backup directory holds the copies at their paths in the data directory
 * and `backup.json`, written last: a backup without it was interrupted and
 * is refused by restore.
 */
import { Database } from "bun:sqlite";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { lockDataDir } from "./lock.ts";

export const MANIFEST = "backup.json";

export interface BackupFile {
  /** Relative to the data directory, with "/". */
  path: string;
  kind: "sqlite" | "file";
  bytes: number;
  /** PRAGMA user_version of a database (src/store/schema.ts). */
  schema?: number;
}

export interface Manifest {
  format: 1;
  created: string;
  dataDir: string;
  files: BackupFile[];
}

/** Not data: the lock, SQLite's side files (the copy of a database has none), migration backups, earlier restores' leftovers. */
const SKIP = (name: string) => /^lock\.(db|pid)|-(wal|shm|journal)$|\.bak$|^pre-restore-/.test(name);

function isSqlite(path: string): boolean {
  const fd = readFileSync(path).subarray(0, 16);
  return fd.toString("latin1") === "SQLite format 3\u0000";
}

function walk(root: string, dir = root): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (SKIP(e.name)) continue;
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...walk(root, p));
    else if (e.isFile()) out.push(relative(root, p).split("\\").join("/"));
  }
  return out.sort();
}

function userVersion(db: Database): number {
  return (db.query("PRAGMA user_version").get() as { user_version: number }).user_version;
}

/** Copies every database and file of `dataDir` into `dest` (which must not exist, or be empty), the server running or not. */
export function backupDataDir(dataDir: string, dest: string): Manifest {
  if (!existsSync(dataDir)) throw new Error(`data directory ${dataDir} does not exist; pass the server's --data-dir (or --config)`);
  if (existsSync(dest) && readdirSync(dest).length > 0) throw new Error(`${dest} is not empty; back up into a new directory`);
  mkdirSync(dest, { recursive: true });
  const files: BackupFile[] = [];
  for (const path of walk(dataDir)) {
    const src = join(dataDir, path);
    const to = join(dest, path);
    mkdirSync(dirname(to), { recursive: true });
    if (isSqlite(src)) {
      const db = new Database(src, { readonly: true });
      try {
        db.exec("PRAGMA busy_timeout = 5000"); // a WAL checkpoint of the server may hold a lock for a moment
        db.run("VACUUM INTO ?", [to]);
        files.push({ path, kind: "sqlite", bytes: statSync(to).size, schema: userVersion(db) });
      } finally {
        db.close();
      }
    } else {
      copyFileSync(src, to);
      files.push({ path, kind: "file", bytes: statSync(to).size });
    }
  }
  const manifest: Manifest = { format: 1, created: new Date().toISOString(), dataDir, files };
  writeFileSync(join(dest, MANIFEST), JSON.stringify(manifest, null, 2) + "\n");
  return manifest;
}

export interface Restored {
  manifest: Manifest;
  /** Where the data directory's earlier files went (null if it held none). */
  setAside: string | null;
}

/**
 * Replaces the data directory's files with a backup's, with the server
 * stopped (the directory's lock is taken for the duration: a running server
 * holds it, and a server started meanwhile waits out nothing but fails to
 * lock). Every database of the backup is checked first (`quick_check`); the
 * directory's earlier files are moved into `pre-restore-TIME/`, not deleted.
 */
export function restoreDataDir(src: string, dataDir: string): Restored {
  const mpath = join(src, MANIFEST);
  if (!existsSync(mpath)) throw new Error(`${src} is not a complete backup (no ${MANIFEST}: not made by switchboard backup, or interrupted)`);
  const manifest = JSON.parse(readFileSync(mpath, "utf8")) as Manifest;
  if (manifest.format !== 1) throw new Error(`${mpath}: backup format ${manifest.format} is unknown to this switchboard`);
  for (const f of manifest.files) {
    const p = join(src, f.path);
    if (!existsSync(p)) throw new Error(`${src} is incomplete: ${f.path} is missing`);
    if (f.kind !== "sqlite") continue;
    const db = new Database(p, { readonly: true });
    try {
      const r = (db.query("PRAGMA quick_check").all() as { quick_check: string }[]).map((x) => x.quick_check);
      if (r.join() !== "ok") throw new Error(`${p} is damaged (${r.slice(0, 3).join("; ")}); use another backup`);
    } finally {
      db.close();
    }
  }
  const lock = lockDataDir(dataDir);
  if (!lock.ok) throw new Error(`${lock.message.replace(/; stop it first.*$/, "")}: stop it before restoring (restore replaces the files it has open)`);
  try {
    const present = readdirSync(dataDir).filter((n) => !/^lock\.(db|pid)|^lock\.db-journal$|^pre-restore-/.test(n));
    let setAside: string | null = null;
    if (present.length > 0) {
      setAside = join(dataDir, `pre-restore-${new Date().toISOString().replace(/[:.]/g, "-")}`);
      mkdirSync(setAside);
      // A database moves with its -wal and -shm: a stale WAL left beside a restored file would be replayed into it.
      for (const n of present) renameSync(join(dataDir, n), join(setAside, n));
    }
    for (const f of manifest.files) {
      const to = join(dataDir, f.path);
      mkdirSync(dirname(to), { recursive: true });
      copyFileSync(join(src, f.path), to);
    }
    return { manifest, setAside };
  } finally {
    lock.lock.release();
  }
}
