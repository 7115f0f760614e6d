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
 * and dedup records are in its node's data dir, and only a move (move.ts,
 * which ships them first; homes.ts then overrides the placement) takes them
 * elsewhere, so while that node is down its shard waits for it instead of
 * moving to a node that has none of its data.
 */
import { join } from "node:path";
import type { Config } from "../config.ts";
import { log } from "../log.ts";
import type { Counter, Metrics } from "../metrics.ts";
import { isInternalAccount } from "../session.ts";
import { CloseReason, ErrorCode } from "../../protocol/errors.ts";
import { ACCOUNT_NAME_RE, GROUP_ID_RE, LIMITS, isGroupId, type ClientStanza } from "../../protocol/stanzas.ts";
import type { Conn } from "../../transport/connection.ts";
import { ShardFence } from "./fence.ts";
import { ShardHomes } from "./homes.ts";
import { joinList, stopped } from "./members.ts";
import { importShard } from "./rows.ts";
import { ShardMover } from "./move.ts";
import type { LostWhy } from "./ops.ts";
import type { AccountStore } from "../../store/accounts.ts";
import { Forwarder, type Local } from "./forward.ts";
import { LeaseManager, type LeaseEvent } from "./leases.ts";
import { RedisLink } from "./redis.ts";
import { WindowRate } from "./rate.ts";
import { splitAddress } from "./address.ts";
import { Assignment, crossCanaryAccount, parseNodes, shardOf } from "./shards.ts";
import { SeqAllocator } from "../seq.ts";
import { resOf, type SendPass } from "../dispatch.ts";
import type { PeerView } from "../context.ts";
import type { Hooks } from "../hooks.ts";

/** iq ops of the presence module whose `a.u` names accounts that must exist (asked of their home first). */
const PRESENCE_OPS = new Set(["contacts.add", "block.add", "presence", "presence.sub"]);

/** iq ops answered by the home of the account in `a.u`, the one node with its key bundles and prekeys: forwarded there like a group op (`o`). */
const HOME_OPS = new Set(["keys.fetch"]);
/** retry_after while the home of a remote recipient is asked for its devices: one link round trip, usually. */
const LOOKUP_RETRY_MS = 50;
/** retry_after while a shard is being moved (one to two of these): about how long a move of a small shard takes. */
const MOVE_RETRY_MS = 250;

/** Seconds a client may remember a redirect's home: placement changes only with cluster.nodes, so long. */
export const REDIRECT_TTL_S = 3600;
/** The window of the redirect rate in status (seconds): long enough that a scrape every 15-30 s sees every redirect. */
const REDIRECT_WINDOW_S = 60;

/** What modules see of the cluster (ctx.peers), read at each call: modules start before listen() makes the node. */
export function peerView(node: () => ClusterNode | null): PeerView {
  return {
    home: (account) => node()?.forward.remoteHome(account) ?? null,
    send: (n, body) => node()?.forward.presence(n, body),
    groupsElsewhere: (account) => node()?.forward.lists.elsewhere(account) ?? 0,
    nodes: () => node()?.forward.others() ?? [],
  };
}

export type Home =
  | { kind: "local"; shard: number; epoch: number }
  | { kind: "remote"; shard: number; node: string; host: string; port: number; ws: string | null }
  /** No live owner (its node is down, or this node has not (re)taken its own shard yet). */
  | { kind: "down"; shard: number; node: string | null; retryMs: number };

export class ClusterNode {
  readonly link: RedisLink;
  readonly fence: ShardFence;
  readonly leases: LeaseManager;
  readonly nodeId: string;
  readonly nodes: string[];
  /** Messages, receipts and directory look-ups to and from the other nodes (forward.ts). */
  readonly forward: Forwarder;
  /** The home node of every shard (placement over cluster.nodes, or a move's target: homes.ts), and whether it is this one. */
  private readonly owner: string[];
  private readonly mine: Uint8Array;
  readonly homes: ShardHomes;
  /** `cluster move`, the drain, `cluster rebalance` (move.ts). */
  readonly mover = new ShardMover(this);
  /** Counts an iq or `read` answered retry_after here after waiting cluster.iq_timeout for another node (Dispatch). */ waitTimedOut: (what: "iq" | "read") => void = () => {};
  private accounts: AccountStore | null = null;
  private local: Local | null = null;
  private m: { redirects: Counter; retryLogin: Counter; retrySend: Counter; linkFull: Counter; heldOps: Counter; events: Map<string, Counter> };
  /** Redirects per second over the last REDIRECT_WINDOW_S seconds, for status. */
  private readonly redirects = new WindowRate(REDIRECT_WINDOW_S);
  /** The internal accounts homed on a given node (each node's cross-node canary device), by account. */
  private readonly internalHome: Map<string, string>;
  private started = false;
  private seqs: SeqAllocator | null = null;
  private hooks: Hooks | null = null;

  constructor(readonly config: Config, advertise: string, metrics: Metrics, advertiseWs: string | null = null) {
    const c = config.cluster;
    this.nodeId = c.nodeId;
    this.nodes = parseNodes(c.nodes);
    this.link = new RedisLink(c.redis);
    const plan = new Assignment(this.nodes);
    this.owner = Array.from({ length: plan.shardCount }, (_, s) => plan.ownerOf(s)!);
    this.mine = Uint8Array.from(this.owner, (n) => (n === c.nodeId ? 1 : 0));
    this.internalHome = new Map(this.nodes.map((n) => [crossCanaryAccount(n), n]));
    this.forward = new Forwarder(
      c.nodeId,
      (account) => (isInternalAccount(account) ? (this.internalHome.get(account) ?? c.nodeId) : this.owner[shardOf(account, this.owner.length)]!),
      (node) => {
        const a = this.leases.nodes().get(node);
        const p = a ? splitAddress(a) : null;
        return p && p.link !== null ? { host: p.host, port: p.link } : null;
      },
      this.nodes,
      (account) => this.writable(account),
      config.queue, join(config.dataDir, "outbox.db"), // the per-peer outbox (forward.ts), at queue.durability
      { held: { items: c.linkHeldItems, bytes: c.linkHeldBytes }, iqTimeout: c.iqTimeout },
    );
    // Bound on tcp.host (it may be the wildcard), published with the advertised host.
    const linkPort = this.forward.listen(config.tcp.host || "127.0.0.1", c.linkPort);
    // With the shard data: a node's data dir today; it goes where a moved shard goes.
    this.fence = new ShardFence(join(config.dataDir, "cluster.db"), config.queue.durability);
    this.homes = new ShardHomes(this.fence, [...this.owner], c.nodeId);
    for (let s = 0; s < this.owner.length; s++) this.applyHome(s);
    const ev = (why: string) => metrics.counter("switchboard_cluster_lease_events_total", "Shard lease changes on this node, by kind (acquired, or lost: expired, taken, released, fenced).", { event: why });
    this.m = {
      redirects: metrics.counter("switchboard_cluster_redirects_total", "Logins answered with a redirect to the account's home node."),
      retryLogin: metrics.counter("switchboard_cluster_retry_after_total", "Logins and sends refused with retry_after: the home shard had no live owner.", { on: "login" }),
      retrySend: metrics.counter("switchboard_cluster_retry_after_total", "Logins and sends refused with retry_after: the home shard had no live owner.", { on: "send" }),
      heldOps: metrics.counter("switchboard_cluster_ops_held_total", "Group iqs and reads, and key fetches, that waited here for a move of their shard away from this node (ShardMover.hold), then ran again."),
      linkFull: metrics.counter("switchboard_cluster_link_full_refusals_total", "Sends (msg, gmsg, forwarded requests) refused with retry_after because the link to their node held cluster.link_held_items or _bytes (that node is down or hung)."),
      events: new Map(["acquired", "expired", "taken", "released", "fenced"].map((w) => [w, ev(w)])),
    };
    this.leases = new LeaseManager(this.link, {
      nodeId: c.nodeId,
      address: advertiseWs ? `${advertise}/${linkPort} ${advertiseWs}` : `${advertise}/${linkPort}`,
      ttlMs: c.leaseTtl,
      fence: this.fence,
      placement: this.nodes,
      homeOf: (s) => this.owner[s]!,
      beforeBalance: async () => {
        for (const s of await this.homes.sync(this.link)) this.applyHome(s);
      },
      onMoved: (s, node, epoch) => {
        if (this.homes.record(s, node, epoch)) this.applyHome(s);
      },
      onEvent: (e) => this.onLease(e),
    });
    metrics.gauge("switchboard_cluster_shards_held", "Home shards this node can prove it holds now.", () => this.leases.heldShards().size);
    metrics.gauge("switchboard_cluster_redis_up", "1 while the Redis command connection is up.", () => (this.link.up ? 1 : 0));
    for (const peer of this.nodes) {
      if (peer === this.nodeId) continue;
      // Read at scrape time from the link sender (none before first use: 0).
      metrics.gauge("switchboard_cluster_link_lag_batches", "Batches sent to a peer node over its link and not acknowledged yet (durable there) — its lag.", () => this.forward.perPeer((s) => s.lag)[peer] ?? 0, { peer });
      metrics.gauge("switchboard_cluster_link_held_items", "Items not kept on disk (1:1 copies, look-ups, answers, presence) held in memory for a peer node, unacknowledged: at most cluster.link_held_items.", () => this.forward.perPeer((s) => s.held.loose)[peer] ?? 0, { peer });
      // Counts since the start (retries not counted): items / batches is how well the link batches (one per iteration).
      for (const [k, what] of [["batches", "Link batches (frames)"], ["items", "Link items"], ["kept", "Link items kept in the outbox until acked"]] as const)
        metrics.gauge(`switchboard_cluster_link_sent_${k}`, `${what} sent to a peer node since the start, retries not counted.`, () => this.forward.sentTo(peer)[k], { peer });
    }
    const lost = (why: LostWhy) => metrics.counter("switchboard_cluster_iqs_lost_total", "Forwarded iqs (group.*, keys.fetch) answered here with retry_after {lost}: their node's link dropped after it acked them (link_dropped), or no answer within cluster.iq_timeout (timeout); and forwarded gmsgs with no sent/err within it (gmsg_timeout).", { why });
    const lostBy = { link_dropped: lost("link_dropped"), timeout: lost("timeout"), gmsg_timeout: lost("gmsg_timeout") };
    this.forward.ops.onLost = (why) => lostBy[why].inc();
    this.waitTimedOut = (what) => metrics.counter("switchboard_cluster_waits_timed_out_total", "An iq or read marker that waited here for another node's answer (device lists) past cluster.iq_timeout, answered retry_after (nothing done).", { what }).inc();
    metrics.gauge("switchboard_cluster_proxies", "ProxyConns held here for devices of other nodes (dropped when their connection closes there).", () => this.forward.proxies.size);
    metrics.gauge("switchboard_cluster_view_age_seconds", "Seconds since the shard view was last read from Redis.", () => {
      const a = this.leases.viewAge();
      return Number.isFinite(a) ? a / 1000 : -1;
    });
  }

  /** The server's stores and services, for what peers forward here. */
  attach(local: Local): void {
    this.forward.attach(local);
    [this.local, this.accounts] = [local, local.accounts];
    this.homes.away = (s, node, i) => this.mover.resume(s, node, i); // a move's leftovers once a merge learns its flip (move.ts)
    this.forward.onShard = (d) => importShard(d, local);
    local.push.owns = (a) => this.home(a).kind === "local"; // a moving shard's jobs wait for the flip (service.ts)
    this.forward.held = (a) => (this.mover.frozen.size === 0 ? null : this.mover.until(shardOf(a, this.owner.length)));
    [this.seqs, this.hooks] = [local.seqs, local.hooks];
    // A 1:1 conversation is numbered on one node, the home of its lower name; elsewhere one number per message is asked of it.
    local.seqs.elsewhere = (conv) => {
      const n = this.forward.numberedBy(conv);
      return n !== null && n !== this.nodeId;
    };
  }

  /** Connects, checks cluster.nodes against the cluster's list (members.ts: pins what an added node would strand, or throws NodeListRefused), then ticks. */
  async start(): Promise<void> {
    this.link.start();
    await joinList(this.link, "sb:", this.nodes, this.nodeId).then(() => this.syncHomes()).then(() => this.forward.rehome()); // the pins, before routing or balancing reads a home; a removed node's items (rows.ts)
    this.leases.start();
    this.started = true;
  }

  /** Hands the leases back and the heartbeat (others need not wait a TTL to see this node gone: members.ts `stopped`, with whether it holds nothing, as a removal asks), then closes Redis and the fence. */
  async stop(): Promise<void> {
    const empty = this.leases.heldShards().size === 0 && !this.owner.includes(this.nodeId) && this.homes.pendingIntents().length === 0;
    if (this.started) await this.leases.stop(true).then(() => stopped(this.link, "sb:", this.nodeId, empty));
    this.forward.stop(), this.link.close();
    this.fence.close();
  }

  home(account: string): Home {
    const shard = shardOf(account, this.leases.shardCount);
    if (isInternalAccount(account)) return this.internal(account, shard);
    if (this.mover.frozen.size > 0 && this.mover.frozen.has(shard)) return { kind: "down", shard, node: this.nodeId, retryMs: MOVE_RETRY_MS + Math.floor(Math.random() * MOVE_RETRY_MS) };
    const epoch = this.leases.epochOf(shard);
    if (epoch !== null) return { kind: "local", shard, epoch };
    const r = this.leases.route(shard);
    if (r && r.live && r.node !== this.nodeId && r.address) {
      const a = splitAddress(r.address);
      return { kind: "remote", shard, node: r.node, host: a.host, port: a.port, ws: a.ws };
    }
    // Jittered, one to two renewal intervals: about when a restarted owner (or this node) has taken it again.
    const base = Math.floor(this.leases.ttlMs / 3);
    return { kind: "down", shard, node: r?.node ?? null, retryMs: base + Math.floor(Math.random() * base) };
  }

  /**
   * The server's own accounts (the canary's) are every node's own, not in a shard; a node's cross-node canary
   * account is homed on that node, reached while its heartbeat is in the view.
   */
  private internal(account: string, shard: number): Home {
    const node = this.internalHome.get(account);
    if (node === undefined || node === this.nodeId) return { kind: "local", shard, epoch: 0 };
    const a = this.leases.nodes().get(node);
    if (a !== undefined) {
      const p = splitAddress(a);
      return { kind: "remote", shard, node, host: p.host, port: p.port, ws: p.ws };
    }
    const base = Math.floor(this.leases.ttlMs / 3);
    return { kind: "down", shard, node, retryMs: base + Math.floor(Math.random() * base) };
  }

  /** The other nodes whose heartbeat is in the view now (the cross-node canary's targets). */
  peersUp = (): string[] => this.nodes.filter((n) => n !== this.nodeId && this.leases.nodes().has(n));

  /** Redirects answered in the last REDIRECT_WINDOW_S seconds, and per second over them. */
  redirectRate = (): { lastWindow: number; perSecond: number; windowS: number } => this.redirects.rate();

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
      this.redirect(conn, h);
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
   * same id later). A recipient homed on another live node passes once its
   * home's directory answer is here (the module checks the device list
   * against it and the copies are forwarded, forward.ts); until then the send
   * gets retry_after while the home is asked. A 1:1 conversation numbered on
   * the recipient's home (the home of the lower name) waits for its number
   * from there: the promise gives the wrapper that accepts it with that number
   * (null: refused with retry_after).
   */
  send(conn: Conn, to: string | null, id: string): boolean | Promise<SendPass | null> {
    const own = this.home(conn.account);
    const h = own.kind === "local" && to !== null ? this.home(to) : own;
    if (h.kind === "remote" && to !== null && h !== own && this.linkFull(conn, h.node, { t: "msg", id })) return true;
    if (h.kind === "remote" && to !== null && h !== own && !this.forward.known(to)) {
      void this.forward.lookup(to);
      this.m.retrySend.inc();
      conn.sendError(ErrorCode.RETRY_AFTER, `asking ${to}'s home node ${h.node} for its devices; send again in ${LOOKUP_RETRY_MS} ms`, id, { retry_ms: LOOKUP_RETRY_MS });
      return true;
    }
    if (h.kind === "down") {
      this.m.retrySend.inc();
      conn.sendError(ErrorCode.RETRY_AFTER, `home shard ${h.shard} has no live owner (node ${h.node ?? "unknown"}); send again in ${h.retryMs} ms`, id, { retry_ms: h.retryMs });
      return true;
    }
    if (to === null || h === own || h.kind !== "remote") return false;
    // The conversation's number comes from its numbering node when that is the recipient's home (one round trip).
    const conv = SeqAllocator.conv(conn.account, to);
    const by = this.forward.numberedBy(conv);
    if (by === null || by === this.nodeId) return false;
    return this.forward.number(by, conv).then((seq) => {
      if (seq !== null && this.forward.known(to)) return (go: () => void) => this.seqs!.given(conv, seq, go);
      if (seq !== null) {
        // The recipient's entry went stale (DIR_TTL) while the number was on its way: the module would answer
        // unknown_user. Asked again; the number given is a gap (§6.4).
        void this.forward.lookup(to);
        this.m.retrySend.inc();
        conn.sendError(ErrorCode.RETRY_AFTER, `asking ${to}'s home node ${by} for its devices; send again in ${LOOKUP_RETRY_MS} ms`, id, { retry_ms: LOOKUP_RETRY_MS });
        return null;
      }
      this.m.retrySend.inc();
      const ms = Math.floor(this.leases.ttlMs / 3);
      conn.sendError(ErrorCode.RETRY_AFTER, `node ${by}, which numbers the conversation with ${to}, did not give a number; send again in ${ms} ms`, id, { retry_ms: ms });
      return null;
    });
  }

  refuseBehind(conn: Conn, id: string): void {
    this.m.retrySend.inc();
    conn.sendError(ErrorCode.RETRY_AFTER, `an earlier send of this connection was refused; send again after it (in ${LOOKUP_RETRY_MS} ms), to keep the order`, id, { retry_ms: LOOKUP_RETRY_MS });
  }

  /**
   * Before a group operation (`gmsg`, a `read` of a group, a `group.*` iq naming one): a group lives on the node
   * its id is homed on (forward.ts, item `o`), so one homed elsewhere goes there over the link, answers included.
   * While the group's node has no live owner, a `gmsg` or iq gets retry_after (a `read` marker waits in the link);
   * while its shard moves away from here an iq or `read` waits for the move (ShardMover.hold; a `gmsg` gets retry_after).
   */
  group(conn: Conn, gid: string, s: ClientStanza): boolean {
    if (!GROUP_ID_RE.test(gid)) return false; // the module answers bad_field
    if (s.t !== "gmsg" && (this.mover.hold(shardOf(gid, this.owner.length), () => this.local!.dispatch(conn, s)) || this.mover.settling(conn, s, gid))) return this.m.heldOps.inc(), true;
    const node = this.forward.remoteHome(gid);
    const h = node === null ? this.home(gid) : null;
    if (node !== null && (this.home(gid).kind !== "down" || this.mover.movedAway(shardOf(gid, this.owner.length)))) {
      if (s.t === "read" || !this.linkFull(conn, node, s)) this.forward.op(node, conn, s); // a marker waits in the link
      return true;
    }
    if (h !== null && h.kind === "local") return false;
    if (s.t === "read") {
      if (node !== null) this.forward.op(node, conn, s);
      return node !== null; // a marker for a group of this node before it took its shard back: the module applies it
    }
    const retry = h?.kind === "down" ? h.retryMs : Math.floor(this.leases.ttlMs / 3);
    this.refuseDown(conn, s, `the node of group ${gid} (${node ?? this.nodeId}) has no live owner of its shard; try again in ${retry} ms`, retry);
    return true;
  }

  /**
   * Before an iq: a group operation goes to the group's node (`group`), and an op of HOME_OPS naming a remote
   * account in `a.u` goes to that account's home, answered from there; while that home has no live owner it gets
   * retry_after, while it is moving away from here it waits (hold). True when it was forwarded, held or refused.
   */
  iq(conn: Conn, s: Extract<ClientStanza, { t: "iq" }>): boolean {
    const a = s.a;
    if (typeof a?.g === "string" && s.op.startsWith("group.")) return this.group(conn, a.g, s);
    if (s.op === "group.list") {
      // The caller's groups live on the nodes that created them: this node's, merged with every peer's (lists.ts).
      void this.forward.lists.list(conn, this.hooks!.dispatchIq(s.op, conn, a ?? {})).then((r) => conn.send(resOf(s.id, r)));
      return true;
    }
    if (!HOME_OPS.has(s.op) || typeof a?.u !== "string" || !ACCOUNT_NAME_RE.test(a.u)) return false; // the module judges the rest
    if (this.mover.hold(shardOf(a.u, this.owner.length), () => this.local!.dispatch(conn, s)) || this.mover.settling(conn, s, a.u)) return this.m.heldOps.inc(), true; // a fetch consumes a prekey of the moving rows
    const node = this.forward.remoteHome(a.u);
    if (node === null) return false;
    const h = this.home(a.u);
    if (h.kind !== "down" || this.mover.movedAway(h.shard)) {
      if (!this.linkFull(conn, node, s)) this.forward.op(node, conn, s);
      return true;
    }
    this.refuseDown(conn, s, `the home shard ${h.shard} of ${a.u} (node ${node}) has no live owner; try again in ${h.retryMs} ms`, h.retryMs);
    return true;
  }

  /**
   * retry_after when the link to `node` holds its bound of what is not kept on disk (cluster.link_held_*: `node` is
   * down or hung): a `msg` whose copies would go there, a `gmsg` or request forwarded there, is refused before anything
   * is accepted (the client sends it again), instead of held in memory without end. True when refused.
   */
  private linkFull(conn: Conn, node: string, s: { t: string; id?: unknown }): boolean {
    if (!this.forward.full(node)) return false;
    this.m.linkFull.inc();
    const base = Math.floor(this.leases.ttlMs / 3), retry = base + Math.floor(Math.random() * base);
    this.refuseDown(conn, s, `node ${node} has not acknowledged what this node holds for it (cluster.link_held_items or _bytes reached: it is down or hung); nothing was accepted: send again in ${retry} ms`, retry);
    return true;
  }

  /** retry_after for a stanza whose node has no live owner now: a `res` for an iq, else an `err` with its id. */
  private refuseDown(conn: Conn, s: { t: string; id?: unknown }, m: string, retry: number): void {
    this.m.retrySend.inc();
    if (s.t === "iq") conn.send({ t: "res", id: s.id as number, ok: false, e: ErrorCode.RETRY_AFTER, m, x: { retry_ms: retry } });
    else conn.sendError(ErrorCode.RETRY_AFTER, m, typeof s.id === "string" ? s.id : undefined, { retry_ms: retry });
  }

  /**
   * The commit guard (DeliveryQueue.setCommitGuard): a batch is written only while this node can prove it holds
   * the shard of every account in it, so `sent` means durable at a provable owner, and a batch accepted just
   * before a pause is not committed by the paused process until it holds the shard again (at a new epoch).
   * Cost per run of rows of one account: a hash of its name and holds() (40–150 ns, CLUSTER.md "Costs").
   */
  writable(account: string): boolean {
    if (isInternalAccount(account)) return true;
    const s = shardOf(account, this.leases.shardCount);
    // A remote sender's record here is the dedup of copies forwarded to this node: it goes with their recipients' shards.
    return this.mine[s] === 0 || this.leases.holds(s);
  }

  /**
   * Before an iq that reads another account's devices (`devices {u}`), or names accounts of a group change
   * (`group.* {m}`), and before a `read` marker (its peer must exist; after a restart nothing of it is cached):
   * a remote account's entry is fetched from its home first. Null (no wait) otherwise.
   */
  prefetch(op: string, a: Record<string, unknown> | undefined, caller: string): Promise<void> | null {
    const named = Array.isArray(a?.m) ? a.m.slice(0, LIMITS.groupBatch).filter((x): x is string => typeof x === "string" && ACCOUNT_NAME_RE.test(x)) : null;
    // Who joins a group here: their groups on the other nodes count toward their cap (lists.ts), asked first.
    const joining = op === "group.create" ? [caller, ...(named ?? [])] : op === "group.add" ? named : null;
    if (joining !== null && joining.length > 0) {
      const counted = this.forward.lists.ask(joining);
      const dir = named === null ? null : this.forward.fetch(named);
      return dir === null ? counted.then(() => {}) : Promise.all([counted, dir]).then(() => {});
    }
    // Accounts named in a group change (create, add, ...): the module checks that they exist, from their homes.
    if (op.startsWith("group.") && named !== null) return this.forward.fetch(named);
    // The presence module's ops naming accounts in `u` (contacts, blocks, presence): it checks that they exist.
    if (PRESENCE_OPS.has(op) && (typeof a?.u === "string" || Array.isArray(a?.u))) {
      return this.forward.fetch((typeof a.u === "string" ? [a.u] : (a.u as unknown[]).slice(0, 256)).filter((x): x is string => typeof x === "string" && ACCOUNT_NAME_RE.test(x)));
    }
    if ((op !== "devices" && op !== "read") || typeof a?.u !== "string" || isGroupId(a.u)) return null;
    const u = a.u;
    if (this.owner[shardOf(u, this.owner.length)] === this.nodeId || this.forward.known(u)) return null;
    return this.forward.lookup(u);
  }

  redirect(conn: Conn, h: Extract<Home, { kind: "remote" }>): void {
    this.m.redirects.inc();
    this.redirects.hit();
    conn.send(h.ws ? { t: "redirect", host: h.host, port: h.port, ttl: REDIRECT_TTL_S, ws: h.ws } : { t: "redirect", host: h.host, port: h.port, ttl: REDIRECT_TTL_S });
    conn.close(CloseReason.REDIRECT, `account ${conn.account || "?"} lives on node ${h.node}`);
  }

  /** The shard's home changed (a move, here or seen): routing follows; its sessions still here go to the new home. */
  applyHome(s: number): void {
    const node = this.homes.ownerOf(s);
    const was = this.mine[s] === 1;
    this.owner[s] = node;
    this.mine[s] = node === this.nodeId ? 1 : 0;
    if (was && node !== this.nodeId && this.local !== null) this.mover.redirectShard(s, this.accounts!.listAccounts().filter((a) => shardOf(a, this.owner.length) === s));
  }

  /** The stores a move reads and writes (move.ts); the node a shard lives on now (placement, or its last move). */
  localParts = (): Local => this.local!;
  ownerOf = (s: number): string => this.owner[s]!;

  /** Reads the moved homes from Redis now (a flip whose answer was lost: Redis decided). */
  async syncHomes(): Promise<void> {
    for (const s of await this.homes.sync(this.link)) this.applyHome(s);
  }

  /** After a flip: the shard's home is `target` at `epoch` (null: Redis did not say; syncHomes learned it). */
  settled(s: number, target: string, epoch: number | null): void {
    if (epoch !== null) this.homes.record(s, target, epoch);
    this.homes.settle(s); // an outcome not recorded yet keeps the target as home until a merge learns it
    this.applyHome(s);
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
    const live = this.leases.nodes(), held = this.leases.heldShards(), epochs = [...held.values()];
    const lag = this.forward.perPeer((s) => s.lag), linkHeld = this.forward.perPeer((s) => s.held);
    return {
      node: this.nodeId,
      redis: { url: this.config.cluster.redis, up: this.link.up },
      viewAgeMs: Number.isFinite(this.leases.viewAge()) ? Math.round(this.leases.viewAge()) : null,
      leaseTtlMs: this.leases.ttlMs,
      held: held.size,
      heldEpochs: epochs.length ? { min: Math.min(...epochs), max: Math.max(...epochs) } : null,
      unowned, moves: this.mover.pending(), // moves not over: shards shipping from here, flips whose outcome is not recorded
      redirects: { total: this.redirects.total, ...this.redirectRate() },
      nodes: this.nodes.map((id) => {
        const n = perNode[id] ?? { shards: 0, live: 0, oldestSeenMs: 0 };
        const a = live.get(id);
        const p = a === undefined ? null : splitAddress(a);
        const h = linkHeld[id];
        return { id, up: live.has(id), address: p ? `${p.host}:${p.port}` : null, linkPort: p?.link ?? null, linkLag: lag[id] ?? 0, linkHeld: h ? { items: h.loose, bytes: h.looseBytes } : null, shards: n.shards, liveShards: n.live, oldestLeaseSeenMs: n.oldestSeenMs };
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
