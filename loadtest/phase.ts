/**
 * The measured phase shared by pairs and groups, and the flags it takes.
 */
import type { Ev, RunOpts, WindowStats } from "./ipc.ts";
import { UsageError, pct, say, sleep, type Run } from "./run.ts";
import { allMetrics, logSize, serverSample, startSyscallCount, type Sample, type SyscallCount } from "./sample.ts";
import { threadCpu } from "./proc.ts";
import type { FlagRow } from "./scenario.ts";
import type { Target } from "./target.ts";
import { workersCpu, type Worker } from "./workers.ts";

/** --size: payload bytes, at most 255 (the lean client writes bin8 payloads). */
export function sizeFlag(run: Run): number {
  const size = run.num("--size", 64, 8);
  if (size > 255) throw new UsageError("--size must be at most 255 (the lean client writes bin8 payloads)");
  return size;
}

/** The help rows of phaseFlags(). */
export const PHASE_FLAGS: FlagRow[] = [
  ["--rate R", "open loop at R messages/s in total instead (latency from the intended send time)"],
  ["--duration S", "measured seconds (default 10)"],
  ["--warmup S", "seconds of load before measuring (default 3)"],
  ["--messages M", "instead of a duration: M messages in total, measured from the first"],
  ["--size B", "payload bytes (default 64)"],
  ["--drain S", "seconds to wait for outstanding deliveries and receipts at the end (default 15)"],
];

/** The flags of the measured phase that pairs and groups share (measureRun). */
export function phaseFlags(run: Run): { rate: number; duration: number; warmup: number; messages: number; drain: number } {
  return {
    rate: run.flag("--rate") !== undefined ? run.num("--rate", 0, 1) : 0,
    duration: run.num("--duration", 10, 0.1),
    warmup: run.num("--warmup", 3),
    messages: run.flag("--messages") !== undefined ? run.num("--messages", 0, 1) : 0,
    drain: run.num("--drain", 15),
  };
}

export interface Measured {
  s0: Sample;
  s1: Sample;
  wc0: number;
  wc1: number;
  windows: WindowStats[];
  m0: Map<string, number> | null;
  m1: Map<string, number> | null;
  sys: SyscallCount | null;
  /** The server's CPU seconds by thread at both ends (proc.ts threadCpu), and its log's size (sample.ts gcPauses). */
  th0: Map<string, number> | null;
  th1: Map<string, number> | null;
  log0: number | null;
  log1: number | null;
}

async function totals(ws: Worker[]) {
  return (await Promise.all(ws.map((w) => w.call({ cmd: "totals" }, "totals")))).map((x) => x.totals);
}

/**
 * The workers run their load either until every quota is done (`messages`
 * > 0; given up when nothing moves for `drain` seconds), or for a warm-up and
 * then `duration` seconds between two marks. Server CPU and RSS, the workers'
 * CPU and the server's metrics are sampled at both ends; a progress line goes
 * out every second.
 */
export async function measureRun(
  run: Run,
  ws: Worker[],
  target: Target,
  o: { messages: number; warmup: number; duration: number; drain: number; optsFor: (i: number) => RunOpts; syscalls: boolean; unit: string },
): Promise<Measured> {
  const start = () => {
    for (let i = 0; i < ws.length; i++) ws[i]!.send({ cmd: "run", opts: o.optsFor(i) });
  };
  const begin = async () => {
    const m0 = await allMetrics(target.http);
    const sys = o.syscalls ? startSyscallCount(run, target.pid) : null;
    return { m0, sys, s0: serverSample(run, target.pid), wc0: workersCpu(run), th0: target.pid === null ? null : threadCpu(target.pid), log0: logSize(target) };
  };
  /** Samples the end, then collects the windows `stop` asks for (sent before the samples in the timed phase). */
  const end = async (stop: () => Promise<WindowStats[]>) => {
    const s1 = serverSample(run, target.pid);
    const th1 = target.pid === null ? null : threadCpu(target.pid);
    const log1 = logSize(target);
    const wc1 = workersCpu(run);
    const m1 = await allMetrics(target.http);
    return { s1, wc1, m1, th1, log1, windows: await stop() };
  };
  if (o.messages > 0) {
    const b = await begin();
    let finished = false;
    const done = Promise.all(ws.map((w) => w.next("done", 24 * 3600_000))).then(() => (finished = true));
    start();
    // Wait for every quota to complete, or give up when nothing moves for --drain seconds.
    let lastProgress = performance.now();
    let lastCount = -1;
    while (!finished) {
      await Promise.race([done, sleep(1000)]);
      if (finished) break;
      const tt = await totals(ws);
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
    return { ...b, ...(await end(() => Promise.all(ws.map((w) => w.call({ cmd: "stop" }, "stopped"))))) };
  }
  start();
  if (o.warmup > 0) {
    say(`warming up for ${o.warmup} s`);
    await sleep(o.warmup * 1000);
  }
  const marked = ws.map((w) => w.next("marked"));
  const b = await begin();
  for (const w of ws) w.send({ cmd: "mark" });
  await Promise.all(marked);
  say(`measuring for ${o.duration} s`);
  const endAt = performance.now() + o.duration * 1000;
  let prev = b.s0;
  let prevDelivered = -1;
  while (performance.now() < endAt) {
    await sleep(Math.min(1000, endAt - performance.now()));
    const s = serverSample(run, target.pid);
    const delivered = (await totals(ws)).reduce((a, x) => a + x.delivered, 0);
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
  return { ...b, ...(await end(() => Promise.all(stopped))) };
}

/**
 * Polls the workers' `status` every 250 ms until `settled` holds or `drain`
 * seconds have passed; `line` says how it ended. Returns the last statuses.
 */
export async function drainStatus(
  ws: Worker[],
  drain: number,
  settled: (st: Extract<Ev, { ev: "status" }>[]) => boolean,
  line: (st: Extract<Ev, { ev: "status" }>[], seconds: string) => string,
): Promise<Extract<Ev, { ev: "status" }>[]> {
  const t0 = performance.now();
  for (;;) {
    const st = await Promise.all(ws.map((w) => w.call({ cmd: "status" }, "status")));
    if (settled(st) || performance.now() - t0 > drain * 1000) {
      say(line(st, ((performance.now() - t0) / 1000).toFixed(2)));
      return st;
    }
    await sleep(250);
  }
}
