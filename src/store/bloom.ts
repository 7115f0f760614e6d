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
  /** Keys added since the last clear(): the queue rebuilds the filter once most of them are gone from its tables. */
  added = 0;

  constructor(log2Bits = 23, private probes = 3) {
    if (!Number.isInteger(log2Bits) || log2Bits < 5 || log2Bits > 31) throw new RangeError(`BloomFilter: log2Bits must be 5..31, got ${log2Bits}`);
    this.bits = new Uint32Array(2 ** (log2Bits - 5));
    this.mask = 2 ** log2Bits - 1;
  }

  add(key: string): void {
    this.added++;
    this.set(hashes(key));
  }

  /** Forgets every key (before re-adding the ones still present). */
  clear(): void {
    this.bits.fill(0);
    this.added = 0;
  }

  mightHave(key: string): boolean {
    return this.test(hashes(key));
  }

  /** add(`${a}\u0000${n}\u0000${b}`), hashed part by part: the same bits without building the string. */
  add3(a: string, n: number, b: string): void {
    this.added++;
    this.set(hashes3(a, n, b));
  }

  /** mightHave(`${a}\u0000${n}\u0000${b}`), the same way. */
  mightHave3(a: string, n: number, b: string): boolean {
    return this.test(hashes3(a, n, b));
  }

  private set([h1, h2]: [number, number]): void {
    for (let i = 0; i < this.probes; i++) {
      const b = (h1 + Math.imul(i, h2)) & this.mask;
      this.bits[b >>> 5]! |= 1 << (b & 31);
    }
  }

  private test([h1, h2]: [number, number]): boolean {
    for (let i = 0; i < this.probes; i++) {
      const b = (h1 + Math.imul(i, h2)) & this.mask;
      if ((this.bits[b >>> 5]! & (1 << (b & 31))) === 0) return false;
    }
    return true;
  }
}

const pair: [number, number] = [0, 0];
let ha = 0;
let hb = 0;
function step(c: number): void {
  ha = Math.imul(ha ^ c, 0x01000193);
  hb = Math.imul(hb ^ c, 0x5bd1e995);
  hb ^= hb >>> 15;
}
function chars(s: string): void {
  for (let i = 0; i < s.length; i++) step(s.charCodeAt(i));
}
function done(): [number, number] {
  pair[0] = ha >>> 0;
  pair[1] = (hb >>> 0) | 1; // odd, so the probes differ
  return pair;
}

/** Two independent 32-bit hashes (FNV-1a and a multiplicative one) for double hashing. Reuses one array. */
function hashes(s: string): [number, number] {
  ha = 0x811c9dc5;
  hb = 0x9e3779b9;
  chars(s);
  return done();
}

const digits: number[] = [];
/** hashes(`${a}\u0000${n}\u0000${b}`) for a non-negative integer n, without the string. */
function hashes3(a: string, n: number, b: string): [number, number] {
  if (!Number.isSafeInteger(n) || n < 0) return hashes(`${a}\u0000${n}\u0000${b}`);
  ha = 0x811c9dc5;
  hb = 0x9e3779b9;
  chars(a);
  step(0);
  let k = 0;
  do {
    digits[k++] = 48 + (n % 10);
    n = Math.floor(n / 10);
  } while (n > 0);
  while (k > 0) step(digits[--k]!);
  step(0);
  chars(b);
  return done();
}
