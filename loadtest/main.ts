/**
 * Switchboard load generator: `npm run loadtest -- SCENARIO [flags]`.
 *
 * The coordinator (this process) provisions accounts straight into the
 * data directory (or takes identities from an --ids file made by
 * `provision`), starts the server (--spawn, from source or --server-bin,
 * pinned to one core) or finds it (--target), spreads the client
 * connections over worker processes (loadtest/worker.ts; storm-worker.ts for
 * login-storm and reconnect-storm; groups-worker.ts for groups; pinned to
 * the other core), drives the phases and reads the server's CPU time and RSS
 * from /proc around the measured phase. `http` runs autocannon in this
 * process. Human-readable lines go to stdout; the last line is one JSON object.
 *
 * Exit status: 0 ok; 1 an acknowledged message was lost; 3 duplicates or
 * out-of-order deliveries; 4 logins failed or connections dropped; 2 usage.
 */
import { mkdtempSync, readFileSync, rmSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import type { Backoff, Cmd, Ev, GroupSpread, RunOpts, SenderCopies, StormStatus, Totals, WindowStats } from "./ipc.ts";
import { randomIdPrefix } from "./lean.ts";
import { merge, newHistogram, summary, fmtLatency, type LatencySummary } from "./stats.ts";
import { provision, runTag, type Identity } from "./setup.ts";
import { BUN, ROOT, cpuSeconds, cpuSplit, machineBusySeconds, findListener, pin, rssKb, spawnServer, cpusAllowed, tcpExt, type SpawnedServer } from "./proc.ts";

const USAGE = `usage: npm run loadtest -- SCENARIO [flags]

scenarios:
  idle    N devices log in and stay idle with heartbeats; server memory per connection, login rate
  pairs   P pairs of devices message each other with the full receipt chain; throughput, latency, integrity
  offline S senders queue M messages for R offline recipient devices (closed loop on sent), then the
          recipients log in and drain; queued/s (durable writes), drained/s, integrity
  crash   senders run a closed loop to one account with D devices while the server is SIGKILLed and
          restarted at random moments; at the end every acknowledged message must have arrived exactly once
          (always spawns its own server; takes only the flags listed under crash)
  login-storm      N devices log in at the same moment (spread over worker processes); logins/s, time until
                   all are online, server CPU per login, memory per connection
  reconnect-storm  N connected devices get messages (acked; then held unacknowledged), every connection is cut
                   at once, more messages are queued for them while they are away, and they come back with the
                   SDK's jittered backoff; time until all are back and until every queued message is delivered
  http             autocannon against the HTTP endpoints (/healthz, /metrics, /readyz when served):
                   requests/s, latency percentiles, errors
  groups           G groups of M members (docs/PROTOCOL.md §6.8): senders send gmsg, every other member must get
                   each one once, in order, with every member's dlv receipt back; gmsg in/s, deliveries out/s
  provision        not a load: writes N identities into a data directory (on the server's machine) and a file
                   for --ids, so that a run against a --target needs no access to its data directory

where the server is:
  --spawn                 start a server on ephemeral ports (pinned with taskset): from source, or
  --server-bin PATH       ... the compiled binary (npm run build makes dist/switchboard)
  --target HOST:PORT      an already running server (TCP or TLS port, matching --transport; http: its HTTP port)
  --data-dir DIR          the server's data directory (with --target: the load accounts are inserted into it;
                          with --spawn: default a fresh temporary directory, removed afterwards)
  --ids FILE              with --target: identities from \`provision\` instead of --data-dir
  --server-pid PID        with --target: the server's pid for CPU/RSS (default: found from the listening port)
  --ca FILE               with --target and tls: the CA to trust (default DATA_DIR/tls/dev-cert.pem)
  --http-port N           with --target: the server's HTTP port, to read counters from /metrics
  --server-cpus LIST      CPUs for a spawned server (default 0)
  --worker-cpus LIST      CPUs for the workers (default 1; "" = no pinning)
  --server-flags "..."    extra flags for a spawned server (e.g. "--queue-commit-ms 10")
  --server-bun-flags "..." flags for the bun running a spawned server (e.g. "--cpu-prof-md --cpu-prof-dir /tmp/prof")
  --server-main FILE      the server entry to spawn (default src/cli/main.ts; e.g. a patched scratch copy for an A/B)
                          (with --server-bin, --server-bun-flags go to the binary as BUN_OPTIONS)

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
  bound is 10 000 items by default) unless --server-flags sets --queue-max-messages itself; a --target
  server must allow --messages / --recipients items per device itself (else: queue_full errors, status 4)

login-storm:
  --conns N               devices (default 5000); up to 15 000 per worker process
  --concurrency N         logins in flight per worker (default 0: every device at once)
  --backoff sdk|none      after a failed attempt: the SDK's jittered exponential backoff (default) or at once
  --login-timeout S       an attempt that is not ready after S seconds is cut and retried (default 10)
  --give-up S             devices not online S seconds after the start count as failed (default 120)
  --settle S              seconds before reading the server's RSS (default 2)

reconnect-storm:
  --conns N               recipient devices (default 1000); senders are extra devices, one per --per-sender
  --per-sender R          recipients per sending device (default 50)
  --batches A,U,Q         messages per recipient: acked before the cut, delivered and held unacknowledged at
                          the cut, queued while the recipients are away (default 2,1,2)
  --cut kernel|client     kernel (default): \`ss -K\` destroys every TCP connection to the server port at once, as a
                          network failure would (needs root or CAP_NET_ADMIN; with --target it cuts every client of
                          that port, not only the load's); client: every client terminates its sockets at the same moment
  --offline S             recipients stay away for S seconds after the cut (their network is down: reconnect
                          attempts fail and the backoff grows); senders come back at once (default 3)
  --backoff sdk|none      how they come back (default sdk: full jitter, 250 ms × 2^attempt, capped at 30 s)
  --window W              messages in flight per sender until sent (default 16)
  --size B, --login-timeout S, --give-up S (default 120), --drain S (default 60: give up when nothing moves)

http:
  --paths LIST            comma-separated (default /healthz,/metrics,/readyz; a path the server answers with
                          404 is skipped and reported as not served)
  --connections N         autocannon connections (default 10)
  --pipelining N          requests in flight per connection (default 1)
  --duration S            seconds per path (default 10)
  --idle-conns N          with --spawn: N idle logged-in devices during the run (the /metrics cost grows with them)

groups:
  --groups G              groups (default 10); all members of a group live in one worker
  --spread                split each group's members over all workers instead (the creator and senders stay in
                          the group's home worker; loss is checked by summing each message's copies over workers)
  --members M             members per group, one device each (default 10; at most 1024)
  --senders S             senders per group (its first S members; default 2)
  --window W              closed loop: gmsg in flight per sender until every member's dlv receipt (default 4)
  --rate R                open loop at R gmsg/s in total instead
  --duration S, --warmup S, --messages M, --size B, --drain S   as for pairs

provision:
  --data-dir DIR --count N --out FILE   (accounts lt<tag>-<i>, one device each; FILE gets the private seeds, mode 0600)

crash:
  --kills N               SIGKILLs (default 20)
  --senders S             sending devices (default 8)
  --devices D             devices of the recipient account (default 2)
  --window W              messages in flight per sender until sent (default 16)
  --interval MIN-MAX      milliseconds between kills, uniformly random (default 150-750)
  --server-cpus, --worker-cpus, --server-flags, --server-main, --keep   as above (the SDK clients run in this process)
`;

// ---- arguments -------------------------------------------------------------

const BOOL = new Set(["--spawn", "--oneway", "--keep", "--help", "-h", "--syscalls", "--spread"]);
const SCENARIOS = new Set(["idle", "pairs", "offline", "crash", "login-storm", "reconnect-storm", "http", "groups", "provision"]);
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
  "--server-bin", "--ids", "--backoff", "--login-timeout", "--give-up", "--per-sender", "--batches", "--cut", "--offline",
  "--paths", "--connections", "--pipelining", "--idle-conns", "--count", "--out", "--groups", "--members", "--rate",
  "--spread",
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
if (!SCENARIOS.has(scenario)) {
  console.error(`loadtest: unknown scenario ${JSON.stringify(scenario)}\n\n${USAGE}`);
  process.exit(2);
}
if (scenario === "crash") {
  if (flags["--target"] !== undefined) {
    console.error(
      "loadtest: crash cannot measure a --target server: it must SIGKILL and restart the server itself, many times, on the same data directory.\n" +
        "  It always spawns its own (from source, or --server-bin PATH).",
    );
    process.exit(2);
  }
  const allowed = new Set(["--kills", "--senders", "--devices", "--window", "--interval", "--server-cpus", "--worker-cpus", "--server-flags", "--server-main", "--server-bin", "--keep", "--spawn"]);
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
    serverBin: flags["--server-bin"],
  });
  process.exit(code);
}
if (scenario === "provision") {
  const dir = flags["--data-dir"];
  const out = flags["--out"];
  if (!dir || !out || !flags["--count"]) {
    console.error("loadtest: provision needs --data-dir DIR --count N --out FILE");
    process.exit(2);
  }
  const n = num("--count", 1, 1);
  const dataDir = resolve(dir);
  mkdirSync(dataDir, { recursive: true });
  const tag = runTag();
  const p = provision(dataDir, Array.from({ length: n }, (_, i) => `lt${tag}-${i}`));
  const certPath = join(dataDir, "tls", "dev-cert.pem");
  const file: IdsFile = {
    created: new Date().toISOString(), server_id: p.serverId, ca: existsSync(certPath) ? readFileSync(certPath, "utf8") : null, identities: p.identities,
  };
  writeFileSync(out, JSON.stringify(file), { mode: 0o600 });
  console.log(`provisioned ${n} accounts (lt${tag}-0 .. lt${tag}-${n - 1}) with one device each in ${dataDir} in ${(p.ms / 1000).toFixed(2)} s; identities in ${out}`);
  console.log(`run against that server with: npm run loadtest -- SCENARIO --target HOST:PORT --ids ${out} ...`);
  console.log(JSON.stringify({ scenario: "provision", params: { count: n, data_dir: dataDir, out }, accounts: n, seconds: Math.round(p.ms) / 1000 }));
  process.exit(0);
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
  /** Told to exit (a warm-up worker): its exit is not a failure. */
  retired = false;

  constructor(readonly index: number, cpus: string, script = "loadtest/worker.ts") {
    const cmd = [BUN, join(ROOT, script)];
    this.proc = Bun.spawn(cpus ? ["taskset", "-c", cpus, ...cmd] : cmd, {
      cwd: ROOT,
      stdio: ["ignore", "inherit", "inherit"],
      serialization: "json",
      ipc: (m: Ev) => this.receive(m),
    });
    this.pid = this.proc.pid;
    void this.proc.exited.then((code) => {
      this.exited = true;
      if (!shuttingDown && !this.retired) fatal(`worker ${this.index} exited unexpectedly (status ${code})`);
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
  dataDir: string | null;
  http: number | null;
}

async function setup(names: string[], defaultServerFlags: string[] = []): Promise<{ target: Target; ids: Identity[] }> {
  let dataDir: string | null;
  let ids: Identity[];
  let idsCa: string | undefined;
  if (flags["--ids"]) {
    // Identities made earlier on the server's host (`npm run loadtest -- provision`): no data directory needed here.
    if (spawnMode && !flags["--data-dir"]) {
      console.error("loadtest: --ids with --spawn needs --data-dir: the data directory the identities were provisioned into");
      process.exit(2);
    }
    const file = JSON.parse(readFileSync(flags["--ids"], "utf8")) as IdsFile;
    if (!Array.isArray(file.identities) || file.identities.length < names.length) {
      console.error(`loadtest: this run needs ${names.length} identities; ${flags["--ids"]} has ${file.identities?.length ?? 0} (provision more with --count)`);
      process.exit(2);
    }
    ids = file.identities.slice(0, names.length);
    idsCa = file.ca ?? undefined;
    dataDir = flags["--data-dir"] ? resolve(flags["--data-dir"]) : null;
    say(`using ${names.length} of the ${file.identities.length} identities in ${flags["--ids"]} (provisioned ${file.created ?? "?"})`);
  } else {
    if (spawnMode) {
      if (flags["--data-dir"]) {
        dataDir = resolve(flags["--data-dir"]);
        mkdirSync(dataDir, { recursive: true });
      } else dataDir = tmpDir = mkdtempSync(join(tmpdir(), "sb-load-"));
    } else {
      if (!flags["--data-dir"]) {
        console.error(
          "loadtest: --target needs identities: either --data-dir DIR (the server's data directory on this machine; the accounts are inserted into it)\n" +
            "  or --ids FILE made on the server's machine with `npm run loadtest -- provision --data-dir DIR --count N --out FILE`",
        );
        process.exit(2);
      }
      dataDir = resolve(flags["--data-dir"]);
      if (!existsSync(join(dataDir, "accounts.db"))) {
        console.error(`loadtest: ${dataDir}/accounts.db does not exist; is that the server's --data-dir?`);
        process.exit(2);
      }
    }
    const p = provision(dataDir, names);
    ids = p.identities;
    say(`provisioned ${names.length} accounts with one device each in ${(p.ms / 1000).toFixed(2)} s (direct insert into ${dataDir}/accounts.db)`);
  }
  let target: Target;
  if (spawnMode) {
    const cpus = flags["--server-cpus"] ?? "0";
    const words = (f?: string) => (f ? f.split(/\s+/).filter(Boolean) : []);
    const sf = [...defaultServerFlags, ...words(flags["--server-flags"])];
    if (defaultServerFlags.length) say(`server flags: ${sf.join(" ")}`);
    server = await spawnServer(dataDir!, cpus || null, sf, words(flags["--server-bun-flags"]), flags["--server-main"], flags["--server-bin"]);
    const port = transport === "tls" ? server.tls : server.tcp;
    target = { host: "127.0.0.1", port, pid: server.pid, dataDir, http: server.http };
    say(`server pid ${server.pid} (${flags["--server-bin"] ? `binary ${flags["--server-bin"]}` : "from source"}) on ${transport} port ${port} (http ${server.http}), pinned to CPUs ${cpusAllowed(server.pid)}, log ${server.logPath}`);
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
    if (flags["--ca"]) target.ca = readFileSync(flags["--ca"], "utf8");
    else if (dataDir) target.ca = readFileSync(join(dataDir, "tls", "dev-cert.pem"), "utf8");
    else if (idsCa) target.ca = idsCa;
    else {
      console.error("loadtest: --transport tls needs the server's certificate: --ca FILE (or --data-dir DIR, or an --ids file provisioned after the server made its certificate)");
      process.exit(2);
    }
  }
  return { target, ids };
}

/** What `provision` writes and `--ids` reads. */
interface IdsFile {
  created?: string;
  server_id?: string;
  /** The server's development certificate (PEM) when the data directory had one: TLS runs trust it. */
  ca?: string | null;
  identities: Identity[];
}

function startWorkers(n: number, script?: string): Worker[] {
  const cpus = flags["--worker-cpus"] ?? "1";
  workers = Array.from({ length: n }, (_, i) => new Worker(i, cpus, script));
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
      params: { conns, transport, workers: nw, concurrency, settle_s: settle, hold_s: hold, ping_s: ping, mode: spawnMode ? "spawn" : "target", server_bin: flags["--server-bin"] ?? null },
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

/** --size: payload bytes, at most 255 (the lean client writes bin8 payloads). */
function sizeFlag(): number {
  const size = num("--size", 64, 8);
  if (size > 255) {
    console.error("loadtest: --size must be at most 255 (the lean client writes bin8 payloads)");
    process.exit(2);
  }
  return size;
}

/** The flags of the measured phase that pairs and groups share (measureRun). */
function phaseFlags(): { rate: number; duration: number; warmup: number; messages: number; drain: number } {
  return {
    rate: flags["--rate"] !== undefined ? num("--rate", 0, 1) : 0,
    duration: num("--duration", 10, 0.1),
    warmup: num("--warmup", 3),
    messages: flags["--messages"] !== undefined ? num("--messages", 0, 1) : 0,
    drain: num("--drain", 15),
  };
}

/**
 * The measured phase shared by pairs and groups: the workers run their load
 * either until every quota is done (`messages` > 0; given up when nothing
 * moves for `drain` seconds), or for a warm-up and then `duration` seconds
 * between two marks. Server CPU and RSS, the workers' CPU and the server's
 * metrics are sampled at both ends; a progress line goes out every second.
 */
async function measureRun(
  ws: Worker[],
  target: Target,
  o: { messages: number; warmup: number; duration: number; drain: number; optsFor: (i: number) => RunOpts; syscalls: boolean; unit: string },
): Promise<{
  s0: ReturnType<typeof serverSample>;
  s1: ReturnType<typeof serverSample>;
  wc0: number;
  wc1: number;
  windows: WindowStats[];
  m0: Map<string, number> | null;
  m1: Map<string, number> | null;
  sys: ReturnType<typeof startSyscallCount>;
}> {
  const run = () => {
    for (let i = 0; i < ws.length; i++) ws[i]!.send({ cmd: "run", opts: o.optsFor(i) });
  };
  const totals = async () => (await Promise.all(ws.map((w) => w.call({ cmd: "totals" }, "totals")))).map((x) => x.totals);
  if (o.messages > 0) {
    const m0 = await allMetrics(target.http);
    const sys = o.syscalls ? startSyscallCount(target.pid) : null;
    const s0 = serverSample(target.pid);
    const wc0 = workersCpu();
    let finished = false;
    const done = Promise.all(ws.map((w) => w.next("done", 24 * 3600_000))).then(() => (finished = true));
    run();
    // Wait for every quota to complete, or give up when nothing moves for --drain seconds.
    let lastProgress = performance.now();
    let lastCount = -1;
    while (!finished) {
      await Promise.race([done, sleep(1000)]);
      if (finished) break;
      const tt = await totals();
      const count = tt.reduce((a, x) => a + x.delivered + x.receipts + x.acked, 0);
      say(`  sent ${tt.reduce((a, x) => a + x.sent, 0)}, delivered ${tt.reduce((a, x) => a + x.delivered, 0)}`);
      if (count !== lastCount) {
        lastCount = count;
        lastProgress = performance.now();
      } else if (performance.now() - lastProgress > o.drain * 1000) {
        say(`WARNING: no progress for ${o.drain} s; stopping`);
        break;
      }
    }
    const s1 = serverSample(target.pid);
    const wc1 = workersCpu();
    const m1 = await allMetrics(target.http);
    const windows = await Promise.all(ws.map((w) => w.call({ cmd: "stop" }, "stopped")));
    return { s0, s1, wc0, wc1, windows, m0, m1, sys };
  }
  run();
  if (o.warmup > 0) {
    say(`warming up for ${o.warmup} s`);
    await sleep(o.warmup * 1000);
  }
  const marked = ws.map((w) => w.next("marked"));
  const m0 = await allMetrics(target.http);
  const sys = o.syscalls ? startSyscallCount(target.pid) : null;
  const s0 = serverSample(target.pid);
  const wc0 = workersCpu();
  for (const w of ws) w.send({ cmd: "mark" });
  await Promise.all(marked);
  say(`measuring for ${o.duration} s`);
  const endAt = performance.now() + o.duration * 1000;
  let prev = s0;
  let prevDelivered = -1;
  while (performance.now() < endAt) {
    await sleep(Math.min(1000, endAt - performance.now()));
    const s = serverSample(target.pid);
    const delivered = (await totals()).reduce((a, x) => a + x.delivered, 0);
    const dt = (s.t - prev.t) / 1000;
    const rateS = prevDelivered >= 0 ? `${Math.round((delivered - prevDelivered) / dt)} ${o.unit}/s, ` : "";
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
  const s1 = serverSample(target.pid);
  const wc1 = workersCpu();
  const m1 = await allMetrics(target.http);
  const windows = await Promise.all(stopped);
  return { s0, s1, wc0, wc1, windows, m0, m1, sys };
}

async function pairs(): Promise<void> {
  const P = num("--pairs", 10, 1);
  const oneway = flags["--oneway"] === "true";
  const window = num("--window", 16, 1);
  const { rate, duration, warmup, messages, drain } = phaseFlags();
  const size = sizeFlag();
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
  const { s0, s1, wc0, wc1, windows, m0, m1, sys } = await measureRun(ws, target, { messages, warmup, duration, drain, optsFor, syscalls: true, unit: "delivered" });
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
        size, transport, workers: nw, drain_s: drain, mode_server: spawnMode ? "spawn" : "target", server_bin: flags["--server-bin"] ?? null,
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
  const size = sizeFlag();
  const drain = num("--drain", 30);
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
      params: { senders: S, recipients: R, messages: total, window, size, transport, workers: 1, drain_s: drain, mode_server: spawnMode ? "spawn" : "target", server_bin: flags["--server-bin"] ?? null, server_flags: spawnMode ? [...defSf, ...userSf.split(/\s+/).filter(Boolean)] : null },
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

// ---- login-storm, reconnect-storm ------------------------------------------

function backoffFlag(): Backoff {
  const b = flags["--backoff"] ?? "sdk";
  if (b !== "sdk" && b !== "none") {
    console.error("loadtest: --backoff must be sdk or none");
    process.exit(2);
  }
  return b;
}

/** A few logins and quits before the measured phase (JIT, lazily built server state). */
async function warmUp(target: Target, ids: Identity[]): Promise<void> {
  const w = new Worker(1000, flags["--worker-cpus"] ?? "1");
  workers.push(w);
  await w.next("hello", 30_000);
  await w.call({ cmd: "init", target: { host: target.host, port: target.port, ca: target.ca }, ids }, "ready");
  const r = await w.call({ cmd: "login", concurrency: 10, pingInterval: 0 }, "online");
  await w.call({ cmd: "quit_all" }, "quit");
  w.retired = true;
  w.send({ cmd: "exit" });
  await w.proc.exited;
  workers.splice(workers.indexOf(w), 1);
  say(`warm-up: ${r.online} logins, then closed`);
}

/** Sums the per-100-ms login counts of the workers into one timeline. */
function mergeTimelines(ts: number[][]): number[] {
  const out: number[] = [];
  for (const t of ts) t.forEach((n, i) => (out[i] = (out[i] ?? 0) + n));
  return out.map((n) => n ?? 0);
}

async function loginStorm(): Promise<void> {
  const conns = num("--conns", 5000, 1);
  const concurrency = num("--concurrency", 0);
  const backoff = backoffFlag();
  const timeoutS = num("--login-timeout", 10, 0.1);
  const giveUpS = num("--give-up", 120, 1);
  const settle = num("--settle", 2);
  const nw = workerCount(conns);
  const tag = runTag();
  const warmN = Math.min(20, conns);
  const names = [...Array.from({ length: warmN }, (_, i) => `lt${tag}w${i}`), ...Array.from({ length: conns }, (_, i) => `lt${tag}-${i}`)];
  say(`login-storm: ${conns} ${transport} devices log in ${concurrency ? `${concurrency} at a time per worker` : "at the same moment"} over ${nw} worker(s); backoff ${backoff}`);
  const { target, ids } = await setup(names);
  if (spawnMode) pin(process.pid, flags["--worker-cpus"] ?? "1");
  const wt = { host: target.host, port: target.port, ca: target.ca };
  await warmUp(target, ids.slice(0, warmN));
  const ws = startWorkers(nw, "loadtest/storm-worker.ts");
  await Promise.all(ws.map((w) => w.next("hello", 30_000)));
  const slices = split(ids.slice(warmN), nw, 1);
  await Promise.all(ws.map((w, i) => w.call({ cmd: "s_init", target: wt, devices: slices[i]!.map((id) => ({ id, role: "rcpt" as const })) }, "ready")));
  await sleep(1000);
  const m0 = await allMetrics(target.http);
  const at = Date.now() + 300;
  const online = new Array(ws.length).fill(0);
  let lastPrint = 0;
  for (const w of ws) {
    w.onProgress = (p) => {
      online[w.index] = p.online;
      const now = Date.now();
      if (now - lastPrint > 1000) {
        lastPrint = now;
        const n = online.reduce((a, b) => a + b, 0);
        say(`  online ${n}/${conns} after ${((now - at) / 1000).toFixed(1)} s`);
      }
    };
  }
  const res = Promise.all(ws.map((w) => w.call({ cmd: "s_login", at, concurrency, backoff, timeoutMs: timeoutS * 1000, giveUpMs: giveUpS * 1000 }, "s_online", (giveUpS + 60) * 1000)));
  await sleep(Math.max(0, at - Date.now()));
  const before = serverSample(target.pid);
  const wc0 = workersCpu();
  const tcp0 = tcpExt();
  const rs = await res;
  const after = serverSample(target.pid);
  const wc1 = workersCpu();
  const tcp1 = tcpExt();
  const tcpDelta = Object.fromEntries(Object.keys(tcp1).map((k) => [k, tcp1[k]! - (tcp0[k] ?? 0)]));
  const m1 = await allMetrics(target.http);
  const n = rs.reduce((a, r) => a + r.online, 0);
  const failed = rs.reduce((a, r) => a + r.failed, 0);
  const failedAttempts = rs.reduce((a, r) => a + r.failed_attempts, 0);
  const reasons: Record<string, number> = {};
  for (const r of rs) for (const [k, v] of Object.entries(r.reasons)) reasons[k] = (reasons[k] ?? 0) + v;
  const lastAt = Math.max(...rs.map((r) => r.last_at));
  const allS = (lastAt - at) / 1000;
  const lat = summary(merge(rs.map((r) => r.hist)));
  const timeline = mergeTimelines(rs.map((r) => r.timeline));
  // The rate between the 10th and the 90th percentile of completions: the storm's steady rate, without the
  // first SYN-retransmit wait and the tail (a single best 100 ms is bunched by the clients' event loops).
  const h = merge(rs.map((r) => r.hist));
  const p10 = h.getValueAtPercentile(10) / 1000;
  const p90 = h.getValueAtPercentile(90) / 1000;
  h.destroy();
  const steady = p90 > p10 ? Math.round((0.8 * n) / ((p90 - p10) / 1000)) : null;
  const cpu = before.cpu !== null && after.cpu !== null ? after.cpu - before.cpu : null;
  const wallS = (after.t - before.t) / 1000;
  const perS = allS > 0 ? Math.round(n / allS) : 0;
  say(`${n}/${conns} online ${allS.toFixed(2)} s after the start: ${perS} logins/s overall, ${steady ?? "?"}/s between the 10th and the 90th percentile (${p10.toFixed(0)}-${p90.toFixed(0)} ms); failed ${failed}, failed attempts ${failedAttempts}${failedAttempts ? ` ${JSON.stringify(reasons)}` : ""}`);
  say(`listen queue (machine-wide TcpExt deltas): ${JSON.stringify(tcpDelta)}`);
  say(`login latency (start -> ready, retries included): ${fmtLatency(lat)}`);
  say(`logins per 100 ms: ${timeline.join(" ")}`);
  if (cpu !== null) say(`server CPU ${cpu.toFixed(2)} s (${pct(cpu, wallS)}% of one core; kernel ${(after.sys! - before.sys!).toFixed(2)} s): ${Math.round((cpu * 1e6) / Math.max(1, n))} µs per login, ${Math.round(n / Math.max(1e-9, cpu))} logins per server CPU-second`);
  say(`load generator CPU ${(wc1 - wc0).toFixed(2)} s (${pct(wc1 - wc0, wallS)}% of one core); other processes on the machine ${otherCpuPct(before, after)}% of one core`);
  const counters = counterDeltas(m0, m1);
  await sleep(settle * 1000);
  const s2 = serverSample(target.pid);
  const sessions = await metric(target.http, "switchboard_sessions");
  const bytesPerConn = before.rss !== null && s2.rss !== null && n > 0 ? Math.round(((s2.rss - before.rss) * 1024) / n) : null;
  say(`server RSS ${before.rss} KiB before, ${s2.rss} KiB ${settle} s after: ${bytesPerConn} bytes per connection; sessions ${sessions ?? "?"}`);
  if (failed) console.error(`\nloadtest: WARNING: ${failed} devices did not get online within ${giveUpS} s: ${JSON.stringify(reasons)}\n`);
  await finish(
    {
      scenario: "login-storm",
      params: { conns, transport, workers: nw, concurrency, backoff, login_timeout_s: timeoutS, give_up_s: giveUpS, mode_server: spawnMode ? "spawn" : "target", server_bin: flags["--server-bin"] ?? null },
      sent: 0, delivered: 0, lost: 0, duplicates: 0, out_of_order: 0, sent_per_s: 0, delivered_per_s: 0,
      latency_of: "storm start -> ready (connect, hello, auth; retries included)",
      latency_ms: { p50: lat.p50, p90: lat.p90, p99: lat.p99, p999: lat.p999, max: lat.max, mean: lat.mean, count: lat.count },
      logins: { online: n, failed, failed_attempts: failedAttempts, reasons, seconds: round(allS, 3), per_s: perS, steady_per_s: steady, p10_ms: round(p10, 1), p90_ms: round(p90, 1), timeline_100ms: timeline },
      tcp: tcpDelta,
      server: {
        pid: target.pid,
        cpu_s: cpu === null ? null : round(cpu, 2),
        cpu_pct: cpu === null ? null : pct(cpu, wallS),
        cpu_sys_s: before.sys !== null && after.sys !== null ? round(after.sys - before.sys, 2) : null,
        cpu_us_per_login: cpu === null ? null : Math.round((cpu * 1e6) / Math.max(1, n)),
        logins_per_cpu_s: cpu ? Math.round(n / cpu) : null,
        rss_kb_before: before.rss,
        rss_kb: s2.rss,
        bytes_per_conn: bytesPerConn,
        sessions,
        counters,
      },
      client: { cpu_s: round(wc1 - wc0, 2), cpu_pct: pct(wc1 - wc0, wallS), rss_kb: workersRss() },
      other_cpu_pct: otherCpuPct(before, after),
      msgs_per_server_cpu_s: null,
    },
    failed > 0 ? 4 : 0,
  );
}

async function stormStatus(ws: Worker[]): Promise<StormStatus[]> {
  return Promise.all(ws.map((w) => w.call({ cmd: "s_status" }, "s_status")));
}

function sumStatus(st: StormStatus[]) {
  const sum = (f: (s: StormStatus) => number) => st.reduce((a, s) => a + f(s), 0);
  const batch = [0, 1, 2].map((b) => ({
    written: sum((s) => s.batch[b]!.written), sent: sum((s) => s.batch[b]!.sent), delivered: sum((s) => s.batch[b]!.delivered),
    receipts: sum((s) => s.batch[b]!.receipts), total: sum((s) => s.batch[b]!.total),
  }));
  return {
    rcpt: sum((s) => s.rcpt), send: sum((s) => s.send), rcpt_ready: sum((s) => s.rcpt_ready), send_ready: sum((s) => s.send_ready), batch,
    post_cut: sum((s) => s.post_cut), post_cut_total: sum((s) => s.post_cut_total),
    all_back_at: st.every((s) => s.all_back_at > 0 || s.rcpt === 0) ? Math.max(...st.map((s) => s.all_back_at)) : 0,
    all_queued_at: st.every((s) => s.all_queued_at > 0 || s.post_cut_total === 0) ? Math.max(...st.map((s) => s.all_queued_at)) : 0,
    queued_while_offline: sum((s) => s.queued_while_offline), redelivered: sum((s) => s.redelivered), duplicates: sum((s) => s.duplicates),
    out_of_order: sum((s) => s.out_of_order), unknown: sum((s) => s.unknown), errors: sum((s) => s.errors), disconnects: sum((s) => s.disconnects),
    failed_attempts: sum((s) => s.failed_attempts), failed: sum((s) => s.failed),
  };
}

/** Polls the storm workers until `done` holds, printing progress; false when nothing moved for `stallS` seconds. */
async function waitStorm(ws: Worker[], what: string, done: (s: ReturnType<typeof sumStatus>) => boolean, progress: (s: ReturnType<typeof sumStatus>) => string, stallS: number, everyMs = 100): Promise<{ ok: boolean; s: ReturnType<typeof sumStatus> }> {
  let last = "";
  let lastMove = performance.now();
  let lastPrint = performance.now();
  for (;;) {
    const s = sumStatus(await stormStatus(ws));
    if (done(s)) return { ok: true, s };
    const p = progress(s);
    if (p !== last) {
      last = p;
      lastMove = performance.now();
    } else if (performance.now() - lastMove > stallS * 1000) {
      say(`WARNING: ${what}: nothing moved for ${stallS} s (${p})`);
      return { ok: false, s };
    }
    if (performance.now() - lastPrint > 1000) {
      lastPrint = performance.now();
      say(`  ${what}: ${p}`);
    }
    await sleep(everyMs);
  }
}

async function reconnectStorm(): Promise<void> {
  const R = num("--conns", 1000, 1);
  const perSender = num("--per-sender", 50, 1);
  const bm = (flags["--batches"] ?? "2,1,2").split(",").map(Number);
  if (bm.length !== 3 || bm.some((x) => !Number.isInteger(x) || x < 0) || bm[0]! + bm[1]! + bm[2]! < 1) {
    console.error("loadtest: --batches must be three counts A,U,Q (e.g. 2,1,2)");
    process.exit(2);
  }
  const batches = bm as [number, number, number];
  const cut = flags["--cut"] ?? "kernel";
  if (cut !== "kernel" && cut !== "client") {
    console.error("loadtest: --cut must be kernel or client");
    process.exit(2);
  }
  const offline = num("--offline", 3);
  const backoff = backoffFlag();
  const window = num("--window", 16, 1);
  const size = sizeFlag();
  const timeoutS = num("--login-timeout", 10, 0.1);
  const giveUpS = num("--give-up", 120, 1);
  const drain = num("--drain", 60, 1);
  const nw0 = Math.min(workerCount(R + Math.ceil(R / perSender)), R);
  // Senders per worker are rounded up, so count them per worker's share of the recipients.
  const S = Array.from({ length: nw0 }, (_, i) => Math.max(1, Math.ceil((Math.floor(R / nw0) + (i < R % nw0 ? 1 : 0)) / perSender))).reduce((a, b) => a + b, 0);
  const nw = nw0;
  const tag = runTag();
  const rNames = Array.from({ length: R }, (_, i) => `lt${tag}-r${i}`);
  const sNames = Array.from({ length: S }, (_, i) => `lt${tag}-s${i}`);
  say(
    `reconnect-storm: ${R} recipient devices, ${S} senders, per recipient ${batches[0]} acked + ${batches[1]} held unacked at the cut + ${batches[2]} queued while away; ` +
      `cut: ${cut}; recipients away ${offline} s; backoff ${backoff}; ${transport}, ${nw} worker(s)`,
  );
  const { target, ids } = await setup([...rNames, ...sNames]);
  if (cut === "kernel" && !/^[0-9.]+$|:/.test(target.host)) {
    console.error(`loadtest: --cut kernel needs the target as an IP address (ss filters on it), got ${target.host}`);
    return fatal("bad target host for --cut kernel");
  }
  if (spawnMode) pin(process.pid, flags["--worker-cpus"] ?? "1");
  const rIds = split(ids.slice(0, R), nw, 1);
  // Each worker gets ceil(r_w / perSender) senders of its own, so a sender and its recipients share a process (one
  // clock, one place that knows every message's state). That can be more than S in total; provision enough.
  const senderSlices: Identity[][] = [];
  let nextSender = R;
  for (let i = 0; i < nw; i++) {
    const k = Math.max(1, Math.ceil(rIds[i]!.length / perSender));
    senderSlices.push(ids.slice(nextSender, nextSender + k));
    nextSender += k;
  }
  const wt = { host: target.host, port: target.port, ca: target.ca };
  const ws = startWorkers(nw, "loadtest/storm-worker.ts");
  await Promise.all(ws.map((w) => w.next("hello", 30_000)));
  const rsOpts = { batches, window, size };
  await Promise.all(
    ws.map((w, i) =>
      w.call({ cmd: "s_init", target: wt, rs: rsOpts, devices: [...rIds[i]!.map((id) => ({ id, role: "rcpt" as const })), ...senderSlices[i]!.map((id) => ({ id, role: "send" as const }))] }, "ready"),
    ),
  );
  // Phase 1: everybody logs in (not the measured storm).
  const l = await Promise.all(ws.map((w) => w.call({ cmd: "s_login", at: Date.now(), concurrency: 200, backoff, timeoutMs: timeoutS * 1000, giveUpMs: giveUpS * 1000 }, "s_online", (giveUpS + 60) * 1000)));
  const on = l.reduce((a, r) => a + r.online, 0);
  say(`logged in ${on}/${R + S} devices in ${(Math.max(...l.map((r) => r.ms)) / 1000).toFixed(2)} s`);
  if (on < R + S) return fatal(`${R + S - on} logins failed: ${JSON.stringify(l.map((r) => r.reasons))}`);

  // Phase 2: batch 0, acked, with its dlv receipts back at the senders (the server has processed those acks).
  for (const w of ws) w.send({ cmd: "s_batch", b: 0 });
  let r = await waitStorm(ws, "batch 0 (acked)", (s) => s.batch[0]!.receipts === s.batch[0]!.total, (s) => `sent ${s.batch[0]!.sent}, delivered ${s.batch[0]!.delivered}, receipts ${s.batch[0]!.receipts} of ${s.batch[0]!.total}`, drain);
  if (!r.ok) return fatal("batch 0 did not complete");
  // Phase 3: batch 1, delivered and held unacknowledged.
  for (const w of ws) w.send({ cmd: "s_batch", b: 1 });
  r = await waitStorm(ws, "batch 1 (held unacked)", (s) => s.batch[1]!.delivered === s.batch[1]!.total && s.batch[1]!.sent === s.batch[1]!.total, (s) => `sent ${s.batch[1]!.sent}, delivered ${s.batch[1]!.delivered} of ${s.batch[1]!.total}`, drain);
  if (!r.ok) return fatal("batch 1 did not complete");
  const disc0 = r.s.disconnects;
  say(`before the cut: ${r.s.rcpt_ready} recipients and ${r.s.send_ready} senders connected; ${r.s.batch[0]!.total} messages acked, ${r.s.batch[1]!.total} delivered and unacknowledged`);

  // Phase 4: the cut.
  const m0 = await allMetrics(target.http);
  const cutAt = Date.now() + 300;
  const outageEnd = cutAt + offline * 1000;
  await Promise.all(ws.map((w) => w.call({ cmd: "s_arm", cutAt, outageEnd, terminate: cut === "client", backoff, timeoutMs: timeoutS * 1000, giveUpMs: giveUpS * 1000 }, "marked")));
  await sleep(Math.max(0, cutAt - Date.now()));
  const sCut = serverSample(target.pid);
  let cutMs = 0;
  if (cut === "kernel") {
    const t0 = performance.now();
    const p = Bun.spawnSync(["ss", "-K", "-t", "-n", "dst", target.host, "dport", "=", String(target.port)], { stdout: "pipe", stderr: "pipe" });
    cutMs = performance.now() - t0;
    if (p.exitCode !== 0) return fatal(`ss -K failed (status ${p.exitCode}): ${p.stderr.toString().trim()}; it needs root or CAP_NET_ADMIN and a kernel with CONFIG_INET_DIAG_DESTROY; try --cut client`);
    const killed = p.stdout.toString().trim().split("\n").filter((x) => /ESTAB|^tcp/.test(x)).length;
    say(`cut: ss -K destroyed ${killed} sockets in ${cutMs.toFixed(1)} ms`);
  }
  // Batch 2 goes out as soon as each sender is back; the recipients are away.
  for (const w of ws) w.send({ cmd: "s_batch", b: 2 });
  r = await waitStorm(ws, "cut", (s) => s.disconnects - disc0 >= R + S, (s) => `${s.disconnects - disc0} of ${R + S} connections seen closed`, 10, 20);
  const cutSeen = Date.now();
  say(`all ${R + S} connections closed ${cutSeen - cutAt} ms after the cut`);
  r = await waitStorm(ws, "senders back, batch 2 queued", (s) => s.batch[2]!.sent === s.batch[2]!.total && s.send_ready === S, (s) => `senders back ${s.send_ready}/${S}, batch 2 sent ${s.batch[2]!.sent}/${s.batch[2]!.total}`, drain, 50);
  const queuedAt = Date.now();
  say(`senders back and batch 2 acknowledged (sent) ${queuedAt - cutAt} ms after the cut; ${r.s.queued_while_offline} of ${r.s.batch[2]!.total} before the recipients' outage ends`);

  // Phase 5: the recipients come back.
  await sleep(Math.max(0, outageEnd - Date.now()));
  const s0 = serverSample(target.pid);
  const wc0 = workersCpu();
  const tcp0 = tcpExt();
  say(`outage over at +${offline} s: recipients reconnect (${backoff === "sdk" ? "with the SDK's backoff, where their failed attempts left it" : "all at once"})`);
  r = await waitStorm(
    ws, "storm", (s) => s.all_back_at > 0 && s.all_queued_at > 0,
    (s) => `back ${s.rcpt_ready}/${R}, queued delivered ${s.post_cut}/${s.post_cut_total}, failed attempts ${s.failed_attempts}`, drain,
  );
  const s1 = serverSample(target.pid);
  const wc1 = workersCpu();
  const tcp1 = tcpExt();
  const tcpDelta = Object.fromEntries(Object.keys(tcp1).map((k) => [k, tcp1[k]! - (tcp0[k] ?? 0)]));
  const m1 = await allMetrics(target.http);
  const st = r.s;
  const backS = st.all_back_at ? (st.all_back_at - outageEnd) / 1000 : null;
  const queuedS = st.all_queued_at ? (st.all_queued_at - outageEnd) / 1000 : null;
  // Receipts for everything (not needed for the verdict; they show the chain completed).
  const rr = await waitStorm(ws, "receipts", (s) => s.batch.every((b) => b.receipts === b.total), (s) => `receipts ${s.batch.map((b) => b.receipts).join("/")} of ${s.batch.map((b) => b.total).join("/")}`, Math.min(drain, 10), 200);
  const reps = await Promise.all(ws.map((w) => w.call({ cmd: "s_report" }, "s_report")));
  const tot = sumStatus(reps);
  const lost = reps.reduce((a, x) => a + x.lost, 0);
  const notRedelivered = reps.reduce((a, x) => a + x.not_redelivered, 0);
  const lostIds = reps.flatMap((x) => x.lost_ids).slice(0, 10);
  const errSamples = reps.flatMap((x) => x.errors_sample).slice(0, 10);
  const reasons: Record<string, number> = {};
  for (const x of reps) for (const [k, v] of Object.entries(x.reasons)) reasons[k] = (reasons[k] ?? 0) + v;
  const back = summary(merge(reps.map((x) => x.back_hist)));
  const queued = summary(merge(reps.map((x) => x.queued_hist)));
  const cpu = s0.cpu !== null && s1.cpu !== null ? s1.cpu - s0.cpu : null;
  const wallS = (s1.t - s0.t) / 1000;
  const counters = counterDeltas(m0, m1);
  const closes = m0 && m1 ? Object.fromEntries([...m1].filter(([k]) => k.startsWith("switchboard_closes_total")).map(([k, v]) => [k.replace(/^.*reason="([^"]+)".*$/, "$1"), v - (m0.get(k) ?? 0)]).filter(([, v]) => (v as number) > 0)) : null;
  const sentTotal = tot.batch.reduce((a, b) => a + b.sent, 0);
  const deliveredTotal = tot.batch.reduce((a, b) => a + b.delivered, 0);
  const postDelivered = tot.post_cut;
  say(`all ${R} recipients back ${backS === null ? "NEVER" : `${backS.toFixed(2)} s`} after the outage ended (${((st.all_back_at - cutAt) / 1000).toFixed(2)} s after the cut); every queued message delivered ${queuedS === null ? "NEVER" : `${queuedS.toFixed(2)} s`} after it`);
  say(`reconnect time (outage end -> ready): ${fmtLatency(back)}`);
  say(`queued delivery (outage end -> delivered again or first): ${fmtLatency(queued)}`);
  say(`failed attempts ${tot.failed_attempts} ${JSON.stringify(reasons)}; devices given up ${tot.failed}`);
  if (cpu !== null) say(`server CPU in the storm ${cpu.toFixed(2)} s over ${wallS.toFixed(2)} s (${pct(cpu, wallS)}%; kernel ${(s1.sys! - s0.sys!).toFixed(2)} s): ${Math.round((cpu * 1e6) / R)} µs per reconnect incl. its deliveries`);
  say(`load generator CPU ${(wc1 - wc0).toFixed(2)} s; other processes on the machine ${otherCpuPct(s0, s1)}% of one core`);
  if (closes) say(`server closes by reason since the cut: ${JSON.stringify(closes)}`);
  say(`listen queue in the storm (machine-wide TcpExt deltas): ${JSON.stringify(tcpDelta)}`);
  say(`totals: sent ${sentTotal}, delivered ${deliveredTotal}, redelivered (expected: held unacked) ${tot.redelivered}, lost ${lost}, not redelivered ${notRedelivered}, duplicates ${tot.duplicates}, out of order ${tot.out_of_order}, unknown ${tot.unknown}, errors ${tot.errors}; receipts complete ${rr.ok}`);
  const alive = server ? !(await Promise.race([server.proc.exited.then(() => true), sleep(10).then(() => false)])) : true;
  let code = 0;
  if (lost > 0 || notRedelivered > 0) {
    const what = [lost ? `LOST ${lost} MESSAGES THE SERVER HAD ACKNOWLEDGED WITH "sent" (e.g. ${lostIds.join(", ")})` : "", notRedelivered ? `${notRedelivered} ITEMS HELD UNACKNOWLEDGED AT THE CUT WERE NEVER DELIVERED AGAIN` : ""].filter(Boolean).join("; ");
    console.error(`\n!!!!!!!! ${what} !!!!!!!!\n`);
    code = 1;
  } else if (tot.duplicates > 0 || tot.out_of_order > 0) {
    console.error(`\n!!!! INTEGRITY: ${tot.duplicates} duplicate and ${tot.out_of_order} out-of-order deliveries !!!!  ${errSamples.join("; ")}\n`);
    code = 3;
  } else if (!r.ok || tot.failed > 0 || tot.unknown > 0 || tot.errors > 0 || !alive) {
    console.error(`\nloadtest: WARNING: storm incomplete ${!r.ok}, devices given up ${tot.failed}, unknown ${tot.unknown}, errors ${tot.errors}, server alive ${alive}: ${errSamples.join("; ")}\n`);
    code = 4;
  }
  await finish(
    {
      scenario: "reconnect-storm",
      params: { conns: R, senders: S, per_sender: perSender, batches, cut, offline_s: offline, backoff, window, size, transport, workers: nw, login_timeout_s: timeoutS, mode_server: spawnMode ? "spawn" : "target", server_bin: flags["--server-bin"] ?? null },
      sent: sentTotal,
      delivered: deliveredTotal,
      redelivered: tot.redelivered,
      lost,
      not_redelivered: notRedelivered,
      duplicates: tot.duplicates,
      out_of_order: tot.out_of_order,
      unknown: tot.unknown,
      errors: tot.errors,
      batches: tot.batch,
      queued_while_offline: st.queued_while_offline,
      cut: { mode: cut, ss_ms: cut === "kernel" ? round(cutMs, 1) : null, all_closed_ms: cutSeen - cutAt, senders_back_and_queued_ms: queuedAt - cutAt },
      all_back_s: backS === null ? null : round(backS, 3),
      all_back_after_cut_s: st.all_back_at ? round((st.all_back_at - cutAt) / 1000, 3) : null,
      all_queued_delivered_s: queuedS === null ? null : round(queuedS, 3),
      failed_attempts: tot.failed_attempts,
      failed_devices: tot.failed,
      tcp: tcpDelta,
      attempt_failures: reasons,
      // sent: batch 2 over the cut -> every batch-2 `sent` (senders' reconnects included); delivered: deliveries after the outage.
      sent_per_s: Math.round(tot.batch[2]!.total / Math.max(0.001, (queuedAt - cutAt) / 1000)),
      delivered_per_s: queuedS ? Math.round(postDelivered / queuedS) : null,
      latency_of: "outage end -> ready again, per recipient (reconnect time)",
      latency_ms: { p50: back.p50, p90: back.p90, p99: back.p99, p999: back.p999, max: back.max, mean: back.mean, count: back.count },
      queued_delivery_ms: { p50: queued.p50, p90: queued.p90, p99: queued.p99, p999: queued.p999, max: queued.max, count: queued.count },
      server: {
        pid: target.pid,
        cpu_s: cpu === null ? null : round(cpu, 2),
        cpu_pct: cpu === null ? null : pct(cpu, wallS),
        cpu_sys_s: s0.sys !== null && s1.sys !== null ? round(s1.sys - s0.sys, 2) : null,
        cpu_phase: "outage end -> every recipient back and every queued message delivered",
        cpu_us_per_reconnect: cpu === null ? null : Math.round((cpu * 1e6) / R),
        cpu_cut_to_outage_end_s: sCut.cpu !== null && s0.cpu !== null ? round(s0.cpu - sCut.cpu, 2) : null,
        rss_kb: s1.rss,
        alive,
        counters,
        closes,
      },
      client: { cpu_s: round(wc1 - wc0, 2), cpu_pct: pct(wc1 - wc0, wallS), rss_kb: workersRss() },
      other_cpu_pct: otherCpuPct(s0, s1),
      msgs_per_server_cpu_s: cpu ? Math.round(postDelivered / cpu) : null,
      ...(errSamples.length ? { errors_sample: errSamples } : {}),
    },
    code,
  );
}


// ---- http ------------------------------------------------------------------

async function httpScenario(): Promise<void> {
  const paths = (flags["--paths"] ?? "/healthz,/metrics,/readyz").split(",").map((x) => x.trim()).filter(Boolean);
  const connections = num("--connections", 10, 1);
  const pipelining = num("--pipelining", 1, 1);
  const duration = num("--duration", 10, 1);
  const idleConns = num("--idle-conns", 0);
  const { default: autocannon } = await import("autocannon");
  let host: string;
  let port: number;
  let pid: number | null;
  let idle: { target: Target; ids: Identity[] } | null = null;
  if (spawnMode) {
    const tag = runTag();
    idle = await setup(Array.from({ length: idleConns }, (_, i) => `lt${tag}-${i}`));
    host = "127.0.0.1";
    port = idle.target.http!;
    pid = idle.target.pid;
  } else {
    if (idleConns > 0) {
      console.error("loadtest: http --idle-conns needs --spawn (with --target, run an idle load next to it)");
      process.exit(2);
    }
    const [h, portS] = flags["--target"]!.split(/:(?=[^:]*$)/);
    port = Number(portS);
    if (!h || !Number.isInteger(port)) {
      console.error("loadtest: --target must be HOST:PORT (for http: the server's HTTP port)");
      process.exit(2);
    }
    host = h;
    pid = flags["--server-pid"] ? Number(flags["--server-pid"]) : findListener(port);
    if (pid === null) say(`warning: no local process listens on port ${port}; server CPU and RSS will be null`);
  }
  if (spawnMode) pin(process.pid, flags["--worker-cpus"] ?? "1");
  say(`http: ${paths.join(", ")} on ${host}:${port}, ${connections} connections, pipelining ${pipelining}, ${duration} s each${idleConns ? `, with ${idleConns} idle devices logged in` : ""}`);
  if (idle && idleConns > 0) {
    // Idle devices logged in for the whole run: /metrics walks every connection for its gauges.
    const nw = workerCount(idleConns);
    const ws = startWorkers(nw);
    await Promise.all(ws.map((w) => w.next("hello", 30_000)));
    const t = idle.target;
    const slices = split(idle.ids, nw, 1);
    await Promise.all(ws.map((w, i) => w.call({ cmd: "init", target: { host: t.host, port: t.port, ca: t.ca }, ids: slices[i]! }, "ready")));
    const l = await loginAll(ws, idleConns, Math.max(20, Math.floor(400 / nw)), 30);
    say(`${l.online}/${idleConns} idle devices logged in in ${l.seconds.toFixed(2)} s`);
    if (l.failed) return fatal(`${l.failed} idle logins failed: ${JSON.stringify(l.reasons)}`);
  }
  const results: Record<string, any> = {};
  const all = newHistogram();
  let sent = 0, ok = 0, errors = 0, timeouts = 0, non2xx = 0, cpuTotal = 0, secTotal = 0;
  let code = 0;
  for (const path of paths) {
    const url = `http://${host.includes(":") ? `[${host}]` : host}:${port}${path}`;
    let probe: Response;
    try {
      probe = await fetch(url);
      await probe.arrayBuffer();
    } catch (e) {
      return fatal(`GET ${url} failed: ${(e as Error).message}`);
    }
    if (probe.status === 404) {
      say(`${path}: 404 — not served by this server; skipped`);
      results[path] = { served: false };
      continue;
    }
    // 503 means "not ready yet" (/readyz until the server's first end-to-end check has passed): wait for it,
    // up to 30 s, so the run measures the endpoint rather than the server's start-up.
    let readyAfterMs: number | null = null;
    if (probe.status === 503) {
      const t0 = performance.now();
      while (probe.status === 503 && performance.now() - t0 < 30_000) {
        await sleep(200);
        probe = await fetch(url);
        await probe.arrayBuffer();
      }
      readyAfterMs = Math.round(performance.now() - t0);
      say(`${path}: answered 503 at first, ${probe.status} after ${readyAfterMs} ms`);
    }
    const h = newHistogram();
    const s0 = serverSample(pid);
    const own0 = cpuSeconds(process.pid) ?? 0;
    const inst = autocannon({ url, connections, pipelining, duration });
    inst.on("response", (_c: unknown, _status: number, _bytes: number, ms: number) => {
      h.recordValue(Math.max(1, Math.round(ms * 1000)));
    });
    const r: any = await inst;
    const s1 = serverSample(pid);
    const own = (cpuSeconds(process.pid) ?? 0) - own0;
    const wallS = (s1.t - s0.t) / 1000;
    const cpu = s0.cpu !== null && s1.cpu !== null ? s1.cpu - s0.cpu : null;
    const lat = summary(h);
    all.add(h);
    h.destroy();
    const total = r.requests.total as number;
    const res = {
      served: true, status: probe.status, ready_after_ms: readyAfterMs, requests: total, responses_2xx: r["2xx"], non_2xx: r.non2xx, errors: r.errors, timeouts: r.timeouts, resets: r.resets,
      requests_per_s: Math.round(total / wallS), bytes_per_s: Math.round(r.throughput.average),
      latency_ms: { p50: lat.p50, p90: lat.p90, p99: lat.p99, p999: lat.p999, max: lat.max, mean: lat.mean, count: lat.count },
      server: { cpu_s: cpu === null ? null : round(cpu, 2), cpu_pct: cpu === null ? null : pct(cpu, wallS), us_per_request: cpu === null ? null : round((cpu * 1e6) / Math.max(1, total), 1), rss_kb: s1.rss },
      // autocannon runs in this process: when it is near 100 % of its core, the generator is the limit, not the server.
      client: { cpu_s: round(own, 2), cpu_pct: pct(own, wallS) },
      other_cpu_pct: otherCpuPct(s0, s1),
    };
    results[path] = res;
    sent += total;
    ok += r["2xx"];
    errors += r.errors;
    timeouts += r.timeouts;
    non2xx += r.non2xx;
    if (cpu !== null) cpuTotal += cpu;
    secTotal += wallS;
    say(`${path} (${probe.status}): ${res.requests_per_s} requests/s, ${total} requests, non-2xx ${r.non2xx}, errors ${r.errors}, timeouts ${r.timeouts}`);
    say(`  latency: ${fmtLatency(lat)}`);
    if (cpu !== null) say(`  server CPU ${cpu.toFixed(2)} s (${res.server.cpu_pct}%): ${res.server.us_per_request} µs per request; RSS ${s1.rss} KiB; load generator ${res.client.cpu_pct}%; other processes ${res.other_cpu_pct}%`);
    if (r.errors || r.timeouts || r.non2xx) code = 4;
  }
  const lat = summary(all);
  const served = Object.values(results).some((x) => x.served);
  if (!served) code = 4;
  if (code) console.error(`\nloadtest: WARNING: ${errors} errors, ${timeouts} timeouts, ${non2xx} non-2xx answers${served ? "" : ", no path was served"}\n`);
  await finish(
    {
      scenario: "http",
      params: { paths, connections, pipelining, duration_s: duration, idle_conns: idleConns, mode_server: spawnMode ? "spawn" : "target", server_bin: flags["--server-bin"] ?? null },
      // Requests are the "messages" here: sent = requests made, delivered = 2xx answers, lost = requests without an answer.
      sent, delivered: ok, lost: errors + timeouts, duplicates: 0, out_of_order: 0, non_2xx: non2xx,
      sent_per_s: secTotal ? Math.round(sent / secTotal) : 0,
      delivered_per_s: secTotal ? Math.round(ok / secTotal) : 0,
      latency_of: "request -> response (autocannon, all paths)",
      latency_ms: { p50: lat.p50, p90: lat.p90, p99: lat.p99, p999: lat.p999, max: lat.max, mean: lat.mean, count: lat.count },
      paths: results,
      server: { pid, cpu_s: round(cpuTotal, 2), cpu_pct: secTotal ? pct(cpuTotal, secTotal) : null, rss_kb: pid === null ? null : rssKb(pid), bytes_per_conn: null },
      // The noisiest path decides (the matrix drops runs above its --max-other).
      other_cpu_pct: Math.max(0, ...Object.values(results).filter((x) => x.served).map((x) => x.other_cpu_pct as number)),
      msgs_per_server_cpu_s: cpuTotal ? Math.round(sent / cpuTotal) : null,
    },
    code,
  );
}


// ---- groups ----------------------------------------------------------------

/** --spread, while draining: copies still owed over all workers (each worker's `delivered` counts first copies only). */
function spreadUndelivered(ts: Totals[], need: number): number {
  return ts.reduce((a, t) => a + t.sent, 0) * need - ts.reduce((a, t) => a + t.delivered, 0);
}

/**
 * --spread: each message's copies summed over every worker's members, against the M − 1 it owes. A copy
 * missing from a message the server acknowledged with `sent` is lost; one counted for a message its
 * sender never wrote is a stray (an id mix-up, counted as unknown).
 */
function sumCopies(perWorker: SenderCopies[][], need: number): { lost: number; undelivered: number; lostIds: string[]; strays: number } {
  const sum = new Map<number, Uint32Array>();
  const own = new Map<number, SenderCopies>();
  for (const list of perWorker) {
    for (const c of list) {
      const b = Buffer.from(c.copies, "base64");
      const v = new Uint16Array(b.buffer, b.byteOffset, b.length / 2);
      let acc = sum.get(c.s);
      if (!acc || acc.length < v.length) {
        const grown = new Uint32Array(v.length);
        if (acc) grown.set(acc);
        acc = grown;
        sum.set(c.s, acc);
      }
      for (let n = 1; n < v.length; n++) acc[n]! += v[n]!;
      if (c.sent !== undefined) own.set(c.s, c);
    }
  }
  let lost = 0, undelivered = 0, strays = 0;
  const lostIds: string[] = [];
  for (const [s, acc] of sum) {
    const o = own.get(s);
    const sent = o?.sent ?? 0;
    const unacked = new Set(o?.unacked ?? []);
    for (let n = 1; n <= sent; n++) {
      const miss = need - (n < acc.length ? acc[n]! : 0);
      undelivered += miss;
      if (miss > 0 && !unacked.has(n)) {
        lost += miss;
        if (lostIds.length < 10) lostIds.push(`${o!.account}#${n} (${miss} of ${need} members)`);
      }
    }
    for (let n = sent + 1; n < acc.length; n++) strays += acc[n]!;
  }
  return { lost, undelivered, lostIds, strays };
}

async function groupsScenario(): Promise<void> {
  const G = num("--groups", 10, 1);
  const M = num("--members", 10, 2);
  const S = Math.min(num("--senders", 2, 1), M);
  const window = num("--window", 4, 1);
  const { rate, duration, warmup, messages, drain } = phaseFlags();
  const size = sizeFlag();
  if (M > 1024) {
    console.error("loadtest: --members is at most 1024 (groups.max_members of a default server)");
    process.exit(2);
  }
  const conns = G * M;
  const spreadOn = flags["--spread"] !== undefined;
  const nw = spreadOn ? Math.min(workerCount(conns), conns) : Math.min(workerCount(conns), G);
  const perWorker = spreadOn ? G * S + Math.ceil((G * (M - S)) / nw) : Math.ceil(G / nw) * M;
  if (perWorker > 15_000) {
    console.error(`loadtest: a worker would hold ${perWorker} devices (at most 15 000): use more --workers or fewer members`);
    process.exit(2);
  }
  const mode: RunOpts["mode"] = rate > 0 ? "open" : "closed";
  const sendersTotal = G * S;
  const quotaPerSender = messages > 0 ? Math.ceil(messages / sendersTotal) : 0;
  const tag = runTag();
  const names: string[] = [];
  for (let g = 0; g < G; g++) for (let j = 0; j < M; j++) names.push(`lt${tag}-g${g}m${j}`);
  say(
    `groups: ${G} groups of ${M} members, ${S} sender(s) per group, ${mode === "closed" ? `closed loop, window ${window} per sender (until every member's dlv receipt)` : `open loop at ${rate} gmsg/s`}, ` +
      `${messages > 0 ? `${quotaPerSender * sendersTotal} messages` : `${warmup} s warm-up + ${duration} s measured`}, ${size}-byte payloads, ${transport}, ${nw} worker(s)` +
      `${spreadOn ? ", each group's members spread over the workers" : ""}`,
  );
  const { target, ids } = await setup(names);
  if (spawnMode) pin(process.pid, flags["--worker-cpus"] ?? "1");
  const ws = startWorkers(nw, "loadtest/groups-worker.ts");
  await Promise.all(ws.map((w) => w.next("hello", 30_000)));
  const wt = { host: target.host, port: target.port, ca: target.ca };
  // Per worker: its groups' local members, and (--spread) where they sit in their group.
  let groupSlices: Identity[][][];
  let spreads: (GroupSpread | undefined)[] = ws.map(() => undefined);
  /** Groups whose senders (and creator) live in worker i: its share of an open-loop rate. */
  let homed: number[];
  if (spreadOn) {
    // Group g's home is worker g % nw: member 0 (creator) and the senders 0..S-1. The others go round
    // the workers starting after home, so home ends up with the fewest of them.
    const prefix = randomIdPrefix();
    groupSlices = ws.map(() => []);
    const layouts: GroupSpread["layout"][] = ws.map(() => []);
    homed = ws.map(() => 0);
    for (let g = 0; g < G; g++) {
      const gids = ids.slice(g * M, (g + 1) * M);
      const accounts = gids.map((id) => id.account);
      const home = g % nw;
      homed[home]!++;
      const here: { ids: Identity[]; idx: number[] }[] = ws.map(() => ({ ids: [], idx: [] }));
      for (let j = 0; j < M; j++) {
        const w = j < S ? home : (home + 1 + (j - S)) % nw;
        here[w]!.ids.push(gids[j]!);
        here[w]!.idx.push(j);
      }
      for (let i = 0; i < nw; i++) {
        if (here[i]!.ids.length === 0) continue;
        groupSlices[i]!.push(here[i]!.ids);
        layouts[i]!.push({ gi: g, idx: here[i]!.idx, accounts });
      }
    }
    spreads = layouts.map((layout) => ({ prefix, layout }));
  } else {
    const slices = split(ids, nw, M);
    groupSlices = slices.map((sl) => Array.from({ length: sl.length / M }, (_, g) => sl.slice(g * M, (g + 1) * M)));
    homed = groupSlices.map((gs) => gs.length);
  }
  await Promise.all(ws.map((w, i) => w.call({ cmd: "g_init", target: wt, groups: groupSlices[i]!, senders: S, size, ...(spreads[i] ? { spread: spreads[i] } : {}) }, "ready")));
  if (spreadOn) say(`members per worker: ${groupSlices.map((gs) => gs.reduce((a, g) => a + g.length, 0)).join(", ")}`);
  const login = await loginAll(ws, conns, Math.max(20, Math.floor(400 / nw)), 30);
  say(`logged in ${login.online}/${conns} in ${login.seconds.toFixed(2)} s; failed ${login.failed}`);
  if (login.failed) return fatal(`${login.failed} logins failed: ${JSON.stringify(login.reasons)}`);
  const created = await Promise.all(ws.map((w) => w.call({ cmd: "g_create" }, "g_created")));
  const cFailed = created.reduce((a, c) => a + c.failed, 0);
  say(`created ${created.reduce((a, c) => a + c.groups, 0)} groups in ${(Math.max(...created.map((c) => c.ms)) / 1000).toFixed(2)} s${cFailed ? `; FAILED ${cFailed}: ${created.flatMap((c) => c.errors).join("; ")}` : ""}`);
  if (cFailed) return fatal(`${cFailed} groups could not be created (does this server have the groups module? docs/PROTOCOL.md §6.8)`);

  const optsFor = (i: number): RunOpts => ({
    mode, window, size, oneway: false, quotaPerSender, ratePerS: (rate * homed[i]!) / G, measureFromStart: messages > 0,
  });
  const { s0, s1, wc0, wc1, windows, m0, m1 } = await measureRun(ws, target, { messages, warmup, duration, drain, optsFor, syscalls: false, unit: "deliveries" });
  const wallS = (s1.t - s0.t) / 1000;
  const win = {
    sent: windows.reduce((a, w) => a + w.sent, 0), delivered: windows.reduce((a, w) => a + w.delivered, 0),
    acked: windows.reduce((a, w) => a + w.acked, 0), receipts: windows.reduce((a, w) => a + w.receipts, 0),
  };
  const lat = summary(merge(windows.map((w) => w.hist)));
  const latSent = summary(merge(windows.map((w) => w.sent_hist)));
  const latRcpt = summary(merge(windows.map((w) => w.rcpt_hist)));
  const cpu = s0.cpu !== null && s1.cpu !== null ? s1.cpu - s0.cpu : null;
  const counters = counterDeltas(m0, m1);
  say(`measured ${wallS.toFixed(2)} s: ${win.sent} gmsg in (${Math.round(win.sent / wallS)}/s), ${win.acked} sent back, ${win.delivered} deliveries out (${Math.round(win.delivered / wallS)}/s), ${win.receipts} dlv receipts`);
  say(`delivery latency (send -> msg at a member): ${fmtLatency(lat)}`);
  say(`sent latency (send -> sent):                ${fmtLatency(latSent)}`);
  say(`chain latency (send -> last member's dlv):  ${fmtLatency(latRcpt)}`);
  if (cpu !== null) say(`server CPU ${cpu.toFixed(2)} s (${pct(cpu, wallS)}%; kernel ${(s1.sys! - s0.sys!).toFixed(2)} s): ${Math.round(win.delivered / Math.max(1e-9, cpu))} deliveries and ${Math.round(win.sent / Math.max(1e-9, cpu))} gmsg per server CPU-second`);
  say(`load generator CPU ${(wc1 - wc0).toFixed(2)} s (${pct(wc1 - wc0, wallS)}%); other processes on the machine ${otherCpuPct(s0, s1)}% of one core`);
  if (counters) say(`server counters in the measured phase: ${JSON.stringify(counters)}`);
  // Drain: every copy of every acknowledged message must arrive, and every receipt come back.
  const t0 = performance.now();
  let st: Extract<Ev, { ev: "status" }>[] = [];
  for (;;) {
    st = await Promise.all(ws.map((w) => w.call({ cmd: "status" }, "status")));
    // --spread: a worker sees only its members' copies; the whole group's shortfall is Σsent × (M − 1) − Σdelivered.
    const und = spreadOn ? spreadUndelivered(st.map((s) => s.totals), M - 1) : st.reduce((a, s) => a + s.undelivered, 0);
    const norc = st.reduce((a, s) => a + s.no_receipt, 0);
    if ((und === 0 && norc === 0) || performance.now() - t0 > drain * 1000) {
      say(`drained in ${((performance.now() - t0) / 1000).toFixed(2)} s: copies undelivered ${und}, messages without every receipt ${norc}`);
      break;
    }
    await sleep(250);
  }
  const reports = await Promise.all(ws.map((w) => w.call({ cmd: "report" }, "report")));
  const tot: Totals = { ...reports[0]!.totals };
  for (const r of reports.slice(1)) for (const k of Object.keys(tot) as (keyof Totals)[]) tot[k] += r.totals[k];
  let lost = reports.reduce((a, r) => a + r.lost, 0);
  let lostIds = reports.flatMap((r) => r.lost_ids).slice(0, 10);
  let undeliveredEnd = st.reduce((a, s) => a + s.undelivered, 0);
  if (spreadOn) {
    const copies = await Promise.all(ws.map((w) => w.call({ cmd: "g_copies" }, "g_copies")));
    const x = sumCopies(copies.map((c) => c.senders), M - 1);
    lost = x.lost;
    lostIds = x.lostIds;
    undeliveredEnd = x.undelivered;
    tot.unknown += x.strays;
  }
  const errSamples = reports.flatMap((r) => r.errors_sample).slice(0, 10);
  const unackedEnd = st.reduce((a, s) => a + s.unacked, 0);
  const noRcptEnd = st.reduce((a, s) => a + s.no_receipt, 0);
  say(`totals: gmsg sent ${tot.sent}, sent-acked ${tot.acked}, copies delivered ${tot.delivered} (of ${tot.sent * (M - 1)}), receipts ${tot.receipts}, lost copies ${lost}, duplicates ${tot.duplicates}, out of order ${tot.out_of_order}, errors ${tot.errors}, disconnects ${tot.disconnects}`);
  const alive = server ? !(await Promise.race([server.proc.exited.then(() => true), sleep(10).then(() => false)])) : true;
  let code = 0;
  if (lost > 0) {
    console.error(`\n!!!!!!!! LOST ${lost} COPIES OF GROUP MESSAGES THE SERVER HAD ACKNOWLEDGED WITH "sent" !!!!!!!!  e.g. ${lostIds.join(", ")}\n`);
    code = 1;
  } else if (tot.duplicates > 0 || tot.out_of_order > 0) {
    console.error(`\n!!!! INTEGRITY: ${tot.duplicates} duplicate and ${tot.out_of_order} out-of-order deliveries !!!!\n`);
    code = 3;
  } else if (tot.disconnects > 0 || tot.errors > 0 || tot.unknown > 0 || unackedEnd > 0 || noRcptEnd > 0 || undeliveredEnd > 0 || !alive) {
    console.error(`\nloadtest: WARNING: disconnects ${tot.disconnects}, errors ${tot.errors}, unknown ${tot.unknown}, without sent ${unackedEnd}, without every receipt ${noRcptEnd}, copies undelivered ${undeliveredEnd}, server alive ${alive}: ${errSamples.join("; ")}\n`);
    code = 4;
  }
  const l = (s: LatencySummary) => ({ p50: s.p50, p90: s.p90, p99: s.p99, p999: s.p999, max: s.max, mean: s.mean, count: s.count });
  await finish(
    {
      scenario: "groups",
      params: {
        groups: G, members: M, senders_per_group: S, mode, window: mode === "closed" ? window : null, rate: mode === "open" ? rate : null,
        duration_s: messages > 0 ? null : duration, warmup_s: messages > 0 ? 0 : warmup, messages: messages > 0 ? quotaPerSender * sendersTotal : null,
        size, transport, workers: nw, mode_server: spawnMode ? "spawn" : "target", server_bin: flags["--server-bin"] ?? null,
        ...(spreadOn ? { spread: true } : {}),
      },
      // sent = gmsg in; delivered = copies out (each gmsg goes to M - 1 members).
      sent: tot.sent, acked: tot.acked, delivered: tot.delivered, receipts: tot.receipts, lost, duplicates: tot.duplicates, out_of_order: tot.out_of_order,
      unacked_at_end: unackedEnd, undelivered_at_end: undeliveredEnd, no_receipt_at_end: noRcptEnd, errors: tot.errors, disconnects: tot.disconnects,
      measured: { seconds: round(wallS, 3), ...win },
      sent_per_s: Math.round(win.sent / wallS),
      delivered_per_s: Math.round(win.delivered / wallS),
      receipts_per_s: Math.round(win.receipts / wallS),
      latency_of: mode === "open" ? "intended send time -> msg at a member" : "send -> msg at a member",
      latency_ms: l(lat),
      sent_latency_ms: l(latSent),
      chain_latency_ms: l(latRcpt),
      server: {
        pid: target.pid, cpu_s: cpu === null ? null : round(cpu, 2), cpu_pct: cpu === null ? null : pct(cpu, wallS),
        cpu_sys_s: s0.sys !== null && s1.sys !== null ? round(s1.sys - s0.sys, 2) : null, rss_kb: s1.rss, alive, counters,
      },
      client: { cpu_s: round(wc1 - wc0, 2), cpu_pct: pct(wc1 - wc0, wallS), rss_kb: workersRss() },
      other_cpu_pct: otherCpuPct(s0, s1),
      msgs_per_server_cpu_s: cpu ? Math.round(win.delivered / cpu) : null,
      gmsg_per_server_cpu_s: cpu ? Math.round(win.sent / cpu) : null,
      ...(errSamples.length ? { errors_sample: errSamples } : {}),
    },
    code,
  );
}


try {
  if (scenario === "idle") await idle();
  else if (scenario === "offline") await offlineScenario();
  else if (scenario === "login-storm") await loginStorm();
  else if (scenario === "reconnect-storm") await reconnectStorm();
  else if (scenario === "http") await httpScenario();
  else if (scenario === "groups") await groupsScenario();
  else await pairs();
} catch (e) {
  if (!shuttingDown) {
    console.error(`loadtest: ${(e as Error).stack ?? e}`);
    await shutdown();
    console.log(JSON.stringify({ scenario, params: { ...flags }, error: (e as Error).message ?? String(e) }));
    process.exit(5);
  }
}
