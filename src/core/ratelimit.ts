/**
 * Failure counters in fixed one-minute windows, keyed by source address or
 * account. Only failures count, so a legitimate device that logs in often is
 * never slowed; a key over its limit is refused until its window ends.
 * Also token buckets, admission control and the default connection cap.
 */
import { readFileSync } from "node:fs";

export class FailureLimiter {
  private windows = new Map<string, { start: number; n: number }>();

  constructor(private limit: number, private windowMs = 60_000) {}

  /** No failure is counted (in any window not yet swept): every key may try now, so none needs building. */
  get empty(): boolean {
    return this.windows.size === 0;
  }

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

/**
 * A token bucket: `rate` tokens a second, at most `burst` saved up. Time is
 * passed in (ms), so the caller reads the clock once per event.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(private rate: number, private burst: number, now = Date.now()) {
    if (!(rate > 0) || !(burst >= 1)) throw new Error(`TokenBucket: rate must be > 0 and burst >= 1, got ${rate} and ${burst}`);
    this.tokens = burst;
    this.last = now;
  }

  /** Takes one token: 0 when there was one, else the milliseconds until there will be one. */
  take(now: number): number {
    // max(0, ..): a clock that steps back refills nothing (and does not drain the bucket either).
    const t = Math.min(this.burst, this.tokens + (Math.max(0, now - this.last) * this.rate) / 1000);
    this.last = now;
    if (t >= 1) {
      this.tokens = t - 1;
      return 0;
    }
    this.tokens = t;
    return Math.ceil(((1 - t) * 1000) / this.rate);
  }
}

/**
 * One token bucket per key (account), created on first use. An entry is two
 * numbers in a Map; `sweep` drops the ones that have refilled completely
 * (they are the same as no entry), so only recently active keys are held.
 */
export class KeyedTokenBuckets {
  private buckets = new Map<string, { tokens: number; last: number }>();

  constructor(private rate: number, private burst: number) {
    if (!(rate > 0) || !(burst >= 1)) throw new Error(`KeyedTokenBuckets: rate must be > 0 and burst >= 1, got ${rate} and ${burst}`);
  }

  take(key: string, now: number): number {
    let b = this.buckets.get(key);
    if (b === undefined) {
      this.buckets.set(key, { tokens: this.burst - 1, last: now });
      return 0;
    }
    const t = Math.min(this.burst, b.tokens + (Math.max(0, now - b.last) * this.rate) / 1000);
    b.last = now;
    if (t >= 1) {
      b.tokens = t - 1;
      return 0;
    }
    b.tokens = t;
    return Math.ceil(((1 - t) * 1000) / this.rate);
  }

  /** One key's bucket, to persist it (undefined: full). */
  state(key: string): { tokens: number; last: number } | undefined {
    const b = this.buckets.get(key);
    return b === undefined ? undefined : { ...b };
  }

  /** Puts back a persisted bucket (a restart must not refill what was spent). */
  restore(key: string, tokens: number, last: number): void {
    this.buckets.set(key, { tokens: Math.min(this.burst, Math.max(0, tokens)), last });
  }

  forget(key: string): void {
    this.buckets.delete(key);
  }

  /** ms after its last take at which a bucket is full again (and forgettable). */
  get fullAfterMs(): number {
    return (this.burst * 1000) / this.rate;
  }

  sweep(now: number): void {
    const fullAfter = (this.burst * 1000) / this.rate;
    for (const [k, b] of this.buckets) if (now - b.last >= fullAfter) this.buckets.delete(k);
  }

  get size(): number {
    return this.buckets.size;
  }
}

/** Why a new login (or connection) was turned away; also the label of switchboard_admission_refused_total. */
export type AdmissionReason = "connections" | "login_rate" | "lag" | "memory";

export interface AdmissionSettings {
  /** Login token bucket: logins a second (0: no bucket) and burst. */
  loginRate: number;
  loginBurst: number;
  /** Event-loop lag (ms, largest of the last second) above which new logins are refused; 0: never. */
  maxLagMs: number;
  /** Resident memory (bytes) above which new logins are refused; 0: never. */
  maxRss: number;
  /** Base retry-after handed to refused clients (ms); each gets a random value in [base, 2 x base). */
  retryAfterMs: number;
}

/**
 * Admission control for new logins. Checked in this order, cheapest and
 * most telling first: memory (the process is about to be killed), event-loop
 * lag (the loop is already behind, so established sessions are suffering),
 * then the login bucket (a reconnect storm would put it behind). A refused
 * login costs a comparison and a `close`: no signature check, no store read.
 * Established sessions are never asked.
 */
export class Admission {
  private bucket: TokenBucket | null;

  constructor(
    private s: AdmissionSettings,
    private load: { recentMs: number; rss: number },
  ) {
    this.bucket = s.loginRate > 0 ? new TokenBucket(s.loginRate, Math.max(1, s.loginBurst)) : null;
  }

  /** null: go ahead; else why not and after how many milliseconds (jittered) to come back. */
  login(now: number): { reason: AdmissionReason; retryMs: number } | null {
    if (this.s.maxRss > 0 && this.load.rss > this.s.maxRss) return { reason: "memory", retryMs: this.retryAfter(0) };
    if (this.s.maxLagMs > 0 && this.load.recentMs > this.s.maxLagMs) return { reason: "lag", retryMs: this.retryAfter(0) };
    if (this.bucket !== null) {
      const wait = this.bucket.take(now);
      if (wait > 0) return { reason: "login_rate", retryMs: this.retryAfter(wait) };
    }
    return null;
  }

  /**
   * Full jitter on top of the base: clients refused in the same second come
   * back spread over the next base..2 x base ms, not together.
   */
  retryAfter(atLeast: number): number {
    const base = Math.max(atLeast, this.s.retryAfterMs);
    return Math.round(base + Math.random() * base);
  }
}

/**
 * The default connection cap: the soft open-file limit less 256 descriptors
 * kept for the SQLite files (a WAL and a shm each), the listeners and the
 * HTTP port. Past it, accept() would fail with EMFILE and so would opening a
 * shard; a refusal with a retry-after is kinder. Unbounded where the limit
 * cannot be read (not Linux).
 */
export function connectionCapFromFdLimit(): number {
  try {
    const line = readFileSync("/proc/self/limits", "utf8").split("\n").find((l) => l.startsWith("Max open files"));
    const soft = Number(line?.trim().split(/\s+/)[3]);
    if (!Number.isFinite(soft)) return Infinity; // "unlimited"
    return soft > 512 ? soft - 256 : Math.max(16, Math.floor(soft / 2));
  } catch {
    return Infinity;
  }
}
