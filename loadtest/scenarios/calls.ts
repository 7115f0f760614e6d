/**
 * `calls`: N simulated calls through `switchboard relay` on one core, each
 * two TURN allocations (src/client/turn.ts) bound to each other by channels,
 * sending --pps packets a second each way (a voice call is 50) for
 * --duration seconds. Reports loss per direction, the one-way latency through
 * the relay against direct loopback UDP (the added latency, p99), and the
 * relay's CPU. Then, with --overload, the shedding order: a server reading the
 * relay's /load, the relay held at 85 % and 100 % of its allocations, a
 * group offer and a 1:1 offer tried at each level, and an established call's
 * signals and media checked to go on.
 *
 *   npm run loadtest -- calls --calls 20 --duration 60 --overload
 *
 * Exit status: 0; 1 packets lost or the shedding order broken.
 */
import { createSocket } from "node:dgram";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { callControl } from "../../src/client/calls.ts";
import { SwitchboardClient } from "../../src/client/client.ts";
import { generateDeviceKey, keyToFile, type KeyFile } from "../../src/client/keys.ts";
import { TurnClient } from "../../src/client/turn.ts";
import type { CallSignal } from "../../src/client/types.ts";
import { issueTurnCredentials } from "../../src/protocol/turn-rest.ts";
import { SqliteAccountStore } from "../../src/store/accounts.ts";
import { BUN, ROOT, cpuSeconds, spawnServer } from "../proc.ts";
import { UsageError, round, say, type Outcome, type Run } from "../run.ts";
import { flagNames, type Scenario } from "../scenario.ts";
import { newHistogram, summary, type LatencySummary } from "../stats.ts";

const SECRET = "loadtest-calls-secret";
const HDR = 16; // u32 call, u8 side, pad, f64 sent-at (ms)

async function startRelay(cpus: string | null, maxAllocations: number) {
  const cmd = [BUN, join(ROOT, "src/cli/main.ts"), "relay", "--calls-secret", SECRET, "--relay-port", "0", "--relay-http-port", "0",
    "--relay-min-port", "0", "--relay-max-port", "0", "--relay-allow-loopback", "true", "--relay-pps", "0", "--relay-bps", "0",
    "--relay-max-allocations", String(maxAllocations), "--relay-per-device", "4", "--log-level", "warn"];
  const proc = Bun.spawn(cpus ? ["taskset", "-c", cpus, ...cmd] : cmd, { cwd: ROOT, stdout: "pipe", stderr: "inherit" });
  const reader = (proc.stdout as ReadableStream<Uint8Array>).getReader();
  let buf = "";
  while (!buf.includes("\n")) {
    const r = await reader.read();
    if (r.done) throw new Error(`relay exited before listening (exit ${await proc.exited})`);
    buf += new TextDecoder().decode(r.value);
  }
  reader.releaseLock();
  const l = JSON.parse(buf.split("\n")[0]!) as { udp: number; http: number; pid: number };
  return { proc, ...l, url: `http://127.0.0.1:${l.http}` };
}

async function allocate(port: number, device: string): Promise<TurnClient> {
  const c = issueTurnCredentials(SECRET, device, Date.now() / 1000, 3600);
  const r = await TurnClient.allocate({ host: "127.0.0.1", port, username: c.username, password: c.password });
  if (!r.ok) throw new Error(`allocate ${device}: ${r.code} ${r.reason}`);
  return r.client;
}

/** Sends `pps` packets a second from each side for `seconds`; returns sent/received per direction and latencies. */
async function flow(pairs: { send(side: 0 | 1, b: Uint8Array): void; onRecv(f: (side: 0 | 1, b: Uint8Array) => void): void }[], pps: number, seconds: number) {
  const hist = newHistogram();
  const sent = [0, 0];
  const got = [0, 0];
  pairs.forEach((p) => p.onRecv((side, b) => {
    const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    hist.recordValue(Math.max(1, Math.round((performance.now() - dv.getFloat64(8)) * 1000)));
    got[side]!++;
  }));
  const payload = new Uint8Array(160); // a 20 ms Opus frame with RTP header is ~100-200 bytes
  const dv = new DataView(payload.buffer);
  const t0 = performance.now();
  for (let tick = 0; tick < seconds * pps; tick++) { // counted in ticks: t0 + x - t0 is not always x in floating point
    const due = t0 + (tick * 1000) / pps;
    const wait = due - performance.now();
    if (wait > 0) await Bun.sleep(wait);
    for (let i = 0; i < pairs.length; i++) {
      for (const side of [0, 1] as const) {
        dv.setUint32(0, i);
        dv.setUint8(4, side);
        dv.setFloat64(8, performance.now());
        pairs[i]!.send(side, payload);
        sent[side]!++;
      }
    }
  }
  await Bun.sleep(1000); // the last packets drain
  const s = summary(hist);
  hist.destroy();
  return { sent, got, latency: s };
}

async function relayedPairs(port: number, n: number) {
  const pairs = [];
  const clients: TurnClient[] = [];
  for (let i = 0; i < n; i++) {
    const a = await allocate(port, `lt-a${i}/1`);
    const b = await allocate(port, `lt-b${i}/1`);
    await a.channelBind(b.relayed);
    await b.channelBind(a.relayed);
    clients.push(a, b);
    pairs.push({
      send: (side: 0 | 1, x: Uint8Array) => (side === 0 ? a.send(b.relayed, x) : b.send(a.relayed, x)),
      // What a sends arrives at b: direction 0 is counted at b.
      onRecv(f: (side: 0 | 1, b: Uint8Array) => void) {
        b.onData = (x) => f(0, x);
        a.onData = (x) => f(1, x);
      },
    });
  }
  return { pairs, clients };
}

async function directPairs(n: number) {
  const socks: ReturnType<typeof createSocket>[] = [];
  const pairs = [];
  for (let i = 0; i < n; i++) {
    const a = createSocket("udp4");
    const b = createSocket("udp4");
    await Promise.all([new Promise<void>((r) => a.bind(0, "127.0.0.1", r)), new Promise<void>((r) => b.bind(0, "127.0.0.1", r))]);
    socks.push(a, b);
    pairs.push({
      send: (side: 0 | 1, x: Uint8Array) => (side === 0 ? a.send(x, b.address().port, "127.0.0.1") : b.send(x, a.address().port, "127.0.0.1")),
      onRecv(f: (side: 0 | 1, b: Uint8Array) => void) {
        b.on("message", (x) => f(0, new Uint8Array(x)));
        a.on("message", (x) => f(1, new Uint8Array(x)));
      },
    });
  }
  return { pairs, close: () => socks.forEach((s) => s.close()) };
}

/** The shedding order: a server over the relay's /load, offers tried at the calls' own load, 85 % and 100 % of its allocations. */
async function shedding(relay: { udp: number; url: string }, maxAllocations: number, held: TurnClient[], serverCpus: string | null) {
  const dataDir = mkdtempSync(join(tmpdir(), "sb-calls-"));
  const store = new SqliteAccountStore(dataDir);
  const mk = (account: string): KeyFile => {
    const key = generateDeviceKey();
    store.createAccount(account, 60);
    const r = store.addDevice(account, key.publicKey, "lt", 8);
    if (!r.ok) throw new Error(r.message);
    return keyToFile(key, account, r.value.device);
  };
  const [ka, kb] = [mk("caller"), mk("callee")];
  store.close();
  const server = await spawnServer(dataDir, serverCpus, ["--calls-secret", SECRET, "--calls-relay-control", relay.url]);
  const signals: CallSignal[] = [];
  const errors: string[] = [];
  const a = new SwitchboardClient({ host: "127.0.0.1", port: server.tcp, key: ka, reconnect: false });
  const b = new SwitchboardClient({ host: "127.0.0.1", port: server.tcp, key: kb, reconnect: false });
  a.on("error", (e) => errors.push(e.code));
  b.on("call", (s) => signals.push(s));
  await a.connect();
  await b.connect();
  const ca = callControl(a);
  const cb = callControl(b);
  const rang = async (id: string) => {
    for (let i = 0; i < 100; i++) {
      if (signals.some((s) => s.id === id && s.kind === "offer")) return "rang";
      if (errors.length && i > 10) break;
      await Bun.sleep(20);
    }
    return signals.some((s) => s.id === id && s.kind === "offer") ? "rang" : "overloaded";
  };
  const load = async () => Number(/^switchboard_calls_load_percent (\d+)/m.exec(await (await fetch(`http://127.0.0.1:${server.http}/metrics`)).text())?.[1] ?? 0);
  // One call established before the pressure: its signals must go on.
  const live = await ca.call("callee", () => new Uint8Array(8));
  while (!signals.some((s) => s.id === live)) await Bun.sleep(10);
  cb.answer(signals.find((s) => s.id === live)!);
  const levels: { relay_load_pct: number; group: string; direct: string }[] = [];
  for (const pct of [0, 85, 100]) {
    while (held.length < Math.ceil((maxAllocations * pct) / 100)) held.push(await allocate(relay.udp, `lt-hold${held.length}/1`));
    const want = Math.round((held.length / maxAllocations) * 100);
    while ((await load()) < want) await Bun.sleep(50);
    errors.length = 0;
    const g = await ca.call("callee", () => new Uint8Array(8), { group: "#lt" });
    const group = await rang(g);
    const d = await ca.call("callee", () => new Uint8Array(8));
    const direct = await rang(d);
    for (const id of [g, d]) ca.hangup("callee", id);
    levels.push({ relay_load_pct: await load(), group, direct });
  }
  signals.length = 0;
  ca.ice("callee", live, kb.device, new Uint8Array(4));
  for (let i = 0; i < 100 && !signals.some((s) => s.kind === "ice"); i++) await Bun.sleep(20);
  const establishedSignals = signals.some((s) => s.kind === "ice" && s.id === live);
  await a.close();
  await b.close();
  server.proc.kill("SIGTERM");
  await server.proc.exited;
  rmSync(dataDir, { recursive: true, force: true });
  return { levels, established_call_signals_ok: establishedSignals };
}

const FLAGS: Scenario["flags"] = [
  ["--calls N", "simulated calls, two relay allocations each (default 10)"],
  ["--duration S", "seconds of media (default 60)"],
  ["--pps P", "packets a second each way per call (default 50, a voice call)"],
  ["--overload", "then show the shedding order with a server reading the relay's load"],
  ["--relay-cpus LIST", "CPUs of the relay (default 0: one core)"],
  ["--server-cpus LIST", "CPUs of the server of --overload (default 1)"],
];
const ALLOWED = new Set([...flagNames(FLAGS)]);

async function calls(run: Run): Promise<Outcome> {
  for (const k of Object.keys(run.flags)) if (!ALLOWED.has(k)) throw new UsageError(`calls does not take ${k}`);
  const n = run.num("--calls", 10, 1);
  const duration = run.num("--duration", 60, 1);
  const pps = run.num("--pps", 50, 1);
  const relayCpus = (run.flag("--relay-cpus") ?? "0") || null;
  const maxAllocations = 4 * n + 20; // the calls' own 2n allocations stay under 50 %: the first level sheds nothing
  const relay = await startRelay(relayCpus, maxAllocations);
  try {
    say(`calls: relay pid ${relay.pid} on cpus ${relayCpus ?? "any"}; baseline: direct loopback UDP, ${Math.min(5, duration)} s`);
    const d = await directPairs(n);
    const base = await flow(d.pairs, pps, Math.min(5, duration));
    d.close();
    const r = await relayedPairs(relay.udp, n);
    say(`calls: ${n} calls, ${pps} packets/s each way, ${duration} s through the relay`);
    const cpu0 = cpuSeconds(relay.pid) ?? 0;
    const t0 = performance.now();
    const media = await flow(r.pairs, pps, duration);
    const wall = (performance.now() - t0) / 1000;
    const cpu = (cpuSeconds(relay.pid) ?? 0) - cpu0;
    const lost = [media.sent[0]! - media.got[0]!, media.sent[1]! - media.got[1]!];
    const added = (k: keyof LatencySummary) => round(media.latency[k] - base.latency[k], 3);
    say(`calls: lost ${lost[0]} / ${media.sent[0]} (a to b), ${lost[1]} / ${media.sent[1]} (b to a); one-way p99 ${media.latency.p99} ms through the relay, ${base.latency.p99} ms direct: +${added("p99")} ms; relay CPU ${round((cpu / wall) * 100)} %`);
    const result: Record<string, unknown> = {
      scenario: "calls",
      params: { calls: n, duration, pps },
      sent: media.sent[0]! + media.sent[1]!, lost: lost[0]! + lost[1]!, lost_by_direction: lost,
      loss_pct: round(((lost[0]! + lost[1]!) / Math.max(1, media.sent[0]! + media.sent[1]!)) * 100, 3),
      latency_ms: media.latency, direct_latency_ms: base.latency, added_latency_ms: { p50: added("p50"), p99: added("p99") },
      relay: { cpu_s: round(cpu, 2), cpu_pct: round((cpu / wall) * 100) },
    };
    let ok = lost[0]! + lost[1]! === 0;
    if (run.bool("--overload")) {
      const held = [...r.clients];
      const s = await shedding(relay, maxAllocations, held, (run.flag("--server-cpus") ?? "1") || null);
      say(`calls: shedding ${s.levels.map((l) => `at ${l.relay_load_pct} %: group ${l.group}, 1:1 ${l.direct}`).join("; ")}; established call's signals ${s.established_call_signals_ok ? "went on" : "STOPPED"}`);
      result.shedding = s;
      const [l0, l85, l100] = s.levels;
      ok &&= l0?.group === "rang" && l0.direct === "rang" && l85?.group === "overloaded" && l85.direct === "rang" && l100?.group === "overloaded" && l100.direct === "overloaded" && s.established_call_signals_ok;
      for (const c of held.slice(r.clients.length)) await c.close();
    }
    for (const c of r.clients) await c.close();
    return { result, code: ok ? 0 : 1 };
  } finally {
    relay.proc.kill("SIGTERM");
  }
}

export const CALLS: Scenario = {
  name: "calls",
  summary: "N calls at P packets/s each way through `switchboard relay` on one core: loss, added latency (p99);\n--overload: the shedding order (group calls first, then 1:1, never established ones)",
  server: false,
  flags: FLAGS,
  run: calls,
};
