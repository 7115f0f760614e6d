/**
 * A Bloom filter over strings: "certainly not present" or "maybe present".
 * The queue uses one per shard in front of its dedup lookups, so that a new
 * message id (nearly every one) costs two hashes instead of a SQLite SELECT
 * (13 % of server CPU under the pairs load). It never forgets, so expired
 * keys slowly raise the false-positive rate; a false positive only costs
 * the SELECT it saves otherwise. 2^23 bits (1 MiB) and 3 probes: about 3 %
 * false positives at a million keys.
 */
export class BloomFilter {
  private bits: Uint32Array;
  private mask: number;

  constructor(log2Bits = 23, private probes = 3) {
    if (!Number.isInteger(log2Bits) || log2Bits < 5 || log2Bits > 31) throw new RangeError(`BloomFilter: log2Bits must be 5..31, got ${log2Bits}`);
    this.bits = new Uint32Array(2 ** (log2Bits - 5));
    this.mask = 2 ** log2Bits - 1;
  }

  add(key: string): void {
    const [h1, h2] = hashes(key);
    for (let i = 0; i < this.probes; i++) {
      const b = (h1 + Math.imul(i, h2)) & this.mask;
      this.bits[b >>> 5]! |= 1 << (b & 31);
    }
  }

  mightHave(key: string): boolean {
    const [h1, h2] = hashes(key);
    for (let i = 0; i < this.probes; i++) {
      const b = (h1 + Math.imul(i, h2)) & this.mask;
      if ((this.bits[b >>> 5]! & (1 << (b & 31))) === 0) return false;
    }
    return true;
  }
}

const pair: [number, number] = [0, 0];
/** Two independent 32-bit hashes (FNV-1a and a multiplicative one) for double hashing. Reuses one array. */
function hashes(s: string): [number, number] {
  let a = 0x811c9dc5;
  let b = 0x9e3779b9;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
    b ^= b >>> 15;
  }
  pair[0] = a >>> 0;
  pair[1] = (b >>> 0) | 1; // odd, so the probes differ
  return pair;
}
