/**
 * `cluster`: N nodes on one private redis-server, pairs whose two ends are
 * homed on different nodes (a settable share), a closed loop of 1:1
 * messages both ways with their `dlv` receipts, and optionally a kill loop
 * (kill -9 of a random node, restarted at once on the same ports and data
 * dir, as systemd's Restart=always does) and a kill -9 and restart of Redis.
 *
 *   npm run loadtest -- cluster --spawn --nodes 3 --cross 0.67 --kills 5 --redis-kill
 *   npm run loadtest -- cluster --spawn --nodes 2 --rate 2000 --stops 1     # open loop, one SIGSTOP past the lease
 *   npm run loadtest -- cluster --spawn --nodes 2 --cross 1 --server-main /tmp/sb-5cbac83/src/cli/main.ts   # A/B: every node from another tree
 *   npm run loadtest -- cluster --spawn --nodes 2 --server-bun-flags "--cpu-prof-md --cpu-prof-dir /tmp/prof"  # a profile per node
 *
 * Everything is spawned here: redis-server (ephemeral port, temporary dir,
 * no persistence, as docs/CLUSTER.md asks), the nodes (pinned round-robin
 * over --server-cpus), and the SDK clients in this process (pinned to
 * --worker-cpus). Every client connects through the first node and follows
 * its redirect home (counted in `redirects`).
 *
 * At the end, after every device drained: every message a sender saw `sent`
 * for must have reached its recipient once, in send order per sender. The
 * JSON line adds `nodes`, `cross_node_share`, `redirects`, `kills`,
 * `refused_retry` (sends and logins answered retry_after, from the nodes'
 * counters), `reroutable_p99_ms` (from a killed node's restart until each
 * of its accounts has a send acknowledged again), `redis_ops_per_msg`
 * (INFO commandstats calls over the run / messages delivered) and
 * `msgs_per_server_cpu_s` (delivered messages / CPU seconds of all nodes).
 *
 * `seq_reused`: messages of one conversation delivered with a number another message of it already had.
 *
 * Exit status: 0 clean; 1 an acknowledged message was lost; 3 duplicates, a reused seq or
 * disorder; 5 the run could not go on.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { SwitchboardClient, type Message } from "../../src/client/client.ts";
import { generateDeviceKey, keyToFile, type KeyFile } from "../../src/client/keys.ts";
import { Assignment, shardOf } from "../../src/core/cluster/shards.ts";
import { SqliteAccountStore } from "../../src/store/accounts.ts";
import { cpuSeconds, pin, spawnServer, type SpawnedServer } from "../proc.ts";
import { portBlock, Redis } from "../redis-server.ts";
import { FatalError, UsageError, round, type Outcome, type Run } from "../run.ts";
import { flagNames, section, type Scenario } from "../scenario.ts";
import { fmtLatency, newHistogram, summary } from "../stats.ts";

interface Node {
  id: string;
  dir: string;
  cpus: string | null;
  flags: string[];
  server: SpawnedServer;
  /** CPU seconds of its earlier incarnations. */
  cpuBefore: number;
  /** retry_after counts of its earlier incarnations (read just before each kill). */
  retryBefore: number;
  redirectsBefore: number;
  /** Link batches and items it sent in its earlier incarnations. */
  linkBefore: { batches: number; items: number; kept: number };
}

async function metricSum(http: number, name: string): Promise<number> {
  const r = await fetch(`http://127.0.0.1:${http}/metrics`).catch(() => null);
  if (!r || !r.ok) return 0;
  let n = 0;
  for (const line of (await r.text()).split("\n")) if (line.startsWith(name)) n += Number(line.slice(line.lastIndexOf(" ") + 1)) || 0;
  return n;
}

interface Opts {
  nodes: number;
  pairs: number;
  cross: number;
  window: number;
  duration: number;
  kills: number;
  /** SIGSTOP a random node this many times, for stopMs each, then SIGCONT. */
  stops: number;
  stopMs: number;
  /** Open loop: messages per second over all senders (null: the closed loop of `window`). */
  rate: number | null;
  redisKill: boolean;
  ttl: number;
  serverCpus: string[];
  workerCpus: string | null;
  serverFlags: string[];
  /** Flags for the bun running each node (e.g. --cpu-prof-md --cpu-prof-dir DIR: one profile per node and incarnation). */
  serverBunFlags: string[];
  /** Another tree's server entry (an A/B against an older commit); its tree's account store writes the accounts. */
  serverMain: string | undefined;
  keep: boolean;
}

async function runCluster(o: Opts): Promise<Outcome> {
  const root = mkdtempSync(join(tmpdir(), "sb-cluster-"));
  const ids = Array.from({ length: o.nodes }, (_, i) => `n${i + 1}`);
  const plan = new Assignment(ids);
  const homeOf = (a: string) => plan.ownerOf(shardOf(a))!;
  const base = portBlock(4 * o.nodes + 1);
  const redis = new Redis(base, root);
  const nodes: Node[] = [];
  const cleanup = () => {
    for (const n of nodes) if (n.server.proc.exitCode === null) n.server.proc.kill("SIGKILL");
    redis.proc?.kill("SIGKILL");
  };
  process.on("exit", cleanup);
  try {
    if (o.workerCpus) pin(process.pid, o.workerCpus);
    await redis.start();
    // Accounts: pair i's a end on node i % N, its b end on the next node when the pair crosses, else the same one.
    const crossing = Math.round(o.pairs * o.cross);
    const taken = new Set<string>();
    const nameOn = (node: string, prefix: string) => {
      for (let k = 0; ; k++) {
        const n = `${prefix}${k}`;
        if (!taken.has(n) && homeOf(n) === node) return taken.add(n), n;
      }
    };
    const pairs: { a: string; b: string; cross: boolean }[] = [];
    for (let i = 0; i < o.pairs; i++) {
      const na = ids[i % o.nodes]!;
      const cross = i < crossing && o.nodes > 1;
      const nb = cross ? ids[(i + 1) % o.nodes]! : na;
      pairs.push({ a: nameOn(na, `c${i}a`), b: nameOn(nb, `c${i}b`), cross });
    }
    const keys = new Map<string, KeyFile>();
    // A server of another tree gets its own tree's schema (an older server refuses a file a newer one made: setup.ts).
    const Store: typeof SqliteAccountStore = o.serverMain
      ? (await import(resolve(dirname(resolve(o.serverMain)), "../store/accounts.ts"))).SqliteAccountStore
      : SqliteAccountStore;
    for (const id of ids) {
      const dir = join(root, id);
      const store = new Store(dir);
      for (const p of pairs) for (const acc of [p.a, p.b]) {
        if (homeOf(acc) !== id) continue;
        const key = generateDeviceKey();
        store.createAccount(acc, 60);
        const r = store.addDevice(acc, key.publicKey, "cluster", 4);
        if (!r.ok) throw new FatalError(r.message);
        keys.set(acc, keyToFile(key, acc, r.value.device));
      }
      store.close();
    }
    // Fixed ports per node, so that a restarted node is where its clients remember it.
    for (const [i, id] of ids.entries()) {
      const p = base + 1 + 4 * i;
      const flags = [
        "--tcp-port", String(p), "--http-port", String(p + 1), "--tls-port", "-1", "--canary-interval", "0",
        "--cluster-redis", `redis://127.0.0.1:${redis.port}`, "--cluster-node-id", id, "--cluster-nodes", ids.join(","),
        "--cluster-lease-ttl", String(o.ttl), "--cluster-link-port", String(p + 2),
        "--presence-stranger-receipts", "1000000", "--queue-max-messages", "1000000", "--queue-max-bytes", "1073741824",
        ...o.serverFlags,
      ];
      const cpus = o.serverCpus.length ? o.serverCpus[i % o.serverCpus.length]! : null;
      const dir = join(root, id);
      nodes.push({ id, dir, cpus, flags, server: await spawnServer(dir, cpus, flags, o.serverBunFlags, o.serverMain), cpuBefore: 0, retryBefore: 0, redirectsBefore: 0, linkBefore: { batches: 0, items: 0, kept: 0 } });
    }
    const nodeOf = (id: string) => nodes.find((n) => n.id === id)!;
    console.log(`cluster: redis 127.0.0.1:${redis.port}, ${o.nodes} node(s) ${nodes.map((n) => `${n.id} pid ${n.server.pid} tcp ${n.server.tcp} cpu ${n.cpus ?? "-"}`).join(", ")}`);
    // Every node holds its shards (the first start of an empty Redis waits one lease TTL).
    const deadline = Date.now() + 60_000;
    for (const n of nodes) {
      const want = plan.shardsOf(n.id).length;
      while ((await metricSum(n.server.http, "switchboard_cluster_shards_held")) !== want) {
        if (Date.now() > deadline) throw new FatalError(`node ${n.id} did not take its ${want} shards within 60 s`);
        await Bun.sleep(100);
      }
    }

    // Clients: all through the first node, redirected home.
    const entry = nodes[0]!.server.tcp;
    const clients = new Map<string, SwitchboardClient>();
    const got = new Map<string, Message[]>();
    for (const [acc, kf] of keys) {
      const c = new SwitchboardClient({ host: "127.0.0.1", port: entry, key: kf, pingMs: 500 });
      const list: Message[] = [];
      got.set(acc, list);
      c.on("message", (m: Message) => void list.push(m));
      clients.set(acc, c);
    }
    await Promise.all([...clients.values()].map((c) => c.connect()));
    console.log(`cluster: ${clients.size} devices logged in; ${pairs.filter((p) => p.cross).length} of ${o.pairs} pairs cross nodes`);

    const acked = new Map<string, string[]>(); // sender -> acked bodies in send order of acknowledgement
    const sentOrder = new Map<string, string[]>(); // sender -> bodies in send order
    /** After a kill: account -> restart time, until its first `sent` after it (reroutable). */
    const waitingServe = new Map<string, number>();
    const reroute = newHistogram();
    let sent = 0;
    let refused = 0;
    let stop = false;
    const latency = newHistogram();
    // Redis's counters restart with it (--redis-kill): what the killed incarnation counted is added up here.
    let calls0 = await redis.calls();
    let callsKilled = 0;
    const cpu0 = nodes.map((n) => cpuSeconds(n.server.pid) ?? 0);
    const t0 = performance.now();
    const loop = async (from: string, to: string) => {
      const c = clients.get(from)!;
      const order: string[] = [];
      const ok: string[] = [];
      sentOrder.set(from, order);
      acked.set(from, ok);
      const inflight = new Set<Promise<void>>();
      let k = 0;
      while (!stop) {
        const body = `${from}:${k++}`;
        order.push(body);
        sent++;
        const at = performance.now();
        const p: Promise<void> = c.send(to, body).then(
          () => {
            ok.push(body);
            latency.recordValue(Math.max(1, Math.round((performance.now() - at) * 1000)));
            const since = waitingServe.get(from);
            if (since !== undefined) {
              waitingServe.delete(from);
              reroute.recordValue(Math.max(1, Math.round((performance.now() - since) * 1000))); // µs, as every histogram here
            }
          },
          async () => {
            refused++;
            await Bun.sleep(20);
          },
        );
        inflight.add(p);
        void p.finally(() => inflight.delete(p));
        if (inflight.size >= o.window) await Promise.race(inflight);
      }
      await Promise.all(inflight);
    };
    /**
     * Open loop (--rate): messages go out at the rate, round robin over the senders, whatever the answers; each
     * one's latency runs from its intended send time (no coordinated omission). A sender with OPEN_MAX_INFLIGHT
     * unanswered skips its turn (counted in skipped_by_generator), so a stalled node cannot grow this process
     * without bound.
     */
    const openLoop = async (rate: number) => {
      const senders = pairs.flatMap((p) => [{ from: p.a, to: p.b }, { from: p.b, to: p.a }]).map((d) => {
        const x = { ...d, order: [] as string[], ok: [] as string[], k: 0, inflight: 0 };
        sentOrder.set(d.from, x.order);
        acked.set(d.from, x.ok);
        return x;
      });
      const all = new Set<Promise<void>>();
      let issued = 0;
      let rr = 0;
      while (!stop) {
        const due = Math.floor(((performance.now() - t0) / 1000) * rate);
        for (; issued < due && !stop; issued++) {
          const x = senders[rr]!;
          rr = (rr + 1) % senders.length;
          if (x.inflight >= OPEN_MAX_INFLIGHT) {
            skipped++;
            continue;
          }
          const intended = t0 + (issued / rate) * 1000;
          const body = `${x.from}:${x.k++}`;
          x.order.push(body);
          x.inflight++;
          sent++;
          const p: Promise<void> = clients.get(x.from)!.send(x.to, body).then(
            () => {
              x.ok.push(body);
              latency.recordValue(Math.max(1, Math.round((performance.now() - intended) * 1000)));
              const since = waitingServe.get(x.from);
              if (since !== undefined) waitingServe.delete(x.from), reroute.recordValue(Math.max(1, Math.round((performance.now() - since) * 1000)));
            },
            () => void refused++,
          );
          all.add(p);
          void p.finally(() => (x.inflight--, all.delete(p)));
        }
        await Bun.sleep(1);
      }
      await Promise.all(all);
    };
    let skipped = 0;
    const loops = o.rate !== null ? [openLoop(o.rate)] : pairs.flatMap((p) => [loop(p.a, p.b), loop(p.b, p.a)]);

    // The kill loop, spread over the run (kills and SIGSTOPs in a random order); Redis killed once in the middle.
    const faults = [...Array<"kill">(o.kills).fill("kill"), ...Array<"stop">(o.stops).fill("stop")].sort(() => Math.random() - 0.5);
    const events = faults.length + (o.redisKill ? 1 : 0);
    const gap = (o.duration * 1000) / (events + 1);
    let redisDone = !o.redisKill;
    const rnd = Math.random;
    for (let e = 0; e < events; e++) {
      await Bun.sleep(gap);
      if (!redisDone && (e === Math.floor(events / 2) || e === events - 1)) {
        redisDone = true;
        callsKilled += (await redis.calls()) - calls0;
        calls0 = 0; // the restarted incarnation counts from nothing
        await redis.kill9();
        console.log("cluster: redis-server killed with -9");
        await Bun.sleep(Math.min(1000, o.ttl / 4));
        await redis.start();
        console.log("cluster: redis-server restarted on the same port");
        continue;
      }
      const n = nodes[Math.floor(rnd() * nodes.length)]!;
      if (faults.pop() === "stop") {
        // Longer than its lease (by default): it must come back at a new epoch, none of its stale writes accepted.
        n.server.proc.kill("SIGSTOP");
        await Bun.sleep(o.stopMs);
        n.server.proc.kill("SIGCONT");
        const at = performance.now();
        for (const acc of keys.keys()) if (homeOf(acc) === n.id) waitingServe.set(acc, at);
        console.log(`cluster: stopped ${n.id} (SIGSTOP) for ${o.stopMs} ms, then SIGCONT`);
        continue;
      }
      n.retryBefore += await metricSum(n.server.http, "switchboard_cluster_retry_after_total");
      n.redirectsBefore += await metricSum(n.server.http, "switchboard_cluster_redirects_total");
      n.linkBefore.batches += await metricSum(n.server.http, "switchboard_cluster_link_sent_batches");
      n.linkBefore.items += await metricSum(n.server.http, "switchboard_cluster_link_sent_items");
      n.linkBefore.kept += await metricSum(n.server.http, "switchboard_cluster_link_sent_kept");
      n.cpuBefore += cpuSeconds(n.server.pid) ?? 0;
      n.server.proc.kill("SIGKILL");
      await n.server.proc.exited;
      n.server = await spawnServer(n.dir, n.cpus, n.flags, o.serverBunFlags, o.serverMain);
      const at = performance.now();
      for (const acc of keys.keys()) if (homeOf(acc) === n.id) waitingServe.set(acc, at);
      console.log(`cluster: killed ${n.id} with -9 and restarted it (pid ${n.server.pid}); ${[...acked.values()].reduce((s, l) => s + l.length, 0)} acknowledged so far`);
    }
    await Bun.sleep(gap);
    stop = true;
    await Promise.all(loops);
    const sendSeconds = (performance.now() - t0) / 1000;
    // Drain: every acknowledged message at its recipient.
    const recipientOf = new Map(pairs.flatMap((p) => [[p.a, p.b], [p.b, p.a]] as [string, string][]));
    const bodiesAt = (acc: string) => new Set(got.get(acc)!.filter((m) => !m.sync).map((m) => new TextDecoder().decode(m.payload)));
    const missing = () => {
      let n = 0;
      for (const [from, ok] of acked) {
        const at = bodiesAt(recipientOf.get(from)!);
        for (const b of ok) if (!at.has(b)) n++;
      }
      return n;
    };
    const drainEnd = Date.now() + 60_000;
    while (missing() > 0 && Date.now() < drainEnd) await Bun.sleep(100);
    const byCmd = await redis.byCommand();
    const calls1 = Object.values(byCmd).reduce((a, b) => a + b, 0);
    // Every incarnation's CPU in the run (a restarted node's start-up and recovery included).
    const cpu = nodes.reduce((s, n, i) => s + n.cpuBefore + (cpuSeconds(n.server.pid) ?? 0) - cpu0[i]!, 0);
    // Integrity, per sender: its messages at its recipient once each, in its send order.
    let lost = 0;
    let duplicates = 0;
    let outOfOrder = 0;
    let delivered = 0;
    // No sequence number issued twice (issue 12): within a conversation (both directions share one sequence), one
    // seq must never carry two different messages. A message accepted again after its sender's node died carries a
    // new seq for the same body, which is not a reuse.
    let seqReused = 0;
    const seqs = new Map<string, Map<number, string>>();
    for (const [from, order] of sentOrder) {
      const to = recipientOf.get(from)!;
      const convKey = from < to ? `${from}|${to}` : `${to}|${from}`;
      let bySeq = seqs.get(convKey);
      if (!bySeq) seqs.set(convKey, (bySeq = new Map()));
      const msgs = got.get(to)!.filter((m) => m.from === from && !m.sync);
      for (const m of msgs) {
        const b = `${from}:${new TextDecoder().decode(m.payload)}`;
        const had = bySeq.get(m.seq);
        if (had === undefined) bySeq.set(m.seq, b);
        else if (had !== b) seqReused++;
      }
      const mine = msgs.map((m) => new TextDecoder().decode(m.payload));
      delivered += mine.length;
      const seen = new Set<string>();
      let last = -1;
      const pos = new Map(order.map((b, i) => [b, i]));
      for (const b of mine) {
        if (seen.has(b)) duplicates++;
        seen.add(b);
        const p = pos.get(b) ?? -1;
        if (p < last) outOfOrder++;
        last = Math.max(last, p);
      }
      for (const b of acked.get(from)!) if (!seen.has(b)) lost++;
    }
    const ackedN = [...acked.values()].reduce((s, l) => s + l.length, 0);
    let retries = 0;
    let redirects = 0;
    const link = { batches: 0, items: 0, kept: 0 };
    for (const n of nodes) {
      retries += n.retryBefore + (await metricSum(n.server.http, "switchboard_cluster_retry_after_total"));
      redirects += n.redirectsBefore + (await metricSum(n.server.http, "switchboard_cluster_redirects_total"));
      link.batches += n.linkBefore.batches + (await metricSum(n.server.http, "switchboard_cluster_link_sent_batches"));
      link.items += n.linkBefore.items + (await metricSum(n.server.http, "switchboard_cluster_link_sent_items"));
      link.kept += n.linkBefore.kept + (await metricSum(n.server.http, "switchboard_cluster_link_sent_kept"));
    }
    for (const c of clients.values()) await c.close().catch(() => {});
    const rr = summary(reroute);
    const lat = summary(latency);
    // Before: calls1 - calls0 alone, which went negative (-8 535 in a CI run) when the restarted Redis had counted
    // fewer commands by the end than the killed one had by its kill.
    const redisOps = callsKilled + calls1 - calls0;
    console.log(`cluster: sent ${sent}, acknowledged ${ackedN}, delivered ${delivered}, lost ${lost}, duplicates ${duplicates}, out of order ${outOfOrder}, sequence numbers reused ${seqReused}, refused by the SDK ${refused}`);
    console.log(`cluster: sent latency ${fmtLatency(lat)}; redirects ${redirects}, retry_after ${retries}, served again after a restart or SIGCONT p99 ${o.kills + o.stops ? `${rr.p99} ms` : "-"}${skipped ? `; ${skipped} sends skipped by the generator (a sender had ${OPEN_MAX_INFLIGHT} unanswered)` : ""}`);
    console.log(`cluster: server CPU ${cpu.toFixed(2)} s over ${o.nodes} node(s): ${Math.round(delivered / Math.max(cpu, 1e-9))} delivered msgs per server CPU-second; Redis ${redisOps} commands (${(redisOps / Math.max(1, delivered)).toFixed(4)} per message); link batches ${link.batches} (${(link.batches / Math.max(1, delivered)).toFixed(2)} per message, ${link.batches ? (link.items / link.batches).toFixed(2) : "-"} items each)`);
    if (lost > 0) console.log(`cluster: LOST ${lost} ACKNOWLEDGED MESSAGES`);
    return {
      result: {
        scenario: "cluster",
        params: { server_main: o.serverMain ?? null, nodes: o.nodes, pairs: o.pairs, cross: o.cross, window: o.rate === null ? o.window : null, rate: o.rate, stops: o.stops, stop_ms: o.stops ? o.stopMs : null, duration_s: o.duration, kills: o.kills, redis_kill: o.redisKill, lease_ttl_ms: o.ttl, server_cpus: o.serverCpus.join(" ") || null, worker_cpus: o.workerCpus },
        sent, acked: ackedN, delivered, lost, duplicates, out_of_order: outOfOrder, seq_reused: seqReused, refused_sdk: refused,
        nodes: o.nodes,
        cross_node_share: round(pairs.filter((p) => p.cross).length / o.pairs, 3),
        redirects, kills: o.kills, stops: o.stops, refused_retry: retries, skipped_by_generator: skipped,
        reroutable_p99_ms: o.kills + o.stops ? rr.p99 : null,
        sent_per_s: Math.round(ackedN / sendSeconds),
        delivered_per_s: Math.round(delivered / sendSeconds),
        latency_of: o.rate === null ? "send -> sent (closed loop, window per sender)" : "intended send time -> sent (open loop at --rate)",
        latency_ms: { p50: lat.p50, p90: lat.p90, p99: lat.p99, p999: lat.p999, max: lat.max },
        server: { cpu_s: round(cpu, 2), cpu_pct: round((cpu / sendSeconds) * 100, 1) },
        msgs_per_server_cpu_s: cpu > 0 ? Math.round(delivered / cpu) : null,
        redis_ops: redisOps,
        redis_calls_by_command: byCmd,
        redis_ops_per_s: Math.round(redisOps / sendSeconds),
        redis_ops_per_msg: round(redisOps / Math.max(1, delivered), 4),
        // Node links, summed over the nodes (from their /metrics; 0 from a server without the counters).
        link_batches_per_msg: round(link.batches / Math.max(1, delivered), 3),
        link_items_per_batch: link.batches > 0 ? round(link.items / link.batches, 2) : null,
        // Items kept in an outbox (a row written and deleted each): receipts of copies acked after their commit, reads.
        link_kept_per_msg: round(link.kept / Math.max(1, delivered), 3),
      },
      code: lost > 0 ? 1 : duplicates + outOfOrder + seqReused > 0 ? 3 : 0,
    };
  } finally {
    // Bun writes a --cpu-prof profile only at exit: the nodes are stopped (SIGTERM, a drain of their shards to the
    // nodes still up, visible in the profile as move.ts) before the kill, for at most 20 s.
    if (o.serverBunFlags.some((f) => f.startsWith("--cpu-prof"))) {
      for (const n of nodes) if (n.server.proc.exitCode === null) n.server.proc.kill("SIGTERM");
      await Promise.race([Promise.all(nodes.map((n) => n.server.proc.exited)), Bun.sleep(20_000)]);
    }
    cleanup();
    for (const n of nodes) await n.server.proc.exited;
    await redis.proc?.exited;
    process.off("exit", cleanup);
    if (!o.keep) rmSync(root, { recursive: true, force: true });
  }
}

/** Open loop: unanswered sends per sender beyond which its turn is skipped (see openLoop). */
const OPEN_MAX_INFLIGHT = 1000;

const FLAGS: Scenario["flags"] = [
  ["--nodes N", "nodes (default 3), pinned round-robin over --server-cpus"],
  ["--pairs P", "pairs of devices messaging each other (default 30)"],
  ["--cross S", "share of the pairs whose ends are homed on different nodes, 0..1 (default (N-1)/N)"],
  ["--window W", "messages in flight per sender until sent (default 8; closed loop)"],
  ["--rate R", "open loop instead: R messages per second over all senders, latency from the intended send time"],
  ["--duration S", "seconds of traffic (default 10)"],
  ["--kills K", "kill -9 a random node K times, spread over the run, restarting it at once (default 0)"],
  ["--stops K", "SIGSTOP a random node K times, spread over the run with the kills, for --stop-ms each, then SIGCONT"],
  ["--stop-ms MS", "how long a SIGSTOP lasts (default twice --lease-ttl: longer than the node's leases)"],
  ["--redis-kill", "kill -9 redis-server once in the middle and restart it on the same port"],
  ["--lease-ttl MS", "cluster.lease_ttl (default 3000)"],
  ["--server-cpus LIST", "CPUs for the nodes, one per node round-robin (default \"0,1\"; \"\" = no pinning)"],
  ["--worker-cpus, --server-flags, --server-bun-flags, --server-main, --keep   as above (the SDK clients run in this process; every node is spawned with them)", ""],
];
const ALLOWED = new Set([...flagNames(FLAGS), "--spawn"]);

async function cluster(run: Run): Promise<Outcome> {
  if (run.flag("--target") !== undefined) throw new UsageError("cluster spawns its own redis-server and nodes (it kills and restarts them): give --spawn, not --target");
  for (const k of Object.keys(run.flags)) if (!ALLOWED.has(k)) throw new UsageError(`cluster does not take ${k}`, section("cluster", FLAGS));
  const nodes = run.num("--nodes", 3, 1);
  if (!Number.isInteger(nodes) || nodes > 16) throw new UsageError("--nodes must be an integer 1..16");
  const cross = run.num("--cross", (nodes - 1) / nodes, 0);
  if (cross > 1) throw new UsageError("--cross must be a share between 0 and 1");
  if (nodes === 1 && cross > 0 && run.flag("--cross") !== undefined) throw new UsageError("--cross needs --nodes 2 or more");
  return runCluster({
    nodes,
    pairs: run.num("--pairs", 30, 1),
    cross: nodes === 1 ? 0 : cross,
    window: run.num("--window", 8, 1),
    duration: run.num("--duration", 10, 1),
    kills: run.num("--kills", 0, 0),
    stops: run.num("--stops", 0, 0),
    stopMs: run.num("--stop-ms", 2 * run.num("--lease-ttl", 3000, 500), 1),
    rate: run.flag("--rate") === undefined ? null : run.num("--rate", 1, 1),
    redisKill: run.bool("--redis-kill"),
    ttl: run.num("--lease-ttl", 3000, 500),
    serverCpus: (run.flag("--server-cpus") ?? "0,1").split(",").filter(Boolean),
    workerCpus: run.flag("--worker-cpus") ?? null,
    serverFlags: run.words("--server-flags"),
    serverBunFlags: run.words("--server-bun-flags"),
    serverMain: run.flag("--server-main"),
    keep: run.bool("--keep"),
  });
}

export const CLUSTER: Scenario = {
  name: "cluster",
  summary: "N nodes on a private redis-server, pairs across nodes (--cross), kill -9 loop of nodes and Redis;\nintegrity, redirects, retry_after, time until a restarted node serves again, Redis ops per message",
  server: true,
  flags: FLAGS,
  notes: "always spawns (--spawn): its own redis-server and N `switchboard serve` on fixed ports in a temporary directory",
  run: cluster,
};
