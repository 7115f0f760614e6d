/**
 * Attachment blobs (issue 15, docs/MEDIA.md): ciphertext the server stores and
 * serves without reading it. Two places hold a blob's bytes:
 *
 * - **Staging** (always on this node's disk, `<data>/media/partial/<id>`): an
 *   upload in progress. tus PATCHes append to it; the media index keeps the
 *   offset that is known durable (the file is fsynced before the offset is
 *   written), so after a crash the file is cut back to that offset.
 * - **A BlobStore** (`media.store`): finished blobs, written once, read by
 *   range, deleted. `disk` keeps them under `<data>/media/blobs/`; `s3` in a
 *   bucket (src/store/blobs-s3.ts), so that any node of a cluster serves any
 *   blob. The staging file is handed over with `putFile` when the last byte
 *   arrived.
 *
 * Why finished blobs only, and not the partial upload in S3 too: a resumable
 * upload needs its offset to survive a crash, and an S3 multipart upload's
 * parts cannot be appended to byte by byte (each but the last is at least
 * 5 MiB) nor listed through Bun's S3Client; staging on disk and one multipart
 * upload at the end keeps the one offset in one place. Bun also cannot sign
 * a size limit into a presigned URL, so clients never write to S3 directly:
 * the server counts the bytes as they stream in (src/core/media/http.ts).
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, statSync, truncateSync } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { join } from "node:path";

/** A blob id: 128 random bits, base64url (22 characters); nothing else names a file. */
export const BLOB_ID = /^[A-Za-z0-9_-]{22}$/;

export interface BlobStore {
  readonly kind: "disk" | "s3";
  /**
   * Takes a complete local file (a finished staging file) as blob `id`: durable when the promise resolves,
   * never visible half-written; the local file is gone afterwards (moved or uploaded, then removed).
   */
  putFile(id: string, path: string): Promise<void>;
  /**
   * Bytes [start, end) of blob `id` as a response body to hand to Bun as it is: a file slice (sent with its
   * Content-Length, by sendfile) or the body of a ranged GET to S3. Bun.serve drops a Content-Length given with
   * a stream made in JS and sends it chunked (oven-sh/bun#10507, tested with 1.4.5), so nothing may wrap these.
   * Null when there is no such blob.
   */
  read(id: string, start: number, end: number): Promise<Blob | ReadableStream<Uint8Array> | null>;
  /** The blob's length in bytes, or null when there is none. */
  size(id: string): Promise<number | null>;
  /** Removes the blob (nothing when there is none): its bytes are gone from the store when this resolves. */
  delete(id: string): Promise<void>;
  /** Every blob id held (to collect blobs the index no longer knows: a crash between put and index). */
  ids(): AsyncIterable<string>;
  close(): void;
}

function checkId(id: string): void {
  if (!BLOB_ID.test(id)) throw new Error(`blob id ${JSON.stringify(id)}: expected 22 base64url characters (a 128-bit random id)`);
}

/** fsync of a directory, so a rename or unlink in it survives power loss. */
function syncDir(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Finished blobs on this node's disk: `<dir>/<first two characters>/<id>` (256 x 64 folders, so no folder
 * grows past a few thousand files at a million blobs). `putFile` fsyncs the file, renames it into place
 * (staging is on the same file system: no copy) and fsyncs the folder.
 */
export class DiskBlobs implements BlobStore {
  readonly kind = "disk" as const;

  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true });
  }

  path(id: string): string {
    checkId(id);
    return join(this.dir, id.slice(0, 2), id);
  }

  async putFile(id: string, src: string): Promise<void> {
    const dest = this.path(id);
    const fd = openSync(src, "r+");
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    mkdirSync(join(this.dir, id.slice(0, 2)), { recursive: true });
    renameSync(src, dest);
    syncDir(join(this.dir, id.slice(0, 2)));
  }

  async read(id: string, start: number, end: number): Promise<Blob | null> {
    const n = await this.size(id);
    if (n === null) return null;
    return Bun.file(this.path(id)).slice(start, Math.min(end, n)); // Bun sends it with sendfile(2)
  }

  async size(id: string): Promise<number | null> {
    const p = this.path(id);
    try {
      return statSync(p).size;
    } catch {
      return null;
    }
  }

  async delete(id: string): Promise<void> {
    rmSync(this.path(id), { force: true });
  }

  async *ids(): AsyncIterable<string> {
    for (const sub of readdirSync(this.dir)) {
      let names: string[];
      try {
        names = readdirSync(join(this.dir, sub));
      } catch {
        continue;
      }
      for (const n of names) if (BLOB_ID.test(n)) yield n;
    }
  }

  close(): void {}
}

/**
 * Uploads in progress, one file each under `dir` (on this node's disk whatever `media.store` is).
 * A writer appends and `sync`s; the caller records the synced offset in the media index.
 */
export class Staging {
  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true });
  }

  path(id: string): string {
    checkId(id);
    return join(this.dir, id);
  }

  /** Opens the upload's file for appending at `offset` (the index's durable offset): a longer file (bytes written after the last recorded sync, before a crash) is cut back to it. */
  async openAt(id: string, offset: number): Promise<FileHandle> {
    const p = this.path(id);
    const fh = await open(p, "a+", 0o600);
    const st = await fh.stat();
    if (st.size < offset) {
      await fh.close();
      throw new Error(`staging file ${id} has ${st.size} bytes, the index says ${offset} are durable`);
    }
    if (st.size > offset) await fh.truncate(offset);
    return fh;
  }

  /** Cuts the file back to `offset` (a PATCH refused part-way). */
  truncate(id: string, offset: number): void {
    truncateSync(this.path(id), offset);
  }

  size(id: string): number | null {
    try {
      return statSync(this.path(id)).size;
    } catch {
      return null;
    }
  }

  remove(id: string): void {
    rmSync(this.path(id), { force: true });
  }

  ids(): string[] {
    return readdirSync(this.dir).filter((n) => BLOB_ID.test(n));
  }

  /** Renames a file into the staging folder (a test's or a tool's complete blob). */
  adopt(id: string, from: string): void {
    renameSync(from, this.path(id));
  }
}
