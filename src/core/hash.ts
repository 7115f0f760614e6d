/**
 * FNV-1a, 32-bit: stable across processes and versions, unlike any runtime
 * hash. It places an account in a registry shard and in a queue shard file,
 * so it must never change for a data directory (queue.shards' note).
 */
export function hashName(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}
