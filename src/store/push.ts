/**
 * Durable push jobs (issue 14): one open job per device that has something
 * queued and no live connection. The job is the decision to wake the device;
 * it is written in the same group commit as the queue item that caused it
 * (src/store/push-sqlite.ts rides on the queue's commit), so a crash can lose
 * neither the item without its wake-up nor the wake-up without its item.
 *
 * Later items for the same device collapse into the open job (`n` grows, no
 * second job). The job's `id` is its idempotency key: every attempt of one
 * stage goes out as `<id>.<stage>`, so a send repeated after a crash (sent,
 * then killed before `advance` was written) is the same request to the
 * provider (apns-collapse-id, the webhook's `id`) and not a second wake-up.
 */

/** What a job sends next. DONE: everything was sent; the row stays so that later items collapse into it until the device connects. */
export const PushStage = { SILENT: 0, ALERT: 1, DONE: 2 } as const;
export type PushStage = (typeof PushStage)[keyof typeof PushStage];

export interface PushJobRow {
  account: string;
  device: number;
  /** Idempotency key, chosen when the job opens; kept while items collapse into it. */
  id: string;
  /** ms since epoch the job opened. */
  created: number;
  /** ms since epoch the next stage may go out. */
  due: number;
  stage: PushStage;
  /** Items that asked for a wake-up since the job opened (collapsed). */
  n: number;
  /**
   * Times the current stage was handed to a provider (PushService counts each hand-over). More than 0: the stage was
   * charged to the device's limits already, so sending it again (after retry-later, or after a crash mid-send) is not
   * charged, nor held back, a second time.
   */
  attempts: number;
  /** ms since epoch of the last push delivered to the provider; 0 before the first (push-to-reconnect time). */
  sentAt: number;
}

/** A device to wake, as the queue commit hands it over: `n` items of this batch asked for it. */
export interface PushWake {
  account: string;
  device: number;
  n: number;
}

/** A device's persisted push limits (core/push/ratelimit.ts LimitState), kept past its job: limits outlive a login. */
export interface PushLimitRow {
  account: string;
  device: number;
  silentAt: number;
  alertTokens: number;
  alertAt: number;
}

export interface PushJobStore {
  /** The jobs (open or done) of these devices as they are: what a cluster shard move ships (core/cluster/rows.ts). */
  jobsOf(devices: readonly { account: string; device: number }[]): PushJobRow[];
  /**
   * Writes jobs a shard move brought, replacing what is here of those devices, committed at once: before the
   * moved items commit, so that those collapse into them (same id, stage and due) instead of opening new ones.
   */
  putJobs(rows: readonly PushJobRow[]): void;
  /** The limits of these devices as they are (those with any): a shard move ships them with the jobs. */
  limitsOf(devices: readonly { account: string; device: number }[]): PushLimitRow[];
  /**
   * Opens a job for the device, or collapses into its open one. Used outside
   * a queue commit: a connection went away with items still queued (those
   * items are durable already, or in a commit that is).
   */
  open(wake: PushWake, now: number): void;
  /** Up to `limit` open jobs whose `due` has come, earliest first. */
  due(now: number, limit: number): PushJobRow[];
  /** The open job of a device, if any. */
  get(account: string, device: number): PushJobRow | null;
  /** The stage `stage` of job `id` was delivered: the job moves to `next`, due at `due`. False if the job is gone or not at that stage. */
  advance(account: string, device: number, id: string, stage: PushStage, next: PushStage, due: number, now: number): boolean;
  /**
   * Job `id` is next due at `due`: its current stage again (rate limit, Retry-After, provider down), or the end of
   * its lease (handed to a provider). `handedOver`: it was just handed over (attempts + 1).
   */
  postpone(account: string, device: number, id: string, due: number, handedOver: boolean): boolean;
  /** Closes the device's job (it connected, was revoked, or cannot be reached); with `id`, only that job. Returns the closed row. */
  close(account: string, device: number, id?: string): PushJobRow | null;
  /** Open jobs, all devices. */
  count(): number;
  /** Up to `limit` jobs (open or done) opened at or before `before`, oldest first: expired (bounded by the queue's retention). */
  expired(before: number, limit: number): PushJobRow[];
  /**
   * Job `id` was handed to a provider: in one transaction, its lease (`due`, attempts + 1) and, when the hand-over was
   * charged to the device's limits, those limits. One transaction, because a crash between the two would leave the
   * limits charged and the stage not marked handed over: the resend would then be held back by its own first try.
   */
  handOver(account: string, device: number, id: string, leaseUntil: number, limits: PushLimitRow | null): boolean;
  /** Writes a device's limits. */
  saveLimits(row: PushLimitRow): void;
  /** Every device's limits last changed after `since`. */
  limits(since: number): PushLimitRow[];
  /** Drops limits last changed at or before `before` (they limit nothing any more). */
  dropLimits(before: number): void;
}
