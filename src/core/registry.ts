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
import { hashName } from "../store/queue-sqlite.ts";

/** What the registry needs of a connection; transport's Conn implements it. */
export interface Session {
  readonly account: string;
  readonly device: number;
}

export class Registry<S extends Session = Session> {
  private shards: Map<string, S | Map<number, S>>[];
  private n = 0;

  constructor(shardCount = 64) {
    if (!Number.isInteger(shardCount) || shardCount < 1 || (shardCount & (shardCount - 1)) !== 0) {
      throw new RangeError(`Registry: shardCount must be a power of two, got ${shardCount}`);
    }
    this.shards = Array.from({ length: shardCount }, () => new Map());
  }

  private shard(account: string): Map<string, S | Map<number, S>> {
    return this.shards[hashName(account) & (this.shards.length - 1)]!;
  }

  /** Registers a session; returns the session it replaced for the same device, if any. */
  add(s: S): S | undefined {
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

  /** Removes a session only if it is still the registered one (a replaced session must not remove its successor). */
  remove(s: S): boolean {
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

  /** The online sessions of an account (empty when none). */
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

  get size(): number {
    return this.n;
  }

  *all(): IterableIterator<S> {
    for (const shard of this.shards) {
      for (const e of shard.values()) {
        if (e instanceof Map) yield* e.values();
        else yield e;
      }
    }
  }
}
