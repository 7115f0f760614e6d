/**
 * Home shards and who should own them.
 *
 * An account's shard is `hashName(account) % shardCount`: a fixed, large count
 * (4096) that does not depend on how many nodes there are, so adding a node
 * moves whole shards and never re-hashes an account. `hashName` is the FNV-1a
 * the SQLite queue store and the registry use too (src/core/hash.ts).
 *
 * Assignment is rendezvous (highest-random-weight) hashing: shard s goes to the
 * live node with the highest score(node, s). Every node computes the same
 * answer from the same node list, with no coordination, and a change of the
 * list moves only the shards it must: when a node leaves, only its shards move
 * (each to its own runner-up); when one joins, only the shards it now wins
 * (about 1/N of them). FNV-1a alone mixes short inputs poorly, so the score
 * finishes with murmur3's fmix32.
 */
import { hashName } from "../hash.ts";

export const DEFAULT_SHARDS = 4096;

/** cluster.nodes ("n1,n2, n3") as a list of distinct ids. */
export function parseNodes(list: string): string[] {
  return [...new Set(list.split(",").map((n) => n.trim()).filter(Boolean))];
}

/**
 * The account of node `node`'s cross-node canary device (src/ops/canary.ts): internal (the `switchboard.` prefix,
 * which `user add` refuses), and homed on that node, not hashed (ClusterNode). The node id is hashed into it because
 * account names are short and lowercase; two ids of one cluster with the same hash (1 in 2^32 a pair) share it.
 */
export function crossCanaryAccount(node: string): string {
  return `switchboard.canary-x.${hashName(node).toString(16).padStart(8, "0")}`;
}

export function shardOf(account: string, shardCount = DEFAULT_SHARDS): number {
  return hashName(account) % shardCount;
}

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The rendezvous score of a node for a shard; ties (1 in 2^32) break by node id. */
export function score(nodeHash: number, shard: number): number {
  return fmix32(nodeHash ^ fmix32(shard + 0x9e3779b9));
}

/** Precomputed node hashes, so that scoring 4096 shards × N nodes costs N·4096 mixes (≈ 0.1 ms for 3 nodes). */
export class Assignment {
  private readonly nodes: { id: string; hash: number }[];

  constructor(nodeIds: Iterable<string>, readonly shardCount = DEFAULT_SHARDS) {
    this.nodes = [...new Set(nodeIds)].sort().map((id) => ({ id, hash: fmix32(hashName(id)) }));
  }

  get size(): number {
    return this.nodes.length;
  }

  /** The node that should own the shard, or null with no live node. */
  ownerOf(shard: number): string | null {
    let best: string | null = null;
    let bestScore = -1;
    for (const n of this.nodes) {
      const sc = score(n.hash, shard);
      if (sc > bestScore) {
        best = n.id;
        bestScore = sc;
      }
    }
    return best;
  }

  /** Every shard this node should own, ascending. */
  shardsOf(nodeId: string): number[] {
    const out: number[] = [];
    for (let s = 0; s < this.shardCount; s++) if (this.ownerOf(s) === nodeId) out.push(s);
    return out;
  }
}
