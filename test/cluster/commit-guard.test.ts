/**
 * The commit guard in a real server (in this process, so the test can act
 * between an acceptance and its group commit) with a private redis-server:
 * a message accepted while its recipient's shard was held is not committed,
 * and its sender gets no `sent`, while the shard cannot be proven ours; once
 * the node holds the shard again (at a higher epoch) the same batch commits
 * and `sent` goes out, and the message is delivered once.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { shardOf } from "../../src/core/cluster/shards.ts";
import { loadConfig } from "../../src/core/config.ts";
import { SwitchboardServer } from "../../src/core/server.ts";
import { DEFAULT_MODULES } from "../../src/modules/index.ts";
import { SwitchboardClient } from "../../src/client/client.ts";
import { waitFor } from "../helpers/harness.ts";
import { enrollIn } from "../helpers/in-process.ts";
import { startRedis, type TestRedis } from "../helpers/redis.ts";

let redis: TestRedis | undefined;
let server: SwitchboardServer | undefined;
const dir = mkdtempSync(join(tmpdir(), "sb-guard-"));
const clients: SwitchboardClient[] = [];

afterAll(async () => {
  for (const c of clients) await c.close().catch(() => {});
  await server?.stop({ graceMs: 500 }).catch(() => {});
  redis?.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

function buffered(s: SwitchboardServer): number {
  const line = s.metrics.render().split("\n").find((l) => l.startsWith("switchboard_queue_buffered_items "));
  return Number(line!.split(" ").pop());
}

test("a batch is not committed, and no sent goes out, while a shard in it cannot be proven held", async () => {
  redis = await startRedis();
  const config = loadConfig({
    env: {},
    flags: {
      "--data-dir": dir, "--tcp-port": "0", "--tls-port": "-1", "--http-port": "-1", "--canary-interval": "0", "--log-level": "warn",
      "--queue-commit-ms": "1000", // a wide window between acceptance and commit, for the test to act in
      "--cluster-redis": redis.url, "--cluster-node-id": "g1", "--cluster-nodes": "g1", "--cluster-lease-ttl": "3000",
    },
  });
  server = new SwitchboardServer(config);
  for (const m of DEFAULT_MODULES) server.load(m);
  const { tcp } = await server.listen();
  const cluster = server.cluster!;
  await waitFor(() => cluster.leases.heldShards().size === 4096, "all 4096 shards held", 60_000);
  const [ka, kb] = [await enrollIn(server, tcp!, "alice"), await enrollIn(server, tcp!, "bob")];
  const alice = new SwitchboardClient({ host: "127.0.0.1", port: tcp!, key: ka });
  const bob = new SwitchboardClient({ host: "127.0.0.1", port: tcp!, key: kb, autoAck: false }); // unacked: the row stays in the batch
  clients.push(alice, bob);
  const got: { payload: string; q: number }[] = [];
  bob.on("message", (m) => got.push({ payload: new TextDecoder().decode(m.payload), q: m.q }));
  await alice.connect();
  await bob.connect();
  await alice.send("bob", "warm-up"); // device lists cached
  let sent = false;
  const p = alice.send("bob", "guarded").then((s) => ((sent = true), s));
  await waitFor(() => got.some((m) => m.payload === "guarded"), "the push, which comes before the commit");
  const shard = shardOf("bob");
  const epoch = cluster.leases.epochOf(shard)!;
  expect(buffered(server)).toBeGreaterThan(0);
  // In one turn: the lease goes (release drops it locally at once), then a commit is attempted and must refuse.
  const released = cluster.leases.release([shard]);
  server.queue.flush();
  expect(buffered(server)).toBeGreaterThan(0);
  expect(sent).toBe(false);
  await released;
  // The node takes the shard again (its own tick does, rendezvous gives it this node) at a higher epoch; then it commits.
  await waitFor(() => cluster.leases.holds(shard), "the shard held again", 30_000);
  expect(cluster.leases.epochOf(shard)!).toBeGreaterThan(epoch);
  const s = await p;
  expect(s.id).toBeDefined();
  expect(buffered(server)).toBe(0);
  expect(got.filter((m) => m.payload === "guarded").length).toBe(1);
  bob.ack(...got.map((m) => m.q));
}, 120_000);
