/**
 * StateStorage on files (Bun, Node): one file per key in a directory, mode
 * 0600, replaced atomically (a temporary file, fsynced, renamed over the old
 * one), as SecureClient's state file always was (secure-state.ts uses the
 * same write).
 */
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, writeSync } from "node:fs";
import { readFile, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { checkKey, type StateStorage } from "./storage.ts";

/** Writes `data` to `path` through `path`.tmp: fsynced (unless `fsync` is false: tests, benchmarks) and renamed over it. */
export function writeFileAtomic(path: string, data: Uint8Array, fsync = true): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp`;
  const fd = openSync(tmp, "w", 0o600);
  try {
    writeSync(fd, data);
    if (fsync) fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

export function fileStorage(dir: string): StateStorage {
  return {
    name: `file:${dir}`,
    async load(key) {
      try {
        return new Uint8Array(await readFile(join(dir, checkKey(key))));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
        throw e;
      }
    },
    async save(key, bytes) {
      writeFileAtomic(join(dir, checkKey(key)), bytes);
    },
    async remove(key) {
      await rm(join(dir, checkKey(key)), { force: true });
    },
  };
}

/** One file as a state slot (secure-state.ts): SecureOptions.statePath. */
export function fileSlot(path: string, fsync = true): { name: string; load(): Promise<Uint8Array | null>; save(bytes: Uint8Array): Promise<void>; remove(): Promise<void> } {
  return {
    name: path,
    async load() {
      try {
        return new Uint8Array(await readFile(path));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
        throw e;
      }
    },
    async save(bytes) {
      writeFileAtomic(path, bytes, fsync);
    },
    async remove() {
      await rm(path, { force: true });
    },
  };
}
