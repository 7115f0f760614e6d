/**
 * Where the `presence` scenario runs: one server (spawned or --target, loadtest/target.ts), or with `--nodes N`
 * (N ≥ 2, --spawn only) a cluster of N spawned nodes on a private redis-server, each account created in its
 * home node's data directory and logging in there. Device i is homed on node i mod N, so each of its chats
 * (i+1..i+K) has its peer on another node whenever K < N, and on another node for about (N-1)/N of them
 * otherwise. Metrics and CPU are summed over the nodes. Not a scenario.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Assignment, shardOf } from "../src/core/cluster/shards.ts";
import { cpuSeconds, pin, rssKb, spawnServer, type SpawnedServer } from "./proc.ts";
import { portBlock, Redis } from "./redis-server.ts";
import { FatalError, UsageError, say, type Run } from "./run.ts";
import { allMetrics, serverSample, type Sample } from "./sample.ts";
import { provision, type Identity } from "./setup.ts";
import { setup } from "./target.ts";

export interface PresenceEnv {
  nodes: number;
  names: string[];
  ids: Identity[];
  /** Where device i logs in. */
  loginOf(i: number): { host: string; port: number; ca?: string };
  /** /metrics of every node, summed per sample name (null when one cannot be read). */
  metrics(): Promise<Map<string, number> | null>;
  /** CPU seconds of every server process so far (null without a pid). */
  cpu(): number | null;
  rssKb(): number | null;
  /** A sample for other_cpu_pct (the first server's process). */
  sample(): Sample;
  pids: number[];
  stop(): Promise<void>;
}

export async function presenceEnv(run: Run, nameOf: (i: number) => string, n: number, serverFlags: string[]): Promise<PresenceEnv> {
  const nodeCount = run.num("--nodes", 1, 1);
  if (nodeCount === 1) {
    const names = Array.from({ length: n }, (_, i) => nameOf(i));
    const { target, ids } = await setup(run, names, serverFlags);
    if (run.spawnMode) pin(process.pid, run.workerCpus);
    const t = { host: target.host, port: target.port, ca: target.ca };
    return {
      nodes: 1, names, ids, loginOf: () => t,
      metrics: () => allMetrics(target.http),
      cpu: () => serverSample(run, target.pid).cpu,
      rssKb: () => serverSample(run, target.pid).rss,
      sample: () => serverSample(run, target.pid),
      pids: target.pid === null ? [] : [target.pid],
      stop: async () => {},
    };
  }
  if (!run.spawnMode) throw new UsageError("--nodes spawns its own redis-server and nodes: give --spawn, not --target");
  const nodeIds = Array.from({ length: nodeCount }, (_, i) => `n${i + 1}`);
  const plan = new Assignment(nodeIds);
  const homeOf = (a: string) => plan.ownerOf(shardOf(a))!;
  // Device i's name: the first of nameOf(i)_k homed on node i mod N.
  const names = Array.from({ length: n }, (_, i) => {
    for (let k = 0; ; k++) if (homeOf(`${nameOf(i)}_${k}`) === nodeIds[i % nodeCount]) return `${nameOf(i)}_${k}`;
  });
  const root = mkdtempSync(join(tmpdir(), "sb-presence-cluster-"));
  const base = portBlock(nodeCount + 1);
  const redis = new Redis(base, root);
  const servers: SpawnedServer[] = [];
  const kill = () => {
    for (const s of servers) if (s.proc.exitCode === null) s.proc.kill("SIGKILL");
    redis.proc?.kill("SIGKILL");
  };
  process.on("exit", kill);
  await redis.start();
  const ids = new Array<Identity>(n);
  const cpus = run.words("--server-cpus");
  for (const [k, id] of nodeIds.entries()) {
    const dir = join(root, id);
    const mine = names.map((x, i) => [x, i] as const).filter(([x]) => homeOf(x) === id);
    const p = provision(dir, mine.map(([x]) => x));
    for (const [j, [, i]] of mine.entries()) ids[i] = p.identities[j]!;
    const flags = [
      "--tls-port", "-1", "--canary-interval", "0", "--cluster-redis", `redis://127.0.0.1:${redis.port}`,
      "--cluster-node-id", id, "--cluster-nodes", nodeIds.join(","), "--cluster-link-port", String(base + 1 + k),
      ...serverFlags, ...run.words("--server-flags"),
    ];
    servers.push(await spawnServer(dir, cpus.length ? cpus[k % cpus.length]! : null, flags));
  }
  if (run.workerCpus) pin(process.pid, run.workerCpus);
  // Every node holds its shards (the first start of an empty Redis waits one lease TTL).
  const deadline = Date.now() + 60_000;
  for (const [k, s] of servers.entries()) {
    const want = plan.shardsOf(nodeIds[k]!).length;
    while ((await allMetrics(s.http))?.get("switchboard_cluster_shards_held") !== want) {
      if (Date.now() > deadline) throw new FatalError(`node ${nodeIds[k]} did not take its ${want} shards within 60 s`);
      await Bun.sleep(100);
    }
  }
  say(`cluster: redis 127.0.0.1:${redis.port}, ${nodeCount} nodes ${servers.map((s, k) => `${nodeIds[k]} pid ${s.pid} tcp ${s.tcp}`).join(", ")}; device i homed on node i mod ${nodeCount}`);
  return {
    nodes: nodeCount, names, ids,
    loginOf: (i) => ({ host: "127.0.0.1", port: servers[nodeIds.indexOf(homeOf(names[i]!))]!.tcp }),
    async metrics() {
      const all = await Promise.all(servers.map((s) => allMetrics(s.http)));
      if (all.some((m) => m === null)) return null;
      const sum = new Map<string, number>();
      for (const m of all) for (const [k, v] of m!) sum.set(k, (sum.get(k) ?? 0) + v);
      return sum;
    },
    cpu: () => servers.reduce((a, s) => a + (cpuSeconds(s.pid) ?? 0), 0),
    rssKb: () => servers.reduce((a, s) => a + (rssKb(s.pid) ?? 0), 0),
    sample: () => serverSample(run, servers[0]!.pid),
    pids: servers.map((s) => s.pid),
    async stop() {
      for (const s of servers) s.proc.kill("SIGTERM");
      await Promise.race([Promise.all(servers.map((s) => s.proc.exited)), Bun.sleep(12_000)]);
      kill();
      await redis.proc?.exited;
      if (!run.bool("--keep")) rmSync(root, { recursive: true, force: true });
      else say(`kept ${root}`);
    },
  };
}
