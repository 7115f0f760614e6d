/**
 * The worker processes of a run (loadtest/worker.ts, storm-worker.ts,
 * groups-worker.ts), driven over Bun IPC with the messages of ./ipc.ts, and
 * what the coordinator does with all of them at once: start them, split the
 * identities over them, log everybody in, read their CPU and RSS.
 */
import { join } from "node:path";
import type { Subprocess } from "bun";
import type { Cmd, Ev } from "./ipc.ts";
import { BUN, ROOT, cpuSeconds, rssKb } from "./proc.ts";
import { FatalError, UsageError, pct, round, say, type Run } from "./run.ts";
import type { Identity } from "./setup.ts";
import { merge, summary } from "./stats.ts";
import type { Target } from "./target.ts";

export class Worker {
  proc: Subprocess;
  pid = 0;
  private queue: Ev[] = [];
  private waiters: { ev: string; resolve: (e: Ev) => void }[] = [];
  onProgress: ((e: Extract<Ev, { ev: "progress" }>) => void) | null = null;
  exited = false;
  /** Told to exit (a warm-up worker): its exit is not a failure. */
  retired = false;

  constructor(
    private readonly run: Run,
    readonly index: number,
    cpus: string,
    script = "loadtest/worker.ts",
  ) {
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
      if (!this.retired) run.fail(new FatalError(`worker ${this.index} exited unexpectedly (status ${code})`));
    });
  }

  private receive(m: Ev): void {
    if (m.ev === "progress") return this.onProgress?.(m);
    if (m.ev === "fatal") return this.run.fail(new FatalError(`worker ${this.index}: ${m.message}`));
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

/** Starts `n` workers of `script` on --worker-cpus and waits for each one's hello. */
export async function startWorkers(run: Run, n: number, script?: string): Promise<Worker[]> {
  const ws = Array.from({ length: n }, (_, i) => new Worker(run, i, run.workerCpus, script));
  run.workers = ws;
  await Promise.all(ws.map((w) => w.next("hello", 30_000)));
  return ws;
}

/** The target as the workers' `init` commands take it. */
export function wireTarget(t: Target): { host: string; port: number; ca?: string; ws?: boolean } {
  return { host: t.host, port: t.port, ca: t.ca, ws: t.ws };
}

/** Splits items over `n` workers; `unit` keeps groups of that many (a pair, a group's members) together. */
export function split<T>(items: T[], n: number, unit: number): T[][] {
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

/** --workers, or one worker per 10 000 connections; at most 15 000 each (20 000 open files per process). */
export function workerCount(run: Run, conns: number): number {
  const n = run.flag("--workers") ? run.num("--workers", 1, 1) : Math.max(1, Math.ceil(conns / 10_000));
  if (conns / n > 15_000) {
    throw new UsageError(`${conns} connections over ${n} workers is more than 15 000 per worker (20 000 open files per process); use --workers ${Math.ceil(conns / 15_000)}`);
  }
  return n;
}

/** --concurrency, or 400 logins in flight spread over the workers (at least 20 each). */
export function loginConcurrency(run: Run, nw: number): number {
  return run.flag("--concurrency") ? run.num("--concurrency", 1, 1) : Math.max(20, Math.floor(400 / nw));
}

export function workersCpu(run: Run): number {
  let s = 0;
  for (const w of run.workers) s += cpuSeconds(w.pid) ?? 0;
  return s;
}

export function workersRss(run: Run): number {
  let s = 0;
  for (const w of run.workers) s += rssKb(w.pid) ?? 0;
  return s;
}

/** Adds up per-reason counts from several workers. */
export function mergeCounts(all: Record<string, number>[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of all) for (const [k, v] of Object.entries(r)) out[k] = (out[k] ?? 0) + v;
  return out;
}

/** Prints the devices online over all workers (from their progress events) at most once a second, as `line` says. */
export function printProgress(ws: Worker[], line: (online: number) => string): void {
  const online = new Array(ws.length).fill(0);
  let lastPrint = 0;
  for (const w of ws) {
    w.onProgress = (p) => {
      online[w.index] = p.online;
      const now = performance.now();
      if (now - lastPrint > 1000) {
        lastPrint = now;
        say(line(online.reduce((a, b) => a + b, 0)));
      }
    };
  }
}

/** Logs every worker's devices in, printing progress; returns the merged result. */
export async function loginAll(ws: Worker[], total: number, concurrency: number, pingInterval: number, confirm = true) {
  const t0 = performance.now();
  printProgress(ws, (n) => {
    const s = (performance.now() - t0) / 1000;
    return `  online ${n}/${total} after ${s.toFixed(1)} s (${Math.round(n / s)}/s)`;
  });
  const res = await Promise.all(ws.map((w) => w.call({ cmd: "login", concurrency, pingInterval, confirm }, "online")));
  const seconds = (performance.now() - t0) / 1000;
  const n = res.reduce((a, r) => a + r.online, 0);
  const failed = res.reduce((a, r) => a + r.failed, 0);
  const reasons = mergeCounts(res.map((r) => r.reasons));
  const hist = merge(res.map((r) => r.hist));
  return { online: n, failed, seconds, reasons, latency: summary(hist) };
}

/** `init` on every worker with its slice of the identities. */
export async function initAll(ws: Worker[], target: Target, slices: Identity[][]): Promise<void> {
  const wt = wireTarget(target);
  await Promise.all(ws.map((w, i) => w.call({ cmd: "init", target: wt, ids: slices[i]! }, "ready")));
}

/** A load cannot be measured with devices missing: failed logins end the run. */
export function requireLogins(login: { failed: number; reasons: Record<string, number> }, what = "logins"): void {
  if (login.failed) throw new FatalError(`${login.failed} ${what} failed: ${JSON.stringify(login.reasons)}`);
}

/**
 * A few logins and quits before the measured phase (JIT, lazily built server
 * state), by `w`, or by a worker of its own that exits afterwards.
 */
export async function warmUp(run: Run, target: Target, ids: Identity[], w?: Worker, concurrency = 10): Promise<void> {
  const own = w === undefined;
  if (own) {
    w = new Worker(run, 1000, run.workerCpus);
    run.workers.push(w);
    await w.next("hello", 30_000);
  }
  await w!.call({ cmd: "init", target: wireTarget(target), ids }, "ready");
  const r = await w!.call({ cmd: "login", concurrency, pingInterval: 0 }, "online");
  await w!.call({ cmd: "quit_all" }, "quit");
  if (own) {
    w!.retired = true;
    w!.send({ cmd: "exit" });
    await w!.proc.exited;
    run.workers.splice(run.workers.indexOf(w!), 1);
  }
  say(`warm-up: ${r.online} logins, then closed`);
}

/** The load generator's side of a result line: the workers' CPU over a phase of `wallS` seconds, and their RSS now. */
export function clientJson(run: Run, cpu: number, wallS: number): { cpu_s: number; cpu_pct: number; rss_kb: number } {
  return { cpu_s: round(cpu, 2), cpu_pct: pct(cpu, wallS), rss_kb: workersRss(run) };
}
