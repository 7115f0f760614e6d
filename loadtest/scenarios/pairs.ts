/** `pairs`: P pairs of devices message each other with the full receipt chain; throughput, latency, integrity. */
import { latencyJson, lostBanner, sumTotals, sumWindows, verdict } from "../accounting.ts";
import type { RunOpts } from "../ipc.ts";
import { PHASE_FLAGS, drainStatus, measureRun, phaseFlags, sizeFlag } from "../phase.ts";
import { pin } from "../proc.ts";
import { pct, round, say, type Outcome, type Run } from "../run.ts";
import { commitMs, counterDeltas, cpuDelta, gcPauses, otherCpuPct, sysDelta, threadDeltas } from "../sample.ts";
import type { Scenario } from "../scenario.ts";
import { runTag } from "../setup.ts";
import { fmtLatency } from "../stats.ts";
import { setup } from "../target.ts";
import { clientJson, initAll, loginAll, loginConcurrency, requireLogins, split, startWorkers, workerCount } from "../workers.ts";

/** Δhits / (Δhits + Δrows written): the share of queue items acknowledged before their group commit. */
function writeBackRate(c: Record<string, number> | null): number | null {
  if (!c || c.queue_write_back_hits === undefined || c.queue_rows_written === undefined) return null;
  const d = c.queue_write_back_hits + c.queue_rows_written;
  return d > 0 ? c.queue_write_back_hits / d : null;
}

async function pairs(run: Run): Promise<Outcome> {
  const P = run.num("--pairs", 10, 1);
  const oneway = run.bool("--oneway");
  const window = run.num("--window", 16, 1);
  const { rate, duration, warmup, messages, drain } = phaseFlags(run);
  const size = sizeFlag(run);
  // off: the devices do not confirm `sent` (§6.2), so every message leaves an `accepted` row (the dedup state's A/B).
  const confirm = run.choice("--confirm", "on", ["on", "off"] as const) === "on";
  const transport = run.transport;
  const conns = 2 * P;
  const nw = Math.min(workerCount(run, conns), P);
  const concurrency = loginConcurrency(run, nw);
  const sendersTotal = oneway ? P : 2 * P;
  const mode: RunOpts["mode"] = rate > 0 ? "open" : "closed";
  const quotaPerSender = messages > 0 ? Math.ceil(messages / sendersTotal) : 0;
  const tag = runTag();
  const names: string[] = [];
  for (let i = 0; i < P; i++) names.push(`lt${tag}-a${i}`, `lt${tag}-b${i}`);
  say(
    `pairs: ${P} pairs (${oneway ? "one way" : "both ways"}), ${mode === "closed" ? `closed loop, window ${window} per sender` : `open loop at ${rate} msgs/s`}, ` +
      `${messages > 0 ? `${quotaPerSender * sendersTotal} messages` : `${warmup} s warm-up + ${duration} s measured`}, ${size}-byte payloads, ${transport}, ${nw} worker(s)${confirm ? "" : ", sent not confirmed"}`,
  );
  const { target, ids } = await setup(run, names);
  if (run.spawnMode) pin(process.pid, run.workerCpus);
  const ws = await startWorkers(run, nw);
  const slices = split(ids, nw, 2);
  await initAll(ws, target, slices);
  const login = await loginAll(ws, conns, concurrency, 30, confirm);
  say(`logged in ${login.online}/${conns} in ${login.seconds.toFixed(2)} s; failed ${login.failed}`);
  requireLogins(login);

  const optsFor = (i: number): RunOpts => ({
    mode, window, size, oneway, quotaPerSender,
    ratePerS: (rate * slices[i]!.length) / ids.length,
    measureFromStart: messages > 0,
  });
  const { s0, s1, wc0, wc1, windows, m0, m1, sys, th0, th1, log0, log1 } = await measureRun(run, ws, target, { messages, warmup, duration, drain, optsFor, syscalls: true, unit: "delivered" });
  const syscalls = sys ? await sys.stop() : null;
  const counters = counterDeltas(m0, m1);
  const wallS = (s1.t - s0.t) / 1000;
  const { counts: win, delivery: lat, sent: latSent, receipt: latRcpt, lag } = sumWindows(windows);
  const serverCpu = cpuDelta(s0, s1);
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
  // Where the server's CPU went by thread: the event loop ("main"), the commit Worker ("Worker"), JSC's compiler and GC.
  const threads = threadDeltas(th0, th1);
  if (threads) say(`server CPU seconds by thread in the measured phase: ${JSON.stringify(threads)}`);
  const gc = target.log !== undefined && log0 !== null && log1 !== null && run.bool("--server-gc-log") ? gcPauses(target.log, log0, log1) : null;
  if (gc) {
    say(
      `server GC pauses in the measured phase: ${gc.n}, ${gc.totalMs} ms in all (${pct(gc.totalMs / 1000, wallS)}% of the time); p50 ${gc.p50} ms, p99 ${gc.p99} ms, ` +
        `max ${gc.max} ms; ${gc.over1} over 1 ms, ${gc.over2} over 2 ms (${gc.over2Ms} ms)`,
    );
  }
  const commit = commitMs(m1);
  const wbRate = writeBackRate(counters);
  if (wbRate !== null) say(`write-back hit rate in the measured phase: ${(wbRate * 100).toFixed(1)}% (${counters!.queue_write_back_hits} items acked before their commit, ${counters!.queue_rows_written} rows written)`);
  if (syscalls) {
    const perMsg = Object.fromEntries(Object.entries(syscalls).map(([k, v]) => [k, round(v / Math.max(1, win.delivered), 3)]));
    say(`server syscalls in the measured phase: ${JSON.stringify(syscalls)}; per delivered message ${JSON.stringify(perMsg)}`);
  }

  // Drain: everything the server acknowledged must arrive, and every receipt must come back.
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  const st = await drainStatus(
    ws, drain,
    (st) => sum(st.map((s) => s.undelivered + s.unacked + s.no_receipt)) === 0,
    (st, secs) => `drained in ${secs} s: undelivered ${sum(st.map((s) => s.undelivered))}, without sent ${sum(st.map((s) => s.unacked))}, without receipt ${sum(st.map((s) => s.no_receipt))}`,
  );
  const reports = await Promise.all(ws.map((w) => w.call({ cmd: "report" }, "report")));
  const tot = sumTotals(reports.map((r) => r.totals));
  const lost = sum(reports.map((r) => r.lost));
  const lostIds = reports.flatMap((r) => r.lost_ids).slice(0, 10);
  const errSamples = reports.flatMap((r) => r.errors_sample).slice(0, 10);
  const unackedEnd = sum(st.map((s) => s.unacked));
  const noRcptEnd = sum(st.map((s) => s.no_receipt));
  const undeliveredEnd = sum(st.map((s) => s.undelivered));
  say(`totals: sent ${tot.sent}, sent-acked ${tot.acked}, delivered ${tot.delivered}, receipts ${tot.receipts}, lost ${lost}, duplicates ${tot.duplicates}, out of order ${tot.out_of_order}, errors ${tot.errors}, disconnects ${tot.disconnects}`);
  const alive = await run.serverAlive();
  const wrong = tot.disconnects > 0 || tot.errors > 0 || tot.unknown > 0 || unackedEnd > 0 || noRcptEnd > 0 || undeliveredEnd > 0 || !alive;
  const code = verdict({
    lost: lost > 0 ? lostBanner(lost, lostIds) : null,
    duplicates: tot.duplicates,
    outOfOrder: tot.out_of_order,
    warning: wrong
      ? `disconnects ${tot.disconnects}, errors ${tot.errors}, unknown frames ${tot.unknown}, without sent ${unackedEnd}, without receipt ${noRcptEnd}, undelivered ${undeliveredEnd}, server alive ${alive}: ${errSamples.join("; ")}`
      : null,
  });
  return {
    result: {
      scenario: "pairs",
      params: {
        pairs: P, oneway, mode, window: mode === "closed" ? window : null, rate: mode === "open" ? rate : null,
        duration_s: messages > 0 ? null : duration, warmup_s: messages > 0 ? 0 : warmup, messages: messages > 0 ? quotaPerSender * sendersTotal : null,
        size, transport, confirm, workers: nw, drain_s: drain, mode_server: run.serverMode, server_bin: run.flag("--server-bin") ?? null,
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
      latency_ms: latencyJson(lat),
      sent_latency_ms: latencyJson(latSent),
      receipt_latency_ms: latencyJson(latRcpt),
      ...(mode === "open" ? { generator_lag_ms: latencyJson(lag) } : {}),
      server: {
        pid: target.pid,
        cpu_s: serverCpu === null ? null : round(serverCpu, 2),
        cpu_pct: serverCpu === null ? null : pct(serverCpu, wallS),
        cpu_sys_s: sysDelta(s0, s1),
        rss_kb: s1.rss,
        alive,
        counters,
        commit_ms: commit,
        syscalls,
      },
      client: clientJson(run, clientCpu, wallS),
      other_cpu_pct: otherCpuPct(s0, s1),
      msgs_per_server_cpu_s: perCpu,
      write_back_hit_rate: wbRate === null ? null : round(wbRate, 4),
      commit_p99_ms: commit ? commit.p99 : null,
      server_thread_cpu_s: threads,
      server_gc_pauses: gc,
      ...(errSamples.length ? { errors_sample: errSamples } : {}),
    },
    code,
  };
}

export const PAIRS: Scenario = {
  name: "pairs",
  summary: "P pairs of devices message each other with the full receipt chain; throughput, latency, integrity",
  server: true,
  ws: true,
  flags: [
    ["--pairs P", "pairs A_i <-> B_i (default 10)"],
    ["--oneway", "only A_i sends"],
    ["--window W", "closed loop: messages in flight per sender until their dlv receipt (default 16)"],
    ...PHASE_FLAGS,
    ["--syscalls", "count the server's sendto/recvfrom/epoll syscalls in the measured phase (perf stat)"],
    ["--confirm on|off", "off: the devices do not confirm the sent frames they hold (hello without sc, PROTOCOL.md §6.2),\nso the server keeps an accepted row per message for the retention (default on)"],
  ],
  notes: "reports the write-back hit rate (queue items acked before their commit: hits / (hits + rows written))\nand the server's group commit p99 from /metrics",
  run: pairs,
};
