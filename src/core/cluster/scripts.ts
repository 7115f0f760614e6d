/**
 * The Lua scripts behind leases and membership: each is one atomic step on one
 * Redis primary, so no lease decision is ever split over two round trips.
 *
 * Keys (prefix `sb:` by default):
 *   <p>lease:<s>  "node|epoch", PX ttl       the lease of shard s
 *   <p>epoch:<s>  integer, no TTL            the highest epoch handed out for s
 *   <p>boot       Redis TIME (ms) when the lease keys were first touched since Redis last started empty
 *   <p>nodes      set of node ids;  <p>node:<id>  advertised address, PX ttl (the heartbeat)
 *
 * Redis is soft state. When it restarts empty (or is flushed), `boot` is gone,
 * and the first script to run records a new one: for one grace period (= the
 * lease TTL) after that no lease is *acquired*, only re-asserted by nodes that
 * still hold one locally. A holder's local deadline is at most one TTL after
 * its last renewal, which was before Redis lost its memory, so by the end of
 * the grace every lease that could still be alive has been re-asserted (or has
 * lapsed) and a free key really means a free shard. Epoch counters are lost
 * too, so acquirers pass the highest epoch they know (their view and fence)
 * and the new epoch is above it.
 *
 * NODES builds node key names from the prefix, which is fine on one primary
 * and would need hash tags on Redis Cluster. The view itself is one MGET of
 * every lease key (a Lua loop with PTTL per key cost 11–19 ms inside Redis for
 * 4096 shards; see docs/CLUSTER.md §Costs).
 */
import { Script } from "./redis.ts";

const NOW = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function boot_age(key)
  local b = redis.call('GET', key)
  local n = now_ms()
  if not b then redis.call('SET', key, n) return 0 end
  return n - tonumber(b)
end
`;

/**
 * KEYS: boot, then (lease, epoch) per shard. ARGV: node, ttl, grace, then the caller's known epoch per shard.
 * Per shard: {1, epoch} taken; {0, value, pttl} held by someone; {-1, ms} refused, still in grace.
 */
export const ACQUIRE = new Script("acquire", `${NOW}
local node, ttl, grace = ARGV[1], ARGV[2], tonumber(ARGV[3])
local age = boot_age(KEYS[1])
local out = {}
for i = 0, (#KEYS - 1) / 2 - 1 do
  local lease, ekey = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  local v = redis.call('GET', lease)
  if v then
    out[#out + 1] = {0, v, redis.call('PTTL', lease)}
  elseif age < grace then
    out[#out + 1] = {-1, grace - age}
  else
    local e = redis.call('INCR', ekey)
    local floor = tonumber(ARGV[4 + i]) + 1
    if e < floor then e = floor redis.call('SET', ekey, e) end
    redis.call('SET', lease, node .. '|' .. e, 'PX', ttl)
    out[#out + 1] = {1, e}
  end
end
return out`);

/**
 * Renew, or re-assert after Redis lost the key: KEYS: boot, then (lease, epoch) per shard; ARGV: ttl, then "node|epoch" per shard.
 * Per shard 1 (ours, for another TTL) or 0 (lost: someone else's, or a later epoch was handed out).
 */
export const ASSERT = new Script("assert", `${NOW}
boot_age(KEYS[1])
local ttl = ARGV[1]
local out = {}
for i = 0, (#KEYS - 1) / 2 - 1 do
  local lease, ekey, mine = KEYS[2 + 2 * i], KEYS[3 + 2 * i], ARGV[2 + i]
  local v = redis.call('GET', lease)
  if v == mine then
    redis.call('PEXPIRE', lease, ttl)
    out[#out + 1] = 1
  elseif v then
    out[#out + 1] = 0
  else
    local e = tonumber(string.match(mine, '|(%d+)$'))
    local c = tonumber(redis.call('GET', ekey) or '0')
    if c > e then
      out[#out + 1] = 0
    else
      redis.call('SET', lease, mine, 'PX', ttl)
      if c < e then redis.call('SET', ekey, e) end
      out[#out + 1] = 1
    end
  end
end
return out`);

/** KEYS: lease per shard; ARGV: "node|epoch" per shard. Deletes only our own leases. */
export const RELEASE = new Script("release", `
local n = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i] then redis.call('DEL', KEYS[i]) n = n + 1 end
end
return n`);

/** KEYS: nodes set; ARGV: prefix. The live nodes as {id, address} pairs; ids whose heartbeat expired are dropped from the set. */
export const NODES = new Script("nodes", `
local nodes = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local a = redis.call('GET', ARGV[1] .. 'node:' .. id)
  if a then nodes[#nodes + 1] = id nodes[#nodes + 1] = a else redis.call('SREM', KEYS[1], id) end
end
return nodes`);

/** KEYS: nodes set, node key; ARGV: id, address, ttl. */
export const HEARTBEAT = new Script("heartbeat", `
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1`);

/**
 * The flip of a shard move (move.ts): KEYS: lease, epoch, homes; ARGV: "node|epoch" of the caller, target, ttl, shard.
 * Only while the caller still holds the lease at that epoch: the next epoch is handed out, the lease becomes the
 * target's at it (for one TTL; the target adopts it with ASSERT), and the shard's home in `homes` names the target.
 * One step, so there is never a moment with two owners, and the home and the lease never disagree.
 * {1, epoch} flipped; {0} the caller does not hold the lease at that epoch.
 */
export const MOVE = new Script("move", `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0} end
local e = redis.call('INCR', KEYS[2])
local floor = tonumber(string.match(ARGV[1], '|(%d+)$')) + 1
if e < floor then e = floor redis.call('SET', KEYS[2], e) end
local v = ARGV[2] .. '|' .. e
redis.call('SET', KEYS[1], v, 'PX', ARGV[3])
redis.call('HSET', KEYS[3], ARGV[4], v)
return {1, e}`);

/**
 * KEYS: homes, boot, merged:<node>; ARGV: (shard, "node|epoch") pairs a node knows. Each is written unless the hash
 * has that shard at an equal or later epoch (a Redis restarted empty gets the moved homes back from the nodes);
 * returns the whole hash. `merged:<node>` is set to `boot`: every move this node has recorded is in the hash of this
 * Redis (since it last started empty), so a move to it missing there was never recorded by it (OUTCOME).
 */
export const HOMES = new Script("homes", `${NOW}
boot_age(KEYS[2])
redis.call('SET', KEYS[3], redis.call('GET', KEYS[2]))
for i = 1, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  local ce = cur and tonumber(string.match(cur, '|(%d+)$')) or -1
  if ce < tonumber(string.match(ARGV[i + 1], '|(%d+)$')) then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return redis.call('HGETALL', KEYS[1])`);


/**
 * What became of a move whose mover may have died between its flip and its record (homes.ts intents): KEYS: homes,
 * boot, merged:<target>; ARGV: shard, the epoch the mover held it at (e), the boot it read before the flip, the mover.
 * {1, "node|epoch"}: the hash has a move of the shard above e (the flip, or a later move): that is its home.
 * {0}: no such move and Redis kept its memory since before the flip (same boot): the flip never ran.
 * {2, "mover|e+2"}: Redis lost its memory, but the target has merged its homes since and none names it: the target
 *   never recorded the move, so never served the shard; the mover's home is written at e+2, above the flip's e+1,
 *   so a copy of the flip another node still holds can never win the merge over it.
 * {-1}: not known yet (the target has not merged since Redis came back): the shard waits.
 */
export const OUTCOME = new Script("outcome", `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local e = tonumber(ARGV[2])
if cur and tonumber(string.match(cur, '|(%d+)$')) > e then return {1, cur} end
local b = redis.call('GET', KEYS[2])
if not b then return {-1} end
if b == ARGV[3] then return {0} end
if redis.call('GET', KEYS[3]) ~= b then return {-1} end
local v = ARGV[4] .. '|' .. (e + 2)
redis.call('HSET', KEYS[1], ARGV[1], v)
return {2, v}`);
