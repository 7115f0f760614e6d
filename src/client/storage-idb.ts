/**
 * StateStorage on IndexedDB (browsers): one object store, one record per
 * key. A put is its own readwrite transaction, which IndexedDB commits
 * whole or not at all: the atomic replace the interface asks for. No node:*
 * import, so it bundles for the browser.
 */
import { checkKey, type StateStorage } from "./storage.ts";

// The part of IndexedDB used here, typed locally: the project's TypeScript lib has no DOM (src/ is
// mostly server code), and pulling DOM's globals into every file for one module is not worth it.
type Handler = (() => void) | null;
interface IdbRequest<T> { readonly result: T; readonly error: unknown; onsuccess: Handler; onerror: Handler }
interface IdbOpenRequest extends IdbRequest<IdbDatabase> { onupgradeneeded: Handler }
interface IdbDatabase { transaction(store: string, mode: "readonly" | "readwrite"): IdbTransaction; createObjectStore(name: string): unknown }
interface IdbTransaction { objectStore(name: string): IdbStore; readonly error: unknown; oncomplete: Handler; onerror: Handler; onabort: Handler }
interface IdbStore { get(key: string): IdbRequest<unknown>; put(value: unknown, key: string): IdbRequest<unknown>; delete(key: string): IdbRequest<unknown> }
const idb = (): { open(name: string, version: number): IdbOpenRequest } | undefined => (globalThis as { indexedDB?: { open(name: string, version: number): IdbOpenRequest } }).indexedDB;

const STORE = "state";

function promised<T>(req: IdbRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error("IndexedDB request failed"));
  });
}

/** The storage in database `dbName` of this origin (opened, and created on first use, when first needed). */
export function indexedDbStorage(dbName = "switchboard"): StateStorage {
  let db: Promise<IdbDatabase> | null = null;
  const open = (): Promise<IdbDatabase> =>
    (db ??= new Promise((resolve, reject) => {
      const factory = idb();
      if (!factory) return reject(new Error("indexedDbStorage: this runtime has no IndexedDB; use fileStorage (src/client/storage-file.ts) outside browsers"));
      const req = factory.open(dbName, 1);
      req.onupgradeneeded = () => req.result.createObjectStore(STORE);
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error ?? new Error(`cannot open IndexedDB ${dbName}`));
    }));
  /** One request in its own transaction, resolved when the transaction has committed (not merely when the request succeeded). */
  const run = async <T>(mode: "readonly" | "readwrite", f: (s: IdbStore) => IdbRequest<T>): Promise<T> => {
    const tx = (await open()).transaction(STORE, mode);
    const result = promised(f(tx.objectStore(STORE)));
    await new Promise<void>((resolve, reject) => {
      tx.oncomplete = () => resolve();
      tx.onerror = tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction failed"));
    });
    return result;
  };
  return {
    name: `indexeddb:${dbName}`,
    async load(key) {
      const v = await run("readonly", (s) => s.get(checkKey(key)));
      return v instanceof Uint8Array ? v : v instanceof ArrayBuffer ? new Uint8Array(v) : null;
    },
    async save(key, bytes) {
      await run("readwrite", (s) => s.put(bytes.slice(), checkKey(key)));
    },
    async remove(key) {
      await run("readwrite", (s) => s.delete(checkKey(key)));
    },
  };
}
