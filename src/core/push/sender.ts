/**
 * The asynchronous push sender. Message delivery never waits for it: `submit`
 * is synchronous, costs a queue push, and refuses (reports overflow) instead
 * of growing without bound. Each provider has its own lane (FIFO, a
 * concurrency cap, its own retry timers), so a push service that hangs or
 * refuses connections holds only its own lane's slots, each for at most
 * `timeoutMs`; jobs for the other providers go on as before.
 *
 * The sender is not the source of truth: the durable push jobs are (written in
 * the queue item's group commit, by the caller). So in-memory retries are few
 * and short; a job still failing, or told to wait long, is handed back as
 * `retry-later` with the time to try again, and `close()` simply drops what is
 * held.
 */
import { retryDelay, type Backoff } from "./http.ts";
import { pushJob, type ProviderName, type PushJob, type PushOutcome, type PushProvider, type PushResult } from "./types.ts";

export interface SenderOptions {
  providers: PushProvider[];
  /** Called once per accepted job with its final result. Must not throw (a throw is caught and dropped). */
  onResult: (r: PushResult) => void;
  /** Requests in flight per provider. Default 16: APNs and FCM allow far more per connection, but one slow service should hold little. */
  concurrency?: number;
  /** Jobs held per provider (waiting, in flight or between retries). Default 10 000. */
  queueLimit?: number;
  /** Per-request timeout. Default 10 s. */
  timeoutMs?: number;
  /** Attempts in memory before handing a job back as retry-later. Default 3. */
  maxAttempts?: number;
  /** Backoff between attempts. Default 1 s doubling to 30 s. */
  backoff?: Backoff;
  /** A wait longer than this is not done in memory: the job goes back as retry-later at once. Default 60 s. */
  maxInMemoryWaitMs?: number;
  /** Observes scheduling decisions (metrics, tests). */
  onEvent?: (e: SenderEvent) => void;
  random?: () => number;
  now?: () => number;
}

export type SenderEvent =
  | { kind: "attempt"; job: PushJob; attempt: number; outcome: PushOutcome }
  | { kind: "retry-scheduled"; job: PushJob; attempt: number; delayMs: number }
  | { kind: "overflow"; job: PushJob };

export type SubmitResult = { ok: true; duplicate?: true } | { ok: false; reason: "overflow" | "no-provider" | "closed" };

export interface LaneStats {
  waiting: number;
  inFlight: number;
  retrying: number;
  overflowed: number;
  results: Record<PushResult["kind"], number>;
}

interface Entry {
  job: PushJob;
  attempts: number;
}

class Lane {
  waiting: Entry[] = [];
  head = 0;
  inFlight = 0;
  retrying = new Map<Entry, ReturnType<typeof setTimeout>>();
  aborts = new Set<AbortController>();
  overflowed = 0;
  results: Record<PushResult["kind"], number> = { delivered: 0, "retry-later": 0, "invalid-token": 0, permanent: 0 };
  constructor(readonly provider: PushProvider) {}
  get queued(): number {
    return this.waiting.length - this.head;
  }
  take(): Entry | undefined {
    const e = this.waiting[this.head];
    if (e === undefined) return undefined;
    this.waiting[this.head++] = undefined as unknown as Entry;
    // Compact once the consumed prefix dominates, so the array does not grow forever (amortised O(1)).
    if (this.head > 1024 && this.head * 2 > this.waiting.length) {
      this.waiting = this.waiting.slice(this.head);
      this.head = 0;
    }
    return e;
  }
}

export class PushSender {
  private lanes = new Map<ProviderName, Lane>();
  /** Job ids held anywhere in the sender: a second submit of the same id is a no-op (the durable layer may re-offer). */
  private held = new Set<string>();
  private closed = false;
  private o: Required<Omit<SenderOptions, "onEvent" | "providers" | "onResult">> & Pick<SenderOptions, "onEvent" | "onResult">;

  constructor(opts: SenderOptions) {
    for (const p of opts.providers) {
      if (this.lanes.has(p.name)) throw new Error(`PushSender: two providers named ${p.name}`);
      this.lanes.set(p.name, new Lane(p));
    }
    this.o = {
      onResult: opts.onResult,
      onEvent: opts.onEvent,
      concurrency: opts.concurrency ?? 16,
      queueLimit: opts.queueLimit ?? 10_000,
      timeoutMs: opts.timeoutMs ?? 10_000,
      maxAttempts: opts.maxAttempts ?? 3,
      backoff: opts.backoff ?? { baseMs: 1000, maxMs: 30_000 },
      maxInMemoryWaitMs: opts.maxInMemoryWaitMs ?? 60_000,
      random: opts.random ?? Math.random,
      now: opts.now ?? Date.now,
    };
    if (!(this.o.concurrency >= 1) || !(this.o.queueLimit >= 1) || !(this.o.maxAttempts >= 1) || !(this.o.timeoutMs > 0)) {
      throw new Error("PushSender: concurrency, queueLimit and maxAttempts must be >= 1 and timeoutMs > 0");
    }
  }

  /** Queues a job; never waits. The job is copied through `pushJob`, so only content-free fields go any further. */
  submit(input: PushJob): SubmitResult {
    if (this.closed) return { ok: false, reason: "closed" };
    const job = pushJob(input);
    const lane = this.lanes.get(job.target.provider);
    if (!lane) return { ok: false, reason: "no-provider" };
    if (this.held.has(job.id)) return { ok: true, duplicate: true };
    if (lane.queued + lane.inFlight + lane.retrying.size >= this.o.queueLimit) {
      lane.overflowed++;
      this.o.onEvent?.({ kind: "overflow", job });
      return { ok: false, reason: "overflow" };
    }
    this.held.add(job.id);
    lane.waiting.push({ job, attempts: 0 });
    this.pump(lane);
    return { ok: true };
  }

  stats(): Partial<Record<ProviderName, LaneStats>> {
    const out: Partial<Record<ProviderName, LaneStats>> = {};
    for (const [name, l] of this.lanes) {
      out[name] = { waiting: l.queued, inFlight: l.inFlight, retrying: l.retrying.size, overflowed: l.overflowed, results: { ...l.results } };
    }
    return out;
  }

  /** Jobs held (waiting, in flight, between retries) across all providers. */
  get size(): number {
    return this.held.size;
  }

  /** Stops: refuses new jobs, drops held ones (the durable jobs still have them), aborts requests, closes providers. */
  async close(): Promise<{ dropped: number }> {
    this.closed = true;
    const dropped = this.held.size;
    for (const l of this.lanes.values()) {
      for (const t of l.retrying.values()) clearTimeout(t);
      l.retrying.clear();
      l.waiting = [];
      l.head = 0;
      for (const a of l.aborts) a.abort();
    }
    this.held.clear();
    await Promise.all([...this.lanes.values()].map((l) => l.provider.close()));
    return { dropped };
  }

  private pump(lane: Lane): void {
    while (!this.closed && lane.inFlight < this.o.concurrency) {
      const e = lane.take();
      if (!e) return;
      void this.attempt(lane, e);
    }
  }

  private async attempt(lane: Lane, e: Entry): Promise<void> {
    lane.inFlight++;
    e.attempts++;
    const ac = new AbortController();
    lane.aborts.add(ac);
    let timer: ReturnType<typeof setTimeout> | undefined;
    // The race bounds the slot even if a provider ignored the signal.
    const timeout = new Promise<PushOutcome>((resolve) => {
      timer = setTimeout(() => {
        resolve({ kind: "retry", reason: "timeout", afterMs: null });
        try {
          ac.abort();
        } catch {
          // A provider's abort handler failing must not keep the slot.
        }
      }, this.o.timeoutMs);
    });
    let outcome: PushOutcome;
    try {
      outcome = await Promise.race([lane.provider.send(e.job, ac.signal), timeout]);
    } catch (err) {
      // A provider bug, not the gateway's answer: report it as permanent so it is seen, not retried forever.
      outcome = { kind: "permanent", reason: `provider threw: ${(err as Error)?.message ?? String(err)}` };
    } finally {
      clearTimeout(timer);
      lane.aborts.delete(ac);
      lane.inFlight--;
    }
    if (this.closed) return;
    this.o.onEvent?.({ kind: "attempt", job: e.job, attempt: e.attempts, outcome });
    this.settle(lane, e, outcome);
    this.pump(lane);
  }

  private settle(lane: Lane, e: Entry, outcome: PushOutcome): void {
    const { job, attempts } = e;
    if (outcome.kind === "retry") {
      const delayMs = retryDelay(attempts, outcome.afterMs, this.o.backoff, this.o.random);
      if (attempts < this.o.maxAttempts && delayMs <= this.o.maxInMemoryWaitMs) {
        this.o.onEvent?.({ kind: "retry-scheduled", job, attempt: attempts, delayMs });
        const t = setTimeout(() => {
          lane.retrying.delete(e);
          lane.waiting.push(e);
          this.pump(lane);
        }, delayMs);
        lane.retrying.set(e, t);
        return;
      }
      return this.finish(lane, { kind: "retry-later", job, attempts, at: this.o.now() + delayMs, reason: outcome.reason });
    }
    if (outcome.kind === "delivered") return this.finish(lane, { kind: "delivered", job, attempts, status: outcome.status });
    if (outcome.kind === "invalid-token") {
      return this.finish(lane, { kind: "invalid-token", job, attempts, reason: outcome.reason, tokenRegisteredAt: job.target.registeredAt, invalidatedAt: this.o.now() });
    }
    return this.finish(lane, { kind: "permanent", job, attempts, reason: outcome.reason });
  }

  private finish(lane: Lane, r: PushResult): void {
    this.held.delete(r.job.id);
    lane.results[r.kind]++;
    try {
      this.o.onResult(r);
    } catch {
      // The caller's bug must not stop the lane; its result is in stats() either way.
    }
  }
}
