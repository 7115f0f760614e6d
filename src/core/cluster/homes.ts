/**
 * Where a shard lives when a move took it away from its placement (rendezvous over cluster.nodes): the moved
 * homes, as (shard → node, epoch of the move). Kept in three places, so that no single loss forgets one:
 * - `shard_home` in the node's cluster.db (with the fence), read at start: a node knows every move it took part
 *   in or saw, with Redis down or restarted empty;
 * - the hash `<p>homes` in Redis, written by the flip itself (scripts.ts MOVE) and merged with every node's own
 *   at each lease tick (HOMES: a later epoch wins), so a Redis restarted empty gets them back from the nodes;
 * - in memory (`ownerOf`), read by every routing decision: one Map lookup, none while nothing moved (the Map is
 *   empty and the placement array answers).
 * Epochs only grow per shard (leases.ts), so "the later epoch wins" orders moves without clocks.
 */
import type { Database } from "bun:sqlite";
import type { RedisLink } from "./redis.ts";
import { HOMES } from "./scripts.ts";

export class ShardHomes {
  private readonly moved = new Map<number, { node: string; epoch: number }>();
  private readonly put;

  constructor(db: Database, private readonly plan: readonly string[], private readonly key: string) {
    db.exec("CREATE TABLE IF NOT EXISTS shard_home (shard INTEGER PRIMARY KEY, node TEXT NOT NULL, epoch INTEGER NOT NULL)");
    for (const r of db.query<{ shard: number; node: string; epoch: number }, []>("SELECT shard, node, epoch FROM shard_home").all()) this.moved.set(r.shard, { node: r.node, epoch: r.epoch });
    this.put = db.query<unknown, [number, string, number]>("INSERT INTO shard_home (shard, node, epoch) VALUES (?1, ?2, ?3) ON CONFLICT (shard) DO UPDATE SET node = ?2, epoch = ?3 WHERE epoch < ?3");
  }

  /** The node the shard lives on: its last move's target, else its placement. */
  ownerOf(shard: number): string {
    return this.moved.get(shard)?.node ?? this.plan[shard]!;
  }

  /** Records a move (durably first); false if a move at this or a later epoch is known already. */
  record(shard: number, node: string, epoch: number): boolean {
    const cur = this.moved.get(shard);
    if (cur !== undefined && cur.epoch >= epoch) return false;
    this.put.run(shard, node, epoch);
    this.moved.set(shard, { node, epoch });
    return true;
  }

  /** Merges with Redis (one script call): returns the shards whose home changed here. */
  async sync(link: RedisLink): Promise<number[]> {
    const args: (string | number)[] = [];
    for (const [s, h] of this.moved) args.push(s, `${h.node}|${h.epoch}`);
    const r = await link.script<string[]>(HOMES, [this.key], args);
    if (!r.ok) return [];
    const changed: number[] = [];
    for (let i = 0; i < r.value.length; i += 2) {
      const v = r.value[i + 1]!;
      const bar = v.lastIndexOf("|");
      const s = Number(r.value[i]);
      if (this.record(s, v.slice(0, bar), Number(v.slice(bar + 1)))) changed.push(s);
    }
    return changed;
  }

  /** The shard's placement over cluster.nodes, moves aside. */
  planOf(shard: number): string {
    return this.plan[shard]!;
  }

  /** The epoch of the shard's last move (0: never moved). */
  epochOf(shard: number): number {
    return this.moved.get(shard)?.epoch ?? 0;
  }

  size(): number {
    return this.moved.size;
  }
}
