/**
 * Shard moves (`switchboard cluster move`, the drain on SIGTERM, `cluster rebalance`): a home shard goes from the
 * node that holds it to another live node without dropping anyone. Per batch of shards to one target:
 * 1. Freeze: the shards' logins and sends get retry_after from now on (nothing is dropped: the SDK resends), and
 *    their connected devices are closed with try_again (an ack after the snapshot would be lost with it).
 * 2. Commit what is buffered, take each shard's rows (rows.ts) and ship them over the node link (items `S`, in
 *    chunks of cluster.move_chunk_bytes: `ship`); the target acks each once it is durable there.
 * 3. Intent (homes.ts `intend`, durable before the flip: a restart that does not know the outcome waits for it), then
 *    the flip (scripts.ts MOVE, one Redis step per shard): this node stops proving the shard before Redis is asked,
 *    the lease becomes the target's at the next epoch and the shard's home in Redis names it; the target adopts
 *    the lease (leases.ts `adopt`), every node routes there (pub/sub, and the homes merge each tick).
 * 4. Devices of the shard that log in here are redirected to the target (node.ts login gate); what was queued here
 *    for the shard since the snapshot goes after it, then its rows here are dropped, then the intent (`leftovers`;
 *    at a restart, for a mover killed past its flip: `resume`).
 * Expected failures come back as { ok: false, reason }: a shard stays here (unfrozen) unless Redis flipped it.
 */
import { CloseReason } from "../../protocol/errors.ts";
import type { ClientStanza } from "../../protocol/stanzas.ts";
import type { Conn } from "../../transport/connection.ts";
import { ProxyConn } from "./proxy.ts";
import { log } from "../log.ts";
import type { ClusterNode } from "./node.ts";
import { existsSync, writeFileSync } from "node:fs";
import { chunkRows, emptyChunk, leftoverParts, ledgerNote, newLedger, readNote, shardParts, type Chunk, type Ledger, type Stores } from "./chunks.ts";
import type { Intent } from "./homes.ts";
import { Assignment, shardOf } from "./shards.ts";

/** What a move answers (POST /cluster/move): an expected failure names its reason and the fix. */
export type MoveResult =
  | { ok: true; epoch: number; shards: number; accounts: number; items: number; chunks: number }
  | { ok: false; reason: "bad_shard" | "bad_node" | "not_owner" | "node_down" | "busy" | "timeout" | "flip_failed"; message: string };
const refused = (reason: Extract<MoveResult, { ok: false }>["reason"], message: string): MoveResult => ({ ok: false, reason, message });

/** How long a move waits for the target's ack of one wave of chunks before it gives up (the shards stay). */
const SHIP_TIMEOUT_MS = 30_000;
/** At least this many bytes shipped between two full collections during a move (ship), and half a chunk. */
const GC_BYTES = 1 << 20;
/** Shards per batch of a drain or rebalance: one shipment and one flip round per batch. */
const BATCH = 256;

export class ShardMover {
  /** Shards being moved away from here: their logins and sends get retry_after, peers' items for them wait (until). */
  readonly frozen = new Set<number>();
  private readonly thawed = new Map<number, { p: Promise<void>; done: () => void }>();
  /** Stanzas that waited once for the ends of a move to agree (settling). */
  private readonly waited = new WeakSet<object>();
  /** When this node flipped a shard away (movedAway). */
  private readonly movedAt = new Map<number, number>();

  /** The moves running here: where each frozen shard goes, since when (ms since the epoch). */
  private readonly running = new Map<number, { target: string; since: number }>();

  constructor(private readonly n: ClusterNode) {}

  /**
   * Moves not over (GET /cluster `moves`, `cluster status`): a shard frozen here while its rows ship (`shipping`) or
   * its lease flips (`flipping`: its intent written, homes.ts), and an intent left by an earlier process or a flip
   * whose answer was lost (`unresolved`: the shard waits, retry_after, until a homes merge learns the outcome).
   */
  pending(): { shard: number; target: string; since: number; state: "shipping" | "flipping" | "unresolved" }[] {
    const out: { shard: number; target: string; since: number; state: "shipping" | "flipping" | "unresolved" }[] = [];
    for (const [shard, r] of this.running) out.push({ shard, target: r.target, since: r.since, state: this.n.homes.moving(shard) ? "flipping" : "shipping" });
    for (const i of this.n.homes.pendingIntents()) if (!this.running.has(i.shard)) out.push({ ...i, state: "unresolved" });
    return out;
  }

  /** While the shard is frozen: resolves when the move is over (flipped or not); null otherwise. */
  until(shard: number): Promise<void> | null {
    return this.thawed.get(shard)?.p ?? null;
  }

  /**
   * An operation on a shard frozen here for a move (a group's iq or `read`, a key fetch of one of its accounts; from
   * a device here, or an `o` item of a node that had not heard of the move yet): `run` again once the move is over,
   * when it goes on to the new home (or is done here if the shard stayed). Answered `retry_after`, an iq reached
   * the application as an error (the SDK sends again only those answered `lost`); done here, it would change the
   * shard's rows after they were shipped. True when held.
   */
  hold(shard: number, run: () => void): boolean {
    const p = this.frozen.size === 0 ? null : this.until(shard);
    if (p === null) return false;
    void p.then(run);
    return true;
  }

  /**
   * Whether this node flipped the shard to its recorded home within the last lease TTL: that home acked every chunk
   * a moment ago, so an operation for it goes there even while this node's view has no live owner yet (a view read
   * from Redis before the flip, applied after it, names this node until the next tick).
   */
  movedAway(shard: number): boolean {
    const at = this.movedAt.get(shard);
    if (at === undefined) return false;
    if (performance.now() - at < this.n.leases.ttlMs) return true;
    this.movedAt.delete(shard);
    return false;
  }

  /**
   * Just after a flip, the two ends of a move can disagree for a few Redis round trips: an operation the old home
   * sent on finds the target not yet serving (its lease adopted at its next tick, kicked by the `moved` message), or
   * not yet knowing the move (it would send it back). Such an operation for `name` (a group id, an account) waits
   * here, polled, until this node's view changes (or TTL/3), then runs again, once: answered retry_after instead,
   * an iq reached the application as an error. True when it waits.
   */
  settling(conn: Conn, s: ClientStanza, name: string): boolean {
    const n = this.n;
    const shard = shardOf(name, n.leases.shardCount);
    const home = n.forward.remoteHome(name);
    const adopting = home === null && n.home(name).kind === "down" && n.leases.route(shard)?.node === n.nodeId;
    const bounced = home !== null && conn instanceof ProxyConn && conn.origin === home;
    if ((!adopting && !bounced) || this.waited.has(s)) return false;
    this.waited.add(s);
    const deadline = performance.now() + n.leases.ttlMs / 3;
    const settled = () => (adopting ? n.home(name).kind !== "down" : n.forward.remoteHome(name) !== home);
    const poll = () => (settled() || performance.now() >= deadline ? n.localParts().dispatch(conn, s) : void setTimeout(poll, 20));
    setTimeout(poll, 20);
    return true;
  }

  private freeze(s: number, target: string): void {
    let done = () => {};
    const p = new Promise<void>((r) => (done = r));
    this.frozen.add(s);
    this.thawed.set(s, { p, done });
    this.running.set(s, { target, since: Date.now() });
  }

  private thaw(s: number): void {
    this.frozen.delete(s);
    this.running.delete(s);
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
    for (const s of mine) this.freeze(s, target);
    try {
      const names = new Map<number, string[]>(mine.map((s) => [s, []]));
      for (const a of local.accounts.listAccounts()) names.get(shardOf(a, n.leases.shardCount))?.push(a);
      for (const s of mine) this.redirectShard(s, names.get(s)!);
      local.queue.flush();
      // The import key names this attempt: a move that failed before its flip and is tried again at the same epoch
      // replaces what the failed one left there instead of being taken for a link retry of it (and skipped).
      const from = `${n.nodeId}.${crypto.randomUUID().slice(0, 8)}`;
      const stores = this.stores();
      const limit = n.config.cluster.moveChunkBytes;
      const ledgers = mine.map(() => newLedger());
      const held = mine.map((s) => n.leases.epochOf(s) ?? 0); // the import key's epoch, kept for the leftovers (after the flip there is none here)
      const streams = mine.map((s, i) => chunkRows({ shard: s, from, epoch: held[i]!, key: names.get(s)![0] ?? null, replace: true }, shardParts(s, names.get(s)!, stores, ledgers[i]!), limit));
      const chunks = await this.ship(target, streams, performance.now() + shipMs);
      if (chunks === null) return refused("timeout", `node ${target} did not acknowledge a chunk of the rows of ${mine.length} shards within ${Math.round(shipMs)} ms; they stay here`);
      // Test hook (move-leftover.test.ts): between the snapshot and the flip, waits while the file it writes exists.
      const pause = process.env.SB_TEST_PAUSE_AT_FLIP;
      if (pause) for (writeFileSync(pause, "shipped"); existsSync(pause); ) await Bun.sleep(20);
      // The intent, durably before the flip: a restart that does not know the outcome waits for it (homes.ts).
      const boot = await n.link.call<string | null>("GET", ["sb:boot"]);
      if (!boot.ok || boot.value === null) return refused("flip_failed", `Redis did not answer before the flip; the ${mine.length} shards stay here`);
      n.homes.intend(mine, held, target, boot.value, mine.map((s, i) => ledgerNote(from, names.get(s)![0] ?? null, ledgers[i]!)));
      const epochs = await Promise.all(mine.map((s) => n.leases.handOver(s, target)));
      // Test hook (move-fork.test.ts): killed between the flip in Redis and its record here.
      if (process.env.SB_TEST_KILL_AT === "move-flipped") process.kill(process.pid, "SIGKILL");
      if (epochs.some((e) => e === null)) await n.syncHomes();
      mine.forEach((s, i) => n.settled(s, target, epochs[i]!));
      // Flipped: recorded above the epoch held (the intent stays until the leftovers went: homes.ts settle, done).
      const failed = mine.filter((s, i) => n.homes.epochOf(s) <= held[i]! || n.ownerOf(s) !== target);
      for (const s of mine) if (!failed.includes(s)) this.movedAt.set(s, performance.now());
      const key = (s: number) => names.get(s)![0] ?? null;
      await Promise.all(mine.map((s, i) => (failed.includes(s) ? null : this.finish(s, from, held[i]!, key(s), names.get(s)!, ledgers[i]!, target))));
      const items = ledgers.reduce((k, l) => k + l.shipped, 0);
      const accounts = mine.reduce((k, s) => k + names.get(s)!.length, 0);
      log.info("cluster shards moved", { from: n.nodeId, to: target, shards: mine.length - failed.length, failed: failed.length, accounts, items, chunks });
      if (failed.length) return refused("flip_failed", `the lease of ${failed.length} shards (${failed.slice(0, 8).join(",")}) could not be flipped to ${target} (Redis down, or the lease lapsed); once Redis tells whether they flipped (next lease tick) they are served there, or taken again here at a new epoch`);
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
   * A move of `shard` whose outcome a homes merge learned (homes.ts `away`): the flip ran, to `node`, but this
   * node's mover did not ship the leftovers (killed -9 past its flip, or the flip's answer was lost). They go now,
   * from the intent's note (the ledger as it was at the flip, the attempt's keys: what the target imported already
   * is skipped), then the rows here are dropped and the intent cleared. An intent with no note (a cluster.db from
   * before notes) ships nothing.
   */
  resume(shard: number, node: string, i: Intent): void {
    const n = this.n;
    if (i.note === null) return n.homes.done(shard, true);
    const { from, key, ledger } = readNote(i.note);
    const names = n.localParts().accounts.listAccounts().filter((a) => shardOf(a, n.leases.shardCount) === shard);
    log.info("cluster move: leftovers of a move past its flip", { shard, to: node, devices: ledger.devices.length });
    void this.finish(shard, from, i.epoch, key, names, ledger, node);
  }

  /** The leftovers, then the end of the intent (homes.ts `done`); not shipped, it stays for the next merge to try again. */
  private finish(shard: number, from: string, epoch: number, key: string | null, names: readonly string[], ledger: Ledger, target: string): Promise<void> {
    return this.leftovers(shard, from, epoch, key, names, ledger, target)
      .catch((e) => (log.warn("cluster move: leftovers failed; kept here, tried again at the next merge", { shard, to: target, error: String(e) }), false))
      .then((ok) => this.n.homes.done(shard, ok));
  }

  /**
   * After the flip: what was queued here for the moved shard's devices since their export (sends were refused,
   * but receipts, group copies and events of other accounts' activity were not) goes after it, with their push
   * jobs that changed since (chunks.ts leftoverParts), then every row of the shard's accounts here is deleted (a
   * later move back replaces, never merges). If the target does not ack the leftovers, nothing is deleted
   * (logged): the rows wait here with the intent, and the next homes merge tries again (`resume`). True when done.
   */
  private async leftovers(shard: number, from: string, epoch: number, key: string | null, names: readonly string[], ledger: Ledger, target: string): Promise<boolean> {
    const n = this.n;
    const local = n.localParts();
    local.queue.flush();
    const stream = chunkRows({ shard, from: `${from}~after`, epoch, key, replace: false }, leftoverParts(this.stores(), ledger), n.config.cluster.moveChunkBytes);
    const first = stream.next();
    if (!first.done && !emptyChunk(first.value.d)) {
      const ok = await this.ship(target, [prepend(first.value, stream)], performance.now() + SHIP_TIMEOUT_MS);
      if (ok === null) return log.warn("cluster move: the items queued during the move were not acknowledged; kept here", { shard, to: target }), false;
    }
    for (const d of ledger.devices) local.queue.dropDevice(d.account, d.device), local.push.jobs.close(d.account, d.device);
    local.accounts.dropRows(names);
    local.hooks.run("shard:rows", { op: "drop", accounts: names, inShard: (a) => shardOf(a, n.leases.shardCount) === shard });
    for (const a of names) local.directory.forget(a);
    return true;
  }

  private stores(): Stores {
    const local = this.n.localParts();
    return { accounts: local.accounts, queue: local.queue, hooks: local.hooks, jobs: local.push.jobs, shardCount: this.n.leases.shardCount };
  }

  /**
   * The shipments, chunk by chunk as they are read (chunks.ts), in waves of at most cluster.move_chunk_bytes
   * together (the link puts a turn's items in one frame, which HARD_MAX_FRAME, 16 MiB, bounds), at most one chunk
   * of a shard per wave, so that a shard's chunk i+1 leaves only after chunk i is durable there. Many small shards
   * share one wave (one group commit there). A wave that does not fill starts the next with the chunk that did not
   * fit, so at most one chunk waits outside a wave. Resolves with the number of chunks once the target acked the
   * last; null when a wave was not acked within SHIP_TIMEOUT_MS (or by `deadline`).
   */
  private async ship(target: string, streams: Iterator<Chunk>[], deadline: number): Promise<number | null> {
    const limit = this.n.config.cluster.moveChunkBytes;
    const live = [...streams];
    let waiting: { at: number; c: Chunk } | null = null;
    let total = 0;
    let sinceGc = 0;
    for (let at = 0; live.length > 0; ) {
      let bytes = 0;
      const wave: Chunk[] = [];
      for (let seen = 0; seen < live.length && live.length > 0; ) {
        at %= live.length;
        let c: Chunk;
        if (waiting !== null && waiting.at === at) (c = waiting.c), (waiting = null);
        else {
          const r = live[at]!.next();
          if (r.done) {
            live.splice(at, 1);
            continue;
          }
          c = r.value;
        }
        if (wave.length > 0 && bytes + c.bytes > limit) {
          waiting = { at, c };
          break;
        }
        wave.push(c);
        bytes += c.bytes;
        at++;
        seen++;
      }
      if (wave.length === 0) break;
      total += wave.length;
      const left = Math.min(SHIP_TIMEOUT_MS, deadline - performance.now());
      const acked = await Promise.race([Promise.all(wave.map((c) => this.n.forward.sendShard(target, c.d))).then(() => true), Bun.sleep(Math.max(0, left)).then(() => false)]);
      if (!acked) return null;
      // A full collection after every half chunk (at least GC_BYTES) shipped: what the waves read and encoded (bodies, the frame) is garbage
      // now, and without it the peak RSS of a move of 18 MiB queued rose as much as exporting everything up front
      // had (51-68 MiB over the node's 115 at 4 MiB chunks, against 31-34 MiB with it; CLUSTER.md). It costs 2-19 ms
      // (a 100 MB heap here).
      if ((sinceGc += bytes) >= Math.max(GC_BYTES, limit / 2)) (sinceGc = 0), Bun.gc(true);
    }
    return total;
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

/** `first`, then the rest of `rest`. */
function* prepend<T>(first: T, rest: Iterator<T>): Generator<T> {
  yield first;
  for (let r = rest.next(); !r.done; r = rest.next()) yield r.value;
}
