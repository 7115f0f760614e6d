/** Byte-string helpers with no crypto and no node:* import (used by primitives.ts and by webcrypto.ts, which must bundle for browsers). */
export function concat(...parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
