/**
 * Shard leases, node membership and the local view of who owns what.
 *
 * - `holds(s, e)` is the cheap check a write makes: a Map lookup and a
 *   comparison with a local deadline = send time of the last *successful*
 *   renewal + TTL − safety margin. Redis starts the TTL when it runs the
 *   script, after the send, so the local deadline always ends before the Redis
 *   key does (given clock rates that agree within the margin). A process that
 *   was paused past its deadline wakes up refusing its own writes, and it
 *   never renews what it no longer holds locally: renewals carry only leases
 *   still inside their deadline.
 * - Every tick (TTL/3) renews or re-asserts all held leases in one script,
 *   heartbeats, reads the whole view (one MGET of 4096 leases, and the node
 *   list), then acquires the free shards that rendezvous hashing gives this
 *   node and releases the ones it gives to another live node.
 * - The view is soft state: when Redis is down it is kept as last seen, so
 *   routing goes on; only acquisitions and releases wait. Leases cannot be
 *   renewed then, so they lapse one TTL after Redis went away (safety over
 *   availability: a node cut off from Redis cannot tell an outage from a
 *   partition in which others take its shards).
 * - Every (re)connect re-asserts the held leases at once (scripts.ts explains
 *   why a restarted, empty Redis grants no new lease for one grace period).
 * - Acquisitions and releases are also published, so that the other views
 *   follow within a round trip; pub/sub is at-most-once, the tick repairs.
 */
import { log } from "../log.ts";
import type { ShardFence } from "./fence.ts";
import type { RedisLink } from "./redis.ts";
import { ACQUIRE, ASSERT, HEARTBEAT, MOVE, NODES, RELEASE } from "./scripts.ts";
import { Assignment, DEFAULT_SHARDS } from "./shards.ts";

export interface LeaseOptions {
  nodeId: string;
  /** Where peers and redirected clients reach this node ("host:port"). */
  address: string;
  /** Key prefix, so several clusters can share one Redis. Default "sb:". */
  prefix?: string;
  shardCount?: number;
  /** Lease TTL in Redis. Default 10 000 ms (design A.1). */
  ttlMs?: number;
  /** Default TTL/3, so two renewals can fail before a lease lapses. */
  renewEveryMs?: number;
  /** Subtracted from the local deadline for clock-rate drift and timer lateness. Default TTL/5. */
  safetyMs?: number;
  /** Where taken epochs are recorded and others' epochs raise the floor. */
  fence?: ShardFence;
  /** Acquire and release by rendezvous hashing (default true); false: hold what is acquired by hand. */
  balance?: boolean;
  /**
   * Rendezvous over this fixed node list instead of the live nodes: a shard stays with its node while that
   * node is down (its data is in that node's data dir; only a move ships it: homeOf), so it waits rather than
   * moves to a node without its queues. The server runs this way (cluster.nodes).
   */
  placement?: readonly string[];
  /**
   * The shard's home when a move took it elsewhere (homes.ts): balancing then follows it, not the placement.
   * A lease the view shows as this node's, not held here (a move's flip), is adopted by ASSERT.
   */
  homeOf?: (shard: number) => string;
  /** Run each tick before balancing while Redis is up (the moved homes' merge). */
  beforeBalance?: () => Promise<void>;
  /** A peer's flip of a shard to another node, as published (so the views follow at once). */
  onMoved?: (shard: number, node: string, epoch: number) => void;
  onEvent?: (e: LeaseEvent) => void;
}

export type LeaseEvent =
  | { type: "acquired"; shards: [shard: number, epoch: number][] }
  | { type: "lost"; why: "expired" | "taken" | "released" | "fenced" | "moved"; shards: [shard: number, epoch: number][] }
  /** A renewal batch as sent, with the wall-clock time of the check that chose it (so tests can check what a resumed process decided). */
  | { type: "assert"; at: number; shards: [shard: number, epoch: number][] };

export interface ShardRoute {
  node: string;
  epoch: number;
  /** The owner's advertised address as last seen, or null if its heartbeat is unknown. */
  address: string | null;
  /** Local monotonic time (performance.now) when the entry was last confirmed; routing uses it however old (soft state). */
  seenAt: number;
  /** False when the last read found no lease: `node` is then only the last known owner. */
  live: boolean;
}

interface Held {
  epoch: number;
  deadline: number;
}

const BATCH = 512; // shards per script call: a 4096-shard script would hold Redis for several ms

export class LeaseManager {
  readonly nodeId: string;
  readonly shardCount: number;
  readonly ttlMs: number;
  private readonly p: string;
  private readonly renewEveryMs: number;
  private readonly safetyMs: number;
  private readonly held = new Map<number, Held>();
  private readonly view = new Map<number, ShardRoute>();
  /** The highest epoch seen per shard, kept when its lease goes away: the floor of the next acquisition. */
  private readonly lastEpoch: Int32Array;
  private readonly leaseKeys: string[];
  private liveNodes = new Map<string, string>();
  private timer: ReturnType<typeof setInterval> | null = null;
  private running: Promise<void> | null = null;
  private again = false;
  private lastViewAt = -Infinity;

  constructor(private readonly link: RedisLink, private readonly opts: LeaseOptions) {
    this.nodeId = opts.nodeId;
    if (opts.nodeId.includes("|")) throw new Error(`node id ${JSON.stringify(opts.nodeId)} must not contain "|" (the lease value is "node|epoch")`);
    this.p = opts.prefix ?? "sb:";
    this.shardCount = opts.shardCount ?? DEFAULT_SHARDS;
    this.ttlMs = opts.ttlMs ?? 10_000;
    this.renewEveryMs = opts.renewEveryMs ?? Math.floor(this.ttlMs / 3);
    this.safetyMs = opts.safetyMs ?? Math.floor(this.ttlMs / 5);
    if (this.renewEveryMs * 2 >= this.ttlMs - this.safetyMs) throw new Error("renewEveryMs must leave room for two renewals inside ttlMs − safetyMs");
    this.lastEpoch = new Int32Array(this.shardCount);
    this.leaseKeys = Array.from({ length: this.shardCount }, (_, s) => this.leaseKey(s));
  }

  start(): this {
    this.link.subscribe(`${this.p}events`, (m) => this.onMessage(m));
    this.link.onConnect(() => this.kick()); // re-assert at once after any reconnect
    this.timer = setInterval(() => this.kick(), this.renewEveryMs);
    this.kick();
    return this;
  }

  /** Stops ticking; with `release`, hands the leases back first so others need not wait a TTL. */
  async stop(release = false): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
    if (release) await this.release([...this.held.keys()]);
  }

  /** True while this node can prove it holds the shard (at that epoch, if given). */
  holds(shard: number, epoch?: number): boolean {
    const h = this.held.get(shard);
    return h !== undefined && performance.now() < h.deadline && (epoch === undefined || h.epoch === epoch);
  }

  /** The epoch this node holds the shard at, or null. */
  epochOf(shard: number): number | null {
    return this.holds(shard) ? this.held.get(shard)!.epoch : null;
  }

  /** Held shards with their epochs (only those still inside their deadline). */
  heldShards(): Map<number, number> {
    const out = new Map<number, number>();
    for (const [s, h] of this.held) if (this.holds(s)) out.set(s, h.epoch);
    return out;
  }

  /** Where the shard lives, as far as this node knows (kept while Redis is down). */
  route(shard: number): ShardRoute | null {
    const h = this.held.get(shard);
    if (h && this.holds(shard)) return { node: this.nodeId, epoch: h.epoch, address: this.opts.address, seenAt: performance.now(), live: true };
    return this.view.get(shard) ?? null;
  }

  /** Live nodes (id → address) as last seen. */
  nodes(): Map<string, string> {
    return new Map(this.liveNodes);
  }

  /** Milliseconds since the view was last read from Redis. */
  viewAge(): number {
    return performance.now() - this.lastViewAt;
  }

  /** Acquires specific shards now (with `balance: false`, the only way shards are taken). */
  async acquire(shards: number[]): Promise<number[]> {
    const taken: [number, number][] = [];
    for (let i = 0; i < shards.length; i += BATCH) taken.push(...(await this.acquireBatch(shards.slice(i, i + BATCH))));
    return taken.map(([s]) => s);
  }

  /** Gives shards back: refused locally at once, then deleted in Redis if still ours. */
  async release(shards: number[]): Promise<void> {
    const gone: [number, number][] = [];
    for (const s of shards) {
      const h = this.held.get(s);
      if (!h) continue;
      this.held.delete(s);
      gone.push([s, h.epoch]);
    }
    if (gone.length === 0) return;
    for (const [s] of gone) {
      const v = this.view.get(s);
      if (v) v.live = false;
    }
    this.emit({ type: "lost", why: "released", shards: gone });
    for (let i = 0; i < gone.length; i += BATCH) {
      const part = gone.slice(i, i + BATCH);
      await this.link.script(RELEASE, part.map(([s]) => this.leaseKey(s)), part.map(([, e]) => `${this.nodeId}|${e}`));
    }
    await this.publish({ t: "rel", node: this.nodeId, shards: gone });
  }

  /** Runs one tick now, or right after the running one (ticks never overlap). */
  kick(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      try {
        do {
          this.again = false;
          await this.tick();
        } while (this.again && this.timer);
      } catch (err) {
        log.warn("cluster lease tick failed", { node: this.nodeId, err });
      } finally {
        this.running = null;
      }
    })();
    return this.running;
  }

  private async tick(): Promise<void> {
    this.expireLocal();
    if (!this.link.up) return;
    await this.renew();
    const hb = await this.link.script(HEARTBEAT, [`${this.p}nodes`, `${this.p}node:${this.nodeId}`], [this.nodeId, this.opts.address, this.ttlMs]);
    const wasLive = this.liveNodes.has(this.nodeId);
    if (!(await this.refreshView())) return;
    if (hb.ok && !wasLive && this.liveNodes.has(this.nodeId)) await this.publish({ t: "join", node: this.nodeId });
    if (this.opts.beforeBalance) await this.opts.beforeBalance();
    if (this.opts.balance !== false && this.liveNodes.has(this.nodeId)) await this.balance();
  }

  /** Drops leases whose deadline passed: from here on they are only ever re-acquired, at a new epoch. */
  private expireLocal(): void {
    const now = performance.now();
    const lapsed: [number, number][] = [];
    for (const [s, h] of this.held) {
      if (now >= h.deadline) {
        this.held.delete(s);
        lapsed.push([s, h.epoch]);
      }
    }
    if (lapsed.length) this.emit({ type: "lost", why: "expired", shards: lapsed });
  }

  private async renew(): Promise<void> {
    const mine = [...this.held];
    for (let i = 0; i < mine.length; i += BATCH) {
      // Filtered at send time, batch by batch: an earlier batch may have waited out its deadline meanwhile.
      // A pause between this check and the send is harmless: the new deadline counts from `sentAt`, taken
      // before the pause, and Redis refuses the renewal if the key or a later epoch belongs to someone else.
      const checkedAt = Date.now();
      const sentAt = performance.now();
      const part = mine.slice(i, i + BATCH).filter(([s, h]) => this.held.get(s) === h && this.holds(s));
      if (part.length === 0) continue;
      this.emit({ type: "assert", at: checkedAt, shards: part.map(([s, h]) => [s, h.epoch]) });
      const keys = [`${this.p}boot`, ...part.flatMap(([s]) => [this.leaseKey(s), `${this.p}epoch:${s}`])];
      const r = await this.link.script<number[]>(ASSERT, keys, [this.ttlMs, ...part.map(([, h]) => `${this.nodeId}|${h.epoch}`)]);
      if (!r.ok) continue; // unproven: the deadline stays where it was and runs out unless a later renewal succeeds
      const taken: [number, number][] = [];
      part.forEach(([s, h], j) => {
        if (this.held.get(s) !== h) return; // released or lapsed meanwhile: never resurrected
        if (r.value[j] === 1) h.deadline = Math.max(h.deadline, sentAt + this.ttlMs - this.safetyMs);
        else {
          this.held.delete(s);
          taken.push([s, h.epoch]);
        }
      });
      if (taken.length) this.emit({ type: "lost", why: "taken", shards: taken });
    }
  }

  private async refreshView(): Promise<boolean> {
    const at = performance.now();
    const [leases, nodes] = await Promise.all([
      this.link.call<(string | null)[]>("MGET", this.leaseKeys),
      this.link.script<string[]>(NODES, [`${this.p}nodes`], [this.p]),
    ]);
    if (!leases.ok || !nodes.ok) return false;
    this.liveNodes = new Map();
    for (let i = 0; i < nodes.value.length; i += 2) this.liveNodes.set(nodes.value[i]!, nodes.value[i + 1]!);
    const seen: { shard: number; epoch: number; node: string }[] = [];
    for (let s = 0; s < this.shardCount; s++) {
      const v = leases.value[s];
      if (v === null || v === undefined) {
        const last = this.view.get(s);
        if (last) last.live = false; // kept as the last known owner, for routing
        continue;
      }
      const bar = v.lastIndexOf("|");
      const node = v.slice(0, bar);
      const epoch = Number(v.slice(bar + 1));
      this.view.set(s, { node, epoch, address: this.liveNodes.get(node) ?? null, seenAt: at, live: true });
      if (epoch > this.lastEpoch[s]!) {
        this.lastEpoch[s] = epoch;
        if (node !== this.nodeId) seen.push({ shard: s, epoch, node });
      }
    }
    if (seen.length) this.opts.fence?.observe(seen);
    this.lastViewAt = at;
    return true;
  }

  private async balance(): Promise<void> {
    const plan = this.opts.homeOf ? null : new Assignment(this.opts.placement ?? this.liveNodes.keys(), this.shardCount);
    const want: number[] = [];
    const give: number[] = [];
    const adopt: number[] = [];
    for (let s = 0; s < this.shardCount; s++) {
      const owner = plan ? plan.ownerOf(s) : this.opts.homeOf!(s);
      if (owner === this.nodeId) {
        const v = this.view.get(s);
        if (this.held.has(s)) continue;
        if (!v?.live) want.push(s);
        else if (v.node === this.nodeId) adopt.push(s);
      } else if (owner !== null && this.held.has(s)) give.push(s);
    }
    if (give.length) await this.release(give);
    if (adopt.length) await this.adopt(adopt);
    if (want.length) await this.acquire(want);
  }

  /**
   * Leases Redis names this node for that it does not hold: a move's flip (the old owner set the lease to this
   * node at a new epoch), or this node's own lease from before a restart or a lapse. The fence decides: only an
   * epoch above every one recorded with the data is claimed (a flip's), and then asserted; one the fence has seen
   * (this node held it before: never resurrected) is released, so the shard is acquired anew at a later epoch.
   */
  private async adopt(shards: number[]): Promise<void> {
    const fence = this.opts.fence;
    const stale: [number, number][] = [];
    const claimed: [number, number][] = [];
    for (const s of shards) {
      const e = this.view.get(s)!.epoch;
      if (fence && !fence.claim(s, e, this.nodeId).ok) stale.push([s, e]);
      else claimed.push([s, e]);
    }
    if (stale.length) await this.link.script(RELEASE, stale.map(([s]) => this.leaseKey(s)), stale.map(([, e]) => `${this.nodeId}|${e}`));
    for (let i = 0; i < claimed.length; i += BATCH) {
      const part = claimed.slice(i, i + BATCH);
      const sentAt = performance.now();
      const keys = [`${this.p}boot`, ...part.flatMap(([s]) => [this.leaseKey(s), `${this.p}epoch:${s}`])];
      const r = await this.link.script<number[]>(ASSERT, keys, [this.ttlMs, ...part.map(([, e]) => `${this.nodeId}|${e}`)]);
      if (!r.ok) continue;
      const taken: [number, number][] = [];
      part.forEach(([s, e], j) => {
        if (r.value[j] !== 1 || this.held.has(s)) return;
        this.held.set(s, { epoch: e, deadline: sentAt + this.ttlMs - this.safetyMs });
        this.lastEpoch[s] = Math.max(this.lastEpoch[s]!, e);
        taken.push([s, e]);
      });
      if (taken.length) {
        this.emit({ type: "acquired", shards: taken });
        await this.publish({ t: "acq", node: this.nodeId, shards: taken });
      }
    }
  }

  /**
   * The flip of a move: stops proving the shard here at once (before Redis is asked, so no write here can
   * follow the flip), then sets its lease to `target` at the next epoch and its home in `homes` (one script).
   * The epoch, or null when the lease was not this node's any more or Redis did not answer: Redis decides, so
   * the caller reads `homes` again to learn which (the shard is not held here either way).
   */
  async handOver(shard: number, target: string): Promise<number | null> {
    const h = this.held.get(shard);
    if (h === undefined || !this.holds(shard)) return null;
    this.held.delete(shard);
    this.emit({ type: "lost", why: "moved", shards: [[shard, h.epoch]] });
    const r = await this.link.script<number[]>(MOVE, [this.leaseKey(shard), `${this.p}epoch:${shard}`, `${this.p}homes`], [`${this.nodeId}|${h.epoch}`, target, this.ttlMs, shard]);
    if (!r.ok || r.value[0] !== 1) return null;
    const epoch = Number(r.value[1]);
    this.lastEpoch[shard] = Math.max(this.lastEpoch[shard]!, epoch);
    this.view.set(shard, { node: target, epoch, address: this.liveNodes.get(target) ?? null, seenAt: performance.now(), live: true });
    this.opts.fence?.observe([{ shard, epoch, node: target }]);
    await this.publish({ t: "moved", node: this.nodeId, to: target, shards: [[shard, epoch]] });
    return epoch;
  }

  private async acquireBatch(shards: number[]): Promise<[number, number][]> {
    const fence = this.opts.fence;
    const sentAt = performance.now();
    const keys = [`${this.p}boot`, ...shards.flatMap((s) => [this.leaseKey(s), `${this.p}epoch:${s}`])];
    const floors = shards.map((s) => Math.max(this.lastEpoch[s]!, fence?.epoch(s) ?? 0));
    const r = await this.link.script<(number | string)[][]>(ACQUIRE, keys, [this.nodeId, this.ttlMs, this.ttlMs, ...floors]);
    if (!r.ok) return [];
    const taken: [number, number][] = [];
    const fenced: [number, number][] = [];
    shards.forEach((s, j) => {
      const res = r.value[j]!;
      if (res[0] !== 1) return;
      const epoch = Number(res[1]);
      this.lastEpoch[s] = Math.max(this.lastEpoch[s]!, epoch);
      // The epoch goes with the shard's data before the first write can use it.
      if (fence && !fence.claim(s, epoch, this.nodeId).ok) fenced.push([s, epoch]);
      else {
        const deadline = sentAt + this.ttlMs - this.safetyMs;
        this.held.set(s, { epoch, deadline });
        this.view.set(s, { node: this.nodeId, epoch, address: this.opts.address, seenAt: sentAt, live: true });
        taken.push([s, epoch]);
      }
    });
    if (fenced.length) {
      // Redis handed out an epoch the data has already seen (it lost its counters): give it back; the next try starts above the fence.
      this.emit({ type: "lost", why: "fenced", shards: fenced });
      await this.link.script(RELEASE, fenced.map(([s]) => this.leaseKey(s)), fenced.map(([, e]) => `${this.nodeId}|${e}`));
    }
    if (taken.length) {
      this.emit({ type: "acquired", shards: taken });
      await this.publish({ t: "acq", node: this.nodeId, shards: taken });
    }
    return taken;
  }

  private onMessage(m: string): void {
    let msg: { t: string; node: string; to?: string; shards?: [number, number][] };
    try {
      msg = JSON.parse(m);
    } catch {
      return;
    }
    if (msg.node === this.nodeId) return;
    const now = performance.now();
    for (const [s, e] of msg.shards ?? []) {
      if (msg.t === "acq") {
        this.view.set(s, { node: msg.node, epoch: e, address: this.liveNodes.get(msg.node) ?? null, seenAt: now, live: true });
        if (e > this.lastEpoch[s]!) this.lastEpoch[s] = e;
      }
      else if (msg.t === "rel" && this.view.get(s)?.epoch === e) this.view.get(s)!.live = false;
      else if (msg.t === "moved" && msg.to !== undefined && e > this.lastEpoch[s]!) {
        this.lastEpoch[s] = e;
        this.view.set(s, { node: msg.to, epoch: e, address: this.liveNodes.get(msg.to) ?? null, seenAt: now, live: true });
        this.opts.onMoved?.(s, msg.to, e);
      }
    }
    // A release or a join may change what this node should take or give: act now rather than at the next tick.
    if (msg.t !== "acq") void this.kick();
  }

  private async publish(msg: object): Promise<void> {
    await this.link.call("PUBLISH", [`${this.p}events`, JSON.stringify(msg)]);
  }

  private leaseKey(s: number): string {
    return `${this.p}lease:${s}`;
  }

  private emit(e: LeaseEvent): void {
    this.opts.onEvent?.(e);
  }
}
