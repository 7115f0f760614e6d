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
 *
 * A move's intent (`shard_moving`, with the fence): written by the mover before its flip, cleared once the outcome
 * is recorded. A mover killed between the flip and its record finds it at its start; until the outcome is known the
 * shard's home is the target (so this node does not take the shard again, at a new epoch, beside the target's copy:
 * two diverged copies), which leaves it unavailable (retry_after) while the target is down and Redis lost the flip.
 * Each homes merge asks Redis (OUTCOME) about the intents left by a previous process or by a flip left unanswered.
 * An outcome that names another node (the flip ran) leaves the intent in place until the mover's leftovers step
 * (`away`, move.ts) has shipped what is still here for the shard and dropped its rows (`done`): a mover killed
 * after its flip does that at its restart, from its note (the ledger, written with the intent).
 */
import type { ShardFence } from "./fence.ts";
import type { RedisLink } from "./redis.ts";
import { HOMES, OUTCOME } from "./scripts.ts";

/** A move this node made whose outcome it has not recorded: the shard, where to, the epoch it held it at, Redis's boot then. */
export interface Intent { target: string; epoch: number; boot: string; note: string | null; since: number }

export class ShardHomes {
  private readonly moved = new Map<number, { node: string; epoch: number }>();
  private readonly put;
  private readonly intents = new Map<number, Intent>();
  /** Intents of moves running in this process now: their mover records the outcome (`settle`), the merge leaves them. */
  private readonly running = new Set<number>();
  private readonly putIntent;
  private readonly dropIntent;
  private readonly putNote;
  /**
   * The leftovers step for a shard whose intent resolved as moved to `node` (not this one): called without waiting
   * (a merge runs in the lease tick), it calls `done` once they are shipped and the rows dropped. Null: nothing is
   * shipped, the intent is cleared at once (a ShardHomes with no stores beside it).
   */
  away: ((shard: number, node: string, i: Intent) => void) | null = null;

  constructor(private readonly fence: ShardFence, private readonly plan: readonly string[], private readonly nodeId: string, private readonly p = "sb:") {
    const db = fence.db;
    db.exec("CREATE TABLE IF NOT EXISTS shard_home (shard INTEGER PRIMARY KEY, node TEXT NOT NULL, epoch INTEGER NOT NULL)");
    db.exec("CREATE TABLE IF NOT EXISTS shard_moving (shard INTEGER PRIMARY KEY, target TEXT NOT NULL, epoch INTEGER NOT NULL, boot TEXT NOT NULL, since INTEGER NOT NULL DEFAULT 0)");
    // When the intent was written (ms since the epoch, GET /cluster `moves`); a file made before it gets the column, 0 there.
    if (!db.query<{ name: string }, []>("PRAGMA table_info(shard_moving)").all().some((c) => c.name === "since")) db.exec("ALTER TABLE shard_moving ADD COLUMN since INTEGER NOT NULL DEFAULT 0");
    // Its own table, not a column of shard_moving: a cluster.db made before it keeps working (no note: nothing shipped).
    db.exec("CREATE TABLE IF NOT EXISTS shard_moving_note (shard INTEGER PRIMARY KEY, note TEXT NOT NULL)");
    for (const r of db.query<{ shard: number; node: string; epoch: number }, []>("SELECT shard, node, epoch FROM shard_home").all()) this.moved.set(r.shard, { node: r.node, epoch: r.epoch });
    const q = "SELECT m.shard, target, epoch, boot, note, since FROM shard_moving m LEFT JOIN shard_moving_note n ON n.shard = m.shard";
    for (const r of db.query<{ shard: number } & Intent, []>(q).all()) this.intents.set(r.shard, { target: r.target, epoch: r.epoch, boot: r.boot, note: r.note, since: r.since });
    this.put = db.query<unknown, [number, string, number]>("INSERT INTO shard_home (shard, node, epoch) VALUES (?1, ?2, ?3) ON CONFLICT (shard) DO UPDATE SET node = ?2, epoch = ?3 WHERE epoch < ?3");
    this.putIntent = db.query<unknown, [number, string, number, string, number]>("INSERT OR REPLACE INTO shard_moving (shard, target, epoch, boot, since) VALUES (?, ?, ?, ?, ?)");
    const [dropIntent, dropNote] = [db.query<unknown, [number]>("DELETE FROM shard_moving WHERE shard = ?"), db.query<unknown, [number]>("DELETE FROM shard_moving_note WHERE shard = ?")];
    this.dropIntent = db.transaction((s: number) => (dropIntent.run(s), dropNote.run(s)));
    this.putNote = db.query<unknown, [number, string]>("INSERT OR REPLACE INTO shard_moving_note (shard, note) VALUES (?, ?)");
  }

  /**
   * The node the shard lives on: its last move's target, else its placement; while a move's outcome is unknown, its
   * target (once known, while the leftovers go, the move recorded: a later one may name a third node).
   */
  ownerOf(shard: number): string {
    const i = this.intents.get(shard);
    return (i !== undefined && this.epochOf(shard) <= i.epoch ? i.target : this.moved.get(shard)?.node) ?? this.plan[shard]!;
  }

  /**
   * Before a flip (durably, in one transaction): these shards, held at these epochs, are moving to `target`; `boot`
   * is Redis's `boot` read just before (OUTCOME compares it); `notes[i]`, what the leftovers step needs after a
   * restart (move.ts: the ledger). Left to the mover (`settle`) while it runs.
   */
  intend(shards: readonly number[], epochs: readonly number[], target: string, boot: string, notes: readonly (string | null)[] = []): void {
    const since = Date.now();
    this.fence.db.transaction(() => shards.forEach((s, i) => (this.putIntent.run(s, target, epochs[i]!, boot, since), notes[i] != null && this.putNote.run(s, notes[i]!)))).immediate();
    shards.forEach((s, i) => (this.intents.set(s, { target, epoch: epochs[i]!, boot, note: notes[i] ?? null, since }), this.running.add(s)));
  }

  /** The intents whose outcome is not recorded here (GET /cluster `moves`). */
  pendingIntents(): { shard: number; target: string; since: number }[] {
    return [...this.intents].map(([shard, i]) => ({ shard, target: i.target, since: i.since }));
  }

  /**
   * The mover learned the flip's answer: true when a move above the intent's epoch is recorded (the flip), and the
   * intent then stays, the mover's, until its leftovers are shipped (`done`); else it is left to the merges to
   * resolve (the flip's answer was lost: Redis decided).
   */
  settle(shard: number): boolean {
    const i = this.intents.get(shard);
    if (i === undefined || this.epochOf(shard) <= i.epoch) return this.running.delete(shard), false;
    if (this.away === null) this.clear(shard), this.running.delete(shard);
    return true;
  }

  /** The leftovers step for the shard ended: shipped and dropped (the intent goes), or not (a later merge tries again). */
  done(shard: number, shipped: boolean): void {
    this.running.delete(shard);
    if (shipped) this.clear(shard);
  }

  /** A move of the shard whose outcome is not recorded here yet. */
  moving(shard: number): boolean {
    return this.intents.has(shard);
  }

  private clear(shard: number): void {
    this.dropIntent(shard);
    this.intents.delete(shard);
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
    const r = await link.script<string[]>(HOMES, [`${this.p}homes`, `${this.p}boot`, `${this.p}merged:${this.nodeId}`], args);
    if (!r.ok) return [];
    const changed: number[] = [];
    for (let i = 0; i < r.value.length; i += 2) {
      const v = r.value[i + 1]!;
      const bar = v.lastIndexOf("|");
      const s = Number(r.value[i]);
      if (this.record(s, v.slice(0, bar), Number(v.slice(bar + 1)))) changed.push(s);
    }
    for (const [s, i] of this.intents) if (!this.running.has(s) && (await this.resolve(link, s, i)) && !changed.includes(s)) changed.push(s);
    return changed;
  }

  /** Asks Redis what became of a move this node made (OUTCOME); true when its outcome is now recorded here. */
  private async resolve(link: RedisLink, s: number, i: Intent): Promise<boolean> {
    if (this.epochOf(s) > i.epoch) return this.leave(s, i), true; // recorded by the merge just made (or before: leftovers not shipped yet)
    const r = await link.script<[number, string?]>(OUTCOME, [`${this.p}homes`, `${this.p}boot`, `${this.p}merged:${i.target}`], [s, i.epoch, i.boot, this.nodeId]);
    if (!r.ok || r.value[0] === -1) return false;
    if (r.value[0] !== 0) {
      const v = r.value[1]!;
      const bar = v.lastIndexOf("|");
      const [node, epoch] = [v.slice(0, bar), Number(v.slice(bar + 1))];
      // Taken back here: the next lease starts above the home's epoch (the fence is the acquisition's floor).
      if (node === this.nodeId) this.fence.observe([{ shard: s, epoch, node: i.target }]);
      this.record(s, node, epoch);
      if (node !== this.nodeId) return this.leave(s, i), true;
    }
    this.clear(s); // the flip never ran, or it is taken back here: the rows here are the shard's, nothing is shipped
    return true;
  }

  /** The outcome names another node: the leftovers step runs (the mover's until `done`), then the intent goes. */
  private leave(s: number, i: Intent): void {
    const node = this.moved.get(s)!.node;
    if (this.away === null || node === this.nodeId) return this.clear(s);
    this.running.add(s);
    this.away(s, node, i);
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
