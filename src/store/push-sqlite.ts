/**
 * The SQLite backend of PushJobStore. Its table lives in the queue's shard
 * files, next to the items, because the decision must commit with the item:
 * the store rides on the queue's group commit (`CommitRider`, see
 * SqliteDeliveryQueue.ride) and writes one upsert per device per batch
 * inside the batch's own transaction. A batch whose items all went to
 * online devices (the common case) costs one filter call per item and no
 * statement at all. Measured (loadtest/push-commit-bench.ts at 5aa352a, medians of 7
 * interleaved runs, twice, on the shared and busy 2-core machine), µs of commit per item:
 * no rider 4.63 / 4.28, every device online 4.34 / 4.90, every device offline (one upsert
 * per 10 items) 4.90 / 4.56: within the run-to-run noise; a quiet machine should repeat it.
 *
 * The table is created here (IF NOT EXISTS) rather than as a step of the
 * queue file's schema list, which is the queue's: a server that predates push
 * ignores the table, and this one creates it on any file.
 */
import type { Database, Statement } from "bun:sqlite";
import { randomBytes } from "node:crypto";
import { hashName } from "../core/hash.ts";
import type { QueueItem } from "./queue.ts";
import type { CommitRider, RiderOut } from "./queue-sqlite.ts";
import { PushStage, type PushJobRow, type PushJobStore, type PushLimitRow, type PushWake } from "./push.ts";

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS push_jobs (
    account TEXT NOT NULL, device INTEGER NOT NULL, id TEXT NOT NULL, created INTEGER NOT NULL,
    due INTEGER NOT NULL, stage INTEGER NOT NULL, n INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    sent_at INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (account, device)) WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS push_jobs_by_due ON push_jobs (due) WHERE stage < ${PushStage.DONE};
  CREATE INDEX IF NOT EXISTS push_jobs_by_created ON push_jobs (created);
  CREATE TABLE IF NOT EXISTS push_limits (
    account TEXT NOT NULL, device INTEGER NOT NULL, silent_at INTEGER NOT NULL, alert_tokens REAL NOT NULL, alert_at INTEGER NOT NULL,
    PRIMARY KEY (account, device)) WITHOUT ROWID;
`;
// Collapse: an open job keeps its id, stage and due; only the count grows. Also the commit's rider statement (write).
const UPSERT = `INSERT INTO push_jobs (account, device, id, created, due, stage, n) VALUES (?,?,?,?,?,${PushStage.SILENT},?)
  ON CONFLICT (account, device) DO UPDATE SET n = n + excluded.n`;
const LIMIT_COLUMNS = "account, device, silent_at AS silentAt, alert_tokens AS alertTokens, alert_at AS alertAt";

const COLUMNS = "account, device, id, created, due, stage, n, attempts, sent_at AS sentAt";

class ShardJobs {
  readonly upsert: Statement;
  readonly due: Statement;
  readonly get: Statement;
  readonly advance: Statement;
  readonly postpone: Statement;
  readonly close: Statement;
  readonly closeId: Statement;
  readonly count: Statement;
  readonly expired: Statement;
  readonly saveLimits: Statement;
  readonly put: Statement;
  readonly limits: Statement;
  readonly limitsOf: Statement;
  readonly dropLimits: Statement;
  /**
   * The file may hold a job (it had one at attach, or one was written since). False: close() answers null
   * without its DELETE, which every login runs (session:ready, PushService.connected) and which found nothing
   * on a server whose devices have no wake-up pending: 7 % of a resumed reconnect's CPU in the storm profile
   * (reconnect-storm --batches 1,0,0, 2026-12-03). Never set back to false: a commit in flight may be adding one.
   */
  mayHold: boolean;
  constructor(readonly db: Database) {
    db.exec(SCHEMA);
    this.mayHold = (db.query("SELECT EXISTS (SELECT 1 FROM push_jobs) AS x").get() as { x: number }).x === 1;
    this.upsert = db.prepare(UPSERT);
    this.due = db.prepare(`SELECT ${COLUMNS} FROM push_jobs WHERE stage < ${PushStage.DONE} AND due <= ? ORDER BY due LIMIT ?`);
    this.get = db.prepare(`SELECT ${COLUMNS} FROM push_jobs WHERE account = ? AND device = ?`);
    this.advance = db.prepare("UPDATE push_jobs SET stage = ?, due = ?, attempts = 0, sent_at = ? WHERE account = ? AND device = ? AND id = ? AND stage = ?");
    this.postpone = db.prepare("UPDATE push_jobs SET due = ?, attempts = attempts + ? WHERE account = ? AND device = ? AND id = ?");
    this.close = db.prepare(`DELETE FROM push_jobs WHERE account = ? AND device = ? RETURNING ${COLUMNS}`);
    this.closeId = db.prepare(`DELETE FROM push_jobs WHERE account = ? AND device = ? AND id = ? RETURNING ${COLUMNS}`);
    this.count = db.prepare("SELECT COUNT(*) AS n FROM push_jobs");
    this.put = db.prepare("INSERT OR REPLACE INTO push_jobs (account, device, id, created, due, stage, n, attempts, sent_at) VALUES (?,?,?,?,?,?,?,?,?)");
    this.expired = db.prepare(`SELECT ${COLUMNS} FROM push_jobs WHERE created <= ? ORDER BY created LIMIT ?`);
    this.saveLimits = db.prepare(
      `INSERT INTO push_limits (account, device, silent_at, alert_tokens, alert_at) VALUES (?,?,?,?,?)
       ON CONFLICT (account, device) DO UPDATE SET silent_at = excluded.silent_at, alert_tokens = excluded.alert_tokens, alert_at = excluded.alert_at`,
    );
    this.limits = db.prepare(`SELECT ${LIMIT_COLUMNS} FROM push_limits WHERE MAX(silent_at, alert_at) > ?`);
    this.limitsOf = db.prepare(`SELECT ${LIMIT_COLUMNS} FROM push_limits WHERE account = ? AND device = ?`);
    this.dropLimits = db.prepare("DELETE FROM push_limits WHERE MAX(silent_at, alert_at) <= ?");
  }
}

/** Opaque and unguessable: it reaches the provider (and an operator's webhook), so it says nothing about the device. */
const newId = () => randomBytes(12).toString("base64url");

export class SqlitePushJobs implements PushJobStore, CommitRider {
  private shards: ShardJobs[] = [];
  /** Which items of a commit wake their device (set by core's push service; none until then). */
  private wakes: ((item: QueueItem) => boolean) | null = null;
  /** Scratch of one commit: items per device. */
  private batch = new Map<string, PushWake>();

  constructor(private shardCount: number) {
    if (!(shardCount >= 1)) throw new Error(`SqlitePushJobs: shardCount must be >= 1, got ${shardCount}`);
  }

  /** Which queue items wake their device at commit (kind, no live connection, an endpoint): decided by the caller. */
  setFilter(f: ((item: QueueItem) => boolean) | null): void {
    this.wakes = f;
  }

  // CommitRider
  attach(shard: number, db: Database): void {
    if (this.shards[shard] !== undefined) throw new Error(`SqlitePushJobs: shard ${shard} attached twice`);
    this.shards[shard] = new ShardJobs(db);
  }

  write(shard: number, items: readonly QueueItem[], now: number, out: RiderOut): void {
    const f = this.wakes;
    if (f === null) return;
    const per = this.batch;
    try {
      for (const it of items) {
        if (!f(it)) continue;
        const key = `${it.account}\u0000${it.device}`;
        const w = per.get(key);
        if (w !== undefined) w.n++;
        else per.set(key, { account: it.account, device: it.device, n: 1 });
      }
      if (per.size === 0) return;
      this.at(shard).mayHold = true; // attached, or the rows would go to a file whose table was never made
      for (const w of per.values()) out.run(UPSERT, [w.account, w.device, newId(), now, now, w.n]);
    } finally {
      per.clear(); // scratch of one call: nothing of it may linger into the next commit
    }
  }

  private at(shard: number): ShardJobs {
    const s = this.shards[shard];
    if (s === undefined) throw new Error(`SqlitePushJobs: shard ${shard} is not attached (SqliteDeliveryQueue.ride attaches every shard)`);
    return s;
  }

  private of(account: string): ShardJobs {
    return this.at(hashName(account) % this.shardCount);
  }

  // PushJobStore
  open(w: PushWake, now: number): void {
    const s = this.of(w.account);
    s.mayHold = true;
    s.upsert.run(w.account, w.device, newId(), now, now, w.n);
  }

  due(now: number, limit: number): PushJobRow[] {
    const out: PushJobRow[] = [];
    for (const s of this.shards) out.push(...(s.due.all(now, limit) as PushJobRow[]));
    if (this.shards.length > 1) out.sort((a, b) => a.due - b.due);
    return out.length > limit ? out.slice(0, limit) : out;
  }

  get(account: string, device: number): PushJobRow | null {
    return (this.of(account).get.get(account, device) as PushJobRow | null) ?? null;
  }

  advance(account: string, device: number, id: string, stage: PushStage, next: PushStage, due: number, now: number): boolean {
    return this.of(account).advance.run(next, due, now, account, device, id, stage).changes === 1;
  }

  postpone(account: string, device: number, id: string, due: number, handedOver: boolean): boolean {
    return this.of(account).postpone.run(due, handedOver ? 1 : 0, account, device, id).changes === 1;
  }

  close(account: string, device: number, id?: string): PushJobRow | null {
    const s = this.of(account);
    if (!s.mayHold) return null;
    const row = id === undefined ? s.close.get(account, device) : s.closeId.get(account, device, id);
    return (row as PushJobRow | null) ?? null;
  }

  jobsOf(devices: readonly { account: string; device: number }[]): PushJobRow[] {
    const out: PushJobRow[] = [];
    for (const d of devices) {
      const row = this.get(d.account, d.device);
      if (row !== null) out.push(row);
    }
    return out;
  }

  putJobs(rows: readonly PushJobRow[]): void {
    for (const r of rows) {
      const s = this.of(r.account);
      s.mayHold = true;
      s.put.run(r.account, r.device, r.id, r.created, r.due, r.stage, r.n, r.attempts, r.sentAt);
    }
  }

  limitsOf(devices: readonly { account: string; device: number }[]): PushLimitRow[] {
    const out: PushLimitRow[] = [];
    for (const d of devices) {
      const row = this.of(d.account).limitsOf.get(d.account, d.device) as PushLimitRow | null;
      if (row !== null) out.push(row);
    }
    return out;
  }

  count(): number {
    let n = 0;
    for (const s of this.shards) n += (s.count.get() as { n: number }).n;
    return n;
  }

  expired(before: number, limit: number): PushJobRow[] {
    const out: PushJobRow[] = [];
    for (const s of this.shards) out.push(...(s.expired.all(before, limit) as PushJobRow[]));
    if (this.shards.length > 1) out.sort((a, b) => a.created - b.created);
    return out.length > limit ? out.slice(0, limit) : out;
  }

  handOver(account: string, device: number, id: string, leaseUntil: number, limits: PushLimitRow | null): boolean {
    const s = this.of(account);
    return s.db.transaction(() => {
      if (limits !== null) s.saveLimits.run(limits.account, limits.device, limits.silentAt, limits.alertTokens, limits.alertAt);
      return s.postpone.run(leaseUntil, 1, account, device, id).changes === 1;
    })();
  }

  saveLimits(r: PushLimitRow): void {
    this.of(r.account).saveLimits.run(r.account, r.device, r.silentAt, r.alertTokens, r.alertAt);
  }

  limits(since: number): PushLimitRow[] {
    const out: PushLimitRow[] = [];
    for (const s of this.shards) out.push(...(s.limits.all(since) as PushLimitRow[]));
    return out;
  }

  dropLimits(before: number): void {
    for (const s of this.shards) s.dropLimits.run(before);
  }
}
