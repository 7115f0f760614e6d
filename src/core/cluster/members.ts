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
 * A list missing a node of the recorded one (a removal) is taken only when nothing of the removed node can be
 * stranded, checked and recorded in one script (LEAVE): it is not live (no heartbeat), every shard whose home is
 * it (its placement under the recorded list, or a move to it) has a recorded move in `<p>homes` to another node,
 * and its last stop recorded that it held nothing (`<p>drained:<id>`, written by `stopped` at a clean stop with no
 * lease, no home and no move's intent left here: a move's leftovers are still on the node until then). No pins are
 * needed, unlike JOIN: rendezvous hashing over the shorter list changes the placement of the removed node's shards
 * only, and each of those has its recorded home already (the condition), which routing reads before placement.
 * Otherwise the start is refused, and the message names the procedure (docs/CLUSTER.md "Removing a node").
 * Adding and removing at once is refused: one change at a time. The check waits for Redis: without it a node can
 * hold no lease anyway.
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

/**
 * KEYS: list, homes, then per removed node its heartbeat key and its drained mark; ARGV: the list read, the new list,
 * the number g of removed nodes, their ids, then the shards placed on them under the list read. Records the new
 * list only if nothing is stranded: `{1}`; `{0, current}`: the record changed; `{2, id}`: that node is live;
 * `{4, count, shards...}`: shards whose only data is on a removed node (the first 8); `{3, id}`: that node's last
 * stop did not record that it held nothing.
 */
export const LEAVE = new Script("leave", `
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return {0, cur} end
local g = tonumber(ARGV[3])
local gone = {}
for i = 1, g do
  if redis.call('EXISTS', KEYS[1 + 2 * i]) == 1 then return {2, ARGV[3 + i]} end
  gone[ARGV[3 + i]] = true
end
local homed, stranded = {}, {}
local h = redis.call('HGETALL', KEYS[2])
for i = 1, #h, 2 do
  homed[h[i]] = true
  if gone[string.match(h[i + 1], '^(.*)|')] then stranded[#stranded + 1] = h[i] end
end
for i = 4 + g, #ARGV do if not homed[ARGV[i]] then stranded[#stranded + 1] = ARGV[i] end end
if #stranded > 0 then
  local out = {4, #stranded}
  for i = 1, math.min(8, #stranded) do out[#out + 1] = stranded[i] end
  return out
end
for i = 1, g do if redis.call('EXISTS', KEYS[2 + 2 * i]) == 0 then return {3, ARGV[3 + i]} end end
redis.call('SET', KEYS[1], ARGV[2])
return {1}`);

/**
 * KEYS: nodes set, this node's heartbeat, its drained mark, the events channel; ARGV: its id, 1 if it holds nothing,
 * the `left` event. The event makes the others read the view at once (leases.ts: any event but `acq` kicks a tick),
 * so a drain that starts right after this stop does not pick this node, whose link would never ack (30 s lost).
 */
const STOPPED = new Script("stopped", `
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
if ARGV[2] == '1' then redis.call('SET', KEYS[3], '1') else redis.call('DEL', KEYS[3]) end
redis.call('PUBLISH', KEYS[4], ARGV[3])
return 1`);

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
 * Records `nodes` as the cluster's list, pinning what an added node would strand, or, for a removed node, once
 * nothing of it is stranded (LEAVE); throws NodeListRefused otherwise, naming the fix. Then this node takes part:
 * its drained mark goes (from now on it may hold shards). Returns the number of shards pinned.
 */
export async function joinList(link: RedisLink, prefix: string, nodes: readonly string[], self: string, retryMs = 100): Promise<number> {
  const pinned = await recordList(link, prefix, nodes, retryMs);
  while (!(await link.call("DEL", [`${prefix}drained:${self}`])).ok) {
    if (link.closed) throw new Error("cluster: stopped before this node could take part");
    await Bun.sleep(retryMs);
  }
  return pinned;
}

/**
 * At a clean stop, after the leases went back: the heartbeat goes at once (a removal need not wait a TTL for it),
 * and `empty` (no lease, no home, no move's intent here: what a complete drain leaves) is recorded as the node's
 * drained mark, which a removal requires. One try: a mark not written only refuses a removal (the safe side).
 */
export async function stopped(link: RedisLink, prefix: string, self: string, empty: boolean): Promise<void> {
  const keys = [`${prefix}nodes`, `${prefix}node:${self}`, `${prefix}drained:${self}`, `${prefix}events`];
  await link.script(STOPPED, keys, [self, empty ? 1 : 0, JSON.stringify({ t: "left", node: self })]);
}

const procedure = 'docs/CLUSTER.md "Removing a node"';

async function recordList(link: RedisLink, prefix: string, nodes: readonly string[], retryMs: number): Promise<number> {
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
      const refusal = (why: string) => new NodeListRefused(`cluster.nodes (${want}) lacks ${gone.join(",")}, which the running cluster uses (${cur}): ${why}`);
      if (nodes.some((n) => !recorded.includes(n))) throw refusal(`adding and removing nodes at once is not supported; start this node with cluster.nodes = "${cur}", then make one change at a time (${procedure})`);
      const placed = new Assignment(recorded);
      const args: (string | number)[] = [cur, want, gone.length, ...gone];
      for (let s = 0; s < placed.shardCount; s++) if (gone.includes(placed.ownerOf(s)!)) args.push(s);
      const keys = [`${prefix}list`, `${prefix}homes`, ...gone.flatMap((id) => [`${prefix}node:${id}`, `${prefix}drained:${id}`])];
      const l = await link.script<[number, ...(string | number)[]]>(LEAVE, keys, args);
      if (!l.ok) continue; // Redis went away between the two steps: read again
      const [code, a, ...more] = l.value;
      const again = `start ${gone.join(",")} again with cluster.nodes = "${cur}" and stop it with SIGTERM (the drain moves its shards to the other nodes), or keep it: start this node with cluster.nodes = "${cur}" (${procedure})`;
      if (code === 2) throw refusal(`${a} is up (its heartbeat is in Redis): to keep it, start this node with cluster.nodes = "${cur}"; to remove it, stop it first with SIGTERM (the drain moves its shards to the other nodes) and keep it stopped (${procedure})`);
      if (code === 4) throw refusal(`the only data of ${a} shards (${more.join(",")}${Number(a) > more.length ? ",..." : ""}) is there: ${again}`);
      if (code === 3) throw refusal(`${a}'s last stop did not record that it held nothing (it held shards or a move's leftovers then, or Redis restarted empty since): ${again}`);
      if (code === 1) {
        log.info("cluster: nodes removed; the list recorded (their shards live where their drain moved them)", { from: cur, to: want, removed: gone });
        return 0;
      }
      continue; // the record changed since it was read
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
