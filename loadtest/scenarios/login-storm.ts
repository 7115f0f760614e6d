/** `login-storm`: N devices log in at the same moment; logins/s, time until all are online, server CPU per login, memory per connection. */
import type { Backoff } from "../ipc.ts";
import { pin, tcpExt } from "../proc.ts";
import { pct, round, say, sleep, type Outcome, type Run } from "../run.ts";
import { allMetrics, counterDeltas, cpuDelta, metric, otherCpuPct, serverSample, sysDelta } from "../sample.ts";
import type { Scenario } from "../scenario.ts";
import { runTag } from "../setup.ts";
import { fmtLatency, merge, summary } from "../stats.ts";
import { setup } from "../target.ts";
import { latencyJson } from "../accounting.ts";
import { clientJson, mergeCounts, printProgress, split, startWorkers, warmUp, wireTarget, workerCount, workersCpu } from "../workers.ts";

/** --backoff: what a device does after a failed attempt. */
export function backoffFlag(run: Run): Backoff {
  return run.choice("--backoff", "sdk", ["sdk", "none"] as const);
}

/** Machine-wide TcpExt counters (listen queue overflows, SYN cookies) since `before`. */
export function tcpDelta(before: Record<string, number>): Record<string, number> {
  const after = tcpExt();
  return Object.fromEntries(Object.keys(after).map((k) => [k, after[k]! - (before[k] ?? 0)]));
}

/** Sums the per-100-ms login counts of the workers into one timeline. */
function mergeTimelines(ts: number[][]): number[] {
  const out: number[] = [];
  for (const t of ts) t.forEach((n, i) => (out[i] = (out[i] ?? 0) + n));
  return out.map((n) => n ?? 0);
}

async function loginStorm(run: Run): Promise<Outcome> {
  const conns = run.num("--conns", 5000, 1);
  const concurrency = run.num("--concurrency", 0);
  const backoff = backoffFlag(run);
  const timeoutS = run.num("--login-timeout", 10, 0.1);
  const giveUpS = run.num("--give-up", 120, 1);
  const settle = run.num("--settle", 2);
  const transport = run.transport;
  const nw = workerCount(run, conns);
  const tag = runTag();
  const warmN = Math.min(20, conns);
  const names = [...Array.from({ length: warmN }, (_, i) => `lt${tag}w${i}`), ...Array.from({ length: conns }, (_, i) => `lt${tag}-${i}`)];
  say(`login-storm: ${conns} ${transport} devices log in ${concurrency ? `${concurrency} at a time per worker` : "at the same moment"} over ${nw} worker(s); backoff ${backoff}`);
  const { target, ids } = await setup(run, names);
  if (run.spawnMode) pin(process.pid, run.workerCpus);
  const wt = wireTarget(target);
  await warmUp(run, target, ids.slice(0, warmN));
  const ws = await startWorkers(run, nw, "loadtest/storm-worker.ts");
  const slices = split(ids.slice(warmN), nw, 1);
  await Promise.all(ws.map((w, i) => w.call({ cmd: "s_init", target: wt, devices: slices[i]!.map((id) => ({ id, role: "rcpt" as const })) }, "ready")));
  await sleep(1000);
  const m0 = await allMetrics(target.http);
  const at = Date.now() + 300;
  printProgress(ws, (n) => `  online ${n}/${conns} after ${((Date.now() - at) / 1000).toFixed(1)} s`);
  const res = Promise.all(ws.map((w) => w.call({ cmd: "s_login", at, concurrency, backoff, timeoutMs: timeoutS * 1000, giveUpMs: giveUpS * 1000 }, "s_online", (giveUpS + 60) * 1000)));
  await sleep(Math.max(0, at - Date.now()));
  const before = serverSample(run, target.pid);
  const wc0 = workersCpu(run);
  const tcp0 = tcpExt();
  const rs = await res;
  const after = serverSample(run, target.pid);
  const wc1 = workersCpu(run);
  const tcp = tcpDelta(tcp0);
  const m1 = await allMetrics(target.http);
  const n = rs.reduce((a, r) => a + r.online, 0);
  const failed = rs.reduce((a, r) => a + r.failed, 0);
  const failedAttempts = rs.reduce((a, r) => a + r.failed_attempts, 0);
  const reasons = mergeCounts(rs.map((r) => r.reasons));
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
  const cpu = cpuDelta(before, after);
  const wallS = (after.t - before.t) / 1000;
  const perS = allS > 0 ? Math.round(n / allS) : 0;
  say(`${n}/${conns} online ${allS.toFixed(2)} s after the start: ${perS} logins/s overall, ${steady ?? "?"}/s between the 10th and the 90th percentile (${p10.toFixed(0)}-${p90.toFixed(0)} ms); failed ${failed}, failed attempts ${failedAttempts}${failedAttempts ? ` ${JSON.stringify(reasons)}` : ""}`);
  say(`listen queue (machine-wide TcpExt deltas): ${JSON.stringify(tcp)}`);
  say(`login latency (start -> ready, retries included): ${fmtLatency(lat)}`);
  say(`logins per 100 ms: ${timeline.join(" ")}`);
  if (cpu !== null) say(`server CPU ${cpu.toFixed(2)} s (${pct(cpu, wallS)}% of one core; kernel ${(after.sys! - before.sys!).toFixed(2)} s): ${Math.round((cpu * 1e6) / Math.max(1, n))} µs per login, ${Math.round(n / Math.max(1e-9, cpu))} logins per server CPU-second`);
  say(`load generator CPU ${(wc1 - wc0).toFixed(2)} s (${pct(wc1 - wc0, wallS)}% of one core); other processes on the machine ${otherCpuPct(before, after)}% of one core`);
  const counters = counterDeltas(m0, m1);
  await sleep(settle * 1000);
  const s2 = serverSample(run, target.pid);
  const sessions = await metric(target.http, "switchboard_sessions");
  const bytesPerConn = before.rss !== null && s2.rss !== null && n > 0 ? Math.round(((s2.rss - before.rss) * 1024) / n) : null;
  say(`server RSS ${before.rss} KiB before, ${s2.rss} KiB ${settle} s after: ${bytesPerConn} bytes per connection; sessions ${sessions ?? "?"}`);
  if (failed) console.error(`\nloadtest: WARNING: ${failed} devices did not get online within ${giveUpS} s: ${JSON.stringify(reasons)}\n`);
  return {
    result: {
      scenario: "login-storm",
      params: { conns, transport, workers: nw, concurrency, backoff, login_timeout_s: timeoutS, give_up_s: giveUpS, mode_server: run.serverMode, server_bin: run.flag("--server-bin") ?? null },
      sent: 0, delivered: 0, lost: 0, duplicates: 0, out_of_order: 0, sent_per_s: 0, delivered_per_s: 0,
      latency_of: "storm start -> ready (connect, hello, auth; retries included)",
      latency_ms: latencyJson(lat),
      logins: { online: n, failed, failed_attempts: failedAttempts, reasons, seconds: round(allS, 3), per_s: perS, steady_per_s: steady, p10_ms: round(p10, 1), p90_ms: round(p90, 1), timeline_100ms: timeline },
      tcp,
      server: {
        pid: target.pid,
        cpu_s: cpu === null ? null : round(cpu, 2),
        cpu_pct: cpu === null ? null : pct(cpu, wallS),
        cpu_sys_s: sysDelta(before, after),
        cpu_us_per_login: cpu === null ? null : Math.round((cpu * 1e6) / Math.max(1, n)),
        logins_per_cpu_s: cpu ? Math.round(n / cpu) : null,
        rss_kb_before: before.rss,
        rss_kb: s2.rss,
        bytes_per_conn: bytesPerConn,
        sessions,
        counters,
      },
      client: clientJson(run, wc1 - wc0, wallS),
      other_cpu_pct: otherCpuPct(before, after),
      msgs_per_server_cpu_s: null,
    },
    code: failed > 0 ? 4 : 0,
  };
}

export const LOGIN_STORM: Scenario = {
  name: "login-storm",
  summary: "N devices log in at the same moment (spread over worker processes); logins/s, time until\nall are online, server CPU per login, memory per connection",
  server: true,
  flags: [
    ["--conns N", "devices (default 5000); up to 15 000 per worker process"],
    ["--concurrency N", "logins in flight per worker (default 0: every device at once)"],
    ["--backoff sdk|none", "after a failed attempt: the SDK's jittered exponential backoff (default) or at once"],
    ["--login-timeout S", "an attempt that is not ready after S seconds is cut and retried (default 10)"],
    ["--give-up S", "devices not online S seconds after the start count as failed (default 120)"],
    ["--settle S", "seconds before reading the server's RSS (default 2)"],
  ],
  run: loginStorm,
};
