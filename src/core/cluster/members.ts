/**
 * The node list the running cluster uses (`<p>list` in Redis), checked by every node before it takes part, so
 * that a changed `cluster.nodes` never strands a shard. Placement is rendezvous hashing over cluster.nodes and a
 * shard's data stays where it was written, so a list with one more node moves the placement of about 1/N of the
 * shards onto it while their rows are still on their old node. A node started with such a list therefore pins
 * first: every shard whose placement differs between the recorded list and its own gets a home in `<p>homes`
 * (homes.ts, the record moves write) naming its placement under the recorded list, where its data is, at epoch
 * 0 (below every move, so a later move, including an earlier one already recorded, always wins). The pins and
 * the new list are written in one script (JOIN): nodes that start at once compute against the same record, and
 * every node computes the same pins from the two lists. Then `cluster rebalance` moves the pinned shards onto
 * their new placement with the ordinary move (docs/CLUSTER.md "Adding a node").
 * A list missing a node of the recorded one (a removal) is refused: its placements would move off a node whose
 * data nobody ships. The check waits for Redis: without it a node can hold no lease anyway.
 */
import { log } from "../log.ts";
import type { RedisLink } from "./redis.ts";
import { Script } from "./redis.ts";
import { Assignment } from "./shards.ts";

/** A start refused because cluster.nodes differs from the list the cluster runs with: the message names the fix. */
export class NodeListRefused extends Error {}

/** `{1}`: pinned and recorded; `{0, current}`: the record changed since it was read (the caller reads again). */
export const JOIN = new Script("join", `
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return {0, cur} end
for i = 3, #ARGV, 2 do redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('SET', KEYS[1], ARGV[2])
return {1}`);

const listOf = (ids: readonly string[]): string => [...ids].sort().join(",");

/** Shard → the node its data is on, for every shard whose placement differs between the two lists. */
export function pinsFor(recorded: readonly string[], next: readonly string[], shardCount?: number): Map<number, string> {
  const a = new Assignment([...recorded], shardCount);
  const b = new Assignment([...next], shardCount);
  const pins = new Map<number, string>();
  for (let s = 0; s < a.shardCount; s++) if (a.ownerOf(s) !== b.ownerOf(s)) pins.set(s, a.ownerOf(s)!);
  return pins;
}

/**
 * Records `nodes` as the cluster's list, pinning what an added node would strand; throws NodeListRefused when
 * the list drops a node the cluster uses. Returns the number of shards pinned (0 when the list is unchanged).
 */
export async function joinList(link: RedisLink, prefix: string, nodes: readonly string[], retryMs = 100): Promise<number> {
  const want = listOf(nodes);
  // The first tries fail while the connection is still being made (no offline queue: redis.ts); warned after ~2 s.
  for (let failed = 0; ; ) {
    const r = await link.call<string | null>("GET", [`${prefix}list`]);
    if (!r.ok) {
      if (link.closed) throw new Error("cluster: stopped before cluster.nodes could be checked against the cluster's list");
      if (++failed === 20) log.warn("cluster: waiting for Redis to check cluster.nodes against the cluster's list", { reason: r.reason, message: r.message });
      await Bun.sleep(retryMs);
      continue;
    }
    const cur = r.value ?? "";
    if (cur === want) return 0;
    const recorded = cur === "" ? [] : cur.split(",");
    const gone = recorded.filter((n) => !nodes.includes(n));
    if (gone.length > 0) {
      throw new NodeListRefused(
        `cluster.nodes (${want}) lacks ${gone.join(",")}, which the running cluster uses (${cur}): start this node with cluster.nodes = "${cur}"` +
          ` (removing a node is not supported: its shards' data would be stranded)`,
      );
    }
    // First start of a cluster (nothing recorded): nothing was placed before, so nothing to pin.
    const pins = recorded.length === 0 ? new Map<number, string>() : pinsFor(recorded, nodes);
    const args: (string | number)[] = [cur, want];
    for (const [s, node] of pins) args.push(s, `${node}|0`);
    const j = await link.script<[number, string?]>(JOIN, [`${prefix}list`, `${prefix}homes`], args);
    if (!j.ok) continue; // Redis went away between the two steps: read again
    if (j.value[0] === 1) {
      if (pins.size > 0) log.info("cluster: nodes added; shards pinned to the nodes their data is on (run `switchboard cluster rebalance` once every node runs the new list)", { from: cur, to: want, pinned: pins.size });
      return pins.size;
    }
  }
}
