/**
 * Where a client keeps its device state (key file contents, the E2E state
 * SecureClient serialises): one interface, a file implementation for Bun and
 * Node (storage-file.ts) and an IndexedDB one for browsers (storage-idb.ts),
 * held to one contract (test/client/storage-contract.ts, run in Bun on files
 * and in Chromium on IndexedDB).
 *
 * Asynchronous because IndexedDB is. SecureClient keeps its state in one
 * record of one (SecureOptions `storage` + `stateKey`; secure-state.ts).
 */
export interface StateStorage {
  /** For messages ("file:/var/lib/app", "indexeddb:switchboard"). */
  readonly name: string;
  /** The bytes last saved under `key`, or null when there are none. */
  load(key: string): Promise<Uint8Array | null>;
  /** Replaces what `key` holds, atomically: after a crash, the old bytes or the new, never a mix. */
  save(key: string, bytes: Uint8Array): Promise<void>;
  /** Forgets `key` (nothing happens when it holds nothing). */
  remove(key: string): Promise<void>;
}

/** Keys are names an app chooses ("alice.key", "alice.key.e2e"): letters, digits and . _ - only, so a file name is the key itself. */
export function checkKey(key: string): string {
  if (!/^[A-Za-z0-9._-]{1,200}$/.test(key) || key === "." || key === "..") {
    throw new TypeError(`storage key ${JSON.stringify(key)}: use 1 to 200 of A-Z a-z 0-9 . _ - (not "." or "..")`);
  }
  return key;
}
