/**
 * Messages between nodes, over the node links (link.ts): what a node sends
 * to an account's home node and what it does with what its peers send it.
 *
 * Item kinds (msgpack bodies of LinkItems, field `k`):
 * - `m` one message's copies for accounts homed on the receiving node. The
 *   home queues them through its own store acceptance, keyed like the
 *   sender's (sending account, device, client id): a retry after a restart
 *   of the home finds the record (`recall`) and queues nothing again; within
 *   one process the link's dedup answers it. The link acks only once the
 *   copies are durable there, which is when the sender's node counts them
 *   toward `sent` (Send.release).
 * - `d` an item (a receipt, an event) for every device of an account, queued
 *   by its home, which alone knows the devices, through a store acceptance
 *   keyed by the item's link key: acked once durable, and a retry after a
 *   restart of the home finds the record (`recall`) and queues nothing again.
 *   A `dlv`/`read` receipt about a message still waiting for its `sent` here
 *   waits for it (the ack of the copies and the receipt travel on two
 *   different sockets) outside the ack (see queueForDevices).
 * - `q` / `r` a directory look-up and its answer (device ids, key versions).
 * - `c` the devices of an account changed on its home: peers drop their copy.
 * - `o` a group operation (`gmsg`, a group `read`, a `group.*` iq naming the
 *   group) from a device connected here, for the group's node: a group lives
 *   on the node its id is homed on, and is created with an id homed where it
 *   is created. The group's node runs it through its own dispatch as if the
 *   device were connected there (a ProxyConn), so fan-out, dedup, sequence
 *   numbers, membership and `sent` are the single-node code; what it answers
 *   comes back as `x`. A `gmsg` with no `sent` or `err` back after
 *   GROUP_RESEND_MS, while the link has nothing unacknowledged, is sent again
 *   (the group's node died after the link ack, before the acceptance was
 *   durable): the node's acceptance dedup answers a resend it has. A
 *   forwarded iq acked by the link whose node's link drops before its `res`
 *   is answered here with `retry_after {lost: true}` (ops.ts).
 * - `x` a frame for the device an `o` came from (a `res`, `sent`, `err`).
 * - `z` the connection an `o` came from closed: its ProxyConn goes (proxy.ts).
 * - `h` `delivery:acked` / `delivery:expired` of a group item, run on the
 *   group's node (its delivery marks, and its `dlv` receipt after the
 *   message's `sent`, both of which are there).
 * - `p` a presence item (a node's subscriptions to accounts homed on the
 *   receiving one, their views, typing; opaque here): handed to the presence
 *   module (the `peer:presence` hook). Nothing of it is stored here (the module keeps remote blocks); acked
 *   on receipt.
 * - `l` / `L` an account's groups on the receiving node, asked by `group.list` and the group cap, and the
 *   answer (lists.ts).
 * - `n` / `N` a sequence number for a 1:1 conversation, asked of its numbering
 *   node (the home of its lower account name: one sequence for both
 *   directions, docs/CLUSTER.md), and the number (0: refused, that node
 *   cannot prove it holds the shard now). The number is durable there before
 *   it is answered (the allocator reserves its block first), so a restart of
 *   either end leaves at most a gap, never a reuse.
 *
 * - `S` the rows of a home shard moving here (move.ts): acked once durable here.
 * Placement is fixed over cluster.nodes (node.ts), so an account's home node
 * is known without Redis; its address is read from the heartbeats at every
 * (re)connect of the link.
 */
import { decodeBody, encodeBody } from "../../protocol/codec.ts";
import { ErrorCode } from "../../protocol/errors.ts";
import { isGroupId, type ClientStanza } from "../../protocol/stanzas.ts";
import type { AcceptedRecord, DeliveryQueue, QueueItem } from "../../store/queue.ts";
import type { AccountStore } from "../../store/accounts.ts";
import { SqlitePeerOutbox, type PeerOutbox } from "../../store/outbox.ts";
import type { Durability } from "../../store/sqlite.ts";
import type { Database } from "bun:sqlite";
import type { Conn } from "../../transport/connection.ts";
import { ProxyConn, ProxyTable } from "./proxy.ts";
import { ForwardedOps, GROUP_RESEND_MS } from "./ops.ts";
import type { Accept, Forward, ForwardedCopy, Stanza } from "../accept.ts";
import { ItemKind, type Delivery, type EnqueueMeta } from "../delivery.ts";
import type { Directory, DirectoryEntry } from "../directory.ts";
import type { Hooks } from "../hooks.ts";
import { log } from "../log.ts";
import type { Registry } from "../registry.ts";
import { SeqAllocator } from "../seq.ts";
import { LinkSender, type LinkItem, type LooseBound } from "./link.ts";
import { LinkReceiver } from "./link-receiver.ts";
import { GroupLists } from "./lists.ts";
import { RemoteBounds, SWEEP_MS } from "./bounds.ts";
import type { GroupHook, Item } from "./items.ts";
import { rehomeKept, relayMoved, type ShardData } from "./rows.ts";
import { logSent, RELAYED_SENT } from "../acceptances.ts";
import type { PushService } from "../push/service.ts";

/** How long a peer's directory answer is trusted without a change notice: the backstop for a notice lost in a crash. */
const DIR_TTL_MS = 60_000;
/** An account its home does not know is asked again after this (it may be created there any time). */
const DIR_MISS_TTL_MS = 2_000;

/** Devices of other nodes that sent group operations here, kept as ProxyConns (two generations of this many / 2). */
const PROXIES_MAX = 20_000;

/** How long a send waits for its conversation's number from the numbering node before it is refused with retry_after. */
const NUMBER_TIMEOUT_MS = 3_000;

/** What the home side queues into: the server's own objects. */
export interface Local {
  queue: DeliveryQueue;
  accounts: AccountStore;
  delivery: Delivery;
  accept: Accept;
  directory: Directory;
  registry: Registry<Conn>;
  seqs: SeqAllocator;
  hooks: Hooks;
  /** Core's push service: a moving shard's durable jobs (in the queue files) and its devices' limits go with it (rows.ts). */
  push: PushService;
  /** The server's dispatch of a stanza from a logged-in connection (Dispatch.stanza). */
  dispatch(conn: Conn, s: ClientStanza): void;
}

export class Forwarder implements Forward {
  private senders = new Map<string, LinkSender>();
  private receiver: LinkReceiver;
  private local: Local | null = null;
  /** Unique keys for items that are not messages: a restarted sender must not reuse a key its peer still remembers. */
  private readonly boot = crypto.randomUUID().slice(0, 8);
  private n = 0;
  private dir = new Map<string, { e: DirectoryEntry | null; at: number }>();
  private asking = new Map<string, Promise<void>>();
  private answers = new Map<string, (() => void)[]>();
  /** Messages forwarded from here whose `sent` is not out yet, by (sender, client id): receipts about them wait. */
  private unsent = new Map<string, { device: number; done: Promise<void> }>();
  /** Connections here that sent operations to other nodes, and those operations until answered (ops.ts). */
  readonly ops: ForwardedOps<Item>;
  /** ProxyConns of other nodes' devices (proxy.ts). */
  readonly proxies = new ProxyTable(this, PROXIES_MAX);
  private tick: ReturnType<typeof setInterval> | null = null;
  /** Numbers asked of numbering nodes and not answered yet, by request id. */
  private numbering = new Map<string, (seq: number | null) => void>();
  /** An account's groups on every node (`group.list`, the group cap): lists.ts. */
  readonly lists: GroupLists;
  /** Queue bounds of remote devices, as their homes state them (bounds.ts); set at attach. */
  private bounds: RemoteBounds | null = null;

  constructor(
    private readonly nodeId: string,
    /** The fixed home node of an account (placement over cluster.nodes). */
    private readonly homeOf: (account: string) => string,
    /** A peer's link address now, from its heartbeat; null while unknown (the link retries). */
    private readonly peerAddress: (node: string) => { host: string; port: number } | null,
    private readonly peers: readonly string[],
    /** Whether this node can prove it holds `account`'s shard now (ClusterNode.writable). */
    private readonly holds: (account: string) => boolean,
    /** queue.max_messages, queue.max_bytes (bounds.ts); queue.durability (the outbox). */
    private readonly limits: { maxMessages: number; maxBytes: number; durability?: Durability },
    /** The outbox file (`d` items kept until acked, link.ts); null: none (in memory only). */
    outboxPath: string | null = null,
    /** cluster.link_held_items / _bytes (per peer: `full`) and cluster.iq_timeout (ops.ts). */
    private readonly linkLimits: { held: LooseBound; iqTimeout: number } = { held: { items: Infinity, bytes: Infinity }, iqTimeout: 15_000 },
  ) {
    const box = outboxPath === null ? null : new SqlitePeerOutbox(outboxPath, limits.durability);
    (this.outbox = box), (this.outboxDb = box?.db ?? null);
    this.receiver = new LinkReceiver((from, items) => this.received(from, items));
    this.ops = new ForwardedOps<Item>({
      send: (node, it) => this.sendItem(node, it),
      lag: (node) => this.link(node).lag,
      up: (node) => this.peerAddress(node) !== null,
      closed: (c) => ({ k: "z", c }),
    }, linkLimits.iqTimeout);
    // The peers up now (a heartbeat in the view): one that is down is not waited for.
    const up = () => this.peers.filter((p) => p !== this.nodeId && this.peerAddress(p) !== null);
    this.lists = new GroupLists(this.boot, up, (node, it) => this.sendItem(node, it), () => this.local!.hooks, (from, a) => new ProxyConn(this, from, 0, a, 0));
  }

  /** Binds the link listener; returns its port (published in the heartbeat). */
  listen(host: string, port: number): number {
    return this.receiver.listen(host, port);
  }

  /** The server's objects, once they exist; also hooks the directory up to peers' answers and notices. */
  attach(local: Local): void {
    this.local = local;
    local.accept.forward = this;
    local.directory.fetch = (accounts) => this.fetch(accounts);
    const bounds = (this.bounds = new RemoteBounds(this.limits, (a, d) => local.queue.usage(a, d), (it) => {
      // Only to peers up (restated every second, so one that comes back has it within one): nothing piles up for a dead one.
      for (const p of this.peers) if (p !== this.nodeId && this.peerAddress(p) !== null) this.sendItem(p, it);
    }));
    local.delivery.afterEnqueue = (a, d) => this.homeOf(a) === this.nodeId && bounds.enqueued(a, d);
    local.delivery.remoteUsage = (a, d) => (this.homeOf(a) === this.nodeId ? null : bounds.remoteUsage(a, d));
    this.tick = setInterval(() => (this.ops.sweep(), bounds.sweep()), Math.min(GROUP_RESEND_MS / 3, SWEEP_MS));
    this.tick.unref?.();
    local.directory.remote = (account) => this.cached(account);
    // What this node made for peers and died before their acks goes out again now (their links start here).
    for (const p of this.outbox?.peers() ?? []) if (p !== this.nodeId && this.peers.includes(p)) this.link(p);
    local.directory.changed = (account) => {
      if (this.homeOf(account) !== this.nodeId) return void this.dir.delete(account);
      for (const p of this.peers) if (p !== this.nodeId) this.sendItem(p, { k: "c", a: account });
    };
  }

  /** The items kept for a node removed from cluster.nodes, handed on as it would have (rows.ts rehomeKept); node.ts start, after the homes. */
  rehome = (): number => rehomeKept(this.outbox, this.nodeId, this.peers, (p, items) => this.received(p, items));

  remoteHome = (account: string): string | null => (this.homeOf(account) === this.nodeId ? null : this.homeOf(account));

  /**
   * A message's copies for accounts homed on `node`; resolves when they are safe: for a 1:1 message at `node`'s
   * ack (`sent` means durable on the recipient's home), for a group message once they are in this node's outbox
   * (`sent` means durable on the group's node, whose outbox delivers them when that member node is back), so a
   * member node that is down no longer holds back the `sent` of the group's messages.
   */
  copies(node: string, rec: AcceptedRecord, copies: ForwardedCopy[]): Promise<void> {
    const key = `m\u0000${rec.sender}\u0000${rec.device}\u0000${rec.cid}`;
    const body = encodeBody({ k: "m", r: rec, c: copies });
    let done: Promise<void>;
    if (isGroupId(rec.to)) {
      let told!: (kept: boolean) => void;
      const kept = new Promise<boolean>((r) => (told = r));
      const acked = this.link(node).send(key, body, true, told);
      done = kept.then((ok) => (ok ? undefined : acked));
    } else done = this.link(node).send(key, body);
    const u = `${rec.sender}\u0000${rec.cid}`;
    this.unsent.set(u, { device: rec.device, done });
    void done.then(() => this.local!.accept.afterSent(rec.sender, rec.device, rec.cid, () => this.unsent.delete(u)));
    return done;
  }

  /** A presence item for a peer node (in order after everything sent to it before; retried until it is acked, then resolves). */
  presence = (node: string, body: unknown): Promise<void> => this.sendItem(node, { k: "p", b: body });
  /** The other nodes of cluster.nodes. */
  others = (): string[] => this.peers.filter((p) => p !== this.nodeId);

  /**
   * The next sequence number of the 1:1 conversation `conv`, from its numbering node; null when that node refused
   * (it cannot prove its shard now) or did not answer within NUMBER_TIMEOUT_MS (the sender gets retry_after; a late
   * answer is a gap).
   */
  number(node: string, conv: string): Promise<number | null> {
    const i = `${this.boot}:${++this.n}`;
    return new Promise((resolve) => {
      const t = setTimeout(() => this.numbering.delete(i) && resolve(null), NUMBER_TIMEOUT_MS);
      this.numbering.set(i, (seq) => {
        clearTimeout(t);
        resolve(seq);
      });
      this.sendItem(node, { k: "n", c: conv, i });
    });
  }

  /** The node that numbers the 1:1 conversation `conv` (SeqAllocator.conv): the home of its lower account name. */
  numberedBy(conv: string): string | null {
    const z = conv.indexOf("\u0000");
    return z <= 0 ? null : this.homeOf(conv.slice(0, z));
  }

  toDevices(node: string, account: string, meta: EnqueueMeta, stanza: Stanza, except: number, keep: boolean): void {
    // Durable here until the home's ack (the outbox): a receipt made by an ack on this node survives this node's death.
    this.sendItem(node, { k: "d", a: account, m: meta, s: stanza, x: except }, keep);
  }

  /** A wait until every remote account named has a fresh answer of its home here; null when all have one. */
  fetch(accounts: Iterable<string>): Promise<void> | null {
    let waits: Promise<void>[] | null = null;
    for (const a of accounts) if (this.homeOf(a) !== this.nodeId && !this.known(a)) (waits ??= []).push(this.lookup(a));
    return waits === null ? null : Promise.all(waits).then(() => {});
  }

  /** A group operation of `conn`'s device for the group's node `node` (item `o`). */
  op(node: string, conn: Conn, s: ClientStanza): void {
    // A block is known at the blocker's home and at the blocked account's home (the presence module keeps remote
    // blocks there), not on the group's node: an invitation is checked here, at the inviter's home, before it goes.
    if (s.t === "iq" && s.op === "group.add" && Array.isArray(s.a?.m)) {
      const refused = (s.a.m as unknown[]).flatMap((x) => (typeof x === "string" && x !== conn.account ? (this.local!.hooks.check("invite", conn.account, x) ?? []) : []));
      const failed = refused.find((c) => c.refuse === "failed"); // the rule crashed: refused (fails closed), not reported as a block
      if (failed) return void conn.send({ t: "res", id: s.id, ok: false, e: ErrorCode.INTERNAL, m: failed.m ?? "internal error" });
      if (refused.length) return void conn.send({ t: "res", id: s.id, ok: false, e: ErrorCode.BLOCKED, m: `a block keeps ${refused.map((c) => c.to).join(", ")} out of your groups` });
    }
    const c = this.ops.numberOf(conn);
    this.ops.send(node, conn, c, s, { k: "o", a: conn.account, d: conn.device, c, s });
  }

  /** A frame from the group's node for the device of a ProxyConn: to the node the device is connected to. */
  reply(p: ProxyConn, body: Uint8Array): void {
    this.sendItem(p.origin, { k: "x", a: p.account, d: p.device, c: p.originConn, b: body });
  }

  /**
   * `delivery:acked` / `delivery:expired` of a group copy whose group lives on another node: run there (item `h`),
   * not here. True when forwarded.
   */
  groupHook(name: GroupHook, item: QueueItem): boolean {
    if (item.kind !== ItemKind.GROUP || item.conv === "") return false;
    const node = this.remoteHome(item.conv);
    if (node === null) return false;
    this.sendItem(node, { k: "h", n: name, i: item });
    return true;
  }

  /**
   * The directory entry of a remote account, if a fresh answer of its home is here; undefined for a local account.
   * A miss asks the home (see `lookup`) and answers null meanwhile.
   */
  private cached(account: string): DirectoryEntry | null | undefined {
    const home = this.homeOf(account);
    if (home === this.nodeId) return undefined;
    const c = this.dir.get(account);
    if (c && performance.now() - c.at < (c.e ? DIR_TTL_MS : DIR_MISS_TTL_MS)) return c.e;
    void this.lookup(account);
    return null;
  }

  /** True when a fresh answer of the account's home (an entry, or "no such account") is cached here. */
  known(account: string): boolean {
    const c = this.dir.get(account);
    return c !== undefined && performance.now() - c.at < (c.e ? DIR_TTL_MS : DIR_MISS_TTL_MS);
  }

  /** Asks the account's home for its devices; resolves when the answer is cached (one question in flight per account). */
  lookup(account: string): Promise<void> {
    let p = this.asking.get(account);
    if (p) return p;
    p = new Promise<void>((resolve) => {
      const waiting = this.answers.get(account);
      if (waiting) waiting.push(resolve);
      else this.answers.set(account, [resolve]);
      this.sendItem(this.homeOf(account), { k: "q", a: account });
    }).finally(() => this.asking.delete(account));
    this.asking.set(account, p);
    return p;
  }

  /** A moving shard's rows: written here (node.ts; then what was cached of its accounts as remote goes), durable when resolved; sent, resolved at the target's ack. Held: rows.ts relayMoved. */
  onShard: ((d: ShardData) => Promise<void>) | null = null;
  held: (account: string) => Promise<void> | null = () => null;
  sendShard = (node: string, d: ShardData): Promise<void> => this.sendItem(node, { k: "S", d });

  /** `d` items made here for peers, kept until their ack (src/store/outbox.ts). */
  private readonly outbox: PeerOutbox | null;
  /** The outbox's file, for its WAL checkpoints in the commit Worker (server.ts); null without one. */
  readonly outboxDb: Database | null;

  private link(node: string): LinkSender {
    let s = this.senders.get(node);
    if (!s) this.senders.set(node, (s = new LinkSender(this.nodeId, () => this.peerAddress(node), () => this.ops.linkDropped(node), this.outbox && { store: this.outbox, peer: node }, undefined, this.linkLimits.held)));
    return s;
  }

  private sendItem(node: string, item: Item, durable = false): Promise<void> {
    return this.link(node).send(`${item.k}\u0000${this.nodeId}\u0000${this.boot}\u0000${++this.n}`, encodeBody(item), durable);
  }

  /** A batch from a peer: resolves once every message copy and `d` item in it is durable here (then the link acks it). */
  private received(from: string, items: LinkItem[]): Promise<void> | void {
    const local = this.local;
    if (local === null) throw new Error("cluster link: a batch arrived before the server attached its stores"); // not acked: retried
    const waits: Promise<void>[] = [];
    for (const [key, body] of items) {
      let it = decodeBody(body) as Item;
      const moved = relayMoved(it, key, body, this.nodeId, this.homeOf, (n, k, b) => this.link(n).send(k, b), this.held, () => this.received(from, [[key, body]]));
      if (moved !== null && (waits.push(moved.wait), (it = moved.rest as Item) === null)) continue;
      switch (it.k) {
        case "m": {
          const w = this.queueCopies(local, key, it.r, it.c);
          if (w) waits.push(w);
          if (!this.known(it.r.sender)) void this.lookup(it.r.sender); // its reader will answer with `read` to it
          break;
        }
        case "d": {
          const w = this.queueForDevices(local, key, it);
          if (w) waits.push(w);
          break;
        }
        case "q": {
          const q = it; // moved away: asked of its new home, answered from there
          if (this.homeOf(q.a) !== this.nodeId && (void this.lookup(q.a).then(() => this.sendItem(from, { k: "r", a: q.a, d: this.dir.get(q.a)?.e?.devices ?? null })), true)) break;
          const ds = local.directory.devices(it.a);
          this.sendItem(from, { k: "r", a: it.a, d: ds === null ? null : [...ds], f: this.bounds!.fullOf(it.a) });
          break;
        }
        case "r": {
          this.dir.set(it.a, { e: it.d === null ? null : { devices: it.d, ids: it.d.map((d) => d.device) }, at: performance.now() });
          this.bounds!.answered(it.a, it.f);
          const w = this.answers.get(it.a);
          this.answers.delete(it.a);
          for (const f of w ?? []) f();
          break;
        }
        case "c":
          this.dir.delete(it.a);
          break;
        case "o":
          local.dispatch(this.proxies.get(from, it.a, it.d, it.c), it.s);
          break;
        case "x": {
          const conn = this.ops.conn(it.c) ?? local.registry.get(it.a, it.d);
          const r = decodeBody(it.b) as { t?: unknown; id?: unknown };
          this.ops.answered(it.c, it.a, it.d, r);
          conn?.sendBody(it.b);
          if (conn?.confirms && r.t === "sent") logSent(conn, RELAYED_SENT); // the client counts it in its ack {sc}
          break;
        }
        case "z":
          this.proxies.drop(from, it.c);
          break;
        case "p":
          local.hooks.run("peer:presence", from, it.b);
          break;
        case "h":
          local.hooks.run(it.n, it.i, undefined as unknown as Conn);
          break;
        case "n": {
          // Only its numbering node numbers a conversation, while it proves the shard and the shard is not frozen for a
          // move (its bound left with the snapshot: a block reserved now is reserved again at the target; CLUSTER.md).
          const first = it.c.slice(0, Math.max(0, it.c.indexOf("\u0000")));
          const ok = first !== "" && this.homeOf(first) === this.nodeId && this.holds(first) && this.held(first) === null;
          this.sendItem(from, { k: "N", i: it.i, s: ok ? local.seqs.next(it.c) : 0 });
          break;
        }
        case "f":
          this.bounds!.received(it);
          break;
        case "l":
        case "L":
          void this.lists.received(from, it);
          break;
        case "S": // not acked (retried) before the node can import
          waits.push(this.onShard!(it.d).then(() => it.d.names.forEach((a) => this.dir.delete(a))));
          break;
        case "N": {
          const f = this.numbering.get(it.i);
          this.numbering.delete(it.i);
          f?.(it.s > 0 ? it.s : null);
          break;
        }
        default:
          log.warn("cluster link: unknown item kind; ignored", { from, k: (it as { k: unknown }).k });
      }
    }
    if (waits.length) return Promise.all(waits).then(() => {});
  }

  /** A forwarded message's copies, through a store acceptance with the sender's dedup key ("peer": see queueForDevices). */
  private queueCopies(local: Local, key: string, rec: AcceptedRecord, copies: ForwardedCopy[]): Promise<void> | null {
    // A 1:1 number issued elsewhere: `read` markers up to it are taken here from now on (a group id is no such conversation).
    if (!isGroupId(rec.to)) local.seqs.observe(SeqAllocator.conv(rec.sender, rec.to), rec.seq);
    if (local.queue.recall(rec.sender, rec.device, rec.cid) !== null) return null; // durable here before (a retry across a restart)
    return new Promise<void>((resolve) => {
      const acc = local.queue.begin(rec, resolve, "peer"); // lazy while no copy is written: forgotten at the sender's release
      this.receiver.onRelease(key, () => local.queue.confirm(acc));
      const metas = new Map<number, EnqueueMeta>();
      for (const [account, device, kind, stanza] of copies) {
        let meta = metas.get(kind);
        if (!meta) metas.set(kind, (meta = { kind, fromAccount: rec.sender, fromDevice: rec.device, conv: rec.to, cid: rec.cid, seq: rec.seq, ts: rec.ts }));
        local.delivery.enqueue(account, device, meta, stanza, acc);
      }
      local.queue.release(acc);
    });
  }

  /**
   * A `d` item for every device of `it.a` but `it.x`, queued through an acceptance whose record is keyed by the
   * link key (sender `it.a`, device 0, which no device has; an `accepted` row per item written with its copies,
   * expired with the retention, none while they are all acked before a commit and the sender releases it): resolves
   * once durable, which is when the link acks it. A receipt about a message sent from here
   * whose `sent` is not out yet waits for that `sent` *outside* the ack: the `sent` waits for the peer's ack of
   * the copies, and a peer doing the same with a receipt for this node would hold its ack chain as this one is
   * held, each waiting for the other. Such a receipt is then queued without a record (nothing resends it once
   * acked); it is lost if this node dies before that `sent` is out, as on one node (the sender resends the message).
   */
  private queueForDevices(local: Local, key: string, it: { a: string; m: EnqueueMeta; s: Stanza; x: number }): Promise<void> | null {
    const id = it.s.id;
    const u = typeof id === "string" ? this.unsent.get(`${it.a}\u0000${id}`) : undefined;
    if (u !== undefined || this.homeOf(it.a) !== this.nodeId) {
      // Never before its `sent` (ARCHITECTURE step 6); an account not homed here (a misrouted item) goes on to its home.
      const run = () => local.accept.toDevices(it.a, it.m, it.s, it.x);
      if (u === undefined) return run(), null;
      void u.done.then(() => local.accept.afterSent(it.a, u.device, id as string, run));
      return null;
    }
    if (local.queue.recall(it.a, 0, key) !== null) return null; // durable here before a restart: this is a retry
    return new Promise<void>((resolve) => {
      const acc = local.queue.begin({ sender: it.a, device: 0, cid: key, to: it.a, seq: 0, ts: Date.now() }, resolve, "peer");
      this.receiver.onRelease(key, () => local.queue.confirm(acc));
      for (const d of local.directory.deviceIds(it.a) ?? []) if (d !== it.x) local.delivery.enqueue(it.a, d, it.m, it.s, acc);
      local.queue.release(acc);
    });
  }

  /** Before a group commit here (DeliveryQueue.setCommitGuard): the `d` items queued on the links go to the outbox first. */
  beforeCommit(): void {
    for (const s of this.senders.values()) s.keepNow();
  }

  /** Link batches and items sent to `node` since the start (items per batch, for /metrics); none before first use. */
  sentTo = (node: string): { batches: number; items: number; kept: number } => this.senders.get(node) ?? { batches: 0, items: 0, kept: 0 };

  /** `f` of each peer's link (none before first use): its lag (batches unacked), what it holds (link.ts `held`). */
  perPeer = <T>(f: (s: LinkSender) => T): Record<string, T> => Object.fromEntries([...this.senders].map(([n, s]) => [n, f(s)]));

  /** The link to `node` holds its bound of what is not kept on disk (cluster.link_held_*): sends towards it are refused (node.ts). */
  full = (node: string): boolean => this.senders.get(node)?.full === true;

  stop(): void {
    if (this.tick !== null) clearInterval(this.tick);
    for (const s of this.senders.values()) s.close();
    this.receiver.stop();
    this.outbox?.close();
  }
}
