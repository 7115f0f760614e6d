/**
 * The only call state the server keeps: calls that are ringing, in memory.
 * A ring is what routing needs (which devices to stop when one answers, the
 * offer for a device that connects while it still rings) and what decides a
 * missed call (it ended unanswered). Once answered, rejected, hung up or timed
 * out it is gone: an established call is two devices and a relay, and the
 * server only passes their `ice`/`hangup` on.
 *
 * Payloads held here (for devices not connected yet) are opaque ciphertext
 * and never written anywhere.
 */
export interface Ring {
  /** Caller account and device, callee account, the caller's call id. */
  from: string;
  fromDevice: number;
  to: string;
  c: string;
  g: string | undefined;
  at: number;
  /** Callee device -> its offer payload, for those not connected when the offer came. */
  pending: Map<number, Uint8Array>;
}

const NO_RINGS: readonly Ring[] = [];

export class Rings {
  private readonly byKey = new Map<string, Ring>();
  /** Callee account -> keys of the rings towards it (a device's login looks there). */
  private readonly byCallee = new Map<string, Set<string>>();

  static key(from: string, c: string): string {
    return `${from}\u0000${c}`;
  }

  get size(): number {
    return this.byKey.size;
  }

  get(from: string, c: string): Ring | undefined {
    return this.byKey.get(Rings.key(from, c));
  }

  add(r: Ring): void {
    const k = Rings.key(r.from, r.c);
    this.byKey.set(k, r);
    let set = this.byCallee.get(r.to);
    if (!set) this.byCallee.set(r.to, (set = new Set()));
    set.add(k);
  }

  delete(r: Ring): void {
    const k = Rings.key(r.from, r.c);
    this.byKey.delete(k);
    const set = this.byCallee.get(r.to);
    set?.delete(k);
    if (set?.size === 0) this.byCallee.delete(r.to);
  }

  towards(account: string): readonly Ring[] {
    // Asked at every login (the calls module's session:ready): with no ring towards the account, no array is made.
    // Spreading an empty fallback and mapping and filtering it made three per login, ~7 % of a bare reconnect's
    // JS samples (BENCHMARKS.md "reconnect3").
    const keys = this.byCallee.get(account);
    if (keys === undefined) return NO_RINGS;
    const out: Ring[] = [];
    for (const k of keys) {
      const r = this.byKey.get(k);
      if (r !== undefined) out.push(r);
    }
    return out;
  }

  /** Rings older than `ttlMs`, removed. */
  expire(now: number, ttlMs: number): Ring[] {
    const out: Ring[] = [];
    for (const r of this.byKey.values()) if (now - r.at >= ttlMs) out.push(r);
    for (const r of out) this.delete(r);
    return out;
  }

  /** Rings from or to `account`, removed (the account was deleted). */
  dropAccount(account: string): void {
    for (const r of [...this.byKey.values()]) if (r.from === account || r.to === account) this.delete(r);
  }
}
