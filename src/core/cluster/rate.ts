/** A count of events per second over a sliding window (the redirects/s of `cluster status`): one counter per second, a ring. */
export class WindowRate {
  private ring: Uint32Array;
  private second = 0;
  /** Every event counted since the start. */
  total = 0;

  /** `windowS`: long enough that a scrape every 15-30 s sees every event (60 for redirects). */
  constructor(readonly windowS: number) {
    this.ring = new Uint32Array(windowS);
  }

  hit(): void {
    this.ring[this.tick() % this.windowS]!++;
    this.total++;
  }

  /** Events in the last `windowS` seconds, and per second over them. */
  rate(): { lastWindow: number; perSecond: number; windowS: number } {
    this.tick();
    const n = this.ring.reduce((a, b) => a + b, 0);
    return { lastWindow: n, perSecond: Math.round((n / this.windowS) * 100) / 100, windowS: this.windowS };
  }

  /** Moves the ring to the current second, zeroing the seconds passed since the last call. */
  private tick(): number {
    const now = Math.floor(performance.now() / 1000);
    for (let s = Math.max(this.second + 1, now - this.windowS + 1); s <= now; s++) this.ring[s % this.windowS] = 0;
    if (now > this.second) this.second = now;
    return now;
  }
}
