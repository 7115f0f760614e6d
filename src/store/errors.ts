/**
 * What a SQLite error means for the server, and the storage alarm it raises.
 *
 * - `disk_full` (SQLITE_FULL) and `io_error` (SQLITE_IOERR and its extended
 *   codes) are conditions of the disk, not of the data: the write that hit
 *   them was rolled back whole (SQLite does that for both, and bun:sqlite's
 *   transaction() issues the ROLLBACK), so the same batch can be written
 *   again once the disk is back. The queue keeps the batch in memory and
 *   retries it (src/store/queue-sqlite.ts); until one commit succeeds, the
 *   server refuses new sends with `storage_unavailable`, and /readyz and
 *   `switchboard_storage_alarm` say so.
 * - Anything else (a constraint, a bug, SQLITE_CORRUPT) is not retried: it
 *   is thrown as before.
 *
 * A damaged file found at start is schema.ts's (damagedFileMessage) and
 * fileTruncated's below: the server stops, naming the file.
 */
import { closeSync, openSync, readSync, statSync } from "node:fs";

export type StorageCause = "disk_full" | "io_error";

/** How soon a commit that failed on the disk is tried again: often enough to notice space coming back, rare enough to cost nothing. */
export const COMMIT_RETRY_MS = 1000;

/** SQLITE_FULL = 13, SQLITE_IOERR = 10 (extended codes keep it in the low byte: SQLITE_IOERR_WRITE = 778). */
export function storageCause(e: unknown): StorageCause | null {
  if (e === null || typeof e !== "object") return null;
  const { code, errno } = e as { code?: unknown; errno?: unknown };
  const primary = typeof errno === "number" ? errno & 0xff : -1;
  if (code === "SQLITE_FULL" || primary === 13) return "disk_full";
  if ((typeof code === "string" && code.startsWith("SQLITE_IOERR")) || primary === 10) return "io_error";
  return null;
}

/** One file that failed to commit, and since when. */
export interface StorageFault {
  file: string;
  cause: StorageCause;
  since: number;
  message: string;
}

/**
 * Which store files cannot commit right now. The queue raises a fault when a
 * commit fails on the disk and clears it when a retry commits; core reads
 * `faults` to refuse sends and to answer /readyz. No I/O here.
 */
export class StorageAlarm {
  private faults = new Map<string, StorageFault>();

  /** `changed` hears every fault raised (with it) and cleared (null): the server logs and counts them. */
  constructor(private readonly changed: (file: string, fault: StorageFault | null) => void = () => {}) {}

  /** A commit of `file` failed on the disk; a fault already raised keeps its `since`. */
  raise(file: string, cause: StorageCause, message: string, now = Date.now()): void {
    const f = this.faults.get(file);
    if (f !== undefined && f.cause === cause) return;
    const fault = { file, cause, since: f?.since ?? now, message };
    this.faults.set(file, fault);
    this.changed(file, fault);
  }

  /** A commit of `file` succeeded: it is healthy again. Returns whether it had a fault. */
  clear(file: string): boolean {
    if (!this.faults.delete(file)) return false;
    this.changed(file, null);
    return true;
  }

  /** True while any file cannot commit. One property read: it is checked on every send. */
  get active(): boolean {
    return this.faults.size > 0;
  }

  /** The oldest fault (what /readyz and the send refusal name), or null. */
  first(): StorageFault | null {
    let first: StorageFault | null = null;
    for (const f of this.faults.values()) if (first === null || f.since < first.since) first = f;
    return first;
  }

  list(): StorageFault[] {
    return [...this.faults.values()];
  }
}

/**
 * A file shorter than its own header says (a copy cut short, a disk that
 * lost its tail) returns its first pages as if nothing were wrong, and fails
 * only when a query reaches a missing page, which may be long after the
 * start. The header (bytes 28..31: pages, 16..17: page size) tells for the
 * price of one 100-byte read. Returns a description of the damage, or null.
 * In WAL mode the file may be longer than the header says (pages past it
 * come from the WAL), never shorter.
 */
export function fileTruncated(path: string): string | null {
  let size: number;
  try {
    size = statSync(path).size;
  } catch {
    return null; // not there yet: SQLite creates it
  }
  if (size < 100) return null; // empty or not a database: SQLite's own open says which
  // A WAL with frames may hold the pages a crash cut off mid-checkpoint: SQLite's recovery finishes that.
  try {
    if (statSync(`${path}-wal`).size > 0) return null;
  } catch {}
  const h = Buffer.alloc(100);
  const fd = openSync(path, "r");
  try {
    readSync(fd, h, 0, 100, 0);
  } finally {
    closeSync(fd);
  }
  if (h.toString("latin1", 0, 16) !== "SQLite format 3\u0000") return null; // SQLITE_NOTADB at open, named there
  const raw = h.readUInt16BE(16);
  const pageSize = raw === 1 ? 65536 : raw;
  const pages = h.readUInt32BE(28);
  // The page count is valid only when the change counter matches "version-valid-for" (SQLite ≥ 3.7.0 files).
  if (h.readUInt32BE(24) !== h.readUInt32BE(92) || pages === 0) return null;
  const want = pages * pageSize;
  return size < want ? `the file has ${size} bytes, its header says ${pages} pages of ${pageSize} (${want} bytes): it is truncated` : null;
}
