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
import { PushStage, type PushJobRow, type PushJobStore } from "../../store/push.ts";
import type { Counter, Histogram, Metrics } from "../metrics.ts";
import type { Registry } from "../registry.ts";
import { ConnState, type Conn } from "../../transport/connection.ts";
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
  /** Where the device is reached, or null when it registered nothing (its job is then closed). */
  target(account: string, device: number): PushTarget | null;
  /**
   * The escalation: what the i-th push of a job is (0: the first) and how long after the previous one it may go
   * out; null when there is no i-th push. Core keeps two stages (PushStage.SILENT, PushStage.ALERT).
   */
  stage(i: number): { urgency: Urgency; afterMs: number } | null;
  /** The provider called the endpoint dead, and the device has not registered again since that push: remove it. */
  remove(account: string, device: number, reason: string): void;
}

export interface PushServiceOptions {
  providers: PushProvider[];
  limits: DevicePushLimits;
  concurrency: number;
  timeoutMs: number;
  tickMs: number;
  /** Web Push endpoints on http:// and private addresses are accepted (tests only; see ssrf.ts). */
  allowInsecure: boolean;
}

/** Jobs read per tick at most: the sender's lanes hold the rest of the backlog in the files, not in memory. */
const BATCH = 512;
/** Queued items a lost connection's check reads (one indexed SELECT, on disconnect only). */
const WAKE_PEEK = 1024;
const RESULTS = ["delivered", "retry-later", "invalid-token", "permanent", "rate-limited", "overflow", "no-provider"] as const;
type ResultLabel = (typeof RESULTS)[number];

export class PushService {
  private policy: PushPolicy | null = null;
  private sender: PushSender;
  private limiter: DevicePushLimiter;
  private timer: ReturnType<typeof setInterval> | null = null;
  /** Job ids handed to the sender and not yet settled: a tick never submits one twice. */
  private inFlight = new Map<string, PushJobRow>();
  private readonly providers: Set<ProviderName>;
  private policyErrors = 0;
  private m: { sent: Map<string, Counter>; reconnect: Histogram; metrics: Metrics };

  constructor(
    private jobs: PushJobStore & { setFilter(f: ((item: QueueItem) => boolean) | null): void },
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
    if (this.timer === null && this.providers.size > 0) this.timer = setInterval(() => this.tick(), this.o.tickMs);
  }

  async stop(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    // What is in flight stays open in the files: the next start sends it (with the same idempotency key).
    await this.sender.close();
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
    for (const job of this.jobs.due(now, BATCH)) {
      if (this.inFlight.has(job.id)) continue;
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
      const limit = this.limiter.take(device, st.urgency, now);
      if (!limit.ok) {
        this.count(target.provider, st.urgency, "rate-limited");
        this.jobs.postpone(job.account, job.device, job.id, now + limit.retryAfterMs, false);
        continue;
      }
      // The count is the queue's depth now: a number and nothing else about what waits (docs/PUSH.md).
      const r = this.sender.submit({ id: `${job.id}.${job.stage}`, device, target, urgency: st.urgency, count: Math.min(this.queue.usage(job.account, job.device).n, 1_000_000) });
      if (r.ok) this.inFlight.set(job.id, job);
      else {
        this.count(target.provider, st.urgency, r.reason === "no-provider" ? "no-provider" : "overflow");
        if (r.reason === "no-provider") this.jobs.close(job.account, job.device, job.id); // its provider is not configured here
        else this.jobs.postpone(job.account, job.device, job.id, now + 1000, false);
      }
    }
    if (now % 60_000 < this.o.tickMs) this.limiter.sweep(now);
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
        this.jobs.postpone(job.account, job.device, id, r.at, true);
        return;
      case "invalid-token": {
        this.jobs.close(job.account, job.device, id);
        const stored = this.policy?.target(job.account, job.device) ?? null;
        if (stored !== null && shouldRemoveToken(r, stored)) this.policy?.remove(job.account, job.device, r.reason);
        return;
      }
      case "permanent":
        log.warn("push refused for good", { provider: r.job.target.provider, reason: r.reason });
        this.jobs.close(job.account, job.device, id);
        return;
    }
  }

  private count(provider: ProviderName, urgency: Urgency, result: ResultLabel): void {
    const key = `${provider}/${urgency}/${result}`;
    let c = this.m.sent.get(key);
    if (c === undefined) {
      c = this.m.metrics.counter("switchboard_push_total", "Push attempts' final results, by provider, stage (silent, alert) and result.", { provider, stage: urgency, result });
      this.m.sent.set(key, c);
    }
    c.inc();
  }
}
