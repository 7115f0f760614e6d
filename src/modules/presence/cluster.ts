/**
 * Presence across the nodes of a cluster (docs/PROTOCOL.md §6.10, docs/CLUSTER.md "Presence"). An account's
 * presence lives on its home node, where its devices log in and its rules are kept; a device on node X that
 * watches account T homed on Y is served by X, which holds ONE node-level subscription on Y for all its local
 * watchers of T. Items over the node links (forward.ts kind `p`, bodies below), never stored:
 *
 * - X→Y `s {a: T, w: [[viewer, o, l, b]…], q?}`: X's watchers of T, each with its half of the rule (rules.ts
 *   Half: it shares online / last seen with T, it blocks T), which only X knows. Replaces X's interest in T;
 *   an empty `w` ends it. With `q` (a presence.sub) Y answers `v` with every watcher's view and `k`.
 * - X→Y `g {a, w, q}`: one look (iq presence), no interest kept; answered `v`.
 * - X→Y `r {i: [[T, w]…]}`: every interest of X on Y, each lease/3: renews them (the lease of a node-level
 *   subscription: one not renewed within presence.lease_ms ends, so a node killed with -9 stops costing
 *   anything), restores them on a restarted Y, and drops what X no longer lists.
 * - Y→X `v {a: T, v: [[viewer, view | null]…], q?, k?}`: the views Y decided (null: nothing may be seen, the
 *   subscriptions end with `privacy`); `k`: the viewers T knows (not strangers: the stranger limit is X's).
 *   Y sends one per interested node per change of T, and only the viewers whose view changed.
 * - X→Y `t {f, d, to, s, b, k, at}`: typing; `b`/`k`: the sender blocks / knows the target (X's half). Dropped
 *   when older than TYPING_MAX_AGE_MS (a link that was down delivers late: typing is ephemeral).
 *
 * - X→Y `b {a, by, on}`: X's account `by` blocks Y's account `a` (or no longer does). Y keeps it (presence.db
 *   blocked_by) so that every check about `a` (its messages, receipts, invitations, typing) sees the block with
 *   Y's own data; the blocker's `block.add` answers once Y acked it (so the block holds when the blocker sees ok).
 * - X→Y `B {l: [[a, by]…], z?}`: at X's start, every block of X's accounts against Y's (in chunks; `z` on the
 *   first): replaces what Y kept from X, so a `b` lost with a crash of X is repaired.
 *
 * Privacy is decided at the home at subscribe and at every emit, from the watcher's half (sent again by X
 * whenever the watcher's rules change: `s` without `q`) and the target's rules (Y's). Nothing per message.
 */
import type { PeerView } from "../../core/context.ts";
import type { Counter } from "../../core/metrics.ts";
import type { Half } from "./rules.ts";
import type { Live, LivePeer, View } from "./live.ts";

/** A presence.sub or presence towards a remote account not answered by its home within this: retry_after. */
export const ASK_TIMEOUT_MS = 5000;
/** Typing older than this when it reaches the target's home is dropped (it would show "typing…" too late). */
const TYPING_MAX_AGE_MS = 5000;

type Wire = [viewer: string, o: boolean, l: boolean, b: boolean];
type Body =
  | { t: "s"; a: string; w: Wire[]; q?: number }
  | { t: "g"; a: string; w: Wire[]; q: number }
  | { t: "r"; i: [target: string, w: Wire[]][] }
  | { t: "v"; a: string; v: [string, View | null][]; q?: number; k?: string[] }
  | { t: "t"; f: string; d: number; to: string; s: "typing" | "paused"; b: boolean; k: boolean; at: number }
  | { t: "b"; a: string; by: string; on: boolean }
  | { t: "B"; l: [string, string][]; z?: boolean };

/** Blocks per `B` item of the start resync. */
const RESYNC_CHUNK = 1000;

const toWire = (v: string, h: Half): Wire => [v, h.o, h.l, h.b];
const fromWire = (w: Wire): [string, Half] => [w[0], { o: w[1] === true, l: w[2] === true, b: w[3] === true }];
const viewKey = (v: View | null) => (v === null ? "-" : `${v.online ?? ""}/${v.ls ?? ""}`);

/** Y's record of one node's interest in one of its accounts. */
interface Interest {
  watchers: Map<string, Half>;
  /** The view last sent per watcher (viewKey), so a change costs nothing for watchers whose view did not change. */
  sent: Map<string, string>;
  expires: number;
}

export interface Answer {
  v: View | null;
  /** The target knows the viewer (it is no stranger to it). */
  known: boolean;
}

export interface PeerHooks {
  /** Whether the target (a local account) knows the viewer. */
  knows(target: string, viewer: string): boolean;
  exists(account: string): boolean;
  /** Typing from a remote sender to a local account, with the sender's half (blocks, knows). */
  typing(from: string, device: number, to: string, s: "typing" | "paused", fromBlocks: boolean, fromKnows: boolean): void;
  /** Node `node`'s account `by` blocks the local `account` (on) or no longer does. */
  blockedBy(node: string, account: string, by: string, on: boolean): void;
  /** Node `node`'s complete list of blocks against local accounts (`clear`: the first chunk, replacing the old list). */
  replaceBlockedBy(node: string, rows: [string, string][], clear: boolean): void;
}

export class PresencePeers implements LivePeer {
  /** Home side: target -> node -> interest. */
  private interests = new Map<string, Map<string, Interest>>();
  /** Watcher side: questions in flight, by id. */
  private asks = new Map<number, { resolve: (a: Answer | null) => void; viewer: string; target: string; timer: ReturnType<typeof setTimeout> }>();
  /** Watcher side: viewers being subscribed (asked, not answered yet): included in every `s` about their target. */
  private pending = new Map<string, Map<string, Half>>();
  private dirty = new Set<string>();
  private flushing = false;
  private n = 0;
  private lastRenew = 0;
  /** Items sent to each node and not acked yet; nodes with a renewal (`r`) in flight. */
  private inflight = new Map<string, number>();
  private renewing = new Set<string>();

  constructor(
    private peers: PeerView,
    private live: Live,
    private leaseMs: number,
    private hooks: PeerHooks,
    private m: { items: (kind: string) => Counter; dropped: Counter },
    private backlog = Infinity,
  ) {}

  remote(account: string): boolean {
    return this.peers.home(account) !== null;
  }

  /**
   * Bounded by size towards a node that is down or cut off (presence.peer_backlog items not acked yet): beyond it,
   * everything but blocks is dropped, because each is repaired once the node is back: typing is ephemeral, a
   * question times out into retry_after, the renewal (`r`, the full list, at most one in flight per node) restores
   * subscriptions, and a dropped change (`v`) forgets what that node was sent, so the next renewal sends every view.
   */
  private send(node: string, b: Body): void {
    const n = this.inflight.get(node) ?? 0;
    const exempt = b.t === "b" || b.t === "B";
    if (!exempt && (n >= this.backlog || (b.t === "r" && this.renewing.has(node)))) return this.dropped(node, b);
    const acked = this.peers.send(node, b);
    this.m.items(b.t === "v" && b.q !== undefined ? "answer" : b.t).inc(); // "v": a change pushed; "answer": to a sub or look
    if (acked === undefined) return;
    this.inflight.set(node, n + 1);
    if (b.t === "r") this.renewing.add(node);
    void acked.then(() => {
      const left = (this.inflight.get(node) ?? 1) - 1;
      if (left > 0) this.inflight.set(node, left);
      else this.inflight.delete(node);
      if (b.t === "r") this.renewing.delete(node);
    });
  }

  private dropped(node: string, b: Body): void {
    this.m.dropped.inc();
    if (b.t === "v" && b.q === undefined) this.interests.get(b.a)?.get(node)?.sent.clear();
  }

  /** Presence items sent to other nodes and not acknowledged yet (all nodes). */
  backlogSize(): number {
    let n = 0;
    for (const x of this.inflight.values()) n += x;
    return n;
  }

  // ---- watcher side --------------------------------------------------------

  /** Asks T's home what `viewer` (with half `h`) may see; `keep`: a subscription (else one look). Null: no answer in time. */
  ask(viewer: string, h: Half, target: string, keep: boolean): Promise<Answer | null> {
    const node = this.peers.home(target)!;
    const q = ++this.n;
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.answered(q, null), ASK_TIMEOUT_MS);
      this.asks.set(q, { resolve, viewer, target, timer });
      if (!keep) return this.send(node, { t: "g", a: target, w: [toWire(viewer, h)], q });
      let p = this.pending.get(target);
      if (!p) this.pending.set(target, (p = new Map()));
      p.set(viewer, h);
      this.send(node, { t: "s", a: target, w: this.wireOf(target), q });
    });
  }

  private answered(q: number, a: Answer | null): void {
    const ask = this.asks.get(q);
    if (!ask) return;
    this.asks.delete(q);
    clearTimeout(ask.timer);
    const p = this.pending.get(ask.target);
    if (p?.delete(ask.viewer) && p.size === 0) this.pending.delete(ask.target);
    ask.resolve(a);
  }

  /** The watcher set of a remote target changed (or the caller gave up subscribing): tell its home, once per turn. */
  unwatched(target: string): void {
    this.dirty.add(target);
    if (this.flushing) return;
    this.flushing = true;
    queueMicrotask(() => {
      this.flushing = false;
      const ts = [...this.dirty];
      this.dirty.clear();
      for (const t of ts) {
        const node = this.peers.home(t);
        if (node !== null) this.send(node, { t: "s", a: t, w: this.wireOf(t) });
      }
    });
  }

  private wireOf(target: string): Wire[] {
    const hs = this.live.halves(target);
    for (const [v, h] of this.pending.get(target) ?? []) if (!hs.has(v)) hs.set(v, h);
    return [...hs].map(([v, h]) => toWire(v, h));
  }

  // ---- home side -----------------------------------------------------------

  emitted(account: string): void {
    const byNode = this.interests.get(account);
    if (byNode) for (const [node, it] of byNode) this.push(node, account, it, undefined);
  }

  rechecked(account: string): void {
    this.emitted(account); // its rules changed: every remote viewer's view is decided again here
    for (const t of this.live.watchedBy(account)) if (this.remote(t)) this.unwatched(t); // its halves changed
  }

  /** Sends node the views of `target` that changed (all of them, with `q`, for an answer). */
  private push(node: string, target: string, it: Interest, q: number | undefined): void {
    const v: [string, View | null][] = [];
    const known: string[] = [];
    for (const [viewer, h] of it.watchers) {
      const view = this.hooks.exists(target) ? this.live.viewWith(h, viewer, target) : null;
      const key = viewKey(view);
      if (q === undefined && it.sent.get(viewer) === key) continue;
      it.sent.set(viewer, key);
      v.push([viewer, view]);
      if (q !== undefined && this.hooks.knows(target, viewer)) known.push(viewer);
    }
    if (q !== undefined) this.send(node, { t: "v", a: target, v, q, k: known });
    else if (v.length) this.send(node, { t: "v", a: target, v });
  }

  /** Replaces `node`'s interest in `target` (an empty watcher list ends it). */
  private upsert(node: string, target: string, w: Wire[], now: number, q: number | undefined): void {
    let byNode = this.interests.get(target);
    if (w.length === 0) {
      byNode?.delete(node);
      if (byNode?.size === 0) this.interests.delete(target);
      if (q !== undefined) this.send(node, { t: "v", a: target, v: [], q, k: [] });
      return;
    }
    if (!byNode) this.interests.set(target, (byNode = new Map()));
    let it = byNode.get(node);
    if (!it) byNode.set(node, (it = { watchers: new Map(), sent: new Map(), expires: 0 }));
    it.watchers = new Map(w.map(fromWire));
    for (const v of [...it.sent.keys()]) if (!it.watchers.has(v)) it.sent.delete(v);
    it.expires = now + this.leaseMs;
    this.push(node, target, it, q);
  }

  /** An item from peer node `from`. */
  received(from: string, body: unknown, now: number): void {
    const b = body as Body;
    switch (b.t) {
      case "s":
        return this.upsert(from, b.a, b.w, now, b.q);
      case "g": {
        const [viewer, h] = fromWire(b.w[0]!);
        const view = this.hooks.exists(b.a) ? this.live.viewWith(h, viewer, b.a) : null;
        return this.send(from, { t: "v", a: b.a, v: [[viewer, view]], q: b.q, k: this.hooks.knows(b.a, viewer) ? [viewer] : [] });
      }
      case "r": {
        const listed = new Set<string>();
        for (const [t, w] of b.i) {
          listed.add(t);
          this.upsert(from, t, w, now, undefined);
        }
        for (const [t, byNode] of [...this.interests]) {
          if (listed.has(t) || !byNode.delete(from)) continue;
          if (byNode.size === 0) this.interests.delete(t);
        }
        return;
      }
      case "v": {
        if (b.q !== undefined) {
          const ask = this.asks.get(b.q);
          if (ask) {
            const mine = b.v.find(([v]) => v === ask.viewer);
            this.answered(b.q, { v: mine ? mine[1] : null, known: (b.k ?? []).includes(ask.viewer) });
          }
        }
        return this.live.applyRemote(b.a, b.v);
      }
      case "t":
        if (now - b.at > TYPING_MAX_AGE_MS) return;
        return this.hooks.typing(b.f, b.d, b.to, b.s, b.b, b.k);
      case "b":
        return this.hooks.blockedBy(from, b.a, b.by, b.on === true);
      case "B":
        return this.hooks.replaceBlockedBy(from, b.l, b.z === true);
    }
  }

  /** The local account `by` blocked (or unblocked) `account` of another node: resolves once its home has it. */
  block(by: string, account: string, on: boolean): Promise<void> {
    const p = this.peers.send(this.peers.home(account)!, { t: "b", a: account, by, on });
    this.m.items("b").inc();
    return p ?? Promise.resolve();
  }

  /** Every block of a local account against an account of another node, to that node (at start: see `B`). */
  resync(blocks: [blocker: string, blocked: string][]): void {
    const byNode = new Map<string, [string, string][]>(this.peers.nodes().map((n) => [n, []]));
    for (const [by, a] of blocks) byNode.get(this.peers.home(a) ?? "")?.push([a, by]);
    for (const [node, l] of byNode) {
      for (let i = 0; i === 0 || i < l.length; i += RESYNC_CHUNK) this.send(node, i === 0 ? { t: "B", l: l.slice(0, RESYNC_CHUNK), z: true } : { t: "B", l: l.slice(i, i + RESYNC_CHUNK) });
    }
  }

  /** Typing from a local device to an account homed on another node (after the sender's own checks). */
  typing(from: string, device: number, to: string, s: "typing" | "paused", fromBlocks: boolean, fromKnows: boolean): void {
    this.send(this.peers.home(to)!, { t: "t", f: from, d: device, to, s, b: fromBlocks, k: fromKnows, at: Date.now() });
  }

  /** Home: interests past their lease end. Watcher: every interest renewed at a third of the lease. */
  tick(now: number): void {
    for (const [t, byNode] of [...this.interests]) {
      for (const [node, it] of [...byNode]) if (it.expires <= now) byNode.delete(node);
      if (byNode.size === 0) this.interests.delete(t);
    }
    if (now - this.lastRenew < this.leaseMs / 3) return;
    this.lastRenew = now;
    const byHome = new Map<string, [string, Wire[]][]>();
    for (const t of this.live.watchedTargets()) {
      const node = this.peers.home(t);
      if (node === null) continue;
      let l = byHome.get(node);
      if (!l) byHome.set(node, (l = []));
      l.push([t, this.wireOf(t)]);
    }
    for (const [node, i] of byHome) this.send(node, { t: "r", i });
  }

  /** Nodes interested in this node's accounts, and their watcher accounts (for metrics and tests). */
  counts(): { interests: number; watchers: number } {
    let interests = 0;
    let watchers = 0;
    for (const byNode of this.interests.values()) {
      interests += byNode.size;
      for (const it of byNode.values()) watchers += it.watchers.size;
    }
    return { interests, watchers };
  }
}
