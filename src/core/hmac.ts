/**
 * HMAC-SHA256 (RFC 2104) written out over Bun's one-shot SHA-256, for the two HMACs of a ticket resume
 * (src/core/tickets.ts): H((K ^ opad) ‖ H((K ^ ipad) ‖ m)), with both pads and the message in buffers kept
 * from call to call, so a MAC is two native calls and no object but a view. A keyed `Bun.CryptoHasher` per MAC
 * (the way before) made a hasher, a digest Buffer and an ArrayBuffer for its view per call, and each `update()`
 * is a call into native code: `loadtest/hmac-bench.ts` measures both (BENCHMARKS.md "reconnect3").
 * The same bytes as node:crypto's createHmac (test/core/hmac.test.ts). Keys of at most 64 bytes only (ours are 32).
 */
const BLOCK = 64;

export class HmacSha256 {
  /** K ^ ipad, then the message. */
  private inner = new Uint8Array(BLOCK + 256);
  /** K ^ opad, then the inner hash. */
  private outer = new Uint8Array(BLOCK + 32);
  private innerHash = this.outer.subarray(BLOCK);
  private out = new Uint8Array(32);
  /** Where the caller writes the message (from 0): at least `room(n)` bytes. */
  message = this.inner.subarray(BLOCK);

  /** Makes `message` at least `n` bytes long (its contents are then gone). */
  room(n: number): Uint8Array {
    if (this.message.length < n) {
      const pads = this.inner.subarray(0, BLOCK);
      this.inner = new Uint8Array(BLOCK + Math.max(n, 2 * this.message.length));
      this.inner.set(pads);
      this.message = this.inner.subarray(BLOCK);
    }
    return this.message;
  }

  /** The key of the next MACs. */
  key(k: Uint8Array): void {
    if (k.length > BLOCK) throw new RangeError(`HmacSha256: keys of at most ${BLOCK} bytes (got ${k.length}); hash a longer key first, as RFC 2104 does`);
    const inner = this.inner;
    const outer = this.outer;
    for (let i = 0; i < BLOCK; i++) {
      const b = i < k.length ? k[i]! : 0;
      inner[i] = b ^ 0x36;
      outer[i] = b ^ 0x5c;
    }
  }

  /** The MAC of `message[0, n)` under the last key: a kept array, overwritten by the next call (copy it to keep it). */
  mac(n: number): Uint8Array {
    if (n > this.message.length) throw new RangeError(`HmacSha256: a message of ${n} bytes in ${this.message.length} (call room(n) first)`);
    Bun.SHA256.hash(this.inner.subarray(0, BLOCK + n), this.innerHash);
    Bun.SHA256.hash(this.outer, this.out);
    return this.out;
  }
}
