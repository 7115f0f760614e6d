/**
 * A server's cluster membership (cluster.redis set): the Redis link, the
 * shard leases over the fixed node list (cluster.nodes), the epoch fence in
 * the data dir, and the two gates core consults — at login (redirect to the
 * home node, or retry_after while the home has no live owner) and at each
 * send (refused with retry_after while this node cannot prove it holds the
 * shard it would write). Nothing here runs, or costs anything, when
 * cluster.redis is empty: the server then has no ClusterNode at all.
 *
 * Placement is fixed, not by live nodes: a shard's queues, sequence numbers
 * and dedup records are in its node's data dir and nothing moves them yet
 * (docs/CLUSTER.md, "What remains"), so while that node is down its shard
 * waits for it instead of moving to a node that has none of its data.
 */
import { join } from "node:path";
import type { Config } from "../config.ts";
import { log } from "../log.ts";
import type { Counter, Metrics } from "../metrics.ts";
import { isInternalAccount } from "../session.ts";
import { CloseReason, ErrorCode } from "../../protocol/errors.ts";
import type { Conn } from "../../transport/connection.ts";
import { ShardFence } from "./fence.ts";
import { LeaseManager, type LeaseEvent } from "./leases.ts";
import { RedisLink } from "./redis.ts";
import { parseNodes, shardOf } from "./shards.ts";

/** Seconds a client may remember a redirect's home: placement changes only with cluster.nodes, so long. */
export const REDIRECT_TTL_S = 3600;

export type Home =
  | { kind: "local"; shard: number; epoch: number }
  | { kind: "remote"; shard: number; node: string; host: string; port: number }
  /** No live owner (its node is down, or this node has not (re)taken its own shard yet). */
  | { kind: "down"; shard: number; node: string | null; retryMs: number };

export class ClusterNode {
  readonly link: RedisLink;
  readonly fence: ShardFence;
  readonly leases: LeaseManager;
  readonly nodeId: string;
  readonly nodes: string[];
  private m: { redirects: Counter; retryLogin: Counter; retrySend: Counter; events: Map<string, Counter> };
  private started = false;

  constructor(private readonly config: Config, advertise: string, metrics: Metrics) {
    const c = config.cluster;
    this.nodeId = c.nodeId;
    this.nodes = parseNodes(c.nodes);
    this.link = new RedisLink(c.redis);
    // With the shard data: a node's data dir today; it goes where a moved shard goes.
    this.fence = new ShardFence(join(config.dataDir, "cluster.db"), config.queue.durability);
    const ev = (why: string) => metrics.counter("switchboard_cluster_lease_events_total", "Shard lease changes on this node, by kind (acquired, or lost: expired, taken, released, fenced).", { event: why });
    this.m = {
      redirects: metrics.counter("switchboard_cluster_redirects_total", "Logins answered with a redirect to the account's home node."),
      retryLogin: metrics.counter("switchboard_cluster_retry_after_total", "Logins and sends refused with retry_after: the home shard had no live owner.", { on: "login" }),
      retrySend: metrics.counter("switchboard_cluster_retry_after_total", "Logins and sends refused with retry_after: the home shard had no live owner.", { on: "send" }),
      events: new Map(["acquired", "expired", "taken", "released", "fenced"].map((w) => [w, ev(w)])),
    };
    this.leases = new LeaseManager(this.link, {
      nodeId: c.nodeId,
      address: advertise,
      ttlMs: c.leaseTtl,
      fence: this.fence,
      placement: this.nodes,
      onEvent: (e) => this.onLease(e),
    });
    metrics.gauge("switchboard_cluster_shards_held", "Home shards this node can prove it holds now.", () => this.leases.heldShards().size);
    metrics.gauge("switchboard_cluster_redis_up", "1 while the Redis command connection is up.", () => (this.link.up ? 1 : 0));
    metrics.gauge("switchboard_cluster_view_age_seconds", "Seconds since the shard view was last read from Redis.", () => {
      const a = this.leases.viewAge();
      return Number.isFinite(a) ? a / 1000 : -1;
    });
  }

  /** Starts connecting and ticking; never waits for Redis (which may be down when a node starts). */
  start(): void {
    this.link.start();
    this.leases.start();
    this.started = true;
  }

  /** Hands the leases back (others need not wait a TTL to see this node gone), then closes Redis and the fence. */
  async stop(): Promise<void> {
    if (this.started) await this.leases.stop(true);
    this.link.close();
    this.fence.close();
  }

  home(account: string): Home {
    const shard = shardOf(account, this.leases.shardCount);
    const epoch = this.leases.epochOf(shard);
    if (epoch !== null) return { kind: "local", shard, epoch };
    const r = this.leases.route(shard);
    if (r && r.live && r.node !== this.nodeId && r.address) {
      const colon = r.address.lastIndexOf(":");
      return { kind: "remote", shard, node: r.node, host: r.address.slice(0, colon), port: Number(r.address.slice(colon + 1)) };
    }
    // Jittered, one to two renewal intervals: about when a restarted owner (or this node) has taken it again.
    const base = Math.floor(this.leases.ttlMs / 3);
    return { kind: "down", shard, node: r?.node ?? null, retryMs: base + Math.floor(Math.random() * base) };
  }

  /**
   * Before any work on a login (no signature check, no store read: where an
   * account lives is no secret, anyone can hash its name). Returns true when
   * it answered (redirect, or retry_after) and closed the connection.
   */
  login(conn: Conn, account: string): boolean {
    if (isInternalAccount(account)) return false; // the canary's accounts are every node's own
    const h = this.home(account);
    if (h.kind === "local") return false;
    if (h.kind === "remote") {
      this.m.redirects.inc();
      conn.send({ t: "redirect", host: h.host, port: h.port, ttl: REDIRECT_TTL_S });
      conn.close(CloseReason.REDIRECT, `account ${account} lives on node ${h.node}`);
      return true;
    }
    this.m.retryLogin.inc();
    conn.sendError(ErrorCode.RETRY_AFTER, `the home shard ${h.shard} of ${account} has no live owner (node ${h.node ?? "unknown"}); try again in ${h.retryMs} ms`, undefined, { retry_ms: h.retryMs });
    conn.close(CloseReason.TRY_AGAIN, "home shard unavailable", h.retryMs);
    return true;
  }

  /**
   * Before a send reaches a module: the sender's shard (its sequence numbers
   * and dedup records) and a 1:1 recipient's shard (its queues) must be
   * provably held by their owner. Returns true when it refused the send with
   * retry_after (nothing accepted; the session stays, the client resends the
   * same id later). A recipient homed on another live node passes: the
   * module answers as it would on one node (node links are not built yet).
   */
  send(conn: Conn, to: string | null, id: string): boolean {
    const own = this.home(conn.account);
    const h = own.kind === "local" && to !== null ? this.home(to) : own;
    if (h.kind !== "down") return false;
    this.m.retrySend.inc();
    conn.sendError(ErrorCode.RETRY_AFTER, `home shard ${h.shard} has no live owner (node ${h.node ?? "unknown"}); send again in ${h.retryMs} ms`, id, { retry_ms: h.retryMs });
    return true;
  }

  /**
   * The commit guard (DeliveryQueue.setCommitGuard): a batch is written only while this node can prove it holds
   * the shard of every account in it, so `sent` means durable at a provable owner, and a batch accepted just
   * before a pause is not committed by the paused process until it holds the shard again (at a new epoch).
   * Cost per run of rows of one account: a hash of its name and holds() (40–150 ns, CLUSTER.md "Costs").
   */
  writable(account: string): boolean {
    return isInternalAccount(account) || this.leases.holds(shardOf(account, this.leases.shardCount));
  }

  /** For GET /cluster and `switchboard cluster status`. */
  status(): object {
    const now = performance.now();
    const perNode: Record<string, { shards: number; live: number; oldestSeenMs: number; address: string | null }> = {};
    let unowned = 0;
    for (let s = 0; s < this.leases.shardCount; s++) {
      const r = this.leases.route(s);
      if (!r || !r.live) unowned++;
      if (!r) continue;
      const n = (perNode[r.node] ??= { shards: 0, live: 0, oldestSeenMs: 0, address: r.address });
      n.shards++;
      if (r.live) n.live++;
      n.oldestSeenMs = Math.max(n.oldestSeenMs, Math.round(now - r.seenAt));
    }
    const live = this.leases.nodes();
    const held = this.leases.heldShards();
    const epochs = [...held.values()];
    return {
      node: this.nodeId,
      redis: { url: this.config.cluster.redis, up: this.link.up },
      viewAgeMs: Number.isFinite(this.leases.viewAge()) ? Math.round(this.leases.viewAge()) : null,
      leaseTtlMs: this.leases.ttlMs,
      held: held.size,
      heldEpochs: epochs.length ? { min: Math.min(...epochs), max: Math.max(...epochs) } : null,
      unowned,
      nodes: this.nodes.map((id) => {
        const n = perNode[id] ?? { shards: 0, live: 0, oldestSeenMs: 0 };
        return { id, up: live.has(id), address: live.get(id) ?? null, shards: n.shards, liveShards: n.live, oldestLeaseSeenMs: n.oldestSeenMs };
      }),
    };
  }

  private onLease(e: LeaseEvent): void {
    if (e.type === "assert") return;
    const kind = e.type === "acquired" ? "acquired" : e.why;
    this.m.events.get(kind)?.inc(e.shards.length);
    log.info(e.type === "acquired" ? "cluster shards acquired" : "cluster shards lost", { node: this.nodeId, why: kind, count: e.shards.length });
  }
}
