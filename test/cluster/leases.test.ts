/**
 * LeaseManager in one process against a real redis-server: the grace after
 * Redis forgets its leases, epochs that stay above the fence when Redis lost
 * its counters, and an outage longer than the TTL. (The multi-process tests
 * are in nodes.test.ts.)
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LeaseManager, type LeaseEvent, type LeaseOptions } from "../../src/core/cluster/leases.ts";
import { RedisLink } from "../../src/core/cluster/redis.ts";
import { ShardFence } from "../../src/core/cluster/fence.ts";
import { ASSERT } from "../../src/core/cluster/scripts.ts";
import { startRedis, type TestRedis } from "../helpers/redis.ts";
import { waitFor } from "../helpers/harness.ts";

const cleanups: (() => void | Promise<void>)[] = [];
afterAll(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});
const dir = mkdtempSync(join(tmpdir(), "sb-leases-"));
cleanups.push(() => rmSync(dir, { recursive: true, force: true }));

const SHARDS = 64;
const TTL = 1500;

async function redis(): Promise<TestRedis> {
  const r = await startRedis();
  cleanups.push(() => r.cleanup());
  return r;
}

function manager(r: TestRedis, nodeId: string, opts: Partial<LeaseOptions> = {}): { m: LeaseManager; link: RedisLink } {
  const link = new RedisLink(r.url, { commandTimeoutMs: 300 }).start();
  const m = new LeaseManager(link, { nodeId, address: `127.0.0.1:${nodeId}`, shardCount: SHARDS, ttlMs: TTL, ...opts }).start();
  cleanups.push(async () => {
    await m.stop();
    link.close();
  });
  return { m, link };
}

describe("LeaseManager", () => {
  test("after Redis restarts empty, no one acquires a shard while its old holder could still prove its lease (grace)", async () => {
    const r = await redis();
    const a = manager(r, "a", { balance: false });
    const b = manager(r, "b", { balance: false });
    await waitFor(async () => (await a.m.acquire([5])).length === 1 || a.m.holds(5), "a to take shard 5 (after the first grace)", 30_000);
    await waitFor(() => b.m.route(5)?.node === "a", "b to see a's lease (the epoch b must then exceed)", 30_000);
    // Cut a off from Redis: it can neither renew nor re-assert, so its lease runs out on its own clock.
    a.link.close();
    await r.kill9();
    await r.restart();
    let attempts = 0;
    for (;;) {
      const aStillHolds = a.m.holds(5);
      const got = await b.m.acquire([5]);
      attempts++;
      if (got.length) {
        expect(aStillHolds).toBe(false);
        break;
      }
      await Bun.sleep(20);
    }
    expect(attempts).toBeGreaterThan(1); // refused at least once: the grace was in force
    expect(b.m.epochOf(5)).toBeGreaterThan(1); // above the epoch a had, though Redis forgot the counter
  });

  test("a new epoch starts above what the fence recorded, even when Redis has no counter", async () => {
    const r = await redis();
    const fence = new ShardFence(join(dir, "fence-a.sqlite"));
    cleanups.push(() => fence.close());
    expect(fence.claim(3, 10, "old-owner").ok).toBe(true);
    const events: LeaseEvent[] = [];
    const a = manager(r, "a", { balance: false, fence, onEvent: (e) => events.push(e) });
    await waitFor(async () => (await a.m.acquire([3])).length === 1, "a to take shard 3", 30_000);
    expect(a.m.epochOf(3)).toBe(11);
    expect(events.filter((e) => e.type === "lost")).toEqual([]); // straight to 11: no epoch handed out that the fence then refused
    expect(fence.epoch(3)).toBe(11);
    expect(await r.cli("GET", "sb:epoch:3")).toBe("11");
  });

  test("an outage longer than the TTL: leases lapse (refused, never two owners), then are taken again at higher epochs after the grace", async () => {
    const r = await redis();
    const nodes = [manager(r, "a"), manager(r, "b")];
    const held = () => {
      const owner = new Map<number, string>();
      for (const { m } of nodes) for (const s of m.heldShards().keys()) {
        expect(owner.get(s)).toBeUndefined();
        owner.set(s, m.nodeId);
      }
      return owner;
    };
    await waitFor(() => held().size === SHARDS, "all shards held", 30_000);
    const before = new Map(nodes.flatMap(({ m }) => [...m.heldShards()]));
    await r.kill9();
    await waitFor(() => held().size === 0, "every lease to lapse while redis is down", 30_000);
    for (const { m } of nodes) expect(m.route(0)).not.toBeNull(); // the view still routes
    await r.restart();
    await waitFor(() => held().size === SHARDS, "all shards held again", 30_000);
    for (const { m } of nodes) for (const [s, e] of m.heldShards()) expect(e).toBeGreaterThan(before.get(s)!);
  });
});

describe("ASSERT script (a renewal that may arrive late, e.g. sent by a process paused after its check)", () => {
  test("renews its own key, re-asserts a missing one only if no later epoch was handed out, never takes someone else's", async () => {
    const r = await redis();
    const link = new RedisLink(r.url, { commandTimeoutMs: 1000 }).start();
    cleanups.push(() => link.close());
    const assert = (s: number, mine: string) => link.script<number[]>(ASSERT, ["sb:boot", `sb:lease:${s}`, `sb:epoch:${s}`], [5000, mine]);
    await waitFor(() => link.up, "the link");
    await r.cli("SET", "sb:lease:1", "a|4", "PX", "5000");
    await r.cli("SET", "sb:epoch:1", "4");
    expect(await assert(1, "a|4")).toEqual({ ok: true, value: [1] });
    expect(await assert(1, "b|3")).toEqual({ ok: true, value: [0] }); // someone else's key
    await r.cli("DEL", "sb:lease:1");
    await r.cli("SET", "sb:epoch:1", "5"); // taken at 5 and released meanwhile
    expect(await assert(1, "a|4")).toEqual({ ok: true, value: [0] });
    expect(await r.cli("EXISTS", "sb:lease:1")).toBe("0");
    // Redis lost everything: the holder re-asserts, and the counter is brought back up to its epoch.
    expect(await assert(2, "a|7")).toEqual({ ok: true, value: [1] });
    expect(await r.cli("GET", "sb:lease:2")).toBe("a|7");
    expect(await r.cli("GET", "sb:epoch:2")).toBe("7");
  });
});
