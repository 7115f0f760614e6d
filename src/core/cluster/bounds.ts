/**
 * Queue bounds of devices homed on another node (queue.max_messages, queue.max_bytes). A module checks a
 * recipient device's usage before it accepts a message (messaging's and groups' bounds checks), on the node the
 * sender is connected to; the queue of a remote recipient is on its home, so that node's usage here is
 * nothing. The home decides instead, with its own data, and tells its peers:
 * - after every enqueue for a device of its own (Delivery.afterEnqueue) it checks the device's usage; one that
 *   reached its bound goes into `full` and every peer up (a heartbeat in the view) gets `f {a, d, on: 1}` at once;
 * - every SWEEP_MS it sends `f on: 1` again for each device still full, and `f on: 0` for one with room again;
 * - its directory answers (`r`) carry the account's full devices, for a peer that asks after a restart.
 * A peer counts a flagged device as at its bound (Delivery.remoteUsage), so the module refuses the send with
 * `queue_full` and its `full` detail before anything is accepted, as on one node. A flag not refreshed within
 * FLAG_MS lapses (a home restarted without it in memory, a lost `on: 0`): at most one message more per lapse.
 * The bound is soft across nodes: what is in flight to the home while its notice travels (one link trip) is
 * queued beyond it; never dropped. Cost: a usage lookup (in memory) per enqueue in cluster mode; items only
 * for full devices (one per peer on the change, then one per SWEEP_MS while full). None on a single node.
 */
import type { Usage } from "../../store/queue.ts";

/** How often the home restates its full devices. */
export const SWEEP_MS = 1_000;
/**
 * A peer's flag lapses this long after the home last stated it: long against a home's event loop stalled under
 * load (a lapsed flag lets a message past the bound), short enough that a device drained while its home restarted
 * (which forgets `full`, so never says `on: 0`) is refused for at most this long.
 */
const FLAG_MS = 10 * SWEEP_MS;

export type BoundItem = { k: "f"; a: string; d: number; on: 0 | 1 };

export class RemoteBounds {
  /** Devices of this node's accounts at their bound, by account. */
  private full = new Map<string, Set<number>>();
  /** Remote devices their homes said are full, with when the flag lapses. */
  private flags = new Map<string, Map<number, number>>();
  private readonly atBound: Usage;
  private static readonly EMPTY: Usage = { n: 0, bytes: 0 };

  constructor(
    private readonly limits: { maxMessages: number; maxBytes: number },
    /** This node's usage of one of its own devices. */
    private readonly usage: (account: string, device: number) => Usage,
    /** Sends an item to every peer. */
    private readonly broadcast: (item: BoundItem) => void,
  ) {
    this.atBound = { n: limits.maxMessages, bytes: limits.maxBytes };
  }

  private isFull(account: string, device: number): boolean {
    const u = this.usage(account, device);
    // 96 bytes: the delivery stanza around a payload, as the modules' checks count it; full = no message fits.
    return u.n >= this.limits.maxMessages || u.bytes + 96 >= this.limits.maxBytes;
  }

  /** Home side, after an item was queued for one of this node's devices. */
  enqueued(account: string, device: number): void {
    if (this.full.get(account)?.has(device) || !this.isFull(account, device)) return;
    let s = this.full.get(account);
    if (s === undefined) this.full.set(account, (s = new Set()));
    s.add(device);
    this.broadcast({ k: "f", a: account, d: device, on: 1 });
  }

  /** Home side, every SWEEP_MS: restates the full devices, and says which have room again. */
  sweep(): void {
    for (const [a, s] of this.full) {
      for (const d of s) {
        const on = this.isFull(a, d);
        if (!on) s.delete(d);
        this.broadcast({ k: "f", a, d, on: on ? 1 : 0 });
      }
      if (s.size === 0) this.full.delete(a);
    }
  }

  /** Home side: the full devices of `account`, for a directory answer. */
  fullOf(account: string): number[] | undefined {
    const s = this.full.get(account);
    return s === undefined || s.size === 0 ? undefined : [...s];
  }

  /** Peer side: a home's notice about one device. */
  received(it: BoundItem): void {
    this.flag(it.a, it.d, it.on === 1);
  }

  /** Peer side: a directory answer of the account's home, with its full devices (the others have room). */
  answered(account: string, full: number[] | undefined): void {
    this.flags.delete(account);
    for (const d of full ?? []) this.flag(account, d, true);
  }

  private flag(account: string, device: number, on: boolean): void {
    let m = this.flags.get(account);
    if (!on) {
      m?.delete(device);
      if (m?.size === 0) this.flags.delete(account);
      return;
    }
    if (m === undefined) this.flags.set(account, (m = new Map()));
    m.set(device, performance.now() + FLAG_MS);
  }

  /** Peer side: the usage of a remote device as its home last stated it (at its bound, or nothing). */
  remoteUsage(account: string, device: number): Usage {
    const until = this.flags.get(account)?.get(device);
    if (until === undefined) return RemoteBounds.EMPTY;
    if (until > performance.now()) return this.atBound;
    this.flag(account, device, false);
    return RemoteBounds.EMPTY;
  }
}
