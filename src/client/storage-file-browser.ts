/**
 * What a browser bundle gets for "#state-file" (package.json `imports`; elsewhere storage-file.ts): a page has
 * no files, so SecureOptions.statePath is refused with the fix, and node:fs stays out of the bundle.
 */
export function fileSlot(path: string, _fsync?: boolean): never {
  throw new TypeError(`SecureOptions.statePath (${path}): a browser has no files; pass storage: indexedDbStorage() and stateKey instead`);
}
