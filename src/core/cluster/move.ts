/**
 * Shard moves (`switchboard cluster move`, the drain on SIGTERM, `cluster rebalance`): a home shard goes from the
 * node that holds it to another live node without dropping anyone. Per batch of shards to one target:
 * 1. Freeze: the shards' logins and sends get retry_after from now on (nothing is dropped: the SDK resends), and
 *    their connected devices are closed with try_again (an ack after the snapshot would be lost with it).
 * 2. Commit what is buffered, take each shard's rows (rows.ts) and ship them over the node link (items `S`, in
 *    chunks of cluster.move_chunk_bytes: `ship`); the target acks each once it is durable there.
 * 3. Flip (scripts.ts MOVE, one Redis step per shard): this node stops proving the shard before Redis is asked,
 *    the lease becomes the target's at the next epoch and the shard's home in Redis names it; the target adopts
 *    the lease (leases.ts `adopt`), every node routes there (pub/sub, and the homes merge each tick).
 * 4. Devices of the shard that log in here are redirected to the target (node.ts login gate).
 * Expected failures come back as { ok: false, reason }: a shard stays here (unfrozen) unless Redis flipped it.
 */
import { CloseReason } from "../../protocol/errors.ts";
import { log } from "../log.ts";
import type { ClusterNode } from "./node.ts";
import { chunkShard, exportShard, type ShardData } from "./rows.ts";
import { Assignment, shardOf } from "./shards.ts";

/** What a move answers (POST /cluster/move): an expected failure names its reason and the fix. */
export type MoveResult =
  | { ok: true; epoch: number; shards: number; accounts: number; items: number; chunks: number }
  | { ok: false; reason: "bad_shard" | "bad_node" | "not_owner" | "node_down" | "busy" | "timeout" | "flip_failed"; message: string };
const refused = (reason: Extract<MoveResult, { ok: false }>["reason"], message: string): MoveResult => ({ ok: false, reason, message });

/** How long a move waits for the target's ack of the rows before it gives up (the shards stay). */
const SHIP_TIMEOUT_MS = 30_000;
/** Shards per batch of a drain or rebalance: one shipment and one flip round per batch. */
const BATCH = 256;

export class ShardMover {
  /** Shards being moved away from here: their logins and sends get retry_after, peers' items for them wait (until). */
  readonly frozen = new Set<number>();
  private readonly thawed = new Map<number, { p: Promise<void>; done: () => void }>();

  constructor(private readonly n: ClusterNode) {}

  /** While the shard is frozen: resolves when the move is over (flipped or not); null otherwise. */
  until(shard: number): Promise<void> | null {
    return this.thawed.get(shard)?.p ?? null;
  }

  private freeze(s: number): void {
    let done = () => {};
    const p = new Promise<void>((r) => (done = r));
    this.frozen.add(s);
    this.thawed.set(s, { p, done });
  }

  private thaw(s: number): void {
    this.frozen.delete(s);
    this.thawed.get(s)?.done();
    this.thawed.delete(s);
  }

  /** One shard, checked (the CLI's `cluster move`). */
  async moveOne(shard: number, target: string): Promise<MoveResult> {
    const n = this.n;
    if (!Number.isInteger(shard) || shard < 0 || shard >= n.leases.shardCount) return refused("bad_shard", `a shard is an integer 0..${n.leases.shardCount - 1}`);
    if (n.leases.epochOf(shard) === null) return refused("not_owner", `this node (${n.nodeId}) does not hold shard ${shard}; its home is ${n.ownerOf(shard)}: ask that node`);
    if (this.frozen.has(shard)) return refused("busy", `shard ${shard} is being moved already`);
    return this.move([shard], target);
  }

  /** Shards this node holds (the others are skipped) to one live node. */
  async move(shards: number[], target: string, shipMs = SHIP_TIMEOUT_MS): Promise<MoveResult> {
    const n = this.n;
    if (!n.nodes.includes(target)) return refused("bad_node", `${target} is not in cluster.nodes (${n.nodes.join(",")})`);
    if (target === n.nodeId) return refused("bad_node", `${target} is this node`);
    if (!n.leases.nodes().has(target)) return refused("node_down", `node ${target} is not up (no heartbeat)`);
    const mine = shards.filter((s) => n.leases.epochOf(s) !== null && !this.frozen.has(s));
    const local = n.localParts();
    for (const s of mine) this.freeze(s);
    try {
      const names = new Map<number, string[]>(mine.map((s) => [s, []]));
      for (const a of local.accounts.listAccounts()) names.get(shardOf(a, n.leases.shardCount))?.push(a);
      for (const s of mine) this.redirectShard(s, names.get(s)!);
      local.queue.flush();
      // The import key names this attempt: a move that failed before its flip and is tried again at the same epoch
      // replaces what the failed one left there instead of being taken for a link retry of it (and skipped).
      const from = `${n.nodeId}.${crypto.randomUUID().slice(0, 8)}`;
      const data: ShardData[] = mine.map((s) => exportShard(s, from, n.leases.epochOf(s) ?? 0, local, n.leases.shardCount, names.get(s)!));
      let chunks = 0;
      const shipped = await Promise.race([this.ship(target, data).then((k) => ((chunks = k), true)), Bun.sleep(shipMs).then(() => false)]);
      if (!shipped) return refused("timeout", `node ${target} did not acknowledge the rows of ${mine.length} shards within ${shipMs} ms; they stay here`);
      const epochs = await Promise.all(mine.map((s) => n.leases.handOver(s, target)));
      if (epochs.some((e) => e === null)) await n.syncHomes();
      mine.forEach((s, i) => n.settled(s, target, epochs[i]!));
      const failed = mine.filter((s) => n.ownerOf(s) !== target);
      await Promise.all(mine.map((s, i) => (failed.includes(s) ? null : this.leftovers(data[i]!, target))));
      const items = data.reduce((k, d) => k + d.items.length, 0);
      const accounts = data.reduce((k, d) => k + d.names.length, 0);
      log.info("cluster shards moved", { from: n.nodeId, to: target, shards: mine.length - failed.length, failed: failed.length, accounts, items });
      if (failed.length) return refused("flip_failed", `the lease of ${failed.length} shards (${failed.slice(0, 8).join(",")}) could not be flipped to ${target} (Redis down, or the lease lapsed); they are taken again here at a new epoch`);
      return { ok: true, epoch: epochs[0] ?? 0, shards: mine.length, accounts, items, chunks };
    } finally {
      for (const s of mine) this.thaw(s); // after the homes changed: what was held goes to the new home
    }
  }

  /**
   * Every shard this node holds, to the live nodes (rendezvous over them, so each gets its share), in batches:
   * the drain before this node stops (SIGTERM). Nothing moves when no other node is up: the shards then wait for
   * this node's restart, as they do after a crash.
   */
  async drain(budgetMs: number): Promise<{ moved: number; left: number }> {
    const n = this.n;
    const live = [...n.leases.nodes().keys()].filter((id) => id !== n.nodeId && n.nodes.includes(id));
    const held = [...n.leases.heldShards().keys()];
    if (live.length === 0) return { moved: 0, left: held.length };
    const plan = new Assignment(live, n.leases.shardCount);
    const by = new Map<string, number[]>();
    for (const s of held) (by.get(plan.ownerOf(s)!) ?? by.set(plan.ownerOf(s)!, []).get(plan.ownerOf(s)!)!).push(s);
    return this.batches(by, performance.now() + budgetMs);
  }

  /** The shards this node holds whose placement (cluster.nodes) is another live node, back to it (`cluster rebalance`). */
  async rebalance(): Promise<{ moved: number; left: number }> {
    const n = this.n;
    const live = n.leases.nodes();
    const by = new Map<string, number[]>();
    for (const s of n.leases.heldShards().keys()) {
      const p = n.homes.planOf(s);
      if (p !== n.nodeId && live.has(p)) (by.get(p) ?? by.set(p, []).get(p)!).push(s);
    }
    return this.batches(by);
  }

  /**
   * After the flip: what was queued here for the moved shard's devices between the snapshot and the flip (sends
   * were refused, but receipts, group copies and events of other accounts' activity were not) goes after it, then
   * every row of the shard's accounts here is deleted (a later move back replaces, never merges). If the target
   * does not ack the leftovers, nothing is deleted (logged): the rows wait here, and a move back brings them.
   */
  private async leftovers(first: ShardData, target: string): Promise<void> {
    const n = this.n;
    const local = n.localParts();
    const shipped = new Set(first.items.map((it) => `${it.account}\u0000${it.device}\u0000${it.qid}`));
    local.queue.flush();
    const again = exportShard(first.shard, `${first.from}~after`, first.epoch, local, n.leases.shardCount, first.names);
    again.items = again.items.filter((it) => !shipped.has(`${it.account}\u0000${it.device}\u0000${it.qid}`));
    again.replace = false;
    delete again.modules; // shipped with the first: the shard's own accounts changed nothing since (frozen)
    delete again.limits; // no push went out here since the freeze (PushService.owns)
    if (JSON.stringify(again.jobs) === JSON.stringify(first.jobs)) delete again.jobs; // else a stage went out here meanwhile
    if (again.items.length > 0 || again.jobs !== undefined) {
      const ok = await Promise.race([this.ship(target, [again]).then(() => true), Bun.sleep(SHIP_TIMEOUT_MS).then(() => false)]);
      if (!ok) return void log.warn("cluster move: the items queued during the move were not acknowledged; kept here", { shard: first.shard, to: target, items: again.items.length });
    }
    for (const d of again.rows.devices as { account: string; device: number }[]) local.queue.dropDevice(d.account, d.device), local.push.jobs.close(d.account, d.device);
    local.accounts.dropRows(again.names);
    local.hooks.run("shard:rows", { op: "drop", accounts: again.names, inShard: (a) => shardOf(a, n.leases.shardCount) === first.shard });
    for (const a of again.names) local.directory.forget(a);
  }

  /**
   * The shipments, cut into chunks (rows.ts chunkShard) and sent in waves of at most cluster.move_chunk_bytes
   * together: the link puts a turn's items in one frame, which HARD_MAX_FRAME (16 MiB) bounds. Waves go in chunk
   * order, so a shard's chunk i+1 leaves only after chunk i is durable there (a wave cannot hold both: chunk i was
   * cut because the next item did not fit beside it). Many small shards share one wave (one group commit there).
   * Resolves with the number of chunks once the target acked the last.
   */
  private async ship(target: string, data: ShardData[]): Promise<number> {
    const limit = this.n.config.cluster.moveChunkBytes;
    const all = data.flatMap((d) => chunkShard(d, limit)).sort((a, b) => a.index - b.index); // stable: shards keep their order
    for (let i = 0; i < all.length; ) {
      let bytes = 0;
      const wave: ShardData[] = [];
      for (; i < all.length && (wave.length === 0 || bytes + all[i]!.bytes <= limit); i++) wave.push(all[i]!.d), (bytes += all[i]!.bytes);
      await Promise.all(wave.map((d) => this.n.forward.sendShard(target, d)));
    }
    return all.length;
  }

  /**
   * Sessions of a shard that now lives on another node (a move, or a home that lapsed here and went elsewhere):
   * `redirect` to the new home and a close, or `close try_again` while it is moving or its new owner is not
   * serving yet; its accounts' directory entries here are dropped (their home answers for them from now on).
   */
  redirectShard(shard: number, names: readonly string[]): void {
    const local = this.n.localParts();
    for (const a of names) {
      local.directory.forget(a);
      const h = this.n.home(a);
      for (const conn of local.registry.devices(a)) {
        if (h.kind === "remote") this.n.redirect(conn, h);
        else if (h.kind === "down") conn.close(CloseReason.TRY_AGAIN, `the home shard ${shard} of ${a} is moving`, h.retryMs);
      }
    }
  }

  /** Batch by batch, round robin over the targets, none started past `deadline` (what is left stays here). */
  private async batches(by: Map<string, number[]>, deadline = Infinity): Promise<{ moved: number; left: number }> {
    let moved = 0;
    const queue = [...by].flatMap(([target, shards]) => Array.from({ length: Math.ceil(shards.length / BATCH) }, (_, i) => ({ target, shards: shards.slice(i * BATCH, (i + 1) * BATCH), i })));
    queue.sort((a, b) => a.i - b.i);
    for (const { target, shards } of queue) {
      const left = deadline - performance.now();
      if (left <= 0) break;
      const r = await this.move(shards, target, Math.min(SHIP_TIMEOUT_MS, left));
      if (r.ok) moved += r.shards;
      else log.warn("cluster shard batch not moved", { to: target, reason: r.reason, message: r.message });
    }
    return { moved, left: this.n.leases.heldShards().size };
  }
}
