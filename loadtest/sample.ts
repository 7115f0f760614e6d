/**
 * What the coordinator reads around a measured phase: the server's CPU and
 * RSS from /proc, the machine's busy time (for the noise indicator), the
 * server's /metrics, and optionally its syscalls (perf stat).
 */
import type { Subprocess } from "bun";
import { closeSync, openSync, readSync, statSync } from "node:fs";
import type { Target } from "./target.ts";
import { cpuSeconds, cpuSplit, machineBusySeconds, rssKb } from "./proc.ts";
import { round, say, type Run } from "./run.ts";
import { workersCpu } from "./workers.ts";

export interface Sample {
  /** Server CPU seconds (user + sys), null without a server pid. */
  cpu: number | null;
  sys: number | null;
  rss: number | null;
  /** performance.now() */
  t: number;
  /** Busy seconds of the whole machine. */
  machine: number;
  /** CPU seconds of this process and its workers. */
  own: number;
}

export function serverSample(run: Run, pid: number | null): Sample {
  const split = pid === null ? null : cpuSplit(pid);
  return {
    cpu: split ? split.user + split.sys : null, sys: split ? split.sys : null, rss: pid === null ? null : rssKb(pid), t: performance.now(),
    machine: machineBusySeconds(), own: (cpuSeconds(process.pid) ?? 0) + workersCpu(run),
  };
}

/** Server CPU seconds between two samples (null without a server pid). */
export function cpuDelta(a: Sample, b: Sample): number | null {
  return a.cpu !== null && b.cpu !== null ? b.cpu - a.cpu : null;
}

/** Server kernel CPU seconds between two samples, rounded for the result line. */
export function sysDelta(a: Sample, b: Sample): number | null {
  return a.sys !== null && b.sys !== null ? round(b.sys - a.sys, 2) : null;
}

/**
 * CPU the rest of the machine used during a phase (other processes: the
 * machine is shared), in % of one core: the noise indicator of a run.
 */
export function otherCpuPct(a: Sample, b: Sample): number {
  const other = b.machine - a.machine - (b.own - a.own) - ((b.cpu ?? 0) - (a.cpu ?? 0));
  return Math.max(0, Math.round((other / ((b.t - a.t) / 1000)) * 1000) / 10);
}

/** Every sample of the server's /metrics, by its full name with labels. */
export async function allMetrics(http: number | null): Promise<Map<string, number> | null> {
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

/** One sample of the server's /metrics (an unlabelled gauge or counter). */
export async function metric(http: number | null, name: string): Promise<number | null> {
  const m = await allMetrics(http);
  return m?.get(name) ?? null;
}

const COUNTERS = [
  "switchboard_frames_in_total", "switchboard_frames_out_total", "switchboard_bytes_in_total", "switchboard_bytes_out_total",
  "switchboard_deliveries_pushed_total", "switchboard_deliveries_acked_total", "switchboard_messages_accepted_total",
  "switchboard_queue_commits_total", "switchboard_queue_rows_written_total", "switchboard_queue_write_back_hits_total",
  "switchboard_dedup_released_total", "switchboard_inbound_held_total",
];

/** The counters that matter for a load, as deltas between two /metrics readings, without the prefix and _total. */
export function counterDeltas(a: Map<string, number> | null, b: Map<string, number> | null): Record<string, number> | null {
  if (!a || !b) return null;
  const out: Record<string, number> = {};
  for (const k of COUNTERS) if (b.has(k)) out[k.replace(/^switchboard_/, "").replace(/_total$/, "")] = (b.get(k) ?? 0) - (a.get(k) ?? 0);
  return out;
}

/** The server's own group-commit durations (a summary since it started, in ms): long commits stall its event loop. */
export function commitMs(m: Map<string, number> | null): { p50: number; p99: number; p999: number } | null {
  const q = (x: string) => m?.get(`switchboard_queue_commit_seconds{quantile="${x}"}`);
  if (!m || q("0.5") === undefined) return null;
  const commit = { p50: round(q("0.5")! * 1000, 3), p99: round(q("0.99")! * 1000, 3), p999: round(q("0.999")! * 1000, 3) };
  say(`server group commit duration (since start): p50 ${commit.p50} ms, p99 ${commit.p99} ms, p99.9 ${commit.p999} ms`);
  return commit;
}

export type SyscallCount = { stop: () => Promise<Record<string, number> | null> };

/** `perf stat` on the server's syscalls for the measured phase (--syscalls); null when perf is missing. */
export function startSyscallCount(run: Run, pid: number | null): SyscallCount | null {
  if (pid === null || !run.bool("--syscalls")) return null;
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

/** The size of a spawned server's log now (its GC lines between two sizes are a phase's: gcPauses). */
export function logSize(target: Target): number | null {
  try {
    return target.log === undefined ? null : statSync(target.log).size;
  } catch {
    return null;
  }
}

export interface GcPauses {
  n: number;
  totalMs: number;
  p50: number;
  p99: number;
  max: number;
  /** Pauses longer than 1 and 2 ms, and the time in those longer than 2 ms. */
  over1: number;
  over2: number;
  over2Ms: number;
}

/**
 * The stop-the-world pauses JSC logged (BUN_JSC_logGC=1, --server-gc-log) between two sizes of the server's log:
 * each increment of a collection prints its pause as ` p=<ms>ms`. Null when the log has no GC line there.
 */
export function gcPauses(path: string, from: number, to: number): GcPauses | null {
  const buf = new Uint8Array(Math.max(0, to - from));
  const fd = openSync(path, "r");
  try {
    readSync(fd, buf, 0, buf.length, from);
  } finally {
    closeSync(fd);
  }
  const ps = [...new TextDecoder().decode(buf).matchAll(/ p=([0-9.]+)ms/g)].map((m) => Number(m[1])).sort((a, b) => a - b);
  if (ps.length === 0) return null;
  const q = (f: number) => ps[Math.min(ps.length - 1, Math.floor(f * ps.length))]!;
  const over2 = ps.filter((p) => p > 2);
  return {
    n: ps.length, totalMs: round(ps.reduce((a, b) => a + b, 0), 1), p50: round(q(0.5), 2), p99: round(q(0.99), 2), max: round(ps.at(-1)!, 2),
    over1: ps.filter((p) => p > 1).length, over2: over2.length, over2Ms: round(over2.reduce((a, b) => a + b, 0), 1),
  };
}

/** CPU seconds of each kind of server thread between two readings (proc.ts threadCpu), largest first; a thread that ended is left out. */
export function threadDeltas(a: Map<string, number> | null, b: Map<string, number> | null): Record<string, number> | null {
  if (!a || !b) return null;
  const d: [string, number][] = [];
  for (const [k, v] of b) if (v - (a.get(k) ?? 0) > 0) d.push([k, round(v - (a.get(k) ?? 0), 2)]);
  return Object.fromEntries(d.sort((x, y) => y[1] - x[1]));
}
