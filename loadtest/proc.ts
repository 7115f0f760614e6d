/**
 * Process plumbing for the load generator: spawning a pinned server from
 * source, reading a process's CPU time and RSS from /proc, and finding the
 * process that listens on a port (for --target).
 */
import type { Subprocess } from "bun";
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { dirname, join, resolve } from "node:path";

export const ROOT = resolve(import.meta.dir, "..");
export const BUN = process.execPath;

let clkTck = 0;
/** Clock ticks per second (getconf CLK_TCK), for /proc/PID/stat. */
export function clockTicks(): number {
  if (clkTck) return clkTck;
  try {
    const r = Bun.spawnSync(["getconf", "CLK_TCK"]);
    clkTck = Number(r.stdout.toString().trim()) || 100;
  } catch {
    clkTck = 100;
  }
  return clkTck;
}

/** utime + stime of a process (all its threads), in seconds; null if it is gone. */
export function cpuSeconds(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may contain spaces: split after its closing parenthesis.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    return (Number(fields[11]) + Number(fields[12])) / clockTicks();
  } catch {
    return null;
  }
}

/** utime and stime separately, in seconds (user space vs kernel: syscalls, TCP). */
export function cpuSplit(pid: number): { user: number; sys: number } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return { user: Number(fields[11]) / clockTicks(), sys: Number(fields[12]) / clockTicks() };
  } catch {
    return null;
  }
}

/**
 * CPU seconds of each thread of `pid` by what it is: "main" (the event loop), and the others by their name (Bun's
 * commit Worker thread is "Worker", JSC's compiler threads "JITWorker", its GC's "Heap Helper"...). Null without /proc.
 */
export function threadCpu(pid: number): Map<string, number> | null {
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return null;
  }
  const out = new Map<string, number>();
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      const name = Number(tid) === pid ? "main" : stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      out.set(name, (out.get(name) ?? 0) + (Number(f[11]) + Number(f[12])) / clockTicks());
    } catch {} // a thread that ended meanwhile
  }
  return out;
}

/** CPU seconds the whole machine spent busy (all CPUs, /proc/stat), for telling our load from other processes'. */
export function machineBusySeconds(): number {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal ...
  const busy = line[0]! + line[1]! + line[2]! + line[5]! + line[6]! + line[7]!;
  return busy / clockTicks();
}

/**
 * TCP counters of the whole machine (/proc/net/netstat, TcpExt) that tell
 * what a connection storm did to the listen queue: ListenOverflows and
 * ListenDrops (SYNs or handshakes dropped because the accept queue was full:
 * the client retransmits its SYN after 1 s, then 3 s, ...), SyncookiesSent,
 * TCPReqQFullDrop. Machine-wide: other processes' connections count too.
 */
export function tcpExt(): Record<string, number> {
  const lines = readFileSync("/proc/net/netstat", "utf8").split("\n").filter((l) => l.startsWith("TcpExt:"));
  const out: Record<string, number> = {};
  if (lines.length < 2) return out;
  const k = lines[0]!.split(/\s+/).slice(1);
  const v = lines[1]!.split(/\s+/).slice(1);
  for (const name of ["ListenOverflows", "ListenDrops", "SyncookiesSent", "TCPReqQFullDrop", "TCPReqQFullDoCookies", "TCPBacklogDrop"]) {
    const i = k.indexOf(name);
    if (i >= 0) out[name] = Number(v[i]);
  }
  return out;
}

/** VmRSS of a process in KiB; null if it is gone. */
export function rssKb(pid: number): number | null {
  try {
    const m = readFileSync(`/proc/${pid}/status`, "utf8").match(/^VmRSS:\s+(\d+)\s+kB/m);
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

export function cpusAllowed(pid: number): string | null {
  try {
    return readFileSync(`/proc/${pid}/status`, "utf8").match(/^Cpus_allowed_list:\s*(\S+)/m)?.[1] ?? null;
  } catch {
    return null;
  }
}

/** Pins a running process (all its threads) to a CPU list such as "1". Best effort. */
export function pin(pid: number, cpus: string): boolean {
  const r = Bun.spawnSync(["taskset", "-a", "-c", "-p", cpus, String(pid)], { stdout: "ignore", stderr: "ignore" });
  return r.exitCode === 0;
}

/** The pid of the process with a listening TCP socket on `port` (loopback or any), via /proc. */
export function findListener(port: number): number | null {
  const inodes = new Set<string>();
  for (const f of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    if (!existsSync(f)) continue;
    for (const line of readFileSync(f, "utf8").split("\n").slice(1)) {
      const c = line.trim().split(/\s+/);
      if (c.length < 10) continue;
      const localPort = parseInt(c[1]!.split(":")[1]!, 16);
      if (localPort === port && c[3] === "0A") inodes.add(c[9]!); // 0A = LISTEN
    }
  }
  if (inodes.size === 0) return null;
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${d}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const l = readlinkSync(`/proc/${d}/fd/${fd}`);
        const m = l.match(/^socket:\[(\d+)\]$/);
        if (m && inodes.has(m[1]!)) return Number(d);
      } catch {}
    }
  }
  return null;
}

export interface SpawnedServer {
  proc: Subprocess;
  pid: number;
  tcp: number;
  tls: number;
  /** The WebSocket port (ws.port, always opened here: `--transport ws`). */
  ws: number;
  http: number;
  dataDir: string;
  logPath: string;
}

/**
 * Whether the server tree at `main` knows `ws.port`: a server from before the WebSocket transport (e.g. 3337863,
 * the baseline of issue 20's A/B) refuses the unknown flag `--ws-port`, so an A/B against it needs it left out.
 */
function hasWsPort(main: string, bin?: string): boolean {
  if (bin) return true;
  const config = join(dirname(resolve(main)), "../core/config.ts");
  return !existsSync(config) || readFileSync(config, "utf8").includes('"ws.port"');
}

/**
 * Starts `bun src/cli/main.ts serve` (or the compiled binary `bin`, e.g.
 * dist/switchboard from `npm run build`) on ephemeral ports, pinned with
 * taskset when `cpus` is given, and waits for its `listening` line. A
 * compiled binary takes bun's own flags (`bunFlags`, e.g. --cpu-prof) from
 * the BUN_OPTIONS environment variable.
 */
export async function spawnServer(
  dataDir: string, cpus: string | null, extra: string[] = [], bunFlags: string[] = [], main = join(ROOT, "src/cli/main.ts"), bin?: string,
  /** More environment for the server alone (e.g. BUN_JSC_logGC: --server-gc-log). */
  moreEnv: Record<string, string> = {},
): Promise<SpawnedServer> {
  // The log goes into the data directory: it must exist before the spawn (else a confusing ENOENT naming bun itself).
  mkdirSync(dataDir, { recursive: true });
  const logPath = join(dataDir, "server.log");
  if (bin && !existsSync(bin)) throw new Error(`server binary ${bin} does not exist; build it with \`npm run build\` (writes dist/switchboard)`);
  const env = { ...process.env, ...(bin && bunFlags.length ? { BUN_OPTIONS: bunFlags.join(" ") } : {}), ...moreEnv };
  const cmd = [
    ...(bin ? [resolve(bin)] : [BUN, ...bunFlags, resolve(main)]), "serve", "--data-dir", dataDir,
    "--tcp-port", "0", "--tls-port", "0", ...(hasWsPort(main, bin) ? ["--ws-port", "0"] : []), "--http-port", "0", "--log-level", "warn",
    // Idle load connections ping every `pi` seconds anyway; a long idle timeout keeps a slow setup from being reaped.
    "--timeouts-idle", "86400",
    ...extra,
  ];
  const proc = Bun.spawn(cpus ? ["taskset", "-c", cpus, ...cmd] : cmd, {
    cwd: ROOT,
    env,
    stdout: "pipe",
    stderr: Bun.file(logPath),
    stdin: "ignore",
  });
  const reader = (proc.stdout as ReadableStream<Uint8Array>).getReader();
  const dec = new TextDecoder();
  let buf = "";
  const deadline = Date.now() + 30_000;
  while (!buf.includes("\n")) {
    const r = await Promise.race([reader.read(), Bun.sleep(Math.max(1, deadline - Date.now())).then(() => null)]);
    if (r === null) throw new Error(`server did not report listening within 30 s; see ${logPath}`);
    if (r.done) {
      const log = existsSync(logPath) ? readFileSync(logPath, "utf8").slice(-2000) : "";
      throw new Error(`server exited before listening (exit ${await proc.exited}):\n${log}`);
    }
    buf += dec.decode(r.value);
  }
  reader.releaseLock();
  const line = JSON.parse(buf.split("\n")[0]!);
  // taskset execs the server, so the pid is the same; the line's own pid is authoritative anyway.
  const pid = typeof line.pid === "number" ? line.pid : proc.pid;
  return { proc, pid, tcp: line.tcp, tls: line.tls, ws: line.ws, http: line.http, dataDir, logPath };
}
