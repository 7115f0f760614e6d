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
