/**
 * `presence`: N devices, each with K chats open (a presence subscription to
 * each peer), churning between active and idle and typing to their peers.
 * Reports presence frames out per announced state change (the model: one
 * per watcher that may see the account), the server CPU spent in the
 * presence module against its total, and privacy violations, which must be
 * 0: every frame each device receives is checked against what the rules
 * allow it to see (docs/PROTOCOL.md §6.10).
 *
 * The social graph: device i chats with i+1..i+K (mod N), and each has the
 * other as a contact (so the default policy `contacts` shows them). Every
 * --hide-every-th account hides both fields (`nobody`), and every
 * --block-every-th account blocks its first peer: their watchers must see
 * nothing of them, and a blocked pair no typing. The connections live in
 * this process (LeanConn, no workers): a few thousand devices at most.
 * Randomness (who changes state, who types to whom) comes from --seed, printed.
 *
 * With --nodes N (≥ 2, --spawn) it runs on a cluster of N spawned nodes and a private redis-server
 * (loadtest/presence-env.ts): device i is homed on node i mod N, so its chats cross nodes, and it also reports
 * the presence items that crossed nodes per announced change (`cross_node_items_per_change`: the `v` items,
 * one per interested node per change, docs/CLUSTER.md) and by kind; frames, changes and CPU are summed over
 * the nodes.
 */
import { flushAll, keyFromSeed, LeanConn, type LeanHandlers } from "../lean.ts";
import { pct, round, say, sleep, type Outcome, type Run } from "../run.ts";
import { otherCpuPct } from "../sample.ts";
import type { Scenario } from "../scenario.ts";
import { runTag } from "../setup.ts";
import { presenceEnv, type PresenceEnv } from "../presence-env.ts";
import { prng } from "../../test/helpers/prng.ts"; // the tests' seeded generator (mulberry32), one copy for both

function quantiles(xs: number[]): { p50: number; p90: number; p99: number; p999: number; max: number; mean: number; count: number } {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => (s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))]! : 0);
  const mean = s.length ? s.reduce((a, b) => a + b, 0) / s.length : 0;
  return { p50: round(q(0.5), 3), p90: round(q(0.9), 3), p99: round(q(0.99), 3), p999: round(q(0.999), 3), max: round(s[s.length - 1] ?? 0, 3), mean: round(mean, 3), count: s.length };
}

async function presence(run: Run): Promise<Outcome> {
  const n = run.num("--devices", 200, 4);
  const k = Math.min(run.num("--chats", 3, 1), Math.floor((n - 1) / 2), 32);
  const seconds = run.num("--duration", 10, 1);
  const churn = run.num("--churn", 50, 0);
  const typingRate = run.num("--typing", 100, 0);
  const hideEvery = run.num("--hide-every", 10, 0);
  const blockEvery = run.num("--block-every", 10, 0);
  const grace = run.num("--grace-ms", 1000, 0);
  const seed = run.flag("--seed") !== undefined ? run.num("--seed", 0) : Math.floor(Math.random() * 2 ** 31);
  const rnd = prng(seed);
  const tag = runTag();
  say(`presence: ${n} devices, ${k} chats open each, ${churn} state changes/s, ${typingRate} typing/s for ${seconds} s; seed ${seed}`);
  // Spawned servers with a short grace and window, so that a short run announces changes; --server-flags override.
  const env = await presenceEnv(run, (i) => `lt${tag}p${i}`, n, ["--presence-grace-ms", String(grace), "--presence-coalesce-ms", "500", "--presence-stranger-rate", "100000"]);
  try {
    return await measure(run, env, { n, k, seconds, churn, typingRate, hideEvery, blockEvery, grace, seed, rnd });
  } finally {
    await env.stop();
  }
}

interface Params { n: number; k: number; seconds: number; churn: number; typingRate: number; hideEvery: number; blockEvery: number; grace: number; seed: number; rnd: () => number }

async function measure(run: Run, env: PresenceEnv, { n, k, seconds, churn, typingRate, hideEvery, blockEvery, grace, seed, rnd }: Params): Promise<Outcome> {
  const { names, ids } = env;

  const hidden = (i: number) => hideEvery > 0 && i % hideEvery === 0;
  const blocker = (i: number) => blockEvery > 0 && i % blockEvery === Math.floor(blockEvery / 2);
  const idx = new Map(names.map((x, i) => [x, i]));
  const peer = (i: number, j: number) => (i + j + n) % n;
  /** Blocked pairs: i blocks i+1. */
  const blocked = (a: number, b: number) => (blocker(a) && b === peer(a, 1)) || (blocker(b) && a === peer(b, 1));
  const visible = (viewer: number, t: number) => !hidden(t) && !hidden(viewer) && !blocked(viewer, t);

  let violations = 0;
  const violationSamples: string[] = [];
  const violation = (what: string) => {
    violations++;
    if (violationSamples.length < 5) violationSamples.push(what);
  };
  let pstIn = 0, typingIn = 0, ends = 0, errors = 0, disconnects = 0;
  const pending = new Map<string, { t0: number; resolve: (r: Record<string, any>) => void }>();
  const latencies: number[] = [];
  const handlers: LeanHandlers = {
    onFrame: () => {},
    onClose: () => void disconnects++,
    onError: () => void errors++,
    onOther: (c, s) => {
      const me = idx.get(c.account)!;
      if (s.t === "res") {
        const w = pending.get(`${c.account}/${s.id}`);
        if (!w) return;
        pending.delete(`${c.account}/${s.id}`);
        latencies.push(performance.now() - w.t0);
        if (!s.ok) errors++;
        return w.resolve(s);
      }
      if (s.t === "pst") {
        pstIn++;
        const t = idx.get(s.u);
        if (s.end) ends++;
        if (t === undefined || (!visible(me, t) && ("online" in s || "ls" in s))) violation(`${c.account} got ${JSON.stringify(s)}`);
      } else if (s.t === "pres") {
        typingIn++;
        const t = idx.get(s.u);
        if (t === undefined || blocked(me, t)) violation(`${c.account} got typing ${JSON.stringify(s)}`);
      }
    },
  };
  const conns = ids.map((id) => new LeanConn(id.account, id.device, keyFromSeed(Buffer.from(id.seed, "hex")), handlers));
  let nextId = 1;
  const iq = (c: LeanConn, op: string, a: Record<string, unknown>): Promise<Record<string, any>> => {
    const id = nextId++;
    c.sendObject({ t: "iq", id, op, a });
    return new Promise((resolve) => pending.set(`${c.account}/${id}`, { t0: performance.now(), resolve }));
  };
  for (let i = 0; i < n; i += 100) {
    const ok = await Promise.all(conns.slice(i, i + 100).map((c, j) => c.login(env.loginOf(i + j), 30_000)));
    if (ok.some((x) => !x)) throw new Error(`a login failed: ${conns.slice(i, i + 100).find((c) => c.state !== "ready")?.closeReason}`);
  }
  // Contacts both ways within K, the hidden and blocking accounts' choices, then the subscriptions.
  const each = async (fn: (c: LeanConn, i: number) => Promise<unknown>) => {
    for (let i = 0; i < n; i += 200) {
      const batch = conns.slice(i, i + 200).map((c, j) => fn(c, i + j));
      flushAll();
      await Promise.all(batch);
    }
  };
  await each((c, i) => iq(c, "contacts.add", { u: Array.from({ length: 2 * k }, (_, j) => names[peer(i, j < k ? j + 1 : -(j - k + 1))]) }));
  await each((c, i) => (hidden(i) ? iq(c, "privacy.set", { ls: "nobody", online: "nobody" }) : Promise.resolve()));
  await each((c, i) => (blocker(i) ? iq(c, "block.add", { u: names[peer(i, 1)] }) : Promise.resolve()));
  let subsVisible = 0;
  await each(async (c, i) => {
    const r = await iq(c, "presence.sub", { u: Array.from({ length: k }, (_, j) => names[peer(i, j + 1)]) });
    for (const x of (r.r?.p ?? []) as { u: string }[]) {
      const tIdx = idx.get(x.u)!;
      if (!visible(i, tIdx)) violation(`${c.account} subscribed to ${x.u}: ${JSON.stringify(x)}`);
      else subsVisible++;
    }
  });
  const watchersVisible = subsVisible / n; // the model: frames per change of an account, on average
  say(`set up: ${subsVisible} visible subscriptions of ${n * k} (${round(watchersVisible, 2)} per account)`);

  const m0 = await env.metrics();
  const s0 = env.sample();
  const cpu0 = env.cpu();
  const active = new Uint8Array(n);
  let stateChanges = 0, typingOut = 0;
  const tickMs = 10;
  let churnDebt = 0, typingDebt = 0;
  const end = performance.now() + seconds * 1000;
  while (performance.now() < end) {
    churnDebt += (churn * tickMs) / 1000;
    typingDebt += (typingRate * tickMs) / 1000;
    for (; churnDebt >= 1; churnDebt--) {
      const i = Math.floor(rnd() * n);
      active[i] = active[i] ? 0 : 1;
      stateChanges++;
      void iq(conns[i]!, "presence.state", { s: active[i] ? "active" : "idle" });
    }
    for (; typingDebt >= 1; typingDebt--) {
      const i = Math.floor(rnd() * n);
      conns[i]!.sendObject({ t: "pres", to: names[peer(i, 1 + Math.floor(rnd() * k))], s: "typing" });
      typingOut++;
    }
    flushAll();
    await sleep(tickMs);
  }
  // Everyone idle; wait out the grace and the window so the last changes are counted.
  const wall = (performance.now() - (end - seconds * 1000)) / 1000;
  const s1 = env.sample();
  const cpu1 = env.cpu();
  const mCpu = await env.metrics(); // the module's CPU over the same window as the server's
  for (let i = 0; i < n; i++) if (active[i]) void iq(conns[i]!, "presence.state", { s: "idle" });
  flushAll();
  await sleep(grace + 1500);
  const m1 = await env.metrics();
  const d = (name: string) => (m0 && m1 ? (m1.get(name) ?? 0) - (m0.get(name) ?? 0) : null);
  const frames = d("switchboard_presence_frames_total");
  const changes = d("switchboard_presence_changes_total");
  const presenceCpu = m0 && mCpu ? (mCpu.get("switchboard_presence_cpu_seconds_total") ?? 0) - (m0.get("switchboard_presence_cpu_seconds_total") ?? 0) : null;
  const serverCpu = cpu0 !== null && cpu1 !== null ? cpu1 - cpu0 : null;
  const perChange = frames !== null && changes ? round(frames / changes, 2) : null;
  // Cluster: the items that crossed nodes (v: one per interested node per change, at the changed account's home).
  const peerItems: Record<string, number> = {};
  for (const kind of ["v", "s", "r", "g", "answer", "t", "b", "B"]) {
    const v = d(`switchboard_presence_peer_items_total{kind="${kind}"}`);
    if (v) peerItems[kind] = v;
  }
  const crossPerChange = env.nodes > 1 && changes ? round((peerItems.v ?? 0) / changes, 3) : null;
  for (const c of conns) c.quit();
  say(`state changes sent ${stateChanges}; announced by the server ${changes ?? "?"}; presence frames out ${frames ?? "?"} (received ${pstIn}, ${ends} subscription ends)`);
  say(`presence frames per announced change: ${perChange ?? "?"} (model: ${round(watchersVisible, 2)} visible watchers per account, fewer when changes are merged)`);
  say(`typing sent ${typingOut}, received ${typingIn}`);
  if (env.nodes > 1) say(`across ${env.nodes} nodes: ${crossPerChange ?? "?"} change items (v) per announced change crossed nodes; presence items by kind ${JSON.stringify(peerItems)}`);
  if (serverCpu !== null) say(`server CPU ${round(serverCpu, 2)} s (${pct(serverCpu, wall)}% of one core); in the presence module ${presenceCpu === null ? "?" : `${round(presenceCpu, 3)} s (${serverCpu > 0 ? pct(presenceCpu, serverCpu) : 0}% of the server's)`}`);
  say(`privacy violations: ${violations}${violationSamples.length ? `, e.g. ${violationSamples.join("; ")}` : ""}`);
  const lat = quantiles(latencies);
  return {
    result: {
      scenario: "presence",
      params: { nodes: env.nodes, devices: n, chats: k, duration_s: seconds, churn_per_s: churn, typing_per_s: typingRate, hide_every: hideEvery, block_every: blockEvery, grace_ms: grace, seed, mode: run.serverMode },
      sent: 0, delivered: 0, lost: 0, duplicates: 0, out_of_order: 0, sent_per_s: 0, delivered_per_s: 0,
      latency_of: "presence iq (sub, state, contacts) to its answer",
      latency_ms: lat,
      state_changes_sent: stateChanges,
      state_changes_announced: changes,
      presence_frames_out: frames,
      presence_frames_received: pstIn,
      frames_per_change: perChange,
      model_frames_per_change: round(watchersVisible, 3),
      cross_node_items_per_change: crossPerChange,
      cross_node_items: env.nodes > 1 ? peerItems : null,
      typing_sent: typingOut,
      typing_received: typingIn,
      privacy_violations: violations,
      errors,
      disconnects,
      server: {
        pid: env.pids.length === 1 ? env.pids[0] : env.pids,
        cpu_s: serverCpu === null ? null : round(serverCpu, 2),
        cpu_pct: serverCpu === null ? null : pct(serverCpu, wall),
        presence_cpu_s: presenceCpu === null ? null : round(presenceCpu, 4),
        presence_cpu_share_pct: presenceCpu === null || !serverCpu ? null : pct(presenceCpu, serverCpu),
        rss_kb: env.rssKb(),
      },
      other_cpu_pct: otherCpuPct(s0, s1),
      msgs_per_server_cpu_s: null,
    },
    code: violations > 0 || errors > 0 ? 4 : 0,
  };
}

export const PRESENCE: Scenario = {
  name: "presence",
  summary: "N devices with K chats open churn active/idle and type; presence frames per change, CPU, privacy violations",
  server: true,
  flags: [
    ["--devices N", "devices, one account each (default 200)"],
    ["--chats K", "chats open per device: presence subscriptions (default 3, at most 32)"],
    ["--duration S", "seconds of churn (default 10)"],
    ["--churn R", "active/idle changes per second over all devices (default 50)"],
    ["--typing R", "typing notices per second over all devices (default 100)"],
    ["--hide-every H", "every H-th account hides last seen and online (default 10; 0: none)"],
    ["--block-every B", "every B-th account blocks its first peer (default 10; 0: none)"],
    ["--grace-ms G", "presence.grace_ms of a spawned server (default 1000)"],
    ["--seed S", "seed of who changes state and who types (default random, printed)"],
    ["--nodes N", "N ≥ 2: a cluster of N spawned nodes on a private redis-server (--spawn; device i homed on node i mod N, --server-cpus a space-separated list used round-robin); reports the presence items crossing nodes per change"],
  ],
  run: presence,
};
