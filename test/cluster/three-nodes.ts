/** What the tests with 3 real server processes (server.test.ts, forward.test.ts) share: placement and /cluster polls. */
import { afterAll, beforeAll, expect } from "bun:test";
import { enrollDevice, SwitchboardClient } from "../../src/client/client.ts";
import { generateDeviceKey, keyToFile, type KeyFile } from "../../src/client/keys.ts";
import type { Sent } from "../../src/client/types.ts";
import { Assignment, shardOf } from "../../src/core/cluster/shards.ts";
import { startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { startRedis, type TestRedis } from "../helpers/redis.ts";

export const IDS = ["n1", "n2", "n3"];
export const plan = new Assignment(IDS);
export const homeOf = (account: string) => plan.ownerOf(shardOf(account))!;

/** The first name with this prefix whose home is `node`. */
export function accountOn(node: string, prefix: string): string {
  for (let i = 0; ; i++) if (homeOf(`${prefix}${i}`) === node) return `${prefix}${i}`;
}

export async function status(n: TestServer): Promise<any> {
  const r = await n.http_get("/cluster");
  if (r.status !== 200) throw new Error(`/cluster answered ${r.status}: ${r.text}`);
  return JSON.parse(r.text);
}

/**
 * Polls until every node holds all it should (the first start of an empty Redis waits one lease TTL: grace), and
 * every node's view has every node up at its address with all its shards live. A node's own count says nothing of
 * its peers' views: they learn its leases from Redis (its `acq` message, sent after it holds them, or their next
 * read) and a restarted node's new address from its heartbeat, so a request through a peer right after the holder's
 * count could still be refused `retry_after` there (keys.test, group-list.test ask just then).
 */
export async function allHeld(nodes: Map<string, TestServer>): Promise<void> {
  await waitFor(async () => {
    for (const [id, n] of nodes) {
      const st = await status(n);
      if (st.held !== plan.shardsOf(id).length) return false;
      for (const x of st.nodes as { id: string; up: boolean; address: string | null; liveShards: number }[]) {
        const peer = nodes.get(x.id);
        if (!x.up || x.liveShards !== plan.shardsOf(x.id).length || (peer && x.address !== `127.0.0.1:${peer.tcp}`)) return false;
      }
    }
    return true;
  }, "every node to hold its shards, and every node's view to route them to it", 60_000);
}

/** The 3 nodes of one test file: started in beforeAll against a private redis-server, cleaned up in afterAll. */
export interface ThreeNodes {
  nodes: Map<string, TestServer>;
  clients: SwitchboardClient[];
  /** The file's redis-server (started in beforeAll). */
  redis(): TestRedis;
  /** The server flags of node `id` (the cluster settings and `extra`). */
  args(id: string): string[];
  /** One more device of `account` (the account created on its home node if new), enrolled there. */
  device(account: string): Promise<KeyFile>;
  /** An SDK client configured with node `via`'s address (redirected to the home from anywhere else); `on` runs before it connects. */
  connect(key: KeyFile, via: string, on?: (c: SwitchboardClient) => void): Promise<SwitchboardClient>;
}

export function threeNodes(ttlMs: number, extra: string[] = []): ThreeNodes {
  let redis: TestRedis | undefined;
  const t: ThreeNodes = {
    nodes: new Map(),
    clients: [],
    redis: () => redis!,
    async device(account) {
      const home = t.nodes.get(homeOf(account))!;
      const code = home.addUser(account);
      const key = generateDeviceKey();
      const r = await enrollDevice({ host: "127.0.0.1", port: home.tcp, account, code, key, name: "t" });
      return keyToFile(key, r.account, r.device);
    },
    async connect(key, via, on = () => {}) {
      const c = new SwitchboardClient({ host: "127.0.0.1", port: t.nodes.get(via)!.tcp, key });
      t.clients.push(c);
      on(c);
      await c.connect();
      return c;
    },
    args: (id) => ["--cluster-redis", redis!.url, "--cluster-node-id", id, "--cluster-nodes", IDS.join(","), "--cluster-lease-ttl", String(ttlMs), "--canary-interval", "0", ...extra],
  };
  beforeAll(async () => {
    redis = await startRedis();
    for (const id of IDS) t.nodes.set(id, await startServer({ args: t.args(id) }));
    await allHeld(t.nodes);
  }, 120_000);
  afterAll(async () => {
    for (const c of t.clients) await c.close().catch(() => {});
    for (const n of t.nodes.values()) n.cleanup();
    redis?.cleanup();
  });
  return t;
}

/**
 * An SDK client through `port` whose `error` events and closes without a reconnect are noted in `problems`, each
 * named (drain.test, add-node.test: under a drain or a node added, no client may report one).
 */
export async function watchedClient(clients: SwitchboardClient[], problems: string[], port: number, key: KeyFile, on: (c: SwitchboardClient) => void = () => {}): Promise<SwitchboardClient> {
  const c = new SwitchboardClient({ host: "127.0.0.1", port, key });
  clients.push(c);
  c.on("error", (e) => void problems.push(`${key.account}: error ${String(e)}`));
  c.on("close", (i) => void (!i.willReconnect && problems.push(`${key.account}: closed for good (${i.reason})`)));
  on(c);
  await c.connect();
  return c;
}

/** The messages of closed-loop senders (`${prefix}${k}` for the k-th send of each prefix): each once, in order per sender, seqs only growing. */
export function expectOnceInOrder(got: string[], sent: Record<string, Sent[]>): void {
  for (const [p, list] of Object.entries(sent)) {
    expect(got.filter((x) => x.startsWith(p))).toEqual(list.map((_, k) => `${p}${k}`));
    const reused = list.flatMap((x, k) => (k > 0 && x.seq <= list[k - 1]!.seq ? [`${p}${k - 1} and ${p}${k}: seq ${list[k - 1]!.seq}, ${x.seq}`] : []));
    expect(reused).toEqual([]); // seqs only grow per sender (none reused)
  }
  expect(got.length).toBe(Object.values(sent).reduce((n, l) => n + l.length, 0));
}
