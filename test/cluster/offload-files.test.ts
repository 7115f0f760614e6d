/**
 * Every SQLite file a running server writes, beside the queue's shard files, has its WAL checkpoints in the commit
 * Worker (queue.committer = worker, the default; SqliteDeliveryQueue.offloadCheckpoints): its main-thread connection
 * then never checkpoints, so no fsync of a checkpoint runs on the event loop (issue 20 target 4; that the Worker does
 * checkpoint an offloaded file is test/store/queue-worker.test.ts's). The files are found on disk, not listed by
 * the test: a store added later without its checkpoints offloaded fails here. One server alone (accounts.db,
 * media.db, the modules' files) and one in cluster mode with a private redis-server (also cluster.db, outbox.db).
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../../src/core/config.ts";
import { SwitchboardServer } from "../../src/core/server.ts";
import { DEFAULT_MODULES } from "../../src/modules/index.ts";
import { startRedis, type TestRedis } from "../helpers/redis.ts";

const root = mkdtempSync(join(tmpdir(), "sb-offload-"));
const servers: SwitchboardServer[] = [];
let redis: TestRedis | undefined;
afterAll(async () => {
  for (const s of servers) await s.stop({ graceMs: 500 }).catch(() => {});
  redis?.cleanup();
  rmSync(root, { recursive: true, force: true });
});

/** The SQLite files of a data directory the server writes on its main thread: not the queue's shards, not the lock. */
function mainThreadFiles(dir: string): string[] {
  return readdirSync(dir).filter((f) => f.endsWith(".db") && f !== "lock.db").map((f) => join(dir, f)).sort();
}

async function serve(name: string, extra: Record<string, string>): Promise<{ server: SwitchboardServer; dir: string }> {
  const dir = join(root, name);
  const config = loadConfig({
    env: {},
    flags: { "--data-dir": dir, "--tcp-port": "0", "--tls-port": "-1", "--http-port": "-1", "--canary-interval": "0", "--log-level": "warn", ...extra },
  });
  const server = new SwitchboardServer(config);
  servers.push(server);
  for (const m of DEFAULT_MODULES) server.load(m);
  await server.listen();
  return { server, dir };
}

test("a single node: accounts.db, media.db and every module's file have their checkpoints in the Worker", async () => {
  const { server, dir } = await serve("single", {});
  const files = mainThreadFiles(dir);
  expect(files).toContain(join(dir, "accounts.db"));
  expect(files).toContain(join(dir, "media.db"));
  expect(files.length).toBeGreaterThan(2); // the modules' files (keys.db, groups.db, ...)
  expect([...server.queue.offloaded].sort()).toEqual(files);
});

test("a cluster node: cluster.db and outbox.db too", async () => {
  redis = await startRedis();
  const { server, dir } = await serve("cluster", { "--cluster-redis": redis.url, "--cluster-node-id": "o1", "--cluster-nodes": "o1" });
  const files = mainThreadFiles(dir);
  expect(files).toContain(join(dir, "cluster.db"));
  expect(files).toContain(join(dir, "outbox.db"));
  expect([...server.queue.offloaded].sort()).toEqual(files);
}, 60_000);
