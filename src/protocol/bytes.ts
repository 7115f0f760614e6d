/** Byte-string helpers with no crypto and no node:* import: shared by the SDK's crypto (which must bundle for browsers) and the transport's DER writer (devcert.ts), so protocol/ is the layer both may import. */
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

/**
 * A uint32, big-endian, at `at`. Not a DataView: `.buffer` of a typed array the engine made small and fresh has JSC
 * allocate its ArrayBuffer on first access, which was ~9 % of a bare reconnect's JS samples through the ticket and
 * transcript code (BENCHMARKS.md "reconnect3").
 */
export function putU32(out: Uint8Array, at: number, v: number): void {
  out[at] = v >>> 24;
  out[at + 1] = (v >>> 16) & 0xff;
  out[at + 2] = (v >>> 8) & 0xff;
  out[at + 3] = v & 0xff;
}

/** The uint32, big-endian, at `at` (see putU32). */
export function getU32(b: Uint8Array, at: number): number {
  return ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0;
}
