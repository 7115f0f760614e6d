/**
 * Live presence: which accounts are online (a device said `active`), their
 * last seen, and the leased subscriptions of devices to the accounts whose
 * chats they have open. Memory only, keyed by account; last seen also goes to
 * the store, at most every `last_seen_write` per online account and once when
 * the account goes offline. Written behind: the offline values wait in memory
 * (LiveData.unwritten, which answers for them meanwhile) and go in one
 * transaction every `last_seen_flush_ms`, not one autocommit per account (a
 * reconnect storm's cut sent thousands of ≈ 10 µs writes through the event
 * loop, BENCHMARKS.md). A clean stop writes them all; a crash loses at most
 * one interval of offline values (the account keeps its previous last seen:
 * the last periodic write or the one before), never a watcher's frame.
 *
 * Every frame about an account leaves through `emit(account)`: one function,
 * from which cluster mode (cluster.ts, `peer`) also sends one item per
 * interested node; subscriptions to accounts of other nodes take the views
 * their home decided (`put`, `applyRemote`).
 * Hysteresis: an account whose last active device leaves is announced
 * offline only after `grace_ms`, so a reconnect within it emits nothing;
 * changes of one account go out at most once per `coalesce_ms` (the first
 * at once, the rest as one frame with the state at the end of the window).
 * Privacy is computed again for every watcher at every emit (rules.ts).
 *
 * The state is plain data (LiveData, kept by ctx.shared across reloads); the
 * only timer is the module's one tick, which the instance owns.
 */
import type { Conn } from "../../transport/connection.ts";
import type { Counter } from "../../core/metrics.ts";
import type { StorageView } from "../../core/context.ts";
import { half, visibilityOf, type Half, type RulesCache } from "./rules.ts";
import type { PresenceStore } from "./store.ts";

/** What a watcher is shown of an account: only the fields it may see (an absent field is a hidden one). */
export interface View {
  online?: boolean;
  ls?: number;
}

interface Sub {
  conn: Conn;
  target: string;
  expires: number;
  /** The last view sent, to send only changes. */
  sent: View;
}

interface AccountLive {
  /** This account's connections that said `active`. */
  active: Set<Conn>;
  /** The announced state: true from the first `active` until grace_ms after the last device left. */
  online: boolean;
  /** > 0: the last active device left at this time; offline is announced when grace_ms has passed. */
  leftAt: number;
  /** Last seen shown (minute-granular ms; null if never). While online, the value from before: watchers who see last seen but not online learn nothing from a login. */
  lastSeen: number | null;
  /** When last seen was last written for this account (ms, 0: not in this process). */
  writtenAt: number;
  writtenValue: number | null;
  lastEmit: number;
}

export interface LiveData {
  accounts: Map<string, AccountLive>;
  subs: Map<Conn, Map<string, Sub>>;
  watchers: Map<string, Set<Sub>>;
  online: Set<string>;
  leaving: Set<string>;
  pendingEmit: Set<string>;
  /**
   * Last-seen values (account -> minute) not in the store yet: written behind (the next flush), or refused by a full
   * disk (written with the next write that succeeds). Read before the store's value, which is older. The announcement
   * never waits for the disk: a failed write used to throw out of the grace loop after the account was marked
   * offline and before anyone was told (issue 17). Here, not in Live, so a module reload keeps them.
   */
  unwritten: Map<string, number>;
}

export function newLiveData(): LiveData {
  return { accounts: new Map(), subs: new Map(), watchers: new Map(), online: new Set(), leaving: new Set(), pendingEmit: new Set(), unwritten: new Map() };
}

export interface LiveSettings {
  graceMs: number;
  coalesceMs: number;
  leaseMs: number;
  lastSeenWriteMs: number;
  /** Milliseconds between the transactions that write the offline last-seen values held in memory. */
  lastSeenFlushMs: number;
}

/**
 * Cluster mode (cluster.ts): accounts homed on other nodes. Their state and rules are on their home, which
 * computes every view; this node keeps its devices' subscriptions to them and applies what the home sends.
 */
export interface LivePeer {
  /** True when `account` is homed on another node. */
  remote(account: string): boolean;
  /** A local account's state went out to its local watchers: now to the nodes interested in it. */
  emitted(account: string): void;
  /** A local account's rules changed: re-check the remote interest in it, and its own remote subscriptions. */
  rechecked(account: string): void;
  /** The set of local watchers of a remote account changed. */
  unwatched(target: string): void;
}

export const minute = (t: number): number => Math.floor(t / 60_000) * 60_000;

function sameView(a: View, b: View): boolean {
  return a.online === b.online && a.ls === b.ls;
}

export class Live {
  private lastLeaseScan = 0;
  // Not 0: a scan at the first tick finds nothing to write (accounts count from when they are first seen) and would
  // take the held last-seen values out of their interval.
  private lastWriteScan = Date.now();

  constructor(
    private d: LiveData,
    private rules: RulesCache,
    private store: PresenceStore,
    private s: LiveSettings,
    private m: { frames: Counter; changes: Counter },
    private storage: StorageView | null = null,
    /** Set in cluster mode (cluster.ts). */
    public peer: LivePeer | null = null,
  ) {}

  /** When the held last-seen values were last written (or a write failed: then the retry waits storage.retryMs). */
  private lastFlush = Date.now();
  private lastFailed = false;

  private account(name: string): AccountLive {
    let a = this.d.accounts.get(name);
    if (a === undefined) {
      const ls = this.storedLastSeen(name);
      // writtenAt: as if written now, so the first periodic write comes presence.last_seen_write after the account is
      // first seen here, not at the next scan (which wrote once for every account's first login of the process).
      a = { active: new Set(), online: false, leftAt: 0, lastSeen: ls, writtenAt: Date.now(), writtenValue: ls, lastEmit: 0 };
      this.d.accounts.set(name, a);
    }
    return a;
  }

  /** Drops an account's entry once nothing refers to it (offline, unwatched, nothing pending). */
  private release(name: string): void {
    const a = this.d.accounts.get(name);
    if (a && !a.online && a.active.size === 0 && !this.d.watchers.has(name) && !this.d.pendingEmit.has(name)) this.d.accounts.delete(name);
  }

  isOnline(name: string): boolean {
    return this.d.accounts.get(name)?.online ?? false;
  }

  /** A device says it is in use (`active`) or not (`idle`). */
  setState(conn: Conn, active: boolean, now: number): void {
    const a = this.account(conn.account);
    if (active) {
      a.active.add(conn);
      if (a.leftAt > 0) {
        a.leftAt = 0; // back within the grace: nothing was announced, nothing is
        this.d.leaving.delete(conn.account);
      }
      if (!a.online) {
        a.online = true;
        this.d.online.add(conn.account);
        this.changed(conn.account, a, now);
      }
    } else if (a.active.delete(conn) && a.active.size === 0 && a.online) {
      a.leftAt = now;
      this.d.leaving.add(conn.account);
    } else this.release(conn.account);
  }

  /** The connection is gone: its subscriptions end (no frame: nobody to send it to) and it is no longer active. */
  closed(conn: Conn, now: number): void {
    const mine = this.d.subs.get(conn);
    if (mine) {
      this.d.subs.delete(conn);
      for (const sub of mine.values()) this.unwatch(sub);
    }
    if (this.d.accounts.has(conn.account)) this.setState(conn, false, now);
  }

  /** What `viewer` may be shown of `target` now; null when nothing (blocked, or both fields hidden). */
  view(viewer: string, target: string): View | null {
    return this.viewWith(half(viewer, this.rules.get(viewer), target), viewer, target);
  }

  /** What a viewer whose half of the rule is `h` may be shown of `target` (an account of this node) now. */
  viewWith(h: Half, viewer: string, target: string): View | null {
    const vis = visibilityOf(h, viewer, target, this.rules.get(target));
    if (!vis.online && !vis.lastSeen) return null;
    const a = this.d.accounts.get(target);
    const online = a?.online ?? false;
    const ls = a ? a.lastSeen : this.storedLastSeen(target);
    const v: View = {};
    if (vis.online) v.online = online;
    if (vis.lastSeen && !(online && vis.online) && ls !== null) v.ls = ls;
    return v;
  }

  private storedLastSeen(name: string): number | null {
    const t = this.d.unwritten.get(name) ?? this.rules.get(name).storedLastSeen;
    return t === null ? null : minute(t);
  }

  subscriptionCount(conn: Conn): number {
    return this.d.subs.get(conn)?.size ?? 0;
  }

  isSubscribed(conn: Conn, target: string): boolean {
    return this.d.subs.get(conn)?.has(target) ?? false;
  }

  /** Subscribes or renews; returns the view sent as the answer, or null (not subscribed: nothing may be seen). */
  subscribe(conn: Conn, target: string, now: number): View | null {
    return this.put(conn, target, this.view(conn.account, target), now);
  }

  /** Subscribes (or renews) with the view `v` its home decided; null `v`: not allowed, any subscription ends. */
  put(conn: Conn, target: string, v: View | null, now: number): View | null {
    let mine = this.d.subs.get(conn);
    const existing = mine?.get(target);
    if (v === null) {
      if (existing) this.drop(existing);
      return null;
    }
    if (existing) {
      existing.expires = now + this.s.leaseMs;
      existing.sent = v;
      return v;
    }
    if (mine === undefined) this.d.subs.set(conn, (mine = new Map()));
    const sub: Sub = { conn, target, expires: now + this.s.leaseMs, sent: v };
    mine.set(target, sub);
    let w = this.d.watchers.get(target);
    if (w === undefined) this.d.watchers.set(target, (w = new Set()));
    w.add(sub);
    if (!this.peer?.remote(target)) this.account(target);
    return v;
  }

  /** The views a remote target's home decided for local viewers: sent where they changed; null ends with privacy. */
  applyRemote(target: string, views: [viewer: string, v: View | null][]): void {
    const w = this.d.watchers.get(target);
    if (!w) return;
    const by = new Map(views);
    for (const sub of [...w]) {
      if (!by.has(sub.conn.account)) continue;
      const v = by.get(sub.conn.account)!;
      if (v === null) this.end(sub, "privacy");
      else if (!sameView(v, sub.sent)) {
        sub.sent = v;
        sub.conn.send({ t: "pst", u: sub.target, ...v });
        this.m.frames.inc();
      }
    }
  }

  /** The viewer accounts watching `target` from this node, each with its half of the rule now. */
  halves(target: string): Map<string, Half> {
    const out = new Map<string, Half>();
    for (const sub of this.d.watchers.get(target) ?? []) {
      const v = sub.conn.account;
      if (!out.has(v)) out.set(v, half(v, this.rules.get(v), target));
    }
    return out;
  }

  /** Accounts watched from this node that `account`'s devices watch (its own subscriptions). */
  watchedBy(account: string): Set<string> {
    const out = new Set<string>();
    for (const [conn, mine] of this.d.subs) if (conn.account === account) for (const t of mine.keys()) out.add(t);
    return out;
  }

  /** Every watched account (for the cluster's renewal of remote interest). */
  watchedTargets(): IterableIterator<string> {
    return this.d.watchers.keys();
  }

  unsubscribe(conn: Conn, target: string): void {
    const sub = this.d.subs.get(conn)?.get(target);
    if (sub) this.drop(sub);
  }

  private unwatch(sub: Sub): void {
    const w = this.d.watchers.get(sub.target);
    if (w) {
      w.delete(sub);
      if (w.size === 0) {
        this.d.watchers.delete(sub.target);
        this.release(sub.target);
      }
    }
    if (this.peer?.remote(sub.target)) this.peer.unwatched(sub.target);
  }

  private drop(sub: Sub): void {
    const mine = this.d.subs.get(sub.conn);
    mine?.delete(sub.target);
    if (mine?.size === 0) this.d.subs.delete(sub.conn);
    this.unwatch(sub);
  }

  /** Ends a subscription and tells its device why. */
  private end(sub: Sub, why: "privacy" | "lease"): void {
    this.drop(sub);
    sub.conn.send({ t: "pst", u: sub.target, end: why });
    this.m.frames.inc();
  }

  /** The privacy check of one watcher, and the frame if its view changed. */
  private deliver(sub: Sub): void {
    if (this.peer?.remote(sub.target)) return; // its home decides (applyRemote)
    const v = this.view(sub.conn.account, sub.target);
    if (v === null) return this.end(sub, "privacy");
    if (sameView(v, sub.sent)) return;
    sub.sent = v;
    sub.conn.send({ t: "pst", u: sub.target, ...v });
    this.m.frames.inc();
  }

  private changed(name: string, a: AccountLive, now: number): void {
    this.m.changes.inc();
    if (this.d.pendingEmit.has(name)) return;
    if (now - a.lastEmit >= this.s.coalesceMs) this.emit(name, a, now);
    else this.d.pendingEmit.add(name);
  }

  /** The one way out for an account's state: every watcher, each checked against the rules now. */
  private emit(name: string, a: AccountLive, now: number): void {
    a.lastEmit = now;
    const w = this.d.watchers.get(name);
    if (w) for (const sub of [...w]) this.deliver(sub);
    this.peer?.emitted(name);
  }

  /**
   * The rules of `name` changed (privacy, contacts, blocks): every subscription
   * they bear on is checked now, not at the next change: to `name` (others
   * watching it) and from `name` (its own devices watching others: reciprocity).
   */
  recheck(name: string): void {
    const w = this.d.watchers.get(name);
    if (w) for (const sub of [...w]) this.deliver(sub);
    for (const [conn, mine] of [...this.d.subs]) {
      if (conn.account !== name) continue;
      for (const sub of [...mine.values()]) this.deliver(sub);
    }
    this.peer?.rechecked(name);
  }

  /** Grace expiry, coalesced emits, lease expiry, the periodic last-seen write. */
  tick(now: number): void {
    for (const name of [...this.d.leaving]) {
      const a = this.d.accounts.get(name);
      if (!a || a.leftAt === 0) {
        this.d.leaving.delete(name);
        continue;
      }
      if (now - a.leftAt < this.s.graceMs) continue;
      this.d.leaving.delete(name);
      this.d.online.delete(name);
      a.online = false;
      a.lastSeen = minute(a.leftAt);
      a.leftAt = 0;
      if (a.writtenValue !== a.lastSeen) this.d.unwritten.set(name, a.lastSeen);
      this.changed(name, a, now);
      this.release(name);
    }
    for (const name of [...this.d.pendingEmit]) {
      const a = this.d.accounts.get(name);
      if (!a) {
        this.d.pendingEmit.delete(name);
        continue;
      }
      if (now - a.lastEmit < this.s.coalesceMs) continue;
      this.d.pendingEmit.delete(name);
      this.emit(name, a, now);
      this.release(name);
    }
    if (now - this.lastLeaseScan >= this.s.leaseMs / 4) {
      this.lastLeaseScan = now;
      for (const mine of [...this.d.subs.values()]) for (const sub of [...mine.values()]) if (sub.expires <= now) this.end(sub, "lease");
    }
    const wait = this.lastFailed ? (this.storage?.retryMs ?? 1000) : this.s.lastSeenFlushMs;
    if (this.d.unwritten.size > 0 && now - this.lastFlush >= wait) this.write([], now);
    if (now - this.lastWriteScan >= this.s.lastSeenWriteMs / 4) {
      this.lastWriteScan = now;
      const rows: [string, number][] = [];
      for (const name of this.d.online) {
        const a = this.d.accounts.get(name);
        if (a && now - a.writtenAt >= this.s.lastSeenWriteMs) rows.push([name, minute(now)]);
      }
      this.write(rows, now);
    }
  }

  /** Writes the last seen of every online account (at stop: they are about to be offline) and every held one. */
  writeOnline(now: number): void {
    this.write([...this.d.online].map((n) => [n, minute(now)] as [string, number]), now);
  }

  /** Writes the held last-seen values now (before a shard move exports the rows). */
  flush(now: number): void {
    if (this.d.unwritten.size > 0) this.write([], now);
  }

  /** The account is deleted: a held value must not write its row again. */
  forget(name: string): void {
    this.d.unwritten.delete(name);
  }

  /** One transaction: `rows` and every held value (a row of `rows` is newer than the held value of its account). */
  private write(rows: [string, number][], now: number): void {
    const named = new Set(rows.map((r) => r[0]));
    for (const [name, ts] of this.d.unwritten) if (!named.has(name)) rows.push([name, ts]);
    this.lastFlush = now;
    if (rows.length === 0) return;
    try {
      this.store.setLastSeen(rows);
    } catch (e) {
      // The disk (full, I/O error): the transaction rolled back whole; keep the rows, raise the alarm, try again.
      if (!this.storage?.fault("presence", e)) throw e;
      for (const [name, ts] of rows) this.d.unwritten.set(name, ts);
      this.lastFailed = true;
      return;
    }
    this.d.unwritten.clear();
    if (this.lastFailed) {
      this.lastFailed = false;
      this.storage?.healthy("presence");
    }
    for (const [name, ts] of rows) {
      const a = this.d.accounts.get(name);
      if (a) {
        a.writtenAt = now;
        a.writtenValue = ts;
      }
      this.rules.get(name).storedLastSeen = ts;
    }
  }
}
