/**
 * Cluster mode in the real server: 3 `switchboard serve` processes and a
 * private redis-server. Proves, over real sockets:
 * - every node ends up holding exactly the shards rendezvous gives it over
 *   cluster.nodes (sum 4096, disjoint), visible on GET /cluster;
 * - a login and an enrollment on the wrong node are redirected (`redirect`
 *   then `close redirect`) and the SDK ends on the home node, where it sends
 *   and receives;
 * - while a node is down (kill -9), its accounts' logins and sends to them
 *   get retry_after with a retry_ms, never silence; after it restarts (new
 *   ports, same data dir) every message acknowledged (`sent`) before the
 *   kill is delivered, exactly once, in order, and an SDK client that kept
 *   retrying through the outage ends on the restarted home.
 * No timing assertions: conditions are polled with generous bounds.
 */
import { describe, expect, test } from "bun:test";
import { accountOn, homeOf, IDS, plan, status, threeNodes } from "./three-nodes.ts";
import { loadConfig } from "../../src/core/config.ts";
import { enrollDevice, SwitchboardClient } from "../../src/client/client.ts";
import { generateDeviceKey, keyFromFile, keyToFile, type KeyFile } from "../../src/client/keys.ts";
import { LeanConn, rememberedHome } from "../../loadtest/lean.ts";
import { BUN, MAIN, ROOT, startServer, waitFor, type TestServer } from "../helpers/harness.ts";
import { CLEAN_ENV } from "../helpers/line-process.ts";

const TTL = 4000; // a loaded 2-core machine: renewals every 1.3 s leave room for a slow tick


const { nodes, clients, args } = threeNodes(TTL);



/** A `switchboard` command: exit code and output. */
async function run(...argv: string[]): Promise<{ code: number; out: string }> {
  const p = Bun.spawn([BUN, MAIN, ...argv], { cwd: ROOT, env: CLEAN_ENV, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, out: out + err };
}

/** GET /cluster's moves not over. */
const st0 = (st: { moves: unknown[] }) => st.moves;

/** `switchboard cluster status` against a node's HTTP port. */
const cli = (n: TestServer, ...extra: string[]) => run("cluster", "status", "--http-port", String(n.http), ...extra);

function track<T extends SwitchboardClient>(c: T): T {
  clients.push(c);
  return c;
}

/** Enrolls a device of `account` through `via` (any node: the enrollment is redirected to the home). */
async function device(account: string, via: TestServer): Promise<KeyFile> {
  const code = nodes.get(homeOf(account))!.addUser(account); // the account lives in its home node's data dir
  const key = generateDeviceKey();
  const r = await enrollDevice({ host: "127.0.0.1", port: via.tcp, account, code, key, name: "t" });
  return keyToFile(key, r.account, r.device);
}

describe("cluster mode, 3 server processes and redis-server", () => {
  test("placement: the held sets are the rendezvous plan over cluster.nodes, disjoint, 4096 in all", async () => {
    let total = 0;
    for (const [id, n] of nodes) {
      const st = await status(n);
      expect(st.node).toBe(id);
      expect(st.redis.up).toBe(true);
      expect(st.held).toBe(plan.shardsOf(id).length);
      expect(st.nodes.map((x: any) => x.id)).toEqual(IDS);
      expect(st.nodes.every((x: any) => x.up)).toBe(true);
      total += st.held;
    }
    expect(total).toBe(4096);
    const c = await cli(nodes.get("n2")!);
    expect(c.code).toBe(0);
    expect(c.out).toContain("node n2");
    expect(c.out).toContain(`holds ${plan.shardsOf("n2").length} shards here`);
    for (const id of IDS) expect(c.out).toMatch(new RegExp(`^${id}\\s+up\\s+127\\.0\\.0\\.1:${nodes.get(id)!.tcp}\\s+${plan.shardsOf(id).length}\\s`, "m"));
    // The last columns, link held and link lag: none to itself; to each peer the items and bytes its link holds in
    // memory here, and a count of unacknowledged batches (hung-peer.test shows them non-zero towards a stopped node).
    expect(c.out).toMatch(/oldest lease seen\s+link held\s+link lag$/m);
    expect(c.out).toMatch(/^n2\s+up\s.*ms ago\s+-\s+-$/m);
    for (const id of ["n1", "n3"]) expect(c.out).toMatch(new RegExp(`^${id}\\s+up\\s.*ms ago\\s+\\d+ \\(\\d+\\.\\d KiB\\)\\s+\\d+$`, "m"));
    expect(c.out).toContain("moves: none pending");
    expect(st0(await status(nodes.get("n2")!))).toEqual([]);
    expect(await nodes.get("n1")!.metric("switchboard_cluster_shards_held")).toBe(plan.shardsOf("n1").length);
  });

  test("a login and an enrollment on the wrong node are redirected; the SDK ends on the home and messages flow there", async () => {
    const n1 = nodes.get("n1")!;
    const n2 = nodes.get("n2")!;
    const [a, b] = [accountOn("n2", "ra"), accountOn("n2", "rb")];
    const before = await n1.metric("switchboard_cluster_redirects_total");
    const ka = await device(a, n1); // enrolled through n1, redirected to n2
    const kb = await device(b, n2);
    const ca = track(new SwitchboardClient({ host: "127.0.0.1", port: n1.tcp, key: ka }));
    await ca.connect();
    expect(ca.home).toMatchObject({ host: "127.0.0.1", port: n2.tcp });
    expect(await n1.metric("switchboard_cluster_redirects_total")).toBeGreaterThanOrEqual(before + 2);
    // Its reconnect resumes with the ticket its home issued (PROTOCOL.md §4.11: each node checks its own tickets).
    let readies = 0;
    ca.on("ready", () => readies++);
    ca.dropConnection();
    await waitFor(() => readies === 1 && ca.isReady, "a's reconnect");
    expect(ca.lastLogin?.kind).toBe("resume");
    const cb = track(new SwitchboardClient({ host: "127.0.0.1", port: nodes.get("n3")!.tcp, key: kb }));
    const got: string[] = [];
    cb.on("message", (m) => got.push(new TextDecoder().decode(m.payload)));
    await cb.connect();
    expect(cb.home?.port).toBe(n2.tcp);
    for (let i = 0; i < 20; i++) await ca.send(b, `m${i}`);
    await waitFor(() => got.length >= 20, "20 messages on the home node");
    expect(got).toEqual(Array.from({ length: 20 }, (_, i) => `m${i}`));
    // The load generator's own connection (loadtest/lean.ts) follows it too, and remembers the home.
    const kl = await device(b, n1); // a second device of b: the first one's session stays
    const lean = new LeanConn(b, kl.device, keyFromFile(kl).privateKey, { onFrame() {}, onClose() {}, onError() {} });
    expect(await lean.login({ host: "127.0.0.1", port: n1.tcp }, 30_000)).toBe(true);
    expect(rememberedHome(b)).toEqual({ host: "127.0.0.1", port: n2.tcp });
    lean.quit();
    // A raw login shows the wire form: `redirect {host, port, ttl}` then `close redirect`.
    const raw = await n1.raw();
    await raw.hello();
    raw.send({ t: "auth", u: b, d: 1, sig: new Uint8Array(64) });
    const r = await raw.expect("redirect");
    expect(r).toMatchObject({ host: "127.0.0.1", port: n2.tcp });
    expect(r.ttl).toBeGreaterThan(0);
    expect((await raw.expect("close")).r).toBe("redirect");
  });

  test("over WebSocket, a redirect names the home's WS URL: the SDK enrolls and logs in there and messages flow", async () => {
    const n1 = nodes.get("n1")!;
    const n2 = nodes.get("n2")!;
    const [a, b] = [accountOn("n2", "wa"), accountOn("n2", "wb")];
    const code = n2.addUser(a);
    const key = generateDeviceKey();
    // Enrolled through n1's WebSocket port: redirected to n2's (a WS client has no TCP port to go to in a browser).
    const r = await enrollDevice({ url: `ws://127.0.0.1:${n1.ws}/`, host: "", port: 0, account: a, code, key, name: "ws" });
    const ka = keyToFile(key, r.account, r.device);
    const kb = await device(b, n2);
    const ca = track(new SwitchboardClient({ url: `ws://127.0.0.1:${n1.ws}/`, host: "", port: 0, key: ka }));
    await ca.connect(); // with the URL it was given, n1 would redirect it again and again: ready means it reached n2
    expect(ca.home).toMatchObject({ host: "127.0.0.1", port: n2.tcp, url: `ws://127.0.0.1:${n2.ws}/` });
    const cb = track(new SwitchboardClient({ host: "127.0.0.1", port: n2.tcp, key: kb }));
    const got: string[] = [];
    cb.on("message", (m) => got.push(new TextDecoder().decode(m.payload)));
    await cb.connect();
    for (let i = 0; i < 5; i++) await ca.send(b, `w${i}`);
    await waitFor(() => got.length >= 5, "5 messages from the WS client on its home");
    expect(got).toEqual(["w0", "w1", "w2", "w3", "w4"]);
    // A reconnect dials the remembered home's WS URL directly (no redirect on the way).
    const before = await n1.metric("switchboard_cluster_redirects_total");
    let readies = 0;
    ca.on("ready", () => readies++);
    ca.dropConnection();
    await waitFor(() => readies === 1 && ca.isReady, "the WS client's reconnect");
    expect(await n1.metric("switchboard_cluster_redirects_total")).toBe(before);
    // The wire form, over WS and over TCP: `redirect {host, port, ttl, ws}`.
    for (const transport of ["ws", "tcp"] as const) {
      const raw = await n1.raw(transport);
      await raw.hello();
      raw.send({ t: "auth", u: b, d: 1, sig: new Uint8Array(64) });
      expect(await raw.expect("redirect")).toMatchObject({ host: "127.0.0.1", port: n2.tcp, ws: `ws://127.0.0.1:${n2.ws}/` });
      expect((await raw.expect("close")).r).toBe("redirect");
    }
  });

  test("kill -9 of a node: retry_after for its accounts while it is down; after its restart nothing acknowledged is lost", async () => {
    const n1 = nodes.get("n1")!;
    const n3 = nodes.get("n3")!;
    const [s, r] = [accountOn("n3", "ks"), accountOn("n3", "kr")];
    const a = accountOn("n1", "ka");
    const [ks, kr, ka] = [await device(s, n3), await device(r, n3), await device(a, n1)];
    const sender = track(new SwitchboardClient({ host: "127.0.0.1", port: n3.tcp, key: ks }));
    await sender.connect();
    const N = 50;
    for (let i = 0; i < N; i++) await sender.send(r, `k${i}`); // each awaited `sent`: durable on n3
    await sender.close();
    await n3.kill9();
    // n1 sees n3's leases lapse within about one TTL; until then it would redirect to the dead address.
    await waitFor(async () => (await status(n1)).nodes.find((x: any) => x.id === "n3").liveShards === 0, "n1 to see n3's shards unowned", 60_000);
    const down = await cli(n1, "--json");
    expect(down.code).toBe(1); // a node down, shards unowned: scripts can wait on the exit code
    expect(JSON.parse(down.out).nodes.find((x: any) => x.id === "n3")).toMatchObject({ up: false, liveShards: 0 });
    // A login of an n3 account on n1: retry_after with retry_ms, then close try_again with ra (never silence).
    const raw = await n1.raw();
    await raw.hello();
    raw.send({ t: "auth", u: r, d: 1, sig: new Uint8Array(64) });
    const e = await raw.expect("err");
    expect(e.e).toBe("retry_after");
    expect((e.x as any).retry_ms).toBeGreaterThan(0);
    const c = await raw.expect("close");
    expect(c.r).toBe("try_again");
    expect(c.ra).toBeGreaterThan(0);
    // A send from n1 to an n3 account: refused with the message's id, nothing accepted; the session stays.
    const rs = await n1.raw();
    await rs.login(ka);
    rs.send({ t: "msg", id: "x1", to: r, p: [[1, new Uint8Array(8)]] });
    const refused = await rs.expect("err");
    expect(refused).toMatchObject({ e: "retry_after", id: "x1" });
    expect((refused.x as any).retry_ms).toBeGreaterThan(0);
    rs.send({ t: "ping", n: 7 });
    expect((await rs.expect("pong")).n).toBe(7);
    rs.end();
    // The SDK client of the receiver keeps trying through the outage, starting at n1.
    const got: string[] = [];
    const cr = track(new SwitchboardClient({ host: "127.0.0.1", port: n1.tcp, key: kr }));
    cr.on("message", (m) => got.push(new TextDecoder().decode(m.payload)));
    const ready = cr.connect();
    await n3.restart(); // same data dir, new ports
    await ready;
    expect(cr.home?.port).toBe(n3.tcp);
    await waitFor(() => got.length >= N, `${N} messages after the restart`, 60_000);
    expect(got).toEqual(Array.from({ length: N }, (_, i) => `k${i}`));
  }, 120_000);

  test("SIGSTOP of a node past its leases, then SIGCONT: it re-takes every shard at a new epoch (none renewed after it lapsed) and no send is lost or left unanswered", async () => {
    const n1 = nodes.get("n1")!;
    const [a, b] = [accountOn("n1", "sa"), accountOn("n1", "sb")];
    const [ka, kb] = [await device(a, n1), await device(b, n1)];
    const ca = track(new SwitchboardClient({ host: "127.0.0.1", port: n1.tcp, key: ka }));
    const cb = track(new SwitchboardClient({ host: "127.0.0.1", port: n1.tcp, key: kb }));
    const got: string[] = [];
    cb.on("message", (m) => got.push(new TextDecoder().decode(m.payload)));
    await ca.connect();
    await cb.connect();
    const before = await status(n1);
    const expired = await n1.metric("switchboard_cluster_lease_events_total", '{event="expired"}');
    let sends: Promise<unknown>[] = [];
    n1.proc.kill("SIGSTOP");
    try {
      await Bun.sleep(TTL + 2000); // past every lease's deadline and past its key's TTL in Redis
      // Written into the socket while the node sleeps: on waking it must refuse them (retry_after) until it
      // can prove its shards again, or accept them at a new epoch; the SDK resends after retry_after.
      sends = Array.from({ length: 10 }, (_, i) => ca.send(b, `p${i}`));
    } finally {
      n1.proc.kill("SIGCONT");
    }
    await Promise.all(sends);
    await waitFor(() => got.length >= 10, "10 messages after SIGCONT", 60_000);
    expect(got).toEqual(Array.from({ length: 10 }, (_, i) => `p${i}`));
    // The shards come back in batches of 512 (the messages' shard may be in the first): wait for all of them.
    await waitFor(async () => (await status(n1)).held === plan.shardsOf("n1").length, "n1 to hold all its shards again", 60_000);
    const after = await status(n1);
    expect(after.heldEpochs.min).toBeGreaterThan(before.heldEpochs.max);
    expect(await n1.metric("switchboard_cluster_lease_events_total", '{event="expired"}')).toBeGreaterThanOrEqual(expired + plan.shardsOf("n1").length);
  }, 120_000);

  test("user add in cluster mode creates an account only beside its home node, and names the home otherwise", async () => {
    const n1 = nodes.get("n1")!;
    const flags = ["--data-dir", n1.dataDir, ...args("n1")];
    const wrong = await run("user", "add", accountOn("n2", "ua"), ...flags);
    expect(wrong.code).not.toBe(0);
    expect(wrong.out).toContain("belongs on cluster node n2, not n1");
    const right = await run("user", "add", accountOn("n1", "ua"), ...flags);
    expect(right.code).toBe(0);
    expect(right.out).toContain("created account");
  });

  test("a single node has no cluster: GET /cluster is 404, and cluster settings without cluster.redis are refused", async () => {
    const single = await startServer({ args: ["--canary-interval", "0"] });
    try {
      expect((await single.http_get("/cluster")).status).toBe(404);
    } finally {
      single.cleanup();
    }
    expect(() => loadConfig({ env: {}, flags: { "--cluster-node-id": "n1" } })).toThrow(/cluster.redis is not/);
    expect(() => loadConfig({ env: {}, flags: { "--cluster-redis": "redis://127.0.0.1:1", "--cluster-node-id": "n9", "--cluster-nodes": "n1,n2" } })).toThrow(/not in cluster.nodes/);
    expect(() => loadConfig({ env: {}, flags: { "--cluster-redis": "localhost:6379", "--cluster-node-id": "n1", "--cluster-nodes": "n1" } })).toThrow(/redis:\/\/ URL/);
    expect(() => loadConfig({ env: {}, flags: { "--cluster-redis": "redis://127.0.0.1:1", "--cluster-node-id": "n1", "--cluster-nodes": "n1", "--tcp-host": "0.0.0.0" } })).toThrow(/cluster.advertise must be set/);
  });
});
