/**
 * Leases and fencing with real processes: a private redis-server, three node
 * processes (node-main.ts) sharing 4096 shards, kill -9, SIGSTOP/SIGCONT and a
 * Redis kill/restart. Every wait is a bounded poll for a condition, never a
 * timing assertion.
 */
import { afterAll, describe, expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ShardFence } from "../../src/core/cluster/fence.ts";
import { Assignment, DEFAULT_SHARDS } from "../../src/core/cluster/shards.ts";
import { startRedis, type TestRedis } from "../helpers/redis.ts";
import { waitFor } from "../helpers/harness.ts";
import { issuedSeqs, Node, snapshot } from "./nodes.ts";

const procs = new Set<Subprocess>();
const cleanups: (() => void)[] = [];
afterAll(() => {
  for (const p of procs) {
    try {
      p.kill("SIGKILL");
    } catch {}
  }
  cleanups.splice(0).forEach((f) => f());
});

const BOUND = 60_000; // generous: 2 cores shared by several helpers
/** Long enough that an event-loop stall on a loaded machine does not lapse a lease (renewal every TTL/3, deadline TTL − TTL/5). */
const TTL = 3000;

interface Cluster {
  redis: TestRedis;
  nodes: Node[];
  fence: string;
}

async function cluster(ids: string[], ttlMs: number): Promise<Cluster> {
  const redis = await startRedis();
  const dir = mkdtempSync(join(tmpdir(), "sb-cluster-"));
  cleanups.push(() => redis.cleanup(), () => rmSync(dir, { recursive: true, force: true }));
  const fence = join(dir, "shards.sqlite");
  // Created once here: three processes switching a new file to WAL at the same moment can see SQLITE_BUSY before busy_timeout is set.
  new ShardFence(fence).close();
  return { redis, fence, nodes: ids.map((id) => new Node(id, redis.url, fence, ttlMs, procs)) };
}

/** Waits until the nodes hold exactly what rendezvous hashing over them says, and returns the snapshot. */
async function balanced(nodes: Node[], what: string): Promise<Map<string, Map<number, number>>> {
  const plan = new Assignment(nodes.map((n) => n.id));
  let snap = new Map<string, Map<number, number>>();
  await waitFor(async () => {
    snap = await snapshot(nodes);
    return nodes.every((n) => {
      const want = plan.shardsOf(n.id);
      const h = snap.get(n.id)!;
      return h.size === want.length && want.every((s) => h.has(s));
    });
  }, what, BOUND);
  return snap;
}

function pairs(held: Map<number, number>): [number, number][] {
  return [...held];
}

describe("cluster leases with real node processes", () => {
  test("3 nodes share 4096 shards evenly; kill -9 of one → the others take its shards after the TTL, at higher epochs, and nothing else moves", async () => {
    const c = await cluster(["n1", "n2", "n3"], TTL);
    const [n1, n2, n3] = c.nodes as [Node, Node, Node];
    const before = await balanced(c.nodes, "3 nodes to hold their rendezvous shares");
    let total = 0;
    for (const h of before.values()) {
      total += h.size;
      expect(Math.abs(h.size - DEFAULT_SHARDS / 3)).toBeLessThan(DEFAULT_SHARDS * 0.05);
    }
    expect(total).toBe(DEFAULT_SHARDS);
    // Every holder can write its shards, through both checks.
    for (const n of c.nodes) expect((await n.write(pairs(before.get(n.id)!))).every((r) => r.local && r.fence === "ok")).toBe(true);

    await n3.kill9();
    const after = await balanced([n1, n2], "n1 and n2 to take n3's shards");
    for (const [s, e] of before.get("n3")!) {
      const now = after.get("n1")!.get(s) ?? after.get("n2")!.get(s);
      expect(now).toBeGreaterThan(e);
    }
    // Minimal movement: what n1 and n2 held, they still hold at the same epoch.
    for (const id of ["n1", "n2"]) for (const [s, e] of before.get(id)!) expect(after.get(id)!.get(s)).toBe(e);
    // n3's old epochs are dead in the shard data: a write at one is refused by the fence.
    const stale = pairs(before.get("n3")!).slice(0, 50);
    expect((await n1.forceWrite(stale)).every((r) => r.fence !== "ok")).toBe(true);
  });

  test("SIGSTOP past the lease, then SIGCONT: the node refuses its own writes (local check and fence) and never renews a lost lease", async () => {
    const c = await cluster(["n1", "n2", "n3"], TTL);
    const [n1, n2, n3] = c.nodes as [Node, Node, Node];
    const before = await balanced(c.nodes, "3 nodes to hold their rendezvous shares");
    const lost = pairs(before.get("n3")!);
    expect((await n3.write(lost)).every((r) => r.local && r.fence === "ok")).toBe(true);

    n3.signal("SIGSTOP");
    const taken = await balanced([n1, n2], "n1 and n2 to take the stopped node's shards");
    // The new owners write at their new epochs.
    for (const n of [n1, n2]) {
      const mine = lost.filter(([s]) => taken.get(n.id)!.has(s)).map(([s]): [number, number] => [s, taken.get(n.id)!.get(s)!]);
      expect((await n.write(mine)).every((r) => r.local && r.fence === "ok")).toBe(true);
    }
    const resumedAt = Date.now();
    n3.signal("SIGCONT");

    const local = await n3.write(lost);
    expect(local.filter((r) => r.local)).toEqual([]); // the local check says no at once, before any renewal
    const raced = await n3.forceWrite(lost);
    expect(raced.filter((r) => r.fence !== "stale-epoch")).toEqual([]); // and the fence says no even without it

    // It rejoins and gets its share back, at epochs above the new owners'.
    const back = await balanced(c.nodes, "n3 to get its share back after rejoining");
    for (const [s] of lost) expect(back.get("n3")!.get(s)!).toBeGreaterThan(taken.get("n1")!.get(s) ?? taken.get("n2")!.get(s)!);

    // No renewal chosen after resuming carried a lost (shard, epoch). (`at` is when the batch was checked: a batch
    // checked just before the stop may be sent after it, and Redis then refuses it.)
    const lostSet = new Set(lost.map(([s, e]) => `${s}|${e}`));
    const renewedAfter = n3.events("assert").filter((a) => a.at >= resumedAt).flatMap((a) => a.shards as [number, number][]);
    expect(renewedAfter.filter(([s, e]) => lostSet.has(`${s}|${e}`))).toEqual([]);
    expect(n3.events("lost").some((l) => l.why === "expired")).toBe(true);

    // The shard data: per shard, sequence numbers 1..n with epochs that never go back (no stale writer slipped in).
    for (const [shard, rows] of issuedSeqs(c.fence)) {
      rows.forEach((r, i) => {
        expect(r.seq).toBe(i + 1);
        if (i > 0) expect(r.epoch).toBeGreaterThanOrEqual(rows[i - 1]!.epoch);
      });
      expect(shard).toBeLessThan(DEFAULT_SHARDS);
    }
  });

  test("kill -9 and restart of redis-server: views keep routing while it is down, every lease is re-asserted by its holder, no shard has two owners", async () => {
    // A longer TTL, so that the restart and Bun's reconnect (≈ 1 s, more on a loaded machine) fit well inside what is
    // left of every lease: at least TTL − TTL/5 − TTL/3 ≈ 5.6 s here. (With a 6 s TTL one run failed while other helpers'
    // suites loaded the machine; its log was not kept, and a lapse — correct, but not what this test pins — is the likely cause.)
    const c = await cluster(["n1", "n2", "n3"], 4 * TTL);
    const before = await balanced(c.nodes, "3 nodes to hold their rendezvous shares");
    const owners = Object.fromEntries([...before].map(([id, h]) => [id, h.size]));
    // Each node's view of the others' shards comes from its periodic read of Redis (and the published events):
    // holding its own share says nothing about that. Wait until every view routes all shards to their holders, so
    // that what is pinned below is the view surviving the outage (once, 3755 of 4096 were routed at the kill).
    await waitFor(async () => (await Promise.all(c.nodes.map((n) => n.status()))).every((s) => s.routed === DEFAULT_SHARDS && Bun.deepEquals(s.owners, owners)), "every node's view to route all shards to their holders", BOUND);

    await c.redis.kill9();
    await waitFor(async () => (await Promise.all(c.nodes.map((n) => n.status()))).every((s) => !s.up), "every node to see redis down", BOUND);
    for (const n of c.nodes) {
      const s = await n.status();
      expect(s.routed).toBe(DEFAULT_SHARDS); // routing from the local view
      expect(s.owners).toEqual(owners);
    }
    await snapshot(c.nodes); // disjoint while down (throws otherwise)
    await c.redis.restart();

    await waitFor(async () => Number(await c.redis.cli("EVAL", "return #redis.call('KEYS', 'sb:lease:*')", "0")) === DEFAULT_SHARDS, "all 4096 leases back in redis", BOUND);
    const after = await snapshot(c.nodes);
    for (const [id, h] of before) {
      const changed = [...h].filter(([s, e]) => after.get(id)!.get(s) !== e);
      expect({ id, changed: changed.slice(0, 5), count: changed.length, size: after.get(id)!.size }).toEqual({ id, changed: [], count: 0, size: h.size }); // re-asserted: same holder, same epoch
    }
    for (const [id, h] of before) {
      const sample = [...h].slice(0, 20);
      for (const [s, e] of sample) expect(await c.redis.cli("GET", `sb:lease:${s}`)).toBe(`${id}|${e}`);
    }
    for (const n of c.nodes) expect((await n.write(pairs(after.get(n.id)!))).every((r) => r.local && r.fence === "ok")).toBe(true);
  });
});
