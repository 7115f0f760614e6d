/**
 * What the lease machinery costs (docs/CLUSTER.md §Costs):
 *   node_modules/.bin/bun test/cluster/lease-cost.ts
 * One node takes all 4096 shards of a private redis-server, then times the
 * full view read and one node's renewal of a third of the shards (round trip
 * seen by the client, and Redis's own time per script from INFO
 * commandstats), and the local holds() check.
 */
import { RedisLink } from "../../src/core/cluster/redis.ts";
import { LeaseManager } from "../../src/core/cluster/leases.ts";
import { ASSERT, NODES } from "../../src/core/cluster/scripts.ts";
import { startRedis } from "../helpers/redis.ts";

const N = 50;
const redis = await startRedis();
const link = new RedisLink(redis.url).start();
const m = new LeaseManager(link, { nodeId: "a", address: "127.0.0.1:1", ttlMs: 3000 }).start();
while (m.heldShards().size < 4096) await Bun.sleep(100);
await m.stop();

async function timed(name: string, commands: string[], run: () => Promise<unknown>): Promise<void> {
  await link.call("CONFIG", ["RESETSTAT"]);
  const t = performance.now();
  for (let i = 0; i < N; i++) await run();
  const ms = (performance.now() - t) / N;
  const stats = (await link.call<string>("INFO", ["commandstats"])) as { ok: true; value: string };
  let usec = 0;
  for (const l of stats.value.split("\n")) if (commands.some((c) => l.startsWith(`cmdstat_${c}:`))) usec += Number(/usec=(\d+)/.exec(l)?.[1] ?? 0) / N;
  console.log(`${name}: ${ms.toFixed(2)} ms round trip, ${(usec / 1000).toFixed(2)} ms inside Redis`);
}

const keys = Array.from({ length: 4096 }, (_, s) => `sb:lease:${s}`);
await timed("view: MGET of 4096 leases + the node list", ["mget", "evalsha"], () => Promise.all([link.call("MGET", keys), link.script(NODES, ["sb:nodes"], ["sb:"])]));
const third = [...m.heldShards()].slice(0, 1366);
await timed("renewal of 1366 leases (3 scripts of ≤ 512)", ["evalsha"], async () => {
  for (let j = 0; j < third.length; j += 512) {
    const part = third.slice(j, j + 512);
    await link.script(ASSERT, ["sb:boot", ...part.flatMap(([s]) => [`sb:lease:${s}`, `sb:epoch:${s}`])], [3000, ...part.map(([, e]) => `a|${e}`)]);
  }
});
const t = performance.now();
let yes = 0;
for (let i = 0; i < 10_000_000; i++) if (m.holds(i & 4095)) yes++;
console.log(`holds(): ${(((performance.now() - t) * 1e6) / 1e7).toFixed(1)} ns per call (${yes > 0 ? "held" : "not held"})`);
link.close();
redis.cleanup();
