/**
 * The read side of one delivery-queue shard: what the shard holds in memory
 * (buffered items, acks not yet deleted, the commit in flight, per-device usage)
 * and the reads that merge it with the file (fetch, usage, recall, the gauges).
 * Split from queue-shard.ts (files under src/ stay ≤ 500 lines) when commits
 * could be in flight on another thread (queue.committer = "worker"): Shard, the
 * write side (buffers, group commit, guard, disk-fault retry), extends it, so
 * these stay own fields of the shard object, read with no extra indirection.
 */
import type { ShardStat, AcceptedRecord, QueueItem, Usage } from "./queue.ts";
import type { Pending, Vouch } from "./queue-vouch.ts";
import { ByDevice } from "./by-device.ts";
import { ShardFile } from "./queue-shard-file.ts";

/** One commit between its batch being cut and its result (queue-commit.ts): all that the result or its undo needs. */
export interface InFlight {
  batch: Map<number, Pending>;
  /** The batch minus what was acknowledged while it was in flight (the Worker); the batch itself when inline. */
  live: Map<number, Pending>;
  deletes: number[];
  accepted: Vouch[];
  drops: { account: string; device: number }[];
  lazyWrite: Vouch[];
  unrows: AcceptedRecord[];
  /** Acceptances with copies in the batch, and how many: kept here, as another shard's commit in flight counts its own. */
  mine: Vouch[];
  here: number[];
  lightDone: Vouch[];
  defer: boolean;
  /** Cut by a flush that waits for it (durable callbacks then run in that flush, as inline). */
  sync: boolean;
  t0: number;
}

export const NO_QID = Number.MAX_SAFE_INTEGER;

export class ShardReads extends ShardFile {
  /** Appended but not committed, in qid order (Map keeps insertion order). */
  protected pending = new Map<number, Pending>();
  /** Qids acked and not yet deleted from the file, so fetch skips them. */
  protected deleting = new Set<number>();
  protected lastQid = 0;
  /**
   * Confirming senders' records whose `sent` is out (Vouch.home is this shard): written to `unconfirmed` by the
   * first timer commit after a whole window unless confirmed by then, which nearly all are (no row at all).
   */
  protected lazies: Vouch[] = [];
  /** Per-device usage, loaded on first touch and kept exact from then on. */
  protected usages = new ByDevice<Usage>();
  /** Items queued in this shard, buffered or committed (counted once at open, then kept exact): the depth gauge. */
  protected items = 0;
  /** Devices dropped while the disk refused the DELETE: their rows go in the next commit that succeeds. */
  protected drops: { account: string; device: number }[] = [];
  /** The commit in flight (only with an async committer: inline ones are done before commit() returns). */
  protected inflight: InFlight | null = null;

  /** Lazy records waiting here for a commit (memory), for the dedup-state gauge. */
  lazyCount(): number {
    return this.lazies.length;
  }

  /** Depth and oldest item, for the scrape: a counter and one index probe, no scan of the file. */
  stat(): ShardStat {
    // Oldest by the ts index, skipping rows acknowledged but not yet deleted (at most one commit window of them).
    let oldest: number | null = null;
    for (const r of this.oldestStmt.all(this.deleting.size + 1) as { qid: number; ts: number }[]) {
      if (!this.deleting.has(r.qid)) {
        oldest = r.ts;
        break;
      }
    }
    // The buffer holds at most commit_rows items: a walk of it per scrape is cheaper than trusting ts order.
    for (const p of this.pending.values()) if (oldest === null || p.item.ts < oldest) oldest = p.item.ts;
    if (this.inflight !== null) for (const p of this.inflight.live.values()) if (oldest === null || p.item.ts < oldest) oldest = p.item.ts;
    return { depth: this.items, oldestTs: oldest };
  }

  /**
   * Milliseconds times 1024 plus a counter: increasing, and after a restart
   * above anything issued before (unless the clock stepped back by more than
   * the downtime, which the max(lastQid) floor covers for committed rows).
   */
  nextQid(): number {
    const t = Date.now() * 1024;
    this.lastQid = t > this.lastQid ? t : this.lastQid + 1;
    return this.lastQid;
  }

  usage(account: string, device: number): Usage {
    let u = this.usages.get(account, device);
    if (u === undefined) {
      // Loaded before the first append of this process touches the device, so buffered items are never counted twice.
      // Rows below the commit in flight are all committed and visible; those of the commit in flight are counted
      // from memory (each batch's qids are above every earlier batch's), whether its reply came yet or not.
      // A device with no committed rows at open has none but what this process appended: no read.
      const f = this.inflight;
      u = this.unloaded.delete(account, device) ? (this.usageStmt.get(account, device, f === null ? NO_QID : f.batch.keys().next().value!) as Usage) : { n: 0, bytes: 0 };
      for (const p of this.pending.values()) if (p.item.account === account && p.item.device === device) (u.n++, (u.bytes += p.item.body.length));
      if (f !== null) for (const p of f.live.values()) if (p.item.account === account && p.item.device === device) (u.n++, (u.bytes += p.item.body.length));
      this.usages.set(account, device, u);
    }
    return u;
  }

  protected unuse(item: QueueItem): void {
    const u = this.usages.get(item.account, item.device);
    if (u !== undefined) {
      u.n--;
      u.bytes -= item.body.length;
    }
  }

  /** The committed record, if this shard has it (the caller asks the Bloom filter first). */
  recall(sender: string, device: number, cid: string): AcceptedRecord | null {
    return (
      (this.selectAccepted.get(sender, device, cid) as AcceptedRecord | null) ??
      (this.selectUnconfirmed.get(sender, device, cid) as AcceptedRecord | null) ??
      null
    );
  }

  fetch(account: string, device: number, after: number, limit: number): QueueItem[] {
    const out: QueueItem[] = [];
    if (this.drops.length !== 0 && this.drops.some((d) => d.account === account && d.device === device)) return out; // dropped, not yet deleted
    // Nothing queued (the usage is exact once loaded; `unloaded` lists the devices with rows at open): no read.
    const u = this.usages.get(account, device) ?? (this.unloaded.get(account, device) === undefined ? undefined : this.usage(account, device));
    if (u === undefined || u.n <= 0) return out;
    // Committed rows have lower qids than anything still pending for the same device (commit is in qid order).
    // A commit in flight may be visible already: its rows come from memory, after the older committed ones.
    const f = this.inflight;
    const rows = this.select.all(account, device, after, limit + this.deleting.size + (f === null ? 0 : f.batch.size)) as QueueItem[];
    for (const r of rows) {
      if (out.length >= limit) break;
      if (!this.deleting.has(r.qid) && (f === null || !f.batch.has(r.qid))) out.push(r);
    }
    if (f !== null && out.length < limit) {
      for (const { item: it } of f.live.values()) {
        if (it.qid > after && it.account === account && it.device === device) {
          out.push(it);
          if (out.length >= limit) break;
        }
      }
    }
    if (out.length < limit) {
      for (const p of this.pending.values()) {
        const it = p.item;
        if (it.qid > after && it.account === account && it.device === device) {
          out.push(it);
          if (out.length >= limit) break;
        }
      }
    }
    return out;
  }

  pendingCount(): number {
    return this.pending.size;
  }

}
