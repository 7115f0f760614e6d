/**
 * Cluster operations on 2 real `switchboard serve` processes and a private
 * redis-server, with the canary on (src/ops/canary.ts, "cross"):
 * - the cross-node canary: each node's cross device sends to the other
 *   node's, over the node links, and /readyz says when it last completed per
 *   node; a peer killed with -9 (its heartbeat still in the view: a long
 *   lease TTL) turns the survivor's /readyz to 503 `cross_node` naming it,
 *   and its restart turns it back to 200;
 * - redirects/s: logins through the wrong node are counted in GET /cluster
 *   (`redirects`) and printed by `switchboard cluster status`.
 * No timing assertions: states are polled with generous bounds.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { enrollDevice, SwitchboardClient } from "../../src/client/client.ts";
import { generateDeviceKey, keyToFile } from "../../src/client/keys.ts";
import { Assignment, shardOf } from "../../src/core/cluster/shards.ts";
import { BUN, MAIN, ROOT, startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { CLEAN_ENV } from "../helpers/line-process.ts";
import { startRedis, type TestRedis } from "../helpers/redis.ts";

const IDS = ["n1", "n2"];
const plan = new Assignment(IDS);
/** Long: a killed node's heartbeat stays in the view for a while, so its peer sees it up and unreachable. */
const TTL = 20_000;
let redis: TestRedis;
const nodes = new Map<string, TestServer>();
const clients: SwitchboardClient[] = [];

const args = (id: string) => [
  "--cluster-redis", redis.url, "--cluster-node-id", id, "--cluster-nodes", IDS.join(","), "--cluster-lease-ttl", String(TTL),
  "--canary-interval", "1", "--canary-threshold", "3",
];

beforeAll(async () => {
  redis = await startRedis();
  for (const id of IDS) nodes.set(id, await startServer({ args: args(id) }));
  // The first start of an empty Redis waits one lease TTL before taking shards (the grace): logins wait for it.
  await waitFor(async () => {
    for (const [id, n] of nodes) if (JSON.parse((await n.http_get("/cluster")).text).held !== plan.shardsOf(id).length) return false;
    return true;
  }, "every node to hold its shards", 90_000);
}, 120_000);

afterAll(async () => {
  for (const c of clients) await c.close().catch(() => {});
  for (const n of nodes.values()) n.cleanup();
  redis?.cleanup();
});

async function readyz(n: TestServer): Promise<{ status: number; body: any }> {
  const r = await n.http_get("/readyz");
  return { status: r.status, body: JSON.parse(r.text) };
}

const other = (id: string) => IDS.find((x) => x !== id)!;

describe("cluster ops, 2 server processes and redis-server", () => {
  test("the cross-node canary completes rounds to the other node; /readyz is 200 with them", async () => {
    for (const [id, n] of nodes) {
      // Asserted on the reading that satisfied the wait: a later one is another moment of a canary that runs every
      // second (a round in flight, a slow one past the threshold on a loaded machine).
      let r = { status: 0, body: {} as any };
      await waitFor(async () => {
        r = await readyz(n);
        return r.status === 200 && r.body.canary?.cross?.peers?.[other(id)]?.last_ok_age_s != null;
      }, `${id}: /readyz 200 with a cross-node round to ${other(id)}`, 90_000);
      expect(r.body.canary.cross.connected).toBe(true);
      expect(r.body.canary.cross.lagging).toEqual([]);
      expect(r.body.canary.cross.last_rtt_ms).toBeGreaterThan(0);
      expect(await n.metric("switchboard_canary_rounds_total", '{result="ok_cross_node"}')).toBeGreaterThan(0);
    }
  }, 120_000);

  test("redirects are counted per node in /cluster and printed by cluster status", async () => {
    const n1 = nodes.get("n1")!;
    let account = "";
    for (let i = 0; !account; i++) if (plan.ownerOf(shardOf(`rd${i}`)) === "n2") account = `rd${i}`;
    const before = JSON.parse((await n1.http_get("/cluster")).text).redirects;
    const code = nodes.get("n2")!.addUser(account);
    const key = generateDeviceKey();
    const r = await enrollDevice({ host: "127.0.0.1", port: n1.tcp, account, code, key, name: "t" }); // through n1: redirected
    const c = new SwitchboardClient({ host: "127.0.0.1", port: n1.tcp, key: keyToFile(key, r.account, r.device) });
    clients.push(c);
    await c.connect(); // through n1 again: redirected, ends on n2
    const after = JSON.parse((await n1.http_get("/cluster")).text).redirects;
    expect(after.total - before.total).toBeGreaterThanOrEqual(2);
    expect(after.lastWindow).toBeGreaterThanOrEqual(after.total - before.total);
    expect(after.perSecond).toBeGreaterThan(0);
    expect(after.windowS).toBe(60);
    const p = Bun.spawn([BUN, MAIN, "cluster", "status", "--http-port", String(n1.http)], { cwd: ROOT, env: CLEAN_ENV, stdout: "pipe", stderr: "pipe" });
    const out = await new Response(p.stdout).text();
    expect(await p.exited).toBe(0);
    expect(out).toMatch(/^redirects [0-9.]+\/s over the last 60 s \(\d+\), \d+ since this node started$/m);
  }, 60_000);

  test("kill -9 of a node: its peer's /readyz turns 503 cross_node naming it while its heartbeat is in the view; 200 after its restart", async () => {
    const n1 = nodes.get("n1")!;
    const n2 = nodes.get("n2")!;
    await n2.kill9();
    let r = { status: 0, body: {} as any };
    await waitFor(async () => {
      r = await readyz(n1);
      return r.status === 503 && r.body.reason === "cross_node";
    }, "n1: /readyz 503 cross_node", 15_000);
    expect(r.body.canary.cross.lagging).toEqual(["n2"]);
    // n1's own path is fine: only the cross-node round lags (cross_node is said only while the local round is within
    // the threshold, 3 s; the same reading, not a later one).
    expect(r.body.canary.last_ok_age_s).toBeLessThanOrEqual(3);
    await n2.restart();
    for (const n of [n1, n2]) await waitFor(async () => (await readyz(n)).status === 200, "/readyz 200 after the restart", 90_000);
    // The round outstanding since the kill is gone: a round to n2 completes again. Polled: every second a new round
    // is outstanding for its round trip (outstanding_s 0.0 then), so one reading may fall inside one.
    await waitFor(async () => (await readyz(n1)).body.canary.cross.peers.n2.outstanding_s === null, "n1: no round to n2 outstanding after its restart", 30_000);
  }, 180_000);
});
