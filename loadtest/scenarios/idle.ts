/** `idle`: N devices log in and stay idle with heartbeats; server memory per connection, login rate. */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { ProbeReading } from "../probe.ts";
import { pin } from "../proc.ts";
import { UsageError, pct, round, say, sleep, type Outcome, type Run } from "../run.ts";
import { cpuDelta, metric, otherCpuPct, serverSample } from "../sample.ts";
import type { Scenario } from "../scenario.ts";
import { runTag } from "../setup.ts";
import { fmtLatency } from "../stats.ts";
import { setup } from "../target.ts";
import { clientJson, initAll, loginAll, loginConcurrency, split, startWorkers, warmUp, workerCount, workersCpu } from "../workers.ts";

/** Signals the probe (SIGUSR1: after a full collection) and waits for its file. */
async function probeRead(pid: number, probe: { dir: string; n: number }, gc: boolean): Promise<ProbeReading> {
  const path = join(probe.dir, `${probe.n++}.json`);
  process.kill(pid, gc ? "SIGUSR1" : "SIGUSR2");
  for (let i = 0; i < 500 && !existsSync(path); i++) await sleep(20);
  if (!existsSync(path)) throw new Error(`the server's probe wrote no ${path} within 10 s; is loadtest/probe.ts preloaded (see its log)?`);
  return JSON.parse(readFileSync(path, "utf8")) as ProbeReading;
}

async function idle(run: Run): Promise<Outcome> {
  const conns = run.num("--conns", 1000, 1);
  const settle = run.num("--settle", 5);
  const hold = run.num("--hold", 0);
  const ping = run.num("--ping", 30, 1);
  const warm = run.num("--warm", 0);
  if (run.bool("--probe") && !run.spawnMode) throw new UsageError("--probe reads a server it spawns (--spawn): it is preloaded into it");
  const nw = workerCount(run, conns);
  const concurrency = loginConcurrency(run, nw);
  const transport = run.transport;
  const tag = runTag();
  const warmN = Math.min(20, conns);
  const names = [
    ...Array.from({ length: warmN }, (_, i) => `lt${tag}w${i}`),
    ...Array.from({ length: warm }, (_, i) => `lt${tag}s${i}`),
    ...Array.from({ length: conns }, (_, i) => `lt${tag}-${i}`),
  ];
  say(`idle: ${conns} ${transport} connections over ${nw} worker(s), ${concurrency} logins in flight per worker`);
  const { target, ids } = await setup(run, names);
  if (run.spawnMode) pin(process.pid, run.workerCpus);
  const ws = await startWorkers(run, nw);

  await warmUp(run, target, ids.slice(0, warmN), ws[0]);
  await sleep(2000);

  // The raw baseline (the figure's meaning before --warm existed): taken after 20 logins only, so the code a
  // storm first runs (≈ 2.8 MiB of bun's text paged in, 0.6 MiB of JIT code) and the allocator's high-water
  // mark of a storm (BENCHMARKS.md, 2026-12-03) count as "per connection".
  const raw = serverSample(run, target.pid);
  // --probe: the server's own account of its memory at each reading (loadtest/probe.ts), after the sample above.
  const probe = run.bool("--probe") ? { dir: join(target.dataDir!, "probe"), n: 0 } : null;
  const read = async (gc = false) => (probe === null ? null : await probeRead(target.pid!, probe, gc));
  const probeRaw = await read();
  let probeWarmed = null;
  let before = raw;
  if (warm > 0) {
    // --warm N: a storm of N logins, all closed again, before a second baseline; the warmed figure counts
    // from there, so what any storm leaves once (code, JIT, caches, the allocator's retained pages) is out of it.
    await warmUp(run, target, ids.slice(warmN, warmN + warm), ws[0], concurrency);
    await sleep(2000);
    before = serverSample(run, target.pid);
    probeWarmed = await read();
    say(`server before: RSS ${raw.rss} KiB raw, ${before.rss} KiB after the ${warm}-login warm storm`);
  } else say(`server before: RSS ${before.rss} KiB`);
  await initAll(ws, target, split(ids.slice(warmN + warm), nw, 1));
  const wcpu0 = workersCpu(run);
  const login = await loginAll(ws, conns, concurrency, ping);
  const afterLogin = serverSample(run, target.pid);
  const wcpu1 = workersCpu(run);
  say(`logged in ${login.online}/${conns} in ${login.seconds.toFixed(2)} s: ${Math.round(login.online / login.seconds)} logins/s; failed ${login.failed}`);
  if (login.failed) say(`  failure reasons: ${JSON.stringify(login.reasons)}`);
  say(`login latency: ${fmtLatency(login.latency)}`);
  await sleep(settle * 1000);
  const s1 = serverSample(run, target.pid);
  await sleep(3000);
  const s2 = serverSample(run, target.pid);
  const probeReading = await read();
  const probeGc = await read(true);
  const sessions = await metric(target.http, "switchboard_sessions");
  const onTransport = await metric(target.http, `switchboard_connections{transport="${transport}"}`);
  const perConn = (base: number | null, rss: number | null) => (base !== null && rss !== null && login.online > 0 ? Math.round(((rss - base) * 1024) / login.online) : null);
  const bytesPerConn = perConn(raw.rss, s2.rss);
  const bytesPerConn1 = perConn(raw.rss, s1.rss);
  const warmed = warm > 0 ? perConn(before.rss, s2.rss) : null;
  say(`server after: RSS ${s1.rss} KiB, then ${s2.rss} KiB 3 s later; sessions ${sessions ?? "?"}`);
  say(`server memory per idle authenticated ${transport} connection: ${bytesPerConn} bytes (${bytesPerConn1} at the first reading)`);
  if (warmed !== null) say(`  warmed (from the baseline after the ${warm}-login warm storm): ${warmed} bytes`);
  const loginCpu = cpuDelta(before, afterLogin);
  const idleCpu = cpuDelta(s1, s2);
  const perLogin = loginCpu === null ? null : Math.round((loginCpu * 1e6) / Math.max(1, login.online));
  say(`other processes on the machine during the logins: ${otherCpuPct(before, afterLogin)}% of one core`);
  if (loginCpu !== null) say(`server CPU during logins: ${loginCpu.toFixed(2)} s (${pct(loginCpu, login.seconds)}%), ${perLogin} µs per login`);
  if (hold > 0) {
    say(`holding for ${hold} s`);
    await sleep(hold * 1000);
  }
  const after = serverSample(run, target.pid);
  if (login.failed > 0) say(`WARNING: ${login.failed} logins failed`);
  return {
    result: {
      scenario: "idle",
      params: { conns, warm, transport, workers: nw, concurrency, settle_s: settle, hold_s: hold, ping_s: ping, mode: run.serverMode, server_bin: run.flag("--server-bin") ?? null },
      sent: 0, delivered: 0, lost: 0, duplicates: 0, out_of_order: 0, sent_per_s: 0, delivered_per_s: 0,
      latency_of: "login (connect to ready)",
      latency_ms: login.latency,
      logins: { online: login.online, failed: login.failed, seconds: round(login.seconds, 3), per_s: Math.round(login.online / login.seconds), reasons: login.reasons },
      server: {
        pid: target.pid,
        cpu_s: loginCpu === null ? null : round(loginCpu, 2),
        cpu_pct: loginCpu === null ? null : pct(loginCpu, login.seconds),
        cpu_phase: "login",
        cpu_us_per_login: perLogin,
        idle_cpu_pct: idleCpu === null ? null : pct(idleCpu, (s2.t - s1.t) / 1000),
        rss_kb_before: raw.rss,
        rss_kb_before_warmed: warm > 0 ? before.rss : null,
        rss_kb: s2.rss,
        rss_kb_first: s1.rss,
        rss_kb_end: after.rss,
        bytes_per_conn: bytesPerConn,
        bytes_per_conn_warmed: warmed,
        sessions,
        connections_on_transport: onTransport,
      },
      ...(probe !== null ? { probe: { raw: probeRaw, warmed: probeWarmed, reading: probeReading, after_full_gc: probeGc } } : {}),
      client: clientJson(run, wcpu1 - wcpu0, login.seconds),
      other_cpu_pct: otherCpuPct(before, s2),
      msgs_per_server_cpu_s: null,
    },
    code: login.failed > 0 ? 4 : 0,
  };
}

export const IDLE: Scenario = {
  name: "idle",
  summary: "N devices log in and stay idle with heartbeats; server memory per connection, login rate",
  server: true,
  ws: true,
  flags: [
    ["--conns N", "devices (default 1000)"],
    ["--settle S", "seconds to wait after the last login before reading RSS (default 5)"],
    ["--hold S", "seconds to stay connected after measuring (default 0)"],
    ["--ping S", "heartbeat interval per connection (default 30, as the server announces)"],
    ["--probe", "with --spawn: read the server's memory from inside it at each reading (loadtest/probe.ts, preloaded): arena, bun's text and JIT code from smaps, JS heap and extra memory, the outbound pool; then a full collection and the same again (BENCHMARKS.md memory4)"],
    ["--warm N", "N more logins, closed again, before a second baseline (default 0): bytes/conn stays (RSS after − RSS before any storm) / conns; the warmed figure, from the second baseline, leaves out what a first storm costs once (code paged in, JIT, caches), but also counts the memory the N closed connections leave for reuse as baseline (≈ 3 KB each): keep N to a few hundred and quote the bound (BENCHMARKS.md 2026-12-03 10:20)"],
  ],
  run: idle,
};
