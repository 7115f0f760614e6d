/**
 * Who is online: account -> device -> connection, split into shards by a
 * hash of the account name. Sharding keeps each Map small and gives a later
 * cluster layer (issue: scale-out) a unit to hand over; on one process it
 * costs one hash per lookup.
 *
 * Memory: most accounts have one device online, so an account's entry is
 * the session itself until a second device comes online, and only then a
 * Map (an empty Map costs about 250 bytes, which was a sixth of an idle
 * connection's budget).
 */
import { hashName } from "./hash.ts";

/** What the registry needs of a connection; transport's Conn implements it. */
export interface Session {
  readonly account: string;
  readonly device: number;
  /**
   * A receiving session (the default) takes the device's deliveries and is the
   * one `get` returns; there is at most one per device. A non-receiving one
   * (`auth {rx: false}`, docs/PROTOCOL.md §4.3) only sends and gets the
   * answers to its own requests; it neither replaces nor is replaced by the
   * receiving one. Absent means receiving.
   */
  readonly rx?: boolean;
}

/** Non-receiving sessions allowed per device; one more closes the oldest (a CLI one-shot lives seconds). */
export const MAX_SENDERS_PER_DEVICE = 4;

export class Registry<S extends Session = Session> {
  private shards: Map<string, S | Map<number, S>>[];
  private n = 0;
  /** Non-receiving sessions by account\0device, oldest first. Few and short-lived, so one flat Map. */
  private senders = new Map<string, S[]>();
  private nSenders = 0;

  constructor(shardCount = 64) {
    if (!Number.isInteger(shardCount) || shardCount < 1 || (shardCount & (shardCount - 1)) !== 0) {
      throw new RangeError(`Registry: shardCount must be a power of two, got ${shardCount}`);
    }
    this.shards = Array.from({ length: shardCount }, () => new Map());
  }

  private shard(account: string): Map<string, S | Map<number, S>> {
    return this.shards[hashName(account) & (this.shards.length - 1)]!;
  }

  /**
   * Registers a session; returns the session it replaced for the same device,
   * if any: the previous receiving session for a receiving one, the oldest
   * non-receiving one past MAX_SENDERS_PER_DEVICE for a non-receiving one.
   */
  add(s: S): S | undefined {
    if (s.rx === false) return this.addSender(s);
    const shard = this.shard(s.account);
    const e = shard.get(s.account);
    if (e === undefined) {
      shard.set(s.account, s);
      this.n++;
      return undefined;
    }
    if (!(e instanceof Map)) {
      if (e.device === s.device) {
        shard.set(s.account, s);
        return e;
      }
      shard.set(s.account, new Map([[e.device, e], [s.device, s]]));
      this.n++;
      return undefined;
    }
    const old = e.get(s.device);
    e.set(s.device, s);
    if (old === undefined) this.n++;
    return old;
  }

  private addSender(s: S): S | undefined {
    const key = `${s.account}\u0000${s.device}`;
    const list = this.senders.get(key);
    if (list === undefined) this.senders.set(key, [s]);
    else list.push(s);
    this.nSenders++;
    if (list === undefined || list.length <= MAX_SENDERS_PER_DEVICE) return undefined;
    this.nSenders--;
    return list.shift();
  }

  private removeSender(s: S): boolean {
    const key = `${s.account}\u0000${s.device}`;
    const list = this.senders.get(key);
    const i = list === undefined ? -1 : list.indexOf(s);
    if (i < 0) return false;
    list!.splice(i, 1);
    if (list!.length === 0) this.senders.delete(key);
    this.nSenders--;
    return true;
  }

  /** Removes a session only if it is still the registered one (a replaced session must not remove its successor). */
  remove(s: S): boolean {
    if (s.rx === false) return this.removeSender(s);
    const shard = this.shard(s.account);
    const e = shard.get(s.account);
    if (e === undefined) return false;
    if (!(e instanceof Map)) {
      if (e !== s) return false;
      shard.delete(s.account);
    } else {
      if (e.get(s.device) !== s) return false;
      e.delete(s.device);
      if (e.size === 1) shard.set(s.account, e.values().next().value!);
    }
    this.n--;
    return true;
  }

  get(account: string, device: number): S | undefined {
    const e = this.shard(account).get(account);
    if (e === undefined) return undefined;
    if (e instanceof Map) return e.get(device);
    return e.device === device ? e : undefined;
  }

  /** Every session of one device, receiving or not (revocation closes them all). */
  sessionsOf(account: string, device: number): S[] {
    const r = this.get(account, device);
    const others = this.senders.get(`${account}\u0000${device}`) ?? [];
    return r === undefined ? [...others] : [r, ...others];
  }

  /** The online receiving sessions of an account (empty when none). */
  devices(account: string): S[] {
    const e = this.shard(account).get(account);
    if (e === undefined) return [];
    return e instanceof Map ? [...e.values()] : [e];
  }

  /** How many devices of an account are online. */
  online(account: string): number {
    const e = this.shard(account).get(account);
    return e === undefined ? 0 : e instanceof Map ? e.size : 1;
  }

  /** Receiving sessions. */
  get size(): number {
    return this.n;
  }

  /** Non-receiving sessions. */
  get senderCount(): number {
    return this.nSenders;
  }
}
