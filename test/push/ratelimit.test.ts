import { describe, expect, test } from "bun:test";
import { DevicePushLimiter } from "../../src/core/push/ratelimit.ts";
import { parseRetryAfter, retryDelay } from "../../src/core/push/http.ts";
import { prng } from "../helpers/prng.ts";

describe("DevicePushLimiter", () => {
  test("one silent push per device per 20 minutes, with the wait until the next", () => {
    const l = new DevicePushLimiter();
    const t0 = 1_000_000;
    expect(l.take("a", "silent", t0)).toEqual({ ok: true });
    expect(l.take("a", "silent", t0 + 60_000)).toEqual({ ok: false, retryAfterMs: 19 * 60_000 });
    expect(l.take("b", "silent", t0 + 60_000)).toEqual({ ok: true }); // per device
    expect(l.take("a", "silent", t0 + 20 * 60_000)).toEqual({ ok: true });
  });

  test("alerts: a burst, then one per refill interval; silent and alert limits are separate", () => {
    const l = new DevicePushLimiter({ alertRate: 1 / 60, alertBurst: 3 });
    const t0 = 5_000;
    for (let i = 0; i < 3; i++) expect(l.take("a", "alert", t0)).toEqual({ ok: true });
    const no = l.take("a", "alert", t0);
    expect(no.ok).toBe(false);
    if (!no.ok) expect(no.retryAfterMs).toBe(60_000);
    expect(l.take("a", "silent", t0)).toEqual({ ok: true });
    expect(l.take("a", "alert", t0 + 60_000)).toEqual({ ok: true });
  });

  test("state and restore: a limiter rebuilt from the persisted state limits as the first did", () => {
    const a = new DevicePushLimiter({ silentIntervalMs: 60_000, alertRate: 1 / 60, alertBurst: 2 });
    const t0 = 1_000_000;
    expect(a.take("d", "silent", t0).ok).toBe(true);
    expect(a.take("d", "alert", t0).ok).toBe(true);
    expect(a.take("d", "alert", t0).ok).toBe(true);
    const b = new DevicePushLimiter({ silentIntervalMs: 60_000, alertRate: 1 / 60, alertBurst: 2 });
    b.restore("d", a.state("d"));
    for (const l of [a, b]) {
      expect(l.take("d", "silent", t0 + 1000)).toEqual({ ok: false, retryAfterMs: 59_000 });
      expect(l.take("d", "alert", t0 + 1000).ok).toBe(false);
    }
    expect(new DevicePushLimiter().state("never")).toEqual({ silentAt: 0, alertTokens: 0, alertAt: 0 });
    expect(b.horizonMs).toBe(120_000); // the alert bucket refills in 2 min, longer than the silent interval
  });

  test("sweep keeps only devices still being limited", () => {
    const l = new DevicePushLimiter({ silentIntervalMs: 1000, alertRate: 1, alertBurst: 1 });
    l.take("a", "silent", 0);
    l.take("b", "alert", 0);
    l.take("c", "silent", 900);
    l.sweep(1000);
    expect(l.size).toBe(1);
    expect(l.take("c", "silent", 1000)).toEqual({ ok: false, retryAfterMs: 900 });
  });
});

describe("Retry-After and backoff", () => {
  test("Retry-After in seconds or as an HTTP date; garbage is ignored; a past date is 0", () => {
    const now = Date.parse("2026-12-02T10:00:00Z");
    expect(parseRetryAfter("120", now)).toBe(120_000);
    expect(parseRetryAfter("Wed, 02 Dec 2026 10:01:30 GMT", now)).toBe(90_000);
    expect(parseRetryAfter("Wed, 02 Dec 2026 09:00:00 GMT", now)).toBe(0);
    expect(parseRetryAfter("soon", now)).toBeNull();
    expect(parseRetryAfter(null, now)).toBeNull();
  });

  test("the delay grows, is capped, is jittered, and is never below the provider's Retry-After", () => {
    const seed = (Date.now() % 1e9) | 0;
    const random = prng(seed);
    const b = { baseMs: 100, maxMs: 1000 };
    try {
      for (let attempt = 1; attempt <= 8; attempt++) {
        const exp = Math.min(1000, 100 * 2 ** (attempt - 1));
        const d = retryDelay(attempt, null, b, random);
        expect(d).toBeGreaterThanOrEqual(exp / 2);
        expect(d).toBeLessThanOrEqual(exp);
        expect(retryDelay(attempt, 5000, b, random)).toBeGreaterThanOrEqual(5000);
      }
      const spread = new Set(Array.from({ length: 50 }, () => retryDelay(4, null, b, random)));
      expect(spread.size).toBeGreaterThan(10);
    } catch (e) {
      console.error(`retryDelay seed ${seed}`);
      throw e;
    }
  });
});
