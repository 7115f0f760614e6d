/**
 * Per-device push rate limits, as Signal does them: a silent (background)
 * push at most once per `silentIntervalMs` per device (Signal: 20 min,
 * because iOS throttles an app that gets more and gives it no wake-up at all),
 * and visible alerts through a token bucket, so a flood of messages cannot
 * make a phone buzz without end. Pure: time is passed in, nothing is sent.
 * The caller persists `state(device)` after each allowed push and `restore`s
 * it at start (PushService: the push_limits table), so a restart lets no
 * burst through.
 */
import { KeyedTokenBuckets } from "../ratelimit.ts";
import type { Urgency } from "./types.ts";

export interface DevicePushLimits {
  /** Minimum gap between silent pushes to one device. Default 20 min (Signal's APNs background limit). */
  silentIntervalMs?: number;
  /** Visible alerts: tokens per second and burst. Default 1 per minute, burst 3. */
  alertRate?: number;
  alertBurst?: number;
}

export type LimitDecision = { ok: true } | { ok: false; retryAfterMs: number };

/** What limits one device, as persisted: the last silent push (0: none held) and the alert bucket (at 0: full). */
export interface LimitState {
  silentAt: number;
  alertTokens: number;
  alertAt: number;
}

export class DevicePushLimiter {
  private lastSilent = new Map<string, number>();
  private alerts: KeyedTokenBuckets;
  private silentMs: number;

  constructor(limits: DevicePushLimits = {}) {
    this.silentMs = limits.silentIntervalMs ?? 20 * 60_000;
    if (!(this.silentMs >= 0)) throw new Error(`DevicePushLimiter: silentIntervalMs must be >= 0, got ${this.silentMs}`);
    this.alerts = new KeyedTokenBuckets(limits.alertRate ?? 1 / 60, limits.alertBurst ?? 3);
  }

  /**
   * May `device` get a push of this urgency now? Allowing one records it (the
   * caller is about to send). A refusal says when to ask again; the durable
   * job keeps collapsing messages meanwhile, so nothing is lost by waiting.
   */
  take(device: string, urgency: Urgency, now: number): LimitDecision {
    if (urgency === "alert") {
      const wait = this.alerts.take(device, now);
      return wait === 0 ? { ok: true } : { ok: false, retryAfterMs: wait };
    }
    const last = this.lastSilent.get(device);
    if (last !== undefined && now - last < this.silentMs) return { ok: false, retryAfterMs: last + this.silentMs - now };
    this.lastSilent.set(device, now);
    return { ok: true };
  }

  state(device: string): LimitState {
    const b = this.alerts.state(device);
    return { silentAt: this.lastSilent.get(device) ?? 0, alertTokens: b?.tokens ?? 0, alertAt: b?.last ?? 0 };
  }

  /** Sets a device's state to exactly `s` (persisted state at start; the state before a take that sent nothing). */
  restore(device: string, s: LimitState): void {
    if (s.silentAt > 0) this.lastSilent.set(device, s.silentAt);
    else this.lastSilent.delete(device);
    if (s.alertAt > 0) this.alerts.restore(device, s.alertTokens, s.alertAt);
    else this.alerts.forget(device);
  }

  /** State last changed longer ago than this limits nothing any more (it may be dropped, in memory and on disk). */
  get horizonMs(): number {
    return Math.max(this.silentMs, this.alerts.fullAfterMs);
  }

  /** Drops state that no longer limits anything, so only recently pushed devices are held. */
  sweep(now: number): void {
    for (const [d, t] of this.lastSilent) if (now - t >= this.silentMs) this.lastSilent.delete(d);
    this.alerts.sweep(now);
  }

  get size(): number {
    return this.lastSilent.size + this.alerts.size;
  }
}
