/**
 * Cluster mode in the real server across a kill -9 and restart of
 * redis-server (2 node processes; TTL 12 s for margin on a loaded machine,
 * like nodes.test.ts). Proves: while Redis is down, nodes go on serving from
 * what they hold and know (messages between accounts of one node are sent
 * and delivered, a login on the wrong node is still redirected from the
 * cached view, /cluster says Redis is down); after it is back, every lease is
 * re-asserted at the epoch it had (none re-acquired, 4096 lease keys in
 * Redis again), and messages go on, all in order, none lost.
 * No timing assertions: conditions are polled with generous bounds.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { Assignment, shardOf } from "../../src/core/cluster/shards.ts";
import { enrollDevice, SwitchboardClient } from "../../src/client/client.ts";
import { generateDeviceKey, keyToFile, type KeyFile } from "../../src/client/keys.ts";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { startRedis, type TestRedis } from "../helpers/redis.ts";

const IDS = ["r1", "r2"];
const TTL = 12_000;
const plan = new Assignment(IDS);
const homeOf = (account: string) => plan.ownerOf(shardOf(account))!;
const accountOn = (node: string, prefix: string) => {
  for (let i = 0; ; i++) if (homeOf(`${prefix}${i}`) === node) return `${prefix}${i}`;
};

let redis: TestRedis;
const nodes = new Map<string, TestServer>();
const clients: SwitchboardClient[] = [];

async function status(n: TestServer): Promise<any> {
  const r = await n.http_get("/cluster");
  if (r.status !== 200) throw new Error(`/cluster answered ${r.status}: ${r.text}`);
  return JSON.parse(r.text);
}

async function device(account: string, home: TestServer): Promise<KeyFile> {
  const code = home.addUser(account);
  const key = generateDeviceKey();
  const r = await enrollDevice({ host: "127.0.0.1", port: home.tcp, account, code, key, name: "t" });
  return keyToFile(key, r.account, r.device);
}

beforeAll(async () => {
  redis = await startRedis();
  for (const id of IDS) {
    const args = ["--cluster-redis", redis.url, "--cluster-node-id", id, "--cluster-nodes", IDS.join(","), "--cluster-lease-ttl", String(TTL), "--canary-interval", "0"];
    nodes.set(id, await startServer({ args }));
  }
  await waitFor(async () => {
    for (const [id, n] of nodes) if ((await status(n)).held !== plan.shardsOf(id).length) return false;
    return true;
  }, "every node to hold its shards (one TTL of grace on an empty Redis)", 90_000);
}, 120_000);

afterAll(async () => {
  for (const c of clients) await c.close().catch(() => {});
  for (const n of nodes.values()) n.cleanup();
  redis?.cleanup();
});

test("kill -9 and restart of redis-server: nodes serve on from what they know; every lease re-asserted at its own epoch; nothing lost", async () => {
  const [r1, r2] = [nodes.get("r1")!, nodes.get("r2")!];
  const [a, b, c] = [accountOn("r1", "xa"), accountOn("r1", "xb"), accountOn("r2", "xc")];
  const [ka, kb] = [await device(a, r1), await device(b, r1)];
  await device(c, r2);
  const ca = new SwitchboardClient({ host: "127.0.0.1", port: r1.tcp, key: ka });
  const cb = new SwitchboardClient({ host: "127.0.0.1", port: r1.tcp, key: kb });
  clients.push(ca, cb);
  const got: string[] = [];
  cb.on("message", (m) => got.push(new TextDecoder().decode(m.payload)));
  await ca.connect();
  await cb.connect();
  await ca.send(b, "warm-up"); // the device lists are cached now: no request needs more than r1 below
  const before = new Map<string, any>();
  for (const [id, n] of nodes) before.set(id, (await status(n)).heldEpochs);

  await redis.kill9();
  await waitFor(async () => !(await status(r1)).redis.up, "r1 to see Redis down");
  for (let i = 0; i < 10; i++) await ca.send(b, `d${i}`); // `sent`: durable on r1, without Redis
  const raw = await r1.raw();
  await raw.hello();
  raw.send({ t: "auth", u: c, d: 1, sig: new Uint8Array(64) });
  expect(await raw.expect("redirect")).toMatchObject({ host: "127.0.0.1", port: r2.tcp }); // from the cached view
  await redis.restart();

  await waitFor(async () => Number(await redis.cli("EVAL", "return #redis.call('KEYS', 'sb:lease:*')", "0")) === 4096, "all 4096 lease keys back in Redis", 60_000);
  for (const [id, n] of nodes) {
    await waitFor(async () => (await status(n)).redis.up, `${id} to see Redis up`);
    const st = await status(n);
    expect(st.held).toBe(plan.shardsOf(id).length);
    expect(st.heldEpochs).toEqual(before.get(id)); // re-asserted, not re-acquired at new epochs
  }
  for (let i = 0; i < 10; i++) await ca.send(b, `u${i}`);
  await waitFor(() => got.length >= 21, "21 messages");
  expect(got).toEqual(["warm-up", ...Array.from({ length: 10 }, (_, i) => `d${i}`), ...Array.from({ length: 10 }, (_, i) => `u${i}`)]);
}, 120_000);
