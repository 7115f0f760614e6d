/**
 * Core's push service: the mechanism between the durable jobs
 * (src/store/push-sqlite.ts, written in the queue's commits) and the
 * providers (PushSender). The rules (which items wake a device, where a
 * device is reached, what each stage sends, what to do with a dead token)
 * are the push module's `PushPolicy`; with no policy installed nothing is
 * decided and nothing is sent.
 *
 * Off the hot path: the commit filter is one registry lookup and one policy
 * call per committed item; everything else runs on a timer (`push.tick_ms`)
 * that reads due jobs, and the sender's lanes bound what is in flight per
 * provider. A provider that is down costs its lane's slots and timers, never
 * a delivery or a commit.
 */
import type { DeliveryQueue, QueueItem } from "../../store/queue.ts";
import { PushStage, type PushJobRow, type PushJobStore, type PushLimitRow } from "../../store/push.ts";
import type { Counter, Histogram, Metrics } from "../metrics.ts";
import type { Registry } from "../registry.ts";
import { ConnState, type Conn } from "../../transport/connection.ts";
import { randomBytes } from "node:crypto";
import { log } from "../log.ts";
import { DevicePushLimiter, type DevicePushLimits } from "./ratelimit.ts";
import { PushSender } from "./sender.ts";
import { checkEndpoint } from "./ssrf.ts";
import { shouldRemoveToken, type ProviderName, type PushProvider, type PushResult, type PushTarget, type Urgency } from "./types.ts";

export { PushStage };

/** The rules, supplied by the push module (core never imports it). */
export interface PushPolicy {
  /** Does a committed item of this kind wake its device? (Receipts and events do not.) */
  wakes(item: QueueItem): boolean;
  /** Where the device is woken for messages, or null when it registered nothing (its job is then closed). Never a VoIP token. */
  target(account: string, device: number): PushTarget | null;
  /** Where a ring (an incoming call) goes: the device's VoIP token if it has one, else its regular endpoint, else null. */
  ringTarget(account: string, device: number): PushTarget | null;
  /**
   * The escalation: what the i-th push of a job is (0: the first) and how long after the previous one it may go
   * out; null when there is no i-th push. Core keeps two stages (PushStage.SILENT, PushStage.ALERT).
   */
  stage(i: number): { urgency: Urgency; afterMs: number } | null;
  /** The provider called the endpoint dead, and the device has not registered again since that push: remove it (that slot only). */
  remove(account: string, device: number, reason: string, slot: "regular" | "voip"): void;
}

export interface PushServiceOptions {
  providers: PushProvider[];
  limits: DevicePushLimits;
  concurrency: number;
  timeoutMs: number;
  tickMs: number;
  /** Jobs read per tick at most (push.batch): the sender's lanes hold the rest of the backlog in the files, not in memory. */
  batch: number;
  /** Web Push endpoints on http:// and private addresses are accepted (tests only; see ssrf.ts). */
  allowInsecure: boolean;
  /** The queue's retention (ms): a job older than this expires (its items have), and opens again if messages still wait. */
  retentionMs: number;
}

/**
 * How long a job handed to the sender stays out of `due` (its `due` is moved this far ahead, in the file): in-flight
 * jobs never fill the batch a tick reads, so a slow provider holds no job of another (no head of line). Renewed by
 * each tick that still finds it held; after a crash it runs out and the job goes again, with the same key.
 */
const leaseMs = (timeoutMs: number) => Math.max(5000, 2 * timeoutMs);
/** Least ms between two expiry passes (one indexed SELECT per shard). */
const EXPIRE_EVERY = 1000;
/** Queued items a lost connection's check reads (one indexed SELECT, on disconnect only). */
const WAKE_PEEK = 1024;
const RESULTS = ["delivered", "retry-later", "invalid-token", "permanent", "rate-limited", "overflow", "no-provider"] as const;
type ResultLabel = (typeof RESULTS)[number];
/** Ids of rings (not jobs: a ring is never durable) start with this; a job's id is base64url and has no dot before its stage. */
const RING = "ring.";

/** What `ring` came to: the provider accepted the push, or why not. */
export type RingResult = { ok: true } | { ok: false; reason: "no-endpoint" | "unavailable" | "overflow" | "invalid-token" | "not-delivered" };

export class PushService {
  private policy: PushPolicy | null = null;
  private sender: PushSender;
  private limiter: DevicePushLimiter;
  private timer: ReturnType<typeof setInterval> | null = null;
  /** Job ids handed to the sender and not yet settled: a tick never submits one twice. */
  private inFlight = new Map<string, PushJobRow>();
  /** Rings handed to the sender, by id: who, and whom to tell. */
  private rings = new Map<string, { account: string; device: number; done: (r: RingResult) => void }>();
  private readonly providers: Set<ProviderName>;
  private policyErrors = 0;
  private lastExpiry = 0;
  /**
   * In a cluster: whether this node serves the account's home shard now (cluster.home is local: it holds the lease
   * and the shard is not frozen for a move). A job of another account is left as it is: a move's target has the
   * moved jobs before its flip, and the old home keeps them until its leftovers; if both sent a stage falling due
   * meanwhile, the device would get it twice. Null: every job is this node's (one node).
   */
  owns: ((account: string) => boolean) | null = null;
  /** Due jobs of accounts not owned here at the last tick: read beyond the batch, so they never fill it. */
  private foreign = 0;
  private restored = false;
  private m: { sent: Map<string, Counter>; reconnect: Histogram; metrics: Metrics };

  constructor(
    readonly jobs: PushJobStore & { setFilter(f: ((item: QueueItem) => boolean) | null): void },
    private registry: Registry<Conn>,
    /** The device queues: how many items wait (the count a push may carry), and which (does any wake the device?). */
    private queue: Pick<DeliveryQueue, "usage" | "fetch">,
    metrics: Metrics,
    private o: PushServiceOptions,
  ) {
    this.providers = new Set(o.providers.map((p) => p.name));
    this.limiter = new DevicePushLimiter(o.limits);
    this.sender = new PushSender({ providers: o.providers, concurrency: o.concurrency, timeoutMs: o.timeoutMs, onResult: (r) => this.settled(r) });
    this.m = {
      metrics,
      sent: new Map(),
      reconnect: metrics.histogram("switchboard_push_reconnect_seconds", "From a push delivered to its provider to the device's next login."),
    };
    metrics.gauge("switchboard_push_jobs_open", "Durable push jobs not yet closed (devices with a wake-up pending or sent).", () => this.jobs.count());
    metrics.gauge("switchboard_push_in_flight", "Push jobs handed to a provider and not yet answered.", () => this.inFlight.size);
    jobs.setFilter((it) => this.wantsAtCommit(it));
  }

  /** The module's rules; null (its unload) stops all deciding and sending. */
  setPolicy(p: PushPolicy | null): void {
    this.policy = p;
  }

  /** Providers configured (credentials set). */
  get configured(): readonly ProviderName[] {
    return [...this.providers];
  }

  start(): void {
    if (!this.restored) {
      // The limits as they were: a restart must not let a burst through (a silent push 20 min apart, Signal's rule).
      this.restored = true;
      for (const r of this.jobs.limits(Date.now() - this.limiter.horizonMs)) this.limiter.restore(`${r.account}\u0000${r.device}`, r);
    }
    if (this.timer === null && this.providers.size > 0) this.timer = setInterval(() => this.tick(), this.o.tickMs);
  }

  async stop(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    // What is in flight stays open in the files: the next start sends it (with the same idempotency key).
    await this.sender.close();
    for (const r of this.rings.values()) r.done({ ok: false, reason: "unavailable" }); // a ring is now or never
    this.rings.clear();
  }

  /** Whether the server may ever call this Web Push endpoint (https, a public address): asked at registration. */
  async checkEndpoint(endpoint: string): Promise<{ ok: true } | { ok: false; reason: string }> {
    const c = await checkEndpoint(endpoint, this.o.allowInsecure);
    return c.ok ? c : { ok: false, reason: "reason" in c.outcome ? c.outcome.reason : "unusable" };
  }

  /**
   * A device's connection went away: if items that wake it (messages, not receipts) are still queued, open
   * its job (outside a commit: those items are durable already, or in a commit that is). Looks at the first
   * WAKE_PEEK items only: a device that left more than that unacknowledged, all of them receipts or events,
   * with a message behind them, is not woken here (the message's own commit woke it if it was offline then).
   */
  wake(account: string, device: number): void {
    const p = this.policy;
    if (p === null || this.providers.size === 0 || this.queue.usage(account, device).n === 0 || p.target(account, device) === null) return;
    let n = 0;
    for (const it of this.queue.fetch(account, device, 0, WAKE_PEEK)) if (p.wakes(it)) n++;
    if (n > 0) this.jobs.open({ account, device, n }, Date.now());
  }

  /**
   * Rings a device for an incoming call (the calls module's way to wake a phone): one push of class `ring`, now or
   * never, to the device's VoIP token if it registered one, else to its regular endpoint as a visible push. Not a
   * durable job (a call rung after a restart is over), not collapsed with the message wake-up, and not under the
   * per-device message limits (the calls module bounds call attempts). Carries nothing about the caller or the call:
   * the app connects and reads the call's offer from its queue. Resolves when the provider answered.
   */
  ring(account: string, device: number): Promise<RingResult> {
    const p = this.policy;
    if (p === null || this.providers.size === 0) return Promise.resolve({ ok: false, reason: "unavailable" });
    const target = p.ringTarget(account, device);
    if (target === null) return Promise.resolve({ ok: false, reason: "no-endpoint" });
    const id = RING + randomBytes(12).toString("base64url");
    return new Promise<RingResult>((done) => {
      this.rings.set(id, { account, device, done });
      const r = this.sender.submit({ id, device: `${account}\u0000${device}`, target, urgency: "ring" });
      if (r.ok) return;
      this.rings.delete(id);
      this.count(target.provider, "ring", r.reason === "no-provider" ? "no-provider" : "overflow");
      done({ ok: false, reason: r.reason === "overflow" ? "overflow" : "unavailable" });
    });
  }

  /**
   * A shard move brought these devices' limits (rows.ts): written here and taken as they are, so a moved device
   * keeps its silent interval and alert bucket instead of starting full at its new home.
   */
  adoptLimits(rows: readonly PushLimitRow[]): void {
    for (const r of rows) {
      this.jobs.saveLimits(r);
      this.limiter.restore(`${r.account}\u0000${r.device}`, r);
    }
  }

  /** The device logged in: it is awake, its job is done. */
  connected(account: string, device: number): void {
    const row = this.jobs.close(account, device);
    if (row === null) return;
    this.inFlight.delete(row.id);
    if (row.sentAt > 0) this.m.reconnect.record(Math.max(0, Date.now() - row.sentAt) * 1000);
  }

  /** The device is gone (revoked) or unreachable: its job closes without a push. */
  forget(account: string, device: number): void {
    const row = this.jobs.close(account, device);
    if (row !== null) this.inFlight.delete(row.id);
  }

  /** Runs one scheduling pass now (the timer's work; tests and shutdown call it too). */
  tick(now = Date.now()): void {
    const p = this.policy;
    if (p === null) return;
    if (now - this.lastExpiry >= EXPIRE_EVERY) this.expire(now);
    let foreign = 0;
    for (const job of this.jobs.due(now, this.o.batch + this.foreign)) {
      if (this.owns !== null && !this.owns(job.account)) {
        foreign++; // untouched (not postponed: a move ships it as it is, and the new home goes on from there)
        continue;
      }
      if (this.inFlight.has(job.id)) {
        this.jobs.postpone(job.account, job.device, job.id, now + leaseMs(this.o.timeoutMs), false); // still held: renew its lease
        continue;
      }
      const conn = this.registry.get(job.account, job.device);
      if (conn !== undefined && conn.state === ConnState.READY) {
        this.jobs.close(job.account, job.device, job.id); // online again: delivery has it
        continue;
      }
      const st = p.stage(job.stage);
      const target = st === null ? null : p.target(job.account, job.device);
      if (st === null) {
        // No such stage (push.escalate_after became 0 since): done, and later items still collapse into it.
        this.jobs.advance(job.account, job.device, job.id, job.stage, PushStage.DONE, now, job.sentAt);
        continue;
      }
      if (target === null) {
        this.jobs.close(job.account, job.device, job.id); // nothing registered any more
        continue;
      }
      const device = `${job.account}\u0000${job.device}`;
      // A stage handed over before (retry-later, or a crash mid-send) was charged then: it goes again as it is.
      const before = job.attempts > 0 ? null : this.limiter.state(device);
      if (before !== null) {
        const limit = this.limiter.take(device, st.urgency, now);
        if (!limit.ok) {
          this.count(target.provider, st.urgency, "rate-limited");
          this.jobs.postpone(job.account, job.device, job.id, now + limit.retryAfterMs, false);
          continue;
        }
      }
      // The count is the queue's depth now: a number and nothing else about what waits (docs/PUSH.md).
      const r = this.sender.submit({ id: `${job.id}.${job.stage}`, device, target, urgency: st.urgency, count: Math.min(this.queue.usage(job.account, job.device).n, 1_000_000) });
      if (r.ok) {
        this.inFlight.set(job.id, job);
        // Written in this turn, before the request can leave, in one transaction: after a crash the limit holds as if
        // the push had gone, and the job (leased, attempts + 1) goes again with the same key once its lease runs out.
        const charged = before === null ? null : { account: job.account, device: job.device, ...this.limiter.state(device) };
        this.jobs.handOver(job.account, job.device, job.id, now + leaseMs(this.o.timeoutMs), charged);
      } else {
        if (before !== null) this.limiter.restore(device, before); // nothing was sent: nothing is charged
        this.count(target.provider, st.urgency, r.reason === "no-provider" ? "no-provider" : "overflow");
        if (r.reason === "no-provider") this.jobs.close(job.account, job.device, job.id); // its provider is not configured here
        else this.jobs.postpone(job.account, job.device, job.id, now + 1000, false);
      }
    }
    this.foreign = foreign;
    if (now % 60_000 < this.o.tickMs) {
      this.limiter.sweep(now);
      this.jobs.dropLimits(now - this.limiter.horizonMs);
    }
  }

  /**
   * Jobs opened a retention ago expire: their items have (the queue's own sweep signals that to device and sender),
   * so a device that never returns leaves no job behind. If messages it has not been woken for still wait (they came
   * later), a fresh job opens and escalates from its first stage again: at most one cycle per retention period.
   */
  private expire(now: number): void {
    this.lastExpiry = now;
    for (const job of this.jobs.expired(now - this.o.retentionMs, this.o.batch)) {
      if (this.jobs.close(job.account, job.device, job.id) === null) continue;
      this.inFlight.delete(job.id); // a late answer about it changes nothing (settled finds no job)
      const conn = this.registry.get(job.account, job.device);
      if (conn === undefined || conn.state !== ConnState.READY) this.wake(job.account, job.device);
    }
  }

  /** Runs inside the queue's commit transaction: a throw here would fail the commit, so a policy bug costs a wake-up, never a message. */
  private wantsAtCommit(it: QueueItem): boolean {
    const p = this.policy;
    if (p === null || this.providers.size === 0) return false;
    const conn = this.registry.get(it.account, it.device);
    if (conn !== undefined && conn.state === ConnState.READY) return false; // delivered over its socket (or on its next refill)
    try {
      return p.wakes(it) && p.target(it.account, it.device) !== null;
    } catch (e) {
      this.policyErrors++;
      if (this.policyErrors === 1 || this.policyErrors % 1000 === 0) log.error("push policy threw at commit; no wake-up for this item", { err: e as Error, count: this.policyErrors });
      return false;
    }
  }

  private settled(r: PushResult): void {
    if (r.job.id.startsWith(RING)) return this.rang(r);
    const dot = r.job.id.lastIndexOf(".");
    const id = r.job.id.slice(0, dot);
    const stage = Number(r.job.id.slice(dot + 1)) as PushStage;
    const job = this.inFlight.get(id);
    this.count(r.job.target.provider, r.job.urgency, r.kind);
    if (job === undefined) return; // closed meanwhile (the device connected)
    this.inFlight.delete(id);
    const now = Date.now();
    switch (r.kind) {
      case "delivered": {
        const nextStage = stage + 1 >= PushStage.DONE ? null : (this.policy?.stage(stage + 1) ?? null);
        const next = nextStage === null ? PushStage.DONE : ((stage + 1) as PushStage);
        this.jobs.advance(job.account, job.device, id, stage, next, now + (nextStage?.afterMs ?? 0), now);
        return;
      }
      case "retry-later":
        this.jobs.postpone(job.account, job.device, id, r.at, false); // counted at its hand-over
        return;
      case "invalid-token": {
        this.jobs.close(job.account, job.device, id);
        this.dead(job.account, job.device, r);
        return;
      }
      case "permanent":
        log.warn("push refused for good", { provider: r.job.target.provider, reason: r.reason });
        this.jobs.close(job.account, job.device, id);
        return;
    }
  }

  private rang(r: PushResult): void {
    const ring = this.rings.get(r.job.id);
    this.count(r.job.target.provider, "ring", r.kind);
    if (ring === undefined) return;
    this.rings.delete(r.job.id);
    if (r.kind === "invalid-token") this.dead(ring.account, ring.device, r);
    ring.done(r.kind === "delivered" ? { ok: true } : { ok: false, reason: r.kind === "invalid-token" ? "invalid-token" : "not-delivered" });
  }

  /** A provider called the pushed endpoint dead: the module removes that slot, unless the device registered it again since. */
  private dead(account: string, device: number, r: Extract<PushResult, { kind: "invalid-token" }>): void {
    const voip = r.job.target.provider === "apns" && r.job.target.voip === true;
    const stored = (voip ? this.policy?.ringTarget(account, device) : this.policy?.target(account, device)) ?? null;
    const same = stored !== null && (stored.provider === "apns" && stored.voip === true) === voip;
    if (same && shouldRemoveToken(r, stored)) this.policy?.remove(account, device, r.reason, voip ? "voip" : "regular");
  }

  private count(provider: ProviderName, urgency: Urgency, result: ResultLabel): void {
    const key = `${provider}/${urgency}/${result}`;
    let c = this.m.sent.get(key);
    if (c === undefined) {
      c = this.m.metrics.counter("switchboard_push_total", "Push attempts' final results, by provider, stage (silent, alert, ring) and result.", { provider, stage: urgency, result });
      this.m.sent.set(key, c);
    }
    c.inc();
  }
}
