/**
 * The node list check at start (members.ts `joinList`, docs/CLUSTER.md "Removing a node") against a real
 * redis-server: a list that lacks a node of the recorded one is recorded only when the removed node is not live,
 * none of its shards' data is only there (each has a recorded home elsewhere) and its last stop recorded that it
 * held nothing; otherwise refused with the reason and the fix. The state is written as the nodes write it (the
 * flip's `node|epoch` in sb:homes, the heartbeat key, `stopped`'s drained mark); the process test is rm-node.test.ts.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { joinList, NodeListRefused, stopped } from "../../src/core/cluster/members.ts";
import { RedisLink } from "../../src/core/cluster/redis.ts";
import { Assignment } from "../../src/core/cluster/shards.ts";
import { startRedis, type TestRedis } from "../helpers/redis.ts";
import { waitFor } from "../helpers/harness.ts";

const OLD = ["n1", "n2", "n3"], NEW = ["n1", "n2"];
const before = new Assignment(OLD), after = new Assignment(NEW);
let redis: TestRedis;
let link: RedisLink;
beforeAll(async () => {
  redis = await startRedis();
  link = new RedisLink(redis.url, { commandTimeoutMs: 1000 }).start();
});
afterAll(() => (link.close(), redis.cleanup()));
beforeEach(async () => void (await redis.cli("FLUSHALL")));

/** n3's shards homed where a drain over n1,n2 sends them (at epoch 2: a flip's), in one HSET. */
const drained = async (except: number[] = []) => {
  const args: string[] = [];
  for (const s of before.shardsOf("n3")) if (!except.includes(s)) args.push(String(s), `${after.ownerOf(s)}|2`);
  await redis.cli("HSET", "sb:homes", ...args);
};
const refusal = (p: Promise<unknown>) => p.then(() => "recorded", (e) => (e instanceof NodeListRefused ? e.message : `not a refusal: ${e}`));

describe("removing a node: the start with the shorter list", () => {
  test("recorded once n3 is drained and stopped; this node's own drained mark goes as it takes part", async () => {
    await joinList(link, "sb:", OLD, "n3");
    await drained();
    await stopped(link, "sb:", "n3", true);
    await redis.cli("SET", "sb:drained:n1", "1"); // n1's own last stop: it takes part now, so its mark goes
    expect(await redis.cli("GET", "sb:drained:n3")).toBe("1");
    expect(await joinList(link, "sb:", ["n2", "n1"], "n1")).toBe(0);
    expect(await redis.cli("GET", "sb:list")).toBe("n1,n2");
    expect(await redis.cli("EXISTS", "sb:drained:n1")).toBe("0");
    expect(await joinList(link, "sb:", NEW, "n2")).toBe(0); // the other node, on the new list now: unchanged
  });

  test("refused while n3 is live, naming the list to keep it and the way to remove it", async () => {
    await joinList(link, "sb:", OLD, "n1");
    await drained();
    await redis.cli("SET", "sb:drained:n3", "1");
    await redis.cli("SET", "sb:node:n3", "127.0.0.1:1/2", "PX", "60000"); // its heartbeat
    const m = await refusal(joinList(link, "sb:", NEW, "n1"));
    expect(m).toContain("n3 is up");
    expect(m).toContain('cluster.nodes = "n1,n2,n3"');
    expect(m).toContain("stop it first with SIGTERM");
    expect(await redis.cli("GET", "sb:list")).toBe("n1,n2,n3");
  });

  test("refused while a shard placed on n3 has no home elsewhere (killed, not drained), or a shard moved to n3 is homed there", async () => {
    await joinList(link, "sb:", OLD, "n1");
    await redis.cli("SET", "sb:drained:n3", "1");
    const [a, b] = before.shardsOf("n3");
    await drained([a!, b!]);
    let m = await refusal(joinList(link, "sb:", NEW, "n1"));
    expect(m).toContain(`the only data of 2 shards (${a},${b}) is there`);
    expect(m).toContain('start n3 again with cluster.nodes = "n1,n2,n3" and stop it with SIGTERM');
    await drained();
    const moved = before.shardsOf("n1")[0]!; // `cluster move` of one of n1's shards to n3, never moved back
    await redis.cli("HSET", "sb:homes", String(moved), "n3|5");
    m = await refusal(joinList(link, "sb:", NEW, "n1"));
    expect(m).toContain(`the only data of 1 shards (${moved}) is there`);
    await redis.cli("HSET", "sb:homes", String(moved), "n1|6"); // moved back
    await redis.cli("HSET", "sb:homes", String(a), "n2|0"); // an epoch-0 pin of an earlier join counts as its home
    expect(await refusal(joinList(link, "sb:", NEW, "n1"))).toBe("recorded");
  });

  test("refused when n3's last stop did not record that it held nothing, or n3 took part again since", async () => {
    await joinList(link, "sb:", OLD, "n1");
    await drained();
    await stopped(link, "sb:", "n3", false); // it stopped holding a lease, a home or a move's intent
    expect(await refusal(joinList(link, "sb:", NEW, "n1"))).toContain("n3's last stop did not record that it held nothing");
    await stopped(link, "sb:", "n3", true);
    await joinList(link, "sb:", OLD, "n3"); // started again (on the old list): from now on it may hold shards
    expect(await refusal(joinList(link, "sb:", NEW, "n1"))).toContain("n3's last stop did not record that it held nothing");
    expect(await redis.cli("GET", "sb:list")).toBe("n1,n2,n3");
  });

  test("adding and removing at once is refused; a clean stop takes the heartbeat with it and says so", async () => {
    await joinList(link, "sb:", OLD, "n1");
    await drained();
    await redis.cli("SET", "sb:node:n3", "127.0.0.1:1/2", "PX", "60000");
    await redis.cli("SADD", "sb:nodes", "n3");
    const events: string[] = [];
    const other = new RedisLink(redis.url, { commandTimeoutMs: 1000 }).start();
    other.subscribe("sb:events", (m) => void events.push(m));
    await waitFor(async () => (await redis.cli("PUBSUB", "NUMSUB", "sb:events")).endsWith("1"), "the subscription", 10_000);
    await stopped(link, "sb:", "n3", true);
    await waitFor(() => events.length > 0, "the left event", 10_000);
    other.close();
    expect(events).toEqual([JSON.stringify({ t: "left", node: "n3" })]); // the others read the view at once (leases.ts)
    expect(await redis.cli("EXISTS", "sb:node:n3")).toBe("0");
    expect(await redis.cli("SISMEMBER", "sb:nodes", "n3")).toBe("0");
    expect(await refusal(joinList(link, "sb:", ["n1", "n2", "n4"], "n4"))).toContain("adding and removing nodes at once is not supported");
    expect(await redis.cli("GET", "sb:list")).toBe("n1,n2,n3");
  });
});
