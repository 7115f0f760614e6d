/**
 * Who is online: account -> device -> connection, split into shards by a
 * hash of the account name. Sharding keeps each Map small and gives a later
 * cluster layer (issue: scale-out) a unit to hand over; on one process it
 * costs one hash per lookup.
 */
import { hashName } from "../store/queue-sqlite.ts";

/** What the registry needs of a connection; transport's Conn implements it. */
export interface Session {
  readonly account: string;
  readonly device: number;
}

export class Registry<S extends Session = Session> {
  private shards: Map<string, Map<number, S>>[];
  private n = 0;

  constructor(shardCount = 64) {
    if (!Number.isInteger(shardCount) || shardCount < 1 || (shardCount & (shardCount - 1)) !== 0) {
      throw new RangeError(`Registry: shardCount must be a power of two, got ${shardCount}`);
    }
    this.shards = Array.from({ length: shardCount }, () => new Map());
  }

  private shard(account: string): Map<string, Map<number, S>> {
    return this.shards[hashName(account) & (this.shards.length - 1)]!;
  }

  /** Registers a session; returns the session it replaced for the same device, if any. */
  add(s: S): S | undefined {
    const shard = this.shard(s.account);
    let devices = shard.get(s.account);
    if (!devices) shard.set(s.account, (devices = new Map()));
    const old = devices.get(s.device);
    devices.set(s.device, s);
    if (!old) this.n++;
    return old;
  }

  /** Removes a session only if it is still the registered one (a replaced session must not remove its successor). */
  remove(s: S): boolean {
    const shard = this.shard(s.account);
    const devices = shard.get(s.account);
    if (!devices || devices.get(s.device) !== s) return false;
    devices.delete(s.device);
    if (devices.size === 0) shard.delete(s.account);
    this.n--;
    return true;
  }

  get(account: string, device: number): S | undefined {
    return this.shard(account).get(account)?.get(device);
  }

  /** The online devices of an account (do not mutate). */
  devices(account: string): ReadonlyMap<number, S> | undefined {
    return this.shard(account).get(account);
  }

  get size(): number {
    return this.n;
  }

  *all(): IterableIterator<S> {
    for (const shard of this.shards) for (const devices of shard.values()) yield* devices.values();
  }
}
