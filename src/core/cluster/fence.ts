/**
 * The fencing guard kept with a shard's data: a SQLite table of the highest
 * epoch per shard, checked inside the same transaction as the write it
 * guards. A lease says who *should* write; this says who *may*: a write at an
 * epoch below the recorded one is refused even when a stale owner races past
 * its own lease check (a paused process, a lost Redis reply), so no sequence
 * number is ever issued twice.
 *
 * The guard protects what lives in its file: it must sit with the shard's
 * data (today a node's data dir; after a shard move, the moved file; with a
 * buddy, the replica that applies the batches). Epochs only grow: `claim`
 * refuses an epoch that is not above every epoch recorded, which also catches
 * a Redis that restarted with lower counters.
 *
 * Cost: one indexed SELECT per guarded transaction; the store checks once per
 * group-commit batch, not per message.
 */
import type { Database } from "bun:sqlite";
import { openDatabase, type Durability } from "../../store/sqlite.ts";

export type FenceResult<T> = { ok: true; value: T } | { ok: false; reason: "stale-epoch" | "not-claimed"; current: number };

export class ShardFence {
  readonly db: Database;
  private readonly get;
  private readonly put;

  constructor(path: string, durability: Durability = "process") {
    this.db = openDatabase(path, durability);
    this.db.exec("CREATE TABLE IF NOT EXISTS shard_fence (shard INTEGER PRIMARY KEY, epoch INTEGER NOT NULL, node TEXT NOT NULL)");
    this.get = this.db.query<{ epoch: number; node: string }, [number]>("SELECT epoch, node FROM shard_fence WHERE shard = ?");
    this.put = this.db.query<unknown, [number, number, string]>("INSERT INTO shard_fence (shard, epoch, node) VALUES (?1, ?2, ?3) ON CONFLICT (shard) DO UPDATE SET epoch = ?2, node = ?3");
  }

  /** The highest epoch recorded for the shard (0 if none). */
  epoch(shard: number): number {
    return this.get.get(shard)?.epoch ?? 0;
  }

  /** Records a lease just taken; refused unless the epoch is above every one recorded, so epochs never repeat. */
  claim(shard: number, epoch: number, node: string): FenceResult<void> {
    return this.db
      .transaction((): FenceResult<void> => {
        const cur = this.get.get(shard);
        if (cur && cur.epoch >= epoch) return { ok: false, reason: "stale-epoch", current: cur.epoch };
        this.put.run(shard, epoch, node);
        return { ok: true, value: undefined };
      })
      .immediate();
  }

  /** Raises the floor to epochs other nodes were seen to hold (one transaction): writes below them are refused from now on. */
  observe(seen: Iterable<{ shard: number; epoch: number; node: string }>): void {
    this.db
      .transaction(() => {
        for (const { shard, epoch, node } of seen) {
          const cur = this.get.get(shard);
          if (!cur || cur.epoch < epoch) this.put.run(shard, epoch, node);
        }
      })
      .immediate();
  }

  /**
   * Runs `fn` in one IMMEDIATE transaction if and only if `node` claimed the
   * shard at exactly `epoch` and nothing later was recorded: the check and the
   * write commit together or not at all.
   */
  write<T>(shard: number, epoch: number, node: string, fn: (db: Database) => T): FenceResult<T> {
    return this.db
      .transaction((): FenceResult<T> => {
        const cur = this.get.get(shard);
        if (!cur) return { ok: false, reason: "not-claimed", current: 0 };
        if (cur.epoch > epoch) return { ok: false, reason: "stale-epoch", current: cur.epoch };
        if (cur.epoch < epoch || cur.node !== node) return { ok: false, reason: "not-claimed", current: cur.epoch };
        return { ok: true, value: fn(this.db) };
      })
      .immediate();
  }

  close(): void {
    this.db.close();
  }
}
