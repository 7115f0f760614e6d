/**
 * Failure counters in fixed one-minute windows, keyed by source address or
 * account. Only failures count, so a legitimate device that logs in often is
 * never slowed; a key over its limit is refused until its window ends.
 */
export class FailureLimiter {
  private windows = new Map<string, { start: number; n: number }>();

  constructor(private limit: number, private windowMs = 60_000) {}

  /** Milliseconds until `key` may try again, or 0 if it may now. */
  blockedFor(key: string, now: number): number {
    const w = this.windows.get(key);
    if (!w || now - w.start >= this.windowMs) return 0;
    return w.n >= this.limit ? w.start + this.windowMs - now : 0;
  }

  fail(key: string, now: number): void {
    const w = this.windows.get(key);
    if (!w || now - w.start >= this.windowMs) this.windows.set(key, { start: now, n: 1 });
    else w.n++;
  }

  /** Drops finished windows; called by the sweep so the map cannot grow without bound. */
  sweep(now: number): void {
    for (const [k, w] of this.windows) if (now - w.start >= this.windowMs) this.windows.delete(k);
  }
}
