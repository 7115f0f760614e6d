/**
 * Switchboard load generator: `npm run loadtest -- SCENARIO [flags]`.
 *
 * The coordinator (this process) provisions accounts straight into the
 * data directory, starts the server (--spawn, pinned to one core) or finds
 * it (--target), spreads the client connections over worker processes
 * (loadtest/worker.ts, pinned to the other core), drives the phases and
 * reads the server's CPU time and RSS from /proc around the measured phase.
 * Human-readable lines go to stdout; the last line is one JSON object.
 *
 * Exit status: 0 ok; 1 an acknowledged message was lost; 3 duplicates or
 * out-of-order deliveries; 4 logins failed or connections dropped; 2 usage.
 */
import { mkdtempSync, readFileSync, rmSync, existsSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import type { Cmd, Ev, RunOpts, Totals, WindowStats } from "./ipc.ts";
import { merge, summary, fmtLatency, type LatencySummary } from "./stats.ts";
import { provision, runTag, type Identity } from "./setup.ts";
import { BUN, ROOT, cpuSeconds, cpuSplit, machineBusySeconds, findListener, pin, rssKb, spawnServer, cpusAllowed, type SpawnedServer } from "./proc.ts";

const USAGE = `usage: npm run loadtest -- SCENARIO [flags]

scenarios:
  idle    N devices log in and stay idle with heartbeats; server memory per connection, login rate
  pairs   P pairs of devices message each other with the full receipt chain; throughput, latency, integrity
  offline S senders queue M messages for R offline recipient devices (closed loop on sent), then the
          recipients log in and drain; queued/s (durable writes), drained/s, integrity
  crash   senders run a closed loop to one account with D devices while the server is SIGKILLed and
          restarted at random moments; at the end every acknowledged message must have arrived exactly once
          (always spawns its own server; takes only the flags listed under crash)

where the server is:
  --spawn                 start a server from source on ephemeral ports (pinned with taskset)
  --target HOST:PORT      an already running server (TCP or TLS port, matching --transport)
  --data-dir DIR          the server's data directory (required with --target: accounts are created in it;
                          with --spawn: default a fresh temporary directory, removed afterwards)
  --server-pid PID        with --target: the server's pid for CPU/RSS (default: found from the listening port)
  --ca FILE               with --target and tls: the CA to trust (default DATA_DIR/tls/dev-cert.pem)
  --http-port N           with --target: the server's HTTP port, to read counters from /metrics
  --server-cpus LIST      CPUs for a spawned server (default 0)
  --worker-cpus LIST      CPUs for the workers (default 1; "" = no pinning)
  --server-flags "..."    extra flags for a spawned server (e.g. "--queue-commit-ms 10")
  --server-bun-flags "..." flags for the bun running a spawned server (e.g. "--cpu-prof-md --cpu-prof-dir /tmp/prof")
  --server-main FILE      the server entry to spawn (default src/cli/main.ts; e.g. a patched scratch copy for an A/B)

common:
  --transport tcp|tls     default tcp
  --workers N             worker processes (default: one per 10 000 connections, at most 15 000 each)
  --concurrency N         logins in flight per worker (default 400 / workers)
  --keep                  keep the temporary data directory

idle:
  --conns N               devices (default 1000)
  --settle S              seconds to wait after the last login before reading RSS (default 5)
  --hold S                seconds to stay connected after measuring (default 0)
  --ping S                heartbeat interval per connection (default 30, as the server announces)

pairs:
  --pairs P               pairs A_i <-> B_i (default 10)
  --oneway                only A_i sends
  --window W              closed loop: messages in flight per sender until their dlv receipt (default 16)
  --rate R                open loop at R messages/s in total instead (latency from the intended send time)
  --duration S            measured seconds (default 10)
  --warmup S              seconds of load before measuring (default 3)
  --messages M            instead of a duration: M messages in total, measured from the first
  --size B                payload bytes (default 64)
  --drain S               seconds to wait for outstanding deliveries and receipts at the end (default 15)
  --syscalls              count the server's sendto/recvfrom/epoll syscalls in the measured phase (perf stat)
  reports the write-back hit rate (queue items acked before their commit: hits / (hits + rows written))
  and the server's group commit p99 from /metrics

offline:
  --senders S             sending devices (default 20), each its own account
  --recipients R          recipient devices (default 1), one account each; sender i sends to recipient i mod R
  --messages M            messages in total (default 100000)
  --window W              closed loop: messages in flight per sender until their sent (default 16)
  --size B                payload bytes (default 64)
  --drain S               give up when nothing moves for S seconds (default 30)
  a spawned server gets "--queue-max-messages 1000000 --queue-max-bytes 1073741824" (the per-device
  bound is 10 000 items by default) unless --server-flags sets --queue-max-messages itself

crash:
  --kills N               SIGKILLs (default 20)
  --senders S             sending devices (default 8)
  --devices D             devices of the recipient account (default 2)
  --window W              messages in flight per sender until sent (default 16)
  --interval MIN-MAX      milliseconds between kills, uniformly random (default 150-750)
  --server-cpus, --worker-cpus, --server-flags, --server-main, --keep   as above (the SDK clients run in this process)
`;

// ---- arguments -------------------------------------------------------------

const BOOL = new Set(["--spawn", "--oneway", "--keep", "--help", "-h", "--syscalls"]);
function parse(argv: string[]): { pos: string[]; f: Record<string, string> } {
  const pos: string[] = [];
  const f: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a.startsWith("--") || a === "-h") {
      const eq = a.indexOf("=");
      if (eq > 0) f[a.slice(0, eq)] = a.slice(eq + 1);
      else if (BOOL.has(a)) f[a] = "true";
      else {
        const v = argv[i + 1];
        if (v === undefined) throw new Error(`flag ${a} needs a value`);
        f[a] = v;
        i++;
      }
    } else pos.push(a);
  }
  return { pos, f };
}

const { pos, f: flags } = (() => {
  try {
    return parse(process.argv.slice(2));
  } catch (e) {
    console.error(`loadtest: ${(e as Error).message}\n\n${USAGE}`);
    process.exit(2);
  }
})();

const KNOWN = new Set([
  "--spawn", "--target", "--data-dir", "--server-pid", "--http-port", "--ca", "--server-cpus", "--worker-cpus", "--transport", "--workers",
  "--concurrency", "--keep", "--conns", "--settle", "--hold", "--ping", "--pairs", "--oneway", "--window", "--rate", "--duration",
  "--warmup", "--messages", "--size", "--drain", "--help", "-h", "--server-flags", "--server-bun-flags", "--syscalls", "--server-main",
  "--senders", "--recipients", "--kills", "--devices", "--interval",
]);
for (const k of Object.keys(flags)) {
  if (!KNOWN.has(k)) {
    console.error(`loadtest: unknown flag ${k}\n\n${USAGE}`);
    process.exit(2);
  }
}

function num(name: string, def: number, min = 0): number {
  const v = flags[name];
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isFinite(n) || n < min) {
    console.error(`loadtest: ${name} must be a number >= ${min}, got ${JSON.stringify(v)}`);
    process.exit(2);
  }
  return n;
}

const scenario = pos[0];
if (!scenario || flags["--help"] || flags["-h"]) {
  console.log(USAGE);
  process.exit(scenario ? 0 : 2);
}
if (scenario !== "idle" && scenario !== "pairs" && scenario !== "offline" && scenario !== "crash") {
  console.error(`loadtest: unknown scenario ${JSON.stringify(scenario)}\n\n${USAGE}`);
  process.exit(2);
}
if (scenario === "crash") {
  const allowed = new Set(["--kills", "--senders", "--devices", "--window", "--interval", "--server-cpus", "--worker-cpus", "--server-flags", "--server-main", "--keep"]);
  for (const k of Object.keys(flags)) {
    if (!allowed.has(k)) {
      console.error(`loadtest: crash does not take ${k}\n\n${USAGE}`);
      process.exit(2);
    }
  }
  const iv = (flags["--interval"] ?? "150-750").match(/^(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)$/);
  if (!iv || Number(iv[1]) > Number(iv[2])) {
    console.error("loadtest: --interval must be MIN-MAX in milliseconds, e.g. 150-750");
    process.exit(2);
  }
  const { runCrash } = await import("./crash.ts");
  const wc = flags["--worker-cpus"] ?? "1";
  const code = await runCrash({
    kills: num("--kills", 20, 1),
    senders: num("--senders", 8, 1),
    devices: num("--devices", 2, 1),
    window: num("--window", 16, 1),
    minMs: Number(iv[1]),
    maxMs: Number(iv[2]),
    serverCpus: (flags["--server-cpus"] ?? "0") || null,
    workerCpus: wc || null,
    serverFlags: (flags["--server-flags"] ?? "").split(/\s+/).filter(Boolean),
    keep: flags["--keep"] === "true",
    serverMain: flags["--server-main"],
  });
  process.exit(code);
}
const spawnMode = flags["--spawn"] === "true";
if (spawnMode === (flags["--target"] !== undefined)) {
  console.error(`loadtest: give exactly one of --spawn and --target HOST:PORT\n\n${USAGE}`);
  process.exit(2);
}
const transport = flags["--transport"] ?? "tcp";
if (transport !== "tcp" && transport !== "tls") {
  console.error("loadtest: --transport must be tcp or tls");
  process.exit(2);
}

const say = (s: string) => console.log(s);
const sleep = (ms: number) => Bun.sleep(ms);

// ---- workers ---------------------------------------------------------------

class Worker {
  proc: Subprocess;
  pid = 0;
  private queue: Ev[] = [];
  private waiters: { ev: string; resolve: (e: Ev) => void }[] = [];
  onProgress: ((e: Extract<Ev, { ev: "progress" }>) => void) | null = null;
  exited = false;

  constructor(readonly index: number, cpus: string) {
    const cmd = [BUN, join(ROOT, "loadtest/worker.ts")];
    this.proc = Bun.spawn(cpus ? ["taskset", "-c", cpus, ...cmd] : cmd, {
      cwd: ROOT,
      stdio: ["ignore", "inherit", "inherit"],
      serialization: "json",
      ipc: (m: Ev) => this.receive(m),
    });
    this.pid = this.proc.pid;
    void this.proc.exited.then((code) => {
      this.exited = true;
      if (!shuttingDown) fatal(`worker ${this.index} exited unexpectedly (status ${code})`);
    });
  }

  private receive(m: Ev): void {
    if (m.ev === "progress") return this.onProgress?.(m);
    if (m.ev === "fatal") return fatal(`worker ${this.index}: ${m.message}`);
    const i = this.waiters.findIndex((w) => w.ev === m.ev);
    if (i >= 0) this.waiters.splice(i, 1)[0]!.resolve(m);
    else this.queue.push(m);
  }

  send(c: Cmd): void {
    this.proc.send(c);
  }

  next<E extends Ev["ev"]>(ev: E, timeoutMs = 600_000): Promise<Extract<Ev, { ev: E }>> {
    const i = this.queue.findIndex((m) => m.ev === ev);
    if (i >= 0) return Promise.resolve(this.queue.splice(i, 1)[0] as Extract<Ev, { ev: E }>);
    return new Promise((resolve, reject) => {
      const w = { ev, resolve: resolve as (e: Ev) => void };
      this.waiters.push(w);
      const timer = setTimeout(() => {
        const j = this.waiters.indexOf(w);
        if (j >= 0) {
          this.waiters.splice(j, 1);
          reject(new Error(`worker ${this.index}: no ${ev} within ${timeoutMs / 1000} s`));
        }
      }, timeoutMs);
      (timer as any).unref?.();
    });
  }

  async call<E extends Ev["ev"]>(c: Cmd, ev: E, timeoutMs?: number): Promise<Extract<Ev, { ev: E }>> {
    const p = this.next(ev, timeoutMs);
    this.send(c);
    return p;
  }
}

let shuttingDown = false;
let server: SpawnedServer | null = null;
let workers: Worker[] = [];
let tmpDir: string | null = null;

async function shutdown(): Promise<void> {
  shuttingDown = true;
  for (const w of workers) {
    if (!w.exited) {
      try {
        w.send({ cmd: "exit" });
      } catch {}
    }
  }
  await Promise.race([Promise.all(workers.map((w) => w.proc.exited)), sleep(3000)]);
  for (const w of workers) if (!w.exited) w.proc.kill("SIGKILL");
  if (server) {
    server.proc.kill("SIGTERM");
    const code = await Promise.race([server.proc.exited, sleep(12_000).then(() => null)]);
    if (code === null) server.proc.kill("SIGKILL");
  }
  if (tmpDir && flags["--keep"] !== "true") rmSync(tmpDir, { recursive: true, force: true });
  else if (tmpDir) say(`kept data directory ${tmpDir}`);
}

function fatal(msg: string): void {
  if (shuttingDown) return;
  console.error(`loadtest: FATAL: ${msg}`);
  void shutdown().then(() => {
    // Still exactly one JSON line at the end, so scripts can tell a failed run from a missing one.
    console.log(JSON.stringify({ scenario, params: { ...flags }, error: msg }));
    process.exit(5);
  });
}

process.on("SIGINT", () => {
  console.error("loadtest: interrupted");
  void shutdown().then(() => process.exit(130));
});

// ---- the run ---------------------------------------------------------------

interface Target {
  host: string;
  port: number;
  ca?: string;
  pid: number | null;
  dataDir: string;
  http: number | null;
}

async function setup(names: string[], defaultServerFlags: string[] = []): Promise<{ target: Target; ids: Identity[] }> {
  let dataDir: string;
  if (spawnMode) {
    if (flags["--data-dir"]) {
      dataDir = resolve(flags["--data-dir"]);
      mkdirSync(dataDir, { recursive: true });
    } else dataDir = tmpDir = mkdtempSync(join(tmpdir(), "sb-load-"));
  } else {
    if (!flags["--data-dir"]) {
      console.error("loadtest: --target needs --data-dir (the server's data directory) to create the load accounts in");
      process.exit(2);
    }
    dataDir = resolve(flags["--data-dir"]);
    if (!existsSync(join(dataDir, "accounts.db"))) {
      console.error(`loadtest: ${dataDir}/accounts.db does not exist; is that the server's --data-dir?`);
      process.exit(2);
    }
  }
  const p = provision(dataDir, names);
  say(`provisioned ${names.length} accounts with one device each in ${(p.ms / 1000).toFixed(2)} s (direct insert into ${dataDir}/accounts.db)`);
  let target: Target;
  if (spawnMode) {
    const cpus = flags["--server-cpus"] ?? "0";
    const words = (f?: string) => (f ? f.split(/\s+/).filter(Boolean) : []);
    const sf = [...defaultServerFlags, ...words(flags["--server-flags"])];
    if (defaultServerFlags.length) say(`server flags: ${sf.join(" ")}`);
    server = await spawnServer(dataDir, cpus || null, sf, words(flags["--server-bun-flags"]), flags["--server-main"]);
    const port = transport === "tls" ? server.tls : server.tcp;
    target = { host: "127.0.0.1", port, pid: server.pid, dataDir, http: server.http };
    say(`server pid ${server.pid} on ${transport} port ${port} (http ${server.http}), pinned to CPUs ${cpusAllowed(server.pid)}, log ${server.logPath}`);
  } else {
    const [host, portS] = flags["--target"]!.split(/:(?=[^:]*$)/);
    const port = Number(portS);
    if (!host || !Number.isInteger(port)) {
      console.error("loadtest: --target must be HOST:PORT");
      process.exit(2);
    }
    const pid = flags["--server-pid"] ? Number(flags["--server-pid"]) : findListener(port);
    if (pid === null) say(`warning: no local process listens on port ${port}; server CPU and RSS will be null`);
    target = { host, port, pid, dataDir, http: flags["--http-port"] ? num("--http-port", 0, 1) : null };
    if (pid !== null) say(`server pid ${pid} (CPUs ${cpusAllowed(pid)})`);
  }
  if (transport === "tls") {
    const caPath = flags["--ca"] ?? join(dataDir, "tls", "dev-cert.pem");
    target.ca = readFileSync(caPath, "utf8");
  }
  return { target, ids: p.identities };
}

function startWorkers(n: number): Worker[] {
  const cpus = flags["--worker-cpus"] ?? "1";
  workers = Array.from({ length: n }, (_, i) => new Worker(i, cpus));
  return workers;
}

/** Splits ids over workers; `unit` keeps groups (pairs) together. */
function split<T>(items: T[], n: number, unit: number): T[][] {
  const groups = items.length / unit;
  const out: T[][] = [];
  let g = 0;
  for (let i = 0; i < n; i++) {
    const take = Math.floor(groups / n) + (i < groups % n ? 1 : 0);
    out.push(items.slice(g * unit, (g + take) * unit));
    g += take;
  }
  return out;
}

function workerCount(conns: number): number {
  const n = flags["--workers"] ? num("--workers", 1, 1) : Math.max(1, Math.ceil(conns / 10_000));
  if (conns / n > 15_000) {
    console.error(`loadtest: ${conns} connections over ${n} workers is more than 15 000 per worker (20 000 open files per process); use --workers ${Math.ceil(conns / 15_000)}`);
    process.exit(2);
  }
  return n;
}

function serverSample(pid: number | null): { cpu: number | null; sys: number | null; rss: number | null; t: number; machine: number; own: number } {
  const split = pid === null ? null : cpuSplit(pid);
  return {
    cpu: split ? split.user + split.sys : null, sys: split ? split.sys : null, rss: pid === null ? null : rssKb(pid), t: performance.now(),
    machine: machineBusySeconds(), own: (cpuSeconds(process.pid) ?? 0) + workersCpu(),
  };
}

/**
 * CPU the rest of the machine used during a phase (other processes: the
 * machine is shared), in % of one core: the noise indicator of a run.
 */
function otherCpuPct(a: ReturnType<typeof serverSample>, b: ReturnType<typeof serverSample>): number {
  const other = b.machine - a.machine - (b.own - a.own) - ((b.cpu ?? 0) - (a.cpu ?? 0));
  return Math.max(0, Math.round((other / ((b.t - a.t) / 1000)) * 1000) / 10);
}

function workersCpu(): number {
  let s = 0;
  for (const w of workers) s += cpuSeconds(w.pid) ?? 0;
  return s;
}

function workersRss(): number {
  let s = 0;
  for (const w of workers) s += rssKb(w.pid) ?? 0;
  return s;
}

async function metric(http: number | null, name: string): Promise<number | null> {
  if (http === null) return null;
  try {
    const text = await (await fetch(`http://127.0.0.1:${http}/metrics`)).text();
    const line = text.split("\n").find((l) => l.startsWith(`${name} `));
    return line ? Number(line.split(" ").pop()) : null;
  } catch {
    return null;
  }
}

/** Every sample of the server's /metrics, by its full name with labels. */
async function allMetrics(http: number | null): Promise<Map<string, number> | null> {
  if (http === null) return null;
  try {
    const text = await (await fetch(`http://127.0.0.1:${http}/metrics`)).text();
    const m = new Map<string, number>();
    for (const line of text.split("\n")) {
      if (!line || line.startsWith("#")) continue;
      const i = line.lastIndexOf(" ");
      m.set(line.slice(0, i), Number(line.slice(i + 1)));
    }
    return m;
  } catch {
    return null;
  }
}

const COUNTERS = [
  "switchboard_frames_in_total", "switchboard_frames_out_total", "switchboard_bytes_in_total", "switchboard_bytes_out_total",
  "switchboard_deliveries_pushed_total", "switchboard_deliveries_acked_total", "switchboard_messages_accepted_total",
  "switchboard_queue_commits_total", "switchboard_queue_rows_written_total", "switchboard_queue_write_back_hits_total",
];

function counterDeltas(a: Map<string, number> | null, b: Map<string, number> | null): Record<string, number> | null {
  if (!a || !b) return null;
  const out: Record<string, number> = {};
  for (const k of COUNTERS) if (b.has(k)) out[k.replace(/^switchboard_/, "").replace(/_total$/, "")] = (b.get(k) ?? 0) - (a.get(k) ?? 0);
  return out;
}

/** `perf stat` on the server's syscalls for the measured phase (--syscalls); null when perf is missing. */
function startSyscallCount(pid: number | null): { stop: () => Promise<Record<string, number> | null> } | null {
  if (pid === null || flags["--syscalls"] !== "true") return null;
  const events = ["sendto", "recvfrom", "epoll_pwait2", "epoll_pwait", "epoll_wait", "write", "pwrite64", "fdatasync", "fsync"].map((e) => `syscalls:sys_enter_${e}`);
  let p: Subprocess<"ignore", "ignore", "pipe">;
  try {
    p = Bun.spawn(["perf", "stat", "-x", ",", "-e", events.join(","), "-p", String(pid)], { stdin: "ignore", stdout: "ignore", stderr: "pipe" });
  } catch {
    say("warning: perf is not available; --syscalls ignored");
    return null;
  }
  return {
    async stop() {
      p.kill("SIGINT");
      const text = await new Response(p.stderr).text();
      await p.exited;
      const out: Record<string, number> = {};
      for (const line of text.split("\n")) {
        const c = line.split(",");
        const m = c[2]?.match(/^syscalls:sys_enter_(\w+)$/);
        if (m && /^\d+$/.test(c[0]!)) out[m[1]!] = Number(c[0]);
      }
      return Object.keys(out).length ? out : null;
    },
  };
}

/** Logs every worker's devices in, printing progress; returns the merged result. */
async function loginAll(ws: Worker[], total: number, concurrency: number, pingInterval: number) {
  const online = new Array(ws.length).fill(0);
  const t0 = performance.now();
  let lastPrint = 0;
  for (const w of ws) {
    w.onProgress = (p) => {
      online[w.index] = p.online;
      const now = performance.now();
      if (now - lastPrint > 1000) {
        lastPrint = now;
        const n = online.reduce((a, b) => a + b, 0);
        say(`  online ${n}/${total} after ${((now - t0) / 1000).toFixed(1)} s (${Math.round(n / ((now - t0) / 1000))}/s)`);
      }
    };
  }
  const res = await Promise.all(ws.map((w) => w.call({ cmd: "login", concurrency, pingInterval }, "online")));
  const seconds = (performance.now() - t0) / 1000;
  const n = res.reduce((a, r) => a + r.online, 0);
  const failed = res.reduce((a, r) => a + r.failed, 0);
  const reasons: Record<string, number> = {};
  for (const r of res) for (const [k, v] of Object.entries(r.reasons)) reasons[k] = (reasons[k] ?? 0) + v;
  const hist = merge(res.map((r) => r.hist));
  return { online: n, failed, seconds, reasons, latency: summary(hist) };
}

function pct(cpu: number, wallS: number): number {
  return Math.round((cpu / wallS) * 1000) / 10;
}

const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;

async function finish(result: Record<string, unknown>, code: number): Promise<void> {
  await shutdown();
  // Exactly one JSON line, last.
  console.log(JSON.stringify(result));
  process.exit(code);
}

async function idle(): Promise<void> {
  const conns = num("--conns", 1000, 1);
  const settle = num("--settle", 5);
  const hold = num("--hold", 0);
  const ping = num("--ping", 30, 1);
  const nw = workerCount(conns);
  const concurrency = flags["--concurrency"] ? num("--concurrency", 1, 1) : Math.max(20, Math.floor(400 / nw));
  const tag = runTag();
  const warmN = Math.min(20, conns);
  const names = [...Array.from({ length: warmN }, (_, i) => `lt${tag}w${i}`), ...Array.from({ length: conns }, (_, i) => `lt${tag}-${i}`)];
  say(`idle: ${conns} ${transport} connections over ${nw} worker(s), ${concurrency} logins in flight per worker`);
  const { target, ids } = await setup(names);
  if (spawnMode) pin(process.pid, flags["--worker-cpus"] ?? "1");
  const ws = startWorkers(nw);
  await Promise.all(ws.map((w) => w.next("hello", 30_000)));

  // Warm-up: a few logins (JIT, lazily built server state), then they leave again.
  const wt = { host: target.host, port: target.port, ca: target.ca };
  await ws[0]!.call({ cmd: "init", target: wt, ids: ids.slice(0, warmN) }, "ready");
  const warm = await ws[0]!.call({ cmd: "login", concurrency: 10, pingInterval: 0 }, "online");
  await ws[0]!.call({ cmd: "quit_all" }, "quit");
  say(`warm-up: ${warm.online} logins, then closed`);
  await sleep(2000);

  const slices = split(ids.slice(warmN), nw, 1);
  await Promise.all(ws.map((w, i) => w.call({ cmd: "init", target: wt, ids: slices[i]! }, "ready")));
  const before = serverSample(target.pid);
  const wcpu0 = workersCpu();
  say(`server before: RSS ${before.rss} KiB`);
  const login = await loginAll(ws, conns, concurrency, ping);
  const afterLogin = serverSample(target.pid);
  const wcpu1 = workersCpu();
  say(`logged in ${login.online}/${conns} in ${login.seconds.toFixed(2)} s: ${Math.round(login.online / login.seconds)} logins/s; failed ${login.failed}`);
  if (login.failed) say(`  failure reasons: ${JSON.stringify(login.reasons)}`);
  say(`login latency: ${fmtLatency(login.latency)}`);
  await sleep(settle * 1000);
  const s1 = serverSample(target.pid);
  await sleep(3000);
  const s2 = serverSample(target.pid);
  const sessions = await metric(target.http, "switchboard_sessions");
  const bytesPerConn = before.rss !== null && s2.rss !== null && login.online > 0 ? Math.round(((s2.rss - before.rss) * 1024) / login.online) : null;
  const bytesPerConn1 = before.rss !== null && s1.rss !== null && login.online > 0 ? Math.round(((s1.rss - before.rss) * 1024) / login.online) : null;
  say(`server after: RSS ${s1.rss} KiB, then ${s2.rss} KiB 3 s later; sessions ${sessions ?? "?"}`);
  say(`server memory per idle authenticated ${transport} connection: ${bytesPerConn} bytes (${bytesPerConn1} at the first reading)`);
  const loginCpu = before.cpu !== null && afterLogin.cpu !== null ? afterLogin.cpu - before.cpu : null;
  const idleCpu = s1.cpu !== null && s2.cpu !== null ? s2.cpu - s1.cpu : null;
  say(`other processes on the machine during the logins: ${otherCpuPct(before, afterLogin)}% of one core`);
  if (loginCpu !== null) say(`server CPU during logins: ${loginCpu.toFixed(2)} s (${pct(loginCpu, login.seconds)}%), ${Math.round((loginCpu * 1e6) / Math.max(1, login.online))} µs per login`);
  if (hold > 0) {
    say(`holding for ${hold} s`);
    await sleep(hold * 1000);
  }
  const after = serverSample(target.pid);
  const failedAny = login.failed > 0;
  if (failedAny) say(`WARNING: ${login.failed} logins failed`);
  await finish(
    {
      scenario: "idle",
      params: { conns, transport, workers: nw, concurrency, settle_s: settle, hold_s: hold, ping_s: ping, mode: spawnMode ? "spawn" : "target" },
      sent: 0, delivered: 0, lost: 0, duplicates: 0, out_of_order: 0, sent_per_s: 0, delivered_per_s: 0,
      latency_of: "login (connect to ready)",
      latency_ms: login.latency,
      logins: { online: login.online, failed: login.failed, seconds: round(login.seconds, 3), per_s: Math.round(login.online / login.seconds), reasons: login.reasons },
      server: {
        pid: target.pid,
        cpu_s: loginCpu === null ? null : round(loginCpu, 2),
        cpu_pct: loginCpu === null ? null : pct(loginCpu, login.seconds),
        cpu_phase: "login",
        cpu_us_per_login: loginCpu === null ? null : Math.round((loginCpu * 1e6) / Math.max(1, login.online)),
        idle_cpu_pct: idleCpu === null ? null : pct(idleCpu, (s2.t - s1.t) / 1000),
        rss_kb_before: before.rss,
        rss_kb: s2.rss,
        rss_kb_first: s1.rss,
        rss_kb_end: after.rss,
        bytes_per_conn: bytesPerConn,
        sessions,
      },
      client: { cpu_s: round(wcpu1 - wcpu0, 2), cpu_pct: pct(wcpu1 - wcpu0, login.seconds), rss_kb: workersRss() },
      other_cpu_pct: otherCpuPct(before, s2),
      msgs_per_server_cpu_s: null,
    },
    failedAny ? 4 : 0,
  );
}

async function pairs(): Promise<void> {
  const P = num("--pairs", 10, 1);
  const oneway = flags["--oneway"] === "true";
  const window = num("--window", 16, 1);
  const rate = flags["--rate"] !== undefined ? num("--rate", 0, 1) : 0;
  const duration = num("--duration", 10, 0.1);
  const warmup = num("--warmup", 3);
  const messages = flags["--messages"] !== undefined ? num("--messages", 0, 1) : 0;
  const size = num("--size", 64, 8);
  const drain = num("--drain", 15);
  if (size > 255) {
    console.error("loadtest: --size must be at most 255 (the lean client writes bin8 payloads)");
    process.exit(2);
  }
  const conns = 2 * P;
  const nw = Math.min(workerCount(conns), P);
  const concurrency = flags["--concurrency"] ? num("--concurrency", 1, 1) : Math.max(20, Math.floor(400 / nw));
  const sendersTotal = oneway ? P : 2 * P;
  const mode: RunOpts["mode"] = rate > 0 ? "open" : "closed";
  const quotaPerSender = messages > 0 ? Math.ceil(messages / sendersTotal) : 0;
  const tag = runTag();
  const names: string[] = [];
  for (let i = 0; i < P; i++) names.push(`lt${tag}-a${i}`, `lt${tag}-b${i}`);
  say(
    `pairs: ${P} pairs (${oneway ? "one way" : "both ways"}), ${mode === "closed" ? `closed loop, window ${window} per sender` : `open loop at ${rate} msgs/s`}, ` +
      `${messages > 0 ? `${quotaPerSender * sendersTotal} messages` : `${warmup} s warm-up + ${duration} s measured`}, ${size}-byte payloads, ${transport}, ${nw} worker(s)`,
  );
  const { target, ids } = await setup(names);
  if (spawnMode) pin(process.pid, flags["--worker-cpus"] ?? "1");
  const ws = startWorkers(nw);
  await Promise.all(ws.map((w) => w.next("hello", 30_000)));
  const wt = { host: target.host, port: target.port, ca: target.ca };
  const slices = split(ids, nw, 2);
  await Promise.all(ws.map((w, i) => w.call({ cmd: "init", target: wt, ids: slices[i]! }, "ready")));
  const login = await loginAll(ws, conns, concurrency, 30);
  say(`logged in ${login.online}/${conns} in ${login.seconds.toFixed(2)} s; failed ${login.failed}`);
  if (login.failed) return fatal(`${login.failed} logins failed: ${JSON.stringify(login.reasons)}`);

  const optsFor = (i: number): RunOpts => ({
    mode, window, size, oneway, quotaPerSender,
    ratePerS: (rate * slices[i]!.length) / ids.length,
    measureFromStart: messages > 0,
  });
  let s0: ReturnType<typeof serverSample>;
  let s1: ReturnType<typeof serverSample>;
  let wc0: number;
  let wc1: number;
  let windows: WindowStats[];
  let m0: Map<string, number> | null;
  let m1: Map<string, number> | null;
  let sys: ReturnType<typeof startSyscallCount> = null;
  if (messages > 0) {
    m0 = await allMetrics(target.http);
    sys = startSyscallCount(target.pid);
    s0 = serverSample(target.pid);
    wc0 = workersCpu();
    let finished = false;
    const done = Promise.all(ws.map((w) => w.next("done", 24 * 3600_000))).then(() => (finished = true));
    for (let i = 0; i < ws.length; i++) ws[i]!.send({ cmd: "run", opts: optsFor(i) });
    // Wait for every quota to complete, or give up when nothing moves for --drain seconds.
    let lastProgress = performance.now();
    let lastCount = -1;
    while (!finished) {
      await Promise.race([done, sleep(1000)]);
      if (finished) break;
      const tt = await Promise.all(ws.map((w) => w.call({ cmd: "totals" }, "totals")));
      const count = tt.reduce((a, x) => a + x.totals.delivered + x.totals.receipts + x.totals.acked, 0);
      const sentN = tt.reduce((a, x) => a + x.totals.sent, 0);
      const dlvN = tt.reduce((a, x) => a + x.totals.delivered, 0);
      say(`  sent ${sentN}, delivered ${dlvN}`);
      if (count !== lastCount) {
        lastCount = count;
        lastProgress = performance.now();
      } else if (performance.now() - lastProgress > drain * 1000) {
        say(`WARNING: no progress for ${drain} s; stopping`);
        break;
      }
    }
    s1 = serverSample(target.pid);
    wc1 = workersCpu();
    m1 = await allMetrics(target.http);
    windows = await Promise.all(ws.map((w) => w.call({ cmd: "stop" }, "stopped")));
  } else {
    for (let i = 0; i < ws.length; i++) ws[i]!.send({ cmd: "run", opts: optsFor(i) });
    if (warmup > 0) {
      say(`warming up for ${warmup} s`);
      await sleep(warmup * 1000);
    }
    const marked = ws.map((w) => w.next("marked"));
    m0 = await allMetrics(target.http);
    sys = startSyscallCount(target.pid);
    s0 = serverSample(target.pid);
    wc0 = workersCpu();
    for (const w of ws) w.send({ cmd: "mark" });
    await Promise.all(marked);
    say(`measuring for ${duration} s`);
    const endAt = performance.now() + duration * 1000;
    let prev = s0;
    let prevDelivered = -1;
    while (performance.now() < endAt) {
      await sleep(Math.min(1000, endAt - performance.now()));
      const s = serverSample(target.pid);
      const tt = await Promise.all(ws.map((w) => w.call({ cmd: "totals" }, "totals")));
      const delivered = tt.reduce((a, x) => a + x.totals.delivered, 0);
      const dt = (s.t - prev.t) / 1000;
      const rateS = prevDelivered >= 0 ? `${Math.round((delivered - prevDelivered) / dt)} delivered/s, ` : "";
      if (s.cpu !== null && prev.cpu !== null) {
        const cpu = s.cpu - prev.cpu;
        const perCpuS = prevDelivered >= 0 && cpu > 0 ? `, ${Math.round((delivered - prevDelivered) / cpu)} per server CPU-s` : "";
        say(`  ${rateS}server CPU ${pct(cpu, dt)}%, RSS ${s.rss} KiB${perCpuS}`);
      }
      prev = s;
      prevDelivered = delivered;
    }
    const stopped = ws.map((w) => w.next("stopped"));
    for (const w of ws) w.send({ cmd: "stop" });
    s1 = serverSample(target.pid);
    wc1 = workersCpu();
    m1 = await allMetrics(target.http);
    windows = await Promise.all(stopped);
  }
  const syscalls = sys ? await sys.stop() : null;
  const counters = counterDeltas(m0, m1);
  // The server's own group-commit durations (a summary since it started): long commits stall its event loop.
  const q = (x: string) => m1?.get(`switchboard_queue_commit_seconds{quantile="${x}"}`);
  const commitMs = m1 && q("0.5") !== undefined ? { p50: round(q("0.5")! * 1000, 3), p99: round(q("0.99")! * 1000, 3), p999: round(q("0.999")! * 1000, 3) } : null;
  const wallS = (s1.t - s0.t) / 1000;
  const win = {
    sent: windows.reduce((a, w) => a + w.sent, 0),
    delivered: windows.reduce((a, w) => a + w.delivered, 0),
    acked: windows.reduce((a, w) => a + w.acked, 0),
    receipts: windows.reduce((a, w) => a + w.receipts, 0),
  };
  const lat = summary(merge(windows.map((w) => w.hist)));
  const latSent = summary(merge(windows.map((w) => w.sent_hist)));
  const latRcpt = summary(merge(windows.map((w) => w.rcpt_hist)));
  const lag = summary(merge(windows.map((w) => w.lag_hist)));
  const serverCpu = s0.cpu !== null && s1.cpu !== null ? s1.cpu - s0.cpu : null;
  const clientCpu = wc1 - wc0;
  say(`measured ${wallS.toFixed(2)} s: sent ${win.sent} (${Math.round(win.sent / wallS)}/s), delivered ${win.delivered} (${Math.round(win.delivered / wallS)}/s), receipts ${win.receipts}`);
  say(`delivery latency (send -> msg at the recipient): ${fmtLatency(lat)}`);
  say(`sent latency (send -> sent):                     ${fmtLatency(latSent)}`);
  say(`receipt latency (send -> dlv receipt at sender): ${fmtLatency(latRcpt)}`);
  if (mode === "open") say(`generator lag (intended -> written):              ${fmtLatency(lag)}`);
  const perCpu = serverCpu ? Math.round(win.delivered / serverCpu) : null;
  if (serverCpu !== null) {
    say(`server CPU ${serverCpu.toFixed(2)} s (${pct(serverCpu, wallS)}% of one core; kernel ${(s1.sys! - s0.sys!).toFixed(2)} s): ${perCpu} delivered msgs per server CPU-second`);
  }
  say(`load generator CPU ${clientCpu.toFixed(2)} s (${pct(clientCpu, wallS)}% of one core); other processes on the machine ${otherCpuPct(s0, s1)}% of one core`);
  if (counters) say(`server counters in the measured phase: ${JSON.stringify(counters)}`);
  if (commitMs) say(`server group commit duration (since start): p50 ${commitMs.p50} ms, p99 ${commitMs.p99} ms, p99.9 ${commitMs.p999} ms`);
  const wbRate = writeBackRate(counters);
  if (wbRate !== null) say(`write-back hit rate in the measured phase: ${(wbRate * 100).toFixed(1)}% (${counters!.queue_write_back_hits} items acked before their commit, ${counters!.queue_rows_written} rows written)`);
  if (syscalls) {
    const perMsg = Object.fromEntries(Object.entries(syscalls).map(([k, v]) => [k, round(v / Math.max(1, win.delivered), 3)]));
    say(`server syscalls in the measured phase: ${JSON.stringify(syscalls)}; per delivered message ${JSON.stringify(perMsg)}`);
  }

  // Drain: everything the server acknowledged must arrive, and every receipt must come back.
  const t0 = performance.now();
  let st: Extract<Ev, { ev: "status" }>[] = [];
  for (;;) {
    st = await Promise.all(ws.map((w) => w.call({ cmd: "status" }, "status")));
    const und = st.reduce((a, s) => a + s.undelivered, 0);
    const unacked = st.reduce((a, s) => a + s.unacked, 0);
    const norc = st.reduce((a, s) => a + s.no_receipt, 0);
    if ((und === 0 && unacked === 0 && norc === 0) || performance.now() - t0 > drain * 1000) {
      say(`drained in ${((performance.now() - t0) / 1000).toFixed(2)} s: undelivered ${und}, without sent ${unacked}, without receipt ${norc}`);
      break;
    }
    await sleep(250);
  }
  const reports = await Promise.all(ws.map((w) => w.call({ cmd: "report" }, "report")));
  const tot: Totals = { ...reports[0]!.totals };
  for (const r of reports.slice(1)) for (const k of Object.keys(tot) as (keyof Totals)[]) tot[k] += r.totals[k];
  const lost = reports.reduce((a, r) => a + r.lost, 0);
  const lostIds = reports.flatMap((r) => r.lost_ids).slice(0, 10);
  const errSamples = reports.flatMap((r) => r.errors_sample).slice(0, 10);
  const unackedEnd = st.reduce((a, s) => a + s.unacked, 0);
  const noRcptEnd = st.reduce((a, s) => a + s.no_receipt, 0);
  const undeliveredEnd = st.reduce((a, s) => a + s.undelivered, 0);
  say(`totals: sent ${tot.sent}, sent-acked ${tot.acked}, delivered ${tot.delivered}, receipts ${tot.receipts}, lost ${lost}, duplicates ${tot.duplicates}, out of order ${tot.out_of_order}, errors ${tot.errors}, disconnects ${tot.disconnects}`);
  const alive = server ? !(await Promise.race([server.proc.exited.then(() => true), sleep(10).then(() => false)])) : true;
  let code = 0;
  if (lost > 0) {
    console.error(`\n!!!!!!!! LOST ${lost} MESSAGES THE SERVER HAD ACKNOWLEDGED WITH "sent" !!!!!!!!  e.g. ${lostIds.join(", ")}\n`);
    code = 1;
  } else if (tot.duplicates > 0 || tot.out_of_order > 0) {
    console.error(`\n!!!! INTEGRITY: ${tot.duplicates} duplicate and ${tot.out_of_order} out-of-order deliveries !!!!\n`);
    code = 3;
  } else if (tot.disconnects > 0 || tot.errors > 0 || tot.unknown > 0 || unackedEnd > 0 || noRcptEnd > 0 || undeliveredEnd > 0 || !alive) {
    console.error(`\nloadtest: WARNING: disconnects ${tot.disconnects}, errors ${tot.errors}, unknown frames ${tot.unknown}, without sent ${unackedEnd}, without receipt ${noRcptEnd}, undelivered ${undeliveredEnd}, server alive ${alive}: ${errSamples.join("; ")}\n`);
    code = 4;
  }
  const latency = (s: LatencySummary) => ({ p50: s.p50, p90: s.p90, p99: s.p99, p999: s.p999, max: s.max, mean: s.mean, count: s.count });
  await finish(
    {
      scenario: "pairs",
      params: {
        pairs: P, oneway, mode, window: mode === "closed" ? window : null, rate: mode === "open" ? rate : null,
        duration_s: messages > 0 ? null : duration, warmup_s: messages > 0 ? 0 : warmup, messages: messages > 0 ? quotaPerSender * sendersTotal : null,
        size, transport, workers: nw, drain_s: drain, mode_server: spawnMode ? "spawn" : "target",
      },
      sent: tot.sent,
      acked: tot.acked,
      delivered: tot.delivered,
      receipts: tot.receipts,
      lost,
      duplicates: tot.duplicates,
      out_of_order: tot.out_of_order,
      unacked_at_end: unackedEnd,
      no_receipt_at_end: noRcptEnd,
      errors: tot.errors,
      disconnects: tot.disconnects,
      measured: { seconds: round(wallS, 3), ...win },
      sent_per_s: Math.round(win.sent / wallS),
      delivered_per_s: Math.round(win.delivered / wallS),
      latency_of: mode === "open" ? "intended send time -> msg at the recipient" : "send -> msg at the recipient",
      latency_ms: latency(lat),
      sent_latency_ms: latency(latSent),
      receipt_latency_ms: latency(latRcpt),
      ...(mode === "open" ? { generator_lag_ms: latency(lag) } : {}),
      server: {
        pid: target.pid,
        cpu_s: serverCpu === null ? null : round(serverCpu, 2),
        cpu_pct: serverCpu === null ? null : pct(serverCpu, wallS),
        cpu_sys_s: s0.sys !== null && s1.sys !== null ? round(s1.sys - s0.sys, 2) : null,
        rss_kb: s1.rss,
        alive,
        counters,
        commit_ms: commitMs,
        syscalls,
      },
      client: { cpu_s: round(clientCpu, 2), cpu_pct: pct(clientCpu, wallS), rss_kb: workersRss() },
      other_cpu_pct: otherCpuPct(s0, s1),
      msgs_per_server_cpu_s: perCpu,
      write_back_hit_rate: wbRate === null ? null : round(wbRate, 4),
      commit_p99_ms: commitMs ? commitMs.p99 : null,
      ...(errSamples.length ? { errors_sample: errSamples } : {}),
    },
    code,
  );
}

/** Δhits / (Δhits + Δrows written): the share of queue items acknowledged before their group commit. */
function writeBackRate(c: Record<string, number> | null): number | null {
  if (!c || c.queue_write_back_hits === undefined || c.queue_rows_written === undefined) return null;
  const d = c.queue_write_back_hits + c.queue_rows_written;
  return d > 0 ? c.queue_write_back_hits / d : null;
}

async function offlineScenario(): Promise<void> {
  const S = num("--senders", 20, 1);
  const R = num("--recipients", 1, 1);
  const messages = num("--messages", 100_000, 1);
  const window = num("--window", 16, 1);
  const size = num("--size", 64, 8);
  const drain = num("--drain", 30);
  if (size > 255) {
    console.error("loadtest: --size must be at most 255 (the lean client writes bin8 payloads)");
    process.exit(2);
  }
  if (flags["--workers"] && num("--workers", 1, 1) !== 1) {
    console.error("loadtest: offline runs in one worker (senders and recipients check each other there)");
    process.exit(2);
  }
  const quotaPerSender = Math.ceil(messages / S);
  const total = quotaPerSender * S;
  const concurrency = flags["--concurrency"] ? num("--concurrency", 1, 1) : 100;
  const tag = runTag();
  const sNames = Array.from({ length: S }, (_, i) => `lt${tag}-s${i}`);
  const rNames = Array.from({ length: R }, (_, i) => `lt${tag}-r${i}`);
  const userSf = flags["--server-flags"] ?? "";
  const defSf = /--queue-max-messages/.test(userSf) ? [] : ["--queue-max-messages", "1000000", "--queue-max-bytes", "1073741824"];
  say(`offline: ${S} senders -> ${R} offline recipient device(s), ${total} messages, closed loop on sent with window ${window} per sender, ${size}-byte payloads, ${transport}`);
  const { target, ids } = await setup([...sNames, ...rNames], spawnMode ? defSf : []);
  const sIds = ids.slice(0, S);
  const rIds = ids.slice(S);
  if (spawnMode) pin(process.pid, flags["--worker-cpus"] ?? "1");
  const [w] = startWorkers(1);
  await w!.next("hello", 30_000);
  await w!.call({ cmd: "init", target: { host: target.host, port: target.port, ca: target.ca }, ids: sIds }, "ready");
  const login = await loginAll([w!], S, concurrency, 30);
  say(`senders logged in ${login.online}/${S} in ${login.seconds.toFixed(2)} s; failed ${login.failed}`);
  if (login.failed) return fatal(`${login.failed} logins failed: ${JSON.stringify(login.reasons)}`);

  // Phase 1: queue. Every `sent` here is a durable write (nobody can ack the items).
  const opts: RunOpts = { mode: "closed", window, size, oneway: true, quotaPerSender, ratePerS: 0, measureFromStart: true };
  const m0 = await allMetrics(target.http);
  const s0 = serverSample(target.pid);
  const wc0 = workersCpu();
  let finished = false;
  const done = w!.next("done", 24 * 3600_000).then(() => (finished = true));
  w!.send({ cmd: "offline_run", opts, recipients: rIds.map((r) => ({ account: r.account, device: r.device })) });
  let lastCount = -1;
  let lastProgress = performance.now();
  while (!finished) {
    await Promise.race([done, sleep(1000)]);
    if (finished) break;
    const tt = (await w!.call({ cmd: "totals" }, "totals")).totals;
    say(`  sent ${tt.sent}, acknowledged (sent) ${tt.acked}, errors ${tt.errors}`);
    if (tt.acked !== lastCount) {
      lastCount = tt.acked;
      lastProgress = performance.now();
    } else if (performance.now() - lastProgress > drain * 1000) {
      say(`WARNING: no sent for ${drain} s; stopping the queue phase`);
      break;
    }
  }
  const s1 = serverSample(target.pid);
  const wc1 = workersCpu();
  const m1 = await allMetrics(target.http);
  const qWin = await w!.call({ cmd: "stop" }, "stopped");
  const qS = (s1.t - s0.t) / 1000;
  const qCpu = s0.cpu !== null && s1.cpu !== null ? s1.cpu - s0.cpu : null;
  const latSent = summary(merge([qWin.sent_hist]));
  const queuedPerS = Math.round(qWin.acked / qS);
  const qCounters = counterDeltas(m0, m1);
  const q = (x: string) => m1?.get(`switchboard_queue_commit_seconds{quantile="${x}"}`);
  const commitMs = m1 && q("0.5") !== undefined ? { p50: round(q("0.5")! * 1000, 3), p99: round(q("0.99")! * 1000, 3), p999: round(q("0.999")! * 1000, 3) } : null;
  say(`queue phase ${qS.toFixed(2)} s: ${qWin.acked} messages acknowledged with sent while the recipients were offline: ${queuedPerS}/s`);
  say(`sent latency (send -> sent): ${fmtLatency(latSent)}`);
  if (qCpu !== null) say(`server CPU ${qCpu.toFixed(2)} s (${pct(qCpu, qS)}% of one core; kernel ${(s1.sys! - s0.sys!).toFixed(2)} s): ${Math.round(qWin.acked / qCpu)} queued msgs per server CPU-second, ${round((qCpu * 1e6) / Math.max(1, qWin.acked), 1)} µs each`);
  say(`load generator CPU ${(wc1 - wc0).toFixed(2)} s; other processes on the machine ${otherCpuPct(s0, s1)}% of one core`);
  if (qCounters) say(`server counters in the queue phase: ${JSON.stringify(qCounters)}`);
  if (commitMs) say(`server group commit duration (since start): p50 ${commitMs.p50} ms, p99 ${commitMs.p99} ms, p99.9 ${commitMs.p999} ms`);

  // Phase 2: the recipients log in and drain (ack every delivery as it arrives).
  const acked = (await w!.call({ cmd: "totals" }, "totals")).totals.acked;
  const s2 = serverSample(target.pid);
  const wc2 = workersCpu();
  const dr = await w!.call({ cmd: "drain", ids: rIds, concurrency }, "draining");
  say(`recipients logged in ${dr.online}/${R} in ${dr.login_ms.toFixed(1)} ms; failed ${dr.failed}`);
  lastCount = -1;
  lastProgress = performance.now();
  for (;;) {
    const tt = (await w!.call({ cmd: "totals" }, "totals")).totals;
    if (tt.delivered >= acked) break;
    if (tt.delivered !== lastCount) {
      lastCount = tt.delivered;
      lastProgress = performance.now();
    } else if (performance.now() - lastProgress > drain * 1000) {
      say(`WARNING: no delivery for ${drain} s; stopping the drain`);
      break;
    }
    await sleep(100);
  }
  const ds = await w!.call({ cmd: "drain_stats" }, "drain_stats");
  const s3 = serverSample(target.pid);
  const wc3 = workersCpu();
  const dS = ds.ms / 1000;
  const dCpu = s2.cpu !== null && s3.cpu !== null ? s3.cpu - s2.cpu : null;
  const drainedPerS = dS > 0 ? Math.round(ds.delivered / dS) : 0;
  say(`drain: ${ds.delivered} delivered and acked in ${dS.toFixed(2)} s from login to the last one: ${drainedPerS}/s`);
  if (dCpu !== null) say(`server CPU in the drain ${dCpu.toFixed(2)} s: ${Math.round(ds.delivered / Math.max(1e-9, dCpu))} drained msgs per server CPU-second; load generator CPU ${(wc3 - wc2).toFixed(2)} s`);
  // Give the dlv receipts to the senders a moment (not required for the verdict).
  const t0 = performance.now();
  let st = await w!.call({ cmd: "status" }, "status");
  while (st.no_receipt > 0 && performance.now() - t0 < 3000) {
    await sleep(100);
    st = await w!.call({ cmd: "status" }, "status");
  }
  const rep = await w!.call({ cmd: "report" }, "report");
  const tot = rep.totals;
  say(`totals: sent ${tot.sent}, sent-acked ${tot.acked}, delivered ${tot.delivered}, receipts ${tot.receipts}, lost ${rep.lost}, duplicates ${tot.duplicates}, out of order ${tot.out_of_order}, errors ${tot.errors}, unknown ${tot.unknown}, disconnects ${tot.disconnects}`);
  const alive = server ? !(await Promise.race([server.proc.exited.then(() => true), sleep(10).then(() => false)])) : true;
  let code = 0;
  if (rep.lost > 0) {
    console.error(`\n!!!!!!!! LOST ${rep.lost} MESSAGES THE SERVER HAD ACKNOWLEDGED WITH "sent" !!!!!!!!  e.g. ${rep.lost_ids.join(", ")}\n`);
    code = 1;
  } else if (tot.duplicates > 0 || tot.out_of_order > 0) {
    console.error(`\n!!!! INTEGRITY: ${tot.duplicates} duplicate and ${tot.out_of_order} out-of-order deliveries !!!!\n`);
    code = 3;
  } else if (tot.disconnects > 0 || tot.errors > 0 || tot.unknown > 0 || st.unacked > 0 || dr.failed > 0 || !alive) {
    console.error(`\nloadtest: WARNING: disconnects ${tot.disconnects}, errors ${tot.errors}, unknown ${tot.unknown}, without sent ${st.unacked}, recipient logins failed ${dr.failed}, server alive ${alive}: ${rep.errors_sample.join("; ")}\n`);
    code = 4;
  }
  const perCpu = qCpu ? Math.round(qWin.acked / qCpu) : null;
  await finish(
    {
      scenario: "offline",
      params: { senders: S, recipients: R, messages: total, window, size, transport, workers: 1, drain_s: drain, mode_server: spawnMode ? "spawn" : "target", server_flags: spawnMode ? [...defSf, ...userSf.split(/\s+/).filter(Boolean)] : null },
      sent: tot.sent,
      acked: tot.acked,
      delivered: tot.delivered,
      receipts: tot.receipts,
      lost: rep.lost,
      duplicates: tot.duplicates,
      out_of_order: tot.out_of_order,
      unacked_at_end: st.unacked,
      errors: tot.errors,
      disconnects: tot.disconnects,
      queued_per_s: queuedPerS,
      drained_per_s: drainedPerS,
      sent_per_s: queuedPerS,
      delivered_per_s: drainedPerS,
      queue_phase: { seconds: round(qS, 3), sent: qWin.sent, acked: qWin.acked },
      drain_phase: { seconds: round(dS, 3), delivered: ds.delivered, login_ms: round(dr.login_ms, 1), server_cpu_s: dCpu === null ? null : round(dCpu, 2), msgs_per_server_cpu_s: dCpu ? Math.round(ds.delivered / dCpu) : null },
      latency_of: "send -> sent (queue phase)",
      latency_ms: { p50: latSent.p50, p90: latSent.p90, p99: latSent.p99, p999: latSent.p999, max: latSent.max, mean: latSent.mean, count: latSent.count },
      server: {
        pid: target.pid,
        cpu_s: qCpu === null ? null : round(qCpu, 2),
        cpu_pct: qCpu === null ? null : pct(qCpu, qS),
        cpu_sys_s: s0.sys !== null && s1.sys !== null ? round(s1.sys - s0.sys, 2) : null,
        cpu_us_per_msg: qCpu === null ? null : round((qCpu * 1e6) / Math.max(1, qWin.acked), 1),
        rss_kb: s3.rss,
        alive,
        counters: qCounters,
        commit_ms: commitMs,
      },
      client: { cpu_s: round(wc1 - wc0, 2), cpu_pct: pct(wc1 - wc0, qS), rss_kb: workersRss() },
      other_cpu_pct: otherCpuPct(s0, s1),
      msgs_per_server_cpu_s: perCpu,
      ...(rep.errors_sample.length ? { errors_sample: rep.errors_sample } : {}),
    },
    code,
  );
}

try {
  if (scenario === "idle") await idle();
  else if (scenario === "offline") await offlineScenario();
  else await pairs();
} catch (e) {
  if (!shuttingDown) {
    console.error(`loadtest: ${(e as Error).stack ?? e}`);
    await shutdown();
    console.log(JSON.stringify({ scenario, params: { ...flags }, error: (e as Error).message ?? String(e) }));
    process.exit(5);
  }
}
